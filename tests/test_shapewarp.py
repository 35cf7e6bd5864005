"""The shape model and the warp that moves a face along it (ganimation.shapewarp), its place in
model files, and the photo edits that use it (ganimation.animation.PhotoAnimator).

Synthetic landmark data with a known basis checks the fit; coordinate photos (each pixel holds
its own x and y) check that the warp moves colour the right way; the bundled model on the
sample photo checks the whole edit, bit for bit where nothing may change.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ganimation import shapewarp as S
from ganimation.animation import FaceEdit, PhotoAnimator, edit_video_frames, paste_edits, shape_warp, warped_face
from ganimation.aureader import read_aus
from ganimation.aus import NUM_AUS, au_index, expression_aus
from ganimation.checkpoint import CheckpointError, read_model_file, read_safetensors, save_model_file
from ganimation.config import ModelConfig
from ganimation.faces import align_face, paste_back
from ganimation.inference import GANimation
from ganimation.networks import Generator

from support import CachedDetector, tiny_model_file

NOT_IRIS = np.setdiff1d(np.arange(S.NUM_LANDMARKS), S.IRIS)


@pytest.fixture(scope="module")
def mean_face(bundled: GANimation) -> np.ndarray:
    """A realistic mean face (478, 2) in crop widths: the bundled model's."""
    assert bundled.shape is not None
    return bundled.shape.mean


def coordinate_photo(size: int) -> np.ndarray:
    """A float32 (size, size, 2) "photo" whose every pixel holds its own (x, y)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack([xs, ys], axis=-1)


def sample_at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of a float32 (H, W, C) image at photo points (K, 2)."""
    map_x = np.ascontiguousarray(points[:, :1], dtype=np.float32)
    map_y = np.ascontiguousarray(points[:, 1:], dtype=np.float32)
    return np.stack([cv2.remap(np.ascontiguousarray(image[..., c]), map_x, map_y, cv2.INTER_LINEAR)[:, 0]
                     for c in range(image.shape[-1])], axis=1)


