"""Crash safety of training: real subprocesses killed with SIGKILL, stopped with SIGTERM/SIGINT.

Every run checkpoints after every step (smoke model, deterministic). After a kill the newest
complete checkpoint must load, temporary folders must never count as checkpoints, and
``--resume`` must continue exactly: the losses of ``metrics.jsonl`` equal those of an
uninterrupted run with the same seed, step for step.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import logged_metrics
import ganimation
from ganimation.checkpoint import (
    MODEL_FILE, CheckpointError, checkpoint_dirs, latest_checkpoint, load_training_state, read_model_file,
)
from ganimation.cli import main as cli_main
from ganimation.config import build_config
from ganimation.training import GANimationTrainer

from support import environment, make_dataset
REFERENCE_STEPS = 16
TIMEOUT = 180

# Runs the CLI with the checkpoint writer slowed down from a given step on: once the model file
# of that checkpoint is in its temporary folder (the training state not yet), it leaves a marker
# and sleeps, so the test can SIGKILL it in the middle of the write. Test-only monkeypatching.
SLOW_WRITER = """
import os, sys, time
from pathlib import Path
import ganimation.checkpoint as checkpoint
from ganimation.cli import main

marker, slow_from = Path(os.environ["MARKER"]), int(os.environ["SLOW_FROM_STEP"])
original = checkpoint.save_model_file
def slow_save_model_file(path, *args, **kwargs):
    result = original(path, *args, **kwargs)
    folder = Path(path).parent
    if folder.name.endswith(".tmp") and int(folder.name.split(".")[1].split("_")[1]) >= slow_from:
        marker.write_text(str(folder))
        time.sleep(120)
    return result
