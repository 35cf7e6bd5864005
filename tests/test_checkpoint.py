"""Model files and training checkpoints: exact resume, pruning, atomicity and readable errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import smoke_config
from ganimation.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    checkpoint_dirs,
    latest_checkpoint,
    load_into,
    load_training_state,
    read_model_file,
    save_model_file,
    save_training_checkpoint,
    split_prefix,
    unwrap,
)
from ganimation.config import ModelConfig, build_config
from ganimation.networks import Discriminator, Generator, build_networks
from ganimation.training import train

SMOKE = build_config("smoke").model


def read_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl as {step: metrics} without the wall-clock time."""
    entries = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        entry.pop("time")
        entries[entry.pop("step")] = entry
    return entries


@pytest.fixture
def networks() -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    return build_networks(SMOKE)


# --------------------------------------------------------------------------- training runs


def test_resume_is_exact(tmp_path: Path, dataset_dir: Path) -> None:
    # 20 training images in batches of 4: 5 steps per epoch, so steps 4..6 cross an epoch boundary.
    train(smoke_config(dataset_dir, tmp_path / "straight", 6), show_progress=False)
    train(smoke_config(dataset_dir, tmp_path / "resumed", 3), show_progress=False)
    assert [p.name for p in checkpoint_dirs(tmp_path / "resumed")] == ["step_000000002", "step_000000003"]
    assert sorted(read_metrics(tmp_path / "resumed")) == [1, 2, 3]
    train(smoke_config(dataset_dir, tmp_path / "resumed", 6), resume=True, show_progress=False)

    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert sorted(straight) == sorted(resumed) == [1, 2, 3, 4, 5, 6]  # no duplicated or lost lines
    for step in range(1, 7):
        assert resumed[step] == straight[step], step
    assert "g/total" in straight[4] and "g/total" not in straight[5]
    # The final weights are bit-identical too.
    _, straight_tensors, straight_extra = read_model_file(tmp_path / "straight" / MODEL_FILE)
    _, resumed_tensors, resumed_extra = read_model_file(tmp_path / "resumed" / MODEL_FILE)
    assert straight_tensors.keys() == resumed_tensors.keys()
    assert all(torch.equal(straight_tensors[key], resumed_tensors[key]) for key in straight_tensors)
    assert straight_extra["step"] == resumed_extra["step"] == 6
    assert resumed_extra["interrupted"] is False


def test_resume_with_weight_average_is_exact(tmp_path: Path, dataset_dir: Path) -> None:
    average = "optim.ema_decay=0.5"
    train(smoke_config(dataset_dir, tmp_path / "straight", 6, average), show_progress=False)
    train(smoke_config(dataset_dir, tmp_path / "resumed", 3, average), show_progress=False)
    train(smoke_config(dataset_dir, tmp_path / "resumed", 6, average), resume=True, show_progress=False)
    assert read_metrics(tmp_path / "straight") == read_metrics(tmp_path / "resumed")
    _, straight, _ = read_model_file(tmp_path / "straight" / MODEL_FILE)
    _, resumed, _ = read_model_file(tmp_path / "resumed" / MODEL_FILE)
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    # The model files carry the average; the trained generator lives in the training state.
    checkpoint = latest_checkpoint(tmp_path / "resumed")
    trained = load_training_state(checkpoint)["generator_training"]
    _, exported, _ = read_model_file(checkpoint / MODEL_FILE)
    assert trained.keys() == split_prefix(exported, "generator").keys()
    assert any(not torch.equal(value, exported[f"generator.{key}"]) for key, value in trained.items())


