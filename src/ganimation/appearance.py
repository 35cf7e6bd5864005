"""The expression's shading: how an AU changes a face's light and dark, as a ratio image.

**Not the paper's.** The shape warp (:mod:`ganimation.shapewarp`) moves a face's features, but
an expression is also what a movement *shows*: the dark inside of an opening mouth, teeth, the
furrow between lowered brows, the creases of a smile. GANimation paints these with its colour
mask; a generator trained on a CPU budget only smudged them (docs/real_model.md). This module
learns them the classical way, as a linear appearance model in a shape-free frame (Cootes,
Edwards & Taylor, *Active Appearance Models*, 1998) applied as an expression ratio image (Liu,
Shan & Zhang, *Expressive Expression Mapping with Ratio Images*, 2001):

* every training crop is warped from its own landmarks onto one **reference shape** (the shape
  model's neutral face with the mouth open, so the inside of a mouth has room in it);
* there, the log-luminance of each pixel is fitted by least squares on the AUs, within each
  person's or clip's faces (so skin, light and make-up are not learned as expressions), each AU
  within its part of the face (:data:`ganimation.shapewarp.AU_REGIONS`), head pose held apart;
* an edit multiplies the warped face by ``exp(basis · (target - own))`` carried from the
  reference frame onto the face's moved landmarks. A ratio, not a colour: it darkens and
  lightens the face's own skin, so a grey photo stays grey, and asking for the face's own AUs
  gives a ratio of exactly 1;
* where an edit **opens a mouth**, no ratio can help: between the lips it opens a gap the photo
  never showed (:func:`ganimation.shapewarp.mouth_inside`). There the model paints the inside of
  a mouth (:attr:`AppearanceModel.interior`): the inside of the training faces' open mouths,
  relative to each face's own light, and how it changes with the AUs (dark with a dropped jaw,
  lighter where teeth show), in the hue of the face's own lips.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ganimation.aus import AU_NAMES, NUM_AUS, aus_from_mapping
from ganimation.shapewarp import (CONTROL_POINTS, FACE_OVAL, INNER_LIP_CONTOUR, LUMA, NUM_LANDMARKS, Fill, ShapeModel,
                                  anchor_points, au_regions, eye_distance, log_luminance, pose_features,
                                  regional_least_squares, tensor_pair, thin_plate_map, within_groups)

#: Side of the reference frame in pixels; it spans the model's crop (crop widths 0..1).
TEXTURE_SIZE = 128
#: The reference shape opens the mouth this far, so its inside has room in the frame.
REFERENCE_MOUTH = {"AU25": 1.0, "AU26": 1.0}
#: The frame-to-frame maps are spline-evaluated on a lattice this fine, then interpolated.
_LATTICE = 40
#: A ratio image never darkens or lightens a pixel by more than this factor (e^1 ≈ 2.7).
MAX_LOG_RATIO = 1.0
#: Smoothing of the fitted maps (pixels of the frame): the fit's noise is finer than any crease.
_BASIS_BLUR = 2.0
_REGION_BLUR = 4.0
#: How far around the eyes (:data:`EYE_CONTOURS`) no AU shades either, in eye distances.
EYE_MARGIN = 0.12
#: The eyes' contours (MediaPipe mesh, in order around each eye). Inside them no AU shades: what
#: an eye shows is the lids' movement, which the warp makes, and a shading learned there would
#: glow wherever a face's landmarks sit a pixel off its lids.
EYE_CONTOURS = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))

#: Faces whose opening (:func:`mouth_opening`) is at least this show enough of the mouth's inside
#: to teach it: about one training face in ten, open almost as wide as the reference face (0.093).
OPEN_MOUTH = 0.08
#: The painted inside stays within this of the face's median log-luminance (darker: e^-2.5 ≈ 8 %).
INTERIOR_RANGE = (-2.5, 0.8)


@dataclasses.dataclass(frozen=True)
class AppearanceModel:
    """``reference``: ``(478, 2)`` landmarks of the reference shape in crop widths; ``basis``:
    ``(17, S, S)`` change of log-luminance per unit of each AU, in the reference frame;
    ``interior`` (optional): ``(18, S, S)``, the inside of an open mouth in that frame, as
    log-luminance relative to the face's median, at no AUs, then per unit of each AU (0 outside
    the reference face's inner lips)."""

    reference: np.ndarray
    basis: np.ndarray
    interior: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.reference.shape != (NUM_LANDMARKS, 2) or self.basis.ndim != 3 or self.basis.shape[0] != NUM_AUS \
                or self.basis.shape[1] != self.basis.shape[2]:
            raise ValueError(f"appearance model: expected reference (478, 2) and basis (17, S, S), got "
                             f"{self.reference.shape} and {self.basis.shape}")
        if self.interior is not None and self.interior.shape != (NUM_AUS + 1, *self.basis.shape[1:]):
            raise ValueError(f"appearance model: expected interior {(NUM_AUS + 1, *self.basis.shape[1:])}, "
                             f"got {self.interior.shape}")
        parts = [self.reference, self.basis] + ([] if self.interior is None else [self.interior])
        if not all(np.isfinite(part).all() for part in parts):
            raise ValueError("appearance model: contains NaN or infinity")

    @property
    def size(self) -> int:
        return int(self.basis.shape[1])

    def log_ratio(self, delta_aus: np.ndarray) -> np.ndarray:
        """``(S, S)`` log-luminance change in the reference frame for an AU change ``(17,)``."""
        delta = np.asarray(delta_aus, dtype=np.float32).reshape(NUM_AUS)
        return np.clip(np.tensordot(delta, self.basis, axes=1), -MAX_LOG_RATIO, MAX_LOG_RATIO).astype(np.float32)

    def interior_log_luminance(self, aus: np.ndarray) -> np.ndarray:
        """``(S, S)`` the inside of a mouth with ``aus`` ``(17,)``, relative to the face's median."""
        if self.interior is None:
            raise ValueError("appearance model: has no mouth interior")
        planes = self.interior.astype(np.float32)
        painted = planes[0] + np.tensordot(np.asarray(aus, np.float32).reshape(NUM_AUS), planes[1:], axes=1)
        return np.clip(painted, *INTERIOR_RANGE).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        tensors = {"appearance.reference": torch.from_numpy(self.reference.astype(np.float32)),
                   "appearance.basis": torch.from_numpy(self.basis.astype(np.float32))}
        if self.interior is not None:
            tensors["appearance.interior"] = torch.from_numpy(self.interior.astype(np.float32))
        return tensors

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor]) -> AppearanceModel | None:
        """The appearance model saved in a model file, or None when it has none."""
        pair = tensor_pair(tensors, "an appearance model", "appearance.reference", "appearance.basis")
        if pair is None:
            return None
        reference, basis = pair
        interior = tensors.get("appearance.interior")
        return cls(reference.float().numpy().astype(np.float64), basis.float().numpy().astype(np.float32),
                   None if interior is None else interior.float().numpy())


