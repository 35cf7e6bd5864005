"""Typed configuration with the paper's defaults, named presets, file loading and CLI overrides.

Defaults are GANimation's (Pumarola et al., ECCV 2018, Sec. 5 and the authors' code); where the
paper and the reference implementation differ, the comment says which one we follow and why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from ganimation.aus import NUM_AUS


UPSAMPLING_MODES = ("transposed", "resize")
NORM_INITS = ("ones", "uniform")
SMOOTHNESS_FORMS = ("squared", "absolute")
PENALTY_STEPS = ("joint", "separate")
LR_DECAYS = ("step", "epoch")
#: Sizes far beyond any GANimation (the paper's are 128 px, 64 channels, 6 blocks, 6 layers): a
#: model file claiming more would have the loader allocate terabytes.
MODEL_LIMITS = {"image_size": 4096, "num_aus": 1024, "generator_channels": 1024, "generator_residual_blocks": 64,
                "discriminator_channels": 1024, "discriminator_layers": 12}
#: Adam moves each weight by about the learning rate per step: above this a run can only diverge.
MAX_LEARNING_RATE = 1.0
#: Loss weights above this turn float32 losses into overflow (the paper's largest is 160).
MAX_LOSS_WEIGHT = 1e6


class ConfigError(ValueError):
    """An unknown key, a badly typed value or an inconsistent combination of settings."""


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


@dataclass
class ModelConfig:
    image_size: int = 128  # face crops are 128x128 in the paper
    num_aus: int = NUM_AUS  # OpenFace's 17 AU intensities
    generator_channels: int = 64  # CycleGAN's ngf
    generator_residual_blocks: int = 6  # CycleGAN's 6 blocks for 128 px
    discriminator_channels: int = 64
    discriminator_layers: int = 6  # strided 4x4 convs: 128 -> 2, so D_y's kernel is image_size / 64
    use_attention: bool = True  # False gives the StarGAN-like ablation: the generator writes every pixel
    norm_affine: bool = True  # authors' code: affine InstanceNorm; the 2018 replication has none
    generator_conv_bias: bool = False  # authors' code: no bias before a norm; the replication has biases
    # How the decoder doubles resolution: "transposed" (the paper's 4x4 stride-2 transposed
    # convolutions) or "resize" (nearest-neighbour x2 then a 3x3 convolution, Odena et al. 2016),
    # which cannot write the checkerboard texture that transposed convolutions start with.
    upsampling: str = "transposed"

    def validate(self) -> None:
        for name in ("image_size", "num_aus", "generator_channels", "discriminator_channels", "discriminator_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive; got {getattr(self, name)}")
        if self.generator_residual_blocks < 0:
            raise ConfigError(f"model.generator_residual_blocks must be 0 or more; got {self.generator_residual_blocks}")
        for name, limit in MODEL_LIMITS.items():
            if getattr(self, name) > limit:
                raise ConfigError(f"model.{name}={getattr(self, name)} is absurd (at most {limit}; the paper's is "
                                  f"{getattr(ModelConfig, name)})")
        if self.image_size % (2 ** self.discriminator_layers):
            raise ConfigError(
                f"model.image_size={self.image_size} must be divisible by 2**discriminator_layers="
                f"{2 ** self.discriminator_layers}")
        if self.image_size % 4:
            raise ConfigError("model.image_size must be divisible by 4 (two stride-2 encoder convs)")
        _check_choice("model.upsampling", self.upsampling, UPSAMPLING_MODES)


@dataclass
class LossConfig:
    lambda_gp: float = 10.0  # WGAN-GP penalty weight (Gulrajani et al.)
    lambda_cond: float = 160.0  # lambda_y on the mean squared AU error; = the authors' 4000 / batch 25
    lambda_attention: float = 0.1  # lambda_A on mean(A) (the L2-like term of eq. 2, as the authors' code)
    # The weight of eq. 2's smoothness term in the total loss: the paper's lambda_A * lambda_TV
    # (0.1 * 1e-4), the authors' lambda_mask_smooth.
    lambda_tv: float = 1e-5
    lambda_idt: float = 10.0  # lambda_idt on the L1 cycle reconstruction of eq. 4
    # Eq. 2's smoothness term: "squared" (the paper's equation: squared neighbour differences summed
    # per image, averaged over the batch) or "absolute" (the authors' code: absolute differences
    # summed over the whole batch, about 100x larger at batch 25).
    attention_smoothness: str = "squared"
    # The authors' code divides the AU loss (a mean) by the batch size once more, with lambda_cond
    # 4000; off, lambda_cond 160 gives the same weight at batch 25 and keeps it at any batch.
    au_loss_divided_by_batch: bool = False
    # Not in the paper, 0 = off: weight of || G(I | y_o) - I ||_1, the identity-mapping loss of
    # CycleGAN (Zhu et al. 2017, Sec. 5.2). Asked for the expression it already shows, the generator
    # should return the image unchanged; without it the attention mask leaves the mouth and eyes to
    # the colour mask whatever the target (docs/bundled_model.md).
    lambda_same_expression: float = 0.0
    # Not in the paper, 0 = off: weight of || G(I | y_p) - I_p ||_1, where I_p is another image of
    # the same identity (the dataset's identity column) showing AUs y_p, pixel-aligned with I, as
    # renders of `ganimation synth` are. The paper's setting is unpaired; this supervises the edit
    # with its true result where the data has one (pix2pix, Isola et al. 2017), and the generator
    # step then edits towards y_p instead of a random y_f.
    lambda_paired: float = 0.0
    # Not in the paper, 0 = off: weight of || C(I | y_p) - I_p ||_1 on the colour mask itself, with the
    # same pairs. The output only passes C's gradient through 1 - A, so C is otherwise free wherever
    # the attention keeps the input, and leaks into any pixel where A is not quite 1.
    lambda_paired_colour: float = 0.0
    # Not in the paper, 0 = off: weight of mean((1 - A) * [I_p == I]) with the same pairs, asking the
    # attention mask to keep the input exactly where the true edit leaves it alone (no effect on a
    # model without attention, like lambda_attention).
    lambda_paired_attention: float = 0.0
    # Not in the paper, 0 = off: weight of minus the PSNR (dB) of G(I | y_p) against I_p, averaged
    # over images, with the same pairs. Each image's error is scored on a log scale, so the small
    # edits are not drowned by the large ones in the batch's gradient (losses.paired_psnr_loss).
    lambda_paired_psnr: float = 0.0
    # Not in the paper, 0 = off: weight of the L1 of G(I | y_p) to I_p over the pixels where I_p
    # differs from I, averaged per image over those pixels (losses.paired_changed_loss).
    lambda_paired_changed: float = 0.0
    # Not in the paper, 0 = off: weight of minus the PSNR (dB) of G(I | y_p) against I_p over only
    # the pixels where I_p equals I, averaged over images: leaks of the edit away from the features
    # it moves (losses.paired_unchanged_loss).
    lambda_paired_unchanged: float = 0.0
    target_noise: float = 0.1  # uniform noise added to a random sample's AUs to form y_f
    clamp_targets: bool = True  # keep y_f in [0, 1], the AUs' range (the authors' code does not)
    # The generator step edits towards the targets its batch's critic step drew (the authors' code:
    # one target per sample and batch) instead of drawing new ones.
    reuse_critic_targets: bool = False
    # Not in the paper, 0 = off: the chance that a target y_f is drawn AU-balanced instead of from a
    # uniformly random training sample: an AU picked uniformly, then a random sample in which that AU
    # is active (intensity >= 0.3 of 1). Real photo collections are mostly neutral or smiling, so
    # plain sampling rarely asks for a jaw drop or a frown; this asks for every AU the data shows.
    target_balance: float = 0.0

    @property
    def uses_pairs(self) -> bool:
        """Whether a loss needs each image's same-identity partner (the dataset's identity column)."""
        return (self.lambda_paired > 0 or self.lambda_paired_colour > 0 or self.lambda_paired_attention > 0
                or self.lambda_paired_psnr > 0 or self.lambda_paired_changed > 0
                or self.lambda_paired_unchanged > 0)


@dataclass
class OptimConfig:
    lr_generator: float = 1e-4
    lr_discriminator: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    critic_steps: int = 5  # critic updates per generator update
    # Critic-only batches before the first generator update, so that D_y reads AUs and D_I has a
    # gradient worth following when G starts (as the WGAN reference trains its critic to optimality
    # first); 0 = the paper's schedule from the first batch. They count towards the LR schedule.
    critic_warmup_steps: int = 0
    epochs: int = 20  # epochs at the full learning rate
    decay_epochs: int = 10  # then linear decay to zero over this many epochs
    # How the rate decays: "step" (after every batch, reaching 0 at the last one) or "epoch" (the
    # authors' code: once an epoch, so epoch 21 of 20 + 10 still runs at the full rate and the
    # last at 0.1x).
    lr_decay: str = "step"
    # Where the gradient penalty goes: "joint" (added to the critic's loss, one Adam step, as in
    # WGAN-GP) or "separate" (the authors' code: a second Adam step on the penalty alone, taken
    # with the critic just updated).
    penalty_step: str = "joint"
    # The generator's initial InstanceNorm scales: "ones" (each norm starts as a plain
    # normalisation) or "uniform", U(0, 1), PyTorch's default before 0.4, which the authors' code kept.
    norm_init: str = "ones"
    max_steps: int | None = None  # stop early after this many critic steps (smoke runs, budgets)
    # Exponential moving average of the generator's weights, per generator step; 0 = off (the
    # paper). When on, model files carry the average, as ProGAN and StyleGAN ship G_ema: GAN weights
    # wander from step to step, and their average edits more steadily. 0.999 spans ~1,000 steps.
    ema_decay: float = 0.0


@dataclass
class DataConfig:
    root: str = ""
    batch_size: int = 25  # global batch; under torchrun it is split across processes
    flip: bool = True
    cache_images: bool = True
    num_workers: int = 0
    test_fraction: float = 0.1


@dataclass
class RunConfig:
    output_dir: str = "runs/ganimation"
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    # Start from a trained model (file, checkpoint, run folder or "bundled") instead of random
    # weights, grown to wider model.*_channels if asked (ganimation.warmstart); a checkpoint of
    # this run, when resuming, takes precedence.
    init_from: str | None = None
    # Autocast to bfloat16 where the device has it natively (CUDA from Ampere on, a CPU with
    # AVX512-BF16 or AMX); elsewhere it would be emulated and slower, and is refused with a warning.
    bf16: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms, for bit-exact resume tests
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    num_samples: int = 4  # fixed validation faces in the sample grid
    tensorboard: bool = True  # used when the tensorboard package is installed


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> Config:
        """Refuse values that would crash or poison a run later, naming the key (one line each)."""
        infinite = [f"{section}.{name}={value}" for section in ("model", "loss", "optim", "data", "run")
                    for name, value in vars(getattr(self, section)).items()
                    if isinstance(value, float) and not math.isfinite(value)]
        if infinite:
            raise ConfigError(f"config values must be finite numbers: {', '.join(infinite)}")
        self.model.validate()
        if self.data.batch_size < 1:
            raise ConfigError("data.batch_size must be positive")
        if self.data.num_workers < 0:
            raise ConfigError(f"data.num_workers must be 0 or more; got {self.data.num_workers}")
        if not 0.0 <= self.data.test_fraction <= 1.0:
            raise ConfigError(f"data.test_fraction must be within [0, 1]; got {self.data.test_fraction}")
        if self.optim.critic_steps < 1:
            raise ConfigError("optim.critic_steps must be at least 1")
        negative = [name for name, value in vars(self.loss).items() if type(value) is float and value < 0]
        if negative:
            raise ConfigError(f"loss weights must be 0 or more: {', '.join(f'loss.{name}' for name in negative)}")
        if not 0.0 <= self.loss.target_balance <= 1.0:
            raise ConfigError("loss.target_balance must be in [0, 1] (a probability; 0 = the paper's sampling)")
        huge = [f"loss.{name}={value:g}" for name, value in vars(self.loss).items()
                if type(value) is float and value > MAX_LOSS_WEIGHT]
        if huge:
            raise ConfigError(f"loss weights above {MAX_LOSS_WEIGHT:g} overflow float32 losses: {', '.join(huge)}")
        for name in ("lr_generator", "lr_discriminator"):
            value = getattr(self.optim, name)
            if not 0.0 <= value <= MAX_LEARNING_RATE:
                raise ConfigError(f"optim.{name}={value:g} is out of range: Adam moves every weight by about "
                                  f"the learning rate per step, so it must be within [0, {MAX_LEARNING_RATE:g}] "
                                  f"(the paper's is 1e-4)")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self.optim, name) < 1.0:
                raise ConfigError(f"optim.{name} must be in [0, 1); got {getattr(self.optim, name)}")
        if self.optim.max_steps is not None and self.optim.max_steps < 1:
            raise ConfigError(f"optim.max_steps (--steps) must be at least 1; got {self.optim.max_steps}")
        if not 0.0 <= self.optim.ema_decay < 1.0:
            raise ConfigError("optim.ema_decay must be in [0, 1) (0 = no weight average)")
        if self.optim.critic_warmup_steps < 0:
            raise ConfigError("optim.critic_warmup_steps must be 0 or more")
        if self.optim.epochs < 0 or self.optim.decay_epochs < 0 or self.optim.epochs + self.optim.decay_epochs < 1:
            raise ConfigError("optim.epochs + optim.decay_epochs must be at least 1")
        _check_choice("loss.attention_smoothness", self.loss.attention_smoothness, SMOOTHNESS_FORMS)
        _check_choice("optim.lr_decay", self.optim.lr_decay, LR_DECAYS)
        _check_choice("optim.penalty_step", self.optim.penalty_step, PENALTY_STEPS)
        _check_choice("optim.norm_init", self.optim.norm_init, NORM_INITS)
        for name in ("log_every", "sample_every", "checkpoint_every", "num_samples"):
            if getattr(self.run, name) < 1:
                raise ConfigError(f"run.{name} must be at least 1; got {getattr(self.run, name)}")
        if self.run.keep_checkpoints < 0:
            raise ConfigError(f"run.keep_checkpoints must be 0 (keep all) or more; got {self.run.keep_checkpoints}")
        if not self.run.device.strip():
            raise ConfigError("run.device may not be empty (auto, cpu, cuda or cuda:N)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        config = cls()
        apply_mapping(config, values)
        return config


#: Named presets. Each is a partial mapping laid over the paper's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setting: 128 px, batch 25, 30 epochs (20 + 10 decay).
    "paper128": {},
    # The paper's setting trained as the authors' code trains it (models/ganimation.py of
    # albertpumarola/GANimation), where it differs from our defaults: see docs/training.md.
    "official": {
        "loss": {"lambda_cond": 4000.0, "au_loss_divided_by_batch": True, "attention_smoothness": "absolute",
                 "clamp_targets": False, "reuse_critic_targets": True},
        "optim": {"lr_decay": "epoch", "penalty_step": "separate", "norm_init": "uniform"},
    },
    # A model that trains on a laptop CPU in hours: 64 px, half the channels, fewer blocks.
    "cpu64": {
        "model": {"image_size": 64, "generator_channels": 32, "generator_residual_blocks": 4,
                  "discriminator_channels": 32, "discriminator_layers": 5},
        "data": {"batch_size": 16},
        "run": {"sample_every": 200, "checkpoint_every": 500},
    },
    # For tests: tiny and fast, still the full architecture.
    "smoke": {
        "model": {"image_size": 32, "generator_channels": 8, "generator_residual_blocks": 1,
                  "discriminator_channels": 8, "discriminator_layers": 3},
        "optim": {"epochs": 1, "decay_epochs": 1, "critic_steps": 2},
        "data": {"batch_size": 4, "cache_images": True},
        "run": {"log_every": 1, "sample_every": 2, "checkpoint_every": 2, "num_samples": 2, "tensorboard": False},
    },
}


def resolve_device(name: str, key: str = "run.device") -> Any:
    """The ``torch.device`` for "auto", "cpu", "cuda", "cuda:N" ...; a ConfigError naming ``key``
    for a name torch does not know or a device this machine does not have."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{key}={name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={name}: CUDA is not available on this machine (torch {torch.__version__}); "
                              f"use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{key}={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}={name}: Apple's MPS is not available on this machine; use auto or cpu")
    return device


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a value read from YAML/TOML/CLI text to the field's declared type."""
    text_type = str(annotation)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if "None" in text_type:
            return None
        raise ConfigError(f"{key} may not be empty")
    try:
        if annotation is bool or text_type == "bool":
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(value, (bool, dict, list)):
            raise ValueError(value)  # `epochs: yes` or `lr: [1]` is a mistake, not 1 or "[1]"
        if annotation is int or text_type.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if annotation is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(annotation, '__name__', text_type)}") from None