def beyond_the_warp(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Photo pixels beyond a face's outer anchor ring (the face oval pushed out from the
    landmarks' centre), which no warp of that face may touch. The ring is taken 5 % wider for the
    lattice's bilinear interpolation, which may carry a trace of the fade a cell beyond it."""
    ring = S._ANCHOR_RINGS[-1] * 1.05
    landmarks = np.asarray(landmarks)[:, :2]
    oval = landmarks[list(S.FACE_OVAL)]
    centre = landmarks.mean(0)
    polygon = np.round(centre + ring * (oval - centre)).astype(np.int32)
    inside = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(inside, [polygon], 1)
    return ~inside.astype(bool)


def far_from_the_sample_face(shape: tuple[int, ...]) -> np.ndarray:
    """Pixels well away from the astronaut's face in the sample photo."""
    far = np.ones(shape[:2], bool)
    far[0:300, 80:400] = False
    return far


def photo_face(mean_face: np.ndarray, scale: float = 300.0, offset: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """The mean face placed in a 512 px photo: its landmarks in photo pixels and the photo -> crop
    matrix of a 64 px crop that shows it at the mean face's place (to half a pixel)."""
    size = 64
    landmarks = mean_face * scale + offset
    matrix = np.array([[size / scale, 0.0, -offset * size / scale], [0.0, size / scale, -offset * size / scale]])
    return landmarks, matrix


def au_delta(**values: float) -> np.ndarray:
    delta = np.zeros(NUM_AUS)
    for name, value in values.items():
        delta[au_index(name)] = value
    return delta


# ---------------------------------------------------------------------------------------------
# The shape model and its fit
# ---------------------------------------------------------------------------------------------


def synthetic_faces(mean_face: np.ndarray, count: int = 300, seed: int = 1):
    """Landmarks built from a known basis (zero outside each AU's region, and at the nose tip
    and outer eye corners so that the pose reading is exactly yaw and pitch), a yaw correlated
    with AU12, a pitch, irises that follow AU05 (which the fit must ignore) and a little noise.

    Returns (landmarks, aus, true basis, true neutral face). The data are centred so that their
    mean face is ``mean_face`` and the regions the fit finds are ``au_regions(mean_face)``.
    """
    rng = np.random.default_rng(seed)
    regions = S.au_regions(mean_face)
    basis = rng.normal(0.0, 0.01, (NUM_AUS, S.NUM_LANDMARKS, 2)) * regions.T[..., None]
    basis[:, [1, 33, 263]] = 0.0
    aus = rng.uniform(0.0, 1.0, (count, NUM_AUS))
    eye_distance = np.linalg.norm(mean_face[263] - mean_face[33])
    yaw = 0.3 * (aus[:, au_index("AU12")] - 0.5) + rng.normal(0.0, 0.1, count)
    pitch = rng.normal(0.0, 0.1, count)
    yaw, pitch = yaw - yaw.mean(), pitch - pitch.mean()
    turn, nod = (rng.normal(0.0, 0.02, (S.NUM_LANDMARKS, 2)) for _ in range(2))
    turn[[33, 263]] = nod[[33, 263]] = 0.0
    turn[1], nod[1] = (eye_distance, 0.0), (0.0, eye_distance)
    iris_lift = np.zeros((S.NUM_LANDMARKS, 2))
    iris_lift[S.IRIS] = (0.0, 0.05)
    neutral = mean_face - np.einsum("k,kld->ld", aus.mean(0), basis)
    noise = rng.normal(0.0, 1e-4, (count, S.NUM_LANDMARKS, 2))
    noise -= noise.mean(0)  # so the data's mean face is exactly mean_face (regions do not flip)
    landmarks = (neutral + np.einsum("nk,kld->nld", aus, basis) + yaw[:, None, None] * turn
                 + pitch[:, None, None] * nod + aus[:, au_index("AU05"), None, None] * iris_lift + noise)
    assert np.array_equal(S.au_regions(landmarks.mean(0)), regions)  # the test's own premise
    return landmarks, aus, basis, neutral


def test_fit_recovers_a_known_basis_with_pose_held_apart(mean_face: np.ndarray) -> None:
    landmarks, aus, true_basis, neutral = synthetic_faces(mean_face)
    fitted = S.fit_shape_model(landmarks, aus)
    regions = S.au_regions(mean_face).T  # (17, 478)
    assert fitted.basis.shape == (NUM_AUS, S.NUM_LANDMARKS, 2) and fitted.mean.shape == (S.NUM_LANDMARKS, 2)
    # the yaw goes with AU12 in these faces: a fit that did not hold pose apart would be off by ~0.1
    assert np.abs(fitted.basis - true_basis)[regions].max() < 1e-3
    assert np.abs(fitted.basis[au_index("AU12")] - true_basis[au_index("AU12")]).max() < 1e-3
    assert (fitted.basis[~regions] == 0.0).all()
    assert (fitted.basis[:, S.IRIS] == 0.0).all()  # though the irises moved with AU05 in the data
    # the mean is the neutral face (zero AUs, average pose)
    assert np.abs(fitted.mean[NOT_IRIS] - neutral[NOT_IRIS]).max() < 1e-3


def test_fit_within_groups_ignores_resting_shapes_read_as_aus(mean_face: np.ndarray) -> None:
    """People whose resting face the reader reads as an AU (here: a resting AU04 that goes with
    a lower brow line) bias a fit across people; the fit within each person's photos does not."""
    landmarks, aus, true_basis, _ = synthetic_faces(mean_face, count=600, seed=3)
    rng = np.random.default_rng(4)
    people = np.repeat(np.arange(60), 10)
    resting = rng.uniform(0.0, 1.0, 60)[people]  # each person's resting AU04 reading ...
    brows = np.zeros((S.NUM_LANDMARKS, 2))
    brows[S.au_regions(mean_face)[:, au_index("AU04")]] = (0.0, 0.03)  # ... with low-set brows
    biased_aus = aus.copy()
    biased_aus[:, au_index("AU04")] += resting
    biased = landmarks + (resting - resting.mean())[:, None, None] * brows
    regions = S.au_regions(mean_face).T
    across = S.fit_shape_model(biased, biased_aus)
    within = S.fit_shape_model(biased, biased_aus, groups=[f"person {p}" for p in people])
    error_across = np.abs(across.basis - true_basis)[regions].max()
    error_within = np.abs(within.basis - true_basis)[regions].max()
    assert error_across > 0.005 and error_within < 1e-3, (error_across, error_within)
    with pytest.raises(ValueError, match="group names"):
        S.fit_shape_model(biased, biased_aus, groups=["one"] * 10)
    with pytest.raises(ValueError, match="groups of two or more"):
        S.fit_shape_model(biased, biased_aus, groups=[str(i) for i in range(600)])


def test_fit_refuses_too_few_faces_and_wrong_shapes(mean_face: np.ndarray) -> None:
    landmarks, aus, _, _ = synthetic_faces(mean_face, count=120)
    needed = 4 * (NUM_AUS + 4)
    S.fit_shape_model(landmarks[:needed], aus[:needed])  # just enough
    with pytest.raises(ValueError, match=f"need at least {needed} faces.*got {needed - 1}"):
        S.fit_shape_model(landmarks[:needed - 1], aus[:needed - 1])
    with pytest.raises(ValueError, match="expected landmarks"):
        S.fit_shape_model(landmarks[:, :468], aus)
    with pytest.raises(ValueError, match="expected landmarks"):
        S.fit_shape_model(landmarks, aus[:, :16])
    with pytest.raises(ValueError, match="expected landmarks"):
        S.fit_shape_model(landmarks, aus[:-1])
    with pytest.raises(ValueError, match="expected landmarks"):
        S.fit_shape_model(landmarks[..., :1], aus)


def test_shape_model_checks_itself_and_is_linear(mean_face: np.ndarray) -> None:
    basis = np.random.default_rng(2).normal(0, 0.01, (NUM_AUS, S.NUM_LANDMARKS, 2))
    model = S.ShapeModel(mean_face, basis)
    assert np.array_equal(model.displacement(au_delta(AU26=1.0)), basis[au_index("AU26")])
    assert np.allclose(model.displacement(au_delta(AU01=0.5, AU12=-0.25)),
                       0.5 * basis[au_index("AU01")] - 0.25 * basis[au_index("AU12")])
    assert (model.displacement(np.zeros(NUM_AUS)) == 0).all()
    with pytest.raises(ValueError, match="expected mean"):
        S.ShapeModel(mean_face, basis[:16])
    with pytest.raises(ValueError, match="expected mean"):
        S.ShapeModel(mean_face[:468], basis)
    broken = basis.copy()
    broken[3, 7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        S.ShapeModel(mean_face, broken)


def test_au_regions_follow_the_face(mean_face: np.ndarray) -> None:
    regions = S.au_regions(mean_face)
    assert regions.shape == (S.NUM_LANDMARKS, NUM_AUS) and regions.dtype == bool
    assert not regions[S.IRIS].any()
    mouth_corners, inner_brows, chin = (61, 291), (105, 334), 152
    for corner in mouth_corners:
        assert regions[corner, au_index("AU12")] and not regions[corner, au_index("AU01")]
    for brow in inner_brows:
        assert regions[brow, au_index("AU01")] and not regions[brow, au_index("AU12")]
    assert regions[chin, au_index("AU26")] and not regions[chin, au_index("AU02")]
    # the outline above the mouth is bone: no AU moves it
    eye_line = mean_face[[33, 263], 1].mean()
    upper_outline = [i for i in S.FACE_OVAL if mean_face[i, 1] < eye_line]
    assert upper_outline and not regions[upper_outline].any()


def test_pose_features_read_yaw_and_pitch(mean_face: np.ndarray) -> None:
    eye_distance = np.linalg.norm(mean_face[263] - mean_face[33])
    turned = mean_face.copy()
    turned[1] += (0.1 * eye_distance, -0.05 * eye_distance)  # nose tip right and up
    base, moved = S.pose_features(np.stack([mean_face, turned]))
    assert moved - base == pytest.approx([0.1, -0.05, moved[0] ** 2 - base[0] ** 2], abs=1e-9)
    assert moved[2] == pytest.approx(moved[0] ** 2)
    # the same in any place and at any size
    assert np.allclose(S.pose_features((3.0 * turned + 7.0)[None])[0], moved)


# ---------------------------------------------------------------------------------------------
# The spline, the area ratio and the unfolding factor
# ---------------------------------------------------------------------------------------------


def test_thin_plate_map_interpolates_its_control_points() -> None:
    rng = np.random.default_rng(3)
    targets = rng.uniform(-1.5, 1.5, (40, 2))
    sources = targets + 0.1 * np.stack([np.sin(3 * targets[:, 1]), np.cos(2 * targets[:, 0])], axis=1)
    mapped = S.thin_plate_map(targets, sources, targets)
    move = np.abs(sources - targets).max()
    assert np.abs(mapped - sources).max() < 1e-2 * move


def test_thin_plate_map_is_the_identity_without_moves_and_exact_for_affine_maps() -> None:
    rng = np.random.default_rng(4)
    targets = rng.uniform(-1.5, 1.5, (30, 2))
    points = rng.uniform(-3.0, 3.0, (200, 2))
    assert np.allclose(S.thin_plate_map(targets, targets, points), points, atol=1e-12, rtol=0)
    matrix, shift = np.array([[1.1, 0.2], [-0.15, 0.9]]), np.array([0.3, -0.2])
    affine = S.thin_plate_map(targets, targets @ matrix.T + shift, points)
    assert np.allclose(affine, points @ matrix.T + shift, atol=1e-8, rtol=0)


def test_area_ratio_is_the_jacobian_with_spacing_per_axis() -> None:
    dx, dy = 0.5, 2.0
    ys, xs = np.mgrid[0:16, 0:16].astype(np.float64)
    x, y = xs * dx, ys * dy
    a, b, c, d = 0.2, -0.1, 0.3, 0.4  # field (a x + b y, c x + d y)
    field = np.stack([a * x + b * y, c * x + d * y], axis=-1)
    ratio = S.area_ratio(field, (dx, dy))
    assert ratio.shape == (16, 16)
    assert np.allclose(ratio, (1 + a) * (1 + d) - b * c)
    assert np.allclose(S.area_ratio(np.zeros((8, 8, 2)), (1.0, 1.0)), 1.0)


def bump_field(amplitude: float, grid: int = 48, width: float = 5.0) -> np.ndarray:
    """A Gaussian push along x, centred on the lattice (unit spacing)."""
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float64) - grid / 2
    field = np.zeros((grid, grid, 2))
    field[..., 0] = amplitude * np.exp(-(xs ** 2 + ys ** 2) / (2 * width ** 2))
    return field


def test_unfolding_factor_keeps_a_gentle_field() -> None:
    field = bump_field(amplitude=1.0)
    assert S.area_ratio(field, (1.0, 1.0)).min() > 0.5
    assert S.unfolding_factor(field, (1.0, 1.0)) == 1.0


def test_unfolding_factor_scales_a_folding_field_as_little_as_it_can() -> None:
    field = bump_field(amplitude=20.0)  # steepest slope -20/5 * e^-0.5, about -2.4: it folds
    assert S.area_ratio(field, (1.0, 1.0)).min() < 0
    factor = S.unfolding_factor(field, (1.0, 1.0))
    assert 0.0 < factor < 1.0
    assert S.area_ratio(field * factor, (1.0, 1.0)).min() >= S.MIN_AREA_RATIO
    # the largest such scale, to the bisection's 12 halvings
    assert S.area_ratio(field * (factor + 2.0 ** -11), (1.0, 1.0)).min() < S.MIN_AREA_RATIO
    assert S.unfolding_factor(field, (1.0, 1.0), floor=0.5) < factor


# ---------------------------------------------------------------------------------------------
# Landmarks in the photo, and the warp
# ---------------------------------------------------------------------------------------------


def test_moved_landmarks_carry_the_crop_displacement_into_the_photo(bundled: GANimation) -> None:
    shape = bundled.shape
    angle, scale, size = 0.3, 0.4, 64
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.concatenate([rotation, [[-40.0], [12.0]]], axis=1)  # photo -> crop pixels
    landmarks = np.random.default_rng(5).uniform(100, 300, (S.NUM_LANDMARKS, 3))  # z is ignored
    delta = au_delta(AU02=0.7, AU26=0.5, AU12=-0.3)
    moved = S.moved_landmarks(landmarks, matrix, size, shape, delta)
    assert moved.shape == (S.NUM_LANDMARKS, 2)
    in_crop = S.crop_landmarks(moved, matrix, size) - S.crop_landmarks(landmarks, matrix, size)
    assert np.allclose(in_crop, shape.displacement(delta), atol=1e-9)
    assert np.array_equal(S.moved_landmarks(landmarks, matrix, size, shape, np.zeros(NUM_AUS)), landmarks[:, :2])


def test_nothing_moves_when_the_landmarks_stay(mean_face: np.ndarray, sample: np.ndarray) -> None:
    landmarks, _ = photo_face(mean_face)
    assert S.plan_warp(sample.shape, landmarks, landmarks.copy()) is None
    assert S.plan_warp(sample.shape, landmarks, landmarks + 1e-5) is None
    unchanged = S.warp_photo(sample, landmarks, landmarks.copy())
    assert unchanged is not sample and np.array_equal(unchanged, sample)


def test_warp_takes_each_moved_landmark_colour_from_where_it_was(bundled: GANimation, mean_face: np.ndarray) -> None:
    landmarks, matrix = photo_face(mean_face)
    moved = S.moved_landmarks(landmarks, matrix, 64, bundled.shape, au_delta(AU02=1.0, AU26=1.0))
    photo = coordinate_photo(512)
    warped = S.warp_photo(photo, landmarks, moved)
    controls = np.array(S.CONTROL_POINTS)
    moving = np.abs(moved - landmarks)[controls].max(1) > 2.0
    assert moving.sum() > 50 and np.abs(moved - landmarks).max() > 15
    # the backward map: the pixel where a landmark lands shows what was at the landmark before
    error = np.abs(sample_at(warped, moved[controls][moving]) - landmarks[controls][moving]).max(1)
    assert error.max() < 2.0 and np.median(error) < 0.3


def test_a_smile_does_not_push_the_chin_past_its_outline(bundled: GANimation, mean_face: np.ndarray) -> None:
    # the outline moves only with the jaw; what lies just below the chin's lowest point must still
    # come from below it (the neck), not be chin skin pushed out over it
    landmarks, matrix = photo_face(mean_face)
    moved = S.moved_landmarks(landmarks, matrix, 64, bundled.shape, au_delta(AU12=1.0, AU25=0.5))
    assert np.allclose(moved[152], landmarks[152])
    assert np.abs(moved - landmarks)[[17, 61, 291]].max() > 5  # the lips do move
    warped = S.warp_photo(coordinate_photo(512), landmarks, moved)
    below = landmarks[152] + np.array([[0.0, step] for step in (1.0, 3.0, 6.0, 10.0)])
    assert (sample_at(warped, below)[:, 1] >= landmarks[152, 1] - 0.5).all()


def test_warp_changes_only_the_face(bundled: GANimation, mean_face: np.ndarray, sample: np.ndarray) -> None:
    landmarks, matrix = photo_face(mean_face, scale=150.0, offset=150.0)
    moved = S.moved_landmarks(landmarks, matrix, 64, bundled.shape, au_delta(AU01=1.0, AU26=1.0))
    plan = S.plan_warp(sample.shape, landmarks, moved)
    assert plan is not None
    x0, y0, x1, y1 = plan.region
    assert plan.dx.shape == plan.dy.shape == (y1 - y0, x1 - x0)
    warped = plan.apply(sample)
    assert warped.shape == sample.shape and warped.dtype == sample.dtype
    changed = (warped != sample).any(-1)
    # beyond the outer anchor ring every pixel is the photo's, bit for bit; so is every pixel the
    # plan leaves still
    assert not changed[beyond_the_warp(landmarks, sample.shape)].any()
    still = np.ones(sample.shape[:2], bool)
    still[y0:y1, x0:x1] = ~plan.moving
    assert not changed[still].any()
    # around the chin and the brows, which moved by pixels, the photo changed
    for index in (152, 105, 334):
        assert np.linalg.norm(moved[index] - landmarks[index]) > 1.0
        x, y = np.round(moved[index]).astype(int)
        assert changed[y - 3:y + 4, x - 3:x + 4].mean() > 0.5
    assert np.array_equal(S.warp_photo(sample, landmarks, moved), warped)


def test_a_face_partly_outside_the_photo_warps_what_is_inside(bundled: GANimation, mean_face: np.ndarray,
                                                              sample: np.ndarray) -> None:
    landmarks, matrix = photo_face(mean_face, scale=300.0, offset=-80.0)
    moved = S.moved_landmarks(landmarks, matrix, 64, bundled.shape, au_delta(AU25=1.0, AU26=1.0))
    plan = S.plan_warp(sample.shape, landmarks, moved)
    assert plan is not None and plan.region[:2] == (0, 0)
    warped = plan.apply(sample)
    assert warped.shape == sample.shape
    changed = (warped != sample).any(-1)
    assert changed.any() and not changed[beyond_the_warp(landmarks, sample.shape)].any()


def test_a_translated_face_is_a_shift(mean_face: np.ndarray) -> None:
    landmarks, _ = photo_face(mean_face, scale=200.0, offset=150.0)
    photo = coordinate_photo(512)
    warped = S.warp_photo(photo, landmarks, landmarks + (4.0, -3.0))
    nose_tip = np.round(landmarks[1]).astype(int)
    x, y = nose_tip
    assert np.allclose(warped[y - 10:y + 10, x - 10:x + 10], photo[y - 10:y + 10, x - 10:x + 10] - (4.0, -3.0),
                       atol=0.05)


def test_face_warp_fades_and_writes_into(bundled: GANimation, mean_face: np.ndarray, sample: np.ndarray) -> None:
    landmarks, matrix = photo_face(mean_face, scale=150.0, offset=150.0)
    moved = S.moved_landmarks(landmarks, matrix, 64, bundled.shape, au_delta(AU26=1.0))
    plan = S.plan_warp(sample.shape, landmarks, moved)
    nothing = plan.faded(np.zeros_like(plan.dx))
    assert not nothing.moving.any() and np.array_equal(nothing.apply(sample), sample)
    half = plan.faded(np.full_like(plan.dx, 0.5))
    assert np.allclose(half.dx, plan.dx * 0.5) and np.allclose(half.dy, plan.dy * 0.5)
    canvas = np.zeros_like(sample)
    written = plan.apply(sample, into=canvas)
    assert written is canvas
    x0, y0, x1, y1 = plan.region
    inside = np.zeros(sample.shape[:2], bool)
    inside[y0:y1, x0:x1] = plan.moving
    assert (canvas[~inside] == 0).all()  # untouched where nothing moves
    assert np.array_equal(canvas[inside], plan.apply(sample)[inside])


# ---------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------


def tiny_generator() -> tuple[Generator, ModelConfig]:
    """The 32 px generator of ``support.tiny_model_file``, seeded apart from the test's RNG."""
    config = ModelConfig(image_size=32, generator_channels=8, generator_residual_blocks=1,
                         discriminator_channels=8, discriminator_layers=3)
    state = torch.get_rng_state()
    torch.manual_seed(0)
    generator = Generator(config)
    torch.set_rng_state(state)
    return generator, config


def test_shape_model_round_trips_through_a_model_file(tmp_path: Path, bundled: GANimation) -> None:
    generator, config = tiny_generator()
    shape = bundled.shape
    path = save_model_file(tmp_path / "model.safetensors", generator, None, config, half=True,
                           shape=shape, extra={"generator_domain": "synthetic"})
    _, tensors, extra = read_model_file(path)
    assert extra["generator_domain"] == "synthetic"
    assert tensors["shape.mean"].dtype == tensors["shape.basis"].dtype == torch.float32  # not halved
    assert tuple(tensors["shape.basis"].shape) == (NUM_AUS, S.NUM_LANDMARKS, 2)
    loaded = GANimation.load(path, device="cpu")
    assert loaded.shape is not None
    assert np.array_equal(loaded.shape.mean, shape.mean.astype(np.float32))
    assert np.array_equal(loaded.shape.basis, shape.basis.astype(np.float32))
    assert loaded.generator_domain == "synthetic" and loaded.paints_photos is False

    # the generator paints photos when its file does not say it learned drawn faces only...
    photo_trained = save_model_file(tmp_path / "photos.safetensors", generator, None, config, shape=shape)
    assert GANimation.load(photo_trained, device="cpu").paints_photos is True
    # ...and when there is no shape model to move faces instead
    no_shape = save_model_file(tmp_path / "plain.safetensors", generator, None, config,
                               extra={"generator_domain": "synthetic"})
    plain = GANimation.load(no_shape, device="cpu")
    assert plain.shape is None and plain.paints_photos is True
    assert not any(key.startswith("shape.") for key in read_model_file(no_shape)[1])


def test_the_bundled_model_carries_a_shape_model(bundled: GANimation) -> None:
    assert bundled.shape is not None and bundled.generator_domain == "synthetic"
    assert bundled.paints_photos is False
    assert np.abs(bundled.shape.basis).max() > 0.01  # it moves something
    assert (bundled.shape.basis[:, S.IRIS] == 0).all()


def rewritten_model_file(tmp_path: Path, name: str, **shape_tensors: torch.Tensor) -> Path:
    """A valid tiny model file with ``shape_tensors`` (``mean``, ``basis``) added."""
    tensors, metadata = read_safetensors(tiny_model_file(tmp_path / "tiny.safetensors"), "model file")
    tensors.update({f"shape.{key}": value for key, value in shape_tensors.items()})
    path = tmp_path / name
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("case, message", [
    ("wrong_basis_shape", "expected mean \\(478, 2\\) and basis \\(17, 478, 2\\)"),
    ("nan_basis", "NaN"),
    ("mean_only", "without shape.basis"),
    ("basis_only", "without shape.mean"),
])
def test_a_broken_shape_model_is_a_checkpoint_error_naming_the_file(tmp_path: Path, bundled: GANimation,
                                                                   case: str, message: str) -> None:
    mean = torch.from_numpy(bundled.shape.mean.astype(np.float32))
    basis = torch.from_numpy(bundled.shape.basis.astype(np.float32))
    tensors = {
        "wrong_basis_shape": {"mean": mean, "basis": basis[:16]},
        "nan_basis": {"mean": mean, "basis": torch.where(torch.arange(2) == 1, torch.nan, basis)},
        "mean_only": {"mean": mean},
        "basis_only": {"basis": basis},
    }[case]
    path = rewritten_model_file(tmp_path, f"{case}.safetensors", **tensors)
    for read in (read_model_file, lambda source: GANimation.load(source, device="cpu")):
        with pytest.raises(CheckpointError, match=message) as raised:
            read(path)
        assert f"{case}.safetensors" in str(raised.value)


def test_a_tiny_model_file_has_no_shape_model(tmp_path: Path) -> None:
    model = GANimation.load(tiny_model_file(tmp_path / "tiny.safetensors"), device="cpu")
    assert model.shape is None and model.paints_photos is True


# ---------------------------------------------------------------------------------------------
# Photo edits
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_generator(monkeypatch: pytest.MonkeyPatch, bundled: GANimation) -> GANimation:
    """The bundled model, failing the test if its generator is asked to edit anything."""
    def refuse(*args, **kwargs):
        pytest.fail("the generator ran on a photo although the model does not paint photos")

    monkeypatch.setattr(bundled, "animate_pairs", refuse)
    monkeypatch.setattr(bundled, "animate_batch", refuse)
    return bundled


def test_editing_toward_the_face_own_aus_returns_the_photo(no_generator: GANimation, sample: np.ndarray) -> None:
    animator = PhotoAnimator(no_generator, detector=CachedDetector())
    aligned = animator.align(sample)
    assert len(aligned) == 1 and aligned[0].face.mesh is not None
    own = animator.source_aus(aligned[0])
    assert shape_warp(no_generator, sample.shape, aligned[0], own) is None
    edit = animator.edit(sample, own, aligned=aligned)
    assert edit.image is not sample and np.array_equal(edit.image, sample)
    toward = animator.toward_expression(aligned, expression_aus("surprise"), 0.0)
    assert np.array_equal(animator.edit(sample, toward, aligned=aligned).image, sample)
    first = next(iter(animator.interpolation(sample, expression_aus("surprise"), 3, aligned=aligned)))
    assert np.array_equal(first, sample)


def test_surprise_moves_the_face_the_landmark_reader_sees_it(no_generator: GANimation, sample: np.ndarray) -> None:
    animator = PhotoAnimator(no_generator, detector=CachedDetector())
    aligned = animator.align(sample)
    before = read_aus(aligned[0].face.mesh)
    edit = animator.edit(sample, expression_aus("surprise"), aligned=aligned)
    assert edit.image.shape == sample.shape and edit.image.dtype == np.uint8
    changed = (edit.image != sample).any(-1)
    assert changed.sum() > 3000
    assert not changed[beyond_the_warp(aligned[0].face.mesh.landmarks, sample.shape)].any()
    assert not changed[far_from_the_sample_face(sample.shape)].any()
    # no generator output: the face's crop is the warped photo's, with no attention
    (face,) = edit.faces
    assert face.attention is None and edit.attention_map() is None
    assert np.array_equal(face.edited, align_face(edit.image, face.face, face.aligned.size).crop)
    assert not np.array_equal(face.edited, aligned[0].crop)
    after_faces = CachedDetector().detect(edit.image)
    assert len(after_faces) == 1
    after = read_aus(after_faces[0].mesh)
    # the jaw drop reads less than the brows: the reader takes the mouth's opening partly from
    # its inside, which the appearance model darkens (a dark mouth, where the warp alone showed
    # stretched teeth)
    for name, rise in (("AU01", 0.3), ("AU02", 0.3), ("AU26", 0.15)):
        assert after[au_index(name)] > before[au_index(name)] + rise, (name, before, after)


def test_the_photo_warp_is_the_planned_warp_held_within_a_mask(bundled: GANimation, sample: np.ndarray) -> None:
    aligned = PhotoAnimator(bundled, detector=CachedDetector()).align(sample)[0]
    mesh = aligned.face.mesh
    target = expression_aus("surprise")
    moved = S.moved_landmarks(mesh.landmarks, aligned.matrix, aligned.size, bundled.shape, target - read_aus(mesh))
    planned = S.plan_warp(sample.shape, mesh.landmarks, moved)
    warp = shape_warp(bundled, sample.shape, aligned, target)
    assert planned is not None and warp is not None and warp.region == planned.region
    # scaled by a weight in [0, 1]: in full at the face's middle, faded (to nothing) towards the edge
    for held, full in ((warp.dx, planned.dx), (warp.dy, planned.dy)):
        assert (np.abs(held) <= np.abs(full) + 1e-5).all()
    faded = (np.abs(warp.dx) < np.abs(planned.dx) - 0.05) | (np.abs(warp.dy) < np.abs(planned.dy) - 0.05)
    assert faded.any() and (planned.moving & ~warp.moving).any()
    x0, y0 = warp.region[:2]
    for index in (1, 13, 14):  # the nose tip and the inner lips
        x, y = np.round(mesh.landmarks[index, :2]).astype(int) - (x0, y0)
        assert warp.dx[y, x] == pytest.approx(planned.dx[y, x], abs=1e-4)
        assert warp.dy[y, x] == pytest.approx(planned.dy[y, x], abs=1e-4)


def test_a_zero_edit_with_the_critic_reader_returns_the_photo(no_generator: GANimation, sample: np.ndarray) -> None:
    animator = PhotoAnimator(no_generator, detector=CachedDetector(), reader="critic")
    aligned = animator.align(sample)
    toward = animator.toward_expression(aligned, expression_aus("surprise"), 0.0)
    assert np.array_equal(animator.edit(sample, toward, aligned=aligned).image, sample)


def test_frames_follow_the_shape_model(no_generator: GANimation, sample: np.ndarray) -> None:
    animator = PhotoAnimator(no_generator, detector=CachedDetector())
    aligned = animator.align(sample)
    own = animator.source_aus(aligned[0])
    target = expression_aus("surprise")
    frames = list(animator.frames(sample, np.stack([own, target]), aligned=aligned))
    assert np.array_equal(frames[0], sample)
    assert np.array_equal(frames[1], animator.edit(sample, target, aligned=aligned).image)


def test_video_frames_follow_the_shape_model(no_generator: GANimation, sample: np.ndarray) -> None:
    still = list(edit_video_frames(no_generator, [sample] * 2, lambda index, own: own, detector=CachedDetector(),
                                   own_aus=True))
    assert len(still) == 2 and all(np.array_equal(frame, sample) for frame in still)
    surprised = list(edit_video_frames(no_generator, [sample] * 2, lambda index: expression_aus("surprise"),
                                       detector=CachedDetector()))
    for frame in surprised:
        changed = (frame != sample).any(-1)
        assert changed.sum() > 3000 and not changed[far_from_the_sample_face(sample.shape)].any()


class BrighteningModel:
    """A 32 px "model" without a shape model: brightens every crop by 40 grey levels."""

    image_size = 32
    shape = None
    paints_photos = True
    discriminator = None

    def animate_pairs(self, crops, aus_list, batch_size: int = 16):
        from ganimation.inference import AnimationResult

        results = []
        for crop, aus in zip(crops, aus_list):
            image = np.clip(crop.astype(np.int16) + 40, 0, 255).astype(np.uint8)
            results.append(AnimationResult(image, np.full(crop.shape[:2], 0.5, np.float32), image, np.asarray(aus)))
        return results


def test_a_model_without_shape_model_does_not_warp(sample: np.ndarray) -> None:
    model = BrighteningModel()
    animator = PhotoAnimator(model, detector=CachedDetector())
    aligned = animator.align(sample)
    target = expression_aus("surprise")
    assert shape_warp(model, sample.shape, aligned[0], target) is None
    assert warped_face(sample, aligned[0], None) is aligned[0]
    edit = animator.edit(sample, target, aligned=aligned)
    expected = paste_back(sample, aligned[0], np.clip(aligned[0].crop.astype(np.int16) + 40, 0, 255).astype(np.uint8),
                          blend="residual")
    assert np.array_equal(edit.image, expected)
    assert edit.faces[0].attention is not None
    assert np.array_equal(edit.faces[0].aligned.crop, aligned[0].crop)  # the crop of the unwarped photo


def test_a_tiny_model_file_edits_as_the_paper_does(tmp_path: Path, sample: np.ndarray) -> None:
    model = GANimation.load(tiny_model_file(tmp_path / "tiny.safetensors"), device="cpu")
    animator = PhotoAnimator(model, detector=CachedDetector())
    aligned = animator.align(sample)
    target = expression_aus("surprise")
    edit = animator.edit(sample, target, aligned=aligned)
    expected = paste_back(sample, aligned[0], model.animate(aligned[0].crop, target).image, blend="residual")
    assert np.array_equal(edit.image, expected)
    assert edit.faces[0].attention is not None


def test_a_photo_trained_generator_paints_the_warped_face(bundled: GANimation, sample: np.ndarray) -> None:
    generator, config = tiny_generator()
    model = GANimation(generator, None, config, device="cpu", shape=bundled.shape)
    assert model.paints_photos
    animator = PhotoAnimator(model, detector=CachedDetector())
    aligned = animator.align(sample)
    target = expression_aus("surprise")
    warp = shape_warp(model, sample.shape, aligned[0], target)
    assert warp is not None
    moved = warped_face(sample, aligned[0], warp)
    assert np.array_equal(moved.crop, align_face(warp.apply(sample), aligned[0].face, model.image_size).crop)
    assert not np.array_equal(moved.crop, aligned[0].crop)
    painted = model.animate(moved.crop, target)
    edit = animator.edit(sample, target, aligned=aligned)
    assert np.array_equal(edit.image, paste_edits(sample, [FaceEdit(moved, warp, warp.resample(sample), painted)],
                                                  "residual"))
    assert edit.faces[0].attention is not None
    assert np.array_equal(edit.faces[0].aligned.crop, moved.crop)


# ---------------------------------------------------------------------------------------------
# The inside of a mouth that opens
# ---------------------------------------------------------------------------------------------


def mouth_column(landmarks: np.ndarray) -> tuple[float, float, float]:
    """The mouth's middle column: its x and the inner lips' y there (upper, lower)."""
    return float(landmarks[[13, 14], 0].mean()), float(landmarks[13, 1]), float(landmarks[14, 1])


def test_an_opening_mouth_keeps_its_teeth_and_opens_a_gap(bundled: GANimation, mean_face: np.ndarray) -> None:
    landmarks, matrix = photo_face(mean_face)
    # a mouth a little open (teeth show), asked to drop its jaw
    own = S.moved_landmarks(landmarks, matrix, 64, bundled.shape, au_delta(AU25=0.5))
    moved = S.moved_landmarks(own, matrix, 64, bundled.shape, au_delta(AU25=0.5, AU26=1.0))
    x, top, bottom = mouth_column(own)
    _, top_to, bottom_to = mouth_column(moved)
    gap, gap_to = bottom - top, bottom_to - top_to
    assert gap > 4 and gap_to > gap + 8
    plan = S.plan_warp((512, 512, 3), own, moved)
    assert plan is not None and plan.revealed is not None
    x0, y0 = plan.region[:2]
    column = int(round(x)) - x0
    ys = np.arange(int(np.ceil(top_to)) + 1, int(np.floor(bottom_to)) - 1)
    sources = ys + y0 + plan.dy[ys - y0, column]
    below_upper = ys + y0 - top_to
    # the upper half of what the photo showed goes with the upper lip, unstretched...
    upper = below_upper < gap / 2 - 1
    np.testing.assert_allclose(sources[upper] - top, below_upper[upper], atol=0.6)
    # ...the lower half with the lower lip...
    above_lower = bottom_to - (ys + y0)
    lower = above_lower < gap / 2 - 1
    np.testing.assert_allclose(bottom - sources[lower], above_lower[lower], atol=0.6)
    # ...and the gap between them is new: drawn from the line where the halves met, and marked
    middle = ~upper & ~lower & (below_upper > gap / 2 + 2) & (above_lower > gap / 2 + 2)
    assert middle.sum() >= 4
    assert np.ptp(sources[middle]) < 0.1 and abs(float(sources[middle].mean()) - (top + gap / 2)) < 1.5
    revealed = plan.revealed[ys - y0, column]
    halves = (below_upper < gap / 2 - 2.5) | (above_lower < gap / 2 - 2.5)  # clear of the gap's soft edge
    assert (revealed[middle] == 1.0).all() and halves.sum() >= 4 and (revealed[halves] == 0.0).all()
    assert plan.revealed[:, : max(column - 200, 1)].max(initial=0.0) == 0.0  # nothing beyond the mouth


def test_a_closing_mouth_reveals_nothing(bundled: GANimation, mean_face: np.ndarray) -> None:
    landmarks, matrix = photo_face(mean_face)
    own = S.moved_landmarks(landmarks, matrix, 64, bundled.shape, au_delta(AU25=1.0, AU26=0.5))
    moved = landmarks  # the mean face: lips together
    plan = S.plan_warp((512, 512, 3), own, moved)
    assert plan is not None and plan.revealed is None
    # what lies between the moved lips is squeezed from between the lips it had
    x, top, bottom = mouth_column(own)
    _, top_to, bottom_to = mouth_column(moved)
    x0, y0 = plan.region[:2]
    ys = np.arange(int(np.ceil(top_to)), int(np.floor(bottom_to)) + 1)
    sources = ys + plan.dy[ys - y0, int(round(x)) - x0]
    assert (sources >= top - 0.6).all() and (sources <= bottom + 0.6).all()


def test_a_fill_paints_luminance_in_a_colour_over_its_weight() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.uniform(20, 230, (6, 8, 3)).astype(np.float32)
    target = np.full((6, 8), np.log(0.25 + 0.02), np.float32)  # a quarter of white's luminance
    weight = np.zeros((6, 8), np.float32)
    weight[:, 4:] = 1.0
    red = np.array([1.4, 0.8, 0.7], np.float32)
    red /= red @ np.array([0.299, 0.587, 0.114], np.float32)  # luminance 1
    painted = S.Fill(target, weight, red).paint(pixels)
    np.testing.assert_array_equal(painted[:, :4], pixels[:, :4])  # weight 0: untouched
    np.testing.assert_allclose(painted[:, 4:], np.broadcast_to(0.25 * 255 * red, (6, 4, 3)), rtol=1e-5)
    # without a colour (and on grey pixels) the pixels keep theirs, brought to the luminance
    own = S.Fill(target, weight).paint(pixels)
    np.testing.assert_allclose(own[:, 4:] @ np.array([0.299, 0.587, 0.114]), 0.25 * 255, rtol=1e-4)
    ratio = own[:, 4:] / pixels[:, 4:]
    np.testing.assert_allclose(ratio[..., 0], ratio[..., 2], rtol=1e-5)
    grey = S.Fill(target, weight).paint(pixels[..., 0])
    np.testing.assert_allclose(grey[:, 4:], 0.25 * 255, rtol=1e-4)
