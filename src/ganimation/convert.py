"""Import the weights of the two public GANimation code bases into this package's model file.

Two layouts are recognised, by their key names (and, for a file saved through
``nn.DataParallel``, with a ``module.`` prefix on every key):

* **the authors' code** (PyTorch 0.3, ``net_epoch_<E>_id_G.pth`` / ``net_epoch_<E>_id_D.pth``):
  generator ``main.<i>`` (convolutions without bias, affine InstanceNorm), residual blocks
  ``main.<9+k>.main.{0,1,3,4}``, heads ``img_reg.0`` (colour) and ``attetion_reg.0``
  (attention, spelled so); critic ``main.<2l>`` (convolutions with bias), ``conv1`` (realness)
  and ``conv2`` (AU regression).
* **the 2018 replication** ``ganimation_replicate`` (PyTorch 0.4, ``<epoch>_net_gen.pth`` /
  ``<epoch>_net_dis.pth``): generator ``model.<i>`` (convolutions with bias, InstanceNorm
  without affine parameters), residual blocks ``model.<9+k>.conv_block.{0,3}``, heads
  ``color_top.0`` (colour) and ``au_top.0`` (attention); critic ``model.<2l>``, ``dis_top``
  (realness) and ``aus_top`` (AU regression).

Both compose ``output = A * input + (1 - A) * colour`` like :class:`ganimation.networks.Generator`,
whose ``norm_affine`` and ``generator_conv_bias`` options reproduce either variant exactly. The
model config is read off the tensor shapes: width and AU count from the first convolution,
residual blocks from the key indices, critic depth from its convolutions and the image size from
the AU head's kernel (``image_size = kernel * 2 ** layers``). Without a critic file the image size
cannot be known and defaults to 128, the size both code bases trained at.

InstanceNorm ``running_mean`` / ``running_var`` / ``num_batches_tracked`` buffers that such files
may carry are dropped: the networks normalise with each image's own statistics.

    config, tensors = load_foreign_checkpoint("net_epoch_30_id_G.pth")   # finds ..._id_D.pth beside it
    convert_checkpoint("30_net_gen.pth", "model.safetensors", half=True)
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ganimation.checkpoint import CheckpointError, check_model_tensors, load_into, save_model_file, split_prefix
from ganimation.config import ConfigError, ModelConfig
from ganimation.networks import Discriminator, Generator

logger = logging.getLogger(__name__)

AUTHORS = "authors"
REPLICATION = "replication"
#: The image size assumed when only a generator file is given (both code bases train at 128 px).
DEFAULT_IMAGE_SIZE = 128

#: Keys under which training scripts commonly wrap a state dict.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "weights", "params",
                 "generator", "netG", "G", "discriminator", "netD", "D")
_BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")
_LISTED = 6


class _Layout:
    """Key names of one foreign code base."""

    def __init__(self, name: str, trunk: str, block: str, block_convs: tuple[int, int],
                 block_norms: tuple[int, int], colour: str, attention: str, realness: str, au: str,
                 description: str) -> None:
        self.name, self.trunk, self.block = name, trunk, block
        self.block_convs, self.block_norms = block_convs, block_norms
        self.colour, self.attention, self.realness, self.au = colour, attention, realness, au
        self.description = description


LAYOUTS = {
    AUTHORS: _Layout(AUTHORS, "main", "main", (0, 3), (1, 4), "img_reg.0", "attetion_reg.0", "conv1", "conv2",
                     "the authors' GANimation code"),
    REPLICATION: _Layout(REPLICATION, "model", "conv_block", (0, 3), (1, 4), "color_top.0", "au_top.0",
                         "dis_top", "aus_top", "ganimation_replicate"),
}

# Sibling file names: the generator file's name -> the critic file's name, and back.
_NAME_PAIRS = (
    (re.compile(r"^(?P<stem>.*_id_)G(?P<ext>\.[A-Za-z]+)$"), "D"),
    (re.compile(r"^(?P<stem>.*net_)gen(?P<ext>\.[A-Za-z]+)$"), "dis"),
)
_REVERSE_PAIRS = (
    (re.compile(r"^(?P<stem>.*_id_)D(?P<ext>\.[A-Za-z]+)$"), "G"),
    (re.compile(r"^(?P<stem>.*net_)dis(?P<ext>\.[A-Za-z]+)$"), "gen"),
)


# ----------------------------------------------------------------------------- reading


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(key, str) and isinstance(tensor, torch.Tensor) for key, tensor in value.items())


def _first_line(error: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, or just the type when the message is empty (EOFError)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{error.__class__.__name__}: {lines[0][:limit]}" if lines else error.__class__.__name__


def _not_a_checkpoint(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({_first_line(error)})")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except UnicodeDecodeError:
        pass  # a Python 2 pickle (PyTorch 0.3 era): byte strings need latin-1
    except pickle.UnpicklingError as error:
        # torch's safe unpickler names a class it refuses as an "Unsupported global"; any other
        # unpickling error (an unknown opcode, ...) means the bytes are not a pickle at all
        refused = re.search(r"Unsupported global: (?:GLOBAL )?([\w.]+)", str(error))
        if refused:
            raise CheckpointError(f"{path}: holds more than weights (a pickled {refused.group(1)}, which is "
                                  f"not loaded, since unpickling it could run code)") from None
        reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(error))
        raise _not_a_checkpoint(path, pickle.UnpicklingError(reason.group(1)) if reason else error) from None
    except Exception as error:  # a damaged zip or pickle raises many types
        raise _not_a_checkpoint(path, error) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, encoding="latin1")
    except Exception as error:
        raise _not_a_checkpoint(path, error) from None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth`` file: a plain state dict or one wrapped under a key like
    ``state_dict``/``model``; the ``module.`` prefix of ``nn.DataParallel`` is removed."""
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"{source}: no such checkpoint file")
    loaded = _torch_load(source)
    state: Any = loaded
    if not _is_state_dict(state) and isinstance(state, Mapping):
        inner = [state[key] for key in _WRAPPER_KEYS if key in state and _is_state_dict(state[key])]
        if not inner:
            inner = [value for value in state.values() if _is_state_dict(value)]
        if len(inner) >= 1:
            state = inner[0]
    if not _is_state_dict(state):
        what = (f"a mapping with keys {sorted(map(str, loaded))[:_LISTED]}" if isinstance(loaded, Mapping)
                else f"a {type(loaded).__name__}")
        raise CheckpointError(f"{source}: not a state dict of tensors (found {what})")
    cleaned: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        if key.endswith(_BUFFER_SUFFIXES):
            continue  # InstanceNorm running statistics: unused, both codes normalise per image
        cleaned[key] = tensor.detach().to("cpu").contiguous()
    return cleaned


