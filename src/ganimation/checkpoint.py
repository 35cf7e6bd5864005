"""On-disk formats: the inference artefact and the full training checkpoint.

* **Model file** (``model.safetensors``): generator and critic weights under the prefixes
  ``generator.`` and ``discriminator.``, with the model config and package version as JSON in
  the safetensors metadata. It is all that :meth:`ganimation.inference.GANimation.load` needs:
  no trainer, no dataset, no pickle.
* **Training checkpoint** (a folder ``step_000001000/``): the model file in full precision plus
  ``training_state.pt`` (both optimisers, both schedulers, counters, RNG states) and
  ``config.yaml``. The folder is written under a temporary name, synced, then renamed, so a run
  killed at any moment leaves only complete checkpoints behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, get_type_hints

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ganimation import __version__
from ganimation.config import ConfigError, ModelConfig
from ganimation.files import disk_full_explained
from ganimation.appearance import AppearanceModel
from ganimation.shapewarp import ShapeModel

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.yaml"
FORMAT_NAME = "ganimation"
FORMAT_VERSION = "1"
_CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint or model file that is missing, truncated, foreign or of another shape."""


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel / torch.compile wrappers, so saved keys
    never carry ``module.`` or ``_orig_mod.`` prefixes."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def model_tensors(generator: nn.Module, discriminator: nn.Module | None,
                  dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("generator", generator), ("discriminator", discriminator)):
        if module is None:
            continue
        for key, value in unwrap(module).state_dict().items():
            value = value.detach().to("cpu")
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            tensors[f"{prefix}.{key}"] = value.contiguous()
    return tensors


def save_model_file(path: str | os.PathLike[str], generator: nn.Module, discriminator: nn.Module | None,
                    model_config: ModelConfig, *, half: bool = False, extra: dict[str, Any] | None = None,
                    shape: ShapeModel | None = None, appearance: AppearanceModel | None = None) -> Path:
    """Write the inference artefact atomically; ``half`` stores weights (and the ``appearance``
    model's maps, :mod:`ganimation.appearance`) as float16 (the ``shape`` model,
    :mod:`ganimation.shapewarp`, stays float32: it is a few hundred kB)."""
    from ganimation.files import atomic_output

    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model_config": json.dumps(dataclasses.asdict(model_config)),
    }
    if extra:
        metadata["extra"] = json.dumps(extra)
    tensors = model_tensors(generator, discriminator, torch.float16 if half else None)
    if shape is not None:
        tensors.update(shape.state_dict())
    if appearance is not None:
        tensors.update(appearance.state_dict())
        if half:  # the maps; the reference shape stays exact
            for key in ("appearance.basis", "appearance.interior"):
                if key in tensors:
                    tensors[key] = tensors[key].half()
    target = Path(path)
    with atomic_output(target) as temp:
        save_file(tensors, str(temp), metadata=metadata)
    return target


def read_safetensors(source: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, read in one pass; a damaged file becomes a
    :class:`CheckpointError` naming it (``kind`` words the message: "model file", "file")."""
    try:
        with safe_open(str(source), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{source}: truncated or not a safetensors {kind} ({error})") from None
    return tensors, metadata


def read_model_file(path: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a model file: (model config, tensors, decoded extra metadata).

    Nothing in the file is trusted before it is checked: the config's keys, types and ranges,
    ``extra`` being a mapping, then every tensor's name, shape and dtype against the networks
    that config describes (built on the meta device, so no memory is spent on a claim of
    200,000 channels) and its values being finite.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"{source}: no such model file")
    tensors, metadata = read_safetensors(source, "model file")
    if metadata.get("format") != FORMAT_NAME or "model_config" not in metadata:
        raise CheckpointError(f"{source}: a safetensors file without ganimation metadata (no model config inside)")
    try:
        values = json.loads(metadata["model_config"])
        extra = json.loads(metadata["extra"]) if "extra" in metadata else {}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{source}: unreadable metadata ({error})") from None
    config = model_config_from(values, source)
    if not isinstance(extra, dict):
        raise CheckpointError(f"{source}: metadata 'extra' must be a mapping, not {type(extra).__name__}")
    check_model_tensors(config, tensors, source)
    extra["package_version"] = metadata.get("package_version", "unknown")
    return config, tensors, extra


def model_config_from(values: Any, source: str | os.PathLike[str]) -> ModelConfig:
    """A :class:`ModelConfig` from a file's JSON, each key's type and the whole checked."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: model config must be a mapping, not {type(values).__name__}")
    hints = get_type_hints(ModelConfig)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise CheckpointError(f"{source}: model config has unknown keys {unknown}; written by a newer ganimation?")
    for key, value in values.items():
        kind = hints[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(f"{source}: model config {key}={value!r} is not {kind.__name__}")
    config = ModelConfig(**values)
    try:
        config.validate()
    except ConfigError as error:
        raise CheckpointError(f"{source}: invalid model config ({error})") from None
    return config


def check_model_tensors(config: ModelConfig, tensors: dict[str, torch.Tensor], source: str | os.PathLike[str]) -> None:
    """Every tensor one the networks of ``config`` have, of their shape, floating point and
    finite; the generator's all there (the critic is optional)."""
    from ganimation.networks import build_networks

    with torch.device("meta"):
        generator, discriminator = build_networks(config, initialise=False)
    expected = {f"{prefix}.{key}": value for prefix, module in (("generator", generator),
                                                                ("discriminator", discriminator))
                for key, value in module.state_dict().items()}
    try:
        ShapeModel.from_state_dict(split_prefix(tensors, "shape", keep_prefix=True))
        AppearanceModel.from_state_dict(split_prefix(tensors, "appearance", keep_prefix=True))
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None
    tensors = {key: value for key, value in tensors.items() if not key.startswith(("shape.", "appearance."))}
    with_critic = any(name.startswith("discriminator.") for name in tensors)
    missing = sorted(key for key in expected if key not in tensors
                     and (key.startswith("generator.") or with_critic))
    mismatch = _mismatch(expected, tensors, missing)
    if mismatch:
        raise CheckpointError(f"{source}: weights do not fit the model config it carries ({mismatch})")
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise CheckpointError(f"{source}: {key} holds {value.dtype} values; model weights are floating point")
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: {key} holds NaN or infinite values (did training diverge?)")


def _mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], missing: list[str]) -> str:
    """What keeps ``found`` from fitting ``expected`` (shapes, ``missing``, unexpected keys), in one
    line with at most 4 of each; empty when it fits."""
    wrong_shape = [f"{key} {tuple(found[key].shape)} vs {tuple(value.shape)}" for key, value in expected.items()
                   if key in found and found[key].shape != value.shape]
    unexpected = sorted(set(found) - set(expected))
    return "; ".join(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                     for label, keys in (("shape mismatch", wrong_shape), ("missing", missing),
                                         ("unexpected", unexpected)) if keys)


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str, keep_prefix: bool = False) -> dict[str, torch.Tensor]:
    start = f"{prefix}."
    cut = 0 if keep_prefix else len(start)
    return {key[cut:]: value for key, value in tensors.items() if key.startswith(start)}


