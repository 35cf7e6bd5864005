"""Shared fixtures: a tiny on-disk dataset and one short smoke training run.

The dataset is the simplest supported layout, ``root/images/*.png`` plus ``root/aus.csv`` with
OpenFace's intensity columns (0-5), and id lists that fix the split (20 train, 4 test) so that
sample grids and step counts do not depend on the hash split.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganimation.aus import OPENFACE_COLUMNS

# The test machine's few cores are shared with other work: one intra-op thread avoids the stalls
# of oversubscribed thread pools and keeps every model in these tests small and fast.
torch.set_num_threads(1)

FIXTURE_SIZE = 32
FIXTURE_COUNT = 24
FIXTURE_TEST = 4


def write_dataset(root: Path, count: int = FIXTURE_COUNT, size: int = FIXTURE_SIZE, seed: int = 0,
                  test_count: int = FIXTURE_TEST) -> Path:
    """Write ``count`` random RGB faces and random OpenFace intensities (0-5) under ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = [f"face_{index:03d}.png" for index in range(count)]
    rows = []
    for name in names:
        # Smooth-ish images (a random gradient plus noise) so that they are not pure noise.
        base = rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, size)[None, :, None] * rng.integers(-80, 80, 3)
        noise = rng.integers(-20, 20, (size, size, 3))
        pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / name)
        rows.append([name, *(f"{value:.2f}" for value in rng.uniform(0.0, 5.0, len(OPENFACE_COLUMNS)))])
    with open(root / "aus.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["filename", *OPENFACE_COLUMNS])
        writer.writerows(rows)
    if test_count:
        (root / "train_ids.csv").write_text("filename\n" + "\n".join(names[:-test_count]) + "\n", encoding="utf-8")
        (root / "test_ids.csv").write_text("filename\n" + "\n".join(names[-test_count:]) + "\n", encoding="utf-8")
    return root


def write_face(path: Path, size: int = FIXTURE_SIZE, seed: int = 1, height: int | None = None) -> Path:
    """One random RGB image file (``size`` wide, ``height or size`` high)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height or size, size, 3), dtype=np.uint8)).save(path)
    return path


def smoke_config(data_root: Path | str, output_dir: Path | str, steps: int | None = None, *extra: str):
    """The ``smoke`` preset on the CPU over a dataset folder, optionally capped to ``steps``."""
    from ganimation.config import build_config

    overrides = [f"data.root={data_root}", f"run.output_dir={output_dir}", "run.device=cpu", *extra]
    if steps is not None:
        overrides.append(f"optim.max_steps={steps}")
    return build_config("smoke", overrides=overrides)


def logged_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows of ``RUN/metrics.jsonl``, without their wall-clock ``time`` (it differs between runs)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        row.pop("time")
    return rows


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-image, 32 px dataset (read-only for tests: copy it before changing anything)."""
    return write_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> Path:
    """A run folder after 4 smoke steps (checkpoints at steps 2 and 4, model.safetensors)."""
    from ganimation.training import train

    run_dir = tmp_path_factory.mktemp("run") / "smoke"
    state = torch.get_rng_state()
    train(smoke_config(dataset_dir, run_dir, 4), show_progress=False)
    torch.set_rng_state(state)
    return run_dir


@pytest.fixture
def face_image() -> np.ndarray:
    """A 32x32 uint8 RGB face crop at the smoke model's size."""
    return np.random.default_rng(7).integers(0, 256, (FIXTURE_SIZE, FIXTURE_SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """The package's sample photo (the astronaut), read once per test module."""
    from ganimation.faces import sample_photo_path
    from ganimation.files import load_image

    return load_image(sample_photo_path())


@pytest.fixture(scope="module")
def bundled():
    """The bundled model on the CPU, loaded once per test module."""
    from ganimation.inference import GANimation

    return GANimation.load(device="cpu")
