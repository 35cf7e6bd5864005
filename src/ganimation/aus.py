"""Facial Action Unit vocabulary: the 17 AUs that OpenFace 2.x regresses, their FACS names,
named expressions (EMFACS prototypes), and parsing of user-given AU assignments.

Every AU vector in this package has the order of :data:`AU_IDS` and intensities in ``[0, 1]``
(OpenFace's 0-5 scale divided by :data:`OPENFACE_SCALE`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: The AUs OpenFace 2.x estimates as intensities (``AU01_r`` ... ``AU45_r``), in its column order.
AU_IDS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
NUM_AUS = len(AU_IDS)
#: OpenFace intensities run from 0 to 5; the model works on ``intensity / OPENFACE_SCALE``.
OPENFACE_SCALE = 5.0

#: Canonical names (``AU01``) in model order.
AU_NAMES: tuple[str, ...] = tuple(f"AU{au:02d}" for au in AU_IDS)
#: OpenFace 2.x intensity column names (``AU01_r``) in model order.
OPENFACE_COLUMNS: tuple[str, ...] = tuple(f"{name}_r" for name in AU_NAMES)

#: FACS meaning of each AU, for tables, help texts and UI labels.
AU_DESCRIPTIONS: dict[str, str] = {
    "AU01": "inner brow raiser",
    "AU02": "outer brow raiser",
    "AU04": "brow lowerer",
    "AU05": "upper lid raiser",
    "AU06": "cheek raiser",
    "AU07": "lid tightener",
    "AU09": "nose wrinkler",
    "AU10": "upper lip raiser",
    "AU12": "lip corner puller",
    "AU14": "dimpler",
    "AU15": "lip corner depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU23": "lip tightener",
    "AU25": "lips part",
    "AU26": "jaw drop",
    "AU45": "blink",
}

#: Basic emotions as FACS/EMFACS prototypes at their apex: AU name -> intensity in [0, 1] at
#: full intensity. Where EMFACS (Ekman & Friesen) lists several prototypes of an emotion, the one
#: named here is the one that reads as that emotion on its own, in a still photo:
#:
#: * surprise 1+2+5+25+26 and fear 1+2+4+5+20+25+26 are at full strength, as posed;
#: * anger is the open-mouth prototype 4+5+7+10+25+26 (teeth bared, brows down and drawn together,
#:   a glare). Its closed-mouth variant 4+5+7+23 shows little more than pressed lips in a photo;
#: * disgust is 9+10+15 with the lips parted: FACS's 9+15+16 needs AU16 (lower lip depressor),
#:   which OpenFace does not estimate, and AU25 (lips part) is what it does to the mouth;
#:   brows lower with it (AU04);
#: * contempt is unilateral in FACS, and weak here because the model (like OpenFace) has no
#:   notion of side.
#:
#: The synthetic world samples its labels from a table of its own (``synth``), not from this one.
EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"AU06": 1.0, "AU12": 1.0, "AU25": 0.5},
    "sad": {"AU01": 1.0, "AU04": 0.8, "AU15": 1.0, "AU17": 0.5},
    "surprise": {"AU01": 1.0, "AU02": 1.0, "AU05": 1.0, "AU25": 1.0, "AU26": 1.0},
    "fear": {"AU01": 1.0, "AU02": 1.0, "AU04": 0.8, "AU05": 1.0, "AU20": 0.6, "AU25": 1.0, "AU26": 1.0},
    "anger": {"AU04": 1.0, "AU05": 0.8, "AU07": 0.8, "AU10": 1.0, "AU25": 1.0, "AU26": 0.5},
    "disgust": {"AU04": 0.5, "AU09": 1.0, "AU10": 1.0, "AU15": 0.5, "AU25": 0.6},
    "contempt": {"AU12": 0.4, "AU14": 0.6},
}


class AUError(ValueError):
    """A malformed AU name, value or vector given by the user or found in a file."""


_AU_NAME_PATTERN = re.compile(r"^\s*AU\s*0*(\d+)(?:_r)?\s*$", re.IGNORECASE)


def canonical_au_name(name: str) -> str:
    """Map ``"AU12"``, ``"au12"``, ``"AU12_r"``, ``"12"`` or ``" AU012 "`` to ``"AU12"``."""
    text = str(name).strip()
    match = _AU_NAME_PATTERN.match(text) or re.match(r"^\s*0*(\d+)\s*$", text)
    if match is None:
        raise AUError(f"not an action unit name: {name!r} (expected e.g. AU12)")
    canonical = f"AU{int(match.group(1)):02d}"
    if canonical not in AU_NAMES:
        raise AUError(f"unknown action unit {name!r}: supported are {', '.join(AU_NAMES)}")
    return canonical


def au_index(name: str) -> int:
    """Position of an AU in model order."""
    return AU_NAMES.index(canonical_au_name(name))


def check_au_vector(values: Sequence[float] | np.ndarray, *, source: str = "AU vector", scale: float = 1.0,
                    tolerance: float = 1e-6, names: Sequence[str] = AU_NAMES,
                    error: type[ValueError] = AUError) -> np.ndarray:
    """Validate a full AU vector on the scale ``[0, scale]`` and return it in model units ([0, 1]).

    Raises ``error`` (default :class:`AUError`) naming ``source`` and the offending AUs on a
    wrong length, NaN/inf or a value outside the range by more than ``tolerance``; rounding
    noise within the tolerance is clipped. OpenFace files are read with ``scale=5``.
    """
    vector = np.asarray(values, dtype=np.float64).reshape(-1)
    if vector.shape[0] != NUM_AUS:
        raise error(f"{source}: expected {NUM_AUS} AU values ({', '.join(AU_NAMES)}), got {vector.shape[0]}")
    bad = [names[i] for i in range(NUM_AUS) if not math.isfinite(vector[i])]
    if bad:
        raise error(f"{source}: non-finite value for {', '.join(bad)}")
    out_of_range = [f"{names[i]}={vector[i]:g}" for i in range(NUM_AUS)
                    if not -tolerance <= vector[i] <= scale + tolerance]
    if out_of_range:
        raise error(f"{source}: values outside [0, {scale:g}]: {', '.join(out_of_range)}")
    return (np.clip(vector, 0.0, scale) / scale).astype(np.float32)


def aus_from_mapping(mapping: Mapping[str, float], base: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Full AU vector from ``{"AU12": 0.8, ...}`` laid over ``base`` (zeros by default)."""
    vector = np.zeros(NUM_AUS, dtype=np.float64) if base is None else np.array(base, dtype=np.float64).reshape(-1)
    if vector.shape[0] != NUM_AUS:
        raise AUError(f"base AU vector: expected {NUM_AUS} values, got {vector.shape[0]}")
    for name, value in mapping.items():
        vector[au_index(name)] = float(value)
    return check_au_vector(vector, source="AU values")


