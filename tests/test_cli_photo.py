"""The photo commands end to end with a tiny random model: animate PHOTO, aus, timelines, reenact.

Detection runs the real Haar detector on the bundled sample photo; results are cached per image
so that each distinct picture is searched once per test session.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ganimation import animation, cli
from ganimation.aus import AU_DESCRIPTIONS, AU_NAMES, NUM_AUS
from ganimation.checkpoint import save_model_file
from ganimation.config import ModelConfig
from ganimation.faces import sample_photo_path
from ganimation.files import load_image
from ganimation.networks import Discriminator, Generator
from ganimation.video import video_info
from support import CachedDetector, tiny_model_file

SAMPLE = sample_photo_path()
TINY = ModelConfig(image_size=32, generator_channels=8, generator_residual_blocks=1, discriminator_channels=8,
                   discriminator_layers=3)


@pytest.fixture(autouse=True)
def cached_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(animation, "default_detector", CachedDetector)


def tiny_model(path: Path, critic: bool = True) -> Path:
    state = torch.get_rng_state()
    torch.manual_seed(0)
    save_model_file(path, Generator(TINY), Discriminator(TINY) if critic else None, TINY)
    torch.set_rng_state(state)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def animate(capsys, model: Path, image: Path, *extra: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    return run(capsys, "animate", image, "--checkpoint", model, "--device", "cpu", *extra)


def far_from_face(shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """Pixels well away from the sample's face (beyond the paste-back footprint)."""
    far = np.ones(shape[:2], bool)
    far[round(20 * scale):round(230 * scale), round(120 * scale):round(330 * scale)] = False
    return far


