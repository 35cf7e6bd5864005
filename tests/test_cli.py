"""The ``ganimation`` command in-process (``main([...])``), plus one real ``python -m`` run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_face
from ganimation import cli
from ganimation.checkpoint import MODEL_FILE, checkpoint_dirs

SRC = Path(__file__).resolve().parents[1] / "src"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ganimation ")
    assert "error: " in lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def face(tmp_path: Path) -> Path:
    return write_face(tmp_path / "face.png")


def test_python_m_help() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "ganimation", "--help"], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ganimation")
    for command in ("train", "prepare", "animate"):
        assert command in result.stdout
    assert result.stderr == ""


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 2 and "usage: ganimation" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from ganimation import __version__

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"ganimation {__version__}"


def test_end_to_end_train_then_animate(tmp_path: Path, dataset_dir: Path, face: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "--data", str(dataset_dir), "-o", str(run_dir), "--preset", "smoke",
                         "--steps", "4", "--no-progress", "--set", "run.device=cpu")
    assert code == 0, err
    assert f"model: {run_dir / MODEL_FILE}" in out
    assert (run_dir / MODEL_FILE).is_file() and (run_dir / "config.yaml").is_file()
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step_000000002", "step_000000004"]
    saved = (run_dir / "config.yaml").read_text(encoding="utf-8")
    assert "max_steps: 4" in saved and f"root: {dataset_dir}" in saved

    out_png = tmp_path / "out" / "out.png"
    code, out, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(run_dir), "--au", "AU12=0.8",
                         "-o", str(out_png), "--masks", "--device", "cpu")
    assert code == 0, err
    attention_png, colour_png = tmp_path / "out" / "out_attention.png", tmp_path / "out" / "out_colour.png"
    for path in (out_png, attention_png, colour_png):
        assert path.is_file() and str(path) in out
        picture = np.asarray(Image.open(path))
        assert picture.shape == (32, 32, 3) and picture.dtype == np.uint8
    attention = np.asarray(Image.open(attention_png))
    assert (attention[..., 0] == attention[..., 1]).all()  # a grey mask

    gif = tmp_path / "out" / "smile.gif"
    code, out, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(run_dir / MODEL_FILE),
                         "--expression", "happy", "--frames", "4", "--gif", str(gif), "--device", "cpu")
    assert code == 0, err
    assert f"video: {gif}" in out
    with Image.open(gif) as animation:
        assert animation.format == "GIF"
        assert animation.n_frames == 4
        assert animation.size == (32, 32)
    assert not out_png.with_name("smile.png").exists()

    # --resume continues the same run from its newest checkpoint and config.
    code, out, err = run(capsys, "train", "-o", str(run_dir), "--resume", "--steps", "5", "--no-progress")
    assert code == 0, err
    assert [p.name for p in checkpoint_dirs(run_dir)][-1] == "step_000000005"


def test_animate_interpolation_from_source_aus(tmp_path: Path, trained_run: Path, face: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    gif = tmp_path / "sad.gif"
    out_png = tmp_path / "sad.png"
    code, out, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(trained_run),
                         "--expression", "sad", "--intensity", "0.5", "--source-au", "AU12=0.4",
                         "--au", "AU45=1", "--gif", str(gif), "-o", str(out_png), "--device", "cpu")
    assert code == 0, err
    with Image.open(gif) as animation:
        assert animation.n_frames == 24  # the default when --gif is given without --frames
    assert out_png.is_file() and not (tmp_path / "sad_attention.png").exists()


def test_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "synth", str(tmp_path / "data"), "--identities", "3", "--per-identity", "2",
                       "--size", "32", "--seed", "4", "--test-fraction", "0.4", "--variations", "0.5", "--workers", "2",
                       "--single-aus", "0.25")
    assert code == 0 and str(tmp_path / "data") in out
    assert len(list((tmp_path / "data" / "images").glob("*.png"))) == 6
    assert len((tmp_path / "data" / "test_ids.csv").read_text().splitlines()) == 1 + 2
    assert "variations 0.5, single AUs 0.25" in (tmp_path / "data" / "README.txt").read_text()
    code, _, err = run(capsys, "synth", str(tmp_path / "bad"), "--identities", "1", "--variations", "2")
    assert_one_line_error(code, err, "variations")
    code, _, err = run(capsys, "synth", str(tmp_path / "bad"), "--identities", "1", "--single-aus", "1.5")
    assert_one_line_error(code, err, "single_aus")
    code, _, err = run(capsys, "synth", str(tmp_path / "bad"), "--identities", "1", "--workers", "-2")
    assert_one_line_error(code, err, "workers")


def test_prepare(dataset_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "prepare", str(dataset_dir))
    assert code == 0, err
    assert str(dataset_dir) in out
    assert "images found:         24" in out
    assert "train 20, test 4" in out
    assert "Status: OK" in out


def test_prepare_json(dataset_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code, out, _ = run(capsys, "prepare", str(dataset_dir), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert report["num_images"] == 24 and report["train_size"] == 20 and report["test_size"] == 4


def test_prepare_empty_folder_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "prepare", str(tmp_path))
    assert code == 1 and "NOT USABLE" in out


# --------------------------------------------------------------------------- errors


def test_missing_image(tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nobody.png"
    code, _, err = run(capsys, "animate", str(missing), "--crop", "--checkpoint", str(trained_run),
                       "--au", "AU12=0.8", "-o", str(tmp_path / "o.png"))
    assert_one_line_error(code, err, "nobody.png", "no such image file")
    assert not (tmp_path / "o.png").exists()


def test_an_output_that_is_a_folder_is_refused(tmp_path: Path, trained_run: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "clip.mp4").mkdir()
    code, _, err = run(capsys, "animate", str(tmp_path / "nobody.png"), "--crop", "--checkpoint", str(trained_run),
                       "--au", "AU12=0.8", "-o", str(tmp_path / "clip.mp4"))
    assert_one_line_error(code, err, "clip.mp4: is a folder")  # refused before the input is even read
    assert not list((tmp_path / "clip.mp4").iterdir())


def test_unreadable_image(tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, _, err = run(capsys, "animate", str(broken), "--crop", "--checkpoint", str(trained_run),
                       "--au", "AU12=0.8", "-o", str(tmp_path / "o.png"))
    assert_one_line_error(code, err, "broken.jpg", "unreadable image")


def test_bad_au_name(tmp_path: Path, face: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(trained_run),
                       "--au", "AU13=0.5", "-o", str(tmp_path / "o.png"))
    assert_one_line_error(code, err, "AU13", "unknown action unit")


def test_au_out_of_range(tmp_path: Path, face: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(trained_run),
                       "--au", "AU12=1.7", "-o", str(tmp_path / "o.png"))
    assert_one_line_error(code, err, "AU12=1.7", "within [0, 1]")


def test_unknown_expression(tmp_path: Path, face: Path, trained_run: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(trained_run),
                       "--expression", "smug", "-o", str(tmp_path / "o.png"))
    assert_one_line_error(code, err, "unknown expression 'smug'")


def test_no_target(tmp_path: Path, face: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(trained_run),
                       "-o", str(tmp_path / "o.png"))
    assert_one_line_error(code, err, "no target expression")


def test_no_output(face: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(trained_run), "--au", "AU12=1")
    assert_one_line_error(code, err, "nothing to write")


def test_truncated_checkpoint(tmp_path: Path, face: Path, trained_run: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "cut.safetensors"
    broken.write_bytes((trained_run / MODEL_FILE).read_bytes()[:2000])
    code, _, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(broken), "--au", "AU12=0.8",
                       "-o", str(tmp_path / "o.png"))
    assert_one_line_error(code, err, "cut.safetensors", "truncated")
    assert not (tmp_path / "o.png").exists()


def test_missing_checkpoint(tmp_path: Path, face: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(tmp_path / "none"),
                       "--au", "AU12=0.8", "-o", str(tmp_path / "o.png"))
    assert_one_line_error(code, err, "none", "no such checkpoint")


def test_train_without_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "-o", str(tmp_path / "run"), "--preset", "smoke", "--no-progress")
    assert_one_line_error(code, err, "no dataset given", "--data")
    assert not (tmp_path / "run").exists()


def test_train_unknown_config_key(tmp_path: Path, dataset_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "--data", str(dataset_dir), "-o", str(tmp_path / "run"), "--preset",
                       "smoke", "--set", "optim.learning_rate=1", "--no-progress")
    assert_one_line_error(code, err, "unknown config key 'optim.learning_rate'")
    assert not (tmp_path / "run").exists()


def test_train_bad_config_value(tmp_path: Path, dataset_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "--data", str(dataset_dir), "-o", str(tmp_path / "run"), "--preset",
                       "smoke", "--set", "data.batch_size=lots", "--no-progress")
    assert_one_line_error(code, err, "data.batch_size")


def test_train_unknown_preset(tmp_path: Path, dataset_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "--data", str(dataset_dir), "-o", str(tmp_path / "run"),
                       "--preset", "huge", "--no-progress")
    assert_one_line_error(code, err, "unknown preset 'huge'")


def test_train_missing_config_file(tmp_path: Path, dataset_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "--data", str(dataset_dir), "--config", str(tmp_path / "exp.yaml"),
                       "--no-progress")
    assert_one_line_error(code, err, "exp.yaml", "no such config file")


def test_debug_shows_traceback(tmp_path: Path, face: Path) -> None:
    from ganimation.aus import AUError

    with pytest.raises(AUError):
        cli.main(["--debug", "animate", str(face), "--crop", "--au", "AU13=0.5", "-o", str(tmp_path / "o.png")])


def _subcommands() -> dict[str, "argparse.ArgumentParser"]:
    import argparse

    parser = cli.build_parser()
    (subparsers,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_every_option_of_every_command_has_help_text() -> None:
    import argparse

    commands = _subcommands()
    assert {"animate", "train", "synth", "aus", "reenact", "demo"} <= set(commands)
    missing = []
    for name, parser in [("ganimation", cli.build_parser()), *commands.items()]:
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == [], f"options without help text: {', '.join(missing)}"


def test_animate_examples_need_nothing_a_new_user_lacks() -> None:
    epilog = _subcommands()["animate"].epilog
    assert "ganimation animate photo.jpg" in epilog and "runs/" not in epilog and "--checkpoint RUN" in epilog


@pytest.mark.parametrize(("option", "name", "needle"), [
    ("-o", "edit.xyz", "unknown output type .xyz: give an image"),
    ("-o", "edit", "unknown output type (no suffix)"),
    ("-o", "edit.webm", "cannot write a video as .webm"),
    ("--gif", "edit.png", "a GIF's name ends in .gif"),
    ("--mp4", "edit.gif", "a video's name ends in .mp4"),
])
def test_animate_refuses_an_output_it_cannot_write(tmp_path: Path, face: Path, capsys: pytest.CaptureFixture[str],
                                                   option: str, name: str, needle: str) -> None:
    code, _, err = run(capsys, "animate", str(face), "--expression", "happy", option, str(tmp_path / name))
    assert_one_line_error(code, err, needle)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["face.png"]


# --------------------------------------------------------------------------- hostile input (issue 21)


def smoke_train(capsys: pytest.CaptureFixture[str], data: Path, output: Path, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "train", "--data", str(data), "-o", str(output), "--preset", "smoke", "--no-progress",
               "--set", "run.device=cpu", *extra)


def test_train_refuses_a_folder_holding_a_run(tmp_path: Path, dataset_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A second `train` into a run folder used to wipe its metrics, overwrite its config and model
    and lose its own checkpoints to pruning (the old run's higher steps won)."""
    run_dir = tmp_path / "run"
    code, _, err = smoke_train(capsys, dataset_dir, run_dir, "--steps", "4")
    assert code == 0, err
    before = {path: path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file()}

    code, _, err = smoke_train(capsys, dataset_dir, run_dir, "--steps", "2", "--set", "optim.lr_generator=0.001")
    assert_one_line_error(code, err, str(run_dir), "already holds a run", "--resume", "--overwrite")
    assert {path: path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file()} == before

    code, _, err = smoke_train(capsys, dataset_dir, run_dir, "--steps", "2", "--resume", "--overwrite")
    assert_one_line_error(code, err, "pass one")

    (run_dir / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = smoke_train(capsys, dataset_dir, run_dir, "--steps", "2", "--overwrite",
                               "--set", "run.keep_checkpoints=1")
    assert code == 0, err
    assert [path.name for path in checkpoint_dirs(run_dir)] == ["step_000000002"]  # not pruned by the old step 4
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert "lr_generator: 0.001" not in (run_dir / "config.yaml").read_text(encoding="utf-8")
    assert (run_dir / "notes.txt").read_text(encoding="utf-8") == "mine"  # only the run's own outputs go

    # A finished model without checkpoints is not restarted from scratch by --resume either.
    shutil.rmtree(run_dir / "checkpoints")
    code, _, err = smoke_train(capsys, dataset_dir, run_dir, "--resume")
    assert_one_line_error(code, err, "holds a trained model but no checkpoint", "--overwrite")


@pytest.mark.parametrize(("extra", "needles"), [
    (["--set", "loss.lambda_gp=nan"], ["loss.lambda_gp=nan", "finite"]),
    (["--set", "optim.lr_generator=inf"], ["optim.lr_generator=inf", "finite"]),
    (["--set", "optim.lr_discriminator=1e30"], ["optim.lr_discriminator=1e+30", "out of range"]),
    (["--set", "run.log_every=0"], ["run.log_every must be at least 1"]),
    (["--set", "run.sample_every=0"], ["run.sample_every must be at least 1"]),
    (["--set", "run.checkpoint_every=0"], ["run.checkpoint_every must be at least 1"]),
    (["--set", "run.num_samples=0"], ["run.num_samples must be at least 1"]),
    (["--set", "model.image_size=0"], ["model.image_size must be positive"]),
    (["--steps", "-1"], ["optim.max_steps (--steps) must be at least 1; got -1"]),
    (["--set", "run.device=cuda"], ["run.device=cuda", "CUDA is not available"]),
    (["--set", "run.device=tpu9"], ["run.device='tpu9' is not a device"]),
])
def test_train_bad_values_are_one_line(tmp_path: Path, dataset_dir: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, extra: list[str], needles: list[str]) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # "without CUDA", on any machine
    code, _, err = smoke_train(capsys, dataset_dir, tmp_path / "run", *extra)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "run" / MODEL_FILE).exists()


