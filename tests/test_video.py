"""Writing and reading videos (ganimation.video) and editing a video's face (animate VIDEO)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganimation import animation, cli
from ganimation.checkpoint import save_model_file
from ganimation.config import ModelConfig
from ganimation.networks import Discriminator, Generator
from ganimation.video import is_animation, is_video, read_video, video_info, write_video
from support import CachedDetector


def panning(sample: np.ndarray, count: int, step: int = 2) -> list[np.ndarray]:
    """The sample's upper part, panned ``step`` pixels right per frame (odd width on purpose)."""
    return [np.ascontiguousarray(sample[:256, 100 - step * index:355 - step * index]) for index in range(count)]


@pytest.mark.parametrize("fps, count", [(10.0, 7), (24.0, 5), (29.97, 4), (12.5, 3)])
def test_mp4_keeps_frame_rate_and_count(tmp_path: Path, sample: np.ndarray, fps: float, count: int) -> None:
    path = write_video(tmp_path / "pan.mp4", iter(panning(sample, count)), fps=fps)
    frames, read_fps, estimate = read_video(path)
    frames = list(frames)
    assert read_fps == pytest.approx(fps, abs=0.01)
    assert len(frames) == count == estimate
    assert video_info(path) == {"frames": count, "fps": pytest.approx(fps, abs=0.01)}
    assert frames[0].shape == (256, 256, 3)  # 255 wide padded to even
    original = panning(sample, count)
    for frame, expected in zip(frames, original):
        assert np.abs(frame[:, :255].astype(int) - expected).mean() < 6  # H.264 is lossy


def test_gif_frames_and_timing(tmp_path: Path, sample: np.ndarray) -> None:
    frames = panning(sample, 6, step=3)
    path = write_video(tmp_path / "pan.gif", frames, fps=10)
    with Image.open(path) as picture:
        assert picture.n_frames == 6
        assert picture.info["duration"] == 100 and picture.info["loop"] == 0
        picture.seek(3)
        fourth = np.asarray(picture.convert("RGB"))
    assert np.abs(fourth.astype(int) - frames[3]).mean() < 8  # one shared 256-colour palette
    assert video_info(path)["frames"] == 6


def decoded_gif(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        frames = []
        for index in range(picture.n_frames):
            picture.seek(index)
            frames.append(np.asarray(picture.convert("RGB")))
    return np.stack(frames)


def test_gif_still_pixels_do_not_shimmer(tmp_path: Path, sample: np.ndarray) -> None:
    """Frames of a photo (fine detail for the dither), a flat purple band, and two boxes whose
    colours change from frame to frame, as edited faces do: every pixel outside the boxes is the
    same in all frames of the decoded GIF, and close to the input."""
    still = np.concatenate([sample[:200, :300], np.full((40, 300, 3), (128, 40, 160), np.uint8)])
    frames = []
    for index in range(10):
        frame = still.copy()
        for y, x in ((40, 30), (60, 180)):
            box = frame[y:y + 70, x:x + 70].astype(int)
            frame[y:y + 70, x:x + 70] = np.clip(box + 9 * index - 40, 0, 255).astype(np.uint8)
        frames.append(frame)
    decoded = decoded_gif(write_video(tmp_path / "faces.gif", frames, fps=10))
    assert decoded.shape == (10, *still.shape)
    unchanged = (np.stack(frames) == still).all(axis=(0, 3))  # (H, W): pixels no frame changes
    assert unchanged.sum() > 0.8 * unchanged.size
    assert (decoded[:, unchanged] == decoded[0, unchanged]).all(), "still pixels differ between frames"
    error = np.abs(decoded[0].astype(int) - still.astype(int))
    assert error[unchanged].mean() < 6  # one 256-colour palette for the photo, dithered
    band = decoded[:, 200:].reshape(-1, 3).astype(float)
    assert np.abs(band.mean(axis=0) - (128, 40, 160)).max() < 3  # purple stays purple


def test_write_video_errors_leave_nothing_behind(tmp_path: Path, sample: np.ndarray) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"existing")
    with pytest.raises(ValueError, match="no frames"):
        write_video(target, [])
    with pytest.raises(ValueError, match="frame rate"):
        write_video(target, panning(sample, 2), fps=0)
    with pytest.raises(ValueError, match="frame 1 is 100x80, the first frame is 255x256"):
        write_video(target, [panning(sample, 1)[0], np.zeros((80, 100, 3), np.uint8)])

    def failing():
        yield panning(sample, 1)[0]
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        write_video(target, failing())
    assert target.read_bytes() == b"existing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_read_video_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such video"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="unreadable video"):
        read_video(tmp_path / "junk.mp4")


def test_suffixes() -> None:
    assert is_video("a.MP4") and is_video("b.mov") and not is_video("c.gif") and not is_video("d.png")
    assert is_animation("c.gif") and is_animation("a.mp4") and not is_animation("d.jpg")


