"""Training GANimation: the loss phases and the staged loop.

The loop reads in stages: fetch a batch, one critic step (eq. 1 + eq. 3 on real images), every
``critic_steps`` batches one generator step (eqs. 1-4), then log, draw the sample grid and
checkpoint. Every random draw of the loop (target AUs, flips, gradient-penalty mixing) comes
from one ``torch.Generator`` whose state is checkpointed, and the data order is a function of
(seed, epoch), so ``--resume`` continues exactly where the run stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ganimation import losses
from ganimation.checkpoint import (
    checkpoint_dirs, load_into, load_training_state, read_model_file, save_model_file, save_training_checkpoint,
    split_prefix, tidy_checkpoints, unwrap, CONFIG_FILE, MODEL_FILE, CheckpointError,
)
from ganimation.config import Config, ConfigError, resolve_device
from ganimation.files import disk_full_explained, save_image, write_text_atomic
from ganimation.networks import build_networks
from ganimation.runtime import prepare_runtime, use_bf16
from ganimation.warmstart import initial_networks

logger = logging.getLogger(__name__)


#: What a run writes into its folder; a folder holding any of them holds a run.
RUN_OUTPUTS = (CONFIG_FILE, "metrics.jsonl", MODEL_FILE, "checkpoints", "samples", "tensorboard")


class TrainingDiverged(ValueError):
    """Losses or weights turned NaN or infinite; the run stopped without saving them."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint of another model than the run's config describes."""


@dataclass
class Progress:
    """Counters that make resume exact. ``step`` counts critic steps (batches)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    generator_steps: int = 0


#: An AU counts as active in a sample, for AU-balanced targets, from this intensity (of 1).
ACTIVE_AU = 0.3


def balanced_target_table(pool: Tensor) -> tuple[Tensor, Tensor] | None:
    """For AU-balanced target sampling: ``table[a, :counts[a]]`` lists the samples in which the
    a-th AU that is active anywhere is active (rows padded with their first entry), or None when no
    AU is active in any sample."""
    active = pool.cpu() >= ACTIVE_AU
    rows = [torch.nonzero(active[:, au]).flatten() for au in range(pool.shape[1]) if active[:, au].any()]
    if not rows:
        return None
    width = max(len(row) for row in rows)
    table = torch.stack([torch.cat([row, row[:1].expand(width - len(row))]) for row in rows])
    return table, torch.tensor([len(row) for row in rows])


class StepMetrics(Mapping[str, float]):
    """A training step's logged values (name -> float), kept as tensors on the device until one is
    read; then all of them come to the host in one transfer. The loop reads them at log steps only,
    so between those a GPU is never made to wait for Python (the losses alone were 43 host syncs
    an iteration)."""

    def __init__(self, values: dict[str, Tensor | float]) -> None:
        self._values = values
        self._floats: dict[str, float] | None = None

    def _read(self) -> dict[str, float]:
        if self._floats is None:
            tensors = {key: value for key, value in self._values.items() if isinstance(value, Tensor)}
            read = dict(zip(tensors, torch.stack([value.double() for value in tensors.values()]).tolist())
                        if tensors else [])
            self._floats = {key: read[key] if key in read else float(value) for key, value in self._values.items()}
        return self._floats

    def __getitem__(self, key: str) -> float:
        return self._read()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"StepMetrics({self._read()!r})"

    @classmethod
    def join(cls, *parts: Mapping[str, Any], **values: float) -> StepMetrics:
        """One step's metrics from its phases' (still unread) and plain values."""
        joined: dict[str, Any] = {}
        for part in parts:
            joined.update(part._values if isinstance(part, StepMetrics) else part)
        return cls(joined | values)


def _detached(values: dict[str, Tensor]) -> StepMetrics:
    return StepMetrics({key: value.detach() for key, value in values.items()})


def adam(module: nn.Module, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """PyTorch's Adam over ``module``'s parameters, fused into one kernel per step where the
    parameters' device has it (CPU and CUDA): the same update, rounded in another order, and the
    paper128 critic's step on the CPU in 39 ms instead of 244 ms."""
    parameters = list(module.parameters())
    fused = all(parameter.device.type in ("cpu", "cuda") and parameter.is_floating_point() for parameter in parameters)
    return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=fused)


