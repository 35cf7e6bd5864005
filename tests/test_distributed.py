"""Data-parallel training under torchrun: 2 CPU processes with gloo, on the smoke model.

* the ranks' weights (and random streams) stay identical, and N processes on a global batch
  reproduce one process on the same batch (same samples, same per-sample random draws);
* resuming under DDP (rank 0 saved, every rank loads) continues exactly;
* a signal seen by one rank stops all of them after the same step, with a checkpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import logged_metrics
from ganimation.checkpoint import MODEL_FILE, checkpoint_dirs, read_model_file
from ganimation.config import build_config
from ganimation.training import GANimationTrainer

from support import environment, make_dataset
STEPS = 6  # smoke preset: critic_steps 2 -> 3 generator steps; checkpoints at 2 and 4
TIMEOUT = 180

# Runs the real CLI (`ganimation train`) in a torchrun worker and records what only the worker
# knows: its pid (for the signal test) and, at the end, its own copy of the weights it exports
# (the trained generator, or its average with optim.ema_decay > 0) and RNG.
WORKER = """
import gc, os, sys
from pathlib import Path
import torch
import ganimation.training as training
from ganimation.checkpoint import unwrap
from ganimation.cli import main

dump = Path(os.environ["DUMP_DIR"])
rank = os.environ["RANK"]
(dump / f"pid{rank}").write_text(str(os.getpid()))
trainers = []
wrap = training.wrap_distributed
def spy(trainer, device):
    trainers.append(trainer)
    wrap(trainer, device)
training.wrap_distributed = spy
code = main(sys.argv[1:])
trainer = trainers[0]
state = {f"{name}.{key}": value for name, module in (("generator", trainer.exported_generator),
                                                     ("discriminator", trainer.discriminator))
         for key, value in unwrap(module).state_dict().items()}
state["rng"] = trainer.rng.get_state()
state["step"] = torch.tensor(trainer.progress.step)
state["ddp"] = torch.tensor(type(trainer.generator).__name__ == "DistributedDataParallel")
torch.save(state, dump / f"rank{rank}.pt")
# The spied trainer's DDP wrappers still hold the destroyed process group; release them while
# the interpreter is alive, as the CLI does with its own, or Gloo may abort at exit.
del trainer, state
trainers.clear()
gc.collect()
sys.exit(code)
"""


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def train_args(data: Path, output: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "-o", str(output), "--preset", "smoke", "--no-progress",
            "--set", "run.device=cpu", *extra]


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def test_ranks_draw_their_own_share_of_the_global_batch() -> None:
    """Rank r of N draws the rows r::N of what one process draws for the whole global batch."""
    config = build_config("smoke")
    pool = torch.rand(10, 17, generator=torch.Generator().manual_seed(1))
    single = GANimationTrainer(config, pool, steps_per_epoch=4, device=torch.device("cpu"))
    ranks = [GANimationTrainer(config, pool, steps_per_epoch=4, device=torch.device("cpu")) for _ in range(2)]
    for rank, trainer in enumerate(ranks):
        trainer.rank, trainer.world_size = rank, 2
    images = torch.rand(4, 3, 32, 32)
    for _ in range(3):
        expected = single.sample_targets(4)
        drawn = [trainer.sample_targets(2) for trainer in ranks]
        assert torch.equal(drawn[0], expected[0::2]) and torch.equal(drawn[1], expected[1::2])
        assert not torch.equal(drawn[0], drawn[1])  # different targets for different samples
        flipped = single.random_flip(images)
        assert torch.equal(ranks[0].random_flip(images[0::2]), flipped[0::2])
        assert torch.equal(ranks[1].random_flip(images[1::2]), flipped[1::2])
    assert all(torch.equal(trainer.rng.get_state(), single.rng.get_state()) for trainer in ranks)


def prepare(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A dataset, the worker script and an empty folder for its dumps: (data, worker, dumps)."""
    data = make_dataset(tmp_path / "data")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    return data, worker, dumps


