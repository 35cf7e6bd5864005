"""Speed of ganimation's training and inference against a plain eager implementation.

The baseline is ``benchmarks/reference.py``: the same networks, weights and losses, written as the
paper reads. Each side runs in a process of its own (the trainer with the settings ``ganimation
train`` gives its process, the reference with PyTorch's defaults, or with ganimation's settings too
under ``--reference-runtime ganimation``, which compares code with code), both built from the same seed;
the rounds alternate between them (ABBA...), one training iteration (5 critic steps + 1 generator
step) per round, so a load that comes and goes on the machine hits both alike. Reported: medians,
and their ratio (the speed-up, > 1 when ganimation is faster).

Then inference: ``GANimation.animate`` on one crop and ``animate_batch`` on a batch of targets
against the plain generator in eager mode, alternating call by call, and the FLOPs of one
iteration (convolutions and matrix products, the gradient penalty's double backward included), with
the achieved FLOP/s and, given the device's peak (``--peak-tflops``), the MFU.

    python benchmarks/speed.py                              # paper128, batches 4 and 25, 3 rounds
    python benchmarks/speed.py --batches 4 --rounds 1       # a few minutes on 2 cores
    python benchmarks/speed.py --device cuda --peak-tflops 989   # H100 SXM, dense bf16/TF32 peak
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import count_flops, device_name, median, timed  # noqa: E402
from reference import PlainGenerator, ReferenceGANimation, _copy_weights  # noqa: E402

from ganimation.config import build_config  # noqa: E402
from ganimation.inference import GANimation  # noqa: E402
from ganimation.networks import build_networks  # noqa: E402
from ganimation.runtime import PROCESS_ENVIRONMENT, bf16_unsupported, prepare_runtime  # noqa: E402
from ganimation.training import GANimationTrainer, resolve_device  # noqa: E402


def _setup(side: str, preset: str, batch: int, device_name_: str, threads: int | None,
           runtime: bool) -> tuple[Any, Any]:
    """Networks from seed 0, a fixed batch, and the trainer or the reference holding them."""
    if threads:
        torch.set_num_threads(threads)
    config = build_config(preset, overrides=[f"data.batch_size={batch}", f"run.device={device_name_}"])
    device = resolve_device(config.run.device)
    torch.manual_seed(0)
    generator, discriminator = build_networks(config.model)
    size = config.model.image_size
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    aus = torch.rand(batch, config.model.num_aus, generator=torch.Generator().manual_seed(2))
    if runtime:
        prepare_runtime(config, device)
    if side == "ganimation":
        trainer = GANimationTrainer(config, aus, 1000, device, generator, discriminator)
        images, aus = images.to(device), aus.to(device)

        def iteration() -> None:
            for _ in range(config.optim.critic_steps):
                trainer.train_step(images, aus)
    else:
        reference = ReferenceGANimation.from_networks(config, generator, discriminator, aus, device)
        images, aus = images.to(device), aus.to(device)

        def iteration() -> None:
            reference.iteration(images, aus)
    return iteration, device


def _worker(connection: Any, side: str, preset: str, batch: int, device: str, threads: int | None,
            runtime: bool) -> None:
    """One side of the comparison: warm up, then one timed iteration per request."""
    iteration, resolved = _setup(side, preset, batch, device, threads, runtime)
    iteration()  # warm-up: kernels chosen, memory allocated
    connection.send(device_name(resolved))
    while connection.recv() == "iteration":
        connection.send(timed(iteration, resolved))


def compare_training(preset: str, batch: int, rounds: int, device: str, threads: int | None,
                     reference_runtime: str) -> tuple[list[float], list[float], str]:
    """Seconds per iteration of ganimation and of the reference, rounds alternating."""
    context = multiprocessing.get_context("spawn")
    sides = {}
    for side in ("ganimation", "reference"):
        # Each child reads the environment when it starts: ganimation's side gets the CLI's
        # (PROCESS_ENVIRONMENT), the reference PyTorch's defaults unless asked for ganimation's.
        own = side == "ganimation" or reference_runtime == "ganimation"
        saved = {key: os.environ.get(key) for key in PROCESS_ENVIRONMENT}
        for key, value in PROCESS_ENVIRONMENT.items():
            if own:
                os.environ.setdefault(key, value)
            elif saved[key] == value:
                del os.environ[key]
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(child, side, preset, batch, device, threads, own), daemon=True)
        process.start()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sides[side] = (parent, process)
    try:
        names = {side: parent.recv() for side, (parent, _) in sides.items()}
        times: dict[str, list[float]] = {"ganimation": [], "reference": []}
        for round_index in range(rounds):
            order = ("ganimation", "reference") if round_index % 2 == 0 else ("reference", "ganimation")
            for side in order:
                sides[side][0].send("iteration")
                times[side].append(sides[side][0].recv())
            print(f"  batch {batch}, round {round_index + 1}/{rounds}: ganimation {times['ganimation'][-1]:.2f} s, "
                  f"reference {times['reference'][-1]:.2f} s", file=sys.stderr, flush=True)
    finally:
        for parent, process in sides.values():
            try:
                parent.send("stop")
            except (BrokenPipeError, OSError):
                pass
            process.join(timeout=60)
    return times["ganimation"], times["reference"], names["ganimation"]


def iteration_flops(preset: str, batch: int) -> tuple[int, int]:
    """FLOPs of one iteration at ``batch``, for the trainer and for the reference. Counted at batch
    1 and scaled: every convolution and product is linear in the batch."""
    config = build_config(preset, overrides=["data.batch_size=1", "run.device=cpu"])
    torch.manual_seed(0)
    generator, discriminator = build_networks(config.model)
    size = config.model.image_size
    images, aus = torch.rand(1, 3, size, size) * 2 - 1, torch.rand(1, config.model.num_aus)
    trainer = GANimationTrainer(config, aus, 1000, torch.device("cpu"), generator, discriminator)
    reference = ReferenceGANimation.from_networks(config, generator, discriminator, aus)
    ours = count_flops(lambda: [trainer.train_step(images, aus) for _ in range(config.optim.critic_steps)])
    theirs = count_flops(lambda: reference.iteration(images, aus))
    return ours * batch, theirs * batch


def compare_inference(preset: str, device: torch.device, batch: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Seconds of ``animate`` (one crop) and ``animate_batch`` against the plain generator, eager."""
    config = build_config(preset)
    torch.manual_seed(0)
    generator, discriminator = build_networks(config.model)
    model = GANimation(generator, discriminator, config.model, device)
    plain = PlainGenerator(config.model.num_aus, config.model.generator_channels,
                           config.model.generator_residual_blocks)
    _copy_weights(generator, plain)
    plain = plain.to(device).eval()
    size = config.model.image_size
    face = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    targets = [np.random.default_rng(i).random(config.model.num_aus).astype(np.float32) for i in range(batch)]

    @torch.no_grad()
    def plain_animate(count: int) -> None:
        image = torch.from_numpy(face).permute(2, 0, 1).float().div(127.5).sub(1)[None].expand(count, -1, -1, -1)
        edited, attention, colour = plain(image.to(device), torch.from_numpy(np.stack(targets[:count])).to(device))
        for tensor in (edited, colour):
            ((tensor.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        attention.cpu().numpy()

    cases = {"one crop": (lambda: model.animate(face, targets[0]), lambda: plain_animate(1)),
             f"batch of {batch}": (lambda: model.animate_batch(face, targets, batch_size=batch),
                                   lambda: plain_animate(batch))}
    if bf16_unsupported(device) is None:  # bfloat16 edits, where the device has it natively
        fast = GANimation(generator, discriminator, config.model, device, bf16=True)
        exact = np.stack([result.image for result in model.animate_batch(face, targets, batch_size=batch)])
        rounded = np.stack([result.image for result in fast.animate_batch(face, targets, batch_size=batch)])
        error = np.mean((exact.astype(np.float64) - rounded.astype(np.float64)) ** 2)
        psnr = 10 * np.log10(255.0**2 / max(error, 1e-12))
        cases[f"batch of {batch}, bfloat16 ({psnr:.1f} dB to float32)"] = (
            lambda: fast.animate_batch(face, targets, batch_size=batch), lambda: plain_animate(batch))
    results = {}
    for name, (ours, theirs) in cases.items():
        ours(), theirs()
        times: tuple[list[float], list[float]] = ([], [])
        for round_index in range(rounds):
            pair = ((0, ours), (1, theirs)) if round_index % 2 == 0 else ((1, theirs), (0, ours))
            for slot, function in pair:
                times[slot].append(timed(function, device))
        results[name] = (median(times[0]), median(times[1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper128")
    parser.add_argument("--batches", default="4,25", help="comma-separated training batch sizes (default 4,25)")
    parser.add_argument("--rounds", type=int, default=3, help="timed iterations per side and batch (default 3)")
    parser.add_argument("--inference-batch", type=int, default=16)
    parser.add_argument("--inference-rounds", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both sides (default: PyTorch's)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s, for the MFU (e.g. 989 for an H100 SXM's dense bf16)")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--reference-runtime", choices=("default", "ganimation"), default="default",
                        help="the reference's process settings: PyTorch's defaults (a plain script), or the "
                             "OpenMP and allocator settings ganimation gives its own process (code against code)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(value) for value in args.batches.split(",") if value.strip()]
    device = resolve_device(args.device)
    config = build_config(args.preset)

    rows: list[tuple[str, str, str, str]] = []
    flop_rows: list[str] = []
    name = ""
    for batch in batches:
        ours, theirs, name = compare_training(args.preset, batch, args.rounds, args.device, args.threads,
                                              args.reference_runtime)
        ours_median, theirs_median = median(ours), median(theirs)
        ratios = sorted(reference / mine for mine, reference in zip(ours, theirs))
        rows.append((f"training iteration, batch {batch} (s)", f"{ours_median:.2f}", f"{theirs_median:.2f}",
                     f"**{theirs_median / ours_median:.2f}x** (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"))
        flops_ours, flops_theirs = iteration_flops(args.preset, batch)
        achieved = flops_ours / ours_median / 1e12
        mfu = f", MFU {100 * achieved / args.peak_tflops:.1f}% of {args.peak_tflops:g}" if args.peak_tflops else ""
        per_image = flops_ours / batch / config.optim.critic_steps / 1e9
        flop_rows.append(f"| batch {batch} | {flops_ours / 1e12:.3g} TFLOP ({per_image:.3g} GFLOP per image consumed) | "
                         f"{flops_theirs / 1e12:.3g} TFLOP | {achieved:.3g} TFLOP/s{mfu} |")
    if not args.skip_inference:
        for case, (mine, plain) in compare_inference(args.preset, device, args.inference_batch,
                                                     args.inference_rounds).items():
            rows.append((f"inference, {case} (ms)", f"{1000 * mine:.1f}", f"{1000 * plain:.1f}",
                         f"{plain / mine:.2f}x"))

    print(f"device: {name or device_name(device)}; model {args.preset} ({config.model.image_size} px), float32, "
          f"{args.rounds} alternating rounds per batch; reference process settings: {args.reference_runtime}")
    print("| measure | ganimation | plain eager | speed-up |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if flop_rows:
        print()
        print(f"| FLOPs per iteration ({config.optim.critic_steps} critic + 1 generator step) | ganimation | reference "
              f"| ganimation achieved |")
        print("|---|---|---|---|")
        print("\n".join(flop_rows))


if __name__ == "__main__":
    main()