def parse_au_assignment(text: str) -> tuple[str, float]:
    """Parse a command-line ``AU12=0.8`` into ``("AU12", 0.8)``."""
    if "=" not in text:
        raise AUError(f"expected NAME=VALUE such as AU12=0.8, got {text!r}")
    name, _, value_text = text.partition("=")
    try:
        value = float(value_text)
    except ValueError:
        raise AUError(f"{text!r}: {value_text.strip()!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise AUError(f"{text!r}: AU intensity must be within [0, 1]")
    return canonical_au_name(name), value


def parse_au_assignments(texts: Iterable[str]) -> dict[str, float]:
    """Parse several ``NAME=VALUE`` strings (each may hold comma-separated pairs)."""
    result: dict[str, float] = {}
    for text in texts:
        for part in str(text).split(","):
            if part.strip():
                name, value = parse_au_assignment(part)
                result[name] = value
    return result


def expression_aus(name: str, intensity: float = 1.0) -> np.ndarray:
    """AU vector of a named basic expression scaled by ``intensity`` in [0, 1]."""
    key = name.strip().lower()
    aliases = {"happiness": "happy", "sadness": "sad", "surprised": "surprise", "angry": "anger",
               "afraid": "fear", "disgusted": "disgust"}
    key = aliases.get(key, key)
    if key not in EXPRESSIONS:
        raise AUError(f"unknown expression {name!r}: choose from {', '.join(EXPRESSIONS)}")
    if not math.isfinite(intensity) or not 0.0 <= intensity <= 1.0:
        raise AUError(f"expression intensity must be within [0, 1], got {intensity}")
    return aus_from_mapping({au: value * intensity for au, value in EXPRESSIONS[key].items()})


def format_aus(vector: Sequence[float] | np.ndarray, *, nonzero_only: bool = False, threshold: float = 0.05) -> str:
    """Compact ``AU06=0.80 AU12=1.00`` rendering for logs."""
    parts = [f"{name}={float(value):.2f}" for name, value in zip(AU_NAMES, vector)
             if not nonzero_only or float(value) >= threshold]
    return " ".join(parts) if parts else "(neutral)"
