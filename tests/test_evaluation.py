"""The ground-truth benchmark: the target suite, evaluate() with stub regressors, the report files,
and the synthetic data set read back through the training loader."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganimation import synth
from ganimation.aus import AU_NAMES, NUM_AUS, OPENFACE_COLUMNS, aus_from_mapping
from ganimation.checkpoint import save_model_file
from ganimation.config import ModelConfig
from ganimation.data import FaceDataset, discover_dataset
from ganimation.evaluation import (
    PSNR_CAP, copy_input, evaluate, markdown_table, model_editor, target_suite, write_report,
)
from ganimation.inference import GANimation
from ganimation.metrics import psnr, ssim
from ganimation.networks import Discriminator, Generator

SIZE = 32
TINY = ModelConfig(image_size=SIZE, generator_channels=8, generator_residual_blocks=1, discriminator_channels=8,
                   discriminator_layers=3)
NEUTRAL = np.zeros(NUM_AUS, dtype=np.float32)
METRICS = ("psnr", "psnr_face", "ssim", "ssim_face", "au_error", "au_error_all", "change_outside",
           "au_error/single", "au_error/emotion", "au_error/random", "mse_changed", "mse_unchanged", "psnr_same_aus")


class MeanRegressor:
    """A stub judge whose answer is a function of the image: every AU = mean brightness."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        return np.full(NUM_AUS, np.asarray(image, dtype=np.float64).mean() / 255.0)


class ConstantRegressor:
    """A stub judge that always answers 0.5."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        return np.full(NUM_AUS, 0.5)


def tiny_model(path: Path) -> Path:
    state = torch.get_rng_state()
    torch.manual_seed(0)
    save_model_file(path, Generator(TINY), Discriminator(TINY), TINY)
    torch.set_rng_state(state)
    return path


def oracle_for(identities: list[synth.Identity]):  # type: ignore[no-untyped-def]
    """A perfect editor: knows each source's identity and renders it at the target."""
    by_source = {synth.render_face(identity, NEUTRAL, SIZE).tobytes(): identity for identity in identities}

    def oracle(image: np.ndarray, source_aus: np.ndarray, target_aus: np.ndarray):  # type: ignore[no-untyped-def]
        assert np.array_equal(source_aus, NEUTRAL)
        return synth.render_face(by_source[np.asarray(image).tobytes()], target_aus, SIZE), None, None

    return oracle


@pytest.fixture(scope="module")
def identities() -> list[synth.Identity]:
    rng = np.random.default_rng(5)
    return [synth.sample_identity(rng) for _ in range(2)]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory,  # type: ignore[no-untyped-def]
              identities: list[synth.Identity]):
    folder = tmp_path_factory.mktemp("evaluation")
    model = GANimation.load(tiny_model(folder / "tiny.safetensors"), device="cpu")
    methods = {"copy": copy_input, "oracle": oracle_for(identities), "model": model_editor(model)}
    grid_path = folder / "grid.png"
    report = evaluate(methods, identities, SIZE, MeanRegressor(), random_combinations=1, seed=0, grid_path=grid_path)
    return report, grid_path


def test_target_suite() -> None:
    suite = target_suite(random_combinations=4, seed=3)
    kinds = [kind for kind, _, _ in suite]
    assert kinds == ["single"] * (17 * 3) + ["emotion"] * 7 + ["random"] * 4
    for number, (_, label, vector) in enumerate(suite[:51]):
        au, level = AU_NAMES[number // 3], (0.33, 0.66, 1.0)[number % 3]
        assert vector.shape == (NUM_AUS,) and vector.dtype == np.float32
        assert np.count_nonzero(vector) == 1, label
        assert vector[AU_NAMES.index(au)] == pytest.approx(level)
        assert label == f"{au}={level:.2f}"
    emotions = suite[51:58]
    assert "neutral" not in [label for _, label, _ in emotions]
    assert {label for _, label, _ in emotions} == {"happy", "sad", "surprise", "fear", "anger", "disgust", "contempt"}
    for _, label, vector in emotions:  # the synthetic world's own, not the user-facing presets
        np.testing.assert_array_equal(vector, aus_from_mapping(synth.LABEL_PROTOTYPES[label]))
    for _, label, vector in suite[58:]:
        assert label.startswith("random") and 2 <= np.count_nonzero(vector) <= 4
        assert vector.min() >= 0 and vector.max() <= 1.0
    again = target_suite(random_combinations=4, seed=3)
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(suite, again))
    assert not np.array_equal(target_suite(4, seed=4)[-1][2], suite[-1][2])
    assert len(target_suite(0)) == 58


