"""The AU reader: the blendshape table, its arithmetic, and readings of a real face."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ganimation import aureader
from ganimation.aus import AU_NAMES, NUM_AUS
from ganimation.facemesh import BLENDSHAPE_NAMES, FaceMesh
from ganimation.faces import sample_photo_path
from ganimation.files import load_image


def blendshapes(**values: float) -> np.ndarray:
    vector = np.zeros(len(BLENDSHAPE_NAMES))
    for name, value in values.items():
        vector[BLENDSHAPE_NAMES.index(name)] = value
    return vector


def au(vector: np.ndarray, name: str) -> float:
    return float(vector[AU_NAMES.index(name)])


def test_table_covers_the_17_aus_in_model_order() -> None:
    assert tuple(rule.au for rule in aureader.AU_TABLE) == AU_NAMES
    known = set(BLENDSHAPE_NAMES) | {aureader.LIP_GAP}
    for rule in aureader.AU_TABLE:
        for source in rule.sources:
            assert source in known or {f"{source}Left", f"{source}Right"} <= known, (rule.au, source)


@pytest.mark.parametrize("neutral, full, combine", [(0.5, 0.5, "mean"), (-0.1, 1.0, "mean"), (0.0, 1.0, "max")])
def test_bad_rules_are_refused(neutral: float, full: float, combine: str) -> None:
    with pytest.raises(ValueError):
        aureader.AURule("AU12", ("mouthSmile",), neutral, full, combine)


def test_relaxed_face_reads_zero() -> None:
    assert not aureader.aus_from_blendshapes(blendshapes(), gap=0.0).any()


def test_ramp_from_neutral_to_full_on_left_right_means() -> None:
    rule = next(rule for rule in aureader.AU_TABLE if rule.au == "AU12")
    half = rule.neutral + 0.5 * (rule.full - rule.neutral)
    reading = aureader.aus_from_blendshapes(blendshapes(mouthSmileLeft=half + 0.1, mouthSmileRight=half - 0.1), 0.0)
    assert au(reading, "AU12") == pytest.approx(0.5, abs=1e-6)
    full = aureader.aus_from_blendshapes(blendshapes(mouthSmileLeft=1.0, mouthSmileRight=1.0), 0.0)
    assert au(full, "AU12") == 1.0  # clipped at OpenFace's 5


def test_cheek_raiser_needs_both_a_squint_and_a_smile() -> None:
    rule = next(rule for rule in aureader.AU_TABLE if rule.au == "AU06")
    squint_only = aureader.aus_from_blendshapes(blendshapes(eyeSquintLeft=0.8, eyeSquintRight=0.8), 0.0)
    assert au(squint_only, "AU06") == 0.0 and au(squint_only, "AU07") > 0.5
    both = aureader.aus_from_blendshapes(blendshapes(eyeSquintLeft=0.64, eyeSquintRight=0.64,
                                                     mouthSmileLeft=0.81, mouthSmileRight=0.81), 0.0)
    expected = (math.sqrt(0.64 * 0.81) - rule.neutral) / (rule.full - rule.neutral)
    assert au(both, "AU06") == pytest.approx(expected, abs=1e-6)


def test_lips_part_comes_from_the_inner_lip_gap() -> None:
    landmarks = np.zeros((478, 3))
    landmarks[[33, 133], 0] = [0.0, 40.0]  # eye centre at x 20
    landmarks[[362, 263], 0] = [80.0, 160.0]  # eye centre at x 120: eye distance 100
    landmarks[13, :2] = [70.0, 150.0]
    landmarks[14, :2] = [70.0, 180.0]
    assert aureader.lip_gap(landmarks) == pytest.approx(0.3)
    rule = next(rule for rule in aureader.AU_TABLE if rule.au == "AU25")
    reading = aureader.aus_from_blendshapes(blendshapes(), 0.3)
    assert au(reading, "AU25") == pytest.approx((0.3 - rule.neutral) / (rule.full - rule.neutral), abs=1e-6)


def test_wrong_number_of_blendshapes_is_refused() -> None:
    with pytest.raises(ValueError, match="52 blendshape"):
        aureader.aus_from_blendshapes(np.zeros(17), 0.0)


def test_sample_photo_reads_as_a_smile() -> None:
    face = FaceMesh().find(load_image(sample_photo_path()))[0]
    reading = aureader.read_aus(face)
    assert reading.shape == (NUM_AUS,) and reading.dtype == np.float32
    assert au(reading, "AU12") > 0.6 and au(reading, "AU06") > 0.3  # a smile raises the cheeks too
    assert au(reading, "AU04") < 0.2 and au(reading, "AU26") < 0.2 and au(reading, "AU15") < 0.2
