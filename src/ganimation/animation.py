"""From photo (or video) to edited photo, interpolation, timeline or re-enactment.

These pipelines join the model (:mod:`ganimation.inference`) and the face handling
(:mod:`ganimation.faces`): faces are detected and aligned once, every crop edit is batched,
and each edit is pasted back into the untouched photo. The CLI and the web app call them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganimation.aus import NUM_AUS, AUError, aus_from_mapping, expression_aus
from ganimation.faces import (
    MIN_FACE_SIZE, AlignedFace, Face, FaceDetector, FaceTracker, PhotoEdit, align_face, default_detector,
    edit_photo, paste_back, select_faces,
)
from ganimation.inference import AnimationResult, GANimation

logger = logging.getLogger(__name__)


class TimelineError(ValueError):
    """A timeline file that cannot be read or makes no sense."""


# ---------------------------------------------------------------------- AU sequences


def ease(weight: np.ndarray | float) -> np.ndarray | float:
    """Smoothstep: zero velocity at both ends, so motion starts and stops without a jolt."""
    weight = np.clip(weight, 0.0, 1.0)
    return weight * weight * (3.0 - 2.0 * weight)


def interpolate_aus(start: np.ndarray, end: np.ndarray, frames: int) -> np.ndarray:
    """``frames`` AU vectors from ``start`` to ``end`` (both included) with eased motion."""
    if frames < 2:
        raise ValueError(f"an interpolation needs at least 2 frames, got {frames}")
    weights = ease(np.linspace(0.0, 1.0, frames))[:, None]
    return (np.asarray(start)[None] + (np.asarray(end) - np.asarray(start))[None] * weights).astype(np.float32)


@dataclass(frozen=True)
class Keyframe:
    time: float  # seconds
    aus: np.ndarray  # (17,) in [0, 1]


def _keyframe_aus(entry: dict[str, Any], where: str) -> np.ndarray:
    base = None
    if "expression" in entry:
        base = expression_aus(str(entry["expression"]), float(entry.get("intensity", 1.0)))
    mapping = entry.get("aus", {})
    if isinstance(mapping, list):
        if len(mapping) != NUM_AUS:
            raise TimelineError(f"{where}: 'aus' list needs {NUM_AUS} values, got {len(mapping)}")
        return aus_from_mapping({}, mapping if base is None else mapping)
    if not isinstance(mapping, dict):
        raise TimelineError(f"{where}: 'aus' must be a mapping like {{\"AU12\": 0.8}} or a list of {NUM_AUS}")
    if base is None and not mapping:
        raise TimelineError(f"{where}: a keyframe needs 'expression' or 'aus'")
    return aus_from_mapping(mapping, base)


def read_timeline(source: str | os.PathLike[str] | dict[str, Any]) -> tuple[list[Keyframe], float]:
    """Read a timeline: ``{"fps": 24, "keyframes": [{"time": 0, "expression": "neutral"},
    {"time": 1.5, "expression": "happy", "intensity": 0.8, "aus": {"AU26": 0.3}}]}``.

    Returns the keyframes sorted by time and the frame rate (default 24).
    """
    where = str(source) if not isinstance(source, dict) else "timeline"
    if isinstance(source, dict):
        document = source
    else:
        path = Path(source)
        if not path.is_file():
            raise TimelineError(f"{path}: no such timeline file")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise TimelineError(f"{path}: not valid JSON ({error})") from None
    entries = document.get("keyframes") if isinstance(document, dict) else document
    if not isinstance(entries, list) or len(entries) < 2:
        raise TimelineError(f"{where}: needs a list 'keyframes' of at least 2 entries")
    fps = float(document.get("fps", 24.0)) if isinstance(document, dict) else 24.0
    if not math.isfinite(fps) or fps <= 0 or fps > 240:
        raise TimelineError(f"{where}: fps must be in (0, 240], got {fps}")
    keyframes = []
    for number, entry in enumerate(entries):
        label = f"{where}: keyframe {number}"
        if not isinstance(entry, dict):
            raise TimelineError(f"{label}: expected an object")
        time = entry.get("time", entry.get("t"))
        try:
            time = float(time)
        except (TypeError, ValueError):
            raise TimelineError(f"{label}: 'time' (seconds) is missing or not a number") from None
        if not math.isfinite(time) or time < 0:
            raise TimelineError(f"{label}: time must be a non-negative number")
        try:
            keyframes.append(Keyframe(time, _keyframe_aus(entry, label)))
        except AUError as error:
            raise TimelineError(f"{label}: {error}") from None
    keyframes.sort(key=lambda keyframe: keyframe.time)
    if keyframes[-1].time <= keyframes[0].time:
        raise TimelineError(f"{where}: keyframes must span a positive duration")
    return keyframes, fps


def timeline_aus(keyframes: Sequence[Keyframe], fps: float) -> np.ndarray:
    """Per-frame AUs ``(N, 17)`` sampling the timeline at ``fps``, eased between keyframes."""
    times = np.array([keyframe.time for keyframe in keyframes])
    values = np.stack([keyframe.aus for keyframe in keyframes])
    count = int(math.floor((times[-1] - times[0]) * fps + 1e-9)) + 1
    samples = times[0] + np.arange(count) / fps
    segment = np.clip(np.searchsorted(times, samples, side="right") - 1, 0, len(times) - 2)
    span = times[segment + 1] - times[segment]
    weight = np.where(span > 0, (samples - times[segment]) / np.where(span > 0, span, 1.0), 1.0)
    eased = ease(weight)[:, None]
    return (values[segment] + (values[segment + 1] - values[segment]) * eased).astype(np.float32)


def smooth_aus(aus: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` frames (edges use the frames they have)."""
    if window <= 1:
        return np.asarray(aus, dtype=np.float32)
    sequence = np.asarray(aus, dtype=np.float64)
    kernel = np.ones(window)
    half = window // 2
    padded_counts = np.convolve(np.ones(len(sequence)), kernel, mode="full")[half:half + len(sequence)]
    smoothed = np.stack([np.convolve(sequence[:, column], kernel, mode="full")[half:half + len(sequence)]
                         for column in range(sequence.shape[1])], axis=1)
    return np.clip(smoothed / padded_counts[:, None], 0.0, 1.0).astype(np.float32)


