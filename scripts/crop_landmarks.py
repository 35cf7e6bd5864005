"""Landmarks of every crop of an annotated folder, for fitting the expression shape model.

    python scripts/crop_landmarks.py data/real/train data/real/train_landmarks.npz [--workers 2]

Reads ``FOLDER/aus.csv`` and ``FOLDER/images/``; runs the landmark model on each aligned crop and
keeps the largest face. Writes ``names``, ``landmarks`` (N, 478, 2, in crop widths, so resolution
free) and ``aus`` (N, 17, in [0, 1], read again from the same landmarks).
"""

from __future__ import annotations

import argparse
import csv
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

_MESH = None


def _read(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    global _MESH
    from ganimation.aureader import read_aus
    from ganimation.facemesh import FaceMesh

    if _MESH is None:
        _MESH = FaceMesh(min_face=24.0)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    faces = _MESH.find(rgb)
    if not faces:
        return None
    face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return ((face.landmarks[:, :2] + 0.5) / rgb.shape[1]).astype(np.float32), read_aus(face)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with open(args.folder / "aus.csv", newline="") as handle:
        names = [row["filename"] for row in csv.DictReader(handle)]
    paths = [str(args.folder / "images" / name) for name in names]
    kept, landmarks, aus = [], [], []
    with ProcessPoolExecutor(args.workers) as pool:
        for name, result in zip(names, tqdm(pool.map(_read, paths, chunksize=32), total=len(paths))):
            if result is not None:
                kept.append(name)
                landmarks.append(result[0])
                aus.append(result[1])
    np.savez_compressed(args.output, names=np.array(kept), landmarks=np.stack(landmarks), aus=np.stack(aus))
    print(f"{len(kept)} of {len(names)} crops with a face -> {args.output}")


if __name__ == "__main__":
    main()
