"""The appearance model (ganimation.appearance): the shape-free frame, the fit of per-AU shading,
its place in model files and warps, and the photo edit it shades.

Synthetic textures with a planted shading check the fit; a frame mapped onto itself checks the
warps between frames; the bundled model on the sample photo checks the whole edit.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ganimation import appearance as A
from ganimation import shapewarp as S
from ganimation.animation import PhotoAnimator, shape_warp
from ganimation.aureader import read_aus
from ganimation.aus import NUM_AUS, au_index, aus_from_mapping, expression_aus
from ganimation.checkpoint import CheckpointError, read_model_file, read_safetensors, save_model_file
from ganimation.inference import GANimation

from support import CachedDetector
from test_shapewarp import tiny_generator

SIZE = 32


@pytest.fixture(scope="module")
def reference(bundled: GANimation) -> np.ndarray:
    assert bundled.shape is not None
    return A.reference_shape(bundled.shape)


def planted_shading(reference: np.ndarray) -> np.ndarray:
    """``(17, SIZE, SIZE)`` log-luminance maps: AU25 darkens the mouth, AU04 the brows' middle."""
    maps = np.zeros((NUM_AUS, SIZE, SIZE), np.float32)
    mouth = np.round(reference[[13, 14]].mean(0) * SIZE - 0.5).astype(int)
    brows = np.round(reference[[9, 151]].mean(0) * SIZE - 0.5).astype(int)
    maps[au_index("AU25"), mouth[1] - 1:mouth[1] + 2, mouth[0] - 2:mouth[0] + 3] = -0.8
    maps[au_index("AU04"), brows[1] - 1:brows[1] + 2, brows[0] - 1:brows[0] + 2] = -0.4
    return maps


def test_fit_recovers_planted_shading_within_groups(reference: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(A, "_BASIS_BLUR", 1e-3)  # compare the raw fit
    monkeypatch.setattr(A, "_REGION_BLUR", 1e-3)
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 8)
    count = len(groups)
    aus = rng.uniform(0, 1, (count, NUM_AUS)) * (rng.uniform(size=(count, NUM_AUS)) < 0.4)
    # each person's skin is darker or lighter, some have a beard, and the bearded smile more
    # often here: a fit across people would learn the beard as AU12's shading
    skin = rng.normal(0, 0.5, 60)[groups]
    beard = rng.uniform(0, 1, 60)[groups]
    aus[:, au_index("AU12")] = np.clip(0.2 + 0.6 * beard + rng.normal(0, 0.1, count), 0, 1)
    chin = np.zeros((SIZE, SIZE))
    chin_at = np.round(reference[152] * SIZE - 0.5).astype(int)  # the chin's tip
    chin[chin_at[1] - 3:chin_at[1], chin_at[0] - 3:chin_at[0] + 4] = -0.5
    planted = planted_shading(reference)
    # and the light changes from photo to photo, brighter and from the left where people smile
    brightness = rng.normal(0, 0.2, count) + 0.3 * aus[:, au_index("AU12")]
    sideways = rng.normal(0, 0.2, count) + 0.2 * aus[:, au_index("AU12")]
    ramp = np.linspace(-1, 1, SIZE)[None, None, :]
    textures = (skin[:, None, None] + beard[:, None, None] * chin + brightness[:, None, None] + sideways[:, None, None] * ramp
                + np.tensordot(aus, planted, axes=1) + rng.normal(0, 0.01, (count, SIZE, SIZE))).astype(np.float32)
    landmarks = np.repeat(reference[None], count, 0)
    model = A.fit_appearance_model(textures, landmarks, aus, reference, [str(g) for g in groups])
    assert model.basis.shape == (NUM_AUS, SIZE, SIZE) and model.size == SIZE
    for name in ("AU25", "AU04"):
        assert np.abs(model.basis[au_index(name)] - planted[au_index(name)]).max() < 0.05
    assert np.abs(model.basis[au_index("AU12")]).max() < 0.05  # neither the beard nor the light was learned
    # an AU shades only its part of the face: AU25 (mouth) nothing at the brows
    brows = np.round(reference[[9, 151]].mean(0) * SIZE - 0.5).astype(int)
    assert model.basis[au_index("AU25"), brows[1], brows[0]] == 0.0
    # a fit across people (all faces one group) takes the beard for AU12's shading
    pooled = A.fit_appearance_model(textures, landmarks, aus, reference, ["everyone"] * count)
    assert pooled.basis[au_index("AU12")].min() < -0.2