def resample_sequence(stamps: np.ndarray, aus: np.ndarray, source_fps: float, target_fps: float) -> np.ndarray:
    """Resample a per-frame AU sequence from ``source_fps`` to ``target_fps`` by linear interpolation."""
    if abs(source_fps - target_fps) < 1e-6:
        return aus
    times = (np.asarray(stamps, dtype=np.float64) - stamps[0]) / source_fps
    count = int(math.floor(times[-1] * target_fps + 1e-9)) + 1
    targets = np.arange(count) / target_fps
    return np.stack([np.interp(targets, times, aus[:, column]) for column in range(aus.shape[1])], axis=1).astype(
        np.float32)


def driving_aus(path: str | os.PathLike[str], smoothing: int = 1, fps: float | None = None,
                source_fps: float = 30.0) -> np.ndarray:
    """Per-frame AUs of an OpenFace FeatureExtraction CSV, optionally resampled and smoothed."""
    from ganimation.openface import read_openface_sequence

    stamps, aus = read_openface_sequence(path)
    if fps is not None:
        frames = stamps.astype(np.float64) if np.issubdtype(stamps.dtype, np.integer) else stamps * source_fps
        aus = resample_sequence(frames, aus, source_fps, fps)
    return smooth_aus(aus, smoothing)


# ---------------------------------------------------------------------- photos


@dataclass
class FaceEstimate:
    face: Face
    aus: np.ndarray  # (17,) in [0, 1]