def test_weight_average_starts_from_a_checkpoint_without_one(tmp_path: Path, dataset_dir: Path) -> None:
    run_dir = tmp_path / "run"
    train(smoke_config(dataset_dir, run_dir, 2), show_progress=False)
    _, before, _ = read_model_file(latest_checkpoint(run_dir) / MODEL_FILE)
    # One more batch without a generator step (smoke: critic_steps=2; step 2 is a critic step).
    train(smoke_config(dataset_dir, run_dir, 3, "optim.ema_decay=0.5"), resume=True, show_progress=False)
    state = load_training_state(latest_checkpoint(run_dir))
    assert state["generator_average_updates"] == 1
    _, after, _ = read_model_file(latest_checkpoint(run_dir) / MODEL_FILE)
    generator_keys = [key for key in before if key.startswith("generator.")]
    assert all(torch.equal(before[key], after[key]) for key in generator_keys)
    assert all(torch.equal(state["generator_training"][key[len("generator."):]], before[key]) for key in generator_keys)
    # Back without the average: training continues from the trained weights, not the average.
    train(smoke_config(dataset_dir, run_dir, 4), resume=True, show_progress=False)
    assert "generator_training" not in load_training_state(latest_checkpoint(run_dir))


def test_resume_with_changed_model_config_fails(tmp_path: Path, dataset_dir: Path) -> None:
    run_dir = tmp_path / "run"
    train(smoke_config(dataset_dir, run_dir, 2), show_progress=False)
    config = smoke_config(dataset_dir, run_dir, 4, "model.generator_channels=16")
    with pytest.raises(CheckpointError) as raised:
        train(config, resume=True, show_progress=False)
    message = str(raised.value)
    assert "step_000000002" in message and "model config differs" in message
    assert "generator_channels: checkpoint 8 vs config 16" in message


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path, dataset_dir: Path) -> None:
    run_dir = tmp_path / "run"
    train(smoke_config(dataset_dir, run_dir, 1), resume=True, show_progress=False)
    assert sorted(read_metrics(run_dir)) == [1]


def test_run_outputs_and_pruning(tmp_path: Path, dataset_dir: Path) -> None:
    run_dir = tmp_path / "run"
    config = smoke_config(dataset_dir, run_dir, 5, "run.checkpoint_every=1", "run.keep_checkpoints=2",
                          "run.sample_every=2")
    final = train(config, show_progress=False)
    assert final == run_dir / MODEL_FILE and final.is_file()
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step_000000004", "step_000000005"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000000004", "step_000000005"]
    for folder in checkpoint_dirs(run_dir):
        assert {p.name for p in folder.iterdir()} == {MODEL_FILE, STATE_FILE, "config.yaml"}
    assert build_config(config_file=run_dir / "config.yaml").to_dict() == config.to_dict()
    assert sorted(read_metrics(run_dir)) == [1, 2, 3, 4, 5]  # log_every = 1 in the smoke preset
    # Sample grids every 2 steps and at the end: rows of input | edit | attention | colour | cycle.
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == ["step_000000002.png", "step_000000004.png", "step_000000005.png"]
    grid = np.asarray(Image.open(run_dir / "samples" / samples[-1]))
    size, rows = config.model.image_size, config.run.num_samples
    assert grid.shape == (rows * size, 5 * size, 3)
    assert grid.dtype == np.uint8 and grid.std() > 0


def test_sample_grid_first_column_is_the_test_faces(trained_run: Path, dataset_dir: Path) -> None:
    from ganimation.data import discover_dataset
    from ganimation.files import load_image

    grid = np.asarray(Image.open(trained_run / "samples" / "step_000000004.png"))
    test_faces = discover_dataset(dataset_dir).test
    assert len(test_faces) == 4
    # Two grid rows spread over the four held-out faces: the first and the last.
    for row, position in enumerate((0, 3)):
        face = load_image(test_faces[position].image_path)
        np.testing.assert_array_equal(grid[row * 32:(row + 1) * 32, :32], face)