def test_report_structure(evaluated) -> None:  # type: ignore[no-untyped-def]
    report, _ = evaluated
    assert set(report) == {"identities", "edits_per_method", "image_size", "suite",
                           "regressor_error_on_ground_truth", "regressor_error_on_ground_truth_all_aus",
                           "methods", "single_au_readings"}
    assert report["identities"] == 2 and report["image_size"] == SIZE
    assert report["edits_per_method"] == 2 * (17 * 3 + 7 + 1)
    assert report["suite"]["random_combinations"] == 1 and len(report["suite"]["emotions"]) == 7
    assert list(report["methods"]) == ["copy", "oracle", "model"]
    for means in report["methods"].values():
        assert set(means) == set(METRICS)
        assert all(np.isfinite(value) for value in means.values())
        assert means["psnr"] <= PSNR_CAP and -1.0 <= means["ssim"] <= 1.0
    json.dumps(report, allow_nan=False)  # JSON-able as it is


def test_oracle_scores_perfectly(evaluated) -> None:  # type: ignore[no-untyped-def]
    report, _ = evaluated
    oracle = report["methods"]["oracle"]
    assert oracle["psnr"] == PSNR_CAP == 60.0 and oracle["psnr_face"] == PSNR_CAP
    assert oracle["ssim"] == pytest.approx(1.0, abs=1e-9) and oracle["ssim_face"] == pytest.approx(1.0, abs=1e-9)
    # It returns the ground truth itself, so the judge errs exactly as much as on ground truth.
    assert oracle["au_error"] == pytest.approx(report["regressor_error_on_ground_truth"], abs=1e-12)
    assert oracle["change_outside"] < 1e-3  # the renderer changes (almost) nothing outside the face
    assert oracle["mse_changed"] == 0.0 and oracle["mse_unchanged"] == 0.0
    assert oracle["psnr_same_aus"] == PSNR_CAP  # asked for neutral, it renders the neutral source


def test_single_au_readings(evaluated, identities: list[synth.Identity]) -> None:  # type: ignore[no-untyped-def]
    report, _ = evaluated
    readings = report["single_au_readings"]
    assert list(readings) == [label for kind, label, _ in target_suite(1, 0) if kind == "single"]
    regressor = MeanRegressor()
    sources = [synth.render_face(identity, NEUTRAL, SIZE) for identity in identities]
    for label, values in readings.items():
        assert list(values) == ["truth", "copy", "oracle", "model"]
        assert values["oracle"] == values["truth"]  # the oracle returns the true render
        # MeanRegressor reads every AU as the mean brightness, so copying reads the sources'.
        assert values["copy"] == pytest.approx(np.mean([regressor.predict(image)[0] for image in sources]))
        name, level = label.split("=")
        target = np.zeros(NUM_AUS, dtype=np.float32)
        target[AU_NAMES.index(name)] = float(level)
        truths = [regressor.predict(synth.render_face(identity, target, SIZE))[0] for identity in identities]
        assert values["truth"] == pytest.approx(np.mean(truths))
    table = markdown_table(report)
    assert "| target | truth | copy | oracle | model |" in table
    assert f"| AU17=1.00 | {readings['AU17=1.00']['truth']:.2f} |" in table and "AU17=0.33" not in table


