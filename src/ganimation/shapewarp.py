"""The expression's shape: a landmark model of the AUs and the warp that moves a face along it.

**Not the paper's.** GANimation draws every change with its colour and attention masks. Trained
on a few thousand real faces on a CPU, that generator learns to fool its critic's AU regressor
with patches of colour long before it learns to move a mouth corner (docs/real_model.md). Yet
most of what an AU *is*, by FACS's own definition, is a movement: brows go up, lids open, lip
corners pull up and back, the jaw drops. This module gives the model that movement directly:

* a **shape model** (:class:`ShapeModel`), fitted by least squares on the landmarks and AU
  readings of real faces (``scripts/fit_shape_model.py``): the mean face in the crop convention
  and, per AU, how each of the 478 landmarks moves per unit of intensity, each AU within its part
  of the face, head pose held apart, and optionally within each person's photos, so that neither
  a turned head nor a resting face is learned as an expression;
* a **warp** (:func:`warp_photo`): the face's own landmarks move by ``basis · (target - own)``,
  and a thin-plate spline through them (and through still anchors around the face) resamples the
  photo once, at its own resolution. Inside a mouth that opens, what the photo shows between the
  lips keeps its size and a gap opens in the middle (:func:`mouth_inside`): teeth do not stretch.
  Asking for the face's own AUs moves nothing, so the zero edit returns the photo bit for bit.

The generator then edits the warped face as the paper's does (colour where the warp cannot
reach: teeth, wrinkles, shading), unless its model file says it learned synthetic faces only, as
the bundled one does: then the warp is the whole edit of a photo. A model file without
``shape.*`` tensors (yours, checkpoints of other code bases) is the paper's model alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ganimation.aus import AU_NAMES, NUM_AUS
from ganimation.facemesh import LEFT_EYE_CORNERS, MOUTH_CORNERS, RIGHT_EYE_CORNERS

#: Landmarks of the face oval (MediaPipe's ``FACEMESH_FACE_OVAL``, in order around the face).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
IRIS = list(range(468, 478))
#: The landmarks that steer the warp: the contours of the brows, eyes, lips, nose and face and a
#: few on the cheeks and forehead. All 478 would pin neighbouring points a pixel apart to
#: slightly different moves, and a spline through them all ripples (and folds) between them.
#: None lies between the lower lip and the chin's outline: the outline moves only with the jaw
#: (:func:`au_regions`), while points just inside it were fitted with the lip AUs too, so a smile
#: that parts the lips pushed the chin's middle past its outline, into a notch over the neck.
#: Between the lip and the outline the spline interpolates, and the chin follows both.
CONTROL_POINTS = sorted(set(FACE_OVAL) | {
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,  # outer lips
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191,  # inner lips
    263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466,  # the face's left eye
    33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,  # its right eye
    276, 283, 282, 295, 285, 300, 293, 334, 296, 336, 46, 53, 52, 65, 55, 70, 63, 105, 66, 107,  # brows
    1, 4, 6, 168, 197, 195, 98, 327, 2, 94,  # nose
    50, 280, 205, 425, 187, 411, 123, 352, 116, 345, 151, 9, 108, 337, 69, 299,  # cheeks, forehead
})
_NOSE_TIP = 1
_EYE_CORNERS = (33, 263)  # outer corners, the face's right then left
NUM_LANDMARKS = 478
#: Still anchors sit on the face oval pushed out this much from the face's centre, and on a
#: wider ring; the warp fades to nothing between the oval and the wider ring.
_ANCHOR_RINGS = (1.45, 2.1)
#: The spline's smoothing, in units of the eye distance (coordinates are scaled by it): it
#: follows the control points to a fraction of a pixel yet does not chase their noise.
_SPLINE_SMOOTHING = 1e-3
_GRID = 96  # the spline is evaluated on a grid this fine over the face, then interpolated


@dataclasses.dataclass(frozen=True)
class ShapeModel:
    """Mean landmarks and per-AU displacements, in crop widths of the crop convention.

    ``mean``: ``(478, 2)``; ``basis``: ``(17, 478, 2)``, the displacement of each landmark per unit
    of each AU (AUs in [0, 1], OpenFace's 0-5 divided by 5).
    """

    mean: np.ndarray
    basis: np.ndarray

    def __post_init__(self) -> None:
        if self.mean.shape != (NUM_LANDMARKS, 2) or self.basis.shape != (NUM_AUS, NUM_LANDMARKS, 2):
            raise ValueError(f"shape model: expected mean (478, 2) and basis (17, 478, 2), got "
                             f"{self.mean.shape} and {self.basis.shape}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.basis).all()):
            raise ValueError("shape model: contains NaN or infinity")

    def displacement(self, delta_aus: np.ndarray) -> np.ndarray:
        """``(478, 2)`` landmark movement, in crop widths, for an AU change ``(17,)``."""
        delta = np.asarray(delta_aus, dtype=np.float64).reshape(NUM_AUS)
        return np.tensordot(delta, self.basis, axes=1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"shape.mean": torch.from_numpy(self.mean.astype(np.float32)),
                "shape.basis": torch.from_numpy(self.basis.astype(np.float32))}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor]) -> ShapeModel | None:
        """The shape model saved in a model file, or None when it has none."""
        pair = tensor_pair(tensors, "a shape model", "shape.mean", "shape.basis")
        if pair is None:
            return None
        mean, basis = pair
        return cls(mean.float().numpy().astype(np.float64), basis.float().numpy().astype(np.float64))


def tensor_pair(tensors: dict[str, torch.Tensor], what: str, first: str,
                second: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The two tensors ``first`` and ``second`` of ``what`` in a model file (a shape model, an
    appearance model), or None when the file has neither; one without the other is a ValueError."""
    if first not in tensors and second not in tensors:
        return None
    try:
        return tensors[first], tensors[second]
    except KeyError as missing:
        raise ValueError(f"model file has {what} without {missing.args[0]}") from None


def pose_features(landmarks: np.ndarray) -> np.ndarray:
    """``(N, 3)`` head-pose covariates of landmarks ``(N, 478, 2)`` in crop widths: yaw and pitch
    read as the nose tip's offset from the eyes' midpoint in eye distances, and yaw squared."""
    eyes = landmarks[:, list(_EYE_CORNERS)]
    middle = eyes.mean(1)
    distance = np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=-1)
    offset = (landmarks[:, _NOSE_TIP] - middle) / distance[:, None]
    return np.stack([offset[:, 0], offset[:, 1], offset[:, 0] ** 2], axis=1)