def train_twice(tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """STEPS steps on one dataset by 2 torchrun workers (into tmp_path/ddp, each dumping its
    weights into tmp_path/dumps) and by one process (tmp_path/single): (data, dumps)."""
    data, worker, dumps = prepare(tmp_path)
    run(torchrun(str(worker), *train_args(data, tmp_path / "ddp", "--steps", str(STEPS), *extra)),
        environment(DUMP_DIR=str(dumps)))
    run([sys.executable, "-m", "ganimation", *train_args(data, tmp_path / "single", "--steps", str(STEPS), *extra)],
        environment())
    return data, dumps


def test_torchrun_matches_one_process_and_resumes(tmp_path: Path) -> None:
    ddp, single, resumed = tmp_path / "ddp", tmp_path / "single", tmp_path / "resumed"
    started = time.perf_counter()
    data, dumps = train_twice(tmp_path)

    # 1. Both ranks hold identical weights and RNG state, and rank 0 saved exactly them.
    rank0, rank1 = (torch.load(dumps / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert bool(rank0["ddp"]) and int(rank0["step"]) == int(rank1["step"]) == STEPS
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    saved = load_file(ddp / MODEL_FILE)
    assert all(torch.equal(saved[key], rank0[key]) for key in saved)

    # 2. Two processes with 2 images each = one process with the global batch of 4: the logged
    #    losses (averaged over ranks) agree at every step up to float summation order.
    ddp_rows, single_rows = logged_metrics(ddp), logged_metrics(single)
    assert [row["step"] for row in ddp_rows] == list(range(1, STEPS + 1))
    assert [sorted(row) for row in ddp_rows] == [sorted(row) for row in single_rows]
    for ours, theirs in zip(ddp_rows, single_rows):
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (ours["step"], key)
    # The weights too. Adam's first steps move each weight by about lr * sign(gradient), so the
    # few weights whose gradient is zero up to rounding (the AU input channels of the first
    # convolution, constant maps) may move by up to lr per generator step either way.
    reference = load_file(single / MODEL_FILE)
    lr, generator_steps = 1e-4, STEPS // 2
    differing = total = 0
    for key, value in reference.items():
        difference = (saved[key] - value).abs()
        if key.startswith("discriminator."):
            assert difference.max() < 1e-6, key
        assert difference.max() <= 2 * lr * generator_steps, key
        differing += int((difference > 1e-6).sum())
        total += value.numel()
    assert differing / total < 0.01

    # 3. Resume under DDP from the step-2 checkpoint (rank 0 wrote it, both ranks load it):
    #    the continuation is the uninterrupted run, bit for bit.
    resumed.mkdir()
    (resumed / "checkpoints").mkdir()
    shutil.copytree(ddp / "checkpoints" / "step_000000002", resumed / "checkpoints" / "step_000000002")
    shutil.copy(ddp / "config.yaml", resumed / "config.yaml")
    run(torchrun("-m", "ganimation", "train", "--data", str(data), "-o", str(resumed), "--resume", "--no-progress"),
        environment())
    assert [path.name for path in checkpoint_dirs(resumed)][-1] == f"step_{STEPS:09d}"
    assert logged_metrics(resumed) == ddp_rows[2:]  # the copied run has no earlier log lines
    final = load_file(resumed / MODEL_FILE)
    assert all(torch.equal(final[key], saved[key]) for key in saved)
    print(f"torchrun x2 + single + resume: {time.perf_counter() - started:.1f} s")


def test_torchrun_keeps_the_same_weight_average_on_every_rank(tmp_path: Path) -> None:
    _, dumps = train_twice(tmp_path, "--set", "optim.ema_decay=0.5")
    rank0, rank1 = (torch.load(dumps / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    saved, single = load_file(tmp_path / "ddp" / MODEL_FILE), load_file(tmp_path / "single" / MODEL_FILE)
    assert all(torch.equal(saved[key], rank0[key]) for key in saved)  # the average, not the trained weights
    trained = torch.load(checkpoint_dirs(tmp_path / "ddp")[-1] / "training_state.pt", weights_only=True)
    assert any(not torch.equal(value, saved[f"generator.{key}"]) for key, value in trained["generator_training"].items())
    # One process on the global batch has the same average (up to Adam's rounding, as above).
    assert all((saved[key] - single[key]).abs().max() <= 2e-4 * STEPS for key in saved)


def test_a_signal_to_one_rank_stops_every_rank_with_a_checkpoint(tmp_path: Path) -> None:
    data, worker, dumps = prepare(tmp_path)
    output = tmp_path / "run"
    process = subprocess.Popen(
        torchrun(str(worker), *train_args(data, output, "--steps", "400", "--set", "optim.epochs=100")),
        env=environment(DUMP_DIR=str(dumps)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not checkpoint_dirs(output) or not (dumps / "pid1").is_file():
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        os.kill(int((dumps / "pid1").read_text()), signal.SIGTERM)  # rank 1 only
        log, _ = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0  # the workers exit with 130, torchrun reports the failure
    assert "received SIGTERM" in log and "training interrupted; resume with --resume" in log
    _, _, extra = read_model_file(output / MODEL_FILE)
    latest = checkpoint_dirs(output)[-1]
    assert extra["interrupted"] is True and latest.name == f"step_{extra['step']:09d}"
    assert 2 <= extra["step"] < 400
    assert logged_metrics(output)[-1]["step"] == extra["step"]
