"""Fit the expression shape model (ganimation.shapewarp) to landmarks of real crops.

    python scripts/crop_landmarks.py data/real/train data/real/train_landmarks.npz
    python scripts/fit_shape_model.py data/real/train_landmarks.npz -o model.safetensors --model bundled

Prints how much of the landmarks' variance the AUs explain and the largest movement per AU, and
writes a model file: the generator of ``--model`` in float16 (without its critic) with the shape
model inside (without ``--model``, a file of the shape model's tensors alone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from ganimation.annotate import crop_sources, source_group
from ganimation.aus import AU_NAMES
from ganimation.checkpoint import read_model_file, save_model_file
from ganimation.inference import GENERATOR_DOMAIN, GANimation, resolve_model_path
from ganimation.shapewarp import fit_shape_model, pose_features


def source_groups(aus_csv: Path, names: np.ndarray) -> list[str]:
    """Each crop's group: the folder its photo came from, or its video."""
    sources = crop_sources(aus_csv)
    return [source_group(sources[str(name)]) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("landmarks", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--model", help="model file, run folder or 'bundled' whose generator to ship with it")
    parser.add_argument("--keep-critic", action="store_true", help="ship the model's critic too")
    parser.add_argument("--generator-domain", choices=("synthetic", "real"),
                        help="what the generator was trained on; 'synthetic' keeps it off real photos")
    parser.add_argument("--ridge", type=float, default=1e-3)
    parser.add_argument("--groups", type=Path, metavar="AUS_CSV",
                        help="the annotated folder's aus.csv: fit within groups of faces that share a source "
                             "folder or video (a person's photos, a clip), as fixed effects")
    args = parser.parse_args()
    data = np.load(args.landmarks)
    landmarks, aus = data["landmarks"].astype(np.float64), data["aus"].astype(np.float64)
    groups = None if args.groups is None else source_groups(args.groups, data["names"])
    shape = fit_shape_model(landmarks, aus, ridge=args.ridge, groups=groups)
    # explained variance of the held-back tenth, fitted on the rest
    order = np.random.default_rng(0).permutation(len(landmarks))
    held, fit = order[: len(order) // 10], order[len(order) // 10:]
    partial = fit_shape_model(landmarks[fit], aus[fit], ridge=args.ridge,
                              groups=None if groups is None else [groups[i] for i in fit])
    centred = landmarks[held] - landmarks[fit].mean(0)
    residual = landmarks[held] - (partial.mean + np.tensordot(aus[held], partial.basis, axes=1))
    pose = pose_features(landmarks[held])
    print(f"{len(landmarks)} faces; held-out landmark variance {centred.var():.3e}, "
          f"left after AUs (pose not removed) {residual.var():.3e}; pose spread {pose.std(0).round(3)}")
    for name, movement in zip(AU_NAMES, shape.basis):
        size = np.linalg.norm(movement, axis=1)
        print(f"{name}: largest landmark move {size.max() * 128:.1f} px of a 128 px crop at full intensity "
              f"(landmark {size.argmax()})")
    if args.model is None:
        save_file({key: value.contiguous() for key, value in shape.state_dict().items()}, str(args.output))
    else:
        model = GANimation.load(args.model, device="cpu")
        _, _, extra = read_model_file(resolve_model_path(args.model))
        extra.pop("package_version", None)
        extra["shape_model"] = (f"fitted by scripts/fit_shape_model.py on {len(landmarks)} faces "
                                f"({args.landmarks.name}, ridge {args.ridge})")
        if args.generator_domain:
            extra[GENERATOR_DOMAIN] = args.generator_domain
        critic = model.discriminator if args.keep_critic else None
        save_model_file(args.output, model.generator, critic, model.config, half=True, extra=extra, shape=shape)
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
