"""Data-parallel training under torchrun: 2 CPU processes with gloo, on the smoke model.

* the ranks' weights (and random streams) stay identical, and N processes on a global batch
  reproduce, bit for bit, one process that splits that batch the same way (same samples, same
  per-sample random draws, gradients averaged as DDP averages them);
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

import torch
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler

from conftest import logged_metrics
from ganimation.checkpoint import MODEL_FILE, checkpoint_dirs, read_model_file
from ganimation.config import build_config
from ganimation.training import GANimationTrainer, epoch_batches

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


# The one-process reference for a torchrun run of 2 workers: the real CLI in 2 threads of one
# process, each a "rank" that trains on its own half of every global batch, exactly as a worker
# does. Why not one process on the whole batch of 4: DDP's gradient is (g0 + g1) / 2, where g_r
# is computed by rank r from its 2 images, and a batch of 4 sums the same terms in another order
# (and conv kernels may block a batch of 4 differently from one of 2). Those rounding differences
# are tiny, but Adam's first steps move a weight by about lr * sign(gradient) whatever the
# gradient's size, so every weight whose gradient is zero up to rounding (AU input channels
# before an InstanceNorm, say) moves by lr either way, and how many such weights there are and
# how the rest follow depends on the CPU's kernels: no tolerance follows from the arithmetic.
# Split the same way, the arithmetic is the same: each rank's forward and backward run the same
# kernels on the same tensors of the same shapes with one intra-op thread, DDP multiplies each
# gradient by 1/2 (exact in binary floating point) and Gloo adds the two halves once (float
# addition is commutative), which is what the hook below does; the logged losses are averaged by
# the real `_mean_across_ranks`. So the torchrun run and this one agree bit for bit, on any CPU.
EMULATOR = """
import sys, threading
import torch
import torch.distributed as dist
import ganimation.training as training
from ganimation.cli import main

WORLD = 2
local = threading.local()
barrier = threading.Barrier(WORLD)
slots = [None] * WORLD
trainers = [None] * WORLD
build_lock = threading.Lock()


def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
    # Gloo's all-reduce of 2 processes: one elementwise sum (or max), the same result on both.
    slots[local.rank] = tensor.clone()
    barrier.wait()
    combined = slots[0] + slots[1] if op == dist.ReduceOp.SUM else torch.maximum(slots[0], slots[1])
    barrier.wait()
    tensor.copy_(combined)


def average_gradients(optimizer, args, kwargs):
    # DDP's backward: every gradient times 1 / world size (into one bucket), then all-reduced.
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    bucket = torch.cat([grad.reshape(-1) for grad in grads]) * (1.0 / WORLD)
    all_reduce(bucket)
    for grad, part in zip(grads, bucket.split([grad.numel() for grad in grads])):
        grad.copy_(part.view_as(grad))


def seed_everything(seed, deterministic):
    local.seed = seed
    real_seed_everything(seed, deterministic)


def build_networks(config, **kwargs):
    # A worker seeds its own process's generator, then builds: the two ranks here share one, so
    # each builds from a freshly seeded one, one at a time.
    with build_lock:
        torch.manual_seed(local.seed)
        return real_build_networks(config, **kwargs)


def wrap_distributed(trainer, device):
    # DDP's construction gives every rank rank 0's weights: equal already, as in the workers.
    trainers[local.rank] = trainer
    barrier.wait()
    if local.rank:
        for name in ("generator", "discriminator"):
            own, first = getattr(trainer, name).state_dict(), getattr(trainers[0], name).state_dict()
            for key in own:
                assert torch.equal(own[key], first[key]), key
    for optimizer in (trainer.generator_optimizer, trainer.discriminator_optimizer):
        optimizer.register_step_pre_hook(average_gradients)


dist.is_initialized = lambda: True
dist.get_rank = lambda group=None: local.rank
dist.get_world_size = lambda group=None: WORLD
dist.all_reduce = all_reduce
dist.barrier = lambda *args, **kwargs: barrier.wait()
real_seed_everything, real_build_networks = training.seed_everything, training.build_networks
training.seed_everything, training.build_networks = seed_everything, build_networks
training.wrap_distributed = wrap_distributed
codes, failures = [None] * WORLD, []


def rank(number):
    local.rank = number
    torch.set_num_threads(1)  # as in a worker (OMP_NUM_THREADS=1): the same kernels, the same sums
    try:
        codes[number] = main(sys.argv[1:])
    except BaseException as error:
        failures.append(error)
        raise
    finally:
        if codes[number] != 0:
            barrier.abort()  # the other rank would wait for this one forever


threads = [threading.Thread(target=rank, args=(number,)) for number in range(WORLD)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sys.exit(1 if failures or codes != [0] * WORLD else 0)
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


def test_ranks_batches_are_the_rows_of_one_process_batch() -> None:
    """Rank r of N trains on the rows r::N of the batch one process takes from the same shuffle,
    so the emulated and the real torchrun runs below see the samples one process would."""
    dataset = list(range(18))
    single = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=3, drop_last=True)
    ranks = [DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=3, drop_last=True)
             for rank in range(2)]
    for epoch in range(3):
        whole = epoch_batches(single, epoch, 4, 0)
        shares = [epoch_batches(sampler, epoch, 2, 0) for sampler in ranks]
        assert len(whole) == len(shares[0]) == len(shares[1]) == 4
        for step, batch in enumerate(whole):
            assert shares[0][step] == batch[0::2] and shares[1][step] == batch[1::2]


def prepare(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A dataset, the worker script (and the emulator beside it) and an empty folder for its
    dumps: (data, worker, dumps)."""
    data = make_dataset(tmp_path / "data")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    (tmp_path / "emulator.py").write_text(EMULATOR)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    return data, worker, dumps


def train_twice(tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """STEPS steps on one dataset by 2 torchrun workers (into tmp_path/ddp, each dumping its
    weights into tmp_path/dumps) and by one process emulating them (tmp_path/single): (data, dumps)."""
    data, worker, dumps = prepare(tmp_path)
    run(torchrun(str(worker), *train_args(data, tmp_path / "ddp", "--steps", str(STEPS), *extra)),
        environment(DUMP_DIR=str(dumps)))
    run([sys.executable, str(tmp_path / "emulator.py"),
         *train_args(data, tmp_path / "single", "--steps", str(STEPS), *extra)], environment())
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

    # 2. Two processes with 2 images each = one process splitting the global batch of 4 the same
    #    way (EMULATOR says why bit for bit, and why not against one batch of 4): the same
    #    logged losses (averaged over ranks) at every step, and the same weights.
    ddp_rows = logged_metrics(ddp)
    assert [row["step"] for row in ddp_rows] == list(range(1, STEPS + 1))
    assert ddp_rows == logged_metrics(single)
    reference = load_file(single / MODEL_FILE)
    assert saved.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(saved[key], value), (key, (saved[key] - value).abs().max())

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
    # One process splitting the global batch the same way has the same average, bit for bit.
    assert saved.keys() == single.keys() and all(torch.equal(saved[key], single[key]) for key in saved)


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
