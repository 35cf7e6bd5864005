"""Start training from a trained model: the same networks, or wider ones grown without changing them.

``ganimation train --init MODEL`` (``run.init_from``) fine-tunes a model file, checkpoint, run
folder or the bundled model (``bundled``) on new data with fresh optimisers and schedule. When the
config asks for more channels than the model has (``model.generator_channels`` /
``model.discriminator_channels``), each network is grown by Net2WiderNet (Chen, Goodfellow and
Shlens, "Net2Net: Accelerating Learning via Knowledge Transfer", ICLR 2016): every new channel
copies an existing one, and the layer that reads the copies shares that channel's outgoing weights
among them, so the grown network computes exactly what the trained one did and training resumes
from its quality with the extra capacity free to learn.

Two details make this fit GANimation's networks:

* InstanceNorm normalises each channel on its own, so a copied channel is normalised exactly as
  its original (the same holds for ReLU and LeakyReLU, which act per value).
* Net2Net shares the outgoing weights equally and breaks the copies' symmetry with noise, which
  changes the function. Here the shares are random positive fractions that sum to one, which
  keeps the function exact and still gives each copy its own gradient, so copies drift apart.

Nothing here is in GANimation; it is a way to spend new compute on a larger model without
starting from scratch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import torch
from torch import nn

from ganimation.checkpoint import CheckpointError
from ganimation.config import ModelConfig
from ganimation.networks import Discriminator, Generator, init_weights

logger = logging.getLogger(__name__)

BUNDLED = "bundled"
# Fields that must match between the trained model and the config: growing changes widths only.
_SAME_ARCHITECTURE = ("image_size", "num_aus", "generator_residual_blocks", "discriminator_layers",
                      "use_attention", "norm_affine", "generator_conv_bias", "upsampling")


@dataclasses.dataclass(frozen=True)
class _Layer:
    """One convolution of a plan: which channel groups it reads and writes (None = fixed size)."""

    conv: str
    reads: str | None
    writes: str | None
    norm: str | None = None


class _ChannelMap:
    """Where each channel of a grown group comes from, and each copy's share of the outgoing weights."""

    def __init__(self, old: int, new: int, generator: torch.Generator) -> None:
        extra = torch.randint(0, old, (new - old,), generator=generator)
        self.source = torch.cat([torch.arange(old), extra])  # (new,) index of the original channel
        # Positive random shares, normalised so that the copies of one channel sum to exactly 1.
        raw = 1.0 + 0.5 * (torch.rand(new, generator=generator, dtype=torch.float64) - 0.5)
        totals = torch.zeros(old, dtype=torch.float64).index_add_(0, self.source, raw)
        self.share = (raw / totals[self.source]).float()


def _generator_plan(config: ModelConfig) -> list[_Layer]:
    conv, norm = ("1", "2") if config.upsampling == "resize" else ("0", "1")
    plan = [_Layer("encoder.0.0", None, "enc1", "encoder.0.1"),
            _Layer("encoder.1.0", "enc1", "enc2", "encoder.1.1"),
            _Layer("encoder.2.0", "enc2", "stream", "encoder.2.1")]
    for block in range(config.generator_residual_blocks):
        # Every block adds to the residual stream, so its second convolution writes the stream's
        # channel layout and the stream's copies stay copies.
        plan += [_Layer(f"bottleneck.{block}.body.0", "stream", f"block{block}", f"bottleneck.{block}.body.1"),
                 _Layer(f"bottleneck.{block}.body.3", f"block{block}", "stream", f"bottleneck.{block}.body.4")]
    plan += [_Layer(f"decoder.0.{conv}", "stream", "dec1", f"decoder.0.{norm}"),
             _Layer(f"decoder.1.{conv}", "dec1", "dec2", f"decoder.1.{norm}"),
             _Layer("colour_head.0", "dec2", None),
             _Layer("attention_head.0", "dec2", None)]
    return plan


def _discriminator_plan(config: ModelConfig) -> list[_Layer]:
    plan = [_Layer(f"trunk.{2 * layer}", f"trunk{layer - 1}" if layer else None, f"trunk{layer}")
            for layer in range(config.discriminator_layers)]
    last = f"trunk{config.discriminator_layers - 1}"
    return plan + [_Layer("realness_head", last, None), _Layer("au_head", last, None)]


