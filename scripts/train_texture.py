"""Train the texture generator (ganimation.texture) on pairs of the same face, and write a model file.

    python scripts/crop_landmarks.py data/real/train data/real/train_landmarks.npz
    python scripts/train_texture.py data/real/train data/real/train_landmarks.npz --run runs/texture \
        --init runs/real64b --shape bundled -o texture.safetensors

Resumable: run it again with the same --run to go on from the last checkpoint (with --steps at or
below the checkpoint's step it only writes the model file of that checkpoint). The model file holds
the generator in float16, the shape model of --shape, and ``generator_domain: real``, so that
``ganimation animate`` warps a face and then lets the generator paint over the warped crop.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from ganimation.annotate import CSV_NAME, IMAGES, crop_sources, source_group
from ganimation.checkpoint import save_model_file
from ganimation.inference import GENERATOR_DOMAIN, GANimation
from ganimation.networks import Generator
from ganimation.texture import PairConfig, TextureTraining, WarpedPairs, sample_pairs, train_texture


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, help="the annotated folder (images/ and aus.csv)")
    parser.add_argument("landmarks", type=Path, help="its crops' landmarks (scripts/crop_landmarks.py)")
    parser.add_argument("--run", type=Path, required=True, help="run folder (checkpoint, metrics, samples)")
    parser.add_argument("--init", required=True, help="model file or run folder whose generator starts training")
    parser.add_argument("--shape", required=True, help="model file whose shape model goes into the output")
    parser.add_argument("-o", "--output", type=Path, help="model file to write when training ends")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=TextureTraining.steps)
    parser.add_argument("--batch-size", type=int, default=TextureTraining.batch_size)
    parser.add_argument("--workers", type=int, default=TextureTraining.workers)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--photo-pairs", action="store_true",
                        help="also pair photos of one person (by default only frames of one clip are paired: "
                             "a person's photos differ in lighting, make-up and years, which no warp aligns)")
    parser.add_argument("--checkpoint-every", type=int, default=TextureTraining.checkpoint_every)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    data = np.load(args.landmarks)
    sources = crop_sources(args.folder / CSV_NAME)
    names = [str(name) for name in data["names"]]
    # a crop alone in its group is only ever paired with itself (the zero edit)
    groups = [source_group(sources[name]) if args.photo_pairs or "#" in sources[name] else name for name in names]
    pairs = WarpedPairs(args.folder / IMAGES, names, data["landmarks"], data["aus"], groups, args.size, PairConfig())

    start = GANimation.load(args.init, device="cpu")
    config = dataclasses.replace(start.config, image_size=args.size)
    generator = Generator(config)
    generator.load_state_dict(start.generator.float().state_dict())
    settings = TextureTraining(steps=args.steps, batch_size=args.batch_size, workers=args.workers,
                               checkpoint_every=args.checkpoint_every)
    state = train_texture(generator, pairs, args.run, settings, samples=sample_pairs(pairs, 10))
    if args.output:
        saved = torch.load(state, map_location="cpu", weights_only=True)
        generator.load_state_dict(saved["generator"])
        shape = GANimation.load(args.shape, device="cpu").shape
        extra = {GENERATOR_DOMAIN: "real",
                 "texture": f"scripts/train_texture.py, {saved['step']} steps of batch {settings.batch_size} "
                            f"at {args.size} px on {len(names)} crops, from {args.init}"}
        save_model_file(args.output, generator, None, config, half=True, extra=extra, shape=shape)
        print(f"-> {args.output}")


if __name__ == "__main__":
    main()