def test_copy_baseline(evaluated, identities: list[synth.Identity]) -> None:  # type: ignore[no-untyped-def]
    report, _ = evaluated
    copy = report["methods"]["copy"]
    assert copy["change_outside"] == 0.0
    assert copy["psnr"] < PSNR_CAP and copy["ssim"] < 1.0
    # The stub answers mean brightness for every AU: the copy's AU error by hand.
    sources = [synth.render_face(identity, NEUTRAL, SIZE) for identity in identities]
    # "AU error" counts the AUs the target asks to change (all are 0 in the neutral source).
    errors = [np.abs(source.mean() / 255.0 - target)[target > 0.05].mean()
              for source in sources for _, _, target in target_suite(1, 0)]
    errors_all = [np.abs(source.mean() / 255.0 - target).mean()
                  for source in sources for _, _, target in target_suite(1, 0)]
    assert copy["au_error"] == pytest.approx(np.mean(errors), abs=1e-9)
    assert copy["au_error_all"] == pytest.approx(np.mean(errors_all), abs=1e-9)
    # The copy's image scores, edit by edit: whole image, and the face oval only.
    whole, face, whole_ssim, face_ssim, whole_mse = [], [], [], [], []
    for identity, source in zip(identities, sources):
        mask = synth.face_region_mask(identity, SIZE)
        assert 0 < mask.sum() < mask.size
        for _, _, target in target_suite(1, 0):
            truth = synth.render_face(identity, target, SIZE)
            whole.append(min(psnr(source, truth), PSNR_CAP))
            face.append(min(psnr(source, truth, mask), PSNR_CAP))
            whole_ssim.append(ssim(source, truth))
            face_ssim.append(ssim(source, truth, mask))
            whole_mse.append(((source / 255.0 - truth / 255.0) ** 2).mean())
    assert copy["psnr"] == pytest.approx(np.mean(whole), abs=1e-9)
    assert copy["psnr_face"] == pytest.approx(np.mean(face), abs=1e-9)
    assert copy["ssim"] == pytest.approx(np.mean(whole_ssim), abs=1e-9)
    assert copy["ssim_face"] == pytest.approx(np.mean(face_ssim), abs=1e-9)
    assert copy["psnr_face"] < copy["psnr"]  # expressions change the face, nothing else
    # All of the copy's error is where the truth changed; the untrained model also errs elsewhere.
    assert copy["mse_changed"] == pytest.approx(np.mean(whole_mse), rel=1e-9) and copy["mse_unchanged"] == 0.0
    model = report["methods"]["model"]
    assert model["psnr"] < copy["psnr"]  # an untrained model only damages the face
    assert model["change_outside"] > 0.0
    assert model["mse_unchanged"] > 0.0
    assert copy["psnr_same_aus"] == PSNR_CAP
    assert model["psnr_same_aus"] < PSNR_CAP  # an untrained model changes the face even when asked not to


def test_psnr_same_aus_is_the_identity_edit(identities: list[synth.Identity]) -> None:
    """The same-AUs score is the PSNR of edit(source, neutral -> neutral) against the source, per identity."""
    darken = lambda image, source, target: ((image * 0.9).astype(np.uint8), None, None)  # noqa: E731
    report = evaluate({"darken": darken}, identities, SIZE, ConstantRegressor(), random_combinations=0)
    sources = [synth.render_face(identity, NEUTRAL, SIZE) for identity in identities]
    expected = np.mean([min(psnr((s * 0.9).astype(np.uint8), s), PSNR_CAP) for s in sources])
    assert report["methods"]["darken"]["psnr_same_aus"] == pytest.approx(expected, abs=1e-9)
    assert report["edits_per_method"] == len(identities) * 58  # not an edit of the suite


def test_constant_regressor_known_errors(identities: list[synth.Identity]) -> None:
    report = evaluate({"copy": copy_input}, identities[:1], SIZE, ConstantRegressor(), random_combinations=0)
    copy = report["methods"]["copy"]
    # One AU asked at L, judged 0.5: |0.5 - L| averaged over the levels 0.33, 0.66, 1.0
    # (0.17, 0.16, 0.5); over all 17 AUs the 16 at 0 add 16 * 0.5: (8 + |0.5 - L|) / 17.
    assert copy["au_error/single"] == pytest.approx(0.83 / 3, abs=1e-6)
    singles_all = [(8.0 + abs(0.5 - level)) / 17 for level in (0.33, 0.66, 1.0)]
    emotions_all = [np.abs(0.5 - aus_from_mapping(prototype)).mean() for prototype in synth.LABEL_PROTOTYPES.values()]
    assert copy["au_error_all"] == pytest.approx(np.mean(singles_all * 17 + emotions_all), abs=1e-6)
    assert report["regressor_error_on_ground_truth"] == pytest.approx(copy["au_error"], abs=1e-12)
    assert "au_error/random" not in copy
    assert report["edits_per_method"] == 58
    with pytest.raises(ValueError, match="at least one identity"):
        evaluate({"copy": copy_input}, [], SIZE, ConstantRegressor())
    with pytest.raises(ValueError, match="one method"):
        evaluate({}, identities, SIZE, ConstantRegressor())


