"""Fit the expression appearance model (ganimation.appearance) to real crops, and add it to a model file.

    python scripts/crop_landmarks.py data/real/train data/real/train_landmarks.npz
    python scripts/fit_appearance_model.py data/real/train data/real/train_landmarks.npz \\
        --model bundled -o model.safetensors

Warps every crop of the annotated folder (``FOLDER/images``, ``FOLDER/aus.csv``) onto the
reference shape of ``--model``'s shape model, fits the AUs' log-luminance maps within each
person's photos and each clip, prints how far each AU darkens and lightens, and writes
``--model`` again with the appearance model inside (its generator, critic and shape model as
they were). ``--textures`` keeps the warped crops, so a second fit (another ``--ridge``) skips
the warping.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ganimation.annotate import crop_sources, source_group
from ganimation.appearance import TEXTURE_SIZE, describe, fit_appearance_model, reference_shape, shape_free
from ganimation.checkpoint import read_model_file, save_model_file
from ganimation.files import load_image
from ganimation.inference import GANimation, resolve_model_path


def _texture(job: tuple[str, np.ndarray, np.ndarray]) -> np.ndarray:
    path, landmarks, reference = job
    return shape_free(load_image(path), landmarks, reference).astype(np.float16)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, help="annotated folder (images/, aus.csv)")
    parser.add_argument("landmarks", type=Path, help="its crops' landmarks (scripts/crop_landmarks.py)")
    parser.add_argument("--model", required=True, help="model file, run folder or 'bundled' with a shape model")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--ridge", type=float, default=1e-2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--textures", type=Path, help="cache of the warped crops (.npy), made if missing")
    args = parser.parse_args()

    model = GANimation.load(args.model, device="cpu")
    if model.shape is None:
        parser.error(f"{args.model}: has no shape model to take the reference shape from")
    data = np.load(args.landmarks)
    names, landmarks, aus = data["names"], data["landmarks"].astype(np.float64), data["aus"].astype(np.float64)
    reference = reference_shape(model.shape)
    if args.textures is not None and args.textures.exists():
        textures = np.load(args.textures)
    else:
        jobs = [(str(args.folder / "images" / str(name)), points, reference) for name, points in zip(names, landmarks)]
        with ProcessPoolExecutor(args.workers) as pool:
            textures = np.stack(list(tqdm(pool.map(_texture, jobs, chunksize=64), total=len(jobs), desc="warping")))
        if args.textures is not None:
            np.save(args.textures, textures)
    if textures.shape != (len(names), TEXTURE_SIZE, TEXTURE_SIZE):
        parser.error(f"{args.textures}: {textures.shape} does not match {len(names)} crops")
    sources = crop_sources(args.folder / "aus.csv")
    groups = [source_group(sources[str(name)]) for name in names]
    try:
        appearance = fit_appearance_model(textures, landmarks, aus, reference, groups, ridge=args.ridge)
    except ValueError as error:  # too few faces in groups, mismatched inputs
        parser.error(str(error))
    for line in describe(appearance):
        print(line)
    _, _, extra = read_model_file(resolve_model_path(args.model))
    extra.pop("package_version", None)
    extra["appearance_model"] = (f"fitted by scripts/fit_appearance_model.py on {len(names)} faces "
                                 f"({args.landmarks.name}, ridge {args.ridge})")
    save_model_file(args.output, model.generator, model.discriminator, model.config, half=True, extra=extra,
                    shape=model.shape, appearance=appearance)
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
