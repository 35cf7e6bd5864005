"""An independent AU regressor for measuring edits: a small CNN trained on synthetic renders only.

The critic's D_y head is trained alongside the generator and can be fooled by it; a judge that
never saw GAN output measures an edit more honestly. This one sees only renders of
:mod:`ganimation.synth` with their true AUs, and its own error on held-out renders is reported
next to every evaluation so the reader knows how much to trust it.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from ganimation.aus import NUM_AUS

logger = logging.getLogger(__name__)

REGRESSOR_FILE = "au_regressor.safetensors"
INPUT_SIZE = 64


class AURegressor(nn.Module):
    """Four strided conv stages (BatchNorm, SiLU), then a head over the *flattened* 4x4 map.

    The head sees where on the face a feature lies: an AU is defined by location (a raised inner
    brow and a raised lip corner are similar edges in different places), and global average
    pooling, tried first, threw exactly that away and learned nothing.
    """

    def __init__(self, width: int = 32, num_aus: int = NUM_AUS) -> None:
        super().__init__()
        self.width = width
        layers: list[nn.Module] = []
        in_channels = 3
        for multiplier in (1, 2, 4, 8):
            out_channels = width * multiplier
            layers += [nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(out_channels),
                       nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.SiLU()]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        final = INPUT_SIZE // 16
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(in_channels * final * final, 256),
                                  nn.SiLU(), nn.Linear(256, num_aus))

    def forward(self, images: Tensor) -> Tensor:
        features = self.features(images)  # (B, 8w, 4, 4) for 64 px input
        return torch.sigmoid(self.head(features))  # (B, num_aus)

    @staticmethod
    def to_input(image: np.ndarray) -> Tensor:
        """uint8 (H, W, 3) -> (1, 3, 64, 64) in [-1, 1]."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
        if image.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
            image = np.asarray(Image.fromarray(image).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.LANCZOS))
        # A copy: Pillow-backed arrays are read-only, which torch.from_numpy warns about.
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, order="C"))
        return pixels.permute(2, 0, 1).float()[None] / 127.5 - 1.0

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> np.ndarray:
        self.eval()
        return self(self.to_input(image))[0].numpy()


def render_training_set(count: int, seed: int, size: int = INPUT_SIZE) -> tuple[Tensor, Tensor]:
    """``count`` renders of random identities and AUs: images (N, 3, S, S) in [-1, 1], AUs (N, 17)."""
    from ganimation import synth

    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in tqdm(range(count), desc="render", unit="face", leave=False):
        identity = synth.sample_identity(rng)
        # Half realistic (sparse, emotion-like), half uniform: the judge must cover every AU level.
        aus = synth.sample_aus(rng) if rng.random() < 0.5 else rng.uniform(0, 1, NUM_AUS) * (rng.random(NUM_AUS) < 0.4)
        images.append(synth.render_face(identity, aus.astype(np.float32), size))
        targets.append(aus)
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return stacked, torch.from_numpy(np.stack(targets)).float()


def train_regressor(train_count: int = 6000, test_count: int = 500, epochs: int = 15, batch_size: int = 64,
                    seed: int = 0, width: int = 32) -> tuple[AURegressor, float]:
    """Train on renders; returns the model and its mean absolute AU error on held-out renders."""
    if batch_size < 1 or train_count < batch_size or test_count < 1 or epochs < 1:
        raise ValueError(f"need epochs >= 1, test_count >= 1 and train_count >= batch_size >= 1, got "
                         f"epochs={epochs}, test_count={test_count}, train_count={train_count}, "
                         f"batch_size={batch_size}")
    torch.manual_seed(seed)
    train_images, train_aus = render_training_set(train_count, seed)
    test_images, test_aus = render_training_set(test_count, seed + 1_000_003)
    model = AURegressor(width)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (train_count // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, desc="regressor", unit="step")
    for _ in range(epochs):
        order = torch.randperm(train_count, generator=generator)
        for start in range(0, train_count - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            images = train_images[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5  # AUs are symmetric: flips are free data
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            loss = torch.nn.functional.mse_loss(model(images), train_aus[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    model.eval()
    with torch.no_grad():
        error = float((model(test_images) - test_aus).abs().mean())
    return model, error


def save_regressor(model: AURegressor, path: str | os.PathLike[str], test_error: float) -> Path:
    from safetensors.torch import save_file

    from ganimation.files import atomic_output

    target = Path(path)
    tensors = {key: (value.detach().half() if value.is_floating_point() else value).contiguous()
               for key, value in model.state_dict().items()}
    with atomic_output(target) as temp:
        save_file(tensors, str(temp), metadata={"format": "ganimation-au-regressor", "width": str(model.width),
                                                "input_size": str(INPUT_SIZE),
                                                "test_error": json.dumps(test_error)})
    return target


def load_regressor(path: str | os.PathLike[str] | None = None) -> AURegressor:
    """Load a saved regressor (default: the one shipped in the package)."""
    from ganimation.checkpoint import CheckpointError, read_safetensors

    source = Path(path) if path is not None else Path(str(resources.files("ganimation") / "assets" / REGRESSOR_FILE))
    if not source.is_file():
        raise CheckpointError(f"{source}: no AU regressor file (train one with `python -m ganimation.auregressor`)")
    tensors, metadata = read_safetensors(source, "file")
    if metadata.get("format") != "ganimation-au-regressor":
        raise CheckpointError(f"{source}: not an AU regressor file")
    try:
        model = AURegressor(int(metadata.get("width", 32)))
        model.load_state_dict({key: value.float() for key, value in tensors.items()})
    except (ValueError, RuntimeError) as error:  # a bad width, missing or misshapen tensors
        raise CheckpointError(f"{source}: AU regressor weights do not fit the network ({error})") from None
    return model.eval()


def main() -> None:  # pragma: no cover - a one-off training script, run in the background
    import argparse

    parser = argparse.ArgumentParser(description="Train the independent AU regressor on synthetic renders.")
    parser.add_argument("-o", "--output", default=str(Path(__file__).parent / "assets" / REGRESSOR_FILE))
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    model, error = train_regressor(args.train, epochs=args.epochs, seed=args.seed)
    save_regressor(model, args.output, error)
    print(f"AU regressor: held-out mean absolute error {error:.4f}; saved to {args.output}")


if __name__ == "__main__":
    main()
