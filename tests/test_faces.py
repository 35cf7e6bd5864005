"""Face detection, alignment and paste-back on whole photos (ganimation.faces)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from ganimation import faces as F
from ganimation.files import load_image

# The astronaut's face in the 512 x 512 sample (checked by eye on a zoomed crop): brow line near
# y 90, eyes near (202, 101) and (246, 103), chin near y 177; the landmarks' box runs from the
# forehead to the chin, cheek to cheek.
SAMPLE_BOX_BOUNDS = {"x0": (165, 195), "y0": (55, 90), "x1": (255, 285), "y1": (165, 195)}


@pytest.fixture(scope="module")
def detector() -> F.LandmarkFaceDetector:
    return F.LandmarkFaceDetector()


@pytest.fixture(scope="module")
def sample_face(detector: F.LandmarkFaceDetector, sample: np.ndarray) -> F.Face:
    faces = detector.detect(sample)
    assert len(faces) == 1
    return faces[0]


def assert_face_in_sample_place(face: F.Face, scale: float = 1.0) -> None:
    for name, value in zip(("x0", "y0", "x1", "y1"), face.box):
        low, high = SAMPLE_BOX_BOUNDS[name]
        assert low * scale <= value <= high * scale, (name, value / scale, face.box)


def crop_footprint(aligned: F.AlignedFace, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean map of the photo pixels the crop's square can reach (plus 2 px of interpolation)."""
    size = aligned.size
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    mapped = corners @ aligned.inverse[:, :2].T + aligned.inverse[:, 2]
    inside = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(inside, np.round(mapped).astype(np.int32), 1)
    return cv2.dilate(inside, np.ones((5, 5), np.uint8)).astype(bool)


# ---------------------------------------------------------------------------------------------
# Sample photo and detection
# ---------------------------------------------------------------------------------------------


def test_sample_photo_is_shipped_with_its_licence_note() -> None:
    path = F.sample_photo_path()
    assert path.is_file() and path.stat().st_size < 400_000
    readme = (path.parent / "README.md").read_text(encoding="utf-8")
    assert "public domain" in readme.lower() and "scikit-image" in readme


def test_detects_exactly_the_astronaut(sample_face: F.Face, sample: np.ndarray) -> None:
    face = sample_face
    assert sample.shape == (512, 512, 3)
    assert_face_in_sample_place(face)
    x0, y0, x1, y1 = face.box
    for x, y in (face.left_eye, face.right_eye):
        assert x0 < x < x1 and y0 < y < (y0 + y1) / 2 + 5
    assert face.left_eye[0] < face.right_eye[0]
    distance = math.dist(face.left_eye, face.right_eye)
    assert 35 < distance < 55
    assert abs(face.left_eye[1] - face.right_eye[1]) < 0.15 * distance
    assert math.dist(face.left_eye, (202, 101)) < 5 and math.dist(face.right_eye, (246, 103)) < 5


def test_detector_satisfies_protocol_and_sorts_left_to_right(detector: F.LandmarkFaceDetector, sample: np.ndarray) -> None:
    assert isinstance(detector, F.FaceDetector)
    pair = np.concatenate([sample, sample[:, ::-1]], axis=1)
    faces = detector.detect(pair)
    assert len(faces) == 2
    assert faces[0].box[0] < 300 < 700 < faces[1].box[0]


def test_no_face_in_flat_or_noise_images(detector: F.LandmarkFaceDetector) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    flat = np.full((200, 200, 3), 128, np.uint8)
    for image in (noise, flat):
        assert detector.detect(image) == []
        with pytest.raises(F.NoFaceError, match=r"^no face found in photo\.jpg$"):
            F.edit_photo(image, lambda crop: crop, detector=detector, source=Path("/some/where/photo.jpg"))


