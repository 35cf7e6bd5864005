"""Config defaults (the paper's), presets, file loading, ``--set`` overrides and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ganimation.aus import NUM_AUS
from ganimation.config import (
    PRESETS,
    Config,
    ConfigError,
    apply_override,
    build_config,
    load_config_file,
)


def test_defaults_are_the_papers() -> None:
    config = Config()
    assert config.optim.lr_generator == 1e-4 and config.optim.lr_discriminator == 1e-4
    assert (config.optim.beta1, config.optim.beta2) == (0.5, 0.999)
    assert config.optim.critic_steps == 5
    assert (config.optim.epochs, config.optim.decay_epochs) == (20, 10)
    assert config.optim.max_steps is None
    assert config.data.batch_size == 25
    assert config.loss.lambda_gp == 10.0
    assert config.loss.lambda_cond == 160.0
    assert config.loss.lambda_tv == 1e-5
    assert config.loss.lambda_attention == 0.1
    assert config.loss.lambda_idt == 10.0
    assert config.loss.lambda_same_expression == 0.0  # not in the paper: off unless asked for
    assert config.loss.lambda_paired == 0.0  # not in the paper: off unless asked for
    assert config.loss.lambda_paired_colour == 0.0  # not in the paper: off unless asked for
    assert config.loss.lambda_paired_attention == 0.0
    assert config.loss.uses_pairs is False
    assert config.loss.target_noise == 0.1
    assert config.model.image_size == 128 and config.model.num_aus == NUM_AUS == 17
    assert config.model.use_attention is True
    assert config.validate() is config


def test_paper_preset_equals_defaults() -> None:
    assert build_config("paper128").to_dict() == Config().to_dict()
    assert build_config().to_dict() == Config().to_dict()


def test_official_preset_is_the_paper_trained_as_the_authors_code() -> None:
    config, paper = build_config("official"), Config()
    assert config.model == paper.model and config.data == paper.data
    assert config.loss.lambda_cond == 4000.0 and config.loss.au_loss_divided_by_batch is True
    assert config.loss.attention_smoothness == "absolute"
    assert config.loss.clamp_targets is False and config.loss.reuse_critic_targets is True
    assert (config.optim.lr_decay, config.optim.penalty_step, config.optim.norm_init) == ("epoch", "separate",
                                                                                         "uniform")
    # Our defaults, which paper128 keeps.
    assert (paper.loss.attention_smoothness, paper.optim.penalty_step, paper.optim.lr_decay) == ("squared", "joint",
                                                                                                "step")
    assert paper.loss.clamp_targets is True and paper.loss.reuse_critic_targets is False
    assert paper.loss.au_loss_divided_by_batch is False and paper.optim.norm_init == "ones"


def test_smoke_preset() -> None:
    config = build_config("smoke")
    assert config.model.image_size == 32
    assert config.model.generator_channels == 8 and config.model.generator_residual_blocks == 1
    assert config.model.discriminator_layers == 3
    assert config.optim.critic_steps == 2
    assert config.data.batch_size == 4
    assert config.run.tensorboard is False
    # What the preset does not name keeps the paper's value.
    assert config.loss.lambda_cond == 160.0 and config.optim.lr_generator == 1e-4


def test_cpu64_preset() -> None:
    config = build_config("cpu64")
    assert config.model.image_size == 64 and config.model.discriminator_layers == 5
    assert config.data.batch_size == 16
    assert config.optim.critic_steps == 5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates(name: str) -> None:
    config = build_config(name)
    assert config.model.image_size % (2 ** config.model.discriminator_layers) == 0


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'tiny'.*smoke"):
        build_config("tiny")


def test_presets_do_not_leak_between_builds() -> None:
    first = build_config("smoke", overrides=["model.image_size=64"])
    second = build_config("smoke")
    assert first.model.image_size == 64 and second.model.image_size == 32
    assert PRESETS["smoke"]["model"]["image_size"] == 32


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("optim:\n  epochs: 3\n  max_steps: null\nloss:\n  lambda_cond: 80\n"
                    "data:\n  flip: false\n  root: /data/faces\n", encoding="utf-8")
    config = build_config("smoke", path)
    assert config.optim.epochs == 3 and isinstance(config.optim.epochs, int)
    assert config.loss.lambda_cond == 80.0 and isinstance(config.loss.lambda_cond, float)
    assert config.data.flip is False and config.data.root == "/data/faces"
    assert config.model.image_size == 32  # from the preset, untouched by the file


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text('[model]\nimage_size = 64\ndiscriminator_layers = 5\n[run]\nseed = 7\ndevice = "cpu"\n'
                    "bf16 = true\n", encoding="utf-8")
    config = build_config(config_file=path)
    assert config.model.image_size == 64 and config.model.discriminator_layers == 5
    assert config.run.seed == 7 and config.run.device == "cpu" and config.run.bf16 is True


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"optim": {"critic_steps": 3}}), encoding="utf-8")
    assert build_config(config_file=path).optim.critic_steps == 3


def test_overrides_beat_file_beats_preset(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("optim:\n  critic_steps: 3\n  epochs: 4\n", encoding="utf-8")
    config = build_config("smoke", path, ["optim.critic_steps=7"])
    assert config.optim.critic_steps == 7  # override wins
    assert config.optim.epochs == 4  # file beats the smoke preset's 1
    assert config.optim.decay_epochs == 1  # preset beats the default 10


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = build_config("smoke", overrides=["optim.max_steps=9", "data.root=/x"])
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml(), encoding="utf-8")
    assert build_config(config_file=path).to_dict() == config.to_dict()
    assert Config.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nimage_size = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.toml: not a valid config file"):
        load_config_file(bad)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml"):
        build_config(config_file=bad_yaml)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        build_config(config_file=scalar)


@pytest.mark.parametrize(("assignment", "section", "key", "expected"), [
    ("run.bf16=true", "run", "bf16", True),
    ("run.bf16=yes", "run", "bf16", True),
    ("run.bf16=on", "run", "bf16", True),
    ("run.bf16=1", "run", "bf16", True),
    ("data.flip=false", "data", "flip", False),
    ("data.flip=off", "data", "flip", False),
    ("data.flip=0", "data", "flip", False),
    ("optim.max_steps=none", "optim", "max_steps", None),
    ("optim.max_steps=null", "optim", "max_steps", None),
    ("optim.max_steps=None", "optim", "max_steps", None),
    ("optim.max_steps=", "optim", "max_steps", None),
    ("optim.max_steps=12", "optim", "max_steps", 12),
    ("optim.epochs=4.0", "optim", "epochs", 4),
    ("optim.epochs=\"6\"", "optim", "epochs", 6),
    ("loss.lambda_cond=80", "loss", "lambda_cond", 80.0),
    ("loss.lambda_tv=1e-4", "loss", "lambda_tv", 1e-4),
    ("optim.lr_generator=2.5e-4", "optim", "lr_generator", 2.5e-4),
    ("run.output_dir=123", "run", "output_dir", "123"),
    ("run.device= cuda:1", "run", "device", "cuda:1"),
    ("data.root=/data/my faces", "data", "root", "/data/my faces"),
    # Paths are taken as written, not as YAML: no booleans, octal numbers, mappings or comments.
    ("data.root=yes", "data", "root", "yes"),
    ("data.root=0123", "data", "root", "0123"),
    ("data.root=1_000", "data", "root", "1_000"),
    ("data.root=faces: v2", "data", "root", "faces: v2"),
    ("run.output_dir=runs #2", "run", "output_dir", "runs #2"),
    ("run.output_dir=[a, b]", "run", "output_dir", "[a, b]"),
    ("data.root=\"quoted dir\"", "data", "root", "quoted dir"),
])
def test_override_coercion(assignment: str, section: str, key: str, expected: object) -> None:
    config = Config()
    apply_override(config, assignment)
    value = getattr(getattr(config, section), key)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("assignment", "message"), [
    ("model.colour=3", "'model.colour'"),
    ("modle.image_size=64", "'modle'"),
    ("optim.epochs=abc", "optim.epochs"),
    ("optim.epochs=2.5", "optim.epochs"),
    ("optim.epochs=none", "optim.epochs may not be empty"),
    ("model.image_size=null", "model.image_size may not be empty"),
    ("run.bf16=maybe", "run.bf16"),
    ("run.bf16=2", "run.bf16"),
    ("loss.lambda_gp=ten", "loss.lambda_gp"),
    ("optim.epochs=true", "optim.epochs: cannot read True"),
    ("loss.lambda_gp=yes", "loss.lambda_gp: cannot read True"),
    ("loss.lambda_gp=[1]", "loss.lambda_gp: cannot read [1]"),
    ("data.root=null", "data.root may not be empty"),
    ("model=3", "model: expected a mapping"),
    ("epochs", "expected section.key=value"),
])
def test_bad_overrides(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        apply_override(Config(), assignment)
    assert message in str(raised.value)


def test_unknown_key_in_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("loss:\n  lambda_foo: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'loss.lambda_foo'"):
        build_config(config_file=path)


def test_bad_type_in_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text('[data]\nbatch_size = "many"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="data.batch_size"):
        build_config(config_file=path)
    path.write_text("[optim]\nepochs = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="optim.epochs: cannot read True"):
        build_config(config_file=path)


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.image_size=100"], "model.image_size=100 must be divisible by 2\\*\\*discriminator_layers=64"),
    (["model.image_size=72", "model.discriminator_layers=4"], "divisible by 2\\*\\*discriminator_layers=16"),
    (["model.image_size=6", "model.discriminator_layers=1"], "divisible by 4"),
    (["model.generator_channels=0"], "model.generator_channels must be positive"),
    (["data.batch_size=0"], "data.batch_size"),
    (["optim.critic_steps=0"], "optim.critic_steps"),
    (["optim.epochs=0", "optim.decay_epochs=0"], "optim.epochs \\+ optim.decay_epochs"),
    (["optim.epochs=-1"], "optim.epochs"),
    (["loss.lambda_paired=-1", "loss.lambda_tv=-0.5"], "0 or more: loss.lambda_tv, loss.lambda_paired$"),
    (["loss.lambda_paired_colour=-2"], "0 or more: loss.lambda_paired_colour$"),
    (["loss.lambda_paired_attention=-1"], "0 or more: loss.lambda_paired_attention$"),
    (["loss.lambda_paired_unchanged=-1"], "0 or more: loss.lambda_paired_unchanged$"),
    (["optim.ema_decay=1"], "optim.ema_decay must be in \\[0, 1\\)"),
    (["optim.ema_decay=-0.1"], "optim.ema_decay must be in \\[0, 1\\)"),
    (["loss.attention_smoothness=cubic"], "loss.attention_smoothness must be one of squared, absolute; got 'cubic'"),
    (["optim.lr_decay=batch"], "optim.lr_decay must be one of step, epoch"),
    (["optim.penalty_step=both"], "optim.penalty_step must be one of joint, separate"),
    (["optim.norm_init=zeros"], "optim.norm_init must be one of ones, uniform"),
    # Values that used to pass and poison or crash a run later (issue 21).
    (["loss.lambda_gp=nan"], "must be finite numbers: loss.lambda_gp=nan$"),
    (["loss.lambda_cond=.inf", "optim.lr_generator=-inf"], "loss.lambda_cond=inf, optim.lr_generator=-inf$"),
    (["optim.lr_generator=inf"], "finite numbers: optim.lr_generator=inf"),
    (["optim.lr_discriminator=1e30"], "optim.lr_discriminator=1e\\+30 is out of range"),
    (["optim.lr_generator=-0.001"], "optim.lr_generator=-0.001 is out of range"),
    (["loss.lambda_idt=1e30"], "overflow float32 losses: loss.lambda_idt=1e\\+30"),
    (["optim.beta2=1"], "optim.beta2 must be in \\[0, 1\\)"),
    (["optim.max_steps=-1"], "optim.max_steps \\(--steps\\) must be at least 1; got -1"),
    (["optim.max_steps=0"], "optim.max_steps \\(--steps\\) must be at least 1"),
    (["run.log_every=0"], "run.log_every must be at least 1; got 0"),
    (["run.sample_every=0"], "run.sample_every must be at least 1"),
    (["run.checkpoint_every=0"], "run.checkpoint_every must be at least 1"),
    (["run.num_samples=0"], "run.num_samples must be at least 1"),
    (["run.keep_checkpoints=-1"], "run.keep_checkpoints must be 0"),
    (["data.num_workers=-2"], "data.num_workers must be 0 or more"),
    (["data.test_fraction=1.5"], "data.test_fraction must be within \\[0, 1\\]"),
    (["model.image_size=0"], "model.image_size must be positive; got 0"),
    (["model.image_size=-64"], "model.image_size must be positive"),
    (["model.generator_residual_blocks=-1"], "model.generator_residual_blocks must be 0 or more"),
    (["model.generator_channels=200000"], "model.generator_channels=200000 is absurd \\(at most 1024"),
    (["model.discriminator_layers=1000000000"], "model.discriminator_layers=1000000000 is absurd"),
])
def test_validation_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(overrides=overrides)


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], False), (["loss.lambda_paired=1"], True), (["loss.lambda_paired_colour=1"], True),
    (["loss.lambda_paired_attention=1"], True), (["loss.lambda_paired_unchanged=1"], True),
    (["loss.lambda_same_expression=1"], False),
])
def test_uses_pairs_when_a_paired_loss_is_on(overrides: list[str], expected: bool) -> None:
    assert build_config(overrides=overrides).loss.uses_pairs is expected


def test_valid_small_sizes() -> None:
    config = build_config(overrides=["model.image_size=64", "model.discriminator_layers=6"])
    assert config.model.image_size == 64
    config = build_config(overrides=["model.image_size=96", "model.discriminator_layers=5"])
    assert config.model.image_size == 96


def test_config_error_is_a_value_error() -> None:
    # The CLI turns ValueErrors into one-line messages; ConfigError must be one of them.
    assert issubclass(ConfigError, ValueError)


def test_device_names_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from ganimation.config import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="run.device='gpu0' is not a device: use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="^run.device=cuda: CUDA is not available on this machine"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="^--device=cuda:1: CUDA is not available"):
        resolve_device("cuda:1", key="--device")
