"""Tests for dataset discovery on every supported layout, validation reports and FaceDataset."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganimation.aus import NUM_AUS, OPENFACE_COLUMNS
from ganimation.data import (
    FaceDataset,
    Sample,
    discover_dataset,
    identity_groups,
    image_to_tensor,
    tensor_to_image,
    validate_dataset,
)
from ganimation.files import ImageReadError
from ganimation.openface import AnnotationError, write_au_csv


def save_face(path: Path, seed: int, size: tuple[int, int] = (12, 12)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def aus_for(index: int) -> np.ndarray:
    return np.full(NUM_AUS, (index % 5) / 5.0, dtype=np.float32)


def make_generator_layout(root: Path, count: int = 6) -> Path:
    """What the synthetic-data generator writes: images/, aus.csv, train_ids.csv, test_ids.csv."""
    names = [f"{i:04d}.png" for i in range(count)]
    for i, name in enumerate(names):
        save_face(root / "images" / name, i)
    write_au_csv(root / "aus.csv", [(name, aus_for(i), {"identity": f"id{i // 2}"}) for i, name in enumerate(names)])
    (root / "train_ids.csv").write_text("filename\n" + "\n".join(names[:4]) + "\n")
    (root / "test_ids.csv").write_text("filename\n" + "\n".join(names[4:]) + "\n")
    return root


def test_discover_generator_layout(tmp_path: Path) -> None:
    index = discover_dataset(make_generator_layout(tmp_path))
    assert [s.image_path.name for s in index.train] == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert [s.image_path.name for s in index.test] == ["0004.png", "0005.png"]
    sample = index.train[1]
    assert isinstance(sample, Sample) and sample.identity == "id0"
    assert sample.aus.dtype == np.float32 and sample.aus.shape == (NUM_AUS,)
    np.testing.assert_allclose(sample.aus, aus_for(1), atol=1e-4)
    assert index.report.layout == "combined-csv" and index.report.split_method == "id lists"
    assert index.report.ok and index.report.usable == 6


def test_discover_reference_pickle_layout(tmp_path: Path) -> None:
    stems = ["100", "101", "102", "103"]
    for i, stem in enumerate(stems):
        save_face(tmp_path / "imgs" / f"{stem}.jpg", i)
    data = {stem: aus_for(i).astype(np.float64) * 5.0 for i, stem in enumerate(stems)}
    (tmp_path / "aus_openface.pkl").write_bytes(pickle.dumps(data, protocol=2))
    (tmp_path / "train_ids.csv").write_text("100\n101\n102\n")
    (tmp_path / "test_ids.csv").write_text("103.jpg\n")
    index = discover_dataset(tmp_path)
    assert [s.image_path.stem for s in index.train] == ["100", "101", "102"]
    assert [s.image_path.stem for s in index.test] == ["103"]
    assert index.report.layout == "pickle"
    np.testing.assert_allclose(index.test[0].aus, aus_for(3), atol=1e-6)


def openface_csv(path: Path, raw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    headers = ["face", " confidence", *(f" {c}" for c in OPENFACE_COLUMNS)]
    path.write_text(",".join(headers) + "\n" + ",".join(["0", "0.9", *(f"{v:.2f}" for v in raw)]) + "\n")


@pytest.mark.parametrize("csv_folder", [".", "processed", "aus"])
def test_discover_per_image_csv_layout(tmp_path: Path, csv_folder: str) -> None:
    for i in range(5):
        save_face(tmp_path / f"{i:04d}.png", i)
        openface_csv(tmp_path / csv_folder / f"{i:04d}.csv", np.full(NUM_AUS, float(i)))
    index = discover_dataset(tmp_path)
    assert index.report.layout == "per-image-csv"
    samples = sorted(index.train + index.test, key=lambda s: s.image_path.name)
    assert len(samples) == 5 and len(index.test) >= 1 and len(index.train) >= 1
    np.testing.assert_allclose([s.aus[0] for s in samples], [0.0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)


def test_split_by_identity_has_no_overlap_and_is_deterministic(tmp_path: Path) -> None:
    rows = []
    for i in range(60):
        name = f"{i:04d}.png"
        save_face(tmp_path / "images" / name, i, size=(4, 4))
        rows.append((name, aus_for(i), {"identity": f"person{i % 12}"}))
    write_au_csv(tmp_path / "aus.csv", rows)
    index = discover_dataset(tmp_path, test_fraction=0.25)
    train_ids = {s.identity for s in index.train}
    test_ids = {s.identity for s in index.test}
    assert train_ids and test_ids and not train_ids & test_ids
    assert len(index.train) + len(index.test) == 60
    assert "identity" in index.report.split_method
    again = discover_dataset(tmp_path, test_fraction=0.25)
    assert [s.image_path for s in again.test] == [s.image_path for s in index.test]
    other_seed = discover_dataset(tmp_path, test_fraction=0.25, seed=7)
    assert len(other_seed.train) + len(other_seed.test) == 60


def test_hash_split_by_file_name_keeps_a_test_sample(tmp_path: Path) -> None:
    rows = []
    for i in range(3):
        save_face(tmp_path / "images" / f"{i}.png", i, size=(4, 4))
        rows.append((f"{i}.png", aus_for(i), {}))
    write_au_csv(tmp_path / "aus.csv", rows)
    index = discover_dataset(tmp_path)
    assert len(index.test) == 1 and len(index.train) == 2
    assert "file name" in index.report.split_method


def test_discover_errors(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no such dataset folder"):
        discover_dataset(tmp_path / "missing")
    save_face(tmp_path / "a.png", 0)
    with pytest.raises(AnnotationError, match="unknown layout"):
        discover_dataset(tmp_path)
    write_au_csv(tmp_path / "aus.csv", [("other.png", aus_for(1), {})])
    with pytest.raises(AnnotationError, match="no usable samples"):
        discover_dataset(tmp_path)


def make_messy_dataset(root: Path) -> Path:
    """Four good images plus one of each problem validate_dataset must count."""
    rows = []
    for i in range(4):
        save_face(root / "images" / f"good{i}.png", i, size=(16, 16) if i else (20, 10))
        rows.append((f"good{i}.png", aus_for(i + 1), {"identity": f"p{i}"}))
    save_face(root / "images" / "no_aus.png", 9)
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rows.append(("corrupt.png", aus_for(1), {"identity": "p9"}))
    rows.append(("ghost.png", aus_for(2), {"identity": "p8"}))
    save_face(root / "images" / "too_high.png", 11)
    write_au_csv(root / "aus.csv", rows)
    text = (root / "aus.csv").read_text().rstrip("\n")
    text += "\ntoo_high.png,p7," + ",".join(["9.0"] + ["1"] * (NUM_AUS - 1)) + "\n"
    (root / "aus.csv").write_text(text)
    return root


def test_validate_dataset_counts_problems(tmp_path: Path) -> None:
    report = validate_dataset(make_messy_dataset(tmp_path))
    assert report.num_images == 7
    assert report.usable == 4 and report.train_size + report.test_size == 4
    assert report.images_without_aus.count == 2
    assert set(report.images_without_aus.examples) == {"no_aus.png", "too_high.png"}
    assert report.aus_without_images.count == 1 and report.aus_without_images.examples == ["ghost.png"]
    assert report.unreadable_images.count == 1 and "corrupt.png" in report.unreadable_images.examples[0]
    assert report.invalid_annotations.count == 1 and "AU01_r=9" in report.invalid_annotations.examples[0]
    assert report.image_sizes == {"20x10": 1, "16x16": 3, "12x12": 2}
    assert report.au_max["AU01"] == pytest.approx(0.8, abs=1e-4)
    assert report.au_mean["AU45"] == pytest.approx(0.5, abs=1e-4)
    assert report.ok
    json.dumps(report.to_dict())

    summary = report.summary()
    for needle in ("images found:         7", "usable samples:       4", "images without AUs:   2", "no_aus.png",
                   "AUs without images:   1", "ghost.png", "unreadable images:    1", "corrupt.png",
                   "invalid AU rows:      1", "16x16 x3", "AU12", "Status: OK"):
        assert needle in summary, f"{needle!r} missing from:\n{summary}"


def test_validate_without_image_check_and_fatal_errors(tmp_path: Path) -> None:
    report = validate_dataset(make_messy_dataset(tmp_path), check_images=False)
    assert report.usable == 5 and report.unreadable_images.count == 0 and not report.image_sizes
    assert "not checked" in report.summary()

    empty = tmp_path / "empty"
    empty.mkdir()
    bad = validate_dataset(empty)
    assert not bad.ok and "unknown layout" in (bad.error or "")
    assert "ERROR" in bad.summary() and "NOT USABLE" in bad.summary()


def test_validate_lists_at_most_max_listed(tmp_path: Path) -> None:
    for i in range(5):
        save_face(tmp_path / "images" / f"orphan{i}.png", i, size=(4, 4))
    save_face(tmp_path / "images" / "ok.png", 1, size=(4, 4))
    write_au_csv(tmp_path / "aus.csv", [("ok.png", aus_for(1), {})])
    report = validate_dataset(tmp_path, max_listed=2)
    assert report.images_without_aus.count == 5 and len(report.images_without_aus.examples) == 2
    assert "... and 3 more" in report.summary()


# --------------------------------------------------------------------------- tensors and FaceDataset


def asymmetric_image(path: Path, size: tuple[int, int] = (24, 16)) -> Path:
    """Left part red, right part a blue ramp: any horizontal flip is visible."""
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 3, 0] = 255
    pixels[:, :, 2] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    Image.fromarray(pixels).save(path)
    return path


def test_image_tensor_round_trip() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    tensor = image_to_tensor(pixels)
    assert tensor.shape == (3, 8, 8) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    np.testing.assert_array_equal(tensor_to_image(tensor), pixels)
    assert (tensor_to_image(torch.full((1, 3, 2, 2), 5.0)) == 255).all()
    assert (tensor_to_image(torch.full((3, 2, 2), -5.0)) == 0).all()
    assert image_to_tensor(np.zeros((10, 30, 3), np.uint8), 6).shape == (3, 6, 6)
    with pytest.raises(ValueError):
        image_to_tensor(np.zeros((4, 4), np.float32))


def test_face_dataset_shapes_and_ranges(tmp_path: Path) -> None:
    path = asymmetric_image(tmp_path / "face.png")
    dataset = FaceDataset([Sample(path, aus_for(2))], image_size=8, flip=False)
    item = dataset[0]
    assert set(item) == {"image", "aus", "index"} and item["index"] == 0 and len(dataset) == 1
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert -1.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["aus"].dtype == torch.float32 and item["aus"].shape == (NUM_AUS,)
    torch.testing.assert_close(item["aus"], torch.from_numpy(aus_for(2)))
    # center crop of 24x16 keeps columns 4..19: the red band (columns 0..7) shrinks to the left edge only
    pixels = tensor_to_image(item["image"])
    assert pixels[:, 0, 0].min() > 200 and pixels[:, -1, 0].max() < 50


def test_face_dataset_flip_flips_and_is_seeded(tmp_path: Path) -> None:
    path = asymmetric_image(tmp_path / "face.png")
    reference = FaceDataset([Sample(path, aus_for(1))], image_size=8, flip=False)[0]["image"]
    dataset = FaceDataset([Sample(path, aus_for(1))], image_size=8, flip=True)

    def draws() -> list[bool]:
        flipped = []
        for _ in range(40):
            image = dataset[0]["image"]
            if torch.equal(image, reference):
                flipped.append(False)
            else:
                torch.testing.assert_close(image, reference.flip(-1))
                flipped.append(True)
        return flipped

    torch.manual_seed(123)
    first = draws()
    assert any(first) and not all(first)
    torch.manual_seed(123)
    assert draws() == first


def test_face_dataset_cache_and_errors(tmp_path: Path) -> None:
    path = asymmetric_image(tmp_path / "face.png")
    cached = FaceDataset([Sample(path, aus_for(1))], image_size=8, flip=False, cache=True)
    first = cached[0]["image"]
    path.unlink()
    torch.testing.assert_close(cached[-1]["image"], first)
    uncached = FaceDataset([Sample(path, aus_for(1))], image_size=8, flip=False)
    with pytest.raises(ImageReadError, match="face.png"):
        uncached[0]
    with pytest.raises(IndexError):
        cached[1]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        FaceDataset([Sample(broken, aus_for(0))], image_size=8)[0]


def test_validate_warns_about_values_already_in_model_units(tmp_path: Path) -> None:
    rows = []
    for i in range(25):
        save_face(tmp_path / "images" / f"{i}.png", i, size=(4, 4))
        rows.append((f"{i}.png", aus_for(i) / 5.0, {}))  # written as if 0-1 were the raw scale
    write_au_csv(tmp_path / "aus.csv", rows)
    report = validate_dataset(tmp_path, check_images=False)
    assert report.ok and any("already divided by 5" in warning for warning in report.warnings)
    assert "warning: no AU exceeds 1" in report.summary()


def identity_samples(root: Path, identities: list[str]) -> list[Sample]:
    """One distinct 4x4 image per entry, AUs all equal to the entry's position / 10."""
    return [Sample(save_face(root / f"{index:02d}.png", index, size=(4, 4)),
                   np.full(NUM_AUS, index / 10, dtype=np.float32), identity)
            for index, identity in enumerate(identities)]