class GANimationTrainer:
    """Both networks, their optimisers and schedulers, and the two loss phases."""

    def __init__(self, config: Config, target_pool: Tensor, steps_per_epoch: int, device: torch.device,
                 generator: nn.Module | None = None, discriminator: nn.Module | None = None) -> None:
        self.config = config
        self.device = device
        self.bf16 = use_bf16(config.run.bf16, device)  # refused, with the reason, where it would be slower
        if generator is None or discriminator is None:
            generator, discriminator = build_networks(config.model, norm_init=config.optim.norm_init)
        self.generator: nn.Module = generator.to(device)
        self.discriminator: nn.Module = discriminator.to(device)
        # AUs of every training sample: targets y_f are drawn from them (paper Sec. 5).
        self.target_pool = target_pool.to(device=device, dtype=torch.float32)
        self._balanced_pool = balanced_target_table(self.target_pool)
        self.rng = torch.Generator(device="cpu").manual_seed(config.run.seed)
        # Under torchrun every rank draws the random numbers of the whole *global* batch from this
        # same stream and keeps the rows of its own samples (rank::world_size, the interleaving of
        # DistributedSampler), so a sample's target, flip and mixing weight depend only on its
        # position in the global batch: ranks draw different values for their different samples,
        # every rank's stream stays in the same state (the one checkpointed by rank 0 resumes them
        # all), and N processes reproduce a single-process run with the same global batch.
        context = DistributedContext.current()
        self.rank, self.world_size = context.rank, context.world_size
        optim = config.optim
        self.generator_optimizer = adam(self.generator, optim.lr_generator, (optim.beta1, optim.beta2))
        self.discriminator_optimizer = adam(self.discriminator, optim.lr_discriminator, (optim.beta1, optim.beta2))
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = self.steps_per_epoch * (optim.epochs + optim.decay_epochs)
        decay_start = self.steps_per_epoch * optim.epochs
        decay_length = max(1, self.total_steps - decay_start)

        def linear_decay(step: int) -> float:
            # Full rate for `epochs`, then linearly to zero over `decay_epochs`, per step.
            return 1.0 if step < decay_start else max(0.0, 1.0 - (step - decay_start) / decay_length)

        def epoch_decay(step: int) -> float:
            # The authors' code: lr -= lr_0 / decay_epochs after each epoch past `epochs`, so the
            # first decay epoch still runs at the full rate and the last at 1 / decay_epochs of it.
            epochs_past = step // self.steps_per_epoch - optim.epochs
            return 1.0 if epochs_past <= 0 else max(0.0, 1.0 - epochs_past / optim.decay_epochs)

        schedule = epoch_decay if optim.lr_decay == "epoch" else linear_decay

        # The generator steps once per `critic_steps` batches but its schedule follows the batch count,
        # so PyTorch's "scheduler stepped before optimizer" warning is a false alarm here.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        self.generator_scheduler = torch.optim.lr_scheduler.LambdaLR(self.generator_optimizer, schedule)
        self.discriminator_scheduler = torch.optim.lr_scheduler.LambdaLR(self.discriminator_optimizer, schedule)
        self._critic_targets: Tensor | None = None  # the last critic step's y_f (loss.reuse_critic_targets)
        self.progress = Progress()
        # PyTorch's own weight averaging: a separate copy of G whose weights follow the trained ones
        # by w_avg <- decay * w_avg + (1 - decay) * w after every generator step. It starts from
        # the current weights (one update), so a run resumed from a checkpoint without an average
        # starts its average there.
        self.generator_average: AveragedModel | None = None
        if optim.ema_decay > 0:
            self.generator_average = AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(optim.ema_decay),
                                                   use_buffers=True)
            self.generator_average.update_parameters(self.generator)

    @property
    def exported_generator(self) -> nn.Module:
        """The generator that model files, checkpoints' model files and sample grids carry: the
        weight average with ``optim.ema_decay`` > 0, else the trained weights."""
        return unwrap(self.generator) if self.generator_average is None else self.generator_average.module

    # ------------------------------------------------------------------ randomness
    def _rand(self, batch: int, *shape: int) -> Tensor:
        """U(0, 1) of shape (batch, *shape) for this process's samples of the global batch."""
        values = torch.rand(batch * self.world_size, *shape, generator=self.rng)
        return self._to_device(values[self.rank::self.world_size])

    def _to_device(self, values: Tensor) -> Tensor:
        """A CPU draw onto the device, on CUDA through pinned memory without waiting for the GPU."""
        if self.device.type != "cuda":
            return values.to(self.device)
        return values.contiguous().pin_memory().to(self.device, non_blocking=True)

    def sample_targets(self, batch: int) -> Tensor:
        """y_f: another random training sample's AUs plus U(-noise, noise) per AU, kept in [0, 1]
        (unless ``loss.clamp_targets`` is off, as in the authors' code). With
        ``loss.target_balance`` the sample is, that often, one in which a uniformly chosen AU is
        active (not the paper's)."""
        indices = torch.randint(len(self.target_pool), (batch * self.world_size,), generator=self.rng)
        balance = self.config.loss.target_balance
        if balance > 0 and self._balanced_pool is not None:
            table, counts = self._balanced_pool
            which_au = torch.randint(len(counts), (batch * self.world_size,), generator=self.rng)
            position = (torch.rand(batch * self.world_size, generator=self.rng) * counts[which_au]).long()
            balanced = torch.rand(batch * self.world_size, generator=self.rng) < balance
            indices = torch.where(balanced, table[which_au, position], indices)
        indices = self._to_device(indices[self.rank::self.world_size])
        noise = (self._rand(batch, self.target_pool.shape[1]) * 2.0 - 1.0) * self.config.loss.target_noise
        targets = self.target_pool[indices] + noise
        return targets.clamp(0.0, 1.0) if self.config.loss.clamp_targets else targets

    def random_flip(self, images: Tensor) -> Tensor:
        if not self.config.data.flip:
            return images
        flip = self._rand(images.shape[0]) < 0.5
        return torch.where(flip[:, None, None, None], images.flip(-1), images)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ------------------------------------------------------------------ loss phases
    def _au_loss(self, predicted: Tensor, target: Tensor) -> Tensor:
        """Eq. 3's term, divided once more by the global batch with ``loss.au_loss_divided_by_batch``."""
        batch = predicted.shape[0] * self.world_size if self.config.loss.au_loss_divided_by_batch else None
        return losses.au_regression_loss(predicted, target, batch_size=batch)

    def critic_step(self, images: Tensor, aus: Tensor) -> StepMetrics:
        """Critic: eq. 1 (with gradient penalty) plus the real-image half of eq. 3.

        With ``optim.penalty_step="separate"`` (the authors' code) the penalty is not part of this
        step's loss: a second Adam step follows on the penalty alone, taken with the critic this
        step updated.
        """
        weights = self.config.loss
        separate = self.config.optim.penalty_step == "separate"
        targets = self._critic_targets = self.sample_targets(images.shape[0])
        with torch.no_grad(), self._autocast():
            fakes = self.generator(images, targets).image

        au_outputs: list[Tensor] = []

        def realness(interpolates: Tensor) -> Tensor:
            outputs = self.discriminator(interpolates)
            au_outputs.append(outputs.aus)
            return outputs.realness

        def penalty_loss() -> Tensor:
            return losses.gradient_penalty(realness, images, fakes, alpha=self._rand(images.shape[0], 1, 1, 1))

        with self._autocast():
            both = self.discriminator(torch.cat([images, fakes.to(images.dtype)]))  # one pass over 2B images
            real_scores, fake_scores = both.realness.chunk(2)
            real_aus = both.aus[: images.shape[0]]
            wasserstein = losses.critic_wasserstein_loss(real_scores, fake_scores)
            condition = self._au_loss(real_aus, aus)
            total = wasserstein + weights.lambda_cond * condition
            if not separate:
                penalty = penalty_loss()
                total = total + weights.lambda_gp * penalty
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.discriminator_optimizer.step()
        if separate:
            with self._autocast():
                penalty = penalty_loss()
                # The penalty does not reach the AU head, whose gradient is then 0, not missing:
                # under PyTorch 0.3 zero_grad left zeros, so the authors' Adam still moved the head
                # by its momentum here. (DDP, too, needs every output of a forward in the loss.)
                unused = 0.0 * au_outputs[-1].sum()
            self.discriminator_optimizer.zero_grad(set_to_none=True)
            (weights.lambda_gp * penalty + unused).backward()
            self.discriminator_optimizer.step()
            total = total + weights.lambda_gp * penalty
        return _detached({"d/total": total, "d/wasserstein": wasserstein, "d/gradient_penalty": penalty,
                          "d/au_real": condition, "d/real_score": real_scores.float().mean(),
                          "d/fake_score": fake_scores.float().mean()})

    def generator_step(self, images: Tensor, aus: Tensor, partner: tuple[Tensor, Tensor] | None = None
                       ) -> StepMetrics:
        """Generator: adversarial (eq. 1), expression (eq. 3), attention on both masks (eq. 2), cycle (eq. 4).

        With ``partner`` = (images, AUs) of the same identities and a paired loss weight > 0
        (``loss.lambda_paired``, ``_colour``, ``_attention``, ``_psnr``, ``_changed`` or
        ``_unchanged``) the edit targets the partner's AUs, and its output, colour mask and attention
        mask are scored against the partner image (not in the paper).
        """
        weights = self.config.loss
        use_pairs = partner is not None and weights.uses_pairs
        if use_pairs:
            targets = partner[1]
        elif weights.reuse_critic_targets and self._critic_targets is not None:
            targets = self._critic_targets
        else:
            targets = self.sample_targets(images.shape[0])
        self.discriminator.requires_grad_(False)
        try:
            with self._autocast():
                edited = self.generator(images, targets)
                reconstructed = self.generator(edited.image, aus)
                critic = self.discriminator(edited.image)
                adversarial = losses.generator_adversarial_loss(critic.realness)
                expression = self._au_loss(critic.aus, targets)
                attention = torch.zeros((), device=self.device)
                if self.config.model.use_attention:
                    attention = sum(losses.attention_loss(mask, weights.lambda_tv, weights.lambda_attention,
                                                          weights.attention_smoothness)
                                    for mask in (edited.attention, reconstructed.attention))
                cycle = losses.identity_loss(reconstructed.image, images)
                same = torch.zeros((), device=self.device)
                if weights.lambda_same_expression > 0:
                    same = losses.same_expression_loss(self.generator(images, aus).image, images)
                paired = torch.zeros((), device=self.device)
                paired_colour = torch.zeros((), device=self.device)
                paired_attention = torch.zeros((), device=self.device)
                paired_psnr = torch.zeros((), device=self.device)
                paired_changed = torch.zeros((), device=self.device)
                paired_unchanged = torch.zeros((), device=self.device)
                if use_pairs:
                    paired = losses.paired_loss(edited.image, partner[0])
                    if weights.lambda_paired_psnr > 0:
                        paired_psnr = losses.paired_psnr_loss(edited.image, partner[0])
                    if weights.lambda_paired_changed > 0:
                        paired_changed = losses.paired_changed_loss(edited.image, images, partner[0])
                    if weights.lambda_paired_unchanged > 0:
                        paired_unchanged = losses.paired_unchanged_loss(edited.image, images, partner[0])
                    paired_colour = losses.paired_colour_loss(edited.colour, partner[0])
                    if self.config.model.use_attention:
                        paired_attention = losses.paired_attention_loss(edited.attention, images, partner[0])
                total = (adversarial + weights.lambda_cond * expression + attention + weights.lambda_idt * cycle
                         + weights.lambda_same_expression * same + weights.lambda_paired * paired
                         + weights.lambda_paired_colour * paired_colour
                         + weights.lambda_paired_attention * paired_attention
                         + weights.lambda_paired_psnr * paired_psnr
                         + weights.lambda_paired_changed * paired_changed
                         + weights.lambda_paired_unchanged * paired_unchanged)
            self.generator_optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.generator_optimizer.step()
            if self.generator_average is not None:
                self.generator_average.update_parameters(unwrap(self.generator))
        finally:
            self.discriminator.requires_grad_(True)
        return _detached({"g/total": total, "g/adversarial": adversarial, "g/au_fake": expression,
                          "g/attention": attention, "g/cycle": cycle, "g/same_expression": same, "g/paired": paired,
                          "g/paired_colour": paired_colour, "g/paired_attention": paired_attention,
                          "g/paired_psnr": paired_psnr, "g/paired_changed": paired_changed,
                          "g/paired_unchanged": paired_unchanged, "g/attention_mean": edited.attention.float().mean()})

    def train_step(self, images: Tensor, aus: Tensor, partner: tuple[Tensor, Tensor] | None = None
                   ) -> StepMetrics:
        """One batch: a critic step, and a generator step every ``critic_steps`` batches.

        The metrics stay on the device until one of them is read (:class:`StepMetrics`)."""
        aus = aus.to(self.device, non_blocking=True).float()
        images = images.to(self.device, non_blocking=True)
        if partner is None:
            images = self.random_flip(images)
        else:
            # Flipped together along the channel axis, so that each partner stays aligned with its image.
            both = self.random_flip(torch.cat([images, partner[0].to(self.device, non_blocking=True)], dim=1))
            images, partner_images = both.split(images.shape[1], dim=1)
            partner = (partner_images, partner[1].to(self.device, non_blocking=True).float())
        self.generator.train()
        self.discriminator.train()
        metrics = self.critic_step(images, aus)
        warmed_up = self.progress.step >= self.config.optim.critic_warmup_steps
        if warmed_up and (self.progress.step + 1) % self.config.optim.critic_steps == 0:
            metrics = StepMetrics.join(metrics, self.generator_step(images, aus, partner))
            self.progress.generator_steps += 1
        self.generator_scheduler.step()
        self.discriminator_scheduler.step()
        self.progress.step += 1
        self.progress.batch_in_epoch += 1
        if self.progress.batch_in_epoch >= self.steps_per_epoch:
            self.progress.epoch += 1
            self.progress.batch_in_epoch = 0
        return StepMetrics.join(metrics, lr=self.generator_optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights the model file holds. With a weight average the model file
        holds the average, so the trained generator travels here (as StyleGAN keeps G and G_ema)."""
        state: dict[str, Any] = {
            "progress": vars(self.progress).copy(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
            "generator_scheduler": self.generator_scheduler.state_dict(),
            "discriminator_scheduler": self.discriminator_scheduler.state_dict(),
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        if self.generator_average is not None:
            state["generator_training"] = {key: value.detach().cpu().clone()
                                           for key, value in unwrap(self.generator).state_dict().items()}
            state["generator_average_updates"] = int(self.generator_average.n_averaged.item())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.progress = Progress(**state["progress"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        self.generator_scheduler.load_state_dict(state["generator_scheduler"])
        self.discriminator_scheduler.load_state_dict(state["discriminator_scheduler"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def check_finite(self, metrics: dict[str, float] | None = None) -> None:
        """Raise :class:`TrainingDiverged` when a logged loss or any weight (both networks and the
        weight average) is NaN or infinite. One host sync for all the weights: meant for log and
        checkpoint steps, not every step."""
        losses = [f"{key}={value}" for key, value in (metrics or {}).items() if not math.isfinite(value)]
        modules = {"generator": unwrap(self.generator), "discriminator": unwrap(self.discriminator)}
        if self.generator_average is not None:
            modules["averaged generator"] = self.generator_average.module
        weights = [parameter.detach() for module in modules.values() for parameter in module.parameters()]
        if not losses and bool(torch.stack([torch.isfinite(weight).all() for weight in weights]).all()):
            return
        broken = [name for name, module in modules.items()
                  if not all(bool(torch.isfinite(parameter).all()) for parameter in module.parameters())]
        found = "; ".join(part for part in (f"losses {', '.join(losses[:4])}" if losses else "",
                                            f"weights of the {', '.join(broken)}" if broken else "") if part)
        raise TrainingDiverged(f"training diverged at step {self.progress.step}: non-finite {found}")

    def save(self, run_dir: Path, keep: int) -> Path:
        return save_training_checkpoint(run_dir, self.progress.step, self.exported_generator, self.discriminator,
                                        self.config.model, self.state_dict(), self.config.to_yaml(), keep=keep)

    def restore(self, checkpoint: Path) -> None:
        model_config, tensors, _ = read_model_file(checkpoint / MODEL_FILE)
        if model_config != self.config.model:
            differences = [f"{key}: checkpoint {value!r} vs config {getattr(self.config.model, key)!r}"
                           for key, value in vars(model_config).items() if getattr(self.config.model, key) != value]
            raise CheckpointMismatch(f"{checkpoint}: model config differs from this run ({'; '.join(differences)})")
        state = load_training_state(checkpoint)
        try:
            self._apply(checkpoint, tensors, state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{checkpoint}: training state does not fit this trainer "
                                  f"({error.__class__.__name__}: {error})") from None

    def _apply(self, checkpoint: Path, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
        exported = split_prefix(tensors, "generator")
        # A checkpoint written with a weight average holds the trained weights in its state;
        # one written without holds them in its model file, and an average starts from them.
        load_into(self.generator, state.get("generator_training", exported), source=str(checkpoint),
                  name="generator")
        if self.generator_average is not None:
            load_into(self.generator_average.module, exported, source=str(checkpoint), name="averaged generator")
            self.generator_average.n_averaged.fill_(state.get("generator_average_updates", 1))
        load_into(self.discriminator, split_prefix(tensors, "discriminator"), source=str(checkpoint),
                  name="discriminator")
        self.load_state_dict(state)


# ---------------------------------------------------------------------- sample grid


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8."""
    scaled = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def sample_grid(generator: nn.Module, images: Tensor, source_aus: Tensor, target_aus: Tensor) -> np.ndarray:
    """Rows of: input | edit | attention | colour | cycle reconstruction (uint8 RGB)."""
    was_training = generator.training
    generator.eval()
    edited = generator(images, target_aus)
    cycle = generator(edited.image, source_aus)
    generator.train(was_training)
    attention = edited.attention.expand(-1, 3, -1, -1) * 2.0 - 1.0
    columns = [images, edited.image, attention, edited.colour, cycle.image]
    tiles = np.concatenate([to_uint8(column) for column in columns], axis=2)  # (B, H, 5W, 3)
    return np.concatenate(list(tiles), axis=0)  # (B*H, 5W, 3)


# ---------------------------------------------------------------------- loop


class MetricsLog:
    """``metrics.jsonl`` (every logged step) and, when installed, TensorBoard scalars."""

    def __init__(self, run_dir: Path, resume_step: int, tensorboard: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():
            # After a resume, drop entries written after the checkpoint we restart from.
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and _safe_step(line) <= resume_step]
            write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                logger.debug("tensorboard is not installed; logging to metrics.jsonl only")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        with disk_full_explained(self.path), self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _safe_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 62


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> DistributedContext:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()


class EpochBatchSampler:
    """The batch sampler of the one DataLoader a run keeps: each pass over it yields this process's
    batches of the epoch last set (:func:`epoch_batches`), so the loader's workers live through
    the whole run (``persistent_workers``) with their decoded-image caches, instead of being
    started again, caches empty, every epoch."""

    def __init__(self, sampler: DistributedSampler[Any], batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size
        self.batches: list[list[int]] = []

    def set_epoch(self, epoch: int, skip: int) -> None:
        self.batches = epoch_batches(self.sampler, epoch, self.batch_size, skip)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def epoch_batches(sampler: DistributedSampler[Any], epoch: int, batch_size: int, skip: int) -> list[list[int]]:
    """This process's batches of an epoch, as index lists, without the first ``skip`` (resume)."""
    sampler.set_epoch(epoch)
    indices = list(sampler)
    batches = [indices[start:start + batch_size] for start in range(0, len(indices) - batch_size + 1, batch_size)]
    return batches[skip:]


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second signal: give up at once
            raise KeyboardInterrupt
        logger.warning("received %s: saving a checkpoint and stopping", signal.Signals(signum).name)
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder that holds another run unless told what to do with it:
    a new run would wipe its metrics, overwrite its model and lose its checkpoints to pruning
    (the old run's higher steps win), and a later ``--resume`` would mix the two."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the folder and --overwrite replaces it: pass one")
    if resume or overwrite or not run_dir.is_dir():
        return
    found = [name + ("/" if (run_dir / name).is_dir() else "") for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if found:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(found)}): pass --resume to continue it, "
                          f"--overwrite to replace it, or another --output")


def clear_run_dir(run_dir: Path) -> None:
    """Delete what a run wrote into ``run_dir`` (``--overwrite``); anything else there stays."""
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def train(config: Config, *, resume: bool = False, overwrite: bool = False, show_progress: bool = True) -> Path:
    """Train on ``config.data.root``; returns the path of the final model file.

    With ``resume`` the newest complete checkpoint of ``config.run.output_dir`` is restored
    (optimisers, schedulers, counters, RNG) and training continues exactly from there; a
    damaged one is skipped for the one before it. A folder holding another run is refused
    unless ``resume`` or ``overwrite`` (which deletes that run's outputs first) is given.
    A run whose losses or weights turn non-finite stops with :class:`TrainingDiverged`,
    without saving them: its newest checkpoint stays the last good state.
    """
    from ganimation.data import FaceDataset, discover_dataset

    config.validate()
    context = DistributedContext.current()
    run_dir = Path(config.run.output_dir)
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)  # every rank, before any writes
    device = resolve_device(config.run.device)
    if device.type == "cuda" and context.world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", context.rank)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    prepare_runtime(config, device)
    seed_everything(config.run.seed, config.run.deterministic)

    if context.is_main:
        if overwrite:
            clear_run_dir(run_dir)
        tidy_checkpoints(run_dir)
    if context.world_size > 1:
        torch.distributed.barrier()  # the folder is in order before any rank reads a checkpoint
    # Images are decoded once here, as `ganimation prepare` does: an unreadable one is left out
    # (and reported) now, not found by the data loader in the middle of an epoch.
    index = discover_dataset(config.data.root, test_fraction=config.data.test_fraction, check_images=True)
    if not index.train:
        raise ValueError(f"{config.data.root}: no usable training samples (run `ganimation prepare` to see why)")
    dataset = FaceDataset(index.train, config.model.image_size, flip=False, cache=config.data.cache_images,
                          pair_by_identity=config.loss.uses_pairs)
    if config.data.batch_size % context.world_size:
        raise ValueError(f"data.batch_size={config.data.batch_size} is the global batch and must be divisible "
                         f"by the {context.world_size} processes")
    local_batch = config.data.batch_size // context.world_size
    sampler = DistributedSampler(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True,
                                 seed=config.run.seed, drop_last=True)
    steps_per_epoch = len(sampler) // local_batch
    if steps_per_epoch < 1:
        raise ValueError(f"{config.data.root}: {len(dataset)} training images are fewer than one batch "
                         f"of {config.data.batch_size}")
    target_pool = torch.from_numpy(np.stack([sample.aus for sample in index.train]))
    candidates = checkpoint_dirs(run_dir) if resume else []
    if resume and not candidates:
        if (run_dir / MODEL_FILE).exists():
            raise CheckpointError(f"{run_dir} holds a trained model but no checkpoint to resume from: pass "
                                  f"--overwrite to train anew, or another --output")
        logger.warning("--resume: no checkpoint in %s yet, starting from %s", run_dir,
                       config.run.init_from or "scratch")
    generator = discriminator = None
    if config.run.init_from and not candidates:
        generator, discriminator = initial_networks(config.run.init_from, config.model, config.run.seed)
    trainer = GANimationTrainer(config, target_pool, steps_per_epoch, device, generator, discriminator)
    checkpoint = restore_newest(trainer, candidates)
    if checkpoint is not None:
        logger.info("resumed from %s (step %d, epoch %d)", checkpoint, trainer.progress.step, trainer.progress.epoch)
    if context.world_size > 1:
        wrap_distributed(trainer, device)

    total_steps = trainer.total_steps if config.optim.max_steps is None else min(trainer.total_steps,
                                                                                 config.optim.max_steps)
    # Fixed faces for the sample grid: held-out ones spread over the test list (datasets are often
    # sorted by identity), topped up from training when there are few.
    pool = list(index.test) if len(index.test) >= config.run.num_samples else list(index.test) + list(index.train)
    spread = np.linspace(0, len(pool) - 1, min(config.run.num_samples, len(pool))).round().astype(int)
    validation = [pool[position] for position in spread]
    fixed = FaceDataset(validation, config.model.image_size, flip=False, cache=False)
    fixed_images = torch.stack([fixed[i]["image"] for i in range(len(fixed))]).to(device)
    fixed_aus = torch.stack([fixed[i]["aus"] for i in range(len(fixed))]).to(device)
    fixed_targets = fixed_aus.roll(1, dims=0) if len(fixed) > 1 else (1.0 - fixed_aus)

    log = None
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", config.to_yaml())
        log = MetricsLog(run_dir, trainer.progress.step, config.run.tensorboard)
        logger.info("config:\n%s", config.to_yaml())
        logger.info("training on %d images (%d test) for %d steps, %d per epoch, device %s, %d process(es)",
                    len(dataset), len(index.test), total_steps, steps_per_epoch, device, context.world_size)
    bar = tqdm(total=total_steps, initial=trainer.progress.step, disable=not (show_progress and context.is_main),
               dynamic_ncols=True, desc="train")

    def save_checkpoint() -> None:
        if context.is_main:
            path = trainer.save(run_dir, config.run.keep_checkpoints)
            logger.debug("checkpoint %s", path)

    def draw_samples() -> None:
        if context.is_main:
            grid = sample_grid(trainer.exported_generator, fixed_images, fixed_aus, fixed_targets)
            save_image(run_dir / "samples" / f"step_{trainer.progress.step:09d}.png", grid)

    batches = EpochBatchSampler(sampler, local_batch)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=config.data.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=config.data.num_workers > 0)
    stopped = interrupted = False
    with StopRequested() as stop:
        while trainer.progress.step < total_steps and not stopped:
            batches.set_epoch(trainer.progress.epoch, trainer.progress.batch_in_epoch)
            for batch in loader:
                partner = (batch["partner_image"], batch["partner_aus"]) if "partner_image" in batch else None
                metrics = trainer.train_step(batch["image"], batch["aus"], partner)
                step = trainer.progress.step
                # Every rank must stop after the same step, or the others would wait forever in the
                # next step's all-reduce: a signal seen by any rank stops them all.
                interrupted = _any_rank(stop.requested, device) if context.world_size > 1 else stop.requested
                bar.update(1)
                logging_now = step % config.run.log_every == 0 or step == total_steps
                saving_now = step % config.run.checkpoint_every == 0 and step < total_steps and not interrupted
                finishing = interrupted or step >= total_steps
                if logging_now:
                    if context.world_size > 1:
                        metrics = _mean_across_ranks(metrics, device)  # the global batch's losses
                    bar.set_postfix({key.split("/")[-1]: f"{value:.3g}" for key, value in metrics.items()
                                     if key in ("d/wasserstein", "g/au_fake", "g/cycle", "g/attention_mean")})
                    if log is not None:
                        log.write(step, metrics)
                if logging_now or saving_now or finishing:
                    # Before anything is saved: a diverged run stops here, on every rank alike (the
                    # metrics are averaged, the weights equal), and never replaces a good checkpoint.
                    try:
                        trainer.check_finite(metrics if logging_now else None)
                    except TrainingDiverged as error:
                        newest = checkpoint_dirs(run_dir)
                        raise TrainingDiverged(
                            f"{error}; nothing was saved, so {newest[-1] if newest else 'no checkpoint'} is the "
                            f"last good state: lower optim.lr_* or the loss weights") from None
                if step % config.run.sample_every == 0:
                    draw_samples()
                if saving_now:
                    save_checkpoint()
                if finishing:
                    stopped = True
                    break
    bar.close()
    final_model = run_dir / MODEL_FILE
    if context.is_main:
        draw_samples()
        save_checkpoint()
        save_model_file(final_model, trainer.exported_generator, trainer.discriminator, config.model,
                        extra={"step": trainer.progress.step, "interrupted": interrupted})
        if log is not None:
            log.close()
        logger.info("model written to %s", final_model)
    if context.world_size > 1:
        # No rank may exit before rank 0 has written the final checkpoint: torchrun stops the
        # remaining workers as soon as one exits with an error (130 after a signal).
        torch.distributed.barrier()
    if interrupted:
        raise KeyboardInterrupt("training interrupted; resume with --resume")
    return final_model