#: Where on the face each AU may move landmarks: a band of the face's height, measured from the
#: eyes (0) to the mouth corners (1) of the mean face, and optionally a reach in eye distances,
#: from the nearer eye's centre (``"eye"``) or from the face's midline (``"midline"``). FACS
#: describes each AU by the muscle that makes it, and a muscle moves only its part of the face;
#: holding each AU to its part keeps the fit from crediting an AU with what its usual companions
#: (or a turned head) do, such as the jaw drop that comes with raised lids in a surprise.
AU_REGIONS: dict[str, tuple[float, float, str, float]] = {
    "AU01": (-2.0, 0.15, "midline", 0.9), "AU02": (-2.0, 0.15, "midline", 1.0),  # brows, forehead
    "AU04": (-2.0, 0.25, "midline", 0.9),
    "AU05": (-0.6, 0.25, "eye", 0.4), "AU07": (-0.6, 0.3, "eye", 0.4), "AU45": (-0.6, 0.3, "eye", 0.4),  # lids
    "AU06": (-0.15, 1.0, "eye", 0.75),  # cheeks and lower lids, which the smile's cheeks push up
    "AU09": (-0.6, 0.9, "midline", 0.45),  # inner brows, nose, upper lip
    "AU10": (0.3, 3.0, "any", 0.0), "AU12": (0.3, 3.0, "any", 0.0), "AU14": (0.3, 3.0, "any", 0.0),  # mouth, jaw
    "AU15": (0.3, 3.0, "any", 0.0), "AU17": (0.3, 3.0, "any", 0.0), "AU20": (0.3, 3.0, "any", 0.0),
    "AU23": (0.3, 3.0, "any", 0.0), "AU25": (0.3, 3.0, "any", 0.0), "AU26": (0.3, 3.0, "any", 0.0),
}