def test_pairs_come_from_the_same_identity(tmp_path: Path) -> None:
    identities = ["a", "b", "a", "c", "b", "a"]
    dataset = FaceDataset(identity_samples(tmp_path, identities), image_size=4, flip=False, pair_by_identity=True)
    torch.manual_seed(0)
    partners: dict[int, set[int]] = {index: set() for index in range(len(identities))}
    for _ in range(30):
        for index in range(len(dataset)):
            item = dataset[index]
            partner = int(round(float(item["partner_aus"][0]) * 10))  # AUs encode the partner's index
            partners[index].add(partner)
            torch.testing.assert_close(item["partner_image"], dataset[partner]["image"])
    assert partners == {0: {2, 5}, 2: {0, 5}, 5: {0, 2}, 1: {4}, 4: {1}, 3: {3}}  # lone "c" pairs with itself


def test_partners_flip_with_their_image(tmp_path: Path) -> None:
    samples = identity_samples(tmp_path, ["a", "a"])
    upright = FaceDataset(samples, image_size=4, flip=False)
    dataset = FaceDataset(samples, image_size=4, flip=True, pair_by_identity=True)
    torch.manual_seed(0)
    flipped = []
    for _ in range(20):
        item = dataset[0]
        flipped.append(not torch.equal(item["image"], upright[0]["image"]))
        expected = upright[1]["image"].flip(-1) if flipped[-1] else upright[1]["image"]
        torch.testing.assert_close(item["partner_image"], expected)
    assert any(flipped) and not all(flipped)


def test_pairing_needs_identities_with_several_images(tmp_path: Path) -> None:
    assert identity_groups(identity_samples(tmp_path, ["x", "y", "x"])) == {"x": [0, 2], "y": [1]}
    with pytest.raises(ValueError, match="01.png: no identity; pairing images needs an 'identity' column"):
        FaceDataset(identity_samples(tmp_path, ["x", None]), image_size=4, pair_by_identity=True)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="every one of the 2 identities has a single image"):
        FaceDataset(identity_samples(tmp_path, ["x", "y"]), image_size=4, pair_by_identity=True)
    plain = FaceDataset(identity_samples(tmp_path, ["x", None]), image_size=4)  # type: ignore[list-item]
    assert set(plain[1]) == {"image", "aus", "index"}
