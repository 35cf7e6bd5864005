"""The recipe scripts of the real-face model (scripts/): they run, and what they write loads.

``crop_landmarks.py`` runs the landmark model on the crops of an annotated folder;
``fit_shape_model.py`` fits the shape model to its output and writes it into a model file;
``fit_appearance_model.py`` adds the appearance model; ``train_texture.py`` trains a generator.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganimation.aus import AU_NAMES, NUM_AUS
from ganimation.faces import LandmarkFaceDetector, align_face, sample_photo_path
from ganimation.files import load_image
from ganimation.inference import GANimation

from support import tiny_model_file

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def write_annotated(folder: Path, crops: list[np.ndarray], sources: list[str]) -> None:
    """An annotated folder as `ganimation annotate` writes it: images/ and aus.csv."""
    (folder / "images").mkdir(parents=True)
    with open(folder / "aus.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "identity", "source", *(f"{name}_r" for name in AU_NAMES)])
        for index, (crop, source) in enumerate(zip(crops, sources)):
            name = f"crop{index}.png"
            Image.fromarray(crop).save(folder / "images" / name)
            writer.writerow([name, Path(source).stem, source, *(["0"] * NUM_AUS)])


def test_crop_landmarks_reads_each_crop(tmp_path: Path) -> None:
    photo = load_image(sample_photo_path())
    face = LandmarkFaceDetector().detect(photo)[0]
    crop = align_face(photo, face, 128).crop
    blank = np.full_like(crop, 90)
    write_annotated(tmp_path / "data", [crop, blank, crop[:, ::-1].copy()], ["a.jpg", "b.jpg", "c.jpg"])
    result = run_script("crop_landmarks.py", tmp_path / "data", tmp_path / "landmarks.npz", "--workers", 1)
    assert result.returncode == 0, result.stderr
    assert "2 of 3 crops with a face" in result.stdout
    data = np.load(tmp_path / "landmarks.npz")
    assert list(data["names"]) == ["crop0.png", "crop2.png"]
    assert data["landmarks"].shape == (2, 478, 2) and data["aus"].shape == (2, NUM_AUS)
    # in crop widths: the eyes sit where the crop convention puts them, mirrored in the flip
    assert 0.2 < data["landmarks"][0, 33, 0] < 0.5 and 0.5 < data["landmarks"][0, 263, 0] < 0.8
    assert data["landmarks"][1, 33, 0] == pytest.approx(1.0 - data["landmarks"][0, 263, 0], abs=0.02)


def test_fit_shape_model_writes_a_model_file_that_moves_faces(tmp_path: Path) -> None:
    bundled = GANimation.load(device="cpu")
    assert bundled.shape is not None
    rng = np.random.default_rng(0)
    count = 120
    aus = rng.uniform(0.0, 1.0, (count, NUM_AUS))
    jaw = np.zeros((478, 2))
    jaw[[152, 175, 199, 200, 17, 14]] = (0.0, 0.05)  # the chin and lower lip drop with AU26
    landmarks = bundled.shape.mean + aus[:, AU_NAMES.index("AU26"), None, None] * jaw
    landmarks = landmarks + rng.normal(0.0, 1e-4, landmarks.shape)
    names = np.array([f"crop{i}.png" for i in range(count)])
    np.savez(tmp_path / "landmarks.npz", names=names, landmarks=landmarks, aus=aus)
    with open(tmp_path / "aus.csv", "w", newline="") as handle:  # two people, one clip
        writer = csv.writer(handle)
        writer.writerow(["filename", "identity", "source"])
        for index, name in enumerate(names):
            source = [f"/faces/person_a/{index}.jpg", f"/faces/person_b/{index}.jpg", f"/clips/d1.mp4#{index:06d}"][index % 3]
            writer.writerow([name, "x", source])
    model_file = tiny_model_file(tmp_path / "tiny.safetensors")
    output = tmp_path / "with_shape.safetensors"
    result = run_script("fit_shape_model.py", tmp_path / "landmarks.npz", "-o", output, "--model", model_file,
                        "--generator-domain", "synthetic", "--groups", tmp_path / "aus.csv")
    assert result.returncode == 0, result.stderr
    assert "AU26: largest landmark move 6.4 px" in result.stdout  # 0.05 crop widths of 128 px
    model = GANimation.load(output, device="cpu")
    assert model.shape is not None and not model.paints_photos and model.discriminator is None
    assert model.shape.basis[AU_NAMES.index("AU26"), 152, 1] == pytest.approx(0.05, abs=2e-3)
    assert np.abs(model.shape.basis[AU_NAMES.index("AU01")]).max() < 2e-3


def test_train_texture_trains_resumes_and_writes_a_model_that_paints_photos(tmp_path: Path) -> None:
    bundled = GANimation.load(device="cpu")
    assert bundled.shape is not None
    rng = np.random.default_rng(0)
    count = 6
    crops = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(count)]
    sources = [f"/clips/d1.mp4#{index:06d}" for index in range(4)] + ["/faces/a/1.jpg", "/faces/a/2.jpg"]
    write_annotated(tmp_path / "data", crops, sources)
    landmarks = np.repeat(bundled.shape.mean[None], count, axis=0)
    landmarks[:, [14, 17, 152], 1] += np.linspace(0.0, 0.04, count)[:, None]  # the jaw drops along the clip
    np.savez(tmp_path / "landmarks.npz", names=np.array([f"crop{i}.png" for i in range(count)]),
             landmarks=landmarks, aus=rng.uniform(0, 1, (count, NUM_AUS)))
    model_file = tiny_model_file(tmp_path / "tiny.safetensors", critic=False)
    common = [tmp_path / "data", tmp_path / "landmarks.npz", "--run", tmp_path / "run", "--init", model_file,
              "--shape", "bundled", "--size", 32, "--batch-size", 2, "--workers", 0, "--checkpoint-every", 2]
    first = run_script("train_texture.py", *common, "--steps", 2)
    assert first.returncode == 0, first.stderr
    assert not (tmp_path / "texture.safetensors").exists()
    second = run_script("train_texture.py", *common, "--steps", 4, "-o", tmp_path / "texture.safetensors")
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr and "at step 2" in second.stderr
    model = GANimation.load(tmp_path / "texture.safetensors", device="cpu")
    assert model.paints_photos and model.generator_domain == "real" and model.discriminator is None
    assert model.image_size == 32 and model.shape is not None
    assert np.array_equal(model.shape.basis, bundled.shape.basis)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4]  # every 25 steps and at each run's end
    assert sorted((tmp_path / "run" / "samples").iterdir())[-1].name == "000004.png"


def test_fit_appearance_model_learns_a_planted_shading_and_reuses_its_cache(tmp_path: Path) -> None:
    from ganimation.checkpoint import save_model_file
    from test_shapewarp import tiny_generator

    photo = load_image(sample_photo_path())
    face = LandmarkFaceDetector().detect(photo)[0]
    aligned = align_face(photo, face, 128)
    points = (face.mesh.landmarks[:, :2] @ aligned.matrix[:, :2].T + aligned.matrix[:, 2] + 0.5) / 128
    rng = np.random.default_rng(0)
    count = 100
    aus = rng.uniform(0.0, 1.0, (count, NUM_AUS))
    # the jaw drop darkens a disc around the mouth's middle, by up to half
    mouth = points[[13, 14]].mean(0) * 128 - 0.5
    yy, xx = np.mgrid[:128, :128]
    disc = ((xx - mouth[0]) ** 2 + (yy - mouth[1]) ** 2 < 7**2).astype(np.float64)
    crops = [np.clip(aligned.crop * (1.0 - 0.5 * aus[i, AU_NAMES.index("AU26")] * disc[..., None]), 0, 255)
             .astype(np.uint8) for i in range(count)]
    sources = [f"/faces/person_{'abc'[i % 3]}/{i}.jpg" for i in range(count)]
    write_annotated(tmp_path / "data", crops, sources)
    names = np.array([f"crop{i}.png" for i in range(count)])
    np.savez(tmp_path / "landmarks.npz", names=names, landmarks=np.repeat(points[None], count, 0), aus=aus)
    generator, config = tiny_generator()
    with_shape = save_model_file(tmp_path / "shape.safetensors", generator, None, config,
                                 shape=GANimation.load(device="cpu").shape)
    output, cache = tmp_path / "shaded.safetensors", tmp_path / "textures.npy"
    arguments = (tmp_path / "data", tmp_path / "landmarks.npz", "--model", with_shape, "-o", output,
                 "--workers", 1, "--textures", cache)
    result = run_script("fit_appearance_model.py", *arguments)
    assert result.returncode == 0, result.stderr
    assert cache.exists() and np.load(cache).shape == (count, 128, 128)
    line = next(line for line in result.stdout.splitlines() if line.startswith("AU26:"))
    assert 25 <= int(line.split("darkens up to ")[1].split(" %")[0]) <= 60  # log(0.5) is 50 % darker
    model = GANimation.load(output, device="cpu")
    assert model.appearance is not None and model.shape is not None
    centre = np.round(model.appearance.reference[[13, 14]].mean(0) * 128 - 0.5).astype(int)
    assert model.appearance.basis[AU_NAMES.index("AU26"), centre[1], centre[0]] < -0.3
    assert np.abs(model.appearance.basis[AU_NAMES.index("AU01")]).max() < 0.05  # no AU01 in the data
    # a second fit reads the cache (its crops may be gone)
    for crop in (tmp_path / "data" / "images").iterdir():
        crop.unlink()
    again = run_script("fit_appearance_model.py", *arguments)
    assert again.returncode == 0, again.stderr
    # a model without a shape model has no reference shape to fit on
    plain = tiny_model_file(tmp_path / "plain.safetensors")
    refused = run_script("fit_appearance_model.py", tmp_path / "data", tmp_path / "landmarks.npz", "--model", plain,
                         "-o", tmp_path / "x.safetensors")
    assert refused.returncode == 2 and "has no shape model" in refused.stderr
