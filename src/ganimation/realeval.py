"""Evaluation on real photos (``ganimation evaluate --photos DIR``).

Real photos have no ground truth for an edit, so what an edit did is measured by reading the
edited photo again with the AU reader (:mod:`ganimation.aureader`), on faces the model never saw:

* **response**: how far the AUs an expression asks for moved towards their targets, as a
  fraction of the way (1: the reading reached the target; 0: it did not move), averaged over
  the asked AUs and the six basic emotions at intensity 1;
* **AU error**: mean absolute distance between the asked AUs' reading and their targets;
* **leakage**: mean absolute change of the AUs the expression does not ask for;
* **zero edit**: each face edited towards its own AUs (what ``--intensity 0`` does) must come back
  unchanged: the face's PSNR against the input (capped at 60 dB);
* **outside**: mean absolute change of the pixels outside the faces' paste masks (0 by design);
* **time**: seconds per edit (detection excluded).

Methods compared in one run: copying the input, and any number of models (the bundled model, the
synthetic-faces model, a run folder, ...). The reader is also what labelled the training data,
so it is not an independent judge: it tells whether the model learned what it was taught.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ganimation.animation import PhotoAnimator
from ganimation.aureader import read_aus
from ganimation.aus import EXPRESSIONS, expression_aus
from ganimation.faces import AlignedFace, Face, LandmarkFaceDetector, blend_mask, box_iou
from ganimation.files import ImageReadError, load_image, write_text_atomic
from ganimation.inference import GANimation
from ganimation.openface import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

#: The expressions of the suite: every basic emotion but neutral (the zero edit covers that).
SUITE = tuple(name for name in EXPRESSIONS if name not in ("neutral", "contempt"))
PSNR_CAP = 60.0
#: An AU counts as asked when the expression's target differs from the face's reading by more.
ASKED = 0.1


@dataclass
class MethodScores:
    response: list[float]
    au_error: list[float]
    leakage: list[float]
    zero_psnr: list[float]
    outside: list[float]
    seconds: list[float]
    per_expression: dict[str, list[float]]

    @classmethod
    def empty(cls) -> MethodScores:
        return cls([], [], [], [], [], [], {name: [] for name in SUITE})

    def summary(self) -> dict[str, float]:
        def mean(values: Sequence[float]) -> float:
            return float(np.mean(values)) if len(values) else float("nan")

        return {"response": mean(self.response), "au_error": mean(self.au_error), "leakage": mean(self.leakage),
                "zero_edit_psnr": mean(self.zero_psnr), "outside": mean(self.outside),
                "seconds_per_edit": mean(self.seconds),
                "response_by_expression": {name: mean(values) for name, values in self.per_expression.items()}}


def list_photos(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of photos")
    photos = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not photos:
        raise ValueError(f"{root}: no photos ({', '.join(IMAGE_SUFFIXES)}) in it")
    return photos


def _reading(detector: LandmarkFaceDetector, photo: np.ndarray, face: Face) -> np.ndarray | None:
    """The AUs of the face at ``face``'s place in ``photo`` (None if it is no longer found)."""
    found = detector.detect(photo)
    if not found:
        return None
    best = max(found, key=lambda other: box_iou(other.box, face.box))
    return read_aus(best.mesh) if box_iou(best.box, face.box) > 0.3 and best.mesh is not None else None


def _face_psnr(edited: np.ndarray, original: np.ndarray, aligned: AlignedFace) -> float:
    """PSNR over the face (the crop's paste mask warped into the photo, weighted)."""
    import cv2

    mask = blend_mask(aligned.size)
    height, width = original.shape[:2]
    weight = cv2.warpAffine(mask, aligned.inverse, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
    if weight.sum() <= 0:
        return PSNR_CAP
    difference = (edited.astype(np.float64) - original.astype(np.float64)) / 255.0
    mse = float((weight[..., None] * difference**2).sum() / (3.0 * weight.sum()))
    return PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10.0 * np.log10(1.0 / mse))


