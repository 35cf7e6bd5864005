"""The model shipped in the package: it loads with the recorded config and really edits faces.

These run the bundled weights on identities drawn apart from the training and benchmark seeds and
judge the edits with the independent AU regressor, so a broken, truncated or swapped model file
fails here (docs/bundled_model.md has the full benchmark).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ganimation import synth
from ganimation.aus import NUM_AUS, expression_aus
from ganimation.auregressor import load_regressor
from ganimation.config import build_config
from ganimation.evaluation import au_errors, target_suite
from ganimation.inference import GANimation, bundled_model_path
from ganimation.metrics import mean_abs_change

REPO = Path(__file__).resolve().parents[1]
NEUTRAL = np.zeros(NUM_AUS, dtype=np.float32)


@pytest.fixture(scope="module")
def model() -> GANimation:
    return GANimation.load(device="cpu")


@pytest.fixture(scope="module")
def identities() -> list[synth.Identity]:
    rng = np.random.default_rng(4242)  # apart from the training set (7) and the benchmark (90210)
    return [synth.sample_identity(rng) for _ in range(2)]


def targets() -> list[np.ndarray]:
    """The benchmark's targets with every AU alone at full intensity, and the basic emotions."""
    return [aus for kind, _, aus in target_suite(random_combinations=0) if kind == "emotion" or aus.max() == 1.0]


def test_bundled_model_ships_with_its_config(model: GANimation) -> None:
    assert bundled_model_path() is not None
    assert model.config == build_config(config_file=REPO / "configs" / "bundled64.yaml").model
    assert model.image_size == 64 and model.config.use_attention


def test_bundled_model_moves_aus_towards_the_target(model: GANimation, identities: list[synth.Identity]) -> None:
    regressor = load_regressor()
    model_errors, copy_errors = [], []
    for identity in identities:
        source = synth.render_face(identity, NEUTRAL, model.image_size)
        source_reading = regressor.predict(source)
        for target in targets():
            model_errors.append(au_errors(regressor.predict(model.animate(source, target).image), target, NEUTRAL)[0])
            copy_errors.append(au_errors(source_reading, target, NEUTRAL)[0])
    assert np.mean(model_errors) < 0.8 * np.mean(copy_errors), (np.mean(model_errors), np.mean(copy_errors))


def test_bundled_model_leaves_the_background_alone(model: GANimation, identities: list[synth.Identity]) -> None:
    for identity in identities:
        source = synth.render_face(identity, NEUTRAL, model.image_size)
        outside = ~synth.face_region_mask(identity, model.image_size)
        result = model.animate(source, expression_aus("surprise"))
        assert mean_abs_change(result.image, source, outside) < 0.005
        assert result.attention[outside].mean() > 0.9  # kept from the input, not repainted
        # ... while the face itself does change.
        assert mean_abs_change(result.image, source, ~outside) > 0.005