# ----------------------------------------------------------------------------- layout detection


def _layout_of(state: Mapping[str, torch.Tensor]) -> tuple[_Layout, str] | None:
    """(layout, "generator"|"discriminator") from the head key names, or None."""
    for layout in LAYOUTS.values():
        if f"{layout.colour}.weight" in state or f"{layout.attention}.weight" in state:
            return layout, "generator"
        if f"{layout.realness}.weight" in state or f"{layout.au}.weight" in state:
            return layout, "discriminator"
    return None


def _unknown_layout(source: Path, keys: list[str], why: str) -> CheckpointError:
    listed = ", ".join(keys[:_LISTED]) + (f" ... ({len(keys)} in all)" if len(keys) > _LISTED else "")
    known = " or ".join(layout.description for layout in LAYOUTS.values())
    return CheckpointError(f"{source}: not a GANimation checkpoint of a known layout ({known}): {why}; "
                           f"keys that did not match: {listed}")


def _map_generator(state: dict[str, torch.Tensor], layout: _Layout,
                   source: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Foreign generator keys -> ours, plus the config values read off the shapes."""
    trunk = layout.trunk
    first = state.get(f"{trunk}.0.weight")
    if first is None or first.ndim != 4:
        raise _unknown_layout(source, sorted(state), f"no 4-D first convolution '{trunk}.0.weight'")
    width, in_channels = int(first.shape[0]), int(first.shape[1])
    if in_channels <= 3:
        raise CheckpointError(f"{source}: first convolution takes {in_channels} channels; expected 3 + AUs")
    block_pattern = re.compile(rf"^{re.escape(trunk)}\.(\d+)\.{re.escape(layout.block)}\.")
    block_indices = sorted({int(match.group(1)) for key in state if (match := block_pattern.match(key))})
    blocks = len(block_indices)
    if block_indices != list(range(9, 9 + blocks)):
        raise _unknown_layout(source, [key for key in state if block_pattern.match(key)],
                              f"residual blocks at positions {block_indices}, expected {trunk}.9 onwards")

    # (foreign module, our module) for every conv / norm position of the main trunk.
    pairs: list[tuple[str, str]] = []
    for position, ours in enumerate(("encoder.0", "encoder.1", "encoder.2")):
        pairs += [(f"{trunk}.{3 * position}", f"{ours}.0"), (f"{trunk}.{3 * position + 1}", f"{ours}.1")]
    for block, index in enumerate(block_indices):
        for foreign in layout.block_convs + layout.block_norms:
            pairs.append((f"{trunk}.{index}.{layout.block}.{foreign}", f"bottleneck.{block}.body.{foreign}"))
    up = 9 + blocks
    for position, ours in enumerate(("decoder.0", "decoder.1")):
        pairs += [(f"{trunk}.{up + 3 * position}", f"{ours}.0"), (f"{trunk}.{up + 3 * position + 1}", f"{ours}.1")]
    pairs += [(layout.colour, "colour_head.0"), (layout.attention, "attention_head.0")]

    mapped: dict[str, torch.Tensor] = {}
    for foreign, ours in pairs:
        for parameter in ("weight", "bias"):
            key = f"{foreign}.{parameter}"
            if key in state:
                mapped[f"{ours}.{parameter}"] = state[key]
    used = {f"{foreign}.{parameter}" for foreign, _ in pairs for parameter in ("weight", "bias")}
    leftover = sorted(set(state) - used)
    if leftover:
        raise _unknown_layout(source, leftover, f"{len(leftover)} generator key(s) have no place in the network")
    config = {
        "num_aus": in_channels - 3,
        "generator_channels": width,
        "generator_residual_blocks": blocks,
        "norm_affine": f"{trunk}.1.weight" in state,
        "generator_conv_bias": f"{trunk}.0.bias" in state,
        "use_attention": True,
    }
    return mapped, config


def _map_discriminator(state: dict[str, torch.Tensor], layout: _Layout,
                       source: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    trunk = layout.trunk
    conv_pattern = re.compile(rf"^{re.escape(trunk)}\.(\d+)\.(weight|bias)$")
    indices = sorted({int(match.group(1)) for key in state if (match := conv_pattern.match(key))})
    layers = len(indices)
    if layers < 1 or indices != list(range(0, 2 * layers, 2)):
        raise _unknown_layout(source, sorted(state), f"critic convolutions at {trunk}.{indices}, expected "
                                                     f"{trunk}.0, {trunk}.2, ...")
    au_key, realness_key = f"{layout.au}.weight", f"{layout.realness}.weight"
    if au_key not in state or realness_key not in state:
        raise _unknown_layout(source, sorted(state), f"no heads {realness_key} and {au_key}")
    mapped: dict[str, torch.Tensor] = {}
    for index in indices:
        for parameter in ("weight", "bias"):
            key = f"{trunk}.{index}.{parameter}"
            if key in state:
                mapped[f"trunk.{index}.{parameter}"] = state[key]
    mapped["realness_head.weight"] = state[realness_key]
    mapped["au_head.weight"] = state[au_key]
    used = {f"{trunk}.{index}.{parameter}" for index in indices for parameter in ("weight", "bias")}
    leftover = sorted(set(state) - used - {au_key, realness_key})
    if leftover:
        raise _unknown_layout(source, leftover, f"{len(leftover)} critic key(s) have no place in the network")
    au_weight = state[au_key]
    if au_weight.ndim != 4 or au_weight.shape[2] != au_weight.shape[3]:
        raise CheckpointError(f"{source}: AU head {au_key} has shape {tuple(au_weight.shape)}; expected a square kernel")
    config = {
        "num_aus": int(au_weight.shape[0]),
        "discriminator_channels": int(state[f"{trunk}.0.weight"].shape[0]),
        "discriminator_layers": layers,
        "image_size": int(au_weight.shape[2]) * 2 ** layers,
    }
    return mapped, config


# ----------------------------------------------------------------------------- public API


def _sibling(path: Path, pairs: tuple[tuple[re.Pattern[str], str], ...]) -> Path | None:
    for pattern, replacement in pairs:
        match = pattern.match(path.name)
        if match:
            candidate = path.with_name(f"{match.group('stem')}{replacement}{match.group('ext')}")
            if candidate.is_file():
                return candidate
    return None


def find_discriminator_file(generator_path: str | os.PathLike[str]) -> Path | None:
    """``net_epoch_30_id_D.pth`` beside ``net_epoch_30_id_G.pth``, ``30_net_dis.pth`` beside ``30_net_gen.pth``."""
    return _sibling(Path(generator_path), _NAME_PAIRS)


def find_generator_file(discriminator_path: str | os.PathLike[str]) -> Path | None:
    return _sibling(Path(discriminator_path), _REVERSE_PAIRS)


def load_foreign_checkpoint(path: str | os.PathLike[str], discriminator_path: str | os.PathLike[str] | None = None,
                            *, image_size: int | None = None) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a generator file of either foreign code base (and its critic, given or found beside it).

    Returns our model config and the tensors under our key names, prefixed ``generator.`` and
    ``discriminator.`` as in a model file. ``image_size`` is only needed without a critic file
    (default 128); with one it is read from the critic's AU head and must agree.
    """
    source = Path(path)
    state = read_state_dict(source)
    found = _layout_of(state)
    if found is None:
        raise _unknown_layout(source, sorted(state), "no generator or critic head found")
    layout, kind = found
    if kind == "discriminator":
        # Given the critic file: take the generator beside it.
        generator_path = find_generator_file(source)
        if generator_path is None:
            raise CheckpointError(f"{source}: this is a {layout.description} critic (discriminator) file; "
                                  f"pass the generator file (the critic is found beside it or given separately)")
        if discriminator_path is None:
            discriminator_path = source
        source, state = generator_path, read_state_dict(generator_path)
        found = _layout_of(state)
        if found is None or found[1] != "generator":
            raise _unknown_layout(source, sorted(state), "expected a generator file")
        layout = found[0]
    generator_weights, values = _map_generator(state, layout, source)

    if discriminator_path is None:
        discriminator_path = find_discriminator_file(source)
    tensors = {f"generator.{key}": value for key, value in generator_weights.items()}
    if discriminator_path is not None:
        critic_source = Path(discriminator_path)
        critic_state = read_state_dict(critic_source)
        critic_found = _layout_of(critic_state)
        if critic_found is None or critic_found[1] != "discriminator":
            raise _unknown_layout(critic_source, sorted(critic_state), "expected a critic (discriminator) file")
        if critic_found[0] is not layout:
            logger.warning("%s is a %s critic but %s a %s generator", critic_source, critic_found[0].description,
                           source, layout.description)
        critic_weights, critic_values = _map_discriminator(critic_state, critic_found[0], critic_source)
        if critic_values["num_aus"] != values["num_aus"]:
            raise CheckpointError(f"{critic_source}: critic regresses {critic_values['num_aus']} AUs but the "
                                  f"generator {source} takes {values['num_aus']}")
        if image_size is not None and image_size != critic_values["image_size"]:
            raise CheckpointError(f"{critic_source}: critic is for {critic_values['image_size']} px images, "
                                  f"not {image_size}")
        values.update(critic_values)
        tensors.update({f"discriminator.{key}": value for key, value in critic_weights.items()})
        logger.info("read %s generator %s and critic %s", layout.description, source, critic_source)
    else:
        size = image_size or DEFAULT_IMAGE_SIZE
        values["image_size"] = size
        # A critic config that fits the size, so that the config validates; no critic weights exist.
        values["discriminator_layers"] = min(6, (size & -size).bit_length() - 1)
        logger.info("read %s generator %s (no critic file; image size %d assumed)", layout.description, source, size)
    config = ModelConfig(**values)
    try:
        config.validate()
    except ConfigError as error:
        raise CheckpointError(f"{source}: inferred an invalid model config ({error})") from None
    check_model_tensors(config, tensors, source)  # as for our own files: shapes, dtype, finite values
    return config, tensors


def build_foreign_networks(path: str | os.PathLike[str], discriminator_path: str | os.PathLike[str] | None = None,
                           *, image_size: int | None = None) -> tuple[ModelConfig, Generator, Discriminator | None]:
    """Our networks holding a foreign checkpoint's weights (shapes checked key by key)."""
    config, tensors = load_foreign_checkpoint(path, discriminator_path, image_size=image_size)
    generator = Generator(config)
    load_into(generator, split_prefix(tensors, "generator"), source=str(path), name="generator")
    discriminator = None
    critic_weights = split_prefix(tensors, "discriminator")
    if critic_weights:
        discriminator = Discriminator(config)
        load_into(discriminator, critic_weights, source=str(discriminator_path or path), name="discriminator")
    return config, generator, discriminator


def convert_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                       discriminator: str | os.PathLike[str] | None = None, half: bool = False,
                       *, image_size: int | None = None, attention_scale: float = 1.0) -> Path:
    """Convert a foreign ``.pth`` (plus critic) into our ``model.safetensors`` (float16 with ``half``).

    Our own model files and run or checkpoint folders are accepted too and re-saved, which is how
    a finished run becomes a small float16 file to ship (``ganimation convert RUN -o m.safetensors --half``).
    ``attention_scale`` multiplies the attention mask's logits (:meth:`Generator.scale_attention_logits`);
    the file's ``attention_scale`` entry records the product of every scale applied to its weights.
    """
    source = Path(src)
    if source.is_dir() or source.suffix == ".safetensors":
        return _resave_own(source, dst, half, attention_scale)
    config, generator, critic = build_foreign_networks(src, discriminator, image_size=image_size)
    extra: dict[str, Any] = {"converted_from": Path(src).name, "converted_critic": critic is not None}
    _scale_attention(generator, attention_scale, extra)
    return save_model_file(dst, generator, critic, config, half=half, extra=extra)


def _scale_attention(generator: Generator, factor: float, extra: dict[str, Any]) -> None:
    if factor != 1.0:
        generator.scale_attention_logits(factor)
        extra["attention_scale"] = float(extra.get("attention_scale", 1.0)) * factor


def _resave_own(source: Path, dst: str | os.PathLike[str], half: bool, attention_scale: float = 1.0) -> Path:
    """Re-save one of our model files (or a run's newest) with only the weights, optionally float16."""
    from ganimation.checkpoint import read_model_file
    from ganimation.inference import resolve_model_path
    from ganimation.networks import Discriminator, Generator

    model_path = resolve_model_path(source)
    config, tensors, extra = read_model_file(model_path)
    generator = Generator(config)
    load_into(generator, split_prefix(tensors, "generator"), source=str(model_path), name="generator")
    critic = None
    if split_prefix(tensors, "discriminator"):
        critic = Discriminator(config)
        load_into(critic, split_prefix(tensors, "discriminator"), source=str(model_path), name="discriminator")
    extra.pop("package_version", None)
    extra = {**extra, "converted_from": model_path.name}
    _scale_attention(generator, attention_scale, extra)
    return save_model_file(dst, generator, critic, config, half=half, extra=extra)
