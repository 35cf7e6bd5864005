"""Photo animation pipelines (ganimation.animation) with stub models and stub detectors: fast, exact."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganimation import animation as A
from ganimation.aus import AU_NAMES, EXPRESSIONS, NUM_AUS, AUError, au_index, expression_aus
from ganimation.cli import target_aus_from_args
from ganimation.faces import Face, FaceTooSmallError, NoFaceError
from ganimation.files import load_image
from ganimation.inference import AnimationResult

# Where the Haar detector finds the astronaut in the sample photo (see tests/test_faces.py).
SAMPLE_FACE = Face((177.0, 66.0, 272.0, 161.0), (202.2, 100.8), (245.2, 103.4), 80.0)


class StubDetector:
    """Returns fixed faces (scaled to nothing: the photos here are the sample's size)."""

    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self.calls += 1
        return list(self.faces)


class StubModel:
    """A 32 px "model": the identity edit, or a uniform brightening proportional to AU12."""

    image_size = 32
    shape = None  # no shape model: the paper's model alone
    paints_photos = True

    def __init__(self, brighten: float = 0.0, estimate: np.ndarray | None = None) -> None:
        self.brighten = brighten
        self.estimate = estimate
        self.discriminator = object() if estimate is not None else None
        self.requested: list[np.ndarray] = []

    def _edit(self, crop: np.ndarray, aus: np.ndarray) -> AnimationResult:
        aus = np.asarray(aus, dtype=np.float32)
        self.requested.append(aus)
        shift = self.brighten * float(aus[au_index("AU12")])
        image = np.clip(crop.astype(np.float32) + shift, 0, 255).astype(np.uint8)
        attention = np.full(crop.shape[:2], 1.0 - min(1.0, shift / 255.0), np.float32)
        return AnimationResult(image, attention, image, aus)

    def animate(self, crop: np.ndarray, aus: np.ndarray) -> AnimationResult:
        return self._edit(crop, aus)

    def animate_batch(self, crop: np.ndarray, aus_list, batch_size: int = 16) -> list[AnimationResult]:
        return [self._edit(crop, aus) for aus in aus_list]

    def animate_pairs(self, crops, aus_list, batch_size: int = 16) -> list[AnimationResult]:
        return [self._edit(crop, aus) for crop, aus in zip(crops, aus_list)]

    def estimate_aus(self, crop: np.ndarray) -> np.ndarray:
        assert self.estimate is not None
        return self.estimate.copy()


def far_from_face(shape: tuple[int, ...]) -> np.ndarray:
    """Pixels well away from the sample's face (beyond any crop footprint of a 32 px model)."""
    far = np.ones(shape[:2], bool)
    far[20:230, 120:330] = False
    return far


# ---------------------------------------------------------------------------------------------
# Expressions and target vectors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_every_expression_vector(name: str) -> None:
    vector = expression_aus(name)
    assert vector.shape == (NUM_AUS,) and vector.dtype == np.float32
    assert ((vector >= 0) & (vector <= 1)).all()
    for au, value in EXPRESSIONS[name].items():
        assert vector[AU_NAMES.index(au)] == pytest.approx(value)
    assert np.count_nonzero(vector) == len([v for v in EXPRESSIONS[name].values() if v > 0])
    for intensity in (0.0, 0.25, 0.7):
        assert np.allclose(expression_aus(name, intensity), vector * intensity, atol=1e-6)


def test_expression_names_are_forgiving_and_errors_clear() -> None:
    assert np.array_equal(expression_aus(" Happiness "), expression_aus("happy"))
    with pytest.raises(AUError, match="unknown expression 'smug'.*happy"):
        expression_aus("smug")
    with pytest.raises(AUError, match="within"):
        expression_aus("happy", 1.5)


def test_au_override_on_top_of_expression() -> None:
    args = argparse.Namespace(expression="happy", intensity=0.7, au=["AU26=0.3", "AU12=0.2"])
    target = target_aus_from_args(args)
    expected = expression_aus("happy", 0.7)
    expected[au_index("AU26")] = 0.3
    expected[au_index("AU12")] = 0.2  # an explicit --au wins over the expression's value
    assert np.allclose(target, expected)
    with pytest.raises(ValueError, match="no target expression"):
        target_aus_from_args(argparse.Namespace(expression=None, intensity=1.0, au=[]))


# ---------------------------------------------------------------------------------------------
# Timelines
# ---------------------------------------------------------------------------------------------


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_timeline_frames_count_and_keyframes(tmp_path: Path) -> None:
    path = write_json(tmp_path / "t.json", {"fps": 10, "keyframes": [
        {"time": 1.25, "aus": {"AU26": 0.3}, "expression": "happy", "intensity": 0.8},
        {"time": 0, "expression": "neutral"},
        {"t": 2.0, "aus": [0.5] * NUM_AUS},
    ]})
    keyframes, fps = A.read_timeline(path)
    assert fps == 10 and [k.time for k in keyframes] == [0.0, 1.25, 2.0]
    sequence = A.timeline_aus(keyframes, fps)
    assert sequence.shape == (int(np.floor(2.0 * 10)) + 1, NUM_AUS)
    assert np.allclose(sequence[0], 0) and np.allclose(sequence[-1], 0.5)
    happy = expression_aus("happy", 0.8)
    happy[au_index("AU26")] = 0.3
    # 1.25 s does not fall on a 10 fps frame; at 4 fps it does.
    assert np.allclose(A.timeline_aus(keyframes, 4.0)[5], happy, atol=1e-6)
    # Eased: AU12 rises monotonically from 0 to its keyframe value, slowly at both ends.
    rise = sequence[:13, au_index("AU12")]
    assert (np.diff(rise) >= -1e-7).all()
    assert rise[1] - rise[0] < rise[6] - rise[5]


def test_timeline_count_is_floor_duration_times_fps_plus_one() -> None:
    keyframes, _ = A.read_timeline({"keyframes": [{"time": 0, "expression": "neutral"},
                                                  {"time": 1.3, "expression": "surprise"}]})
    for fps, frames in ((24, 32), (10, 14), (12.5, 17), (1, 2)):
        assert len(A.timeline_aus(keyframes, fps)) == int(np.floor(1.3 * fps + 1e-9)) + 1 == frames


def test_timeline_starting_late_holds_its_first_keyframe() -> None:
    keyframes, fps = A.read_timeline({"fps": 4, "keyframes": [{"time": 1, "expression": "happy"},
                                                              {"time": 2, "expression": "sad"}]})
    sequence = A.timeline_aus(keyframes, fps)
    assert len(sequence) == 9
    assert np.allclose(sequence[:5], expression_aus("happy"))
    assert np.allclose(sequence[-1], expression_aus("sad"))


@pytest.mark.parametrize("document, message", [
    ({"keyframes": [{"time": 0, "expression": "happy"}]}, "at least 2"),
    ({"keyframes": [{"expression": "happy"}, {"time": 1, "expression": "sad"}]}, "keyframe 0.*time"),
    ({"keyframes": [{"time": 0}, {"time": 1, "expression": "sad"}]}, "keyframe 0.*'expression' or 'aus'"),
    ({"keyframes": [{"time": 0, "aus": {"AU13": 1}}, {"time": 1, "expression": "sad"}]}, "keyframe 0.*AU13"),
    ({"keyframes": [{"time": 0, "expression": "smug"}, {"time": 1, "expression": "sad"}]}, "smug"),
    ({"keyframes": [{"time": 1, "expression": "happy"}, {"time": 1, "expression": "sad"}]}, "positive duration"),
    ({"fps": 0, "keyframes": [{"time": 0, "expression": "happy"}, {"time": 1, "expression": "sad"}]}, "fps"),
])
def test_timeline_errors_name_the_problem(tmp_path: Path, document: dict, message: str) -> None:
    with pytest.raises(A.TimelineError, match=message):
        A.read_timeline(write_json(tmp_path / "t.json", document))


def test_timeline_file_errors(tmp_path: Path) -> None:
    with pytest.raises(A.TimelineError, match="no such timeline"):
        A.read_timeline(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(A.TimelineError, match="not valid JSON"):
        A.read_timeline(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------
# Smoothing and driving CSVs
# ---------------------------------------------------------------------------------------------


def test_smoothing_reduces_variance_and_keeps_the_level() -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(0.5 + 0.2 * rng.standard_normal((200, NUM_AUS)), 0, 1).astype(np.float32)
    smoothed = A.smooth_aus(noisy, 5)
    assert smoothed.shape == noisy.shape and smoothed.dtype == np.float32
    assert (smoothed.var(axis=0) < 0.4 * noisy.var(axis=0)).all()
    assert np.allclose(smoothed.mean(axis=0), noisy.mean(axis=0), atol=0.02)
    constant = np.full((7, NUM_AUS), 0.3, np.float32)
    assert np.allclose(A.smooth_aus(constant, 4), constant)  # edges average only the frames they have
    assert np.array_equal(A.smooth_aus(noisy, 1), noisy)
    with pytest.raises(ValueError, match="window"):
        A.smooth_aus(noisy, 0)


def write_openface_csv(path: Path, rows: list[tuple[int, float, int, float]]) -> Path:
    """OpenFace FeatureExtraction-like CSV: (frame, timestamp, success, AU12 raw 0-5) per row."""
    columns = ["frame", " face_id", " timestamp", " confidence", " success",
               *(f" {name}_r" for name in AU_NAMES), *(f" {name}_c" for name in AU_NAMES)]
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        for frame, stamp, success, au12 in rows:
            intensities = [au12 if name == "AU12" else 1.0 for name in AU_NAMES]
            if not success:
                intensities = [0.0] * NUM_AUS
            writer.writerow([frame, 0, f"{stamp:.3f}", 0.98 if success else 0.0, success,
                             *(f"{v:.2f}" for v in intensities), *([1] * NUM_AUS)])
    return path


def test_driving_csv_keeps_one_frame_per_video_frame(tmp_path: Path) -> None:
    path = write_openface_csv(tmp_path / "drive.csv", [
        (1, 0.0, 1, 0.0), (2, 0.1, 1, 1.0), (3, 0.2, 1, 2.0), (4, 0.3, 0, 0.0), (5, 0.4, 1, 4.0), (6, 0.5, 1, 5.0)])
    assert A.driving_frame_rate(path) == pytest.approx(10.0)
    sequence = A.driving_aus(path, source_fps=10.0)
    assert sequence.shape == (6, NUM_AUS)
    # The lost frame 4 is interpolated between its neighbours instead of snapping to neutral.
    assert np.allclose(sequence[:, au_index("AU12")], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-6)
    assert np.allclose(sequence[:, au_index("AU01")], 0.2)
    # Resampled to 20 fps: same duration, twice the frames (plus the first).
    assert A.driving_aus(path, fps=20.0, source_fps=10.0).shape == (11, NUM_AUS)
    smoothed = A.driving_aus(path, smoothing=3, source_fps=10.0)
    assert smoothed[:, au_index("AU12")].var() < sequence[:, au_index("AU12")].var()
    with pytest.raises(ValueError, match="frame rate"):
        A.driving_aus(path, source_fps=0)


def test_driving_csv_with_timestamps_only(tmp_path: Path) -> None:
    path = tmp_path / "stamps.csv"
    header = ["timestamp", "success", *(f"{name}_r" for name in AU_NAMES)]
    rows = [[f"{t / 25:.2f}", 1, *([f"{t * 0.5:.1f}"] * NUM_AUS)] for t in range(5)]
    with open(path, "w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows([header, *rows])
    assert A.driving_frame_rate(path) is None
    sequence = A.driving_aus(path, fps=25.0)
    assert sequence.shape == (5, NUM_AUS)
    assert np.allclose(sequence[:, 0], [0.0, 0.1, 0.2, 0.3, 0.4], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# PhotoAnimator with a stub model
# ---------------------------------------------------------------------------------------------


def test_residual_identity_edit_returns_the_photo_exactly(sample: np.ndarray) -> None:
    detector = StubDetector([SAMPLE_FACE])
    residual = A.PhotoAnimator(StubModel(), detector=detector)
    assert residual.blend == A.DEFAULT_BLEND == "residual"
    assert np.array_equal(residual.edit(sample, np.zeros(NUM_AUS)).image, sample)
    replace = A.PhotoAnimator(StubModel(), detector=detector, blend="replace")
    replaced = replace.edit(sample, np.zeros(NUM_AUS)).image
    far = far_from_face(sample.shape)
    assert np.array_equal(replaced[far], sample[far])
    # A 32 px crop pasted over a ~140 px face region blurs it.
    assert np.abs(replaced.astype(int) - sample).mean() > 0.2
    with pytest.raises(ValueError, match="blend must be one of"):
        A.PhotoAnimator(StubModel(), detector=detector, blend="overlay")


def test_edit_changes_the_face_only_and_reuses_alignment(sample: np.ndarray) -> None:
    detector = StubDetector([SAMPLE_FACE])
    animator = A.PhotoAnimator(StubModel(brighten=60.0), detector=detector)
    aligned = animator.align(sample)
    edit = animator.edit(sample, expression_aus("happy"), aligned=aligned)
    assert detector.calls == 1
    far = far_from_face(sample.shape)
    assert np.array_equal(edit.image[far], sample[far])
    face = edit.image[90:140, 195:255].astype(int) - sample[90:140, 195:255]
    assert face.mean() > 40  # brightened by ~60 where not clipped
    assert len(edit.faces) == 1 and edit.attention_map() is not None


def test_frames_and_interpolation_start_from_estimated_aus(sample: np.ndarray) -> None:
    estimate = np.full(NUM_AUS, 0.4, np.float32)
    model = StubModel(brighten=50.0, estimate=estimate)
    animator = A.PhotoAnimator(model, detector=StubDetector([SAMPLE_FACE]), batch_size=3)
    target = expression_aus("happy")
    frames = list(animator.interpolation(sample, target, 7))
    assert len(frames) == 7
    assert np.allclose(model.requested[0], estimate) and np.allclose(model.requested[-1], target)
    model.requested.clear()
    given = np.zeros(NUM_AUS, np.float32)
    list(animator.interpolation(sample, target, 4, source_aus=given))
    assert np.allclose(model.requested[0], given)
    # Without a critic the interpolation starts neutral.
    plain = StubModel(brighten=50.0)
    list(A.PhotoAnimator(plain, detector=StubDetector([SAMPLE_FACE])).interpolation(sample, target, 3))
    assert np.allclose(plain.requested[0], 0)
    sequence = A.timeline_aus(A.read_timeline({"keyframes": [{"time": 0, "expression": "neutral"},
                                                             {"time": 1, "expression": "happy"}]})[0], 5)
    clip = list(animator.frames(sample, sequence))
    assert len(clip) == 6 and all(frame.shape == sample.shape for frame in clip)
    far = far_from_face(sample.shape)
    assert all(np.array_equal(frame[far], sample[far]) for frame in clip)


def test_every_face_interpolates_from_its_own_aus(sample: np.ndarray) -> None:
    pair = np.concatenate([sample, sample[:, ::-1]], axis=1)
    mirrored = Face((1024 - 272.0, 66.0, 1024 - 177.0, 161.0), (1024 - 246.2, 103.4), (1024 - 203.2, 100.8))
    estimates = iter([np.full(NUM_AUS, 0.1, np.float32), np.full(NUM_AUS, 0.9, np.float32)])

    class TwoFaces(StubModel):
        def estimate_aus(self, crop: np.ndarray) -> np.ndarray:
            return next(estimates)

    model = TwoFaces(brighten=30.0, estimate=np.zeros(NUM_AUS, np.float32))
    animator = A.PhotoAnimator(model, which="all", detector=StubDetector([SAMPLE_FACE, mirrored]))
    assert [index for index, _ in animator.select(pair)] == [0, 1]
    frames = list(animator.interpolation(pair, np.full(NUM_AUS, 0.5, np.float32), 3))
    assert len(frames) == 3
    starts = [vector[0] for vector in model.requested if vector[0] in (np.float32(0.1), np.float32(0.9))]
    assert sorted(starts) == pytest.approx([0.1, 0.9])


def test_no_face_and_too_small_face_errors(sample: np.ndarray) -> None:
    with pytest.raises(NoFaceError, match="no face found in x.jpg"):
        A.PhotoAnimator(StubModel(), detector=StubDetector([])).edit(sample, np.zeros(NUM_AUS), source="x.jpg")
    small = Face((10.0, 10.0, 40.0, 40.0), (18.0, 20.0), (32.0, 20.0))
    with pytest.raises(FaceTooSmallError, match="face too small.*30 px wide"):
        A.PhotoAnimator(StubModel(), detector=StubDetector([small])).align(sample)


def test_video_frames_pass_through_without_a_face_and_can_require_one(sample: np.ndarray) -> None:
    frames = [sample, sample.copy(), sample.copy()]
    model = StubModel(brighten=60.0)
    edited = list(A.edit_video_frames(model, frames, lambda i: expression_aus("happy"),
                                      detector=StubDetector([SAMPLE_FACE]), fps=10.0))
    far = far_from_face(sample.shape)
    assert len(edited) == 3 and all(np.array_equal(frame[far], sample[far]) for frame in edited)
    assert all(np.abs(frame.astype(int) - sample).sum() > 0 for frame in edited)
    unchanged = list(A.edit_video_frames(model, frames, lambda i: np.zeros(NUM_AUS), detector=StubDetector([])))
    assert all(frame is original for frame, original in zip(unchanged, frames))
    with pytest.raises(NoFaceError, match="no face found in any frame of clip.mp4"):
        list(A.edit_video_frames(model, frames, lambda i: np.zeros(NUM_AUS), detector=StubDetector([]),
                                 require_face=True, source="clip.mp4"))


# ---------------------------------------------------------------------------------------------
# Keeping the input's kind (grey, alpha)
# ---------------------------------------------------------------------------------------------


def test_photo_kind_and_match_kind(tmp_path: Path, sample: np.ndarray) -> None:
    rgba = np.dstack([sample, np.full(sample.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0
    rgba[:40, :40, :3] = 7  # colour under full transparency: must survive untouched
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(sample[..., 1]).save(tmp_path / "grey.png")
    Image.fromarray(sample).save(tmp_path / "rgb.png")

    kind = A.photo_kind(tmp_path / "alpha.png")
    assert not kind.grayscale and kind.rgba is not None
    loaded = load_image(tmp_path / "alpha.png")
    edited = loaded.copy()
    edited[200:210, 200:210] = (255, 0, 0)
    restored = np.asarray(A.match_kind(edited, kind, ".png"))
    assert restored.shape == (512, 512, 4)
    assert np.array_equal(restored[:40, :40], rgba[:40, :40])
    assert np.array_equal(restored[300:], rgba[300:])
    assert (restored[200:210, 200:210] == (255, 0, 0, 255)).all()
    assert A.match_kind(edited, kind, ".jpg").mode == "RGB"

    grey = A.photo_kind(tmp_path / "grey.png")
    assert grey.grayscale and grey.rgba is None
    picture = A.match_kind(load_image(tmp_path / "grey.png"), grey, ".png")
    assert picture.mode == "L" and np.array_equal(np.asarray(picture), sample[..., 1])
    assert A.photo_kind(tmp_path / "rgb.png") == A.PhotoKind()
    frame = next(A.grey_frames([edited], grey))
    assert (frame[..., 0] == frame[..., 2]).all()
