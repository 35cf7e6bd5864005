"""``ganimation demo`` and ``ganimation evaluate`` end to end with a tiny random 32 px model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganimation import cli, demo, inference
from ganimation.auregressor import AURegressor, save_regressor
from ganimation.aus import NUM_AUS, expression_aus
from ganimation.checkpoint import save_model_file
from ganimation.config import ModelConfig
from ganimation.faces import sample_photo_path
from ganimation.files import load_image
from ganimation.networks import Discriminator, Generator
from ganimation.video import video_info

SIZE = 32
TINY = ModelConfig(image_size=SIZE, generator_channels=8, generator_residual_blocks=1, discriminator_channels=8,
                   discriminator_layers=3)
FRAMES = 3
#: Neutral, then for each of the 6 demo expressions 2 new frames there (3 minus the shared one) and
#: 1 back (max(2, 3 // 2) = 2 minus the shared one).
SEQUENCE_LENGTH = 1 + 6 * (2 + 1)


def seeded(build):  # type: ignore[no-untyped-def]
    state = torch.get_rng_state()
    torch.manual_seed(0)
    try:
        return build()
    finally:
        torch.set_rng_state(state)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return seeded(lambda: save_model_file(path, Generator(TINY), Discriminator(TINY), TINY))


@pytest.fixture(scope="module")
def regressor_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("regressor") / "regressor.safetensors"
    return seeded(lambda: save_regressor(AURegressor(8), path, 0.25))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> tuple[Path, dict[str, Path]]:
    output = tmp_path_factory.mktemp("demo") / "out"
    return output, demo.run_demo(output, checkpoint=checkpoint, faces=1, frames=FRAMES)


def rows_of(image: np.ndarray, tile: int = SIZE, gap: int = 2) -> tuple[int, int]:
    """(rows, columns) of a :func:`ganimation.video.grid` of ``tile`` px tiles."""
    height, width = image.shape[:2]
    assert (height + gap) % (tile + gap) == 0 and (width + gap) % (tile + gap) == 0, image.shape
    return (height + gap) // (tile + gap), (width + gap) // (tile + gap)


def test_demo_sequence() -> None:
    sequence = demo.demo_sequence(FRAMES)
    assert len(sequence) == SEQUENCE_LENGTH == 19
    assert not sequence[0].any() and not sequence[-1].any()
    peaks = [vector for vector in sequence
             if any(np.allclose(vector, expression_aus(name)) for name in demo.DEMO_EXPRESSIONS)]
    assert len(peaks) == len(demo.DEMO_EXPRESSIONS)
    assert all(not np.array_equal(a, b) for a, b in zip(sequence, sequence[1:]))  # no frame repeats
    assert len(demo.demo_sequence(16)) == 1 + 6 * (15 + 7)
    assert len(demo.demo_sequence(2)) == 1 + 6 * (1 + 1)


def test_demo_writes_every_output(demo_run: tuple[Path, dict[str, Path]]) -> None:
    output, written = demo_run
    assert {"grid", "gif", "mp4", "sweep"} <= set(written) <= {"grid", "gif", "mp4", "sweep", "photo", "photo_strip",
                                                                          "photo_gif"}
    assert written["gif"] == output / "expressions.gif" and written["mp4"] == output / "expressions.mp4"
    for path in written.values():
        assert path.is_file() and path.stat().st_size > 0 and path.parent == output
    assert not list(output.rglob("*.tmp*"))


def test_demo_animation(demo_run: tuple[Path, dict[str, Path]]) -> None:
    _, written = demo_run
    with Image.open(written["gif"]) as gif:
        assert gif.n_frames == SEQUENCE_LENGTH
        assert gif.size == (SIZE, SIZE)  # one face
    info = video_info(written["mp4"])
    assert info["frames"] == SEQUENCE_LENGTH and info["fps"] == pytest.approx(12)


def test_demo_grids(demo_run: tuple[Path, dict[str, Path]]) -> None:
    _, written = demo_run
    expressions = np.asarray(Image.open(written["grid"]).convert("RGB"))
    assert rows_of(expressions) == (4, 4)  # 1 face x 4 expressions; input | edit | attention | colour
    sweep = np.asarray(Image.open(written["sweep"]).convert("RGB"))
    assert rows_of(sweep) == (len(demo.SWEEP_AUS), 5)  # one row per AU, levels 0, .25, .5, .75, 1


def test_demo_photo(demo_run: tuple[Path, dict[str, Path]]) -> None:
    _, written = demo_run
    if "photo" not in written:
        pytest.skip("no face detected in the sample photo")
    photo = load_image(sample_photo_path())
    side_by_side = np.asarray(Image.open(written["photo"]).convert("RGB"))
    assert side_by_side.shape == (photo.shape[0], 2 * photo.shape[1], 3)
    np.testing.assert_array_equal(side_by_side[:, :photo.shape[1]], photo)  # the input, untouched
    assert not np.array_equal(side_by_side[:, photo.shape[1]:], photo)  # the edit changed the face
    strip = np.asarray(Image.open(written["photo_strip"]).convert("RGB"))
    side = demo.PHOTO_FACE_SIZE
    assert strip.shape == (side, side * (1 + len(demo.PHOTO_EXPRESSIONS)), 3)  # the photo, then each expression
    # one transition of FRAMES there, a hold, and half of FRAMES back, per expression
    per_expression = (FRAMES - 1) + max(1, FRAMES // 4) + (max(2, FRAMES // 2) - 1)
    with Image.open(written["photo_gif"]) as gif:
        assert gif.size == (side, side)
        # identical frames (the holds) are merged into longer ones: the playing time tells
        playing = 0
        for index in range(gif.n_frames):
            gif.seek(index)
            playing += gif.info["duration"]
    assert playing == pytest.approx((1 + len(demo.PHOTO_EXPRESSIONS) * per_expression) * 1000 / 12, rel=0.05)


def test_demo_argument_checks(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        demo.run_demo(tmp_path, checkpoint=checkpoint, faces=1, frames=1)
    with pytest.raises(ValueError, match="at least 1 face"):
        demo.run_demo(tmp_path, checkpoint=checkpoint, faces=0)


def test_demo_without_bundled_model_trains_one(tmp_path: Path, checkpoint: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_training(output: Path) -> Path:
        calls.append(output)
        return checkpoint

    monkeypatch.setattr(inference, "bundled_model_path", lambda: None)
    monkeypatch.setattr(demo, "train_fallback_model", fake_training)
    written = demo.run_demo(tmp_path / "out", faces=2, frames=2, photo=False)
    assert calls == [tmp_path / "out"]
    assert set(written) == {"grid", "gif", "mp4", "sweep"}
    assert rows_of(np.asarray(Image.open(written["grid"]).convert("RGB"))) == (8, 4)  # 2 faces x 4 expressions
    with Image.open(written["gif"]) as gif:
        assert gif.size == (2 * SIZE, SIZE)  # the faces side by side


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_demo(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    code, out, err = run(capsys, "demo", "-o", output, "--checkpoint", checkpoint, "--faces", 1, "--frames", FRAMES)
    assert code == 0, err
    printed = dict(line.strip().split(": ", 1) for line in out.strip().splitlines())
    assert {"grid", "gif", "mp4", "sweep"} <= set(printed)
    assert printed["gif"] == str(output / "expressions.gif")
    for path in printed.values():
        assert Path(path).is_file()
    code, _, err = run(capsys, "demo", "-o", output, "--checkpoint", checkpoint, "--frames", 1)
    assert code == 2 and "at least 2 frames" in err and "Traceback" not in err


def test_cli_evaluate(tmp_path: Path, checkpoint: Path, regressor_file: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "evaluation"
    code, out, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--identities", 1, "--random", 1,
                         "--regressor", regressor_file, "--ablation", f"twin={checkpoint}", "-o", output)
    assert code == 0, err
    report = json.loads((output / "evaluation.json").read_text(encoding="utf-8"))
    assert report["model"] == str(checkpoint)
    assert report["identities"] == 1 and report["edits_per_method"] == 17 * 3 + 7 + 1
    assert list(report["methods"]) == ["copy", "twin", "model"]
    assert report["methods"]["twin"] == report["methods"]["model"]  # the same weights
    assert report["methods"]["copy"]["change_outside"] == 0.0
    table = (output / "evaluation.md").read_text(encoding="utf-8")
    assert table in out and "| model |" in table and "| twin |" in table
    grid = np.asarray(Image.open(output / "evaluation_grid.png").convert("RGB"))
    # 8 picked edits; source, truth, then edit, attention and colour of each model.
    assert rows_of(grid) == (8, 2 + 3 * 2)
    assert f"report: {output / 'evaluation.json'}" in out


def test_cli_evaluate_errors(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--identities", 1, "--random", 0,
                       "--regressor", tmp_path / "none.safetensors", "-o", tmp_path / "out")
    assert code == 2 and "none.safetensors" in err and "Traceback" not in err
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--ablation", "nopath", "-o", tmp_path / "out")
    assert code == 2 and "NAME=PATH" in err


def test_sequence_vectors_are_valid() -> None:
    for vector in demo.demo_sequence(5):
        assert vector.shape == (NUM_AUS,) and vector.dtype == np.float32
        assert 0.0 <= vector.min() and vector.max() <= 1.0
