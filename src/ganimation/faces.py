"""Whole photos in, whole photos out: find faces, align them to the model's crop, paste edits back.

GANimation edits a small square face crop (128 x 128 by default) with the eyes level and the face
at a fixed scale. Users have whole photos, so this module

1. detects faces (:class:`LandmarkFaceDetector`, MediaPipe's Face Landmarker, behind the small
   :class:`FaceDetector` protocol),
2. aligns each one with a similarity transform of its eyes and mouth to the crop convention
   (:func:`align_face`),
3. lets a callback edit the crop (:func:`edit_photo`), and
4. warps the edit back and blends it in with a feathered mask (:func:`paste_back`) so that
   every pixel outside the mask is bit-for-bit the original and no seam shows.

The crop convention is fixed by :data:`EYE_DISTANCE_FRACTION` and :data:`EYE_HEIGHT_FRACTION`;
:func:`crop_faces_for_training` crops training data the same way, so that what the model learns
on matches what it is given here. Video uses :class:`FaceTracker` to keep one face and smooth its
alignment over time. See ``docs/faces.md``.

Coordinates are in pixels with pixel centres at integer positions (OpenCV's convention); boxes are
``(x0, y0, x1, y1)`` with ``x1 - x0`` the width.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import cv2
import numpy as np

from ganimation.facemesh import (
    LEFT_EYE_CORNERS, MOUTH_CORNERS, RIGHT_EYE_CORNERS, FaceMesh, MeshFace, compose_affine, resize_matrix,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Crop convention (shared by inference and training-data preparation)
# --------------------------------------------------------------------------------------------

#: Distance between the two eye centres as a fraction of the crop side. With 0.30 the face from
#: cheek to cheek spans about two thirds of the crop (a face is ~2.2 eye distances wide).
EYE_DISTANCE_FRACTION = 0.30
#: Height of the eye centres below the crop's top edge as a fraction of the crop side. With the
#: eyes at 0.38 the brows sit near 0.30 and the chin near 0.87 (chin ~1.65 eye distances below the
#: eyes), so the whole face from brows to chin fits with a small margin and room for a jaw drop.
EYE_HEIGHT_FRACTION = 0.38
#: Height of the mouth centre (midpoint of the mouth corners) below the eye line, in eye
#: distances: 1.07 is the mean over 500 CelebA and UTKFace photos (standard deviation 0.13) read
#: with the landmark model and aligned by the eyes alone, so adding the mouth to the fit leaves an
#: average face where the eyes-only convention put it.
MOUTH_BELOW_EYES = 1.07
#: Default crop side in pixels (GANimation's training resolution).
DEFAULT_CROP_SIZE = 128
#: Extra border around the conventional crop, as a fraction of the crop side on each side.
#: 0 is the training convention; a positive margin zooms out about the crop centre.
DEFAULT_MARGIN = 0.0
#: Width of the soft edge of the paste-back mask, as a fraction of the crop side.
DEFAULT_FEATHER = 0.05
#: Faces narrower than this (detector box width, in photo pixels) are refused: the model would
#: only see an upscaled blur and the result would look worse than the input.
MIN_FACE_SIZE = 48

Which = int | Literal["largest", "all"]
Point = tuple[float, float]
Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class FaceError(ValueError):
    """Base class of the face-finding errors a command line turns into one-line messages."""


class NoFaceError(FaceError):
    """The detector found no face in the photo."""


class FaceTooSmallError(FaceError):
    """Faces were found but are too small for the model to edit well."""


class FaceIndexError(FaceError, IndexError):
    """A face index beyond the number of faces found."""


def _in_source(source: str | Path | None) -> str:
    return f" in {Path(source).name}" if source is not None else " in the photo"


# --------------------------------------------------------------------------------------------
# Faces and detectors
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Face:
    """A detected face in photo pixel coordinates.

    ``left_eye`` is the eye on the image's left (the person's right eye); eyes and mouth are the
    midpoints of their corners.
    """

    box: Box
    left_eye: Point
    right_eye: Point
    score: float = 1.0
    #: Mouth centre (midpoint of the mouth corners); when known, alignment fits eyes and mouth.
    mouth: Point | None = None
    #: The landmark model's reading of this face (478 landmarks, blendshapes), when it found it.
    mesh: MeshFace | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """Box width: the number the minimum-size check uses."""
        return self.width

    @property
    def center(self) -> Point:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)

    def scaled(self, factor: float) -> Face:
        """The same face in an image resized by ``factor`` (pixel-centre correct)."""

        def point(p: Point) -> Point:
            return ((p[0] + 0.5) * factor - 0.5, (p[1] + 0.5) * factor - 0.5)

        x0, y0, x1, y1 = self.box
        return dataclasses.replace(
            self,
            box=(x0 * factor, y0 * factor, x1 * factor, y1 * factor),
            left_eye=point(self.left_eye),
            right_eye=point(self.right_eye),
            mouth=None if self.mouth is None else point(self.mouth),
            mesh=None if self.mesh is None else self.mesh.scaled(factor),
        )


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in an RGB ``uint8`` image.

    Implementations return faces sorted left to right (by box ``x0``), so that a face index given
    by a user means the same face whichever detector is used.
    """

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image of shape (H, W, 3), got {array.dtype} {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError("empty image")
    return array


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


class LandmarkFaceDetector:
    """Faces found by MediaPipe's Face Landmarker (:mod:`ganimation.facemesh`): the default.

    Each face carries its 478 landmarks and 52 blendshapes (``face.mesh``); the eyes are the
    midpoints of the eye corners and the mouth the midpoint of the mouth corners, so alignment
    fits eyes and mouth. It finds three-quarter views, partly covered faces and, through its tiled
    search, faces down to ``min_face`` pixels in large photos; only the landmark model decides
    what is a face (its presence score, and landmarks that stay put). One instance per thread.
    """

    def __init__(self, *, min_face: float = MIN_FACE_SIZE, refine: bool = True) -> None:
        self.mesh = FaceMesh(min_face=min_face, refine=refine)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return [face_from_mesh(mesh) for mesh in self.mesh.find(_check_rgb(rgb))]


def face_from_mesh(mesh: MeshFace) -> Face:
    """A :class:`Face` (box, eyes, mouth) from the landmark model's reading of it."""
    return Face(
        box=mesh.box,
        left_eye=mesh.point(LEFT_EYE_CORNERS),
        right_eye=mesh.point(RIGHT_EYE_CORNERS),
        score=mesh.presence,
        mouth=mesh.point(MOUTH_CORNERS),
        mesh=mesh,
    )


def default_detector() -> FaceDetector:
    """The detector used when none is given: :class:`LandmarkFaceDetector` (a fresh one, as the
    networks' interpreters are not shared across threads).

    Raises :class:`~ganimation.facemesh.FaceModelMissingError` with the one-line install command
    when the landmark model is not installed.
    """
    return LandmarkFaceDetector()


# --------------------------------------------------------------------------------------------
# Choosing faces
# --------------------------------------------------------------------------------------------


def select_faces(
    faces: Sequence[Face], which: Which | str = "largest", *, min_face: float = MIN_FACE_SIZE, source: str | Path | None = None
) -> list[Face]:
    """The faces to edit: ``"largest"``, ``"all"`` (those big enough) or one by index (left to right).

    Raises :class:`NoFaceError`, :class:`FaceTooSmallError` or :class:`FaceIndexError` with a
    message naming ``source`` (the photo's file name) when given.
    """
    where = _in_source(source)
    if isinstance(which, str) and which.strip().lstrip("-").isdigit():
        which = int(which)
    if not faces:
        raise NoFaceError(f"no face found{where}")
    if which == "all":
        chosen = [face for face in faces if face.size >= min_face]
        if not chosen:
            _raise_too_small(max(faces, key=lambda face: face.size), min_face, where, len(faces))
        if len(chosen) < len(faces):
            logger.warning("skipping %d face(s) smaller than %d px%s", len(faces) - len(chosen), min_face, where)
        return chosen
    if which == "largest":
        face = max(faces, key=lambda face: face.size)
    elif isinstance(which, int) and not isinstance(which, bool):
        if not 0 <= which < len(faces):
            count = f"{len(faces)} face{'s' if len(faces) != 1 else ''} found{where}"
            raise FaceIndexError(f"face index {which} is out of range: {count} (valid: 0 to {len(faces) - 1}, left to right)")
        face = faces[which]
    else:
        raise ValueError(f"which face: expected an index, 'largest' or 'all', got {which!r}")
    if face.size < min_face:
        _raise_too_small(face, min_face, where, len(faces))
    return [face]


def _raise_too_small(face: Face, min_face: float, where: str, count: int) -> None:
    largest = " (the largest of them)" if count > 1 else ""
    raise FaceTooSmallError(
        f"face too small{where}: {face.size:.0f} px wide{largest}, at least {min_face:.0f} px is needed; "
        "use a larger photo or one taken closer"
    )


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------


def crop_eye_positions(size: int = DEFAULT_CROP_SIZE, margin: float = DEFAULT_MARGIN) -> tuple[Point, Point]:
    """Where the convention puts the (image-left, image-right) eye centres in a crop."""
    zoom = 1.0 / (1.0 + 2.0 * margin)
    half_distance = 0.5 * EYE_DISTANCE_FRACTION * zoom * size
    center_x = (size - 1) / 2.0
    eye_y = (size - 1) / 2.0 + (EYE_HEIGHT_FRACTION - 0.5) * zoom * size
    return (center_x - half_distance, eye_y), (center_x + half_distance, eye_y)


def crop_mouth_position(size: int = DEFAULT_CROP_SIZE, margin: float = DEFAULT_MARGIN) -> Point:
    """Where the convention puts the mouth centre (between the mouth corners) in a crop."""
    (lx, ly), (rx, _) = crop_eye_positions(size, margin)
    return ((lx + rx) / 2.0, ly + MOUTH_BELOW_EYES * (rx - lx))


def alignment_matrix(face: Face, size: int = DEFAULT_CROP_SIZE, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """2 x 3 similarity transform from photo to crop putting the eyes (and mouth, when the face has
    one) where the convention says.

    With eyes alone the transform is exact. With the mouth too it is the least-squares similarity
    over the three points (Umeyama's closed form): a turned head shortens the eye distance but not
    the eye-to-mouth distance, so the crop keeps the face's scale instead of zooming in on it.
    """
    if face.mouth is not None:
        return _fit_similarity(
            np.array([face.left_eye, face.right_eye, face.mouth], dtype=np.float64),
            np.array([*crop_eye_positions(size, margin), crop_mouth_position(size, margin)], dtype=np.float64),
        )
    (lx, ly), (rx, ry) = face.left_eye, face.right_eye
    dx, dy = rx - lx, ry - ly
    distance = math.hypot(dx, dy)
    if not math.isfinite(distance) or distance < 1e-3:
        raise ValueError(f"cannot align a face whose eyes coincide: {face.left_eye}, {face.right_eye}")
    (tlx, tly), (trx, _) = crop_eye_positions(size, margin)
    scale = (trx - tlx) / distance
    cos, sin = scale * dx / distance, scale * dy / distance
    linear = np.array([[cos, sin], [-sin, cos]])
    source_mid = np.array([(lx + rx) / 2.0, (ly + ry) / 2.0])
    target_mid = np.array([(tlx + trx) / 2.0, tly])
    return np.hstack([linear, (target_mid - linear @ source_mid)[:, None]])


def _fit_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2 x 3 least-squares similarity (rotation, uniform scale, translation) taking ``source``
    points ``(N, 2)`` onto ``target``."""
    if not np.isfinite(source).all():
        raise ValueError(f"cannot align a face with non-finite landmarks: {source.tolist()}")
    source_mean, target_mean = source.mean(0), target.mean(0)
    s, t = source - source_mean, target - target_mean
    spread = float((s**2).sum())
    if spread < 1e-6:
        raise ValueError(f"cannot align a face whose landmarks coincide: {source.tolist()}")
    a = float((s * t).sum()) / spread
    b = float((s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]).sum()) / spread
    linear = np.array([[a, -b], [b, a]])
    return np.hstack([linear, (target_mean - linear @ source_mean)[:, None]])


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]])


def _footprint(matrix: np.ndarray, width: float, height: float, shape: tuple[int, ...], pad: int) -> tuple[int, int, int, int] | None:
    """Integer bounding box (clipped to ``shape``) of a ``width x height`` rectangle mapped by ``matrix``."""
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    x0 = max(0, math.floor(mapped[:, 0].min()) - pad)
    y0 = max(0, math.floor(mapped[:, 1].min()) - pad)
    x1 = min(shape[1], math.ceil(mapped[:, 0].max()) + pad + 1)
    y1 = min(shape[0], math.ceil(mapped[:, 1].max()) + pad + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


@dataclasses.dataclass(frozen=True)
class AlignedFace:
    """A face crop in the model's convention and the transforms between it and the photo."""

    crop: np.ndarray  #: ``uint8 (size, size, 3)``
    matrix: np.ndarray  #: 2 x 3, photo pixels -> crop pixels
    inverse: np.ndarray  #: 2 x 3, crop pixels -> photo pixels
    face: Face
    source_shape: tuple[int, int]  #: ``(height, width)`` of the photo
    margin: float = DEFAULT_MARGIN

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel (below 1 when the face is larger in the photo than in the crop)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def align_face(rgb: np.ndarray, face: Face, size: int = DEFAULT_CROP_SIZE, margin: float = DEFAULT_MARGIN) -> AlignedFace:
    """Cut ``face`` out of ``rgb`` as a ``size x size`` crop: eyes level, at the convention's places.

    Only the region the crop covers is resampled, so large photos cost no more than small ones;
    when the face is much larger than the crop the region is first shrunk with area averaging
    (a plain warp would alias), then warped with bicubic interpolation. Parts of the crop beyond
    the photo's edge repeat the edge pixels.
    """
    image = _check_rgb(rgb)
    if size < 8:
        raise ValueError(f"crop size must be at least 8 px, got {size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    matrix = alignment_matrix(face, size, margin)
    inverse = cv2.invertAffineTransform(matrix)
    region = _footprint(inverse, size, size, image.shape, pad=3)
    if region is None:
        raise ValueError("the face lies outside the photo")
    x0, y0, x1, y1 = region
    patch = image[y0:y1, x0:x1]
    to_crop = compose_affine(matrix, _translation(x0, y0))
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < 0.8:
        shrunk = (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale)))
        fx, fy = shrunk[0] / patch.shape[1], shrunk[1] / patch.shape[0]
        patch = cv2.resize(patch, shrunk, interpolation=cv2.INTER_AREA)
        to_crop = compose_affine(to_crop, resize_matrix(fx, fy))
    crop = cv2.warpAffine(
        np.ascontiguousarray(patch), to_crop, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    return AlignedFace(crop, matrix, inverse, face, (image.shape[0], image.shape[1]), margin)


def crop_faces_for_training(
    rgb: np.ndarray,
    *,
    size: int = DEFAULT_CROP_SIZE,
    detector: FaceDetector | None = None,
    min_face: float = MIN_FACE_SIZE,
    margin: float = DEFAULT_MARGIN,
) -> list[np.ndarray]:
    """Every face big enough in ``rgb``, cropped exactly as inference crops it (left to right)."""
    faces = (detector if detector is not None else default_detector()).detect(rgb)
    return [align_face(rgb, face, size, margin).crop for face in faces if face.size >= min_face]


# --------------------------------------------------------------------------------------------
# Paste back
# --------------------------------------------------------------------------------------------


def blend_mask(size: int, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """Soft ``float32 (size, size)`` mask in crop space: 1 over the face, 0 near the crop's edge.

    A rounded square (superellipse, exponent 4) keeps the jaw corners fully inside, unlike an
    ellipse; its edge is blurred over ``feather * size`` pixels so no seam shows. The mask is
    exactly 0 within 1.5 px of the crop border, so nothing outside the crop is ever touched and
    the crop's replicated border never shows.
    """
    if not 0 <= feather < 0.2:
        raise ValueError(f"feather must be in [0, 0.2), got {feather}")
    half_width = max(1, round(feather * size))
    radius = size / 2.0 - 2.0 - half_width
    if radius <= 1:
        raise ValueError(f"crop of {size} px is too small for a feather of {feather}")
    coords = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) / radius
    inside = (np.abs(coords)[None, :] ** 4 + np.abs(coords)[:, None] ** 4) <= 1.0
    kernel = 2 * half_width + 1
    mask = cv2.GaussianBlur(inside.astype(np.float32), (kernel, kernel), half_width / 2.0, borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1e-4] = 0.0
    return np.clip(mask, 0.0, 1.0)


def _as_uint8_rgb(image: Any, what: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[2] != 3:
        array = np.transpose(array, (1, 2, 0))
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] != array.shape[1]:
        raise ValueError(f"{what}: expected a square RGB image (S, S, 3), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{what}: contains NaN or infinity")
        if array.min(initial=0.0) < -1e-3:
            raise ValueError(f"{what}: negative pixel values (a [-1, 1] model output?); give uint8 or [0, 1] floats")
        top = 1.0 if array.max(initial=0.0) <= 1.0 + 1e-6 else 255.0
        return np.clip(np.rint(array * (255.0 / top)), 0, 255).astype(np.uint8)
    raise ValueError(f"{what}: expected uint8 (or float in [0, 1]) pixels, got {array.dtype}")


def _crop_to_photo(aligned: AlignedFace, crop_size: int) -> np.ndarray:
    """Matrix from a (possibly resized) edited crop's pixels to photo pixels."""
    if crop_size == aligned.size:
        return aligned.inverse
    factor = crop_size / aligned.size
    return compose_affine(aligned.inverse, resize_matrix(factor, factor))


def _paste_region(shape: tuple[int, ...], to_photo: np.ndarray, crop_size: int) -> tuple[int, int, int, int] | None:
    return _footprint(to_photo, crop_size, crop_size, shape, pad=2)


def paste_back(
    original_rgb: np.ndarray,
    aligned: AlignedFace,
    edited_crop: np.ndarray,
    feather: float = DEFAULT_FEATHER,
    *,
    blend: Literal["replace", "residual"] = "replace",
) -> np.ndarray:
    """The photo with ``edited_crop`` warped back into place and blended in with a soft mask.

    Pixels where the warped mask is 0 are the original's, bit for bit; work is done only inside
    the mask's bounding box, so large photos stay fast. ``blend="replace"`` puts the edited
    pixels in; ``blend="residual"`` adds only the change (edited crop minus the unedited crop),
    which keeps the photo's own detail where the face is much larger than the crop and the model
    changed nothing (an identity edit then returns the photo unchanged).
    The edited crop may have any square size; it is taken to cover the same region.
    """
    photo = _check_rgb(original_rgb)
    if photo.shape[:2] != tuple(aligned.source_shape):
        raise ValueError(f"photo of shape {photo.shape[:2]} is not the one aligned ({aligned.source_shape})")
    if blend not in ("replace", "residual"):
        raise ValueError(f"blend must be 'replace' or 'residual', got {blend!r}")
    edited = _as_uint8_rgb(edited_crop, "edited crop")
    crop_size = edited.shape[0]
    to_photo = _crop_to_photo(aligned, crop_size)
    region = _paste_region(photo.shape, to_photo, crop_size)
    result = photo.copy()
    if region is None:
        return result
    x0, y0, x1, y1 = region
    to_region = compose_affine(_translation(-x0, -y0), to_photo)
    dsize = (x1 - x0, y1 - y0)
    mask = cv2.warpAffine(blend_mask(crop_size, feather), to_region, dsize, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    warped = _warp_crop(edited, to_region, dsize)
    base = photo[y0:y1, x0:x1].astype(np.float32)
    if blend == "residual":
        unedited = aligned.crop if crop_size == aligned.size else cv2.resize(aligned.crop, (crop_size, crop_size), interpolation=cv2.INTER_AREA)
        change = warped - _warp_crop(unedited, to_region, dsize)
    else:
        change = warped - base
    blended = np.clip(np.rint(base + mask[..., None] * change), 0, 255).astype(np.uint8)
    touched = mask > 0
    result[y0:y1, x0:x1][touched] = blended[touched]
    return result


def _warp_crop(crop: np.ndarray, matrix: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(crop, matrix, dsize, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)


def _as_attention(attention: Any) -> np.ndarray:
    array = np.squeeze(np.asarray(attention, dtype=np.float32))
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"attention: expected a square (S, S) map, got shape {np.shape(attention)}")
    if not np.isfinite(array).all():
        raise ValueError("attention: contains NaN or infinity")
    return np.clip(array, 0.0, 1.0)


def paste_attention(
    base: np.ndarray,
    aligned: AlignedFace,
    attention: np.ndarray,
    feather: float = DEFAULT_FEATHER,
) -> np.ndarray:
    """Warp a crop's attention map (``(S, S)`` floats in [0, 1]) into a full-size ``float32`` map.

    ``base`` is the full-size map to draw on (e.g. ``np.ones(photo.shape[:2])``: GANimation's
    attention is 1 where the input is kept), blended with the same soft mask as the image.
    """
    canvas = np.array(base, dtype=np.float32, copy=True)
    if canvas.shape[:2] != tuple(aligned.source_shape) or canvas.ndim != 2:
        raise ValueError(f"attention canvas must be (H, W) = {aligned.source_shape}, got {canvas.shape}")
    values = _as_attention(attention)
    to_photo = _crop_to_photo(aligned, values.shape[0])
    region = _paste_region(canvas.shape, to_photo, values.shape[0])
    if region is None:
        return canvas
    x0, y0, x1, y1 = region
    to_region = compose_affine(_translation(-x0, -y0), to_photo)
    dsize = (x1 - x0, y1 - y0)
    mask = cv2.warpAffine(blend_mask(values.shape[0], feather), to_region, dsize, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    warped = cv2.warpAffine(values, to_region, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    window = canvas[y0:y1, x0:x1]
    window += mask * (warped - window)
    return canvas


# --------------------------------------------------------------------------------------------
# Whole-photo editing
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EditedFace:
    """One face of a :class:`PhotoEdit`: where it was, its crop, the model's output, the transform."""

    face: Face
    aligned: AlignedFace
    edited: np.ndarray  #: ``uint8 (S, S, 3)``, as returned by the edit function
    attention: np.ndarray | None = None  #: ``float32 (S, S)`` in [0, 1] when the edit gave one

    @property
    def box(self) -> Box:
        return self.face.box

    @property
    def crop(self) -> np.ndarray:
        return self.aligned.crop

    @property
    def matrix(self) -> np.ndarray:
        return self.aligned.matrix


@dataclasses.dataclass(frozen=True)
class PhotoEdit:
    """The edited photo and what was done to each face."""

    image: np.ndarray  #: ``uint8 (H, W, 3)``
    faces: list[EditedFace]
    feather: float = DEFAULT_FEATHER

    def attention_map(self, fill: float = 1.0) -> np.ndarray | None:
        """Full-size ``float32`` attention (``fill`` away from faces), or ``None`` if no edit gave one."""
        if not any(face.attention is not None for face in self.faces):
            return None
        canvas = np.full(self.image.shape[:2], fill, dtype=np.float32)
        for face in self.faces:
            if face.attention is not None:
                canvas = paste_attention(canvas, face.aligned, face.attention, self.feather)
        return canvas


EditResult = np.ndarray | Any
EditFunction = Callable[[np.ndarray], EditResult]


def _unpack_edit(result: EditResult) -> tuple[np.ndarray, np.ndarray | None]:
    """Accept a plain crop or an object with ``.image`` (and optionally ``.attention``)."""
    if hasattr(result, "image") and not isinstance(result, np.ndarray):
        image = _as_uint8_rgb(result.image, "edit result .image")
        attention = getattr(result, "attention", None)
        return image, None if attention is None else _as_attention(attention)
    return _as_uint8_rgb(result, "edit result"), None


def edit_photo(
    rgb: np.ndarray,
    edit_fn: EditFunction,
    which: Which | str = "largest",
    size: int = DEFAULT_CROP_SIZE,
    detector: FaceDetector | None = None,
    min_face: float = MIN_FACE_SIZE,
    *,
    margin: float = DEFAULT_MARGIN,
    feather: float = DEFAULT_FEATHER,
    blend: Literal["replace", "residual"] = "replace",
    source: str | Path | None = None,
) -> PhotoEdit:
    """Detect faces, edit the chosen ones' aligned crops with ``edit_fn``, paste the edits back.

    ``edit_fn`` gets a ``uint8 (size, size, 3)`` crop and returns either such an array or an
    object with ``.image`` (and optionally ``.attention``). All crops are cut from the original
    photo before any edit is pasted, so overlapping faces do not see each other's edits.
    ``source`` (the file name) only serves error messages.
    """
    photo = _check_rgb(rgb)
    faces = (detector if detector is not None else default_detector()).detect(photo)
    chosen = select_faces(faces, which, min_face=min_face, source=source)
    aligned_faces = [align_face(photo, face, size, margin) for face in chosen]
    result = photo
    edited_faces = []
    for aligned in aligned_faces:
        edited, attention = _unpack_edit(edit_fn(aligned.crop.copy()))
        result = paste_back(result, aligned, edited, feather, blend=blend)
        edited_faces.append(EditedFace(aligned.face, aligned, edited, attention))
    return PhotoEdit(result if result is not photo else photo.copy(), edited_faces, feather)


# --------------------------------------------------------------------------------------------
# Video: one smoothed face track
# --------------------------------------------------------------------------------------------


class OneEuroFilter:
    """One-euro filter (Casiez et al., CHI 2012) on a vector: smooth when still, quick when moving.

    The cutoff frequency rises with the signal's speed, so a face held still does not jitter and
    a turning head is followed without lag.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, derivative_cutoff: float = 1.0) -> None:
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.derivative_cutoff = float(derivative_cutoff)
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self._value = None
        self._speed = None

    def __call__(self, value: np.ndarray, dt: float) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._value is None or dt <= 0:
            self._value = value.copy()
            self._speed = np.zeros_like(value)
            return value.copy()
        speed = (value - self._value) / dt
        alpha_d = self._alpha(self.derivative_cutoff, dt)
        self._speed = self._speed + alpha_d * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        alpha = self._alpha(cutoff, dt)
        self._value = self._value + alpha * (value - self._value)
        return self._value.copy()


class FaceTracker:
    """Follows one face through a video and smooths its alignment so the crop does not jitter.

    Feed it each frame's detections with :meth:`update` (``None`` on frames where detection was
    skipped), or frames with :meth:`track`, which runs ``detector`` every ``detect_every`` frames.
    The tracked face is the detection overlapping the previous one most (the largest face to
    start with); when detection fails the last good face is held for up to ``max_missed``
    frames, after which the track is lost (``None``) and restarts on the next detection.

    Smoothing runs a one-euro filter on the eye midpoint, the log of the eye distance, the roll
    angle and the box, all in units of the face's size, so the same settings suit any resolution.
    """

    def __init__(
        self,
        detector: FaceDetector | None = None,
        *,
        fps: float = 25.0,
        detect_every: int = 1,
        max_missed: int = 5,
        min_cutoff: float = 0.8,
        beta: float = 2.0,
        min_iou: float = 0.2,
    ) -> None:
        if detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        self.detector = detector
        self.fps = float(fps)
        self.detect_every = int(detect_every)
        self.max_missed = int(max_missed)
        self.min_iou = float(min_iou)
        self._filter = OneEuroFilter(min_cutoff, beta)
        self._frame = -1
        self._last_time: float | None = None
        self._raw: Face | None = None
        self._smoothed: Face | None = None
        self._reference = 1.0
        self._missed = 0

    @property
    def face(self) -> Face | None:
        """The current smoothed face, or ``None`` when no face is tracked."""
        return self._smoothed

    def reset(self) -> None:
        self._filter.reset()
        self._raw = self._smoothed = None
        self._last_time = None
        self._missed = 0

    def track(self, rgb: np.ndarray) -> Face | None:
        """Process the next frame: detect when scheduled (or when lost), then :meth:`update`."""
        if self.detector is None:
            raise ValueError("FaceTracker.track needs a detector; use update() with your own detections")
        next_frame = self._frame + 1
        due = next_frame % self.detect_every == 0 or self._smoothed is None
        return self.update(self.detector.detect(rgb) if due else None)

    def update(self, faces: Sequence[Face] | None, timestamp: float | None = None) -> Face | None:
        """Advance one frame with its detections (``None``: not detected this frame)."""
        self._frame += 1
        time = timestamp if timestamp is not None else self._frame / self.fps
        if faces is None:
            return self._smoothed
        match = self._associate(faces)
        if match is None:
            self._missed += 1
            if self._missed > self.max_missed:
                logger.debug("face track lost at frame %d", self._frame)
                self.reset()
            return self._smoothed
        if self._smoothed is None:
            self._reference = max(match.width, 1.0)
        dt = 0.0 if self._last_time is None else time - self._last_time
        self._last_time = time
        self._missed = 0
        if self._raw is not None and (match.mouth is None) != (self._raw.mouth is None):
            self._filter.reset()  # a face with a mouth after one without: start smoothing afresh
        self._raw = match
        encoded = self._encode(match)
        state = self._filter(encoded, dt)
        self._smoothed = self._decode(state, match)
        return self._smoothed

    def _associate(self, faces: Sequence[Face]) -> Face | None:
        if not faces:
            return None
        if self._raw is None:
            return max(faces, key=lambda face: face.size)
        last = self._raw
        best = max(faces, key=lambda face: box_iou(face.box, last.box))
        if box_iou(best.box, last.box) >= self.min_iou:
            return best
        # A fast move can drop the overlap; accept the nearest face within half a face width.
        nearest = min(faces, key=lambda face: math.dist(face.center, last.center))
        return nearest if math.dist(nearest.center, last.center) <= 0.5 * last.width else None

    def _encode(self, face: Face) -> np.ndarray:
        (lx, ly), (rx, ry) = face.left_eye, face.right_eye
        ref = self._reference
        angle = math.atan2(ry - ly, rx - lx)
        cx, cy = face.center
        state = [
            (lx + rx) / 2.0 / ref, (ly + ry) / 2.0 / ref,
            math.log(max(math.hypot(rx - lx, ry - ly), 1e-3) / ref), angle,
            cx / ref, cy / ref, math.log(max(face.width, 1e-3) / ref), math.log(max(face.height, 1e-3) / ref),
        ]
        if face.mouth is not None:  # the mouth relative to the eye midpoint
            state += [(face.mouth[0] - (lx + rx) / 2.0) / ref, (face.mouth[1] - (ly + ry) / 2.0) / ref]
        return np.array(state)

    def _decode(self, state: np.ndarray, face: Face) -> Face:
        ref = self._reference
        mx, my, log_distance, angle, cx, cy, log_w, log_h = state[:8]
        mouth = None if len(state) == 8 else ((mx + state[8]) * ref, (my + state[9]) * ref)
        half = 0.5 * math.exp(log_distance) * ref
        dx, dy = half * math.cos(angle), half * math.sin(angle)
        mx, my, cx, cy = mx * ref, my * ref, cx * ref, cy * ref
        w, h = math.exp(log_w) * ref, math.exp(log_h) * ref
        return Face(
            box=(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0),
            left_eye=(mx - dx, my - dy),
            right_eye=(mx + dx, my + dy),
            score=face.score,
            mouth=mouth,
            mesh=face.mesh,
        )


# --------------------------------------------------------------------------------------------
# Sample photo
# --------------------------------------------------------------------------------------------


def sample_photo_path() -> Path:
    """Path of the bundled sample photo (NASA astronaut portrait, public domain, via scikit-image)."""
    return Path(str(resources.files("ganimation").joinpath("assets", "sample_photo.jpg")))
