"""Atomic writes and robust image reading."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganimation.files import (
    ImageReadError,
    OutputPathError,
    atomic_output,
    check_output_file,
    load_image,
    save_image,
    write_bytes_atomic,
    write_text_atomic,
)


def test_atomic_output_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")
    with atomic_output(target) as temp:
        assert temp.parent == tmp_path and temp != target
        assert temp.name.endswith(".txt")  # writers choosing a format by suffix still work
        temp.write_text("new", encoding="utf-8")
        assert target.read_text(encoding="utf-8") == "old"  # nothing visible until the end
    assert target.read_text(encoding="utf-8") == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_output_keeps_old_file_on_exception(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target) as temp:
            temp.write_bytes(b"half a fi")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # the temporary file is gone


def test_atomic_output_no_file_created_on_exception(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target):
            raise KeyboardInterrupt
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # parent folders are created, but stay empty


def test_write_helpers(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a" / "note.txt", "héllo\n")
    assert (tmp_path / "a" / "note.txt").read_bytes() == "héllo\n".encode()
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save_image(tmp_path / "x.png", pixels)
    assert path == tmp_path / "x.png"
    loaded = load_image(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (5, 7, 3)
    np.testing.assert_array_equal(loaded, pixels)
    # The format follows the suffix, also for the temporary name.
    save_image(tmp_path / "x.jpg", pixels)
    assert Image.open(tmp_path / "x.jpg").format == "JPEG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg", "x.png"]


def test_save_image_refuses_a_suffix_that_names_no_image_format(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    for name in ("edit.xyz", "edit"):
        with pytest.raises(ValueError, match="cannot write an image as"):
            save_image(tmp_path / name, pixels)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even PNG bytes under the wrong name
    assert save_image(tmp_path / "edit.WEBP", pixels).is_file()


def test_exif_orientation(tmp_path: Path) -> None:
    stored = np.zeros((10, 20, 3), dtype=np.uint8)  # 20 wide, 10 high as stored
    stored[0, 0] = (255, 0, 0)  # red in the stored top-left corner
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation 6: display after rotating 90 degrees clockwise
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.shape == (20, 10, 3)  # now 10 wide, 20 high
    # Rotating clockwise moves the top-left corner to the top-right.
    np.testing.assert_array_equal(loaded[0, 9], (255, 0, 0))
    assert loaded[0, 0].tolist() == [0, 0, 0]


def test_alpha_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 255, 0)  # fully transparent blue
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    rgba[1, 1] = (0, 255, 0, 255)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    loaded = load_image(tmp_path / "alpha.png")
    assert loaded.shape == (2, 2, 3)
    assert loaded[0, 0].tolist() == [255, 0, 0]
    assert loaded[0, 1].tolist() == [255, 255, 255]
    assert all(abs(int(v) - 127) <= 1 for v in loaded[1, 0])
    assert loaded[1, 1].tolist() == [0, 255, 0]


def test_grey_with_alpha(tmp_path: Path) -> None:
    Image.fromarray(np.array([[[50, 0], [50, 255]]], dtype=np.uint8), mode="LA").save(tmp_path / "la.png")
    loaded = load_image(tmp_path / "la.png")
    assert loaded.tolist() == [[[255, 255, 255], [50, 50, 50]]]


def test_grayscale(tmp_path: Path) -> None:
    grey = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    loaded = load_image(tmp_path / "grey.png")
    assert loaded.shape == (2, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[..., channel], grey)


def test_palette(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[:2] = (10, 200, 30)
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.gif")
    loaded = load_image(tmp_path / "p.gif")
    assert loaded.shape == (4, 4, 3)
    assert loaded[0, 0].tolist() == [10, 200, 30] and loaded[3, 3].tolist() == [0, 0, 0]


def test_sixteen_bit(tmp_path: Path) -> None:
    deep = np.array([[0, 32768], [65535, 257]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as opened:
        assert opened.mode in ("I;16", "I")  # really a 16-bit file
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.dtype == np.uint8 and loaded.shape == (2, 2, 3)
    # value / 65535 * 255, rounded: 0, 127.5 -> 128, 255, 1
    assert loaded[..., 0].tolist() == [[0, 128], [255, 1]]
    assert (loaded[..., 0] == loaded[..., 2]).all()


def test_sixteen_bit_dark(tmp_path: Path) -> None:
    # A dark 16-bit image must not be mistaken for an 8-bit one (max 200 of 65535 is nearly black).
    deep = np.array([[0, 200]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "dark.png")
    assert load_image(tmp_path / "dark.png")[..., 0].tolist() == [[0, 1]]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="absent.png: no such image file"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ImageReadError, match=f"{tmp_path.name}: is a folder, not an image file"):
        load_image(tmp_path)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageReadError, match="garbage.png: unreadable image"):
        load_image(path)


def test_truncated_file(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cut.png: unreadable image"):
        load_image(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg"):
        load_image(path)


def test_image_read_error_is_value_error() -> None:
    assert issubclass(ImageReadError, ValueError)


def test_a_full_disk_is_named_and_replaces_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from ganimation import files

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def write_until_full(path: Path) -> None:
        path.write_bytes(b"part")
        raise OSError(errno.ENOSPC, "No space left on device")

    for failure in (write_until_full,):
        with pytest.raises(OSError) as raised:
            with atomic_output(target) as temp:
                failure(temp)
        assert raised.value.errno == errno.ENOSPC
        message = str(raised.value)
        assert message.startswith(f"{target}: no space left on device (") and len(message.splitlines()) == 1
    # A writer that hides the cause (torch: "unexpected pos 64 vs 0") on a disk left with no space.
    monkeypatch.setattr(files, "free_bytes", lambda folder: 512)
    with pytest.raises(OSError, match="out.bin: no space left on device \\(0.0 MB free in "):
        with atomic_output(target) as temp:
            raise RuntimeError("unexpected pos 64 vs 0")
    # Other errors stay what they are, even then.
    with pytest.raises(ValueError, match="^bad frame$"):
        with atomic_output(target) as temp:
            raise ValueError("bad frame")
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with room left it is not the disk
        with atomic_output(target) as temp:
            raise RuntimeError("unexpected pos 64 vs 0")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]


def test_outputs_that_can_never_be_written_are_refused_first(tmp_path: Path) -> None:
    folder = tmp_path / "clip.mp4"
    folder.mkdir()
    with pytest.raises(OutputPathError, match=r"clip\.mp4: is a folder"):
        check_output_file(folder)
    with pytest.raises(OutputPathError, match=r"clip\.mp4: is a folder"):
        with atomic_output(folder):
            pass
    assert folder.is_dir() and not list(folder.iterdir())
    plain = tmp_path / "photo.jpg"
    plain.write_bytes(b"mine")
    with pytest.raises(OutputPathError, match=r"photo\.jpg is a file, not a folder"):
        check_output_file(plain / "deeper" / "out.png")
    check_output_file(tmp_path / "new" / "folders" / "out.png")  # missing folders are made later
    assert not (tmp_path / "new").exists()


def test_a_pseudo_file_system_is_not_reported_as_full(tmp_path: Path) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    with pytest.raises(OutputPathError, match=r"/proc/out\.png: cannot write in /proc") as caught:
        write_bytes_atomic("/proc/out.png", b"x")
    assert "no space" not in str(caught.value)
