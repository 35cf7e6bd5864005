"""Paper-scale training throughput on one device: iterations/s, images/s, FLOP/s, MFU, and how long
the paper's schedule (30 epochs over about 200,000 images, batch 25) would take at that rate.

The trainer runs as ``ganimation train`` runs it (``prepare_runtime``: TF32 and cuDNN autotuning on
CUDA; fused Adam; bfloat16 autocast with ``--bf16`` where the device has it), on batches that a
DataLoader with pinned memory and persistent workers feeds from random images in host memory
(``--workers 0``: one batch kept on the device, the model's speed alone). The MFU divides the
achieved FLOP/s (convolutions and matrix products of one iteration, counted, double backward
included) by the device's peak: dense TF32 in float32, dense bfloat16 with ``--bf16``; known GPUs
have it built in, else give ``--peak-tflops``.

    python benchmarks/gpu_throughput.py                                 # paper128, batch 25, CUDA
    python benchmarks/gpu_throughput.py --bf16 --iterations 50
    python benchmarks/gpu_throughput.py --device cpu --preset smoke --batch 2 --iterations 1   # a check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ganimation.runtime import apply_process_environment

apply_process_environment()  # as the CLI does, before torch loads OpenMP

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import count_flops, device_name, synchronize  # noqa: E402

from ganimation.config import build_config  # noqa: E402
from ganimation.networks import build_networks  # noqa: E402
from ganimation.runtime import prepare_runtime  # noqa: E402
from ganimation.training import GANimationTrainer, resolve_device  # noqa: E402

#: Dense peak TFLOP/s (TF32, bfloat16) by device-name fragment, from the vendors' data sheets.
PEAKS = {"H200": (494.5, 989.0), "H100 PCIe": (378.0, 756.0), "H100": (494.5, 989.0), "A100": (156.0, 312.0),
         "L40S": (183.0, 362.0), "A10G": (35.0, 70.0), "L4": (60.0, 121.0)}


class RandomFaces(Dataset):
    """``count`` random uint8 images and AU vectors, made once in host memory, as decoded data."""

    def __init__(self, count: int, size: int, num_aus: int) -> None:
        draw = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=draw)
        self.aus = torch.rand(count, num_aus, generator=draw)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index].float() / 127.5 - 1.0, "aus": self.aus[index]}


def peak_tflops(device: torch.device, bf16: bool, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in PEAKS.items():
        if fragment in name:
            return peaks[1] if bf16 else peaks[0]
    return None


def main(argv: list[str] | None = None) -> dict[str, float | str | None]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper128")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (refused where the device lacks it)")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations (critic_steps + 1 G step each)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (0: one batch kept on the device)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for the MFU")
    parser.add_argument("--epochs", type=int, default=30, help="for the projection (the paper: 20 + 10)")
    parser.add_argument("--images", type=int, default=200_000, help="for the projection (the paper: ~200k)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    config = build_config(args.preset, overrides=[f"data.batch_size={args.batch}", f"run.device={args.device}",
                                                  f"run.bf16={args.bf16}"])
    device = resolve_device(config.run.device)
    prepare_runtime(config, device)
    torch.manual_seed(0)
    generator, discriminator = build_networks(config.model)
    size, steps = config.model.image_size, config.optim.critic_steps
    faces = RandomFaces(max(args.batch * 8, 64), size, config.model.num_aus)
    trainer = GANimationTrainer(config, faces.aus, 10_000, device, generator, discriminator)

    if args.workers > 0:
        loader = DataLoader(faces, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers,
                            pin_memory=device.type == "cuda", persistent_workers=True)

        def batches():  # endless
            while True:
                yield from loader
    else:
        fixed = {"image": faces[0]["image"][None].repeat(args.batch, 1, 1, 1).to(device),
                 "aus": faces.aus[: args.batch].to(device)}

        def batches():
            while True:
                yield fixed

    stream = batches()

    def run(iterations: int) -> None:
        for _ in range(iterations * steps):
            batch = next(stream)
            trainer.train_step(batch["image"], batch["aus"])

    run(args.warmup)
    synchronize(device)
    start = time.perf_counter()
    run(args.iterations)
    synchronize(device)
    seconds = (time.perf_counter() - start) / args.iterations

    # FLOPs at batch 1 on the device, scaled: every convolution and product is linear in the batch.
    one = {"image": faces[0]["image"][None].to(device), "aus": faces.aus[:1].to(device)}
    flops = count_flops(lambda: [trainer.train_step(one["image"], one["aus"]) for _ in range(steps)]) * args.batch
    achieved = flops / seconds / 1e12
    peak = peak_tflops(device, trainer.bf16, args.peak_tflops)
    paper_iterations = args.epochs * (args.images // args.batch) / steps
    result: dict[str, float | str | None] = {
        "device": device_name(device), "preset": args.preset, "batch": args.batch,
        "precision": "bfloat16" if trainer.bf16 else ("tf32" if device.type == "cuda" else "float32"),
        "seconds_per_iteration": seconds, "iterations_per_second": 1 / seconds,
        "images_per_second": args.batch * steps / seconds, "tflop_per_iteration": flops / 1e12,
        "achieved_tflops": achieved, "peak_tflops": peak, "mfu": achieved / peak if peak else None,
        "paper_schedule_hours": paper_iterations * seconds / 3600,
    }
    if args.json:
        print(json.dumps(result))
    else:
        mfu = f"{100 * achieved / peak:.1f}% of {peak:g} TFLOP/s" if peak else "n/a (give --peak-tflops)"
        print(f"device: {result['device']}; {args.preset}, batch {args.batch}, {result['precision']}, "
              f"{'workers ' + str(args.workers) if args.workers else 'batch on the device'}")
        print("| measure | value |\n|---|---|")
        print(f"| iteration ({steps} critic + 1 generator step) | {1000 * seconds:.1f} ms, {1 / seconds:.2f} it/s |")
        print(f"| images consumed | {args.batch * steps / seconds:.1f} /s |")
        print(f"| FLOPs per iteration | {flops / 1e12:.3g} TFLOP |")
        print(f"| achieved | {achieved:.3g} TFLOP/s |")
        print(f"| MFU | {mfu} |")
        print(f"| paper schedule ({args.epochs} epochs x {args.images:,} images) | "
              f"{result['paper_schedule_hours']:.2f} h |")
    return result


if __name__ == "__main__":
    main()