def _outside(edited: np.ndarray, original: np.ndarray, aligned: AlignedFace) -> float:
    import cv2

    height, width = original.shape[:2]
    footprint = cv2.warpAffine(np.ones((aligned.size, aligned.size), np.float32), aligned.inverse, (width, height),
                               flags=cv2.INTER_LINEAR, borderValue=0)
    outside = footprint <= 0
    if not outside.any():
        return 0.0
    return float(np.abs(edited.astype(np.float64) - original.astype(np.float64))[outside].mean() / 255.0)


def evaluate_photos(models: dict[str, GANimation | None], photos: Sequence[Path], *,
                    progress: bool = True) -> dict[str, object]:
    """Score each method (``None``: copy the input) on the largest face of each photo."""
    detector = LandmarkFaceDetector()
    scores = {name: MethodScores.empty() for name in models}
    used = 0
    for path in tqdm(photos, desc="photos", unit="photo", disable=not progress):
        try:
            photo = load_image(path)
        except ImageReadError as error:
            logger.warning("skipping %s", error)
            continue
        faces = detector.detect(photo)
        if not faces:
            logger.info("no face in %s", path.name)
            continue
        face = max(faces, key=lambda other: other.size)
        own = read_aus(face.mesh)
        used += 1
        for name, model in models.items():
            score = scores[name]
            if model is None:
                edits = {label: photo for label in (*SUITE, "zero")}
                aligned = None
                seconds = 0.0
            else:
                animator = PhotoAnimator(model, which="largest", detector=_Fixed(face))
                aligned = animator.align(photo)
                edits = {}
                start = time.perf_counter()
                for label in SUITE:
                    edits[label] = animator.edit(photo, expression_aus(label), aligned=aligned).image
                edits["zero"] = animator.edit(photo, own, aligned=aligned).image
                seconds = (time.perf_counter() - start) / (len(SUITE) + 1)
            score.seconds.append(seconds)
            for label in SUITE:
                target = expression_aus(label)
                reading = own if model is None else _reading(detector, edits[label], face)
                if reading is None:
                    reading = own  # the face was lost: count it as no change
                asked = np.abs(target - own) > ASKED
                if asked.any():
                    moved = (reading - own)[asked] / (target - own)[asked]
                    response = float(np.clip(moved, -1.0, 1.5).mean())
                    score.response.append(response)
                    score.per_expression[label].append(response)
                    score.au_error.append(float(np.abs(reading - target)[asked].mean()))
                if (~asked).any():
                    score.leakage.append(float(np.abs(reading - own)[~asked].mean()))
            if aligned is not None:
                score.zero_psnr.append(_face_psnr(edits["zero"], photo, aligned[0]))
                score.outside.append(max(_outside(edits[label], photo, aligned[0]) for label in SUITE))
            else:
                score.zero_psnr.append(PSNR_CAP)
                score.outside.append(0.0)
    if not used:
        raise ValueError("no face found in any of the photos")
    return {"photos": used, "suite": list(SUITE), "methods": {name: s.summary() for name, s in scores.items()}}


class _Fixed:
    """A detector that returns the face already found (the methods edit the same face)."""

    def __init__(self, face: Face) -> None:
        self.face = face

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return [self.face]


def markdown_table(report: dict[str, object]) -> str:
    methods = report["methods"]
    assert isinstance(methods, dict)
    lines = ["| method | response ↑ | AU error ↓ | leakage ↓ | zero-edit face PSNR ↑ | change outside face ↓ | s / edit |",
             "|---|---|---|---|---|---|---|"]
    for name, values in methods.items():
        lines.append(f"| {name} | {values['response']:.3f} | {values['au_error']:.3f} | {values['leakage']:.3f} | "
                     f"{values['zero_edit_psnr']:.2f} | {values['outside']:.4f} | {values['seconds_per_edit']:.3f} |")
    names = list(SUITE)
    lines += ["", "Response by expression:", "",
              "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for name, values in methods.items():
        by = values["response_by_expression"]
        lines.append(f"| {name} | " + " | ".join(f"{by[label]:.2f}" for label in names) + " |")
    return "\n".join(lines)


def write_report(report: dict[str, object], output: str | Path) -> tuple[Path, Path]:
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, table_path = folder / "real_evaluation.json", folder / "real_evaluation.md"
    write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
    write_text_atomic(table_path, f"{report['photos']} photos, largest face each.\n\n" + markdown_table(report) + "\n")
    return json_path, table_path

