"""Reading a driving video's AUs, relative driving, expression intensity on photos, and
``reenact --driving`` end to end (videos made from the package's sample photo at test time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ganimation import animation, cli
from ganimation.aureader import read_aus
from ganimation.aus import AU_NAMES, NUM_AUS, expression_aus
from ganimation.facemesh import FaceMesh
from ganimation.faces import NoFaceError, sample_photo_path
from ganimation.inference import GANimation
from ganimation.video import read_video, video_info, write_video
from support import tiny_model_file

@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def driver(sample: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 frames at 10 fps: the sample face moving sideways, with 3 frames of no face in the middle."""
    frames = []
    for index in range(10):
        frame = np.ascontiguousarray(sample[10:410, 60 + 5 * index:460 + 5 * index])
        if index in (4, 5, 6):
            frame = np.full_like(frame, 90)
        frames.append(frame)
    return write_video(tmp_path_factory.mktemp("driver") / "driver.mp4", frames, fps=10)


def test_video_aus_follow_the_face_and_skip_faceless_frames(driver: Path, sample: np.ndarray) -> None:
    times, aus, fps = animation.read_video_aus(driver)
    assert fps == pytest.approx(10)
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    still = read_aus(FaceMesh().find(sample)[0])
    assert aus.shape == (7, NUM_AUS)
    smile = AU_NAMES.index("AU12")
    assert np.all(aus[:, smile] > 0.6) and abs(float(aus[:, smile].mean()) - still[smile]) < 0.15


def test_driving_sequence_fills_gaps_and_resamples(driver: Path) -> None:
    sequence, fps = animation.driving_video_aus(driver, smoothing=1)
    assert fps == pytest.approx(10) and sequence.shape == (10, NUM_AUS)
    times, aus, _ = animation.read_video_aus(driver)
    # frames 4-6 had no face: linear between frames 3 and 7
    assert sequence[5] == pytest.approx((aus[3] + aus[4]) / 2, abs=1e-5)
    doubled, rate = animation.driving_video_aus(driver, fps=20, smoothing=1)
    assert rate == 20 and len(doubled) == 19


def test_video_without_a_face_is_refused(tmp_path: Path) -> None:
    blank = write_video(tmp_path / "blank.mp4", [np.full((120, 160, 3), 30, np.uint8)] * 3, fps=5)
    with pytest.raises(NoFaceError, match="no face found in any frame of blank.mp4"):
        animation.read_video_aus(blank)


def test_relative_driving_adds_the_drivers_change_to_the_photos_own_aus() -> None:
    driving = np.zeros((3, NUM_AUS), np.float32)
    driving[:, 0] = [0.2, 0.5, 0.1]
    own = np.full(NUM_AUS, 0.3, np.float32)
    own[1] = 0.95
    driving[:, 1] = [0.0, 0.2, 0.0]
    result = animation.relative_aus(driving, own)
    assert result[:, 0] == pytest.approx([0.3, 0.6, 0.2])
    assert result[:, 1] == pytest.approx([0.95, 1.0, 0.95])  # clipped at 1
    assert result[:, 2:] == pytest.approx(np.full((3, NUM_AUS - 2), 0.3))


def test_expression_intensity_moves_each_face_from_its_own_aus(sample: np.ndarray, model_path: Path) -> None:
    animator = animation.PhotoAnimator(GANimation.load(model_path, device="cpu"))
    aligned = animator.align(sample)
    own = animator.source_aus(aligned[0])
    assert own[AU_NAMES.index("AU12")] > 0.6  # read from the landmarks, not the untrained critic
    surprise = expression_aus("surprise")
    assert animator.toward_expression(aligned, surprise, 0.0)[0] == pytest.approx(own)
    assert animator.toward_expression(aligned, surprise, 1.0)[0] == pytest.approx(surprise)
    assert animator.toward_expression(aligned, surprise, 0.25)[0] == pytest.approx(own + 0.25 * (surprise - own))
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        animator.toward_expression(aligned, surprise, 1.5)


def test_reenact_from_a_driving_video(driver: Path, model_path: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out.mp4"
    code = cli.main(["reenact", str(sample_photo_path()), "--driving", str(driver), "-o", str(output),
                     "--checkpoint", str(model_path), "--device", "cpu", "--relative"])
    assert code == 0, capsys.readouterr().err
    info = video_info(output)
    assert info["frames"] == 10 and info["fps"] == pytest.approx(10)
    frames, _, _ = read_video(output)
    first = next(frames)
    assert first.shape == (512, 512, 3)


def test_reenact_needs_one_driver(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["reenact", str(sample_photo_path()), "-o", str(tmp_path / "x.mp4")])
    assert "one of the arguments --driving --driving-aus is required" in capsys.readouterr().err
    code = cli.main(["reenact", str(sample_photo_path()), "--driving", str(tmp_path / "missing.mp4"),
                     "-o", str(tmp_path / "x.mp4"), "--checkpoint", str(model_path)])
    assert code == 2
    assert "missing.mp4: no such driving video" in capsys.readouterr().err


def test_video_targets_can_start_from_the_face_in_each_frame(driver: Path, model_path: Path) -> None:
    model = GANimation.load(model_path, device="cpu")
    frames, fps, _ = read_video(driver)
    seen: list[tuple[int, np.ndarray]] = []

    def target(index: int, own: np.ndarray) -> np.ndarray:
        seen.append((index, own))
        return own

    edited = list(animation.edit_video_frames(model, frames, target, fps=fps, own_aus=True))
    assert len(edited) == 10
    assert [index for index, _ in seen] == list(range(10))  # the tracker holds the face through the gap
    smile = AU_NAMES.index("AU12")
    assert all(own.shape == (NUM_AUS,) and own[smile] > 0.6 for _, own in seen)


def test_animate_video_with_intensity_zero(driver: Path, model_path: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "same.mp4"
    code = cli.main(["animate", str(driver), "--expression", "surprise", "--intensity", "0", "-o", str(output),
                     "--checkpoint", str(model_path), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert video_info(output)["frames"] == 10