def load_into(module: nn.Module, state: dict[str, torch.Tensor], *, source: str, name: str) -> None:
    """Load a state dict, turning a key or shape mismatch into one readable error line."""
    expected = unwrap(module).state_dict()
    mismatch = _mismatch(expected, state, sorted(set(expected) - set(state)))
    if mismatch:
        raise CheckpointError(f"{source}: {name} weights do not fit this model ({mismatch})")
    unwrap(module).load_state_dict({key: value.to(expected[key].dtype) for key, value in state.items()})


# ----------------------------------------------------------------------------- training checkpoints


def checkpoint_dirs(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are never listed)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir()
             if path.is_dir() and (match := _CHECKPOINT_PATTERN.match(path.name))
             and (path / STATE_FILE).is_file() and (path / MODEL_FILE).is_file()]
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def tidy_checkpoints(run_dir: str | os.PathLike[str]) -> None:
    """Put a run's ``checkpoints/`` back in order after a kill at any moment of a save or prune.

    * ``.step_N.old`` is the previous copy of ``step_N`` during a same-step re-save: without
      ``step_N`` (killed between the two renames) it is the checkpoint and gets its name back;
      beside ``step_N`` it is a leftover.
    * ``.step_N.<random>.tmp`` (a save killed before its rename) and ``.step_N.pruned`` (a prune
      killed mid-delete) are never checkpoints.
    * A ``step_N`` folder older than the newest complete checkpoint and missing one of its files
      was half-deleted by an older version's pruning.
    """
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return
    for old in folder.glob(".step_*.old"):
        final = folder / old.name[1:-len(".old")]
        if not final.exists() and (old / STATE_FILE).is_file() and (old / MODEL_FILE).is_file():
            logger.warning("recovering checkpoint %s from %s (a save was interrupted)", final.name, old.name)
            os.replace(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for stale in [*folder.glob(".step_*.tmp"), *folder.glob(".step_*.pruned")]:
        # Left by a run killed mid-write or mid-prune: never a checkpoint, possibly hundreds of MB.
        shutil.rmtree(stale, ignore_errors=True)
    complete = checkpoint_dirs(run_dir)
    if complete:
        newest = int(_CHECKPOINT_PATTERN.match(complete[-1].name).group(1))  # type: ignore[union-attr]
        for path in folder.iterdir():
            match = _CHECKPOINT_PATTERN.match(path.name)
            if match and path.is_dir() and int(match.group(1)) < newest and path not in complete:
                shutil.rmtree(path, ignore_errors=True)


def _remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint folder so that a kill mid-way never leaves a half-deleted ``step_N``."""
    doomed = path.with_name(f".{path.name}.pruned")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def save_training_checkpoint(run_dir: str | os.PathLike[str], step: int, generator: nn.Module,
                             discriminator: nn.Module, model_config: ModelConfig, state: dict[str, Any],
                             config_yaml: str, keep: int = 3) -> Path:
    """Write ``run_dir/checkpoints/step_<step>/`` atomically and prune all but the newest ``keep``
    (never the one just written). A full disk is one line naming it; no checkpoint is lost."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    tidy_checkpoints(run_dir)
    final = folder / f"step_{step:09d}"
    with disk_full_explained(final):
        temp = Path(tempfile.mkdtemp(prefix=f".step_{step:09d}.", suffix=".tmp", dir=folder))
    try:
        with disk_full_explained(final):  # inside: free space is measured before the cleanup
            save_model_file(temp / MODEL_FILE, generator, discriminator, model_config)
            torch.save(state, temp / STATE_FILE)
            (temp / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
            for child in temp.iterdir():
                _fsync_path(child)
            _fsync_path(temp)
        if final.exists():
            # Re-saving the same step (e.g. on a signal right after a periodic save): swap safely.
            # A kill between the two renames leaves the previous copy as .step_N.old, which
            # tidy_checkpoints (on resume, on the next save) renames back.
            stale = folder / f".{final.name}.old"
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(final, stale)
            os.replace(temp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(temp, final)
        _fsync_path(folder)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        if old != final:
            _remove_checkpoint(old)
    return final


def load_training_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: not a training checkpoint (no {STATE_FILE})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(f"{path}: truncated or unreadable training state ({error.__class__.__name__})") from None
