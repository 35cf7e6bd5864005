"""Writing and reading animations: GIF and MP4 through imageio (imageio-ffmpeg's wheel carries
ffmpeg, so nothing is downloaded), always written atomically."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ganimation.files import atomic_output

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
# What write_video writes: H.264 in these containers (WebM cannot hold H.264), or a GIF.
WRITABLE_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".m4v", ".gif")


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 with yuv420p needs even sides: pad the last row/column by replication."""
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _checked(frames: Iterable[np.ndarray], target: Path) -> Iterator[np.ndarray]:
    """uint8 RGB frames, all of the first one's size (a clear error instead of a garbled video)."""
    shape = None
    for number, frame in enumerate(frames):
        array = np.asarray(frame)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
            raise ValueError(f"{target}: frame {number} is not a uint8 RGB image ({array.dtype} {array.shape})")
        array = np.ascontiguousarray(array[..., :3])
        if shape is None:
            shape = array.shape
        elif array.shape != shape:
            raise ValueError(f"{target}: frame {number} is {array.shape[1]}x{array.shape[0]}, "
                             f"the first frame is {shape[1]}x{shape[0]}")
        yield array


def _gif_frames(frames: Sequence[np.ndarray], palette_frames: int = 8) -> list:
    """Palette images sharing one palette, in which a pixel that does not change keeps its colour.

    One palette for the whole clip (from up to ``palette_frames`` frames spread over it), and
    each frame dithered against it. Dithering spreads each pixel's rounding error to its
    neighbours, so a still pixel beside a changing one would be dithered differently from frame
    to frame and shimmer; so a pixel equal to its value in the frame before keeps that frame's
    palette index, and only what changes is dithered anew. A background that never changes is
    then the same in every frame.
    """
    from PIL import Image

    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), palette_frames)).round().astype(int))
    montage = Image.fromarray(np.concatenate([frames[index] for index in picks], axis=0))
    montage.thumbnail((512, 512 * len(picks)))
    palette = montage.quantize(256, method=Image.Quantize.MEDIANCUT)
    pictures, previous, previous_indices = [], None, None
    for frame in frames:
        picture = Image.fromarray(frame).quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        indices = np.asarray(picture)  # (H, W) palette indices
        if previous is not None:
            unchanged = (frame == previous).all(axis=2)
            indices = np.where(unchanged, previous_indices, indices)
            picture.frombytes(np.ascontiguousarray(indices, dtype=np.uint8).tobytes())
        pictures.append(picture)
        previous, previous_indices = frame, indices
    return pictures


def write_video(path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: float = 12.0,
                loop: bool = True) -> Path:
    """Write uint8 RGB frames as a GIF or as H.264 video (.mp4, .mov, .mkv, .avi, .m4v), atomically.

    Frames are streamed to the MP4 encoder, so a long video is never held in memory. MP4 sides
    are padded to even numbers (yuv420p needs them). GIF stores frame times in 1/100 s; Pillow
    merges consecutive identical frames into one longer frame (the playing time is the same).
    """
    target = Path(path)
    check_video_output(target)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"{target}: frame rate must be positive, got {fps}")
    stream = _checked(frames, target)
    first = next(stream, None)
    if first is None:
        raise ValueError(f"{target}: no frames to write")
    count = 1
    with atomic_output(target) as temp:
        if target.suffix.lower() == ".gif":
            rest = list(stream)
            count += len(rest)
            pictures = _gif_frames([first, *rest])
            pictures[0].save(temp, format="GIF", save_all=True, append_images=pictures[1:],
                             duration=max(20, round(1000 / fps)), loop=0 if loop else 1, disposal=2)
        else:
            import imageio_ffmpeg

            writer = imageio_ffmpeg.write_frames(
                str(temp), _even(first).shape[1::-1], fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                quality=8, macro_block_size=1, ffmpeg_log_level="error")
            writer.send(None)
            try:
                writer.send(_even(first))
                for frame in stream:
                    writer.send(_even(frame))
                    count += 1
            finally:
                writer.close()
    logger.debug("wrote %d frames to %s", count, target)
    return target


def check_video_output(path: str | os.PathLike[str]) -> None:
    """Refuse (ValueError) a video output whose suffix :func:`write_video` cannot write, before any work."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITABLE_SUFFIXES:
        raise ValueError(f"{path}: cannot write a video as {suffix or 'a file without a suffix'}: use .mp4 or .gif "
                         f"(or {', '.join(s for s in WRITABLE_SUFFIXES if s not in ('.mp4', '.gif'))})")


def ffmpeg_reason(error: BaseException) -> str:
    """One line of why ffmpeg failed: the last line of its log, without the version banner that
    imageio-ffmpeg puts into the message, or the message's first line when it carries no log."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return error.__class__.__name__
    if "=== stderr ===" in lines:
        log = lines[lines.index("=== stderr ===") + 1:]
        if log:
            # "[in#0 @ 0x55..] Error opening input: ..." -> the text after the component's tag
            return re.sub(r"^\[[^\]]*\]\s*", "", log[-1]).rstrip(".")
    return lines[0]


def read_video(path: str | os.PathLike[str]) -> tuple[Iterator[np.ndarray], float, int | None]:
    """Frames (uint8 RGB) of a video file, its frame rate and (when known) its frame count."""
    import imageio_ffmpeg

    source = Path(path)
    if not source.is_file():
        raise ValueError(f"{source}: no such video file")
    try:
        reader = imageio_ffmpeg.read_frames(str(source), pix_fmt="rgb24")
        meta = reader.__next__()
    except (RuntimeError, OSError, StopIteration) as error:
        raise ValueError(f"{source}: unreadable video ({ffmpeg_reason(error)})") from None
    width, height = meta["size"]
    fps = float(meta.get("fps") or 25.0)
    count = None
    duration = meta.get("duration")
    if duration:
        count = int(round(float(duration) * fps))

    def frames() -> Iterator[np.ndarray]:
        for raw in reader:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy()

    return frames(), fps, count


def is_video(path: str | os.PathLike[str]) -> bool:
    """A video file by its suffix (GIFs are not: an animated GIF input is read as a photo)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_animation(path: str | os.PathLike[str]) -> bool:
    """An output that :func:`write_video` writes: a video suffix or ``.gif``."""
    return is_video(path) or Path(path).suffix.lower() == ".gif"


def video_info(path: str | os.PathLike[str]) -> dict[str, float | int]:
    """Frame count and frame rate of a written video (for tests and reports)."""
    frames, fps, _ = read_video(path)
    count = sum(1 for _ in frames)
    return {"frames": count, "fps": fps}


def grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 2, background: int = 255) -> np.ndarray:
    """Tile equally-sized uint8 RGB images into a grid with white gaps."""
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3), background, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            canvas[r * (height + gap):r * (height + gap) + height, c * (width + gap):c * (width + gap) + width] = tile
    return canvas