def _grow(trained: nn.Module, grown: nn.Module, plan: Iterable[_Layer], seed: int) -> None:
    """Copy ``trained`` into the wider ``grown`` along ``plan`` (Net2WiderNet with exact shares)."""
    generator = torch.Generator().manual_seed(seed)
    maps: dict[str, _ChannelMap | None] = {}
    covered: set[str] = set()
    for layer in plan:
        old_conv, new_conv = trained.get_submodule(layer.conv), grown.get_submodule(layer.conv)
        # Conv2d weights are (out, in, kh, kw); ConvTranspose2d weights are (in, out, kh, kw).
        out_axis, in_axis = (1, 0) if isinstance(old_conv, nn.ConvTranspose2d) else (0, 1)
        weight = old_conv.weight.detach().float()
        bias = old_conv.bias.detach().float() if old_conv.bias is not None else None
        if layer.writes is not None and layer.writes not in maps:
            old_out, new_out = weight.shape[out_axis], new_conv.weight.shape[out_axis]
            maps[layer.writes] = _ChannelMap(old_out, new_out, generator) if new_out > old_out else None
        write_map = maps[layer.writes] if layer.writes is not None else None
        read_map = maps[layer.reads] if layer.reads is not None else None
        if write_map is not None:
            weight = weight.index_select(out_axis, write_map.source)
            bias = bias.index_select(0, write_map.source) if bias is not None else None
        if read_map is not None:
            shape = [1] * weight.dim()
            shape[in_axis] = -1
            weight = weight.index_select(in_axis, read_map.source) * read_map.share.view(shape)
        with torch.no_grad():
            new_conv.weight.copy_(weight)
            if bias is not None:
                new_conv.bias.copy_(bias)
        covered.update(f"{layer.conv}.{name}" for name, _ in old_conv.named_parameters())
        if layer.norm is not None:
            old_norm, new_norm = trained.get_submodule(layer.norm), grown.get_submodule(layer.norm)
            for name, value in old_norm.named_parameters():
                value = value.detach().float()
                if write_map is not None:
                    value = value.index_select(0, write_map.source)
                with torch.no_grad():
                    getattr(new_norm, name).copy_(value)
                covered.add(f"{layer.norm}.{name}")
    missed = sorted({name for name, _ in trained.named_parameters()} - covered)
    if missed:
        raise RuntimeError(f"growing {type(trained).__name__} left parameters uncopied: {missed}")


def _check_growable(trained: ModelConfig, target: ModelConfig, source: str) -> None:
    different = [f"{name} {getattr(trained, name)!r} vs {getattr(target, name)!r}" for name in _SAME_ARCHITECTURE
                 if getattr(trained, name) != getattr(target, name)]
    if different:
        raise CheckpointError(f"{source}: cannot start from this model, its architecture differs from the "
                              f"config's ({', '.join(different)}); only widths may grow")
    for name in ("generator_channels", "discriminator_channels"):
        if getattr(target, name) < getattr(trained, name):
            raise CheckpointError(f"{source}: model.{name} is {getattr(target, name)}, narrower than the model's "
                                  f"{getattr(trained, name)}; a trained network can grow, not shrink")


def grow_generator(trained: Generator, config: ModelConfig, seed: int = 0) -> Generator:
    """A generator of ``config``'s width computing what ``trained`` computes (see module docs)."""
    _check_growable(trained.config, config, "generator")
    grown = Generator(config)
    _grow(trained, grown, _generator_plan(config), seed)
    return grown


def grow_discriminator(trained: Discriminator, config: ModelConfig, seed: int = 0) -> Discriminator:
    """A critic of ``config``'s width computing what ``trained`` computes (see module docs)."""
    _check_growable(trained.config, config, "discriminator")
    grown = Discriminator(config)
    _grow(trained, grown, _discriminator_plan(config), seed + 1)
    return grown


def initial_networks(path: str, config: ModelConfig, seed: int = 0) -> tuple[Generator, Discriminator]:
    """The networks ``run.init_from`` names, grown to ``config``'s widths when it asks for more.

    A model file without a critic (e.g. one exported without it) gives a freshly initialised one.
    """
    from ganimation.inference import GANimation

    model = GANimation.load(None if path == BUNDLED else path, device="cpu")
    _check_growable(model.config, config, model.source)
    generator = model.generator
    if config.generator_channels > model.config.generator_channels:
        logger.info("growing the generator of %s from %d to %d channels", model.source,
                    model.config.generator_channels, config.generator_channels)
        generator = grow_generator(generator, config, seed)
    discriminator = model.discriminator
    if discriminator is None:
        logger.warning("%s has no critic; training starts a fresh one", model.source)
        discriminator = Discriminator(config)
        init_weights(discriminator)
    elif config.discriminator_channels > model.config.discriminator_channels:
        logger.info("growing the critic of %s from %d to %d channels", model.source,
                    model.config.discriminator_channels, config.discriminator_channels)
        discriminator = grow_discriminator(discriminator, config, seed)
    # The loaded networks carry the file's config object; give them the run's (same architecture).
    generator.config = discriminator.config = config
    return generator.train(), discriminator.train()