def test_keep_zero_keeps_everything(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    for step in (1, 2, 3):
        save_training_checkpoint(tmp_path, step, generator, discriminator, SMOKE, {"step": step}, "", keep=0)
    assert len(checkpoint_dirs(tmp_path)) == 3


# --------------------------------------------------------------------------- model files


def test_model_file_round_trip(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    path = save_model_file(tmp_path / "m.safetensors", generator, discriminator, SMOKE, extra={"step": 7})
    config, tensors, extra = read_model_file(path)
    assert config == SMOKE
    assert extra["step"] == 7 and extra["package_version"]
    assert set(split_prefix(tensors, "generator")) == set(generator.state_dict())
    assert set(split_prefix(tensors, "discriminator")) == set(discriminator.state_dict())
    fresh = Generator(config)
    load_into(fresh, split_prefix(tensors, "generator"), source=str(path), name="generator")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), generator.state_dict().values()))
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_half_precision_model_file(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, _ = networks
    path = save_model_file(tmp_path / "half.safetensors", generator, None, SMOKE, half=True)
    _, tensors, _ = read_model_file(path)
    assert all(value.dtype == torch.float16 for value in tensors.values())
    assert not split_prefix(tensors, "discriminator")
    fresh = Generator(SMOKE)
    load_into(fresh, split_prefix(tensors, "generator"), source=str(path), name="generator")
    assert fresh.encoder[0][0].weight.dtype == torch.float32
    torch.testing.assert_close(fresh.encoder[0][0].weight, generator.encoder[0][0].weight, atol=1e-3, rtol=1e-3)


class _Wrapper(nn.Module):
    """Stands for DistributedDataParallel: the real network under ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class _Compiled(nn.Module):
    """Stands for torch.compile's OptimizedModule: the real network under ``._orig_mod``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._orig_mod = module


def test_saved_keys_have_no_wrapper_prefixes(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    wrapped_generator = _Wrapper(_Compiled(generator))
    assert all(key.startswith("module._orig_mod.") for key in wrapped_generator.state_dict())
    assert unwrap(wrapped_generator) is generator
    path = save_model_file(tmp_path / "m.safetensors", wrapped_generator, _Wrapper(discriminator), SMOKE)
    keys = list(load_file(str(path)))
    assert keys and not [key for key in keys if "module." in key or "_orig_mod" in key]
    assert {key.split(".", 1)[1] for key in keys if key.startswith("generator.")} == set(generator.state_dict())
    # And such a file loads into a wrapped network as well.
    target = _Wrapper(Generator(SMOKE))
    load_into(target, split_prefix(load_file(str(path)), "generator"), source="m", name="generator")
    assert torch.equal(target.module.encoder[0][0].weight, generator.encoder[0][0].weight)


def test_training_checkpoint_keys_unwrapped(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    folder = save_training_checkpoint(tmp_path, 1, _Wrapper(generator), _Wrapper(discriminator), SMOKE, {}, "")
    assert not [key for key in load_file(str(folder / MODEL_FILE)) if "module" in key]


def test_truncated_model_file(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    path = save_model_file(tmp_path / "model.safetensors", generator, discriminator, SMOKE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as raised:
        read_model_file(path)
    assert str(path) in str(raised.value)
    path.write_bytes(data[:5])  # not even a header
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_model_file(path)


def test_missing_and_foreign_model_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such model file"):
        read_model_file(tmp_path / "absent.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="without ganimation metadata"):
        read_model_file(foreign)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(CheckpointError, match="notes.safetensors"):
        read_model_file(text)


def test_model_file_from_a_newer_version(tmp_path: Path) -> None:
    metadata = {"format": "ganimation", "format_version": "1",
                "model_config": json.dumps({"image_size": 32, "hypernetwork": True})}
    path = tmp_path / "new.safetensors"
    save_file({"generator.x": torch.zeros(1)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="unknown keys \\['hypernetwork'\\]"):
        read_model_file(path)


def test_shape_mismatch(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    # Weights of a 16-channel model under a file that claims the smoke (8-channel) config.
    wide = ModelConfig(**{**vars(SMOKE), "generator_channels": 16})
    path = save_model_file(tmp_path / "model.safetensors", Generator(wide), discriminator, SMOKE)
    with pytest.raises(CheckpointError) as raised:  # found on reading, before any network is built
        read_model_file(path)
    message = str(raised.value)
    assert str(path) in message and "weights do not fit the model config it carries" in message
    assert "shape mismatch: generator.encoder.0.0.weight (16, 20, 7, 7) vs (8, 20, 7, 7)" in message
    with pytest.raises(CheckpointError) as raised:
        load_into(Generator(SMOKE), Generator(wide).state_dict(), source=str(path), name="generator")
    message = str(raised.value)
    assert str(path) in message and "generator weights do not fit" in message
    assert "shape mismatch" in message and "encoder.0.0.weight (16, 20, 7, 7) vs (8, 20, 7, 7)" in message


def test_missing_and_unexpected_keys(networks: tuple[Generator, Discriminator]) -> None:
    generator, _ = networks
    state = dict(generator.state_dict())
    state.pop("colour_head.0.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="missing: colour_head.0.weight; unexpected: extra.weight"):
        load_into(Generator(SMOKE), state, source="f", name="generator")


# --------------------------------------------------------------------------- training checkpoints


def _state(step: int) -> dict[str, object]:
    return {"progress": {"step": step}, "tensor": torch.full((3,), float(step))}


def test_training_checkpoint_round_trip(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    folder = save_training_checkpoint(tmp_path, 12, generator, discriminator, SMOKE, _state(12), "a: 1\n")
    assert folder == tmp_path / "checkpoints" / "step_000000012"
    assert latest_checkpoint(tmp_path) == folder
    state = load_training_state(folder)
    assert state["progress"] == {"step": 12} and torch.equal(state["tensor"], torch.full((3,), 12.0))
    assert (folder / "config.yaml").read_text(encoding="utf-8") == "a: 1\n"
    assert read_model_file(folder / MODEL_FILE)[0] == SMOKE


def test_pruning_keeps_newest(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    for step in (5, 10, 15, 20, 25):
        save_training_checkpoint(tmp_path, step, generator, discriminator, SMOKE, _state(step), "", keep=3)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_000000015", "step_000000020", "step_000000025"]
    assert len(list((tmp_path / "checkpoints").iterdir())) == 3


def test_checkpoint_order_is_numeric_and_incomplete_folders_ignored(tmp_path: Path,
                                                                    networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    save_training_checkpoint(tmp_path, 99, generator, discriminator, SMOKE, _state(99), "")
    save_training_checkpoint(tmp_path, 100, generator, discriminator, SMOKE, _state(100), "")
    (tmp_path / "checkpoints" / "step_000000200").mkdir()  # a folder without files
    (tmp_path / "checkpoints" / ".step_000000300.abc.tmp").mkdir()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_000000099", "step_000000100"]
    assert latest_checkpoint(tmp_path).name == "step_000000100"
    assert checkpoint_dirs(tmp_path / "absent") == [] and latest_checkpoint(tmp_path / "absent") is None


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path, networks: tuple[Generator, Discriminator],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    generator, discriminator = networks
    first = save_training_checkpoint(tmp_path, 2, generator, discriminator, SMOKE, _state(2), "x", keep=1)
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    def failing_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_training_checkpoint(tmp_path, 4, generator, discriminator, SMOKE, _state(4), "x", keep=1)
    # Re-saving the same step must not lose the existing folder either.
    with pytest.raises(OSError, match="disk full"):
        save_training_checkpoint(tmp_path, 2, generator, discriminator, SMOKE, _state(2), "x", keep=1)
    monkeypatch.undo()

    assert checkpoint_dirs(tmp_path) == [first]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_000000002"]  # no temp folder left
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert load_training_state(first)["progress"] == {"step": 2}


def test_resave_same_step_replaces(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    save_training_checkpoint(tmp_path, 3, generator, discriminator, SMOKE, _state(3), "old")
    folder = save_training_checkpoint(tmp_path, 3, generator, discriminator, SMOKE, {"progress": "new"}, "new")
    assert load_training_state(folder) == {"progress": "new"}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000000003"]


def test_truncated_training_state(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    folder = save_training_checkpoint(tmp_path, 1, generator, discriminator, SMOKE, _state(1), "")
    state_file = folder / STATE_FILE
    state_file.write_bytes(state_file.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="training_state.pt: truncated or unreadable"):
        load_training_state(folder)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_training_state(tmp_path)


def test_truncated_checkpoint_on_resume(tmp_path: Path, dataset_dir: Path) -> None:
    run_dir = tmp_path / "run"
    train(smoke_config(dataset_dir, run_dir, 2), show_progress=False)
    model = run_dir / "checkpoints" / "step_000000002" / MODEL_FILE
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as raised:
        train(smoke_config(dataset_dir, run_dir, 4), resume=True, show_progress=False)
    assert str(model) in str(raised.value)


def test_copied_run_folder_loads(tmp_path: Path, trained_run: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    assert [p.name for p in checkpoint_dirs(copy)] == ["step_000000002", "step_000000004"]
    config, tensors, extra = read_model_file(copy / MODEL_FILE)
    assert config == SMOKE and extra == {"step": 4, "interrupted": False, "package_version": extra["package_version"]}
    _, latest_tensors, _ = read_model_file(latest_checkpoint(copy) / MODEL_FILE)
    assert all(torch.equal(tensors[key], latest_tensors[key]) for key in tensors)


def test_model_file_keeps_upsampling_mode(tmp_path: Path) -> None:
    config = build_config("smoke", overrides=["model.upsampling=resize"]).model
    generator, discriminator = build_networks(config)
    path = save_model_file(tmp_path / "resize.safetensors", generator, discriminator, config)
    loaded, tensors, _ = read_model_file(path)
    assert loaded.upsampling == "resize"
    load_into(Generator(loaded), split_prefix(tensors, "generator"), source=str(path), name="generator")
    # The same weights cannot load into the paper's transposed-convolution decoder.
    with pytest.raises(CheckpointError, match="decoder"):
        load_into(Generator(build_config("smoke").model), split_prefix(tensors, "generator"),
                  source=str(path), name="generator")


# --------------------------------------------------------------------------- hostile model files (issue 21)


def tampered(tmp_path: Path, networks: tuple[Generator, Discriminator], *, config: dict[str, object] | None = None,
             extra: object = None, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """A smoke model file with its metadata's model config or extra, or some tensors, replaced."""
    path = save_model_file(tmp_path / "good.safetensors", *networks, SMOKE)
    weights = {**load_file(path), **(tensors or {})}
    metadata = {"format": "ganimation", "format_version": "1", "package_version": "0",
                "model_config": json.dumps({**vars(SMOKE), **(config or {})})}
    if extra is not None:
        metadata["extra"] = json.dumps(extra)
    target = tmp_path / "model.safetensors"
    save_file(weights, str(target), metadata=metadata)
    return target


@pytest.mark.parametrize(("config", "message"), [
    ({"generator_channels": 200000}, "invalid model config \\(model.generator_channels=200000 is absurd"),
    ({"generator_channels": 16}, "weights do not fit the model config it carries \\(shape mismatch"),
    ({"discriminator_channels": -8}, "invalid model config \\(model.discriminator_channels must be positive"),
    ({"image_size": "32"}, "model config image_size='32' is not int"),
    ({"use_attention": 1}, "model config use_attention=1 is not bool"),
    ({"generator_residual_blocks": True}, "model config generator_residual_blocks=True is not int"),
    ({"upsampling": "bogus"}, "invalid model config \\(model.upsampling must be one of transposed, resize"),
])
def test_model_file_metadata_is_checked_before_building(tmp_path: Path, networks: tuple[Generator, Discriminator],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        config: dict[str, object], message: str) -> None:
    """generator_channels=200000 in the metadata made the loader try to allocate 5 TB."""
    import ganimation.networks as network_module

    path = tampered(tmp_path, networks, config=config)
    real_init = network_module.Generator.__init__

    def only_on_meta(self: Generator, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)
        assert all(parameter.is_meta for parameter in self.parameters()), "a real network was built"

    monkeypatch.setattr(network_module.Generator, "__init__", only_on_meta)
    with pytest.raises(CheckpointError, match=message):
        read_model_file(path)


@pytest.mark.parametrize(("extra", "message"), [([1, 2], "metadata 'extra' must be a mapping, not list"),
                                                ("step 4", "metadata 'extra' must be a mapping, not str")])
def test_model_file_extra_must_be_a_mapping(tmp_path: Path, networks: tuple[Generator, Discriminator],
                                            extra: object, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        read_model_file(tampered(tmp_path, networks, extra=extra))


def test_model_file_weights_are_checked(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    """NaN or int8 weights used to load silently (and animate returned black images)."""
    key = "generator.colour_head.0.weight"
    weight = load_file(save_model_file(tmp_path / "plain.safetensors", *networks, SMOKE))[key]
    cases = [({key: torch.full_like(weight, float("nan"))}, f"{key} holds NaN or infinite values"),
             ({key: weight.to(torch.int8)}, f"{key} holds torch.int8 values; model weights are floating point"),
             ({key: weight[:, :1].contiguous()}, f"shape mismatch: {key} \\(3, 1, 7, 7\\) vs \\(3, 8, 7, 7\\)"),
             ({"generator.spare.weight": weight}, "unexpected: generator.spare.weight")]
    for tensors, message in cases:
        with pytest.raises(CheckpointError, match=message):
            read_model_file(tampered(tmp_path, networks, tensors=tensors))
    # A file without its critic is fine (convert writes those); one without part of G is not.
    generator_only = {name: value for name, value in load_file(tmp_path / "plain.safetensors").items()
                      if name.startswith("generator.") and name != key}
    save_file(generator_only, str(tmp_path / "partial.safetensors"),
              metadata={"format": "ganimation", "model_config": json.dumps(vars(SMOKE))})
    with pytest.raises(CheckpointError, match=f"missing: {key}$|missing: {key}\\)"):
        read_model_file(tmp_path / "partial.safetensors")


def test_animate_with_a_nan_model_is_one_line(tmp_path: Path, networks: tuple[Generator, Discriminator],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import write_face
    from ganimation import cli

    key = "generator.attention_head.0.weight"
    weight = load_file(save_model_file(tmp_path / "plain.safetensors", *networks, SMOKE))[key]
    path = tampered(tmp_path, networks, tensors={key: torch.full_like(weight, float("nan"))})
    code = cli.main(["animate", str(write_face(tmp_path / "face.png")), "--crop", "--checkpoint", str(path),
                     "--au", "AU12=1", "-o", str(tmp_path / "out.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "NaN or infinite" in err[0], err
    assert not (tmp_path / "out.png").exists()


# --------------------------------------------------------------------------- checkpoint edge cases (issue 21)


def test_kill_between_the_renames_of_a_same_step_resave_resumes(tmp_path: Path, dataset_dir: Path) -> None:
    """keep_checkpoints=1: a same-step re-save renames step_N to .step_N.old, then the new copy to
    step_N. Killed in between, --resume used to restart from step 0 and wipe the metrics."""
    run_dir = tmp_path / "run"
    train(smoke_config(dataset_dir, tmp_path / "straight", 6, "run.keep_checkpoints=1"), show_progress=False)
    train(smoke_config(dataset_dir, run_dir, 4, "run.keep_checkpoints=1"), show_progress=False)
    folder = run_dir / "checkpoints"
    # The state on disk after the first rename: the complete new copy not yet renamed, the old aside.
    shutil.copytree(folder / "step_000000004", folder / ".step_000000004.k3x9.tmp")
    (folder / "step_000000004").rename(folder / ".step_000000004.old")
    assert checkpoint_dirs(run_dir) == []

    train(smoke_config(dataset_dir, run_dir, 6, "run.keep_checkpoints=1"), resume=True, show_progress=False)
    assert sorted(read_metrics(run_dir)) == [1, 2, 3, 4, 5, 6]  # resumed at 4, not restarted
    assert read_metrics(run_dir) == read_metrics(tmp_path / "straight")
    assert [path.name for path in folder.iterdir()] == ["step_000000006"]  # .old and .tmp tidied


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path, dataset_dir: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    run_dir = tmp_path / "run"
    train(smoke_config(dataset_dir, tmp_path / "straight", 6), show_progress=False)
    train(smoke_config(dataset_dir, run_dir, 4), show_progress=False)
    damaged = run_dir / "checkpoints" / "step_000000004" / STATE_FILE
    damaged.write_bytes(damaged.read_bytes()[:100])
    caplog.set_level("WARNING", logger="ganimation.training")
    train(smoke_config(dataset_dir, run_dir, 6), resume=True, show_progress=False)
    assert any("skipping a damaged checkpoint" in record.getMessage() and str(damaged) in record.getMessage()
               for record in caplog.records)
    # It continued exactly from step 2 (and re-saved step 4 over the damaged copy).
    assert read_metrics(run_dir) == read_metrics(tmp_path / "straight")
    assert load_file(run_dir / MODEL_FILE).keys() == load_file(tmp_path / "straight" / MODEL_FILE).keys()
    assert all(torch.equal(value, load_file(tmp_path / "straight" / MODEL_FILE)[key])
               for key, value in load_file(run_dir / MODEL_FILE).items())
    assert load_training_state(run_dir / "checkpoints" / "step_000000004")["progress"]["step"] == 4


def test_leftovers_and_half_pruned_folders_are_cleaned(tmp_path: Path,
                                                       networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    folder = tmp_path / "checkpoints"
    kept = save_training_checkpoint(tmp_path, 4, generator, discriminator, SMOKE, _state(4), "", keep=2)
    shutil.copytree(kept, folder / ".step_000000004.old")  # a re-save killed after its second rename
    (folder / ".step_000000006.x1y2.tmp").mkdir()  # a save killed before its rename
    (folder / ".step_000000001.pruned").mkdir()  # a prune killed mid-delete
    half = folder / "step_000000002"  # an older version's prune killed mid-delete
    half.mkdir()
    (half / "config.yaml").write_text("", encoding="utf-8")
    newer = folder / "step_000000009"  # newer than every complete one: not touched
    newer.mkdir()
    save_training_checkpoint(tmp_path, 5, generator, discriminator, SMOKE, _state(5), "", keep=2)
    assert sorted(path.name for path in folder.iterdir()) == ["step_000000004", "step_000000005", "step_000000009"]


def test_pruning_never_leaves_a_half_deleted_checkpoint(tmp_path: Path, networks: tuple[Generator, Discriminator],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ganimation import checkpoint

    generator, discriminator = networks
    save_training_checkpoint(tmp_path, 1, generator, discriminator, SMOKE, _state(1), "", keep=1)

    def killed(path: Path, ignore_errors: bool = False) -> None:
        if path.name.endswith(".pruned"):
            (path / STATE_FILE).unlink()  # part way through
            raise KeyboardInterrupt
        shutil.rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        save_training_checkpoint(tmp_path, 2, generator, discriminator, SMOKE, _state(2), "", keep=1)
    monkeypatch.undo()
    assert [path.name for path in checkpoint_dirs(tmp_path)] == ["step_000000002"]
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == [".step_000000001.pruned",
                                                                                  "step_000000002"]
    save_training_checkpoint(tmp_path, 3, generator, discriminator, SMOKE, _state(3), "", keep=1)
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == ["step_000000003"]


def test_pruning_keeps_the_checkpoint_just_written(tmp_path: Path, networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = networks
    save_training_checkpoint(tmp_path, 9, generator, discriminator, SMOKE, _state(9), "", keep=1)
    written = save_training_checkpoint(tmp_path, 3, generator, discriminator, SMOKE, _state(3), "", keep=1)
    assert written in checkpoint_dirs(tmp_path)


def test_a_full_disk_during_a_checkpoint_is_named_and_loses_nothing(tmp_path: Path,
                                                                   networks: tuple[Generator, Discriminator],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save on a full disk says "unexpected pos 64 vs 0", safetensors "SafetensorError":
    neither named the cause."""
    from ganimation import checkpoint, files

    generator, discriminator = networks
    first = save_training_checkpoint(tmp_path, 2, generator, discriminator, SMOKE, _state(2), "x", keep=1)
    before = {path.name: path.read_bytes() for path in first.iterdir()}

    def torch_on_a_full_disk(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", torch_on_a_full_disk)
    monkeypatch.setattr(files, "free_bytes", lambda folder: 0)
    for step in (4, 2):  # a new step, and a re-save of the existing one
        with pytest.raises(OSError) as raised:
            save_training_checkpoint(tmp_path, step, generator, discriminator, SMOKE, _state(step), "x", keep=1)
        assert str(raised.value).startswith(f"{tmp_path / 'checkpoints' / f'step_{step:09d}'}: no space left on device")
        assert len(str(raised.value).splitlines()) == 1
    monkeypatch.undo()
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == ["step_000000002"]
    assert {path.name: path.read_bytes() for path in first.iterdir()} == before