def apply_mapping(config: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Lay a nested mapping over a dataclass instance, refusing unknown keys."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = get_type_hints(type(config))
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            known = ", ".join(hints)
            raise ConfigError(f"unknown config key {dotted!r} (known here: {known})")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            apply_mapping(current, value, prefix=f"{dotted}.")
        else:
            setattr(config, key, _coerce(value, hints[key], dotted))


def _field_type(config: Any, parts: list[str]) -> Any:
    """Declared type of the field at ``parts`` (None when the path names no field)."""
    target = config
    for part in parts[:-1]:
        target = getattr(target, part, None)
        if not dataclasses.is_dataclass(target):
            return None
    return get_type_hints(type(target)).get(parts[-1])


def apply_override(config: Config, assignment: str) -> None:
    """Apply ``section.key=value`` (e.g. ``optim.epochs=5``); the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected section.key=value")
    dotted, _, text = assignment.partition("=")
    parts = dotted.strip().split(".")
    try:
        parsed = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        parsed = text
    if _field_type(config, parts) is str and parsed is not None:
        # A path or device is taken as written (unless quoted): YAML would turn `--data yes` into
        # True, `0123` into 83, `my: faces` into a mapping and cut `runs #2` at the comment.
        raw = text.strip()
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" and isinstance(parsed, str)
        parsed = parsed if quoted else raw
    nested: Any = parsed
    for part in reversed(parts):
        nested = {part: nested}
    apply_mapping(config, nested)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into a mapping."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"{source}: no such config file")
    text = source.read_text(encoding="utf-8")
    try:
        if source.suffix.lower() == ".toml":
            return tomllib.loads(text)
        if source.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{source}: not a valid config file ({error})") from None


def build_config(preset: str | None = None, config_file: str | Path | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Paper defaults, then a preset, then a file, then ``key=value`` overrides; validated."""
    config = Config()
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
        apply_mapping(config, PRESETS[preset])
    if config_file:
        apply_mapping(config, load_config_file(config_file))
    for assignment in overrides:
        apply_override(config, assignment)
    return config.validate()