def reference_shape(shape: ShapeModel) -> np.ndarray:
    """The reference landmarks ``(478, 2)`` (crop widths): the neutral face, mouth open."""
    return shape.mean + shape.displacement(aus_from_mapping(REFERENCE_MOUTH))


def _spline_points(landmarks: np.ndarray) -> np.ndarray:
    """The points that pin a frame-to-frame map: the warp's control points and its still anchors."""
    return np.concatenate([landmarks[CONTROL_POINTS], anchor_points(landmarks)])


def frame_map(source: np.ndarray, target: np.ndarray, region: tuple[float, float, float, float],
              shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of ``region`` (``x0, y0, x1, y1`` in the frame of the ``source`` landmarks,
    sampled as ``shape = (height, width)`` pixels), its place in the frame of the ``target``
    landmarks (each ``(478, 2)``), through a thin-plate spline; ``(map_x, map_y)`` for
    :func:`cv2.remap`."""
    def normalise(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
        return landmarks.mean(0), max(eye_distance(landmarks), 1e-6)

    (source_centre, source_unit), (target_centre, target_unit) = normalise(source), normalise(target)
    x0, y0, x1, y1 = region
    xs, ys = np.linspace(x0, x1, _LATTICE), np.linspace(y0, y1, _LATTICE)
    lattice = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    mapped = thin_plate_map((_spline_points(source) - source_centre) / source_unit,
                            (_spline_points(target) - target_centre) / target_unit,
                            (lattice - source_centre) / source_unit)
    mapped = (mapped * target_unit + target_centre).reshape(_LATTICE, _LATTICE, 2).astype(np.float32)
    # each pixel's place on the lattice, whose first and last points sit on the region's corners
    height, width = shape
    along_x = np.linspace(0, _LATTICE - 1, width, dtype=np.float32)
    along_y = np.linspace(0, _LATTICE - 1, height, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(along_x, along_y)
    return tuple(cv2.remap(np.ascontiguousarray(mapped[..., axis]), grid_x, grid_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE) for axis in (0, 1))


def shape_free(crop: np.ndarray, landmarks: np.ndarray, reference: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A crop's log-luminance ``(size, size)`` warped from its ``landmarks`` onto ``reference``
    (both ``(478, 2)`` in crop widths)."""
    map_x, map_y = frame_map(reference * size - 0.5, landmarks * crop.shape[1] - 0.5, (0, 0, size - 1, size - 1),
                             (size, size))
    return cv2.remap(log_luminance(crop), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def pixel_regions(reference: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """``(17, size, size)`` soft masks: where on the reference frame each AU may change the light,
    by the same parts of the face the shape model holds each AU to, inside the face's outline."""
    xs = (np.arange(size) + 0.5) / size
    pixels = np.stack(np.meshgrid(xs, xs), axis=-1).reshape(-1, 2)
    allowed = au_regions(reference, pixels).reshape(size, size, NUM_AUS).astype(np.float32)
    allowed *= face_mask(reference, size)[..., None]
    return np.stack([cv2.GaussianBlur(allowed[..., k], (0, 0), _REGION_BLUR) for k in range(NUM_AUS)])


def face_mask(reference: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """``(size, size)`` 1 inside the reference face's outline and outside its eyes, else 0."""
    def polygon(indices: Sequence[int]) -> np.ndarray:
        return np.round(reference[list(indices)] * size - 0.5).astype(np.int32)

    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [polygon(FACE_OVAL)], 1)
    eyes = np.zeros((size, size), np.uint8)
    cv2.fillPoly(eyes, [polygon(contour) for contour in EYE_CONTOURS], 1)
    # and around them, over the lids: the lids' skin folds as they move, and where a face's
    # landmarks sit off its lids, shading learned there rings the eye with light
    reach = max(1, round(EYE_MARGIN * eye_distance(reference) * size))
    eyes = cv2.dilate(eyes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1)))
    return (mask & (1 - eyes)).astype(np.float32)


def lighting_features(textures: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(N, 3)`` how each face is lit: the median log-luminance over ``mask`` and the differences
    of its left and right, top and bottom halves' medians. Held apart in the fit, like head pose:
    a clip whose light changes as the head turns, or a person photographed in brighter rooms when
    smiling, must not teach an AU to brighten a whole face. Medians, because an expression
    shades a small part of the face (a mouth, a brow) and the light all of it."""
    size = textures.shape[-1]
    inside = mask > 0.5
    left = inside & (np.arange(size) < size // 2)[None, :]
    top = inside & (np.arange(size) < size // 2)[:, None]

    def median_over(region: np.ndarray) -> np.ndarray:
        return np.median(textures[:, region], axis=1)

    return np.stack([median_over(inside), median_over(left) - median_over(inside & ~left),
                     median_over(top) - median_over(inside & ~top)], axis=1)


def fit_appearance_model(textures: np.ndarray, landmarks: np.ndarray, aus: np.ndarray, reference: np.ndarray,
                         groups: Sequence[str], ridge: float = 1e-2) -> AppearanceModel:
    """Least squares ``texture ≈ mean + aus · basis + pose · P + lighting · L`` within groups (a
    person's photos, a clip), each pixel on the AUs of its part of the face
    (:func:`pixel_regions`); pose and lighting (:func:`lighting_features`) are held apart.

    ``textures``: ``(N, S, S)`` shape-free log-luminance (:func:`shape_free`); ``landmarks``
    ``(N, 478, 2)`` and ``aus`` ``(N, 17)`` of the same faces; ``reference``: the frame's shape.
    """
    textures = np.asarray(textures, dtype=np.float32)
    count, size = len(textures), textures.shape[-1]
    if textures.shape != (count, size, size) or aus.shape != (count, NUM_AUS) or len(landmarks) != count:
        raise ValueError(f"expected textures (N, S, S), landmarks (N, 478, 2) and aus (N, 17), got "
                         f"{textures.shape}, {np.shape(landmarks)} and {np.shape(aus)}")
    face = face_mask(reference, size)
    covariates = np.concatenate([np.asarray(aus, np.float64), pose_features(np.asarray(landmarks, np.float64)),
                                 lighting_features(textures, face)], 1)
    design, centred = within_groups(covariates, textures.reshape(count, -1, 1), groups)
    soft = pixel_regions(reference, size)
    allowed = soft.reshape(NUM_AUS, -1).T > 0.05
    coefficients = regional_least_squares(design, centred, allowed, ridge)
    basis = coefficients.reshape(NUM_AUS, size, size).astype(np.float32)
    basis = np.stack([cv2.GaussianBlur(plane, (0, 0), _BASIS_BLUR) for plane in basis]) * soft
    interior = fit_mouth_interior(textures, landmarks, aus, reference, ridge)
    return AppearanceModel(np.asarray(reference, np.float64), basis.astype(np.float32), interior)


def mouth_opening(landmarks: np.ndarray) -> float:
    """The area inside the inner lips of landmarks ``(478, 2+)``, over the eye distance squared."""
    x, y = (np.asarray(landmarks)[list(INNER_LIP_CONTOUR), axis].astype(np.float64) for axis in (0, 1))
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return area / max(eye_distance(landmarks), 1e-9) ** 2


def interior_mask(reference: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """``(size, size)`` 1 inside the reference face's inner lips, else 0."""
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(reference[list(INNER_LIP_CONTOUR)] * size - 0.5).astype(np.int32)], 1)
    return mask.astype(np.float32)


def fit_mouth_interior(textures: np.ndarray, landmarks: np.ndarray, aus: np.ndarray, reference: np.ndarray,
                       ridge: float = 1e-2) -> np.ndarray | None:
    """``(18, S, S)`` the inside of an open mouth (:attr:`AppearanceModel.interior`), or None
    with too few open mouths (:data:`OPEN_MOUTH`) to learn it from.

    Least squares over the faces whose mouths are open, *across* people rather than within them:
    what is wanted is what a mouth's inside looks like, which a closed-mouthed person's photos
    never show. Each face's log-luminance is taken relative to its median (its light and skin),
    and each pixel is fitted on the AUs of its part of the face (the mouth's)."""
    size = textures.shape[-1]
    chosen = np.flatnonzero([mouth_opening(points) >= OPEN_MOUTH for points in landmarks])
    if len(chosen) < 4 * (NUM_AUS + 1):
        return None
    inside = interior_mask(reference, size) > 0.5
    light = lighting_features(textures[chosen], face_mask(reference, size))[:, 0]
    values = np.asarray(textures[chosen][:, inside], np.float64) - light[:, None]
    xs = (np.arange(size) + 0.5) / size
    pixels = np.stack(np.meshgrid(xs, xs), axis=-1)[inside]
    chosen_aus = np.asarray(aus, np.float64)[chosen]
    design, centred = chosen_aus - chosen_aus.mean(0), values - values.mean(0)
    coefficients = regional_least_squares(design, centred[..., None], au_regions(reference, pixels), ridge)[..., 0]
    planes = np.zeros((NUM_AUS + 1, size, size), np.float32)
    planes[0][inside] = values.mean(0) - chosen_aus.mean(0) @ coefficients
    planes[1:, inside] = coefficients
    return planes


def ratio_on_photo(model: AppearanceModel, moved: np.ndarray, region: tuple[int, int, int, int],
                   delta_aus: np.ndarray, showed_inside: np.ndarray | None = None) -> np.ndarray | None:
    """The luminance gain ``(h, w)`` over ``region`` (``x0, y0, x1, y1`` photo pixels) of a face
    whose landmarks have moved to ``moved`` (``(478, 2)`` photo pixels), for an AU change; None
    when the gain is 1 everywhere (the zero edit).

    ``showed_inside`` ``(h, w)`` in [0, 1]: which pixels show what lay inside the photo's own
    mouth opening (:func:`opening_after_warp`). Inside the reference mouth the maps learned
    teeth and shadow, so there they shade only such pixels: a ratio image keeps the surface and
    changes its light, and on the lips a closed mouth stretches over that place, lightening them
    "where teeth show" made them glow. What the edit newly opens is the fill's
    (:func:`interior_on_photo`)."""
    log_ratio = model.log_ratio(delta_aus)
    if np.abs(log_ratio).max(initial=0.0) <= 1e-4:
        return None
    maps = _photo_map(model, moved, region)  # one spline solve for both planes: it is the costly part
    log_gain = _onto_photo(model, log_ratio, moved, region, maps)
    if showed_inside is not None:
        inside = np.clip(_onto_photo(model, interior_mask(model.reference, model.size), moved, region, maps), 0.0, 1.0)
        log_gain *= 1.0 - inside * (1.0 - np.clip(showed_inside, 0.0, 1.0))
    return np.exp(log_gain).astype(np.float32)


def opening_after_warp(landmarks: np.ndarray, region: tuple[int, int, int, int], dx: np.ndarray,
                       dy: np.ndarray) -> np.ndarray:
    """``(h, w)`` over ``region``: 1 where the warp (backward offsets ``dx``, ``dy``) takes a pixel
    from inside the face's own inner lips (``landmarks`` ``(478, 2)``, photo pixels), before the
    edit: its teeth or the dark of its mouth, not its lips. 0 for a closed mouth."""
    x0, y0, x1, y1 = region
    # drawn 4 times finer and averaged: the share of each pixel inside, so that the seam of
    # closed lips (a polygon without area) covers a quarter of a pixel at most, not a whole line
    fine = np.zeros((4 * (y1 - y0), 4 * (x1 - x0)), np.float32)
    polygon = np.round((landmarks[list(INNER_LIP_CONTOUR), :2] - (x0, y0) + 0.5) * 4 - 0.5).astype(np.int32)
    cv2.fillPoly(fine, [polygon], 1.0)
    opening = cv2.resize(fine, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    xs, ys = np.meshgrid(np.arange(x1 - x0, dtype=np.float32), np.arange(y1 - y0, dtype=np.float32))
    return cv2.remap(opening, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def interior_on_photo(model: AppearanceModel, crop: np.ndarray, crop_points: np.ndarray, moved: np.ndarray,
                      region: tuple[int, int, int, int], target: np.ndarray,
                      revealed: np.ndarray | None) -> Fill | None:
    """The painted inside of a mouth the edit opens, over ``region`` of the photo (a
    :class:`~ganimation.shapewarp.Fill`), or None when the model has no interior or the edit
    reveals none.

    ``crop`` is the face's aligned crop and ``crop_points`` its landmarks there (crop widths), for
    the face's own light; ``moved`` its landmarks in the photo after the edit; ``target`` the AUs
    asked for; ``revealed`` where the warp opened a gap the photo never showed
    (:attr:`ganimation.shapewarp.FaceWarp.revealed`), the weight."""
    if model.interior is None or revealed is None or not (revealed > 1e-3).any():
        return None
    face = face_mask(model.reference, model.size) > 0.5
    light = float(np.median(shape_free(crop, crop_points, model.reference, model.size)[face]))
    painted = _onto_photo(model, light + model.interior_log_luminance(target), moved, region)
    return Fill(painted, revealed, mouth_colour(crop, crop_points))


#: The outer lips (MediaPipe mesh), in order around the mouth.
OUTER_LIP_CONTOUR = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)


def mouth_colour(crop: np.ndarray, crop_points: np.ndarray) -> np.ndarray | None:
    """The colour the inside of this face's mouth is painted in (RGB of luminance 1): its lips'
    hue (a mouth's inside is the lips' flesh, in shadow); None for a grey crop
    or one whose lips cover no pixel."""
    if crop.ndim != 3 or crop.shape[-1] != 3:
        return None
    size = crop.shape[1]
    lips = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(lips, [np.round(crop_points[list(OUTER_LIP_CONTOUR), :2] * size - 0.5).astype(np.int32)], 1)
    cv2.fillPoly(lips, [np.round(crop_points[list(INNER_LIP_CONTOUR), :2] * size - 0.5).astype(np.int32)], 0)
    if not lips.any():
        return None
    colour = crop[lips > 0].astype(np.float64).mean(0)
    luminance = float(colour @ LUMA.astype(np.float64))
    if luminance <= 1.0:
        return None
    return (colour / luminance).astype(np.float32)


def _photo_map(model: AppearanceModel, moved: np.ndarray, region: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of ``region`` of the photo, where the face's landmarks are ``moved``, its
    place in the reference frame (``map_x, map_y`` for :func:`cv2.remap`)."""
    x0, y0, x1, y1 = region
    return frame_map(moved, model.reference * model.size - 0.5, (x0, y0, x1 - 1, y1 - 1), (y1 - y0, x1 - x0))


def _onto_photo(model: AppearanceModel, plane: np.ndarray, moved: np.ndarray, region: tuple[int, int, int, int],
                maps: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A plane of the reference frame carried onto ``region`` of the photo, where the face's
    landmarks are ``moved``; 0 outside the frame. ``maps``: :func:`_photo_map`'s, when already made."""
    map_x, map_y = maps if maps is not None else _photo_map(model, moved, region)
    return cv2.remap(np.ascontiguousarray(plane, np.float32), map_x, map_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def describe(model: AppearanceModel) -> list[str]:
    """A line per AU: its strongest darkening and lightening (percent of luminance at intensity 1);
    and, with a mouth interior, how light it paints a mouth's inside."""
    lines = [f"{name}: darkens up to {100 * (1 - np.exp(plane.min())):.0f} %, lightens up to "
             f"{100 * (np.exp(plane.max()) - 1):.0f} %" for name, plane in zip(AU_NAMES, model.basis)]
    if model.interior is not None:
        inside = interior_mask(model.reference, model.size) > 0.5
        shares = [100 * float(np.exp(model.interior_log_luminance(aus_from_mapping(aus))[inside]).mean())
                  for aus in ({}, {"AU25": 1.0, "AU26": 1.0})]
        lines.append(f"inside of a mouth: {shares[0]:.0f} % of the face's light, "
                     f"{shares[1]:.0f} % with the jaw dropped")
    return lines
