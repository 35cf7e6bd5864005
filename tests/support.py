"""Helpers shared by several test files: datasets and environments for training subprocesses
(crash safety, torchrun) and a caching face detector for the photo tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ganimation.faces import LandmarkFaceDetector
from ganimation.openface import write_au_csv

SRC = Path(__file__).resolve().parents[1] / "src"
_LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def tiny_model_file(path: Path, *, critic: bool = True, seed: int = 0, size: int = 32) -> Path:
    """A random model file of a tiny 32 px (or ``size``) model, seeded apart from the test's RNG."""
    import torch

    from ganimation.checkpoint import save_model_file
    from ganimation.config import ModelConfig
    from ganimation.networks import Discriminator, Generator

    config = ModelConfig(image_size=size, generator_channels=8, generator_residual_blocks=1,
                         discriminator_channels=8, discriminator_layers=3)
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    generator, discriminator = Generator(config), Discriminator(config) if critic else None
    torch.set_rng_state(state)
    return save_model_file(path, generator, discriminator, config)


def make_dataset(root: Path, count: int = 18, size: int = 32) -> Path:
    """``count`` random faces with random AUs; the last two are the test split."""
    rng = np.random.default_rng(0)
    names = [f"{i:04d}.png" for i in range(count)]
    (root / "images").mkdir(parents=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "images" / name)
    write_au_csv(root / "aus.csv", [(name, rng.random(17), None) for name in names])
    (root / "train_ids.csv").write_text("filename\n" + "\n".join(names[:-2]) + "\n")
    (root / "test_ids.csv").write_text("filename\n" + "\n".join(names[-2:]) + "\n")
    return root


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without launcher variables, with ``src`` importable, one thread."""
    env = {key: value for key, value in os.environ.items() if key not in _LAUNCHER_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


class CachedDetector:
    """The real default detector (the landmark model), remembering its answer for every image it
    has seen (the photo tests show it the same few images again and again)."""

    cache: dict[tuple, list] = {}
    inner: LandmarkFaceDetector | None = None

    def detect(self, rgb: np.ndarray) -> list:
        key = (rgb.shape, hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest())
        if key not in self.cache:
            if CachedDetector.inner is None:
                CachedDetector.inner = LandmarkFaceDetector()
            self.cache[key] = CachedDetector.inner.detect(rgb)
        return list(self.cache[key])
