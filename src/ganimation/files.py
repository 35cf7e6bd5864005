"""File helpers shared by every command: atomic writes and robust image reading.

Nothing a user already has may be lost or half-written, so every output goes through
:func:`atomic_output`: written to a temporary file beside the target, flushed, then renamed
over it in one step (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageReadError(ValueError):
    """An image file that is missing, unreadable or of an unsupported kind."""


class DiskFullError(OSError):
    """A write that failed because its file system is full; its text is one plain line."""

    def __str__(self) -> str:
        return str(self.strerror)


#: A write that fails with less free space than this left was stopped by the full disk, whatever
#: its writer raised: torch.save says "unexpected pos", safetensors and ffmpeg's pipe say others.
LOW_SPACE_BYTES = 1 << 20


def free_bytes(folder: str | os.PathLike[str]) -> int | None:
    """Bytes an unprivileged writer may still use on ``folder``'s file system (None if unknown)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs on Windows
        return None
    return stats.f_bavail * stats.f_frsize


def _says_disk_full(error: BaseException | None) -> bool:
    """Whether an error or any error it came from is ENOSPC/EDQUOT, or says so in its text."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error).lower()
        if "no space left on device" in text or "os error 28" in text or "disk quota exceeded" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


_NOT_SPACE = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class OutputPathError(ValueError):
    """An output path that cannot be written: a folder, under a file, or in a folder that refuses it."""


def check_output_file(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an output file that could never be written: one that is a folder,
    or whose nearest existing parent is a file or not writable. Missing folders are fine (made)."""
    target = Path(path)
    if target.is_dir():
        raise OutputPathError(f"{target}: is a folder: give the name of a file to write")
    for parent in target.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{target}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputPathError(f"{target}: cannot write in {parent} (permission denied)")
            return


@contextlib.contextmanager
def disk_full_explained(target: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a write of ``target`` that failed for want of space into one :class:`DiskFullError`
    line naming the cause and the target, whatever form the writer's own error took."""
    try:
        yield
    except Exception as error:
        folder = Path(target).parent
        free = free_bytes(folder)
        # a missing, refused or wrong-kind path is never a full disk, whatever space is left (/proc has none)
        full = _says_disk_full(error) or (
            not isinstance(error, (ValueError, TypeError, *_NOT_SPACE)) and free is not None and free < LOW_SPACE_BYTES)
        if not full:
            raise
        left = f"{free / 2**20:.1f} MB free" if free is not None else "free space unknown"
        raise DiskFullError(errno.ENOSPC, f"{target}: no space left on device ({left} in {folder}); "
                                          f"nothing already there was replaced") from error


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On any exception the temporary file is removed and an existing ``path`` stays untouched;
    a full disk is reported as such (:func:`disk_full_explained`).
    The temporary name keeps the target's suffix so that writers choosing a format by
    extension (Pillow, imageio) behave as for the real name.
    """
    target = Path(path)
    check_output_file(target)
    with disk_full_explained(target):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}",
                                                 dir=target.parent)
        except _NOT_SPACE as error:  # e.g. a pseudo file system such as /proc
            raise OutputPathError(f"{target}: cannot write in {target.parent} ({error.strerror})") from None
        os.close(handle)
    temp_path = Path(temp_name)
    try:
        with disk_full_explained(target):  # inside: free space is measured before the cleanup
            yield temp_path
            with open(temp_path, "rb+") as stream:
                os.fsync(stream.fileno())
            # mkstemp makes owner-only files; give the result the mode a plain open() would have.
            os.chmod(temp_path, target.stat().st_mode & 0o7777 if target.exists() else _default_file_mode())
            os.replace(temp_path, target)
    finally:
        if temp_path.exists():
            temp_path.unlink()


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_output(path) as temp:
        temp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any Pillow mode: alpha composited on white, 16-bit and float rescaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(values.max(initial=0.0))
        if image.mode.startswith("I;16"):
            top = 65535.0
        elif image.mode == "F" and peak <= 1.0:
            top = 1.0  # floating-point images conventionally hold [0, 1]
        elif peak > 255.0:
            top = max(65535.0, peak)
        else:
            top = 255.0
        values = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(values, mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as ``uint8`` RGB ``(H, W, 3)``, honouring EXIF orientation.

    Grayscale, palette, alpha (composited on white) and 16-bit files are all accepted.
    Raises :class:`ImageReadError` with the file name on any failure.
    """
    source = Path(path)
    if source.is_dir():
        raise ImageReadError(f"{source}: is a folder, not an image file")
    if not source.is_file():
        raise ImageReadError(f"{source}: no such image file")
    try:
        with Image.open(source) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            rgb = _to_rgb(image)
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{source}: image too large ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{source}: unreadable image ({error.__class__.__name__}: {error})") from None
    if rgb.width < 1 or rgb.height < 1:
        raise ImageReadError(f"{source}: empty image")
    return np.asarray(rgb, dtype=np.uint8).copy()


def writable_image_format(path: str | os.PathLike[str]) -> str | None:
    """Pillow's format for writing an image to ``path``, chosen by its suffix (``.png`` -> PNG);
    None when the suffix names no kind of image Pillow writes."""
    image_format = Image.registered_extensions().get(Path(path).suffix.lower())
    return image_format if image_format in Image.SAVE else None


def save_image(path: str | os.PathLike[str], image: np.ndarray | Image.Image) -> Path:
    """Save an RGB/L ``uint8`` array or Pillow image atomically; the format follows the suffix,
    and a suffix that names no image format is refused (ValueError) before anything is written."""
    target = Path(path)
    image_format = writable_image_format(target)
    if image_format is None:
        raise ValueError(f"{target}: cannot write an image as {target.suffix or 'a file without a suffix'}: "
                         f"use .png, .jpg, .webp, .bmp or .tif")
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    with atomic_output(target) as temp:
        # Edited photos deserve better than Pillow's default JPEG quality of 75.
        options = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
        picture.save(temp, format=image_format, **options)
    return target