checkpoint.save_model_file = slow_save_model_file
sys.exit(main(sys.argv[1:]))
"""


def train_command(data: Path, output: Path, steps: int, script: Path | None = None) -> list[str]:
    entry = [str(script)] if script else ["-m", "ganimation"]
    # 100 epochs of 4 batches: the learning-rate schedule does not depend on --steps, so runs
    # stopped at different steps follow one trajectory.
    return [sys.executable, *entry, "train", "--data", str(data), "-o", str(output), "--preset", "smoke",
            "--steps", str(steps), "--no-progress", "--set", "optim.epochs=100", "--set", "run.checkpoint_every=1",
            "--set", "run.sample_every=1000", "--set", "run.deterministic=true", "--set", "run.device=cpu"]


def resume_command(output: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "ganimation", "train", "-o", str(output), "--resume", "--steps", str(steps),
            "--no-progress"]


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, env=env or environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{command} failed:\n{result.stderr[-4000:]}"
    return result


def wait_for(condition, process: subprocess.Popen[str], what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended before {what}:\n{process.communicate()[1][-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def steps_of(run_dir: Path) -> list[int]:
    return [int(path.name.split("_")[1]) for path in checkpoint_dirs(run_dir)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("crash") / "data")


@pytest.fixture(scope="module")
def reference(data: Path) -> list[dict[str, float]]:
    """The uninterrupted run: REFERENCE_STEPS steps, a checkpoint after each."""
    output = data.parent / "reference"
    run(train_command(data, output, REFERENCE_STEPS))
    rows = logged_metrics(output)
    assert [row["step"] for row in rows] == list(range(1, REFERENCE_STEPS + 1))
    return rows


def assert_resumes_exactly(output: Path, reference: list[dict[str, float]]) -> None:
    latest = latest_checkpoint(output)
    assert latest is not None and int(latest.name.split("_")[1]) < REFERENCE_STEPS
    result = run(resume_command(output, REFERENCE_STEPS))
    assert f"resumed from {latest}" in result.stderr
    assert logged_metrics(output) == reference  # every step, the kept ones and the recomputed ones


def test_sigkill_during_a_checkpoint_write(tmp_path: Path, data: Path, reference: list[dict[str, float]]) -> None:
    output, marker, script = tmp_path / "run", tmp_path / "writing", tmp_path / "slow_writer.py"
    script.write_text(SLOW_WRITER)
    process = subprocess.Popen(train_command(data, output, 400, script), env=environment(
        MARKER=str(marker), SLOW_FROM_STEP="4"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker.exists, process, "the step-4 checkpoint write")
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    # The half-written checkpoint is a temporary folder holding the model file but no state ...
    temp = Path(marker.read_text())
    assert temp.is_dir() and temp.parent == output / "checkpoints" and temp.name.startswith(".step_000000004.")
    assert (temp / MODEL_FILE).is_file() and not (temp / "training_state.pt").exists()
    # ... which is never taken for a checkpoint: the newest complete one is step 3, and it loads.
    assert steps_of(output) == [1, 2, 3]
    assert latest_checkpoint(output) == output / "checkpoints" / "step_000000003"
    load_training_state(output / "checkpoints" / "step_000000003")
    assert_resumes_exactly(output, reference)
    assert steps_of(output) == [14, 15, 16]  # pruning kept the newest three
    assert not temp.exists()  # the half-written folder was removed by the next save


def test_sigkill_at_a_random_moment(tmp_path: Path, data: Path, reference: list[dict[str, float]]) -> None:
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 0.4)
    output = tmp_path / "run"
    process = subprocess.Popen(train_command(data, output, 400), env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: bool(checkpoint_dirs(output)), process, "a first checkpoint")
        # A random moment, but within the reference run's steps however fast this machine trains
        # (an idle one can pass step 16 within 0.4 s), so that the resumed run has steps to redo.
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and max(steps_of(output), default=0) < REFERENCE_STEPS - 2:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    context = f"kill {delay:.3f} s after the first checkpoint or at step {REFERENCE_STEPS - 2} (seed {seed})"
    assert process.returncode == -signal.SIGKILL, context
    leftovers = sorted(path.name for path in (output / "checkpoints").iterdir() if path.name.startswith("."))
    print(f"{context}: checkpoints {steps_of(output)}, temporary folders {leftovers}")
    # Every listed checkpoint is complete and loads.
    for folder in checkpoint_dirs(output):
        read_model_file(folder / MODEL_FILE)
        load_training_state(folder)
    assert_resumes_exactly(output, reference)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_resume_continues(tmp_path: Path, data: Path,
                                                        reference: list[dict[str, float]],
                                                        signum: signal.Signals) -> None:
    output = tmp_path / "run"
    process = subprocess.Popen(train_command(data, output, 400), env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: 2 in steps_of(output), process, "the step-2 checkpoint")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert f"received {signum.name}: saving a checkpoint and stopping" in stderr
    assert "interrupted: training interrupted; resume with --resume" in stderr
    _, _, extra = read_model_file(output / MODEL_FILE)
    stopped_at = extra["step"]
    assert extra["interrupted"] is True and stopped_at >= 2
    assert steps_of(output)[-1] == stopped_at and logged_metrics(output)[-1]["step"] == stopped_at
    assert_resumes_exactly(output, reference)
    _, _, extra = read_model_file(output / MODEL_FILE)
    assert extra == {**extra, "step": REFERENCE_STEPS, "interrupted": False}


def test_checkpoint_records_config_and_version_and_refuses_another_model(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = build_config("smoke", overrides=[f"data.root={data}", f"run.output_dir={tmp_path}"])
    pool = torch.rand(8, 17)
    trainer = GANimationTrainer(config, pool, steps_per_epoch=4, device=torch.device("cpu"))
    folder = trainer.save(tmp_path, keep=3)
    model_config, _, extra = read_model_file(folder / MODEL_FILE)
    assert model_config == config.model and extra["package_version"] == ganimation.__version__
    assert yaml.safe_load((folder / "config.yaml").read_text()) == config.to_dict()

    other = build_config("smoke", overrides=["model.generator_channels=4", "model.norm_affine=false"])
    with pytest.raises(CheckpointError) as error:
        GANimationTrainer(other, pool, steps_per_epoch=4, device=torch.device("cpu")).restore(folder)
    message = str(error.value)
    assert "model config differs" in message
    assert "generator_channels: checkpoint 8 vs config 4" in message
    assert "norm_affine: checkpoint True vs config False" in message
    assert "image_size" not in message  # only what differs

    # The same through the CLI: a one-line error, exit status 2, nothing overwritten.
    code = cli_main(["train", "-o", str(tmp_path), "--resume", "--data", str(data), "--preset", "smoke",
                     "--set", "model.generator_channels=4", "--no-progress"])
    assert code == 2
    assert "generator_channels: checkpoint 8 vs config 4" in capsys.readouterr().err
    assert checkpoint_dirs(tmp_path) == [folder]
