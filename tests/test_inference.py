"""The animate API: loading from every kind of path, outputs, interpolation, AU checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ganimation import inference
from ganimation.aus import AUError, NUM_AUS, expression_aus
from ganimation.checkpoint import MODEL_FILE, CheckpointError, save_model_file
from ganimation.config import build_config
from ganimation.inference import AnimationResult, GANimation
from ganimation.networks import build_networks

SMILE = expression_aus("happy")


@pytest.fixture(scope="module")
def model(trained_run: Path) -> GANimation:
    return GANimation.load(trained_run, device="cpu")


def test_load_from_run_folder_checkpoint_and_file(trained_run: Path, face_image: np.ndarray) -> None:
    from_run = GANimation.load(trained_run, device="cpu")
    from_checkpoint = GANimation.load(trained_run / "checkpoints" / "step_000000004", device="cpu")
    from_file = GANimation.load(trained_run / MODEL_FILE, device="cpu")
    from_older = GANimation.load(trained_run / "checkpoints" / "step_000000002" / MODEL_FILE, device="cpu")
    assert from_run.source == str(trained_run / MODEL_FILE)
    assert from_checkpoint.source == str(trained_run / "checkpoints" / "step_000000004" / MODEL_FILE)
    assert from_run.config == build_config("smoke").model and from_run.image_size == 32
    assert from_run.device == torch.device("cpu")
    assert not from_run.generator.training
    edits = [m.animate(face_image, SMILE).image for m in (from_run, from_checkpoint, from_file, from_older)]
    np.testing.assert_array_equal(edits[0], edits[1])  # the final model is the step-4 checkpoint
    np.testing.assert_array_equal(edits[0], edits[2])
    assert not np.array_equal(edits[0], edits[3])  # step 2 is another model


def test_load_run_folder_without_final_model(tmp_path: Path, trained_run: Path) -> None:
    shutil.copytree(trained_run / "checkpoints", tmp_path / "checkpoints")
    loaded = GANimation.load(tmp_path, device="cpu")
    assert loaded.source == str(tmp_path / "checkpoints" / "step_000000004" / MODEL_FILE)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        GANimation.load(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="holds no model.safetensors and no checkpoints"):
        GANimation.load(tmp_path)


def test_no_bundled_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "bundled_model_path", lambda: None)
    with pytest.raises(CheckpointError, match="no bundled model.*--checkpoint"):
        GANimation.load(None)


def test_bundled_model_is_used_for_none(monkeypatch: pytest.MonkeyPatch, trained_run: Path) -> None:
    monkeypatch.setattr(inference, "bundled_model_path", lambda: trained_run / MODEL_FILE)
    assert GANimation.load(None, device="cpu").source == str(trained_run / MODEL_FILE)


def test_truncated_model_file(tmp_path: Path, trained_run: Path) -> None:
    broken = tmp_path / "model.safetensors"
    broken.write_bytes((trained_run / MODEL_FILE).read_bytes()[:3000])
    with pytest.raises(CheckpointError) as raised:
        GANimation.load(broken)
    assert str(broken) in str(raised.value)


def test_animate_outputs(model: GANimation, face_image: np.ndarray) -> None:
    result = model.animate(face_image, SMILE)
    assert isinstance(result, AnimationResult)
    assert result.image.shape == (32, 32, 3) and result.image.dtype == np.uint8
    assert result.colour.shape == (32, 32, 3) and result.colour.dtype == np.uint8
    assert result.attention.shape == (32, 32) and result.attention.dtype == np.float32
    assert 0.0 <= result.attention.min() and result.attention.max() <= 1.0
    np.testing.assert_allclose(result.aus, SMILE)
    # At the model's own size the edit is A * input + (1 - A) * C, up to the uint8 rounding.
    attention = result.attention[..., None].astype(np.float64)
    composed = attention * face_image + (1 - attention) * result.colour
    assert np.abs(composed - result.image).max() <= 1.5
    grey = result.attention_image()
    assert grey.shape == (32, 32, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., 0], np.round(result.attention * 255).astype(np.uint8))


def test_animate_keeps_input_size(model: GANimation) -> None:
    image = np.random.default_rng(3).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    result = model.animate(image, SMILE)
    assert result.image.shape == (48, 40, 3) and result.image.dtype == np.uint8
    assert result.attention.shape == (48, 40) and result.attention.dtype == np.float32
    assert result.colour.shape == (48, 40, 3)
    assert -1e-6 <= result.attention.min() and result.attention.max() <= 1 + 1e-6


def test_animate_is_deterministic_and_conditioned(model: GANimation, face_image: np.ndarray) -> None:
    first = model.animate(face_image, SMILE)
    again = model.animate(face_image, SMILE)
    neutral = model.animate(face_image, np.zeros(NUM_AUS))
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.array_equal(first.attention, neutral.attention)


def test_animate_batch_matches_animate(model: GANimation, face_image: np.ndarray) -> None:
    targets = [SMILE, expression_aus("sad"), np.zeros(NUM_AUS)]
    results = model.animate_batch(face_image, targets, batch_size=2)
    assert len(results) == 3
    for target, result in zip(targets, results):
        single = model.animate(face_image, target)
        assert np.abs(single.image.astype(int) - result.image.astype(int)).max() <= 1
        np.testing.assert_allclose(single.attention, result.attention, atol=1e-5)


def test_interpolate(model: GANimation, face_image: np.ndarray) -> None:
    source = expression_aus("sad", 0.5)
    frames = model.interpolate(face_image, source, SMILE, 5)
    assert len(frames) == 5
    np.testing.assert_allclose(frames[0].aus, source, atol=1e-6)
    np.testing.assert_allclose(frames[-1].aus, SMILE, atol=1e-6)
    # Cosine easing: the middle frame is halfway, the second a quarter of the way minus the ease.
    np.testing.assert_allclose(frames[2].aus, (source + SMILE) / 2, atol=1e-6)
    weight = (1 - np.cos(np.pi / 4)) / 2
    np.testing.assert_allclose(frames[1].aus, source + (SMILE - source) * weight, atol=1e-6)
    start, end = model.animate(face_image, source), model.animate(face_image, SMILE)
    assert np.abs(frames[0].image.astype(int) - start.image.astype(int)).max() <= 1
    assert np.abs(frames[-1].image.astype(int) - end.image.astype(int)).max() <= 1
    np.testing.assert_allclose(frames[0].attention, start.attention, atol=1e-5)
    np.testing.assert_allclose(frames[-1].attention, end.attention, atol=1e-5)
    assert len(model.interpolate(face_image, source, SMILE, 2)) == 2
    with pytest.raises(ValueError, match="at least 2 frames"):
        model.interpolate(face_image, source, SMILE, 1)


@pytest.mark.parametrize(("aus", "message"), [
    (np.zeros(NUM_AUS - 1), "expected 17 AU values"),
    (np.zeros(NUM_AUS + 1), "expected 17 AU values"),
    (np.r_[np.zeros(NUM_AUS - 1), np.nan], "non-finite value for AU45"),
    (np.r_[np.inf, np.zeros(NUM_AUS - 1)], "non-finite value for AU01"),
    (np.r_[np.zeros(8), 1.5, np.zeros(8)], "outside \\[0, 1\\]: AU12=1.5"),
    (np.r_[-0.2, np.zeros(NUM_AUS - 1)], "outside \\[0, 1\\]: AU01=-0.2"),
])
def test_bad_target_aus(model: GANimation, face_image: np.ndarray, aus: np.ndarray, message: str) -> None:
    with pytest.raises(AUError, match=message):
        model.animate(face_image, aus)
    with pytest.raises(AUError, match=message):
        model.interpolate(face_image, np.zeros(NUM_AUS), aus, 3)


def test_bad_image(model: GANimation) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.animate(np.zeros((32, 32), dtype=np.uint8), SMILE)
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.animate(np.zeros((32, 32, 3), dtype=np.float32), SMILE)
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.animate(np.zeros((32, 32, 4), dtype=np.uint8), SMILE)


def test_estimate_aus(model: GANimation, face_image: np.ndarray) -> None:
    estimate = model.estimate_aus(face_image)
    assert estimate.shape == (NUM_AUS,) and estimate.dtype == np.float32
    assert 0.0 <= estimate.min() and estimate.max() <= 1.0
    bigger = np.random.default_rng(9).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert model.estimate_aus(bigger).shape == (NUM_AUS,)


def test_model_without_critic(tmp_path: Path, face_image: np.ndarray) -> None:
    torch.manual_seed(0)
    config = build_config("smoke").model
    generator, _ = build_networks(config)
    path = save_model_file(tmp_path / "generator_only.safetensors", generator, None, config, half=True)
    loaded = GANimation.load(path, device="cpu")
    assert loaded.discriminator is None
    assert loaded.generator.encoder[0][0].weight.dtype == torch.float32
    assert loaded.animate(face_image, SMILE).image.shape == (32, 32, 3)
    with pytest.raises(CheckpointError, match="generator_only.safetensors: this model file has no critic"):
        loaded.estimate_aus(face_image)


def test_the_name_bundled_loads_the_bundled_model(tmp_path, monkeypatch) -> None:
    from ganimation.inference import bundled_model_path, resolve_model_path

    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("bundled") == bundled_model_path()