def face_change(result: np.ndarray, original: np.ndarray, scale: float = 1.0) -> float:
    y0, y1, x0, x1 = (round(v * scale) for v in (90, 150, 195, 255))
    return float(np.abs(result[y0:y1, x0:x1].astype(int) - original[y0:y1, x0:x1]).mean())


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def noise_photo(path: Path) -> Path:
    """A picture without a face: a colour gradient with a little noise."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 1, 320)[None, :, None] * np.array([120, 60, -90]) + np.array([60, 90, 200])
    pixels = np.clip(ramp + np.linspace(0, 40, 240)[:, None, None] + rng.normal(0, 6, (240, 320, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# animate PHOTO
# ---------------------------------------------------------------------------------------------


def test_photo_edit_changes_the_face_and_nothing_far_from_it(tmp_path: Path, model: Path, sample: np.ndarray,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.png"
    code, stdout, _ = animate(capsys, model, SAMPLE, "--expression", "happy", "--intensity", "0.7",
                              "--au", "AU26=0.3", "-o", out, "--masks")
    assert code == 0 and "edited:" in stdout and "1 face(s)" in stdout
    result = load_image(out)
    assert result.shape == sample.shape
    far = far_from_face(sample.shape)
    assert np.array_equal(result[far], sample[far])
    assert face_change(result, sample) > 3
    assert (tmp_path / "out_attention.png").is_file() and (tmp_path / "out_colour0.png").is_file()


def test_blend_modes(tmp_path: Path, model: Path, sample: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    results = {}
    for blend in ("residual", "replace"):
        out = tmp_path / f"{blend}.png"
        assert animate(capsys, model, SAMPLE, "--expression", "sad", "--blend", blend, "-o", out)[0] == 0
        results[blend] = load_image(out)
    far = far_from_face(sample.shape)
    for image in results.values():
        assert np.array_equal(image[far], sample[far])
    assert not np.array_equal(results["residual"], results["replace"])
    # Replace pastes the 32 px output upsampled: it loses the photo's fine detail, residual keeps it.
    def detail(image: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(image[80:150, 190:260], cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())
    assert detail(results["replace"]) < detail(results["residual"])
    with pytest.raises(SystemExit) as exit_info:
        animate(capsys, model, SAMPLE, "--expression", "sad", "--blend", "overlay", "-o", tmp_path / "x.png")
    assert exit_info.value.code == 2 and "invalid choice: 'overlay'" in capsys.readouterr().err


def test_exif_rotated_jpeg(tmp_path: Path, model: Path, sample: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; shown after a 90 degree clockwise turn
    path = tmp_path / "turned.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(sample, 1))).save(path, quality=95, exif=exif.tobytes())
    out = tmp_path / "upright.png"
    code, stdout, _ = animate(capsys, model, path, "--expression", "surprise", "-o", out)
    assert code == 0, stdout
    shown = load_image(path)  # upright
    result = load_image(out)
    assert result.shape == shown.shape == sample.shape
    far = far_from_face(sample.shape)
    assert np.array_equal(result[far], shown[far])
    assert face_change(result, shown) > 3


def test_no_face_fails_with_one_line(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = noise_photo(tmp_path / "noise.png")
    out = tmp_path / "out.png"
    code, stdout, err = animate(capsys, model, photo, "--expression", "happy", "-o", out)
    assert code == 2
    line = one_line(err)
    assert "no face" in line and "noise.png" in line
    assert not out.exists()


def test_allow_no_face_copies_the_input(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = noise_photo(tmp_path / "noise.png")
    same, other, clip = tmp_path / "same.png", tmp_path / "other.jpg", tmp_path / "still.mp4"
    code, stdout, _ = animate(capsys, model, photo, "--expression", "happy", "-o", same, "--allow-no-face")
    assert code == 0 and "unchanged" in stdout
    assert same.read_bytes() == photo.read_bytes()
    code, stdout, _ = animate(capsys, model, photo, "--expression", "happy", "-o", other, "--mp4", clip,
                              "--frames", "4", "--fps", "8", "--allow-no-face")
    assert code == 0
    assert Image.open(other).format == "JPEG"
    assert np.abs(load_image(other).astype(int) - load_image(photo)).mean() < 6  # re-encoded as JPEG
    assert video_info(clip) == {"frames": 4, "fps": 8.0}


def test_tiny_face_is_refused_with_a_message(tmp_path: Path, model: Path, sample: np.ndarray,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    tiny = tmp_path / "tiny.png"
    Image.fromarray(cv2.resize(sample, (60, 60), interpolation=cv2.INTER_AREA)).save(tiny)
    code, _, err = animate(capsys, model, tiny, "--expression", "happy", "-o", tmp_path / "out.png",
                           "--allow-no-face")
    assert code == 2
    line = one_line(err)
    assert "face too small in tiny.png" in line and "at least 48 px" in line
    assert not (tmp_path / "out.png").exists()


def test_alpha_grey_and_16_bit_inputs_keep_their_kind(tmp_path: Path, model: Path, sample: np.ndarray,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rgba = np.dstack([sample, np.full(sample.shape[:2], 255, np.uint8)])
    rgba[:64, :64, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert animate(capsys, model, tmp_path / "alpha.png", "--expression", "happy", "-o", tmp_path / "a.png")[0] == 0
    result = np.asarray(Image.open(tmp_path / "a.png"))
    far = far_from_face(sample.shape)
    assert result.shape == (512, 512, 4) and np.array_equal(result[far], rgba[far])

    grey = cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert animate(capsys, model, tmp_path / "grey16.png", "--expression", "happy", "-o", tmp_path / "g.png")[0] == 0
    picture = Image.open(tmp_path / "g.png")
    assert picture.mode == "L"
    edited = np.asarray(picture)
    assert np.array_equal(edited[far], grey[far])
    assert np.abs(edited[90:150, 195:255].astype(int) - grey[90:150, 195:255]).mean() > 1


def test_large_photo(tmp_path: Path, model: Path, sample: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    scale = 4.0
    big = cv2.resize(sample, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    shown = load_image(tmp_path / "big.jpg")
    code, stdout, _ = animate(capsys, model, tmp_path / "big.jpg", "--expression", "anger", "-o", tmp_path / "b.png")
    assert code == 0, stdout
    result = load_image(tmp_path / "b.png")
    far = far_from_face(big.shape, scale)
    assert np.array_equal(result[far], shown[far])
    assert face_change(result, shown, scale) > 3


def test_face_selection(tmp_path: Path, model: Path, sample: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    pair = tmp_path / "pair.png"
    Image.fromarray(np.concatenate([sample, sample[:, ::-1]], axis=1)).save(pair)
    code, stdout, _ = animate(capsys, model, pair, "--expression", "happy", "--face", "all", "-o", tmp_path / "o.png")
    assert code == 0 and "2 face(s)" in stdout
    code, _, err = animate(capsys, model, pair, "--expression", "happy", "--face", "5", "-o", tmp_path / "o.png")
    assert code == 2 and "face index 5 is out of range: 2 faces found in pair.png" in one_line(err)


def test_interpolation_gif_and_mp4(tmp_path: Path, model: Path, sample: np.ndarray,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    gif, mp4, also = tmp_path / "smile.gif", tmp_path / "smile.mp4", tmp_path / "o.mp4"
    code, stdout, _ = animate(capsys, model, SAMPLE, "--expression", "happy", "--frames", "5", "--fps", "10",
                              "--gif", gif, "--mp4", mp4, "-o", also)
    assert code == 0 and stdout.count("5 frames at 10 fps") == 3
    with Image.open(gif) as picture:
        assert picture.n_frames == 5
        assert picture.info["duration"] == 100
        picture.seek(0)
        first = np.asarray(picture.convert("RGB"))
    assert video_info(mp4) == {"frames": 5, "fps": 10.0} == video_info(also)
    far = far_from_face(sample.shape)
    assert np.abs(first[far].astype(int) - sample[far]).mean() < 8  # GIF palette only



@pytest.mark.parametrize("frames", ["1", "0", "-3"])
def test_too_few_frames_are_refused_not_replaced(tmp_path: Path, model: Path, frames: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = animate(capsys, model, SAMPLE, "--expression", "happy", "--frames", frames,
                           "--gif", tmp_path / "a.gif")
    assert code == 2 and "--frames must be at least 2" in one_line(err) and one_line(err).endswith(frames)
    assert not (tmp_path / "a.gif").exists()


def test_masks_without_an_image_output_say_where_they_go(tmp_path: Path, model: Path,
                                                         caplog: pytest.LogCaptureFixture,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = animate(capsys, model, SAMPLE, "--expression", "happy", "--frames", "2", "--masks",
                              "-o", tmp_path / "a.gif")
    assert code == 0 and "2 frames" in stdout
    assert any("--masks" in record.getMessage() and "edited image" in record.getMessage() for record in caplog.records)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.gif"]


# ---------------------------------------------------------------------------------------------
# aus
# ---------------------------------------------------------------------------------------------


def test_aus_table(tmp_path: Path, model: Path, sample: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    pair = tmp_path / "pair.png"
    Image.fromarray(np.concatenate([sample, sample[:, ::-1]], axis=1)).save(pair)
    code, stdout, _ = run(capsys, "aus", pair, "--checkpoint", model, "--device", "cpu")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].split() == ["AU", "meaning", "face0", "face1"]
    rows = [line for line in lines if line[:2] == "AU" and line[2:4].isdigit()]
    assert len(rows) == NUM_AUS
    for row, name in zip(rows, AU_NAMES):
        assert row.startswith(name) and AU_DESCRIPTIONS[name] in row
        values = [float(value) for value in row.split()[-2:]]
        assert all(0.0 <= value <= 1.0 for value in values)
    assert any(line.startswith("face1: box") for line in lines)


def test_aus_json(tmp_path: Path, model: Path, sample: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(capsys, "aus", SAMPLE, "--checkpoint", model, "--device", "cpu", "--json")
    assert code == 0
    faces = json.loads(stdout)
    assert len(faces) == 1 and faces[0]["face"] == 0
    assert faces[0]["box"] == pytest.approx([177, 66, 272, 161], abs=20)
    assert list(faces[0]["aus"]) == list(AU_NAMES)
    assert all(0.0 <= value <= 1.0 for value in faces[0]["aus"].values())
    assert faces[0]["aus"]["AU12"] > 0.6  # read from the landmarks: the astronaut smiles
    crop = tmp_path / "crop.png"
    Image.fromarray(sample[40:200, 140:300]).save(crop)
    code, stdout, _ = run(capsys, "aus", crop, "--crop", "--json", "--reader", "critic", "--checkpoint", model,
                          "--device", "cpu")
    assert code == 0 and json.loads(stdout)[0]["box"] == [0, 0, 160, 160]
    code, stdout, _ = run(capsys, "aus", crop, "--crop", "--json", "--checkpoint", model, "--device", "cpu")
    read = json.loads(stdout)[0]
    assert code == 0 and read["aus"]["AU12"] > 0.6 and read["box"][2] <= 160


def test_aus_from_the_critic_needs_a_critic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tiny_model(tmp_path / "plain.safetensors", critic=False)
    code, _, err = run(capsys, "aus", SAMPLE, "--checkpoint", plain, "--device", "cpu", "--reader", "critic")
    assert code == 2 and "no critic" in one_line(err)
    code, stdout, _ = run(capsys, "aus", SAMPLE, "--checkpoint", plain, "--device", "cpu")
    assert code == 0 and "AU12" in stdout  # the landmark reader needs no critic


# ---------------------------------------------------------------------------------------------
# Timelines and re-enactment
# ---------------------------------------------------------------------------------------------


def test_timeline_video(tmp_path: Path, model: Path, sample: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    timeline = tmp_path / "t.json"
    timeline.write_text(json.dumps({"fps": 10, "keyframes": [
        {"time": 0, "expression": "neutral"},
        {"time": 0.5, "expression": "happy", "intensity": 0.8, "aus": {"AU26": 0.3}},
        {"time": 0.95, "aus": {"AU01": 1.0, "AU02": 1.0}}]}), encoding="utf-8")
    out = tmp_path / "t.mp4"
    code, stdout, _ = animate(capsys, model, SAMPLE, "--timeline", timeline, "-o", out, "--gif", tmp_path / "t.gif")
    assert code == 0 and "10 frames at 10 fps" in stdout
    assert video_info(out) == {"frames": 10, "fps": 10.0}  # floor(0.95 * 10) + 1
    with Image.open(tmp_path / "t.gif") as picture:
        assert picture.n_frames == 10
    code, _, err = animate(capsys, model, SAMPLE, "--timeline", timeline, "-o", tmp_path / "t.png")
    assert code == 2 and "give an .mp4 or .gif output" in one_line(err)
    photo = noise_photo(tmp_path / "noise.png")
    code, _, _ = animate(capsys, model, photo, "--timeline", timeline, "-o", tmp_path / "n.mp4", "--allow-no-face")
    assert code == 0 and video_info(tmp_path / "n.mp4") == {"frames": 10, "fps": 10.0}


def write_driving_csv(path: Path) -> Path:
    """Six frames of an OpenFace FeatureExtraction CSV at 10 fps; OpenFace lost the face in frame 4."""
    header = ["frame", " face_id", " timestamp", " confidence", " success", *(f" {name}_r" for name in AU_NAMES)]
    rows = []
    for frame in range(1, 7):
        success = 0 if frame == 4 else 1
        value = (frame - 1) if success else 0.0
        rows.append([frame, 0, f"{(frame - 1) / 10:.3f}", 0.97 * success, success, *([f"{value:.2f}"] * NUM_AUS)])
    with open(path, "w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows([header, *rows])
    return path


def test_reenact_from_openface_csv(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    driving = write_driving_csv(tmp_path / "drive.csv")
    out = tmp_path / "re.mp4"
    code, stdout, _ = run(capsys, "reenact", SAMPLE, "--driving-aus", driving, "-o", out, "--fps", "10",
                          "--smooth", "3", "--checkpoint", model, "--device", "cpu")
    assert code == 0 and "6 frames at 10 fps" in stdout
    assert video_info(out) == {"frames": 6, "fps": 10.0}
    # At 25 fps the clip lasts as long as the driving video: 0.5 s -> 13 frames.
    code, stdout, _ = run(capsys, "reenact", SAMPLE, "--driving-aus", driving, "-o", tmp_path / "re.gif",
                          "--fps", "25", "--checkpoint", model, "--device", "cpu")
    assert code == 0 and "13 frames at 25 fps" in stdout
    code, _, err = run(capsys, "reenact", SAMPLE, "--driving-aus", driving, "-o", tmp_path / "re.mp4",
                       "--smooth", "0", "--checkpoint", model, "--device", "cpu")
    assert code == 2 and "--smooth" in one_line(err)


def test_reenact_without_a_face(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    driving = write_driving_csv(tmp_path / "drive.csv")
    photo = noise_photo(tmp_path / "noise.png")
    code, _, err = run(capsys, "reenact", photo, "--driving-aus", driving, "-o", tmp_path / "a.mp4",
                       "--fps", "10", "--checkpoint", model, "--device", "cpu")
    assert code == 2 and "no face" in one_line(err)
    code, _, _ = run(capsys, "reenact", photo, "--driving-aus", driving, "-o", tmp_path / "b.mp4",
                     "--fps", "10", "--allow-no-face", "--checkpoint", model, "--device", "cpu")
    assert code == 0 and video_info(tmp_path / "b.mp4") == {"frames": 6, "fps": 10.0}


def test_crop_with_a_generator_kept_off_photos_says_so(capsys, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The bundled generator learned synthetic faces only: --crop runs it alone, and says how to
    get the shape model instead; a model that paints photos says nothing."""
    from ganimation.inference import bundled_model_path

    crop = tmp_path / "crop.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(crop)
    caplog.set_level("WARNING", logger="ganimation")
    code, _, _ = animate(capsys, bundled_model_path(), crop, "--crop", "--expression", "happy", "-o", tmp_path / "a.png")
    assert code == 0 and (tmp_path / "a.png").is_file()
    assert any("learned synthetic faces only" in record.getMessage() and "without --crop" in record.getMessage()
               for record in caplog.records)
    caplog.clear()
    code, _, _ = animate(capsys, tiny_model_file(tmp_path / "tiny.safetensors"), crop, "--crop", "--expression", "happy", "-o", tmp_path / "b.png")
    assert code == 0 and not [record for record in caplog.records if "synthetic faces only" in record.getMessage()]