@pytest.mark.parametrize("name", ["clip.xyz", "clip.webm", "clip"])
def test_write_video_refuses_what_it_cannot_write(tmp_path: Path, sample: np.ndarray, name: str) -> None:
    # ffmpeg would leave an empty file (.xyz) or a WebM without frames (H.264 does not go in WebM).
    with pytest.raises(ValueError, match="cannot write a video as .*use .mp4 or .gif"):
        write_video(tmp_path / name, panning(sample, 2))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# animate VIDEO
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ModelConfig(image_size=32, generator_channels=8, generator_residual_blocks=1, discriminator_channels=8,
                         discriminator_layers=3)
    state = torch.get_rng_state()
    torch.manual_seed(1)
    path = save_model_file(tmp_path_factory.mktemp("model") / "tiny.safetensors", Generator(config),
                           Discriminator(config), config)
    torch.set_rng_state(state)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_animate_video_keeps_frame_rate_and_count(tmp_path: Path, sample: np.ndarray, model: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(animation, "default_detector", CachedDetector)
    source = write_video(tmp_path / "pan.mp4", panning(sample, 6), fps=12.5)
    out, gif = tmp_path / "happy.mp4", tmp_path / "happy.gif"
    code, stdout, _ = run(capsys, "animate", source, "--expression", "happy", "-o", out, "--gif", gif,
                          "--checkpoint", model, "--device", "cpu")
    assert code == 0, stdout
    assert video_info(out) == {"frames": 6, "fps": 12.5}
    with Image.open(gif) as picture:
        assert picture.n_frames == 6
    originals, _, _ = read_video(source)
    edited, _, _ = read_video(out)
    for before, after in zip(originals, edited):
        difference = np.abs(after.astype(int) - before).mean(axis=2)
        assert difference[60:150, 60:160].mean() > 3 * max(difference[200:, :].mean(), 0.5)  # the face moved
    # A timeline over a video follows the video's frame rate and length.
    timeline = tmp_path / "t.json"
    timeline.write_text('{"keyframes": [{"time": 0, "expression": "neutral"}, {"time": 0.2, "expression": "sad"}]}',
                        encoding="utf-8")
    code, _, _ = run(capsys, "animate", source, "--timeline", timeline, "-o", tmp_path / "t.mp4",
                     "--checkpoint", model, "--device", "cpu")
    assert code == 0 and video_info(tmp_path / "t.mp4") == {"frames": 6, "fps": 12.5}


def test_video_without_a_face(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = [np.full((64, 96, 3), 40 + 10 * index, np.uint8) for index in range(4)]
    source = write_video(tmp_path / "flat.mp4", frames, fps=8)
    out = tmp_path / "out.mp4"
    code, _, err = run(capsys, "animate", source, "--expression", "happy", "-o", out,
                       "--checkpoint", model, "--device", "cpu")
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(lines) == 1 and "no face found in any frame of flat.mp4" in lines[0]
    assert not out.exists()
    code, _, _ = run(capsys, "animate", source, "--expression", "happy", "-o", out, "--allow-no-face",
                     "--checkpoint", model, "--device", "cpu")
    assert code == 0 and video_info(out) == {"frames": 4, "fps": 8.0}
    code, _, err = run(capsys, "animate", source, "--expression", "happy", "-o", tmp_path / "x.png",
                       "--checkpoint", model, "--device", "cpu")
    assert code == 2 and "give an .mp4 or .gif output" in err


def test_mp4_on_a_full_disk_is_one_line(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ffmpeg stops on a full disk, and the next frame sent to it fails with "Broken pipe": that
    was all `animate --mp4` said."""
    import errno

    import imageio_ffmpeg

    from conftest import write_face
    from ganimation import files

    def ffmpeg_on_a_full_disk(path: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"\0" * 100)
        yield
        yield  # the first frame fits
        # What imageio-ffmpeg raises once ffmpeg has exited on "No space left on device".
        raise OSError(f"{OSError(errno.EPIPE, 'Broken pipe')}\n\nFFMPEG COMMAND:\nffmpeg ... {path}\n\n"
                      f"FFMPEG STDERR OUTPUT:\n")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", ffmpeg_on_a_full_disk)
    monkeypatch.setattr(files, "free_bytes", lambda folder: 0)
    target = tmp_path / "smile.mp4"
    code, _, err = run(capsys, "animate", write_face(tmp_path / "face.png"), "--crop", "--checkpoint", model,
                       "--expression", "happy", "--frames", "4", "--mp4", target, "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"ganimation animate: error: {target}: no space left on device (0.0 MB free")
    assert "Broken pipe" not in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["face.png"]


def test_an_unreadable_video_is_one_line_without_ffmpegs_banner(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(ValueError) as caught:
        read_video(corrupt)
    message = str(caught.value)
    assert message.startswith(f"{corrupt}: unreadable video (") and message.endswith(")")
    assert "\n" not in message and "ffmpeg version" not in message and "configuration" not in message
