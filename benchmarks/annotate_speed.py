"""Throughput of ``ganimation annotate`` (photos per second), one process against several.

    python benchmarks/annotate_speed.py                  # 120 200-px face crops made from the sample photo
    python benchmarks/annotate_speed.py --photos DIR     # your own photos (e.g. UTKFace's 200 px crops)

The baseline is the same pipeline in one process (``--workers 1``), measured in the same run;
the ratio is what the worker processes buy on this machine. Each figure is the median of
``--rounds`` runs into fresh folders (process start-up included, as a user meets it).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ganimation.annotate import annotate, collect_inputs  # noqa: E402
from ganimation.faces import sample_photo_path  # noqa: E402
from ganimation.files import load_image, save_image  # noqa: E402


def make_crops(folder: Path, count: int) -> Path:
    """``count`` 200 px face crops cut from the sample photo at varied places and scales."""
    sample = load_image(sample_photo_path())
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        side = int(rng.integers(170, 240))
        x0, y0 = int(rng.integers(110, 150)), int(rng.integers(10, 40))
        crop = sample[y0:y0 + side, x0:x0 + side]
        save_image(folder / f"crop_{index:04d}.jpg", cv2.resize(crop, (200, 200), interpolation=cv2.INTER_AREA))
    return folder


def rate(photos: Path, workers: int, rounds: int) -> float:
    count = len(collect_inputs([photos])[2])
    times = []
    for _ in range(rounds):
        out = Path(tempfile.mkdtemp(prefix="annotate-bench-"))
        start = time.perf_counter()
        annotate([photos], out, size=128, workers=workers, progress=False)
        times.append(time.perf_counter() - start)
        shutil.rmtree(out)
    return count / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, help="a folder of photos (default: crops made from the sample photo)")
    parser.add_argument("--count", type=int, default=120, help="crops to make when --photos is not given")
    parser.add_argument("--workers", type=int, default=0, help="processes of the measured run (0: one per core)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="annotate-photos-"))
    try:
        photos = args.photos or make_crops(scratch, args.count)
        baseline = rate(photos, 1, args.rounds)
        measured = rate(photos, args.workers, args.rounds)
    finally:
        shutil.rmtree(scratch)
    print("| annotate | photos/s | ratio |")
    print("|---|---|---|")
    print(f"| 1 process (baseline) | {baseline:.1f} | 1.00x |")
    print(f"| workers={args.workers or 'all cores'} | {measured:.1f} | {measured / baseline:.2f}x |")


if __name__ == "__main__":
    main()
