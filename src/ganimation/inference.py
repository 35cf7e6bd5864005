"""The animate API: load a trained model and edit a face crop towards target AUs.

This is what the CLI and the web app call; it never imports training code.

    model = GANimation.load("runs/demo/model.safetensors")
    result = model.animate(face_crop, aus)      # uint8 (H, W, 3) in, AnimationResult out
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganimation.aus import NUM_AUS, AUError, check_au_vector
from ganimation.checkpoint import (
    MODEL_FILE, CheckpointError, latest_checkpoint, load_into, read_model_file, split_prefix,
)
from ganimation.config import ModelConfig, resolve_device
from ganimation.networks import Discriminator, Generator
from ganimation.runtime import use_bf16
from ganimation.appearance import AppearanceModel
from ganimation.shapewarp import ShapeModel

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled_model.safetensors"
#: Model-file metadata (``extra``): the faces the generator was trained on; ``synthetic`` keeps
#: it off real photos when the file has a shape model to move them (:attr:`GANimation.paints_photos`).
GENERATOR_DOMAIN = "generator_domain"


@dataclass
class AnimationResult:
    image: np.ndarray  # uint8 (H, W, 3): the edited face
    attention: np.ndarray  # float32 (H, W) in [0, 1]: 1 = input pixel kept
    colour: np.ndarray  # uint8 (H, W, 3): the colour mask C
    aus: np.ndarray  # float32 (17,): the target AUs

    def attention_image(self) -> np.ndarray:
        """The attention mask as a uint8 grey picture (white = pixel kept from the input)."""
        return np.repeat((self.attention[..., None] * 255.0).round().astype(np.uint8), 3, axis=2)


def bundled_model_path() -> Path | None:
    """The model shipped inside the package, when this installation has one."""
    candidate = resources.files("ganimation") / "assets" / BUNDLED_MODEL
    path = Path(str(candidate))
    return path if path.is_file() else None


def resolve_model_path(path: str | os.PathLike[str] | None) -> Path:
    """A model file from a file, a checkpoint folder or a run folder; the bundled model for None
    (or the name ``bundled``, as ``--init`` takes it, when no such file or folder exists)."""
    if path is None or (str(path) == "bundled" and not Path(path).exists()):
        bundled = bundled_model_path()
        if bundled is None:
            raise CheckpointError("no checkpoint given and this installation has no bundled model; "
                                  "pass --checkpoint PATH")
        return bundled
    source = Path(path)
    if source.is_dir():
        for candidate in (source / MODEL_FILE,):
            if candidate.is_file():
                return candidate
        latest = latest_checkpoint(source)
        if latest is not None:
            return latest / MODEL_FILE
        raise CheckpointError(f"{source}: folder holds no {MODEL_FILE} and no checkpoints/")
    if not source.exists():
        raise CheckpointError(f"{source}: no such checkpoint")
    return source


def _to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, size, size) in [-1, 1]."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {array.dtype} {array.shape}")
    if array.shape[:2] != (size, size):
        array = np.array(Image.fromarray(array).resize((size, size), Image.Resampling.LANCZOS))
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 127.5 - 1.0
    return tensor[None]


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    if array.shape[:2] == (height, width):
        return array
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.LANCZOS))
    picture = Image.fromarray(array.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.float32)


class GANimation:
    """A trained generator (and, when saved with it, the critic's AU regressor)."""

    def __init__(self, generator: Generator, discriminator: Discriminator | None, config: ModelConfig,
                 device: torch.device | str = "cpu", source: str = "", bf16: bool = False,
                 shape: ShapeModel | None = None, appearance: AppearanceModel | None = None) -> None:
        self.config = config
        #: the expression's shape (:mod:`ganimation.shapewarp`, not the paper's): photo edits move
        #: the face's landmarks along it before the generator paints; None for the paper's model alone
        self.shape = shape
        #: the expression's shading (:mod:`ganimation.appearance`, not the paper's): a ratio image
        #: over the warped face; used only with a shape model, None without one
        self.appearance = appearance
        #: what the generator was trained on, as its model file says ("synthetic", or "" unknown)
        self.generator_domain = ""
        self.device = torch.device(device)
        # bfloat16 autocast for the generator where the device has it natively, else refused with
        # a warning (emulated, it would be slower); the masks stay float32 (Generator.forward).
        self.bf16 = use_bf16(bf16, self.device, "bf16 inference")
        self.generator = generator.to(self.device).eval()
        self.discriminator = discriminator.to(self.device).eval() if discriminator is not None else None
        self.source = source

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, device: str = "auto", bf16: bool = False) -> GANimation:
        """Load a model file, a checkpoint or run folder, or (``None``) the bundled model; ``bf16``
        edits in bfloat16 where the device has it natively (refused with a warning elsewhere).

        Files of the original GANimation code and of its 2018 replication are converted on the
        fly (see :mod:`ganimation.convert`).
        """
        resolved = resolve_device(device, key="device")
        model_path = resolve_model_path(path)
        if model_path.suffix in (".pth", ".pt", ".pkl", ".tar"):
            from ganimation.convert import load_foreign_checkpoint

            config, tensors = load_foreign_checkpoint(model_path)
            extra: dict[str, object] = {}
        else:
            config, tensors, extra = read_model_file(model_path)
        generator = Generator(config)
        load_into(generator, split_prefix(tensors, "generator"), source=str(model_path), name="generator")
        critic_weights = split_prefix(tensors, "discriminator")
        discriminator = None
        if critic_weights:
            discriminator = Discriminator(config)
            load_into(discriminator, critic_weights, source=str(model_path), name="discriminator")
        for module in (generator, discriminator):
            if module is not None:
                module.float()
        shape = ShapeModel.from_state_dict(split_prefix(tensors, "shape", keep_prefix=True))
        appearance = AppearanceModel.from_state_dict(split_prefix(tensors, "appearance", keep_prefix=True))
        logger.debug("loaded %s (%s%s%s)", model_path, config, ", with a shape model" if shape else "",
                     ", with an appearance model" if appearance else "")
        model = cls(generator, discriminator, config, resolved, source=str(model_path), bf16=bf16, shape=shape,
                    appearance=appearance)
        model.generator_domain = str(extra.get(GENERATOR_DOMAIN, ""))
        return model

    @property
    def paints_photos(self) -> bool:
        """Whether photo edits run the generator: not when its file says it learned only drawn
        faces (``generator_domain: synthetic``) and a shape model moves real faces instead."""
        return not (self.shape is not None and self.generator_domain == "synthetic")

    def _check_aus(self, aus: Sequence[float] | np.ndarray) -> np.ndarray:
        vector = check_au_vector(aus, source="target AUs")
        if vector.shape[0] != self.config.num_aus:
            raise AUError(f"this model takes {self.config.num_aus} AUs, got {vector.shape[0]}")
        return vector

    @torch.no_grad()
    def animate_batch(self, image: np.ndarray, aus_list: Sequence[Sequence[float] | np.ndarray],
                      batch_size: int = 16) -> list[AnimationResult]:
        """Edit one face towards each AU vector of ``aus_list``; results at the input's size."""
        return self.animate_pairs([image] * len(aus_list), aus_list, batch_size)

    @torch.no_grad()
    def animate_pairs(self, images: Sequence[np.ndarray], aus_list: Sequence[Sequence[float] | np.ndarray],
                      batch_size: int = 16) -> list[AnimationResult]:
        """Edit each face crop of ``images`` towards the AU vector at the same place in
        ``aus_list``, in batches; each result at its input's size."""
        if len(images) != len(aus_list):
            raise ValueError(f"{len(images)} crops but {len(aus_list)} AU vectors")
        vectors = [self._check_aus(aus) for aus in aus_list]
        results: list[AnimationResult] = []
        for start in range(0, len(vectors), batch_size):
            chunk_images = images[start:start + batch_size]
            chunk = np.stack(vectors[start:start + batch_size])
            converted: dict[int, torch.Tensor] = {}  # a crop repeated in the chunk is converted once
            for image in chunk_images:
                if id(image) not in converted:
                    converted[id(image)] = _to_tensor(image, self.image_size).to(self.device)
            sources = torch.cat([converted[id(image)] for image in chunk_images])
            targets = torch.from_numpy(chunk).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                output = self.generator(sources, targets)
            edited = ((output.image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            colour = ((output.colour.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            attention = output.attention[:, 0].float().cpu().numpy()
            for index, image in enumerate(chunk_images):
                height, width = np.asarray(image).shape[:2]
                results.append(AnimationResult(_resize(edited[index], height, width),
                                               _resize(attention[index], height, width),
                                               _resize(colour[index], height, width), chunk[index]))
        return results

    def animate(self, image: np.ndarray, aus: Sequence[float] | np.ndarray) -> AnimationResult:
        """Edit a face crop (uint8 RGB, resized to the model's size and back) towards ``aus``."""
        return self.animate_batch(image, [aus])[0]

    def interpolate(self, image: np.ndarray, source_aus: Sequence[float] | np.ndarray,
                    target_aus: Sequence[float] | np.ndarray, frames: int) -> list[AnimationResult]:
        """``frames`` edits from ``source_aus`` to ``target_aus`` with smooth (cosine) easing."""
        if frames < 2:
            raise ValueError(f"an interpolation needs at least 2 frames, got {frames}")
        start, end = self._check_aus(source_aus), self._check_aus(target_aus)
        weights = (1.0 - np.cos(np.linspace(0.0, np.pi, frames))) / 2.0
        return self.animate_batch(image, [start + (end - start) * weight for weight in weights])

    @torch.no_grad()
    def estimate_aus(self, image: np.ndarray) -> np.ndarray:
        """AU intensities of a face crop from the critic's regression head D_y, clipped to [0, 1]."""
        if self.discriminator is None:
            raise CheckpointError(f"{self.source}: this model file has no critic, so it cannot estimate AUs")
        source = _to_tensor(image, self.image_size).to(self.device)
        return self.discriminator(source).aus[0].clamp(0, 1).float().cpu().numpy()


def zeros_aus() -> np.ndarray:
    return np.zeros(NUM_AUS, dtype=np.float32)
