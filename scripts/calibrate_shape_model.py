"""Calibrate a model file's shape model against the AU reader, so that an edit asked to move an AU
by some amount reads as having moved it by that amount.

    python scripts/calibrate_shape_model.py model.safetensors PHOTOS... -o calibrated.safetensors

A least-squares fit of landmarks on noisy AU readings is shrunk towards zero (regression
dilution: the noise in the readings is credited to no AU), so edits fall short of their targets.
This edits each face of the photos (faces the fit saw, never the evaluation's) along one AU at a
time, reads the edit again (:func:`ganimation.realeval.single_au_slopes`), and divides each AU's
displacements by the slope found, within ``[1, --max-gain]``; ``--rounds`` repeats it, as the
reader is not linear. Writes the model file again with the calibrated shape model.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from ganimation.aus import AU_NAMES
from ganimation.checkpoint import read_model_file, save_model_file
from ganimation.inference import GANimation, resolve_model_path
from ganimation.openface import IMAGE_SUFFIXES
from ganimation.realeval import single_au_slopes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", help="model file with a shape model")
    parser.add_argument("photos", nargs="+", type=Path, help="photos or folders of photos of training faces")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--max-gain", type=float, default=2.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=60, help="at most this many photos")
    args = parser.parse_args()
    model = GANimation.load(args.model, device="cpu")
    if model.shape is None:
        parser.error(f"{args.model}: has no shape model to calibrate")
    photos = sorted(path for source in args.photos
                    for path in ([source] if source.is_file() else source.rglob("*"))
                    if path.suffix.lower() in IMAGE_SUFFIXES)
    photos = photos[:: max(1, len(photos) // args.limit)][: args.limit]
    gains = np.ones(len(AU_NAMES))
    for round_number in range(1, args.rounds + 1):
        slopes = single_au_slopes(model, photos)
        step = np.clip(1.0 / np.maximum(slopes, 1e-3), 1.0 / gains, args.max_gain / gains)
        gains *= step
        print(f"round {round_number}: " + " ".join(f"{name} {slope:.2f}" for name, slope in zip(AU_NAMES, slopes)))
        model.shape = dataclasses.replace(model.shape, basis=model.shape.basis * step[:, None, None])
    print("gains: " + " ".join(f"{name} {gain:.2f}" for name, gain in zip(AU_NAMES, gains)))
    _, _, extra = read_model_file(resolve_model_path(args.model))
    extra.pop("package_version", None)
    extra["shape_calibration"] = (f"scripts/calibrate_shape_model.py on {len(photos)} photos, {args.rounds} rounds: "
                                  + " ".join(f"{name} x{gain:.2f}" for name, gain in zip(AU_NAMES, gains)))
    save_model_file(args.output, model.generator, model.discriminator, model.config, half=True, extra=extra,
                    shape=model.shape, appearance=model.appearance)
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