def test_web_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "web", "--port", "99999")
    assert_one_line_error(code, err, "--port 99999", "1-65535")


def test_animate_on_a_missing_gpu_is_one_line(tmp_path: Path, face: Path, trained_run: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(capsys, "animate", str(face), "--crop", "--checkpoint", str(trained_run), "--au", "AU12=1",
                       "--device", "cuda", "-o", str(tmp_path / "o.png"))
    assert_one_line_error(code, err, "device=cuda", "CUDA is not available")


def test_train_skips_what_prepare_excludes_and_says_so(tmp_path: Path, dataset_dir: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """`prepare` said OK and left out an unreadable image; `train` then died on it at step 7.
    Now train leaves out what prepare does and logs the same counts (bad rows, unmatched rows)."""
    data = tmp_path / "data"
    shutil.copytree(dataset_dir, data)
    (data / "images" / "face_003.png").write_bytes(b"not a png")
    with open(data / "aus.csv", "a", encoding="utf-8") as stream:
        stream.write("ghost.png," + ",".join(["1.0"] * 17) + "\n")
        stream.write("face_005.png," + ",".join(["abc"] * 17) + "\n")
    code, out, err = run(capsys, "prepare", str(data))
    assert code == 0 and "Status: OK" in out, out + err
    caplog.set_level("WARNING", logger="ganimation.data")
    # 20 training images, batch 4: 5 steps per epoch, so 8 steps would reach every image.
    code, out, err = smoke_train(capsys, data, tmp_path / "run", "--steps", "8")
    assert code == 0, err
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any("1 unreadable images left out" in line and "face_003.png" in line for line in warnings), warnings
    assert any("1 AUs without images left out" in line and "ghost.png" in line for line in warnings), warnings
    assert any("1 invalid AU rows left out" in line and "'abc' is not a number" in line for line in warnings), warnings


def test_a_worker_error_names_the_file(tmp_path: Path, dataset_dir: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An image that breaks after the up-front check (or any loader error) read "Caught
    ImageReadError in DataLoader worker process 0." with data.num_workers > 0: no file name."""
    from ganimation import data as data_module

    data = tmp_path / "data"
    shutil.copytree(dataset_dir, data)
    (data / "images" / "face_003.png").write_bytes(b"not a png")
    monkeypatch.setattr(data_module, "inspect_image", lambda path: (32, 32))  # it looked fine at the start
    code, _, err = smoke_train(capsys, data, tmp_path / "run", "--steps", "8", "--set", "data.num_workers=2",
                               "--set", "data.cache_images=false")
    assert_one_line_error(code, err, "face_003.png", "unreadable image")
    assert "Caught" not in err and "worker process" not in err


def test_convert_on_a_full_disk_is_one_line(tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from ganimation import checkpoint

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "half.safetensors"
    target.write_bytes(b"an older file")
    monkeypatch.setattr(checkpoint, "save_file", full)
    code, _, err = run(capsys, "convert", str(trained_run), "-o", str(target), "--half")
    assert_one_line_error(code, err, str(target), "no space left on device")
    assert target.read_bytes() == b"an older file" and list(tmp_path.iterdir()) == [target]