def test_fit_refuses_mismatched_inputs(reference: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected textures"):
        A.fit_appearance_model(np.zeros((10, SIZE, SIZE + 1)), np.zeros((10, 478, 2)), np.zeros((10, NUM_AUS)),
                               reference, ["a"] * 10)


def test_log_ratio_is_linear_clipped_and_zero_for_no_change(reference: np.ndarray) -> None:
    model = A.AppearanceModel(reference, planted_shading(reference) * 2.0)
    assert not model.log_ratio(np.zeros(NUM_AUS)).any()
    half = np.zeros(NUM_AUS)
    half[au_index("AU04")] = 0.5
    assert model.log_ratio(half).min() == pytest.approx(-0.4)
    lips_part = aus_from_mapping({"AU25": 0.6, "AU01": 1.0})  # AU25 at 0.6: -0.96; less than the clip
    assert model.log_ratio(lips_part).min() == pytest.approx(-0.96, abs=1e-5)
    assert model.log_ratio(np.full(NUM_AUS, 1.0)).min() == pytest.approx(-A.MAX_LOG_RATIO)
    with pytest.raises(ValueError, match="NaN"):
        A.AppearanceModel(reference, np.full((NUM_AUS, 4, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="basis"):
        A.AppearanceModel(reference, np.zeros((NUM_AUS, 4, 5), np.float32))


def test_frame_map_onto_itself_is_the_identity_and_follows_a_scale(reference: np.ndarray) -> None:
    points = reference * 100.0
    map_x, map_y = A.frame_map(points, points, (20.0, 20.0, 80.0, 80.0), (31, 31))
    xs = np.linspace(20, 80, 31)
    assert np.abs(map_x - xs[None, :]).max() < 0.05 and np.abs(map_y - xs[:, None]).max() < 0.05
    # the same face twice as large: every place maps to half its coordinates
    map_x, map_y = A.frame_map(points * 2.0, points, (40.0, 40.0, 160.0, 160.0), (31, 31))
    assert np.abs(map_x - xs[None, :]).max() < 0.05 and np.abs(map_y - xs[:, None]).max() < 0.05


def test_shape_free_of_a_crop_on_the_reference_is_its_log_luminance(reference: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    crop = np.repeat(rng.integers(0, 256, (SIZE, SIZE, 1), dtype=np.uint8), 3, axis=2)
    texture = A.shape_free(crop, reference, reference, size=SIZE)
    expected = np.log(crop[..., 0] / 255.0 + 0.02)
    assert texture.shape == (SIZE, SIZE)
    middle = slice(8, SIZE - 8)
    assert np.abs(texture[middle, middle] - expected[middle, middle]).max() < 0.05


def test_face_warp_gain_multiplies_fades_and_moves(sample: np.ndarray) -> None:
    region = (10, 20, 40, 60)
    still = np.zeros((40, 30), np.float32)
    gain = np.full((40, 30), 1.0, np.float32)
    gain[10:20, 5:15] = 0.5
    warp = S.FaceWarp(region, still, still, gain)
    assert warp.moving.sum() == 100  # the shaded pixels count as changed though none moves
    patch = warp.resample(sample)
    original = sample[20:60, 10:40]
    assert np.array_equal(patch[:10], original[:10])
    assert np.abs(patch[10:20, 5:15].astype(int) - np.rint(original[10:20, 5:15] * 0.5)).max() <= 1
    faded = warp.faded(np.zeros((40, 30), np.float32))
    assert not faded.moving.any() and np.array_equal(faded.resample(sample), original)
    half = warp.faded(np.full((40, 30), 0.5, np.float32))
    assert half.gain[15, 10] == pytest.approx(0.5**0.5)


def test_appearance_model_round_trips_through_a_model_file_in_half(tmp_path: Path, bundled: GANimation,
                                                                   reference: np.ndarray) -> None:
    generator, config = tiny_generator()
    interior = np.random.default_rng(0).normal(0, 0.5, (NUM_AUS + 1, SIZE, SIZE)).astype(np.float32)
    shading = A.AppearanceModel(reference, planted_shading(reference), interior)
    path = save_model_file(tmp_path / "model.safetensors", generator, None, config, half=True,
                           shape=bundled.shape, appearance=shading)
    _, tensors, _ = read_model_file(path)
    assert tensors["appearance.basis"].dtype == tensors["appearance.interior"].dtype == torch.float16
    assert tensors["appearance.reference"].dtype == torch.float32
    loaded = GANimation.load(path, device="cpu")
    assert loaded.appearance is not None
    assert np.allclose(loaded.appearance.basis, shading.basis, atol=1e-3)
    assert np.allclose(loaded.appearance.interior, interior, atol=2e-3)
    without = save_model_file(tmp_path / "without.safetensors", generator, None, config, shape=bundled.shape,
                              appearance=A.AppearanceModel(reference, planted_shading(reference)))
    assert GANimation.load(without, device="cpu").appearance.interior is None  # an older file: no painting
    assert np.allclose(loaded.appearance.reference, reference, atol=1e-6)
    plain = save_model_file(tmp_path / "plain.safetensors", generator, None, config, shape=bundled.shape)
    assert GANimation.load(plain, device="cpu").appearance is None

    # half an appearance model is a clear error naming the file
    tensors, metadata = read_safetensors(path, "model file")
    broken = {key: value for key, value in tensors.items() if key != "appearance.reference"}
    bad = tmp_path / "broken.safetensors"
    save_file(broken, str(bad), metadata=metadata)
    with pytest.raises(CheckpointError, match="broken.safetensors.*appearance.reference"):
        GANimation.load(bad, device="cpu")


def test_the_photo_edit_is_shaded_by_the_appearance_model(bundled: GANimation, sample: np.ndarray,
                                                          reference: np.ndarray) -> None:
    aligned = PhotoAnimator(bundled, detector=CachedDetector()).align(sample)[0]
    mesh = aligned.face.mesh
    target = expression_aus("surprise")
    shaded_model = GANimation(bundled.generator, None, bundled.config, shape=bundled.shape,
                              appearance=A.AppearanceModel(reference, planted_shading(reference)))
    shaded_model.generator_domain = bundled.generator_domain
    plain_model = GANimation(bundled.generator, None, bundled.config, shape=bundled.shape)
    plain_model.generator_domain = bundled.generator_domain
    shaded = shape_warp(shaded_model, sample.shape, aligned, target)
    plain = shape_warp(plain_model, sample.shape, aligned, target)
    assert shaded is not None and plain is not None and plain.gain is None and shaded.gain is not None
    assert np.array_equal(shaded.dx, plain.dx) and np.array_equal(shaded.dy, plain.dy)  # the same movement
    # the planted AU25 darkening lands between the moved inner lips, and nowhere far from them
    own = read_aus(mesh)
    moved = S.moved_landmarks(mesh.landmarks, aligned.matrix, aligned.size, bundled.shape, target - own)
    x0, y0 = shaded.region[:2]
    lips = moved[[13, 14]].mean(0)
    darkest = np.unravel_index(np.argmin(shaded.gain), shaded.gain.shape)
    deepest = float(np.exp(shaded_model.appearance.log_ratio(target - own).min()))  # AU25 rises by 0.3 here
    assert deepest < 0.85 and shaded.gain.min() == pytest.approx(deepest, abs=0.02)
    assert np.hypot(darkest[1] + x0 - lips[0], darkest[0] + y0 - lips[1]) < 0.1 * aligned.face.size
    assert shaded.gain.max() <= 1.0 + 1e-6  # the planted maps only darken
    # the photo edit carries it; the zero edit stays the photo, bit for bit
    animator = PhotoAnimator(shaded_model, detector=CachedDetector())
    edited = animator.edit(sample, target).image
    unshaded = PhotoAnimator(plain_model, detector=CachedDetector()).edit(sample, target).image
    assert edited.astype(int).sum() < unshaded.astype(int).sum()
    assert np.array_equal(animator.edit(sample, own).image, sample)


def test_the_bundled_model_darkens_an_opening_mouth(bundled: GANimation, sample: np.ndarray) -> None:
    shading = bundled.appearance
    assert shading is not None and shading.size == A.TEXTURE_SIZE
    reference = shading.reference * shading.size - 0.5
    inside = np.round(reference[[13, 14]].mean(0)).astype(int)  # between the reference's inner lips
    forehead = np.round(reference[151]).astype(int)
    drop = shading.basis[au_index("AU26")]
    assert drop[inside[1], inside[0]] < -0.3  # the jaw drops: the mouth's inside is dark
    assert drop[forehead[1], forehead[0]] == 0.0  # and nothing on the forehead changes with it
    assert shading.basis[au_index("AU25")].max() > 0.3  # parted lips show teeth
    assert not shading.basis[:, :6, :6].any() and not shading.basis[:, -6:, -6:].any()  # the frame's corners
    # on the sample photo: surprise darkens between the moved inner lips, by far more than the
    # warp alone (whose inside is the lips' stretched seam)
    animator = PhotoAnimator(bundled, detector=CachedDetector())
    aligned = animator.align(sample)
    mesh = aligned[0].face.mesh
    target = expression_aus("surprise")
    delta = target - read_aus(mesh)
    moved = S.moved_landmarks(mesh.landmarks, aligned[0].matrix, aligned[0].size, bundled.shape, delta)
    warp = shape_warp(bundled, sample.shape, aligned[0], target)
    assert warp is not None and warp.gain is not None
    x, y = np.round(moved[[13, 14]].mean(0)).astype(int) - warp.region[:2]
    assert warp.gain[y, x] < 0.75
    assert abs(float(warp.gain[0, 0]) - 1.0) < 1e-6  # the region's corner, beyond the face


def test_a_grey_photo_stays_grey(bundled: GANimation, sample: np.ndarray) -> None:
    grey = np.repeat(sample.mean(-1, keepdims=True).astype(np.uint8), 3, axis=2)
    animator = PhotoAnimator(bundled)
    edited = animator.edit(grey, expression_aus("surprise")).image
    assert (edited != grey).any(-1).sum() > 3000  # it moved and shaded the face...
    assert np.array_equal(edited[..., 0], edited[..., 1]) and np.array_equal(edited[..., 1], edited[..., 2])  # ...in grey


def closed_mouth(reference: np.ndarray) -> np.ndarray:
    """``reference`` with its lower inner lip up against the upper one: lips together."""
    closed = reference.copy()
    for upper, lower in zip(S.UPPER_INNER_LIP, S.LOWER_INNER_LIP):
        closed[lower] = closed[upper]
    return closed


def test_fit_learns_the_inside_of_open_mouths_across_people(reference: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    count = 240
    aus = rng.uniform(0, 1, (count, NUM_AUS)) * (rng.uniform(size=(count, NUM_AUS)) < 0.4)
    is_open = np.arange(count) % 2 == 0
    landmarks = np.where(is_open[:, None, None], reference[None], closed_mouth(reference)[None])
    assert A.mouth_opening(reference) >= A.OPEN_MOUTH > A.mouth_opening(closed_mouth(reference))
    skin = rng.normal(-0.5, 0.3, count)  # each face lit and coloured its own way
    inside = A.interior_mask(reference, SIZE) > 0.5
    textures = np.repeat(skin[:, None, None], SIZE, 1).repeat(SIZE, 2) + rng.normal(0, 0.01, (count, SIZE, SIZE))
    # open mouths: dark inside, darker as the jaw drops; closed ones show lips there instead
    depth = np.where(is_open, -1.0 - 0.6 * aus[:, au_index("AU26")], 0.3)
    textures[:, inside] += depth[:, None]
    textures = textures.astype(np.float32)
    planes = A.fit_mouth_interior(textures, landmarks, aus, reference)
    assert planes is not None and planes.shape == (NUM_AUS + 1, SIZE, SIZE)
    assert np.abs(planes[0][inside] + 1.0).max() < 0.05  # relative to each face's own light
    assert np.abs(planes[1 + au_index("AU26")][inside] + 0.6).max() < 0.05
    assert np.abs(planes[1 + au_index("AU04")]).max() == 0.0  # the brows are not the mouth's
    assert not planes[:, ~inside].any()
    model = A.AppearanceModel(reference, np.zeros((NUM_AUS, SIZE, SIZE), np.float32), planes)
    dropped = model.interior_log_luminance(aus_from_mapping({"AU26": 1.0}))
    assert dropped[inside].mean() == pytest.approx(-1.6, abs=0.05)
    # too few open mouths to learn from: no interior
    assert A.fit_mouth_interior(textures[~is_open], landmarks[~is_open], aus[~is_open], reference) is None
    with pytest.raises(ValueError, match="interior"):
        A.AppearanceModel(reference, model.basis, planes[:5])


def test_mouth_colour_is_the_lips_hue(reference: np.ndarray) -> None:
    size = 128
    crop = np.full((size, size, 3), (200, 170, 150), np.uint8)  # skin
    lips = np.zeros((size, size), np.uint8)
    cv2.fillPoly(lips, [np.round(reference[list(A.OUTER_LIP_CONTOUR)] * size - 0.5).astype(np.int32)], 1)
    crop[lips > 0] = (160, 60, 70)
    colour = A.mouth_colour(crop, reference)
    assert colour is not None
    assert colour @ np.array([0.299, 0.587, 0.114]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(colour / colour[0], np.array([160, 60, 70]) / 160, atol=0.03)
    grey = np.repeat(crop.mean(-1, keepdims=True).astype(np.uint8), 3, axis=2)
    np.testing.assert_allclose(A.mouth_colour(grey, reference), 1.0, atol=1e-5)
    assert A.mouth_colour(crop[..., 0], reference) is None


def test_the_bundled_model_paints_the_gap_an_opening_mouth_reveals(bundled: GANimation, sample: np.ndarray) -> None:
    """The sample smiles with her teeth; asked for surprise, her jaw drops. The warp keeps the
    teeth whole and opens a gap between them, which the appearance model paints as the dark
    inside of a mouth. Without it the gap would be the teeth, stretched into stripes."""
    animator = PhotoAnimator(bundled, detector=CachedDetector())
    aligned = animator.align(sample)
    target = expression_aus("surprise")
    warp = shape_warp(bundled, sample.shape, aligned[0], target)
    assert warp is not None and warp.revealed is not None and warp.fill is not None
    gap = warp.revealed > 0.99
    assert gap.sum() > 50
    x0, y0, x1, y1 = warp.region
    weights = np.array([0.299, 0.587, 0.114])
    face = np.median(sample[y0:y1, x0:x1][warp.moving] @ weights)
    painted = animator.edit(sample, target, aligned=aligned).image[y0:y1, x0:x1][gap] @ weights
    unpainted_model = GANimation(bundled.generator, None, bundled.config, shape=bundled.shape)
    unpainted_model.generator_domain = bundled.generator_domain
    stretched = PhotoAnimator(unpainted_model).edit(sample, target, aligned=aligned).image[y0:y1, x0:x1][gap] @ weights
    assert stretched.mean() > face and stretched.std() > 30  # teeth, in stripes
    assert painted.mean() < 0.6 * face and painted.std() < 0.5 * stretched.std()  # a dark, even inside
    assert np.array_equal(animator.edit(sample, read_aus(aligned[0].face.mesh), aligned=aligned).image, sample)


def test_the_opening_after_a_warp_is_what_lay_between_the_inner_lips(reference: np.ndarray) -> None:
    landmarks = reference * 100.0  # the reference face, its mouth open, in a 100 px "photo"
    region = (0, 0, 100, 100)
    still = np.zeros((100, 100), np.float32)
    opening = A.opening_after_warp(landmarks, region, still, still)
    x, y = np.round(landmarks[[13, 14]].mean(0)).astype(int)
    assert opening[y, x] == 1.0 and opening[int(landmarks[151, 1]), int(landmarks[151, 0])] == 0.0
    assert 0.0 < opening.sum() - np.count_nonzero(opening == 1.0) < np.count_nonzero(opening == 1.0)  # edges: shares
    # the backward map carries it: a pixel shows the opening if it takes its colour from there
    shifted = A.opening_after_warp(landmarks, region, still, still + 4.0)
    assert shifted[y - 4, x] == 1.0 and np.allclose(shifted[:-4], opening[4:])
    assert A.opening_after_warp(closed_mouth(reference) * 100.0, region, still, still).max() <= 0.5  # lips together


def test_mouth_shading_falls_only_on_what_the_mouth_showed(bundled: GANimation, sample: np.ndarray,
                                                           reference: np.ndarray) -> None:
    # inside the reference mouth the maps learned teeth and shadow: on a closed mouth's stretched
    # lips they would make the lips glow, so there they shade only what lay inside the opening
    aligned = PhotoAnimator(bundled, detector=CachedDetector()).align(sample)[0]
    mesh = aligned.face.mesh
    model = A.AppearanceModel(reference, planted_shading(reference))
    delta = aus_from_mapping({"AU25": 0.5})
    moved = S.moved_landmarks(mesh.landmarks, aligned.matrix, aligned.size, bundled.shape, delta)
    plan = S.plan_warp(sample.shape, mesh.landmarks, moved)
    assert plan is not None
    x0, y0, x1, y1 = plan.region
    shape = (y1 - y0, x1 - x0)
    everywhere = A.ratio_on_photo(model, moved, plan.region, delta)
    showed = A.ratio_on_photo(model, moved, plan.region, delta, np.ones(shape, np.float32))
    lips_only = A.ratio_on_photo(model, moved, plan.region, delta, np.zeros(shape, np.float32))
    assert everywhere is not None and showed is not None and lips_only is not None
    x, y = np.round(moved[[13, 14]].mean(0)).astype(int) - (x0, y0)
    assert np.array_equal(showed, everywhere) and everywhere[y, x] < 0.8
    assert lips_only[y, x] == pytest.approx(1.0, abs=1e-3)


def test_lightening_keeps_the_hue_of_a_pixel_it_would_clip() -> None:
    photo = np.zeros((8, 8, 3), np.uint8)
    photo[...] = (200, 120, 60)
    still = np.zeros((8, 8), np.float32)
    patch = S.FaceWarp((0, 0, 8, 8), still, still, np.full((8, 8), 2.0, np.float32)).resample(photo)
    assert tuple(patch[4, 4]) == (255, 153, 76)  # held at white's edge, the channels' ratios kept
    darker = S.FaceWarp((0, 0, 8, 8), still, still, np.full((8, 8), 0.5, np.float32)).resample(photo)
    assert tuple(darker[4, 4]) == (100, 60, 30)