def eye_distance(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners of one face's landmarks ``(478, 2)``."""
    return float(np.linalg.norm(landmarks[_EYE_CORNERS[1], :2] - landmarks[_EYE_CORNERS[0], :2]))


def au_regions(mean: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """``(P, 17)`` booleans: which AUs may move (or, for :mod:`ganimation.appearance`, shade) each
    of ``points`` ``(P, 2)`` of a face whose landmarks are ``mean`` ``(478, 2)``
    (:data:`AU_REGIONS`). Without ``points``: the landmarks themselves, where the face's outline
    above the mouth moves with none."""
    eyes = np.array([mean[list(pair)].mean(0) for pair in (LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS)])
    eye_span = float(np.linalg.norm(eyes[1] - eyes[0]))
    mouth_y = mean[list(MOUTH_CORNERS), 1].mean()
    where = mean if points is None else np.asarray(points, dtype=np.float64)
    height = (where[:, 1] - eyes[:, 1].mean()) / (mouth_y - eyes[:, 1].mean())
    from_eye = np.linalg.norm(where[:, None] - eyes[None], axis=-1).min(1) / eye_span
    from_midline = np.abs(where[:, 0] - eyes[:, 0].mean()) / eye_span
    allowed = np.zeros((len(where), NUM_AUS), bool)
    for column, name in enumerate(AU_NAMES):
        low, high, reach_from, reach = AU_REGIONS[name]
        inside = (height >= low) & (height <= high)
        if reach_from == "eye":
            inside &= from_eye <= reach
        elif reach_from == "midline":
            inside &= from_midline <= reach
        allowed[:, column] = inside
    if points is not None:
        return allowed
    # the face's outline is bone: only the jaw moves it (AU26 drops the jaw, AU17 pushes the chin
    # up). Fitted freely, it would learn the wider lower face of the photos where people smile.
    outline = np.zeros(NUM_LANDMARKS, bool)
    outline[list(FACE_OVAL)] = True
    allowed[outline] = False
    allowed[np.ix_(outline & (height >= 0.3), [AU_NAMES.index("AU26"), AU_NAMES.index("AU17")])] = True
    # the irises: lids open and close around them; they do not grow
    allowed[IRIS] = False
    return allowed


def fit_shape_model(landmarks: np.ndarray, aus: np.ndarray, ridge: float = 1e-3,
                    groups: Sequence[str] | None = None) -> ShapeModel:
    """Least squares ``landmarks ≈ mean + aus · basis + pose · P`` over many faces.

    ``landmarks``: ``(N, 478, 2)`` in crop widths of aligned crops; ``aus``: ``(N, 17)`` in [0, 1].
    Each landmark is fitted on the AUs whose region (:data:`AU_REGIONS`) holds it; the pose terms
    (:func:`pose_features`) take up what head turns do to the landmarks, so the AU basis is the
    expression's alone; ``ridge`` (relative to each column's variance) keeps AUs that rarely occur
    from taking noise.

    With ``groups`` (one name per face: a person, a clip), the basis is fitted *within* each group
    of two or more faces, on each face's difference from its group's mean (a fixed-effects fit):
    an expression is a movement of a face from itself, and the reader reads some faces' resting
    shapes as AUs (low brows as AU04, full lips as AU25), which a fit across people would learn as
    movement. Faces alone in their group then only set the mean face.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    aus = np.asarray(aus, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 2) or aus.shape != (len(landmarks), NUM_AUS):
        raise ValueError(f"expected landmarks (N, 478, 2) and aus (N, 17), got {landmarks.shape} and {aus.shape}")
    if len(landmarks) < 4 * (NUM_AUS + 4):
        raise ValueError(f"need at least {4 * (NUM_AUS + 4)} faces to fit a shape model, got {len(landmarks)}")
    pose = pose_features(landmarks)
    covariates = np.concatenate([aus, pose], axis=1)
    centre = covariates.mean(0)
    target_mean = landmarks.mean(0)
    if groups is None:
        design = covariates - centre
        residual_targets = landmarks - target_mean
    else:
        design, residual_targets = within_groups(covariates, landmarks, groups)
    coefficients = regional_least_squares(design, residual_targets, au_regions(target_mean), ridge)
    # the mean face is the neutral, frontal one: the fit at zero AUs and the average pose
    neutral = target_mean - np.tensordot(centre[:NUM_AUS], coefficients, axes=1)
    return ShapeModel(neutral, coefficients)


def regional_least_squares(design: np.ndarray, targets: np.ndarray, allowed: np.ndarray,
                           ridge: float) -> np.ndarray:
    """Ridge least squares of ``targets`` ``(N, P, D)`` on centred ``design`` ``(N, 17 + C)`` (the
    AUs, then nuisance covariates such as pose), each of the ``P`` points on only the AUs
    ``allowed`` ``(P, 17)`` there and on every nuisance column.

    Returns the AU coefficients ``(17, P, D)``, 0 where an AU is not allowed. ``ridge`` is
    relative to each column's variance, so rare AUs do not take noise.
    """
    count, points, depth = targets.shape
    coefficients = np.zeros((NUM_AUS, points, depth))
    # points with the same allowed AUs share one solve
    for pattern in np.unique(allowed, axis=0):
        members = np.flatnonzero((allowed == pattern).all(1))
        columns = np.concatenate([np.flatnonzero(pattern), np.arange(NUM_AUS, design.shape[1])])
        sub = design[:, columns]
        gram = sub.T @ sub
        gram += ridge * np.diag(np.diag(gram)) + 1e-9 * np.eye(len(gram))
        solved = np.linalg.solve(gram, sub.T @ targets[:, members].reshape(count, -1))
        coefficients[np.flatnonzero(pattern)[:, None], members[None, :]] = \
            solved[: int(pattern.sum())].reshape(-1, len(members), depth)
    return coefficients


def within_groups(covariates: np.ndarray, values: np.ndarray, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Covariates and ``values`` (landmarks, textures: any ``(N, ...)``) of the faces in groups of two
    or more, less their group's means."""
    names = np.asarray(list(groups))
    if len(names) != len(values):
        raise ValueError(f"{len(names)} group names for {len(values)} faces")
    _, index, counts = np.unique(names, return_inverse=True, return_counts=True)
    kept = counts[index] >= 2
    if kept.sum() < 4 * covariates.shape[1]:
        raise ValueError(f"need at least {4 * covariates.shape[1]} faces in groups of two or more, got {int(kept.sum())}")
    index = index[kept]
    design, targets = covariates[kept], values[kept]
    sizes = np.bincount(index).astype(np.float64)
    sizes[sizes == 0] = 1.0
    design_means = np.stack([np.bincount(index, weights=column) for column in design.T], axis=1) / sizes[:, None]
    flat = targets.reshape(len(targets), -1)
    target_means = (np.zeros((len(sizes), flat.shape[1])))
    np.add.at(target_means, index, flat)
    target_means /= sizes[:, None]
    return design - design_means[index], (flat - target_means[index]).reshape(targets.shape)


# ---- the warp ------------------------------------------------------------------------------------


def _spline_kernel(distance_squared: np.ndarray) -> np.ndarray:
    """The thin-plate kernel ``r² log r`` (0 at r = 0)."""
    safe = np.maximum(distance_squared, 1e-300)
    return np.where(distance_squared > 0, 0.5 * distance_squared * np.log(safe), 0.0)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` squared distances between two point sets (one matrix product)."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def thin_plate_map(targets: np.ndarray, sources: np.ndarray, points: np.ndarray,
                   smoothing: float = _SPLINE_SMOOTHING) -> np.ndarray:
    """The thin-plate spline through ``targets -> sources`` (each ``(K, 2)``) evaluated at
    ``points`` ``(M, 2)``: where each point's pixel comes from (a backward map)."""
    count = len(targets)
    kernel = _spline_kernel(_squared_distances(targets, targets))
    affine = np.concatenate([np.ones((count, 1)), targets], axis=1)
    system = np.zeros((count + 3, count + 3))
    system[:count, :count] = kernel + smoothing * np.eye(count)
    system[:count, count:] = affine
    system[count:, :count] = affine.T
    right = np.zeros((count + 3, 2))
    right[:count] = sources - targets  # the spline carries the displacement; identity added back
    weights = np.linalg.lstsq(system, right, rcond=None)[0]
    at_points = _spline_kernel(_squared_distances(points, targets))
    displacement = at_points @ weights[:count] + np.concatenate([np.ones((len(points), 1)), points], axis=1) @ weights[count:]
    return points + displacement


def _anchors(landmarks: np.ndarray, ring: float) -> np.ndarray:
    oval = landmarks[list(FACE_OVAL)]
    centre = landmarks.mean(0)
    return centre + ring * (oval - centre)


def anchor_points(landmarks: np.ndarray) -> np.ndarray:
    """The warp's still anchors of one face: its oval pushed out to both rings (:data:`_ANCHOR_RINGS`)."""
    return np.concatenate([_anchors(landmarks, ring) for ring in _ANCHOR_RINGS])


def face_displacement(landmarks: np.ndarray, moved: np.ndarray,
                      grid: int = _GRID) -> tuple[np.ndarray, np.ndarray, float]:
    """The backward displacement field of a face whose landmarks go from ``landmarks`` to
    ``moved`` (``(478, 2)``, photo pixels), on a ``grid x grid`` lattice over the face's box.

    Returns ``(box, field, factor)``: ``box = (x0, y0, x1, y1)`` in photo pixels, ``field``
    ``(grid, grid, 2)``, for each lattice point the offset to the pixel it takes its colour from,
    and the factor all of it is to be scaled by so that it does not fold (:func:`unfolding_factor`).
    The field is exactly zero beyond the outer anchor ring.
    """
    inner, outer = (_anchors(landmarks, ring) for ring in _ANCHOR_RINGS)
    still = np.concatenate([inner, outer])
    targets = np.concatenate([moved[CONTROL_POINTS], still])
    sources = np.concatenate([landmarks[CONTROL_POINTS], still])
    x0, y0 = outer.min(0)
    x1, y1 = outer.max(0)
    xs, ys = np.linspace(x0, x1, grid), np.linspace(y0, y1, grid)
    lattice = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    # in eye distances from the face's centre, so the smoothing means the same on every face
    centre = landmarks.mean(0)
    unit = max(eye_distance(landmarks), 1e-6)
    field = unit * (thin_plate_map((targets - centre) / unit, (sources - centre) / unit, (lattice - centre) / unit)
                    - (lattice - centre) / unit)
    # fade from the inner ring (full) to the outer ring (nothing), along rays from the centre
    fade = _ring_fade(lattice, centre, inner, outer)
    field = (field * fade[:, None]).reshape(grid, grid, 2)
    spacing = ((x1 - x0) / (grid - 1), (y1 - y0) / (grid - 1))
    return np.array([x0, y0, x1, y1]), field, unfolding_factor(field, spacing)


#: The backward map's area ratio (photo area taken per area drawn) may not fall below this. Small
#: positive ratios are stretches (an opening mouth draws its inside from the thin seam between
#: the lips); at 0 and below the map folds over itself and draws skin twice, mirrored.
MIN_AREA_RATIO = 0.02


def area_ratio(field: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """The Jacobian determinant of ``x -> x + field(x)`` on a lattice ``(G, G, 2)`` with
    ``spacing = (dx, dy)``: how much area each place takes from the photo."""
    dfx_dy, dfx_dx = np.gradient(field[..., 0], spacing[1], spacing[0])
    dfy_dy, dfy_dx = np.gradient(field[..., 1], spacing[1], spacing[0])
    return (1.0 + dfx_dx) * (1.0 + dfy_dy) - dfx_dy * dfy_dx


def unfolding_factor(field: np.ndarray, spacing: tuple[float, float], floor: float = MIN_AREA_RATIO) -> float:
    """The largest scale in (0, 1] of a displacement field that keeps every area ratio at least
    ``floor`` (1 when the field already does): an edit asking for more than the face can show
    without folding is done as far as it can be, not smeared."""
    if area_ratio(field, spacing).min() >= floor:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(12):
        middle = 0.5 * (low + high)
        if area_ratio(field * middle, spacing).min() >= floor:
            low = middle
        else:
            high = middle
    return low


def _ring_fade(points: np.ndarray, centre: np.ndarray, inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """1 inside the inner ring, 0 outside the outer ring, a smooth step between (per direction)."""
    angles = np.arctan2(*(points - centre).T[::-1])
    radius = np.linalg.norm(points - centre, axis=1)

    def ring_radius(ring: np.ndarray) -> np.ndarray:
        ring_angles = np.arctan2(*(ring - centre).T[::-1])
        order = np.argsort(ring_angles)
        ring_angles, ring_radii = ring_angles[order], np.linalg.norm(ring - centre, axis=1)[order]
        wrapped = np.concatenate([ring_angles - 2 * math.pi, ring_angles, ring_angles + 2 * math.pi])
        return np.interp(angles, wrapped, np.tile(ring_radii, 3))

    start, stop = ring_radius(inner), ring_radius(outer)
    t = np.clip((radius - start) / np.maximum(stop - start, 1e-6), 0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


def crop_landmarks(landmarks: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Photo-pixel landmarks ``(478, 2+)`` in crop widths of an aligned crop (``matrix``: photo -> crop)."""
    xy = landmarks[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    return (xy + 0.5) / size


def moved_landmarks(landmarks: np.ndarray, matrix: np.ndarray, size: int, shape: ShapeModel,
                    delta_aus: np.ndarray) -> np.ndarray:
    """Photo-pixel landmarks ``(478, 2)`` after an AU change: the shape model's displacement,
    defined in the crop convention (``matrix``: photo -> crop pixels of a ``size`` crop), taken
    back to the photo."""
    displacement_crop = shape.displacement(delta_aus) * size  # crop pixels
    to_photo = np.linalg.inv(matrix[:, :2])
    return landmarks[:, :2] + displacement_crop @ to_photo.T


#: Rec. 601 luminance weights of red, green and blue.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def log_luminance(pixels: np.ndarray) -> np.ndarray:
    """``log`` of Rec. 601 luminance in [0, 1] of RGB (or grey) 0-255 pixels, with a floor, so
    black is not minus infinity."""
    values = np.asarray(pixels, dtype=np.float32) / 255.0
    if values.ndim == 2:
        return np.log(values + 0.02)
    luminance = values[..., 0] * LUMA[0] + values[..., 1] * LUMA[1] + values[..., 2] * LUMA[2]
    return np.log(luminance + 0.02)


@dataclasses.dataclass(frozen=True)
class Fill:
    """What a warp paints where the photo had nothing to show: a ``log_luminance`` ``(h, w)``
    (:func:`log_luminance`) in a ``colour`` (RGB of luminance 1, or None to keep the warped
    pixels' own), over the warped pixels by a ``weight`` ``(h, w)`` in [0, 1]."""

    log_luminance: np.ndarray
    weight: np.ndarray
    colour: np.ndarray | None = None

    def paint(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` (float, 0-255, grey or RGB) with the fill painted over them."""
        luminance = np.clip(np.exp(self.log_luminance) - 0.02, 0.0, 1.0) * 255.0
        if pixels.ndim == 2 or self.colour is None:  # the pixels' own colours, brought to the luminance
            own = pixels if pixels.ndim == 2 else pixels @ LUMA
            ratio = luminance / np.maximum(own, 1.0)
            painted = pixels * (ratio if pixels.ndim == 2 else ratio[..., None])
        else:
            painted = luminance[..., None] * np.asarray(self.colour, np.float32)
        weight = self.weight if pixels.ndim == 2 else self.weight[..., None]
        return pixels * (1.0 - weight) + painted * weight


@dataclasses.dataclass(frozen=True)
class FaceWarp:
    """One face's warp in a photo: for each pixel of ``region`` (``x0, y0, x1, y1``), the offset
    ``(dx, dy)`` (photo pixels) to where it takes its colour from; optionally a ``gain`` that
    multiplies the warped pixels (the appearance model's ratio image, :mod:`ganimation.appearance`),
    and a :class:`Fill` painted over them (the inside of a mouth the edit opens). ``revealed`` ``(h, w)``
    in [0, 1], when not None, marks the pixels the photo never showed (the gap of a mouth that
    opens, :func:`mouth_inside`), where a fill belongs."""

    region: tuple[int, int, int, int]
    dx: np.ndarray
    dy: np.ndarray
    gain: np.ndarray | None = None
    fill: Fill | None = None
    revealed: np.ndarray | None = None

    @property
    def moving(self) -> np.ndarray:
        moving = (np.abs(self.dx) > 1e-3) | (np.abs(self.dy) > 1e-3)
        if self.gain is not None:
            moving |= np.abs(self.gain - 1.0) > 1e-3
        return moving if self.fill is None else moving | (self.fill.weight > 1e-3)

    def faded(self, weight: np.ndarray) -> FaceWarp:
        """The warp scaled pixel by pixel by ``weight`` (the region's shape, in [0, 1]); the gain
        fades in the log domain, to 1 where the weight is 0, and so does the fill's weight."""
        gain = None if self.gain is None else np.power(self.gain, weight).astype(np.float32)
        fill = (None if self.fill is None
                else dataclasses.replace(self.fill, weight=(self.fill.weight * weight).astype(np.float32)))
        revealed = None if self.revealed is None else (self.revealed * weight).astype(np.float32)
        return dataclasses.replace(self, dx=self.dx * weight, dy=self.dy * weight, gain=gain, fill=fill,
                                   revealed=revealed)

    def resample(self, photo: np.ndarray) -> np.ndarray:
        """The warped pixels of :attr:`region` (``photo`` resampled once, bicubic, times the gain)."""
        x0, y0, x1, y1 = self.region
        xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        patch = cv2.remap(photo, xs + self.dx, ys + self.dy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        if self.gain is None and self.fill is None:
            return patch
        shaded = patch.astype(np.float32)
        if self.gain is not None:
            gain = self.gain
            if patch.ndim == 3 and np.issubdtype(patch.dtype, np.integer):
                # more light cannot make a pixel lighter than white: a gain that would clip its
                # brightest channel is held there, so the colour keeps its hue (clipped channel by
                # channel, lightened skin turned orange)
                gain = np.minimum(gain, np.iinfo(patch.dtype).max / np.maximum(shaded.max(-1), 1.0))
            shaded *= gain if patch.ndim == 2 else gain[..., None]
        if self.fill is not None:
            shaded = self.fill.paint(shaded)
        if np.issubdtype(patch.dtype, np.integer):
            info = np.iinfo(patch.dtype)
            shaded = np.clip(np.rint(shaded), info.min, info.max)
        return shaded.astype(patch.dtype)

    def write(self, patch: np.ndarray, into: np.ndarray) -> np.ndarray:
        """``into`` with the moving pixels of a :meth:`resample` patch written in place."""
        x0, y0, x1, y1 = self.region
        moving = self.moving
        into[y0:y1, x0:x1][moving] = patch[moving]
        return into

    def apply(self, photo: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
        """``photo`` warped, written into ``into`` (a copy of ``photo`` by default); pixels that
        do not move are left as ``into`` has them."""
        return self.write(self.resample(photo), photo.copy() if into is None else into)


def plan_warp(photo_shape: tuple[int, ...], landmarks: np.ndarray, moved: np.ndarray) -> FaceWarp | None:
    """The warp that takes one face's landmarks to ``moved`` (``(478, 2)`` photo pixels each) in a
    photo of ``photo_shape``, or None when nothing would move.

    Only pixels inside the face's outer anchor ring can move; when the landmarks do not move at
    all, nothing does (the zero edit returns the photo bit for bit).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)[:, :2]
    moved = np.asarray(moved, dtype=np.float64)[:, :2]
    if np.abs(moved - landmarks).max(initial=0.0) < 1e-3:
        return None
    box, field, factor = face_displacement(landmarks, moved)
    field = field * factor
    height, width = photo_shape[:2]
    x0, y0 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x1, y1 = min(width, int(math.ceil(box[2])) + 1), min(height, int(math.ceil(box[3])) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    # each pixel's place on the lattice, and the field read there
    grid = field.shape[0]
    gx = ((xs - box[0]) / max(box[2] - box[0], 1e-6) * (grid - 1)).astype(np.float32)
    gy = ((ys - box[1]) / max(box[3] - box[1], 1e-6) * (grid - 1)).astype(np.float32)
    dx, dy = (cv2.remap(np.ascontiguousarray(field[..., axis], dtype=np.float32), gx, gy, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0) for axis in (0, 1))
    # the lips where the warp really takes them (scaled back with the field where it would fold)
    revealed = mouth_inside(dx, dy, (x0, y0), landmarks, landmarks + factor * (moved - landmarks))
    warp = FaceWarp((x0, y0, x1, y1), dx, dy, revealed=revealed)
    return warp if warp.moving.any() else None


#: The inner lips (MediaPipe mesh) from the face's right mouth corner to its left, upper and lower.
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
#: Both, in order around the mouth's opening.
INNER_LIP_CONTOUR = UPPER_INNER_LIP + LOWER_INNER_LIP[-2:0:-1]
#: Where along the mouth (0: one inner corner, 1: the other) the lips' profiles are sampled.
_PROFILE = np.linspace(0.0, 1.0, 33)
#: The gap a mouth opens blends into the lips' halves over this many pixels.
_GAP_EDGE = 1.5


def _lip_profiles(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The mouth's frame of landmarks ``points``: its inner corners' origin, the unit vectors along
    and across the mouth (downwards), each inner lip's depth ``(across)`` sampled at ``_PROFILE``
    places along the mouth, and the mouth's width."""
    origin, end = points[UPPER_INNER_LIP[0]], points[UPPER_INNER_LIP[-1]]
    width = max(float(np.linalg.norm(end - origin)), 1e-6)
    along = (end - origin) / width
    across = np.array([-along[1], along[0]])
    profiles = []
    for lip in (UPPER_INNER_LIP, LOWER_INNER_LIP):
        offsets = points[list(lip)] - origin
        position, depth = offsets @ along / width, offsets @ across
        order = np.argsort(position)
        profiles.append(np.interp(_PROFILE, position[order], depth[order]))
    return origin, along, across, np.stack(profiles), width


def mouth_inside(dx: np.ndarray, dy: np.ndarray, corner: tuple[int, int], landmarks: np.ndarray,
                 moved: np.ndarray) -> np.ndarray | None:
    """Redraw the inside of a mouth that opens, in place in the backward offsets ``dx``, ``dy`` of a
    region whose top-left pixel is ``corner``; return where the mouth opened a gap the photo never
    showed (the region's shape, 0..1), or None when it opened none.

    A spline stretches what lies between the lips evenly: the teeth of a smile, asked to drop the
    jaw, grow into long stripes. But teeth do not stretch. Here what the photo shows inside the
    lips keeps its size and goes with the lip it lies against, its upper half with the upper lip
    and its lower half with the lower lip. Only the gap that opens between them is new: it is drawn
    from the line where the halves met (the seam of closed lips, or where the teeth meet), and an
    appearance model paints over it (:mod:`ganimation.appearance`). Where the mouth closes
    instead, the inside is squeezed evenly, as the spline does.
    """
    landmarks, moved = np.asarray(landmarks, np.float64)[:, :2], np.asarray(moved, np.float64)[:, :2]
    polygon = np.round(moved[list(INNER_LIP_CONTOUR)] - np.asarray(corner, np.float64)).astype(np.int32)
    inside = np.zeros(dx.shape, np.uint8)
    cv2.fillPoly(inside, [polygon], 1)
    rows, columns = np.nonzero(inside)
    if rows.size == 0:
        return None
    origin, along, across, (upper, lower), width = _lip_profiles(landmarks)
    origin_to, along_to, across_to, (upper_to, lower_to), width_to = _lip_profiles(moved)
    pixels = np.stack([columns + corner[0], rows + corner[1]], axis=1).astype(np.float64)
    offsets = pixels - origin_to
    position = np.clip(offsets @ along_to / width_to, 0.0, 1.0)
    depth_to = offsets @ across_to

    def at(profile: np.ndarray) -> np.ndarray:
        return np.interp(position, _PROFILE, profile)

    top, gap = at(upper), np.maximum(at(lower) - at(upper), 0.0)
    top_to, gap_to = at(upper_to), np.maximum(at(lower_to) - at(upper_to), 1e-6)
    below_top = np.clip(depth_to - top_to, 0.0, gap_to)
    squeezed = top + below_top * np.minimum(gap / gap_to, 1.0)
    half = gap / 2.0
    opened = np.where(below_top <= half, top + below_top,
                      np.where(below_top >= gap_to - half, top + gap - (gap_to - below_top), top + half))
    opens = gap_to > gap
    depth = np.where(opens, opened, squeezed)
    sources = origin + np.outer(position * width, along) + np.outer(depth, across)
    dx[rows, columns] = (sources[:, 0] - pixels[:, 0]).astype(dx.dtype)
    dy[rows, columns] = (sources[:, 1] - pixels[:, 1]).astype(dy.dtype)
    into_gap = np.minimum(below_top - half, gap_to - half - below_top)
    new = np.where(opens, np.clip(into_gap / _GAP_EDGE + 0.5, 0.0, 1.0), 0.0)
    if not (new > 1e-3).any():
        return None
    revealed = np.zeros(dx.shape, np.float32)
    revealed[rows, columns] = new
    return revealed


def warp_photo(photo: np.ndarray, landmarks: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """A copy of ``photo`` with one face's landmarks moved (:func:`plan_warp`)."""
    plan = plan_warp(photo.shape, landmarks, moved)
    return photo.copy() if plan is None else plan.apply(photo)
