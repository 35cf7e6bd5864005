"""Speed of the default model on this machine: training iterations/s, animate images/s, FLOPs.

Prints one table. Each throughput comes with a ratio against a baseline measured in the same
run: training against the same iteration without the gradient penalty's double backward
(what WGAN-GP costs), animation batched against one image per call.

    python benchmarks/speed.py                 # paper128 model, batch 4 (CPU-friendly)
    python benchmarks/speed.py --batch 25      # the paper's batch (use a GPU)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ganimation import losses
from ganimation.config import build_config
from ganimation.inference import GANimation
from ganimation.networks import build_networks, count_parameters
from ganimation.training import GANimationTrainer, steps_per_second


def flops_of(function) -> int:  # type: ignore[no-untyped-def]
    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper128")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=1, help="timed training iterations (5 critic + 1 G each)")
    parser.add_argument("--images", type=int, default=16, help="images for the animate timing")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = build_config(args.preset, overrides=[f"data.batch_size={args.batch}", f"run.device={args.device}",
                                                  f"run.bf16={args.bf16}"])
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    size = config.model.image_size
    generator, discriminator = build_networks(config.model)
    images = torch.rand(args.batch, 3, size, size, device=device) * 2 - 1
    aus = torch.rand(args.batch, config.model.num_aus, device=device)
    trainer = GANimationTrainer(config, aus.cpu(), 1000, device, generator, discriminator)

    generator_flops = flops_of(lambda: generator(images[:1].cpu().to(device), aus[:1]))
    critic_flops = flops_of(lambda: discriminator(images[:1]))
    trainer.train_step(images, aus)  # warm-up
    train_rate = steps_per_second(trainer, images, aus, args.iterations)

    original_penalty = losses.gradient_penalty
    losses.gradient_penalty = lambda *a, **k: torch.zeros((), device=device)  # baseline: no penalty
    try:
        baseline_rate = steps_per_second(trainer, images, aus, args.iterations)
    finally:
        losses.gradient_penalty = original_penalty

    model = GANimation(generator, discriminator, config.model, device)
    face = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    targets = [np.random.default_rng(i).random(config.model.num_aus).astype(np.float32) for i in range(args.images)]
    model.animate_batch(face, targets[:2])
    start = time.perf_counter()
    model.animate_batch(face, targets)
    batched = args.images / (time.perf_counter() - start)
    start = time.perf_counter()
    for target in targets:
        model.animate(face, target)
    single = args.images / (time.perf_counter() - start)

    print(f"device: {device} ({torch.get_num_threads()} CPU threads)" if device.type == "cpu" else f"device: {torch.cuda.get_device_name()}")
    print(f"model: {args.preset}, {size}px, G {count_parameters(generator):,} params, D {count_parameters(discriminator):,} params")
    print("| measure | value | baseline | ratio |")
    print("|---|---|---|---|")
    print(f"| G forward FLOPs / image | {generator_flops / 1e9:.2f} G | | |")
    print(f"| D forward FLOPs / image | {critic_flops / 1e9:.2f} G | | |")
    print(f"| training it/s (batch {args.batch}, {config.optim.critic_steps} critic + 1 G) | {train_rate:.3f} | "
          f"{baseline_rate:.3f} (no gradient penalty) | {train_rate / baseline_rate:.2f} |")
    print(f"| training images/s | {train_rate * args.batch * config.optim.critic_steps:.2f} | | |")
    print(f"| animate images/s (batched) | {batched:.2f} | {single:.2f} (one per call) | {batched / single:.2f} |")


if __name__ == "__main__":
    main()
