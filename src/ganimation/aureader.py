"""Reading the 17 GANimation AUs of real faces from the landmark model's blendshapes.

GANimation's labels are OpenFace 2.x AU intensities. Rather than ask users to install OpenFace (a
C++ tool), the project reads real faces itself: MediaPipe's Face Landmarker gives 52 ARKit-style
blendshape scores per face (:mod:`ganimation.facemesh`), and :data:`AU_TABLE` maps them onto the
17 AUs. Each AU is one blendshape (left and right averaged), or for two AUs a combination, put on
OpenFace's scale by a linear ramp::

    AU = clip((source - neutral) / (full - neutral), 0, 1)      # x 5 for OpenFace's 0-5 scale

``neutral`` is the source's reading on a relaxed face, ``full`` the reading that counts as
OpenFace's 5. Both were calibrated on 1,000 CelebA and UTKFace photos and 740 frames of nine
expression clips: ``neutral`` near the median of relaxed faces, ``full`` so that the strongest
1 % of those faces read about 4 of 5. ``docs/aus.md`` reports the fit and what the reader cannot
see. The two exceptions, and why:

* **AU06 cheek raiser and AU09 nose wrinkler.** The blendshape network's ``cheekSquint`` and
  ``noseSneer`` outputs stay at 0 on every face we tried (a known property of Face Landmarker
  v2). AU06 is read as the geometric mean of the eye squint and the smile (the cheek raiser is
  what narrows the eyes from below in a smile), AU09 as the geometric mean of the brow lowerer
  and the upper lip raiser (the two movements that come with a nose wrinkle). Both are zero when
  either part is.
* **AU25 lips part** has no blendshape; it is the gap between the inner lips (landmarks 13 and
  14) in eye distances.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from ganimation.aus import AU_NAMES, NUM_AUS
from ganimation.facemesh import BLENDSHAPE_NAMES, INNER_LIPS, LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS, MeshFace

#: Source name of the inner-lip gap (not a blendshape): landmarks 13-14 over the eye distance.
LIP_GAP = "lipGap"


@dataclasses.dataclass(frozen=True)
class AURule:
    """How one AU is read: the mean of ``sources`` (or, with ``combine="geometric"``, the geometric
    mean of the sources' left/right means), ramped from ``neutral`` (0) to ``full`` (1)."""

    au: str
    sources: tuple[str, ...]
    neutral: float
    full: float
    combine: str = "mean"

    def __post_init__(self) -> None:
        if self.au not in AU_NAMES:
            raise ValueError(f"unknown AU {self.au!r}")
        if not 0.0 <= self.neutral < self.full:
            raise ValueError(f"{self.au}: need 0 <= neutral < full, got {self.neutral}, {self.full}")
        if self.combine not in ("mean", "geometric"):
            raise ValueError(f"{self.au}: combine must be 'mean' or 'geometric', got {self.combine!r}")


def _pair(stem: str) -> tuple[str, str]:
    return (f"{stem}Left", f"{stem}Right")


#: The mapping, in :data:`~ganimation.aus.AU_NAMES` order.
AU_TABLE: tuple[AURule, ...] = (
    AURule("AU01", ("browInnerUp",), 0.05, 1.00),
    AURule("AU02", _pair("browOuterUp"), 0.10, 1.00),
    AURule("AU04", _pair("browDown"), 0.05, 0.85),
    AURule("AU05", _pair("eyeWide"), 0.02, 0.50),
    AURule("AU06", ("eyeSquint", "mouthSmile"), 0.05, 0.85, combine="geometric"),
    AURule("AU07", _pair("eyeSquint"), 0.30, 0.85),
    AURule("AU09", ("browDown", "mouthUpperUp"), 0.02, 0.60, combine="geometric"),
    AURule("AU10", _pair("mouthUpperUp"), 0.02, 0.95),
    AURule("AU12", _pair("mouthSmile"), 0.05, 1.00),
    AURule("AU14", _pair("mouthDimple"), 0.02, 0.35),
    AURule("AU15", _pair("mouthFrown"), 0.00, 0.15),
    AURule("AU17", ("mouthShrugLower",), 0.01, 0.65),
    AURule("AU20", _pair("mouthStretch"), 0.02, 0.35),
    AURule("AU23", _pair("mouthPress"), 0.04, 0.40),
    AURule("AU25", (LIP_GAP,), 0.04, 0.45),
    AURule("AU26", ("jawOpen",), 0.02, 0.80),
    AURule("AU45", _pair("eyeBlink"), 0.08, 0.80),
)
assert tuple(rule.au for rule in AU_TABLE) == AU_NAMES


def _source(values: dict[str, float], name: str) -> float:
    """A blendshape, or the mean of its Left/Right pair when ``name`` is a stem."""
    if name in values:
        return values[name]
    return (values[f"{name}Left"] + values[f"{name}Right"]) / 2.0


def lip_gap(landmarks: np.ndarray) -> float:
    """Gap between the inner lips in eye distances (eye centres from the eye corners)."""
    left = landmarks[list(LEFT_EYE_CORNERS), :2].mean(0)
    right = landmarks[list(RIGHT_EYE_CORNERS), :2].mean(0)
    eye_distance = float(np.linalg.norm(right - left))
    upper, lower = landmarks[INNER_LIPS[0], :2], landmarks[INNER_LIPS[1], :2]
    return float(np.linalg.norm(lower - upper)) / max(eye_distance, 1e-6)


def aus_from_blendshapes(blendshapes: Sequence[float] | np.ndarray, gap: float, table: Sequence[AURule] = AU_TABLE) -> np.ndarray:
    """The 17 AU intensities in [0, 1] (model order) from 52 blendshape scores and the lip gap."""
    scores = np.asarray(blendshapes, dtype=np.float64).reshape(-1)
    if scores.shape != (len(BLENDSHAPE_NAMES),):
        raise ValueError(f"expected {len(BLENDSHAPE_NAMES)} blendshape scores, got {scores.shape}")
    values = dict(zip(BLENDSHAPE_NAMES, scores.tolist()))
    values[LIP_GAP] = float(gap)
    result = np.zeros(NUM_AUS, dtype=np.float32)
    for index, rule in enumerate(table):
        parts = [_source(values, name) for name in rule.sources]
        if rule.combine == "geometric":
            source = math.prod(max(part, 0.0) for part in parts) ** (1.0 / len(parts))
        else:
            source = sum(parts) / len(parts)
        result[index] = min(1.0, max(0.0, (source - rule.neutral) / (rule.full - rule.neutral)))
    return result


def read_aus(face: MeshFace) -> np.ndarray:
    """The 17 AU intensities in [0, 1] of one face the landmark model has read."""
    return aus_from_blendshapes(face.blendshapes, lip_gap(face.landmarks))