def restore_newest(trainer: GANimationTrainer, candidates: list[Path]) -> Path | None:
    """Restore the newest of ``candidates`` (oldest first) that reads back; a damaged one is
    passed over with a warning. None when there are none; an error when every one is damaged."""
    errors = []
    for checkpoint in reversed(candidates):
        try:
            trainer.restore(checkpoint)
            return checkpoint
        except CheckpointMismatch:
            raise
        except CheckpointError as error:
            errors.append(str(error))
            logger.warning("skipping a damaged checkpoint: %s", error)
    if errors:
        raise CheckpointError(f"no checkpoint of {candidates[0].parent.parent} reads back; the newest: {errors[0]}")
    return None


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def _mean_across_ranks(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average the per-rank metrics (every loss is a mean over the local batch, so this is the
    global batch's value). All ranks hold the same keys: they run the same step."""
    keys = sorted(metrics)
    values = torch.tensor([metrics[key] for key in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    values /= torch.distributed.get_world_size()
    return dict(zip(keys, values.tolist()))


def wrap_distributed(trainer: GANimationTrainer, device: torch.device) -> None:
    """Wrap both networks in DistributedDataParallel (gradients averaged across processes).

    The loop's extra forward passes are compatible with DDP's gradient hooks: the critic runs
    twice (real+fake, then the gradient penalty's interpolates, whose ``autograd.grad`` is taken
    w.r.t. the images only, so no parameter hook fires before the one ``backward``), the
    generator twice (edit, cycle); one backward then accumulates each parameter's gradient once
    and DDP averages it. In the generator step the critic's parameters do not require grad, so
    its reducer sees no hook at all. Without attention (the ablation) the attention head gets no
    gradient, which DDP must be told about.
    """
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    trainer.generator = DistributedDataParallel(trainer.generator, device_ids=device_ids,
                                                find_unused_parameters=not trainer.config.model.use_attention)
    trainer.discriminator = DistributedDataParallel(trainer.discriminator, device_ids=device_ids)


def steps_per_second(trainer: GANimationTrainer, images: Tensor, aus: Tensor, iterations: int) -> float:
    """Training throughput in full iterations (critic_steps critic + 1 generator step) per second."""
    start = time.perf_counter()
    for _ in range(iterations * trainer.config.optim.critic_steps):
        trainer.train_step(images, aus)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return iterations / (time.perf_counter() - start)

