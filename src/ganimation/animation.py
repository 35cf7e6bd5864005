"""From photo (or video) to edited photo, interpolation, timeline or re-enactment.

These pipelines join the model (:mod:`ganimation.inference`) and the face handling
(:mod:`ganimation.faces`): faces are detected and aligned once, every crop edit is batched,
and each edit is pasted back into the untouched photo (by default adding only the model's
change, see :data:`DEFAULT_BLEND`). The CLI and the web app call them; docs/animate.md
describes the commands, the timeline JSON and the driving CSV.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ganimation.aureader import read_aus
from ganimation.appearance import interior_on_photo, opening_after_warp, ratio_on_photo
from ganimation.shapewarp import FaceWarp, crop_landmarks, moved_landmarks, plan_warp
from ganimation.facemesh import FaceMesh, MeshFace, compose_affine, roi_from_landmarks
from ganimation.aus import NUM_AUS, AUError, aus_from_mapping, expression_aus
from ganimation.faces import (
    MIN_FACE_SIZE, AlignedFace, OneEuroFilter, EditedFace, Face, FaceDetector, FaceTooSmallError, FaceTracker, NoFaceError,
    PhotoEdit, align_face, alignment_matrix, blend_mask, default_detector, paste_back, select_faces,
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
    """Per-frame AUs ``(N, 17)`` sampling the timeline at ``fps``, eased between keyframes.

    The timeline starts at 0 s (the first keyframe's AUs are held until its time) and ends at the
    last keyframe, so ``N = floor(last_time * fps) + 1``; every keyframe whose time falls on a
    frame is reproduced exactly.
    """
    times = np.array([keyframe.time for keyframe in keyframes], dtype=np.float64)
    values = np.stack([keyframe.aus for keyframe in keyframes]).astype(np.float64)
    if len(times) == 1:
        times, values = np.array([times[0], times[0]]), np.concatenate([values, values])
    count = int(math.floor(times[-1] * fps + 1e-9)) + 1
    samples = np.arange(count) / fps
    segment = np.clip(np.searchsorted(times, samples, side="right") - 1, 0, len(times) - 2)
    span = times[segment + 1] - times[segment]
    weight = np.where(span > 0, (samples - times[segment]) / np.where(span > 0, span, 1.0), 1.0)
    eased = np.asarray(ease(weight))[:, None]
    return np.clip(values[segment] + (values[segment + 1] - values[segment]) * eased, 0.0, 1.0).astype(np.float32)


def smooth_aus(aus: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` frames (edges average the frames they have)."""
    if int(window) != window or window < 1:
        raise ValueError(f"the smoothing window must be a whole number of frames >= 1, got {window}")
    window = int(window)
    if window <= 1 or len(aus) < 2:
        return np.asarray(aus, dtype=np.float32)
    sequence = np.asarray(aus, dtype=np.float64)
    kernel = np.ones(window)
    half = window // 2
    padded_counts = np.convolve(np.ones(len(sequence)), kernel, mode="full")[half:half + len(sequence)]
    smoothed = np.stack([np.convolve(sequence[:, column], kernel, mode="full")[half:half + len(sequence)]
                         for column in range(sequence.shape[1])], axis=1)
    return np.clip(smoothed / padded_counts[:, None], 0.0, 1.0).astype(np.float32)


def resample_sequence(times: np.ndarray, aus: np.ndarray, fps: float) -> np.ndarray:
    """Linear resampling of AUs known at ``times`` (seconds, increasing) onto frames ``k / fps``.

    Frames run from the first time to the last; gaps (frames OpenFace lost) are interpolated.
    """
    times = np.asarray(times, dtype=np.float64)
    times = times - times[0]
    aus = np.asarray(aus, dtype=np.float32)
    count = int(math.floor(times[-1] * fps + 1e-6)) + 1
    targets = np.arange(count) / fps
    return np.stack([np.interp(targets, times, aus[:, column]) for column in range(aus.shape[1])],
                    axis=1).astype(np.float32)


def _sequence_times(stamps: np.ndarray, aus: np.ndarray, source_fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of each row (frame numbers / ``source_fps``, or timestamps), sorted, duplicates dropped."""
    stamps = np.asarray(stamps)
    times = stamps.astype(np.float64) / source_fps if np.issubdtype(stamps.dtype, np.integer) \
        else stamps.astype(np.float64)
    order = np.argsort(times, kind="stable")
    times, aus = times[order], np.asarray(aus)[order]
    keep = np.concatenate([[True], np.diff(times) > 1e-9])
    return times[keep], aus[keep]


def driving_frame_rate(path: str | os.PathLike[str]) -> float | None:
    """The frame rate an OpenFace CSV's ``frame`` and ``timestamp`` columns imply, if it has both."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            header = [name.strip().lower() for name in next(reader, [])]
            if "frame" not in header or "timestamp" not in header:
                return None
            frame_at, time_at = header.index("frame"), header.index("timestamp")
            rows = [(float(row[frame_at]), float(row[time_at])) for row, _ in zip(reader, range(100_000))
                    if len(row) > max(frame_at, time_at)]
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if len(rows) < 2:
        return None
    frames, stamps = np.array(rows).T
    steps = np.diff(stamps) / np.where(np.diff(frames) != 0, np.diff(frames), np.nan)
    steps = steps[np.isfinite(steps) & (steps > 0)]
    return float(1.0 / np.median(steps)) if len(steps) else None


def driving_aus(path: str | os.PathLike[str], smoothing: int = 1, fps: float | None = None,
                source_fps: float = 30.0) -> np.ndarray:
    """Per-frame target AUs from an OpenFace FeatureExtraction CSV.

    Rows where OpenFace lost the face (``success == 0``) are dropped and their frames filled by
    linear interpolation, so the result keeps one AU vector per frame of the driving video (from
    its first to its last tracked frame) and stays in sync with it. ``source_fps`` is the driving
    video's frame rate (it turns ``frame`` numbers into seconds); ``fps`` resamples to another
    rate (default: the same). ``smoothing`` is a centred moving-average window in output frames.
    """
    from ganimation.openface import read_openface_sequence

    if not math.isfinite(source_fps) or source_fps <= 0:
        raise ValueError(f"the driving frame rate must be positive, got {source_fps}")
    if fps is not None and (not math.isfinite(fps) or fps <= 0):
        raise ValueError(f"the output frame rate must be positive, got {fps}")
    stamps, aus = read_openface_sequence(path)
    times, aus = _sequence_times(stamps, aus, source_fps)
    sequence = resample_sequence(times, aus, fps or source_fps)
    return smooth_aus(sequence, smoothing)


def read_video_aus(path: str | os.PathLike[str], mesh: FaceMesh | None = None,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Seconds and AUs (read from landmarks, :mod:`ganimation.aureader`) of the main face in each
    frame of a video where a face was found, and the video's frame rate: the driving signal of
    :func:`driving_video_aus`.

    As MediaPipe's video mode does, the face is followed from frame to frame through the region
    its landmarks give (cheaper than searching every frame, and another face passing by does not
    take over); the whole frame is searched again, for its largest face, only when it is lost.
    Raises :class:`NoFaceError` when no frame has a face.
    """
    from tqdm import tqdm

    from ganimation.video import read_video

    frames, video_fps, count = read_video(path)
    mesh = mesh or FaceMesh()
    times, readings = [], []
    previous: MeshFace | None = None
    for index, frame in enumerate(tqdm(frames, total=count, desc="reading AUs", unit="frame", disable=not progress)):
        face = mesh.track(frame, roi_from_landmarks(previous.landmarks)) if previous is not None else None
        if face is None:
            found = mesh.find(frame)
            face = max(found, key=lambda candidate: candidate.box[2] - candidate.box[0]) if found else None
        previous = face
        if face is not None:
            times.append(index / video_fps)
            readings.append(read_aus(face))
    if not readings:
        raise NoFaceError(f"no face found in any frame of {Path(path).name}")
    return np.asarray(times), np.asarray(readings, dtype=np.float32), video_fps


def driving_video_aus(path: str | os.PathLike[str], fps: float | None = None, smoothing: int = 3,
                      mesh: FaceMesh | None = None, progress: bool = False) -> tuple[np.ndarray, float]:
    """Per-frame target AUs read from a driving video (no OpenFace needed), and their frame rate.

    Frames without a face are filled by linear interpolation; ``fps`` resamples (default: the
    video's rate) and ``smoothing`` is a centred moving-average window in output frames, which
    takes out the frame-to-frame flicker of the reading.
    """
    if fps is not None and (not math.isfinite(fps) or fps <= 0):
        raise ValueError(f"the output frame rate must be positive, got {fps}")
    times, aus, video_fps = read_video_aus(path, mesh, progress)
    rate = fps or video_fps
    return smooth_aus(resample_sequence(times, aus, rate), smoothing), rate


def relative_aus(driving: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Relative driving: the photo's own AUs plus the driver's change from its first frame, so a
    neutral driver leaves a smiling photo smiling and a smiling driver does not double a smile
    the photo already has (clipped to [0, 1])."""
    driving = np.asarray(driving, dtype=np.float32)
    return np.clip(np.asarray(own, dtype=np.float32)[None] + driving - driving[:1], 0.0, 1.0)


# ---------------------------------------------------------------------- source photo kind


@dataclass(frozen=True)
class PhotoKind:
    """What an input file was before it was read as 8-bit RGB: kept so the output can match it."""

    grayscale: bool = False
    rgba: np.ndarray | None = None  # uint8 (H, W, 4): the original pixels, when the file had transparency


def photo_kind(path: str | os.PathLike[str]) -> PhotoKind:
    """Whether an image file is grayscale and/or has an alpha channel (after EXIF rotation)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            mode = opened.mode
            has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in opened.info
            grayscale = mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16")
            if mode == "P":
                palette = np.asarray(opened.convert("RGB"))
                grayscale = bool((palette[..., 0] == palette[..., 1]).all() and (palette[..., 1] == palette[..., 2]).all())
            rgba = None
            if has_alpha:
                opened.load()
                rgba = np.asarray(ImageOps.exif_transpose(opened).convert("RGBA")).copy()
                if (rgba[..., 3] == 255).all():
                    rgba = None
    except (OSError, ValueError, SyntaxError):
        return PhotoKind()
    return PhotoKind(grayscale, rgba)


ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")


def match_kind(image: np.ndarray, kind: PhotoKind, suffix: str = ".png") -> Any:
    """A PIL image of ``image`` (uint8 RGB) in the input's kind: grey stays grey, alpha comes back.

    Pixels the edit did not change are the input's own (transparency included); changed pixels
    keep the input's alpha. Alpha is only restored for formats that store it (PNG, WebP, TIFF).
    """
    from PIL import Image

    rgb = np.asarray(image, dtype=np.uint8)
    if kind.rgba is not None and suffix.lower() in ALPHA_SUFFIXES and kind.rgba.shape[:2] == rgb.shape[:2]:
        composited = _composite_on_white(kind.rgba)
        result = kind.rgba.copy()
        changed = (rgb != composited).any(axis=2)
        result[changed, :3] = rgb[changed]
        picture = Image.fromarray(result, "RGBA")
        return picture.convert("LA") if kind.grayscale else picture
    picture = Image.fromarray(rgb, "RGB")
    return picture.convert("L") if kind.grayscale else picture


def grey_frames(frames: Iterable[np.ndarray], kind: PhotoKind) -> Iterator[np.ndarray]:
    """Frames of a grayscale input stay grey (the model may tint a face); others pass through."""
    for frame in frames:
        if kind.grayscale:
            from PIL import Image

            grey = np.asarray(Image.fromarray(frame, "RGB").convert("L"))
            yield np.repeat(grey[..., None], 3, axis=2)
        else:
            yield frame


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    from PIL import Image

    background = Image.new("RGBA", (rgba.shape[1], rgba.shape[0]), (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(background, Image.fromarray(rgba, "RGBA")).convert("RGB"))


# ---------------------------------------------------------------------- photos


#: How an edited crop goes back into the photo (see :func:`ganimation.faces.paste_back`).
BLENDS = ("residual", "replace")
#: ``residual`` adds only the model's change, upsampled, to the photo's own pixels, so a model
#: whose crop is smaller than the face in the photo does not blur the face; ``replace`` pastes
#: the model's whole (upsampled) output crop.
DEFAULT_BLEND = "residual"


def check_blend(blend: str) -> str:
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    return blend


@dataclass
class FaceEstimate:
    face: Face
    aus: np.ndarray  # (17,) in [0, 1]
    index: int = 0  # position among the faces found, left to right


#: Where a face's own AUs are read: ``landmarks`` (the landmark model's blendshapes, see
#: :mod:`ganimation.aureader`) or ``critic`` (the model's D_y head, which knows only the faces the
#: model was trained on).
AU_READERS = ("landmarks", "critic")


def face_aus(model: GANimation, aligned: AlignedFace, reader: str = "landmarks") -> np.ndarray:
    """The AUs of an aligned face: read from its landmarks when the detector gave them (else, or
    with ``reader="critic"``, from D_y), or neutral for a model file without a critic."""
    if reader not in AU_READERS:
        raise ValueError(f"AU reader must be one of {', '.join(AU_READERS)}, got {reader!r}")
    if reader == "landmarks" and aligned.face.mesh is not None:
        return read_aus(aligned.face.mesh)
    if model.discriminator is not None:
        return model.estimate_aus(aligned.crop)
    return np.zeros(NUM_AUS, np.float32)


#: How much wider than the model's crop the shape warp may reach (see :func:`shape_warp`).
WARP_MARGIN = 0.3


def shape_warp(model: GANimation, photo_shape: tuple[int, ...], aligned: AlignedFace, target: np.ndarray,
               own: np.ndarray | None = None) -> FaceWarp | None:
    """The warp that moves a face's landmarks along the model's shape model (:mod:`ganimation.shapewarp`)
    from its own AUs (``own``, else read from its landmarks) to ``target``, shaded by its
    appearance model when it has one (:mod:`ganimation.appearance`); None for a model without a
    shape model, a face without landmarks, or when nothing moves."""
    mesh = aligned.face.mesh
    if model.shape is None or mesh is None:
        return None
    own = read_aus(mesh) if own is None else np.asarray(own, dtype=np.float32)
    delta = np.asarray(target, dtype=np.float32) - own
    moved = moved_landmarks(mesh.landmarks, aligned.matrix, aligned.size, model.shape, delta)
    warp = plan_warp(photo_shape, mesh.landmarks, moved)
    if warp is None:
        return None
    if model.appearance is not None:  # the shading the movement shows, over the moved face
        points = crop_landmarks(mesh.landmarks, aligned.matrix, aligned.size)
        warp = dataclasses.replace(
            warp, gain=ratio_on_photo(model.appearance, moved, warp.region, delta,
                                      opening_after_warp(mesh.landmarks, warp.region, warp.dx, warp.dy)),
            fill=interior_on_photo(model.appearance, aligned.crop, points, moved, warp.region, target, warp.revealed))
    # held within the paste mask of a crop with a margin (WARP_MARGIN): a moving jaw needs room
    # below the chin to fade out, which the model's tight crop does not leave
    x0, y0, x1, y1 = warp.region
    to_photo = cv2.invertAffineTransform(alignment_matrix(aligned.face, aligned.size, aligned.margin + WARP_MARGIN))
    to_region = compose_affine(np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]]), to_photo)
    weight = cv2.warpAffine(blend_mask(aligned.size), to_region, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    warp = warp.faded(weight)
    return warp if warp.moving.any() else None


def warped_face(photo: np.ndarray, aligned: AlignedFace, warp: FaceWarp | None,
                patch: np.ndarray | None = None) -> AlignedFace:
    """``aligned`` with its crop cut from the warped photo (itself when there is no warp);
    ``patch`` is the warp's :meth:`~ganimation.shapewarp.FaceWarp.resample` when already made."""
    if warp is None:
        return aligned
    warped = warp.write(warp.resample(photo) if patch is None else patch, photo.copy())
    return dataclasses.replace(aligned, crop=align_face(warped, aligned.face, aligned.size, aligned.margin).crop)


@dataclass
class FaceEdit:
    """One face's edit of a photo, ready to paste (:func:`paste_edits`)."""

    aligned: AlignedFace  #: the face, its crop cut from the warped photo
    warp: FaceWarp | None  #: the shape model's warp, if it moved the face
    patch: np.ndarray | None  #: the warp's resampled pixels (None without a warp)
    output: AnimationResult | None  #: the generator's edit of the crop (None: it did not paint)


def edit_faces(model: GANimation, photo: np.ndarray, faces: Sequence[AlignedFace], targets: Sequence[np.ndarray],
               owns: Sequence[np.ndarray | None] | None = None, batch_size: int = 16) -> list[FaceEdit]:
    """Each face moved towards its target: warped along the model's shape model (from ``owns``,
    its own AUs, else read from its landmarks), then painted by the generator in batches where
    the model paints photos (:attr:`GANimation.paints_photos`)."""
    owns = [None] * len(faces) if owns is None else owns
    warps = [shape_warp(model, photo.shape, face, target, own) for face, target, own in zip(faces, targets, owns)]
    patches = [None if warp is None else warp.resample(photo) for warp in warps]
    moved = [warped_face(photo, face, warp, patch) for face, warp, patch in zip(faces, warps, patches)]
    outputs: list[AnimationResult | None] = (
        model.animate_pairs([face.crop for face in moved], list(targets), batch_size) if model.paints_photos
        else [None] * len(moved))
    return [FaceEdit(*parts) for parts in zip(moved, warps, patches, outputs)]


def paste_edits(photo: np.ndarray, edits: Sequence[FaceEdit], blend: str) -> np.ndarray:
    """``photo`` with each face's warp applied and the generator's edit pasted over it; every warp
    samples the original photo, so overlapping faces do not see each other's edits."""
    result = photo
    for edit in edits:
        if edit.warp is not None and edit.patch is not None:
            result = edit.warp.write(edit.patch, photo.copy() if result is photo else result)
        if edit.output is not None:
            result = paste_back(result, edit.aligned, edit.output.image, blend=blend)
    return result if result is not photo else photo.copy()


class PhotoAnimator:
    """Edits the faces of one photo; detection and alignment are done once per photo.

    ``which`` picks the faces (``"largest"``, ``"all"`` or an index, left to right), ``blend``
    how edits go back into the photo (:data:`DEFAULT_BLEND`). Every method accepts the
    ``aligned`` faces of an earlier :meth:`align` call so that a photo is searched only once.
    """

    def __init__(self, model: GANimation, which: int | str = "largest", detector: FaceDetector | None = None,
                 min_face: float = MIN_FACE_SIZE, blend: str = DEFAULT_BLEND, batch_size: int = 16,
                 reader: str = "landmarks") -> None:
        if reader not in AU_READERS:
            raise ValueError(f"AU reader must be one of {', '.join(AU_READERS)}, got {reader!r}")
        self.model = model
        self.reader = reader
        self.which = which
        self.detector = detector or default_detector()
        self.min_face = min_face
        self.blend = check_blend(blend)
        self.batch_size = max(1, int(batch_size))

    def select(self, photo: np.ndarray, source: str | Path | None = None) -> list[tuple[int, Face]]:
        """The chosen faces with their index among all faces found (left to right)."""
        faces = self.detector.detect(photo)
        chosen = select_faces(faces, self.which, min_face=self.min_face, source=source)
        return [(next(i for i, other in enumerate(faces) if other is face), face) for face in chosen]

    def align(self, photo: np.ndarray, source: str | Path | None = None) -> list[AlignedFace]:
        """Detect, choose and align the faces (raises a :class:`ganimation.faces.FaceError`)."""
        return [align_face(photo, face, self.model.image_size) for _, face in self.select(photo, source)]

    def estimate(self, photo: np.ndarray, source: str | Path | None = None) -> list[FaceEstimate]:
        """The AU intensities of every selected face (see :func:`face_aus`)."""
        return [FaceEstimate(face, self.source_aus(align_face(photo, face, self.model.image_size)), index)
                for index, face in self.select(photo, source)]

    def source_aus(self, aligned: AlignedFace) -> np.ndarray:
        """Where an interpolation starts: the face as it is (see :func:`face_aus`)."""
        return face_aus(self.model, aligned, self.reader)

    def toward_expression(self, aligned: Sequence[AlignedFace], expression: np.ndarray, intensity: float) -> np.ndarray:
        """Per-face targets ``(faces, 17)`` a fraction ``intensity`` of the way from each face's own
        AUs to ``expression``: 0 leaves every face as it is, 1 is the expression itself."""
        if not math.isfinite(intensity) or not 0.0 <= intensity <= 1.0:
            raise AUError(f"expression intensity must be within [0, 1], got {intensity}")
        own = np.stack([self.source_aus(face) for face in aligned]) if aligned else np.zeros((0, NUM_AUS))
        return (own + intensity * (np.asarray(expression, dtype=np.float32)[None] - own)).astype(np.float32)

    def edit(self, photo: np.ndarray, target_aus: np.ndarray, source: str | Path | None = None,
             aligned: list[AlignedFace] | None = None) -> PhotoEdit:
        """The photo with the selected faces moved to ``target_aus`` (one vector for all faces,
        or one row per face as :meth:`toward_expression` gives).

        All crops are cut from the original before any edit is pasted, so overlapping faces do
        not see each other's edits; pixels outside the faces' masks are the photo's, bit for bit.
        """
        aligned = aligned if aligned is not None else self.align(photo, source)
        targets = _per_face(target_aus, len(aligned))
        edits = edit_faces(self.model, photo, aligned, targets, [self.source_aus(face) for face in aligned],
                           self.batch_size)
        edited = [EditedFace(edit.aligned.face, edit.aligned, edit.aligned.crop, None) if edit.output is None else
                  EditedFace(edit.aligned.face, edit.aligned, edit.output.image, edit.output.attention)
                  for edit in edits]
        return PhotoEdit(paste_edits(photo, edits, self.blend), edited)

    def frames(self, photo: np.ndarray, aus_sequence: np.ndarray | Sequence[np.ndarray],
               source: str | Path | None = None, aligned: list[AlignedFace] | None = None,
               batch_size: int | None = None) -> Iterator[np.ndarray]:
        """Whole-photo frames, one per AU vector of ``aus_sequence`` (the same for every face)."""
        aligned = aligned if aligned is not None else self.align(photo, source)
        sequence = np.asarray(aus_sequence, dtype=np.float32).reshape(-1, NUM_AUS)
        return self.render(photo, aligned, [sequence] * len(aligned), batch_size)

    def render(self, photo: np.ndarray, aligned: list[AlignedFace], sequences: list[np.ndarray],
                batch_size: int | None = None) -> Iterator[np.ndarray]:
        """Frames where face ``f`` follows ``sequences[f]`` (all of one length), edited in batches."""
        size = batch_size or self.batch_size
        length = len(sequences[0]) if sequences else 0
        # the warp starts where the sequences are measured from: the faces as the reader reads them
        owns = [self.source_aus(face) if self.model.shape is not None else None for face in aligned]
        for start in range(0, length, size):
            stop = min(length, start + size)
            per_face = [edit_faces(self.model, photo, [face] * (stop - start), sequence[start:stop],
                                   [own] * (stop - start), size)
                        for face, sequence, own in zip(aligned, sequences, owns)]
            for frame_index in range(stop - start):
                yield paste_edits(photo, [edits[frame_index] for edits in per_face], self.blend)

    def interpolation(self, photo: np.ndarray, target_aus: np.ndarray, frames: int,
                      source_aus: np.ndarray | None = None, source: str | Path | None = None,
                      aligned: list[AlignedFace] | None = None) -> Iterator[np.ndarray]:
        """From each face as it is (its AUs as read, or ``source_aus``) to ``target_aus`` (one
        vector, or one row per face)."""
        aligned = aligned if aligned is not None else self.align(photo, source)
        starts = [source_aus if source_aus is not None else self.source_aus(face) for face in aligned]
        targets = _per_face(target_aus, len(aligned))
        return self.render(photo, aligned, [interpolate_aus(start, end, frames) for start, end in zip(starts, targets)])


def _per_face(target_aus: np.ndarray, faces: int) -> np.ndarray:
    """``(faces, 17)`` targets from one AU vector or from one row per face."""
    targets = np.asarray(target_aus, dtype=np.float32)
    if targets.ndim == 1:
        return np.repeat(targets[None], faces, axis=0)
    if targets.shape != (faces, NUM_AUS):
        raise AUError(f"expected one target AU vector or {faces} rows of {NUM_AUS}, got shape {targets.shape}")
    return targets


def edit_video_frames(model: GANimation, frames: Iterable[np.ndarray], aus_for_frame: Any,
                      detector: FaceDetector | None = None, min_face: float = MIN_FACE_SIZE,
                      blend: str = DEFAULT_BLEND, fps: float = 25.0, require_face: bool = False,
                      source: str | Path | None = None, own_aus: bool = False) -> Iterator[np.ndarray]:
    """Edit the main face of every video frame; ``aus_for_frame(i)`` gives frame ``i``'s target
    (with ``own_aus``, ``aus_for_frame(i, own)`` with the face's own AUs in that frame, read from
    its landmarks and smoothed over time, so that a target can be relative to the face).

    The face is tracked and its alignment smoothed over time (at the video's ``fps``) so the crop
    does not jitter; frames where no face is tracked, or a too small one, pass through unchanged.
    With ``require_face``, a video in which no frame could be edited ends (after its last frame)
    with :class:`NoFaceError` or :class:`FaceTooSmallError`, so that a writer consuming these
    frames atomically leaves no output behind.
    """
    check_blend(blend)
    tracker = FaceTracker(detector=detector or default_detector(), fps=fps)
    own_filter = OneEuroFilter(min_cutoff=1.0, beta=0.5)  # the per-frame reading flickers a little
    edited = 0
    smallest_seen: float | None = None
    for index, frame in enumerate(frames):
        face = tracker.track(frame)
        size = None if face is None else min(face.box[2] - face.box[0], face.box[3] - face.box[1])
        if size is not None and size < min_face:
            smallest_seen = size if smallest_seen is None else max(smallest_seen, size)
        if size is None or size < min_face:
            yield frame
            continue
        aligned = align_face(frame, face, model.image_size)
        own = None
        if own_aus or (model.shape is not None and face.mesh is not None):
            own = own_filter(face_aus(model, aligned), 1.0 / fps).astype(np.float32)
        target = aus_for_frame(index, own) if own_aus else aus_for_frame(index)
        edits = edit_faces(model, frame, [aligned], [target], [own])
        edited += 1
        yield paste_edits(frame, edits, blend)
    if require_face and edited == 0:
        where = f" of {Path(source).name}" if source is not None else ""
        if smallest_seen is not None:
            raise FaceTooSmallError(f"face too small in every frame{where}: at most {smallest_seen:.0f} px wide, "
                                    f"at least {min_face:.0f} px is needed")
        raise NoFaceError(f"no face found in any frame{where}")