def test_grid_written(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, grid_path = evaluated
    picture = np.asarray(Image.open(grid_path))
    # 8 rows of: source, truth, oracle, model edit, its attention, its colour (copy is left out).
    assert picture.shape == (8 * (SIZE + 2) - 2, 6 * (SIZE + 2) - 2, 3)


def test_markdown_table(evaluated) -> None:  # type: ignore[no-untyped-def]
    report, _ = evaluated
    table = markdown_table(report)
    lines = table.splitlines()
    assert lines[0] == ("| method | AU error ↓ | AU error, all 17 ↓ | PSNR ↑ | PSNR face ↑ | SSIM ↑ | SSIM face ↑ | "
                        "change outside face ↓ | PSNR, same AUs ↑ |")
    assert lines[1] == "|---|---|---|---|---|---|---|---|---|"
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| copy", "| oracle", "| model"]
    assert all(line.count("|") == 10 for line in lines[:5])
    assert "| oracle | " in table and " 60.00 | 60.00 | 1.000 | 1.000 |" in lines[3]
    assert "2 held-out identities, 118 edits per method, 32 px" in table
    assert f"{report['regressor_error_on_ground_truth']:.3f}" in table


def strict_json(text: str):  # type: ignore[no-untyped-def]
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_write_report(tmp_path: Path, evaluated) -> None:  # type: ignore[no-untyped-def]
    report, _ = evaluated
    json_path, table_path = write_report(report, tmp_path / "new" / "folder")
    assert json_path == tmp_path / "new" / "folder" / "evaluation.json"
    assert strict_json(json_path.read_text(encoding="utf-8")) == report
    assert table_path.read_text(encoding="utf-8") == markdown_table(report)
    assert not list(tmp_path.rglob("*.tmp*"))


def test_write_report_keeps_json_strict(tmp_path: Path, evaluated) -> None:  # type: ignore[no-untyped-def]
    """A non-finite mean is written as null: NaN and Infinity are not JSON."""
    report, _ = evaluated
    broken = json.loads(json.dumps(report))
    broken["methods"]["model"]["au_error"] = float("nan")
    broken["regressor_error_on_ground_truth"] = float("inf")
    json_path, table_path = write_report(broken, tmp_path)
    written = strict_json(json_path.read_text(encoding="utf-8"))
    assert written["methods"]["model"]["au_error"] is None
    assert written["regressor_error_on_ground_truth"] is None
    assert written["methods"]["copy"] == report["methods"]["copy"]
    assert "| model | nan |" in table_path.read_text(encoding="utf-8")


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def test_synthetic_dataset_through_the_loader(tmp_path: Path) -> None:
    root = synth.write_synthetic_dataset(tmp_path / "synth", identities=4, per_identity=3, size=SIZE)
    index = discover_dataset(root)
    samples = index.train + index.test
    assert len(samples) == 12 and index.report.split_method == "id lists"
    listed = {split: [row[0] for row in read_csv(root / f"{split}_ids.csv")[1:]] for split in ("train", "test")}
    assert [sample.image_path.name for sample in index.train] == listed["train"]
    assert [sample.image_path.name for sample in index.test] == listed["test"]
    assert len(listed["test"]) == 3  # one identity of four (test_fraction 0.2)
    rows = {row[0]: row for row in read_csv(root / "aus.csv")[1:]}
    assert read_csv(root / "aus.csv")[0] == ["filename", "identity", *OPENFACE_COLUMNS]
    train_people = {rows[name][1] for name in listed["train"]}
    test_people = {rows[name][1] for name in listed["test"]}
    assert len(train_people) == 3 and len(test_people) == 1 and not train_people & test_people
    dataset = FaceDataset(samples, SIZE, flip=False)
    assert len(dataset) == 12
    for position, sample in enumerate(samples):
        item = dataset[position]
        assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
        assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert item["aus"].shape == (NUM_AUS,) and item["index"] == position
        expected = np.array([float(value) for value in rows[sample.image_path.name][2:]]) / 5.0
        np.testing.assert_allclose(item["aus"].numpy(), expected, atol=1e-3)
        assert sample.identity == rows[sample.image_path.name][1]
        pixels = np.asarray(Image.open(sample.image_path).convert("RGB"))
        np.testing.assert_allclose(item["image"].numpy(), pixels.transpose(2, 0, 1) / 127.5 - 1.0, atol=1e-6)