class PhotoAnimator:
    """Edits the faces of one photo; detection and alignment are done once per photo."""

    def __init__(self, model: GANimation, which: int | str = "largest", detector: FaceDetector | None = None,
                 min_face: float = MIN_FACE_SIZE) -> None:
        self.model = model
        self.which = which
        self.detector = detector or default_detector()
        self.min_face = min_face

    def align(self, photo: np.ndarray, source: str | Path | None = None) -> list[AlignedFace]:
        faces = self.detector.detect(photo)
        chosen = select_faces(faces, self.which, min_face=self.min_face, source=source)
        return [align_face(photo, face, self.model.image_size) for face in chosen]

    def estimate(self, photo: np.ndarray, source: str | Path | None = None) -> list[FaceEstimate]:
        """The AU intensities of every selected face, from the critic's D_y head."""
        return [FaceEstimate(aligned.face, self.model.estimate_aus(aligned.crop))
                for aligned in self.align(photo, source)]

    def source_aus(self, crop: np.ndarray) -> np.ndarray:
        """Where an interpolation starts: the face as it is (D_y), or neutral without a critic."""
        return self.model.estimate_aus(crop) if self.model.discriminator is not None else np.zeros(NUM_AUS, np.float32)

    def edit(self, photo: np.ndarray, target_aus: np.ndarray, source: str | Path | None = None) -> PhotoEdit:
        """The photo with the selected faces moved to ``target_aus``."""
        return edit_photo(photo, lambda crop: self.model.animate(crop, target_aus), self.which,
                          self.model.image_size, self.detector, self.min_face, source=source)

    def frames(self, photo: np.ndarray, aus_sequence: np.ndarray | Sequence[np.ndarray],
               source: str | Path | None = None, aligned: list[AlignedFace] | None = None,
               batch_size: int = 16) -> Iterator[np.ndarray]:
        """Whole-photo frames, one per AU vector of ``aus_sequence`` (the same for every face)."""
        aligned = aligned if aligned is not None else self.align(photo, source)
        sequence = np.asarray(aus_sequence, dtype=np.float32)
        for start in range(0, len(sequence), batch_size):
            chunk = sequence[start:start + batch_size]
            per_face = [self.model.animate_batch(face.crop, chunk, batch_size) for face in aligned]
            for frame_index in range(len(chunk)):
                frame = photo
                for face, results in zip(aligned, per_face):
                    frame = paste_back(frame, face, results[frame_index].image)
                yield frame if frame is not photo else photo.copy()

    def interpolation(self, photo: np.ndarray, target_aus: np.ndarray, frames: int,
                      source_aus: np.ndarray | None = None, source: str | Path | None = None,
                      ) -> Iterator[np.ndarray]:
        """From the face as it is (or ``source_aus``) to ``target_aus`` in ``frames`` frames."""
        aligned = self.align(photo, source)
        start = source_aus if source_aus is not None else self.source_aus(aligned[0].crop)
        return self.frames(photo, interpolate_aus(start, target_aus, frames), aligned=aligned)


def edit_video_frames(model: GANimation, frames: Iterable[np.ndarray], aus_for_frame: Any,
                      detector: FaceDetector | None = None, min_face: float = MIN_FACE_SIZE,
                      ) -> Iterator[np.ndarray]:
    """Edit the main face of every video frame; ``aus_for_frame(i)`` gives frame ``i``'s target.

    The face is tracked and its alignment smoothed over time so the crop does not jitter;
    frames where no face is tracked pass through unchanged.
    """
    tracker = FaceTracker(detector=detector or default_detector())
    for index, frame in enumerate(frames):
        face = tracker.track(frame)
        if face is None or min(face.box[2] - face.box[0], face.box[3] - face.box[1]) < min_face:
            yield frame
            continue
        aligned = align_face(frame, face, model.image_size)
        result: AnimationResult = model.animate(aligned.crop, aus_for_frame(index))
        yield paste_back(frame, aligned, result.image)