def test_very_large_photo(detector: F.LandmarkFaceDetector, sample: np.ndarray) -> None:
    big = cv2.resize(sample, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    faces = detector.detect(big)
    assert len(faces) == 1
    assert_face_in_sample_place(faces[0], scale=3000 / 512)
    scale = 3000 / 512
    assert math.dist(faces[0].left_eye, (202 * scale, 101 * scale)) < 6 * scale
    crop = F.align_face(big, faces[0]).crop
    assert crop.shape == (128, 128, 3)


def test_tiny_face_is_reported_too_small(detector: F.LandmarkFaceDetector, sample: np.ndarray) -> None:
    tiny = cv2.resize(sample, (60, 60), interpolation=cv2.INTER_AREA)
    faces = detector.detect(tiny)
    assert len(faces) == 1 and faces[0].size < 48
    with pytest.raises(F.FaceTooSmallError, match=r"in tiny\.png: \d+ px wide.*at least 48 px"):
        F.edit_photo(tiny, lambda crop: crop, detector=detector, source="tiny.png")


# ---------------------------------------------------------------------------------------------
# Loading unusual files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation, stored_turns", [(6, 1), (8, -1)])
def test_exif_rotated_jpeg_is_detected_upright(
    tmp_path: Path, detector: F.LandmarkFaceDetector, sample: np.ndarray, orientation: int, stored_turns: int
) -> None:
    # A camera held sideways stores the pixels turned and says so in EXIF Orientation.
    stored = np.ascontiguousarray(np.rot90(sample, k=stored_turns))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"turned{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    assert detector.detect(stored) == [] or detector.detect(stored)[0].box != pytest.approx((177, 66, 272, 161), abs=20)
    shown = load_image(path)
    assert shown.shape == sample.shape
    assert np.abs(shown.astype(int) - sample).mean() < 3
    faces = detector.detect(shown)
    assert len(faces) == 1
    assert_face_in_sample_place(faces[0])


def test_alpha_grayscale_and_16_bit_files_load_as_uint8_rgb(tmp_path: Path, sample: np.ndarray) -> None:
    rgba = np.dstack([sample, np.full(sample.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent corner: composited on white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    gray = cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    cv2.imwrite(str(tmp_path / "rgb16.png"), sample[..., ::-1].astype(np.uint16) * 257)
    Image.fromarray(gray.astype(np.float32) / 255.0).save(tmp_path / "float.tif")

    loaded = {name: load_image(tmp_path / name) for name in ("alpha.png", "gray.png", "gray16.png", "rgb16.png", "float.tif")}
    for name, image in loaded.items():
        assert image.dtype == np.uint8 and image.shape == (512, 512, 3), name
    assert (loaded["alpha.png"][:10, :10] == 255).all()
    assert np.array_equal(loaded["alpha.png"][20:], sample[20:])
    for name in ("gray.png", "gray16.png", "float.tif"):
        assert np.abs(loaded[name][..., 1].astype(int) - gray).max() <= 1, name
    assert np.abs(loaded["rgb16.png"].astype(int) - sample).max() <= 1


def test_grayscale_photo_still_has_a_face(detector: F.LandmarkFaceDetector, sample: np.ndarray) -> None:
    gray = np.repeat(cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    faces = detector.detect(gray)
    assert len(faces) == 1
    assert_face_in_sample_place(faces[0])


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------


def test_alignment_puts_the_eyes_at_the_convention(sample: np.ndarray, sample_face: F.Face) -> None:
    aligned = F.align_face(sample, sample_face)
    assert aligned.crop.shape == (128, 128, 3) and aligned.crop.dtype == np.uint8
    (tlx, tly), (trx, try_) = F.crop_eye_positions(128)
    assert trx - tlx == pytest.approx(F.EYE_DISTANCE_FRACTION * 128)
    assert tly == try_ == pytest.approx(F.EYE_HEIGHT_FRACTION * 128, abs=1)
    mouth = F.crop_mouth_position(128)
    assert mouth == pytest.approx(((tlx + trx) / 2, tly + F.MOUTH_BELOW_EYES * (trx - tlx)))
    # eyes and mouth land on the convention in the least-squares sense: within a few pixels for a
    # face of average proportions such as this one
    for point, target in ((sample_face.left_eye, (tlx, tly)), (sample_face.right_eye, (trx, try_)),
                          (sample_face.mouth, mouth)):
        mapped = aligned.matrix @ np.array([point[0], point[1], 1.0])
        assert mapped == pytest.approx(target, abs=3)
    # The matrices are inverse to each other.
    back = aligned.inverse @ np.append(aligned.matrix @ np.array([10.0, 20.0, 1.0]), 1.0)
    assert back == pytest.approx([10.0, 20.0])


def test_eyes_found_again_in_the_crop_sit_at_the_convention(sample: np.ndarray, sample_face: F.Face, detector: F.LandmarkFaceDetector) -> None:
    """Independent check: detecting eyes anew in the crop finds them where the convention says."""
    crop = F.align_face(sample, sample_face, size=256).crop
    faces = detector.detect(crop)
    assert len(faces) == 1
    (tlx, tly), (trx, try_) = F.crop_eye_positions(256)
    assert math.dist(faces[0].left_eye, (tlx, tly)) < 6
    assert math.dist(faces[0].right_eye, (trx, try_)) < 6


def test_alignment_levels_a_tilted_face(sample: np.ndarray, detector: F.LandmarkFaceDetector) -> None:
    turn = cv2.getRotationMatrix2D((224.0, 110.0), 12.0, 1.0)
    tilted = cv2.warpAffine(sample, turn, (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    face = detector.detect(tilted)[0]
    angle = math.degrees(math.atan2(face.right_eye[1] - face.left_eye[1], face.right_eye[0] - face.left_eye[0]))
    assert angle == pytest.approx(-12.0 + 3.0, abs=4)  # the sample's own eyes tilt ~3 degrees
    upright = F.align_face(sample, detector.detect(sample)[0]).crop.astype(float)
    levelled = F.align_face(tilted, face).crop.astype(float)
    assert np.abs(upright - levelled)[16:112, 16:112].mean() < 12


def test_margin_zooms_out_about_the_centre(sample: np.ndarray, sample_face: F.Face) -> None:
    tight = F.align_face(sample, sample_face)
    loose = F.align_face(sample, sample_face, margin=0.25)
    assert loose.scale == pytest.approx(tight.scale / 1.5)
    (lx, ly), (rx, _) = F.crop_eye_positions(128, margin=0.25)
    assert rx - lx == pytest.approx(F.EYE_DISTANCE_FRACTION * 128 / 1.5)


def test_crop_faces_for_training_matches_inference(sample: np.ndarray, detector: F.LandmarkFaceDetector, sample_face: F.Face) -> None:
    crops = F.crop_faces_for_training(sample, detector=detector)
    assert len(crops) == 1
    assert np.array_equal(crops[0], F.align_face(sample, sample_face).crop)


# ---------------------------------------------------------------------------------------------
# Paste back
# ---------------------------------------------------------------------------------------------


def test_identity_edit_changes_almost_nothing(sample: np.ndarray, detector: F.LandmarkFaceDetector) -> None:
    result = F.edit_photo(sample, lambda crop: crop, detector=detector)
    assert result.image.shape == sample.shape and result.image.dtype == np.uint8
    diff = np.abs(result.image.astype(int) - sample)
    assert diff.mean() < 0.5
    far = ~crop_footprint(result.faces[0].aligned, sample.shape)
    assert far.mean() > 0.8
    assert np.array_equal(result.image[far], sample[far])
    # Residual blending adds only what the edit changed: an identity edit is then exact.
    exact = F.edit_photo(sample, lambda crop: crop, detector=detector, blend="residual")
    assert np.array_equal(exact.image, sample)


def test_red_edit_changes_the_face_only(sample: np.ndarray, detector: F.LandmarkFaceDetector) -> None:
    red = lambda crop: np.broadcast_to(np.array([255, 0, 0], np.uint8), crop.shape).copy()  # noqa: E731
    result = F.edit_photo(sample, red, detector=detector)
    face = result.faces[0]
    assert result.faces[0].edited[0, 0].tolist() == [255, 0, 0]
    far = ~crop_footprint(face.aligned, sample.shape)
    assert np.array_equal(result.image[far], sample[far])
    # Between the eyes and down to the mouth it is now fully red.
    cx, cy = (face.face.left_eye[0] + face.face.right_eye[0]) / 2, face.face.left_eye[1]
    patch = result.image[int(cy) : int(cy) + 50, int(cx) - 15 : int(cx) + 15].astype(int)
    assert (patch[..., 0] >= 250).all() and (patch[..., 1:] <= 5).all()
    # The edge is soft: going right from the nose, the weight of red (read from the green
    # channel, which red sets to 0) falls from 1 to 0 in small steps, not at a seam.
    y, start = int(cy) + 20, int(cx)
    before = sample[y, start : start + 100, 1].astype(float)
    after = result.image[y, start : start + 100, 1].astype(float)
    usable = before > 15
    weight = 1.0 - after[usable] / before[usable]
    assert weight[0] > 0.97 and weight[-1] < 0.03
    assert np.abs(np.diff(weight)).max() < 0.2
    assert ((weight > 0.1) & (weight < 0.9)).sum() >= 4


def test_blend_mask_is_soft_and_zero_at_the_crop_border() -> None:
    mask = F.blend_mask(128)
    assert mask.dtype == np.float32 and mask.max() == pytest.approx(1.0)
    assert (mask[:2] == 0).all() and (mask[-2:] == 0).all() and (mask[:, :2] == 0).all() and (mask[:, -2:] == 0).all()
    assert mask[64, 64] == 1.0 and mask[int(128 * 0.87), 64] > 0.9  # the chin is fully edited
    assert max(np.abs(np.diff(mask, axis=0)).max(), np.abs(np.diff(mask, axis=1)).max()) < 0.2


def test_paste_back_is_fast_and_local_on_large_photos(sample: np.ndarray, detector: F.LandmarkFaceDetector) -> None:
    big = cv2.resize(sample, (3000, 3000), interpolation=cv2.INTER_LINEAR)
    face = detector.detect(big)[0]
    aligned = F.align_face(big, face)
    edited = np.zeros_like(aligned.crop)
    pasted = F.paste_back(big, aligned, edited)
    changed = np.argwhere(np.any(pasted != big, axis=2))
    x0, y0, x1, y1 = face.box
    assert changed[:, 1].min() > x0 - 0.5 * face.width and changed[:, 1].max() < x1 + 0.5 * face.width
    assert changed[:, 0].min() > y0 - 0.7 * face.height and changed[:, 0].max() < y1 + 0.7 * face.height
    # An edited crop at another resolution covers the same region.
    twice = F.paste_back(big, aligned, np.zeros((256, 256, 3), np.uint8))
    assert np.abs(twice.astype(int) - pasted).mean() < 0.5


def test_edit_function_may_return_image_and_attention(sample: np.ndarray, detector: F.LandmarkFaceDetector) -> None:
    def edit(crop: np.ndarray) -> SimpleNamespace:
        attention = np.full((1, 128, 128), 0.25, np.float32)
        return SimpleNamespace(image=255 - crop, attention=attention)

    result = F.edit_photo(sample, edit, detector=detector)
    face = result.faces[0]
    assert np.array_equal(face.edited, 255 - face.crop)
    assert face.attention is not None and face.attention.shape == (128, 128)
    full = result.attention_map()
    assert full is not None and full.shape == sample.shape[:2] and full.dtype == np.float32
    assert full[0, 0] == 1.0 and full[500, 500] == 1.0
    cx, cy = (face.face.left_eye[0] + face.face.right_eye[0]) / 2, face.face.left_eye[1]
    assert full[int(cy) + 10, int(cx)] == pytest.approx(0.25, abs=1e-3)
    assert F.edit_photo(sample, lambda crop: crop, detector=detector).attention_map() is None


def test_bad_edit_results_are_refused_clearly(sample: np.ndarray, detector: F.LandmarkFaceDetector) -> None:
    with pytest.raises(ValueError, match="square RGB"):
        F.edit_photo(sample, lambda crop: crop[:, :, 0], detector=detector)


def test_all_faces_and_face_index(sample: np.ndarray, detector: F.LandmarkFaceDetector) -> None:
    pair = np.concatenate([sample, sample[:, ::-1]], axis=1)
    dark = lambda crop: (crop // 4).astype(np.uint8)  # noqa: E731
    both = F.edit_photo(pair, dark, which="all", detector=detector)
    assert len(both.faces) == 2
    right_only = F.edit_photo(pair, dark, which=1, detector=detector)
    assert right_only.faces[0].box[0] > 512
    assert np.array_equal(right_only.image[:, :512], pair[:, :512])
    with pytest.raises(F.FaceIndexError, match=r"face index 2 is out of range: 2 faces found in pair\.jpg"):
        F.edit_photo(pair, dark, which=2, detector=detector, source="pair.jpg")


# ---------------------------------------------------------------------------------------------
# Selecting faces (no detector needed)
# ---------------------------------------------------------------------------------------------


def synthetic_face(x0: float, width: float, y0: float = 50.0) -> F.Face:
    box = (x0, y0, x0 + width, y0 + width)
    eye_y = y0 + 0.38 * width
    return F.Face(box, (x0 + 0.3 * width, eye_y), (x0 + 0.7 * width, eye_y), 0.9)


def test_select_faces_rules() -> None:
    faces = [synthetic_face(0, 60), synthetic_face(100, 120), synthetic_face(300, 30)]
    assert F.select_faces(faces, "largest") == [faces[1]]
    assert F.select_faces(faces, "all") == faces[:2]
    assert F.select_faces(faces, 0) == [faces[0]]
    assert F.select_faces(faces, "1") == [faces[1]]
    with pytest.raises(F.FaceTooSmallError, match=r"30 px wide.*at least 48 px"):
        F.select_faces(faces, 2)
    with pytest.raises(F.FaceIndexError, match=r"3 faces found in the photo \(valid: 0 to 2"):
        F.select_faces(faces, 5)
    with pytest.raises(F.FaceIndexError):
        F.select_faces(faces, -1)
    with pytest.raises(F.NoFaceError, match="no face found in a.png"):
        F.select_faces([], "all", source="dir/a.png")
    with pytest.raises(F.FaceTooSmallError, match=r"30 px wide in x\.jpg|in x\.jpg: 30 px wide"):
        F.select_faces([faces[2]], "all", source="x.jpg")
    with pytest.raises(ValueError, match="expected an index"):
        F.select_faces(faces, "biggest")
    for error in (F.NoFaceError, F.FaceTooSmallError, F.FaceIndexError):
        assert issubclass(error, ValueError)


def test_eyes_and_mouth_alignment_is_exact_for_conventional_proportions() -> None:
    """A face whose mouth sits MOUTH_BELOW_EYES eye distances below its eyes, turned by 20 degrees
    and scaled by 3, lands exactly on the convention; with the eyes alone it does too."""
    turn, scale, shift = math.radians(20), 3.0, np.array([400.0, 250.0])
    rotate = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]]) * scale
    (tlx, tly), (trx, try_) = F.crop_eye_positions(128)
    mouth = F.crop_mouth_position(128)
    photo = [tuple(rotate @ np.array(p) + shift) for p in ((tlx, tly), (trx, try_), mouth)]
    face = F.Face((0, 0, 1, 1), photo[0], photo[1], mouth=photo[2])
    matrix = F.alignment_matrix(face)
    for point, target in zip(photo, ((tlx, tly), (trx, try_), mouth)):
        assert matrix @ np.array([*point, 1.0]) == pytest.approx(target, abs=1e-9)
    eyes_only = F.alignment_matrix(F.Face((0, 0, 1, 1), photo[0], photo[1]))
    assert eyes_only == pytest.approx(matrix, abs=1e-9)


def test_mouth_keeps_the_scale_of_a_turned_head() -> None:
    """Yaw shortens the eye distance but not the eye-to-mouth distance: with the mouth in the fit
    the crop's scale changes far less than with the eyes alone."""
    (tlx, tly), (trx, _) = F.crop_eye_positions(128)
    mid, distance = (tlx + trx) / 2, trx - tlx
    below = F.MOUTH_BELOW_EYES * distance
    frontal = F.Face((0, 0, 1, 1), (tlx, tly), (trx, tly), mouth=(mid, tly + below))
    turned = F.Face((0, 0, 1, 1), (mid - 0.35 * distance, tly), (mid + 0.35 * distance, tly), mouth=(mid, tly + below))
    def scale(face: F.Face, mouth: bool = True) -> float:
        chosen = face if mouth else F.Face(face.box, face.left_eye, face.right_eye)
        return math.sqrt(abs(np.linalg.det(F.alignment_matrix(chosen)[:, :2])))
    assert scale(frontal) == pytest.approx(1.0)
    assert scale(turned, mouth=False) == pytest.approx(1 / 0.7)  # eyes alone zoom in by 43 %
    assert 1.0 < scale(turned) < 1.12


# ---------------------------------------------------------------------------------------------
# Video tracking
# ---------------------------------------------------------------------------------------------


def noisy_track(frames: int = 200, noise: float = 2.0, seed: int = 0) -> tuple[list[F.Face], np.ndarray]:
    """A face drifting slowly right and back with detector-like jitter on eyes and box."""
    rng = np.random.default_rng(seed)
    truth = np.stack([300 + 40 * np.sin(np.linspace(0, 2 * np.pi, frames)), np.full(frames, 200.0)], axis=1)
    faces = []
    for cx, cy in truth:
        jitter = rng.normal(0.0, noise, 8)
        size = 120 + jitter[4] * 2
        box = (cx - size / 2 + jitter[5], cy - size / 2 + jitter[6], cx + size / 2 + jitter[5], cy + size / 2 + jitter[6])
        left = (cx - 25 + jitter[0], cy - 10 + jitter[1])
        right = (cx + 25 + jitter[2], cy - 10 + jitter[3])
        faces.append(F.Face(box, left, right, 30.0))
    return faces, truth


def crop_positions(faces: list[F.Face | None]) -> np.ndarray:
    """Where each frame's crop transform sends a fixed photo point: what a viewer sees jitter."""
    return np.array([F.alignment_matrix(face) @ np.array([300.0, 200.0, 1.0]) for face in faces if face is not None])


def test_tracker_smooths_jitter() -> None:
    faces, truth = noisy_track()
    tracker = F.FaceTracker(fps=25)
    smoothed = [tracker.update([face]) for face in faces]
    assert all(face is not None for face in smoothed)
    exact = [F.Face(f.box, (x - 25, y - 10), (x + 25, y - 10)) for f, (x, y) in zip(faces, truth)]
    raw_error = np.abs(crop_positions(faces) - crop_positions(exact))[20:].mean()
    smooth_error = np.abs(crop_positions(smoothed) - crop_positions(exact))[20:].mean()
    raw_jitter = np.abs(np.diff(crop_positions(faces), 2, axis=0)).mean()
    smooth_jitter = np.abs(np.diff(crop_positions(smoothed), 2, axis=0)).mean()
    assert smooth_jitter < 0.35 * raw_jitter
    assert smooth_error < 0.8 * raw_error


def test_tracker_holds_the_face_through_short_dropouts_and_keeps_its_face() -> None:
    faces, _ = noisy_track(frames=30, noise=0.5)
    tracker = F.FaceTracker(max_missed=3)
    for face in faces[:10]:
        tracker.update([face])
    held = tracker.face
    assert held is not None
    assert tracker.update([]) == held and tracker.update([]) == held and tracker.update(None) == held
    # Another (larger) face elsewhere does not steal the track.
    stranger = synthetic_face(900, 200)
    assert tracker.update([stranger, faces[10]]).center == pytest.approx(faces[10].center, abs=5)
    for _ in range(4):
        tracker.update([stranger])
    assert tracker.face is None  # lost after more than max_missed misses
    assert tracker.update([stranger]).center == pytest.approx(stranger.center)


def test_tracker_runs_a_detector_every_k_frames(sample: np.ndarray) -> None:
    calls = []

    class CountingDetector:
        def detect(self, rgb: np.ndarray) -> list[F.Face]:
            calls.append(1)
            return [synthetic_face(180, 95, 66)]

    tracker = F.FaceTracker(CountingDetector(), detect_every=3)
    for _ in range(9):
        assert tracker.track(sample) is not None
    assert len(calls) == 3
