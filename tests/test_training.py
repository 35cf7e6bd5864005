"""The trainer's phases: which network each step updates, target sampling, LR schedule, flips."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import logged_metrics, smoke_config
from ganimation import synth
from ganimation.config import build_config
from ganimation.training import GANimationTrainer, Progress, sample_grid, to_uint8, train

CPU = torch.device("cpu")
CRITIC_KEYS = {"d/total", "d/wasserstein", "d/gradient_penalty", "d/au_real", "d/real_score", "d/fake_score"}
GENERATOR_KEYS = {"g/total", "g/adversarial", "g/au_fake", "g/attention", "g/cycle", "g/same_expression", "g/paired",
                  "g/paired_colour", "g/paired_attention", "g/paired_psnr", "g/paired_changed",
                  "g/paired_unchanged", "g/attention_mean"}


def make_trainer(*overrides: str, pool: torch.Tensor | None = None, steps_per_epoch: int = 5) -> GANimationTrainer:
    torch.manual_seed(0)
    config = build_config("smoke", overrides=["run.device=cpu", *overrides])
    if pool is None:
        pool = torch.rand(10, 17, generator=torch.Generator().manual_seed(1))
    return GANimationTrainer(config, pool, steps_per_epoch, CPU)


def batch(size: int = 4, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(size, 3, 32, 32, generator=generator) * 2 - 1, torch.rand(size, 17, generator=generator)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> list[str]:
    return [key for key, value in module.state_dict().items() if not torch.equal(before[key], value)]


def test_critic_and_generator_update_schedule() -> None:
    trainer = make_trainer("optim.critic_steps=3")
    images, aus = batch()
    for index in range(3):
        generator_before, critic_before = snapshot(trainer.generator), snapshot(trainer.discriminator)
        metrics = trainer.train_step(images, aus)
        critic_changed = changed(critic_before, trainer.discriminator)
        generator_changed = changed(generator_before, trainer.generator)
        # Every step is a critic step, and Adam moves every critic weight.
        assert len(critic_changed) == len(critic_before), index
        if index < 2:
            assert generator_changed == [], index
            assert set(metrics) == CRITIC_KEYS | {"lr"}
            assert trainer.progress.generator_steps == 0
        else:
            # Step index critic_steps - 1: the generator step (all weights move under Adam).
            assert len(generator_changed) == len(generator_before)
            assert set(metrics) == CRITIC_KEYS | GENERATOR_KEYS | {"lr"}
            assert trainer.progress.generator_steps == 1
    assert trainer.progress.step == 3


def test_critic_warmup_delays_the_first_generator_step() -> None:
    trainer = make_trainer("optim.critic_steps=2", "optim.critic_warmup_steps=4")
    images, aus = batch()
    generator_before = snapshot(trainer.generator)
    for _ in range(4):
        assert set(trainer.train_step(images, aus)) == CRITIC_KEYS | {"lr"}
    assert changed(generator_before, trainer.generator) == [] and trainer.progress.generator_steps == 0
    trainer.train_step(images, aus)  # step 4: (4 + 1) % 2 != 0, still critic only
    assert trainer.progress.generator_steps == 0
    assert set(trainer.train_step(images, aus)) == CRITIC_KEYS | GENERATOR_KEYS | {"lr"}
    assert trainer.progress.generator_steps == 1
    assert len(changed(generator_before, trainer.generator)) == len(generator_before)


def test_negative_critic_warmup_is_refused() -> None:
    with pytest.raises(ValueError, match="critic_warmup_steps"):
        make_trainer("optim.critic_warmup_steps=-1")


def test_bf16_autocast_trains_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a CPU with native bfloat16 (elsewhere run.bf16 is refused: tests/test_speed.py).
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    trainer = make_trainer("optim.critic_steps=1", "run.bf16=true")
    images, aus = batch()
    generator_before, critic_before = snapshot(trainer.generator), snapshot(trainer.discriminator)
    with trainer._autocast():
        output = trainer.generator(images, aus)
        assert trainer.discriminator(output.image).realness.dtype == torch.bfloat16  # autocast is on
        assert output.colour.dtype == output.attention.dtype == torch.float32  # the masks stay float32
    metrics = trainer.train_step(images, aus)
    assert all(np.isfinite(value) for value in metrics.values())
    # Weights and optimiser state stay float32; only the arithmetic is autocast.
    assert all(value.dtype == torch.float32 for value in trainer.generator.state_dict().values())
    assert len(changed(generator_before, trainer.generator)) == len(generator_before)
    assert len(changed(critic_before, trainer.discriminator)) == len(critic_before)


def test_generator_step_leaves_critic_trainable_and_untouched() -> None:
    trainer = make_trainer()
    images, aus = batch()
    critic_before = snapshot(trainer.discriminator)
    metrics = trainer.generator_step(images, aus)
    assert changed(critic_before, trainer.discriminator) == []
    assert all(parameter.requires_grad for parameter in trainer.discriminator.parameters())
    assert set(metrics) == GENERATOR_KEYS
    assert all(np.isfinite(value) for value in metrics.values())
    assert 0.0 < metrics["g/attention_mean"] < 1.0


@pytest.mark.parametrize("same_expression_weight", [0.0, 10.0])
def test_metric_values_are_consistent(same_expression_weight: float) -> None:
    trainer = make_trainer("optim.critic_steps=1", f"loss.lambda_same_expression={same_expression_weight}")
    metrics = trainer.train_step(*batch())
    weights = trainer.config.loss
    assert metrics["d/wasserstein"] == pytest.approx(metrics["d/fake_score"] - metrics["d/real_score"], abs=1e-6)
    assert metrics["d/total"] == pytest.approx(metrics["d/wasserstein"] + weights.lambda_gp * metrics["d/gradient_penalty"]
                                               + weights.lambda_cond * metrics["d/au_real"], rel=1e-5)
    assert metrics["g/total"] == pytest.approx(metrics["g/adversarial"] + weights.lambda_cond * metrics["g/au_fake"]
                                               + metrics["g/attention"] + weights.lambda_idt * metrics["g/cycle"]
                                               + same_expression_weight * metrics["g/same_expression"], rel=1e-5)
    assert metrics["d/gradient_penalty"] >= 0 and metrics["g/cycle"] >= 0


def record_generator_aus(trainer: GANimationTrainer) -> list[torch.Tensor]:
    """The AU vectors of every later generator pass, in order."""
    calls: list[torch.Tensor] = []
    trainer.generator.register_forward_hook(lambda module, inputs, output: calls.append(inputs[1].clone()))
    return calls


def test_same_expression_loss_is_off_by_default() -> None:
    trainer = make_trainer()
    assert trainer.config.loss.lambda_same_expression == 0.0  # the paper's objective
    calls = record_generator_aus(trainer)
    images, aus = batch()
    assert trainer.generator_step(images, aus)["g/same_expression"] == 0.0
    assert len(calls) == 2  # the edit and the cycle, no third pass


def test_same_expression_loss_asks_for_the_source_aus() -> None:
    trainer = make_trainer("loss.lambda_same_expression=10")
    images, aus = batch()
    with torch.no_grad():
        expected = (trainer.generator(images, aus).image - images).abs().mean().item()
    calls = record_generator_aus(trainer)
    metrics = trainer.generator_step(images, aus)
    assert len(calls) == 3 and torch.equal(calls[2], aus)
    assert metrics["g/same_expression"] == pytest.approx(expected, rel=1e-5) and expected > 0


def test_same_expression_loss_changes_the_generator_update() -> None:
    images, aus = batch()
    updated = []
    for weight in (0.0, 10.0):
        trainer = make_trainer(f"loss.lambda_same_expression={weight}")
        trainer.generator_step(images, aus)
        updated.append(snapshot(trainer.generator))
    assert any(not torch.equal(updated[0][key], updated[1][key]) for key in updated[0])


@pytest.mark.parametrize(("weight", "scored", "key"), [
    ("lambda_paired", "image", "g/paired"),  # the composed output
    ("lambda_paired_colour", "colour", "g/paired_colour"),  # the colour mask itself
    ("lambda_paired_psnr", "image", "g/paired_psnr"),  # the output, on the evaluation's log scale
    ("lambda_paired_changed", "image", "g/paired_changed"),  # the output where the partner differs
    ("lambda_paired_unchanged", "image", "g/paired_unchanged"),  # the output where the partner does not
])
def test_paired_loss_edits_towards_the_partner_and_scores_against_it(weight: str, scored: str, key: str) -> None:
    trainer = make_trainer(f"loss.{weight}=10")
    images, aus = batch()
    partner_images, partner_aus = batch(seed=3)
    with torch.no_grad():
        output = trainer.generator(images, partner_aus)
        difference = getattr(output, scored) - partner_images
        if key == "g/paired_psnr":
            errors = difference.pow(2).flatten(1).mean(dim=1) / 4
            expected = (10 * torch.log10(errors + 1e-6)).mean().item()
        elif key == "g/paired_changed":
            changed = ((partner_images - images).abs().amax(dim=1) > 1 / 255).float()  # (B, H, W)
            per_image = (difference.abs().mean(dim=1) * changed).flatten(1).sum(1) / changed.flatten(1).sum(1)
            expected = per_image.mean().item()
        elif key == "g/paired_unchanged":
            unchanged = ((partner_images - images).abs().amax(dim=1) <= 1 / 255).float()  # (B, H, W)
            squared = (difference.pow(2).mean(dim=1) / 4 * unchanged).flatten(1).sum(1)
            errors = squared / unchanged.flatten(1).sum(1).clamp(min=1)
            expected = (10 * torch.log10(errors + 1e-6)).mean().item()
        else:
            expected = difference.abs().mean().item()
    calls = record_generator_aus(trainer)
    metrics = trainer.generator_step(images, aus, (partner_images, partner_aus))
    assert len(calls) == 2 and torch.equal(calls[0], partner_aus) and torch.equal(calls[1], aus)
    assert metrics[key] == pytest.approx(expected, rel=1e-5) and expected != 0
    weights = trainer.config.loss
    assert metrics["g/total"] == pytest.approx(metrics["g/adversarial"] + weights.lambda_cond * metrics["g/au_fake"]
                                               + metrics["g/attention"] + weights.lambda_idt * metrics["g/cycle"]
                                               + 10 * metrics[key], rel=1e-5)


@pytest.mark.parametrize("use_attention", [True, False])
def test_paired_attention_loss_scores_the_mask_where_the_partner_equals_the_image(use_attention: bool) -> None:
    trainer = make_trainer("loss.lambda_paired_attention=10", f"model.use_attention={use_attention}")
    images, aus = batch()
    partner_images, partner_aus = images.clone(), batch(seed=3)[1]
    partner_images[..., :4, :] = -partner_images[..., :4, :]  # the edit changes the top rows only
    with torch.no_grad():
        attention = trainer.generator(images, partner_aus).attention
        expected = (1 - attention[..., 4:, :]).sum().item() / attention.numel()
    calls = record_generator_aus(trainer)
    metrics = trainer.generator_step(images, aus, (partner_images, partner_aus))
    assert torch.equal(calls[0], partner_aus)  # pairs are drawn for this loss alone
    if use_attention:
        assert metrics["g/paired_attention"] == pytest.approx(expected, rel=1e-5) and expected > 0
    else:  # no attention mask to score, like the paper's attention loss
        assert metrics["g/paired_attention"] == 0.0
    weights = trainer.config.loss
    assert metrics["g/total"] == pytest.approx(metrics["g/adversarial"] + weights.lambda_cond * metrics["g/au_fake"]
                                               + metrics["g/attention"] + weights.lambda_idt * metrics["g/cycle"]
                                               + 10 * metrics["g/paired_attention"], rel=1e-5)


def test_paired_losses_are_off_by_default() -> None:
    trainer = make_trainer()
    weights = trainer.config.loss
    assert weights.lambda_paired == weights.lambda_paired_colour == weights.lambda_paired_attention == 0.0  # the paper's
    assert weights.lambda_paired_psnr == 0.0 == weights.lambda_paired_changed == weights.lambda_paired_unchanged
    images, aus = batch()
    partner_images, partner_aus = batch(seed=3)
    calls = record_generator_aus(trainer)
    metrics = trainer.generator_step(images, aus, (partner_images, partner_aus))
    assert metrics["g/paired"] == 0.0 == metrics["g/paired_colour"] == metrics["g/paired_attention"]
    assert metrics["g/paired_psnr"] == 0.0 == metrics["g/paired_changed"] == metrics["g/paired_unchanged"]
    assert not torch.equal(calls[0], partner_aus)  # a random target y_f


def test_paired_total_and_flip_keep_partners_aligned(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer("optim.critic_steps=1", "loss.lambda_paired=100", "data.flip=true")
    images, aus = batch(size=16)
    seen = []
    generator_step = trainer.generator_step

    def spy(images: torch.Tensor, aus: torch.Tensor, partner: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        seen.append((images, partner[0]))
        return generator_step(images, aus, partner)

    monkeypatch.setattr(trainer, "generator_step", spy)
    metrics = trainer.train_step(images, aus, (images.flip(-1), aus))
    flipped, partner_images = seen[0]
    assert not torch.equal(flipped, images) and not torch.equal(flipped, images.flip(-1))  # some rows flipped
    assert torch.equal(partner_images, flipped.flip(-1))  # each partner flipped with its own image
    weights = trainer.config.loss
    assert metrics["g/total"] == pytest.approx(metrics["g/adversarial"] + weights.lambda_cond * metrics["g/au_fake"]
                                               + metrics["g/attention"] + weights.lambda_idt * metrics["g/cycle"]
                                               + 100 * metrics["g/paired"], rel=1e-5)


def test_train_with_pairs_from_a_synthetic_dataset(tmp_path: Path, dataset_dir: Path) -> None:
    root = synth.write_synthetic_dataset(tmp_path / "synth", identities=3, per_identity=3, size=32)
    extra = ("loss.lambda_paired=10", "optim.critic_steps=1")
    train(smoke_config(root, tmp_path / "run", 2, *extra), show_progress=False)
    logged = logged_metrics(tmp_path / "run")
    assert len(logged) == 2 and all(entry["g/paired"] > 0 for entry in logged)
    # The colour-mask and attention-mask losses without the output's also pair the images.
    train(smoke_config(root, tmp_path / "masks", 1, "loss.lambda_paired_colour=10", "loss.lambda_paired_attention=10",
                       "optim.critic_steps=1"), show_progress=False)
    logged = logged_metrics(tmp_path / "masks")
    assert logged[-1]["g/paired_colour"] > 0 and logged[-1]["g/paired"] > 0  # the L1 is logged at weight 0 too
    assert logged[-1]["g/paired_attention"] > 0
    with pytest.raises(ValueError, match="no identity; pairing images needs an 'identity' column"):
        train(smoke_config(dataset_dir, tmp_path / "unpaired", 2, *extra), show_progress=False)


def test_without_attention_no_attention_loss() -> None:
    trainer = make_trainer("optim.critic_steps=1", "model.use_attention=false")
    metrics = trainer.train_step(*batch())
    assert metrics["g/attention"] == 0.0 and metrics["g/attention_mean"] == 0.0


def test_sample_targets_near_pool() -> None:
    # Pool rows far apart (0, 0.5, 1 everywhere), so each target's source row is unambiguous.
    pool = torch.tensor([[0.0] * 17, [0.5] * 17, [1.0] * 17])
    trainer = make_trainer(pool=pool)
    targets = trainer.sample_targets(300)
    assert targets.shape == (300, 17) and targets.dtype == torch.float32
    assert targets.min() >= 0.0 and targets.max() <= 1.0
    distance = (targets[:, None, :] - pool[None]).abs().amax(dim=2)  # (300, 3), L-inf to each row
    nearest = distance.min(dim=1)
    assert (nearest.values <= 0.1 + 1e-6).all()
    assert set(nearest.indices.tolist()) == {0, 1, 2}  # rows are drawn at random, all of them
    # The noise is really there and spans most of +-0.1 around the middle row.
    middle = targets[nearest.indices == 1] - 0.5
    assert middle.abs().max() > 0.09 and middle.min() < -0.05 and middle.max() > 0.05


def test_sample_targets_without_noise_are_pool_rows() -> None:
    pool = torch.rand(6, 17, generator=torch.Generator().manual_seed(3))
    trainer = make_trainer("loss.target_noise=0", pool=pool)
    targets = trainer.sample_targets(20)
    matches = (targets[:, None, :] == pool[None]).all(dim=2)
    assert matches.any(dim=1).all()


def test_sample_targets_reproducible_from_seed() -> None:
    first = make_trainer("run.seed=5").sample_targets(8)
    second = make_trainer("run.seed=5").sample_targets(8)
    third = make_trainer("run.seed=6").sample_targets(8)
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_learning_rate_schedule_function() -> None:
    trainer = make_trainer("optim.epochs=2", "optim.decay_epochs=2", steps_per_epoch=5)
    assert trainer.total_steps == 20
    factor = trainer.generator_scheduler.lr_lambdas[0]
    # Constant for 2 epochs (10 steps), then linear to 0 over the next 10.
    assert [factor(step) for step in (0, 5, 9, 10)] == [1.0, 1.0, 1.0, 1.0]
    assert factor(12) == pytest.approx(0.8)
    assert factor(15) == pytest.approx(0.5)
    assert factor(19) == pytest.approx(0.1)
    assert factor(20) == 0.0
    assert factor(25) == 0.0
    assert trainer.discriminator_scheduler.lr_lambdas[0](15) == pytest.approx(0.5)


def test_learning_rate_schedule_while_training() -> None:
    trainer = make_trainer("optim.lr_discriminator=3e-4", steps_per_epoch=2)  # smoke: 1 + 1 epochs = 4 steps
    assert trainer.total_steps == 4
    images, aus = batch()
    generator_lrs, critic_lrs = [], []
    for _ in range(4):
        generator_lrs.append(trainer.train_step(images, aus)["lr"])
        critic_lrs.append(trainer.discriminator_optimizer.param_groups[0]["lr"])
    # After step k the rate for step k applies: 1, 1 (decay starts at step 2), 1 - 1/2, 0.
    assert generator_lrs == pytest.approx([1e-4, 1e-4, 0.5e-4, 0.0])
    assert critic_lrs == pytest.approx([3e-4, 3e-4, 1.5e-4, 0.0])


def test_no_decay_epochs_keeps_rate() -> None:
    trainer = make_trainer("optim.decay_epochs=0", steps_per_epoch=3)
    factor = trainer.generator_scheduler.lr_lambdas[0]
    assert trainer.total_steps == 3
    assert factor(0) == factor(2) == 1.0


def test_epoch_counters() -> None:
    trainer = make_trainer(steps_per_epoch=2)
    images, aus = batch()
    for _ in range(3):
        trainer.train_step(images, aus)
    assert trainer.progress == Progress(step=3, epoch=1, batch_in_epoch=1, generator_steps=1)


def test_random_flip_disabled() -> None:
    trainer = make_trainer("data.flip=false")
    images, _ = batch(16)
    state = trainer.rng.get_state()
    assert torch.equal(trainer.random_flip(images), images)
    assert torch.equal(trainer.rng.get_state(), state)  # no random draw consumed either


def test_random_flip_enabled() -> None:
    trainer = make_trainer()
    images, _ = batch(32)
    flipped = trainer.random_flip(images)
    same = [torch.equal(flipped[i], images[i]) for i in range(32)]
    mirrored = [torch.equal(flipped[i], images[i].flip(-1)) for i in range(32)]
    assert all(a or b for a, b in zip(same, mirrored))
    assert 4 <= sum(mirrored) <= 28  # about half, with a fixed seed


def test_train_step_without_flip_sees_the_batch_unflipped(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer("data.flip=false")
    images, aus = batch()
    seen = []
    monkeypatch.setattr(trainer, "critic_step", lambda x, y: seen.append(x) or {})
    trainer.train_step(images, aus)
    assert torch.equal(seen[0], images)


def test_state_dict_round_trip() -> None:
    trainer = make_trainer()
    images, aus = batch()
    for _ in range(3):
        trainer.train_step(images, aus)
    # A deep copy stands for the trip through torch.save: optimiser state dicts alias live tensors.
    state = copy.deepcopy(trainer.state_dict())
    other = make_trainer()
    other.generator.load_state_dict(snapshot(trainer.generator))
    other.discriminator.load_state_dict(snapshot(trainer.discriminator))
    other.load_state_dict(copy.deepcopy(state))
    assert other.progress == trainer.progress
    assert torch.equal(other.rng.get_state(), trainer.rng.get_state())
    torch.set_rng_state(state["torch_rng"])
    expected = [trainer.train_step(images, aus) for _ in range(2)]  # the first one is a generator step
    torch.set_rng_state(state["torch_rng"])
    assert [other.train_step(images, aus) for _ in range(2)] == expected
    assert set(expected[0]) >= GENERATOR_KEYS


def test_weight_average_is_off_by_default() -> None:
    trainer = make_trainer()
    assert trainer.config.optim.ema_decay == 0.0 and trainer.generator_average is None
    assert trainer.exported_generator is trainer.generator
    assert "generator_training" not in trainer.state_dict()


def test_weight_average_follows_the_trained_generator() -> None:
    decay = 0.75
    trainer = make_trainer("optim.critic_steps=1", f"optim.ema_decay={decay}")
    images, aus = batch()
    # It starts as a copy of the trained weights, then moves a quarter of the way after each step.
    expected = snapshot(trainer.generator)
    assert all(torch.equal(value, expected[key]) for key, value in trainer.exported_generator.state_dict().items())
    for _ in range(3):
        trainer.train_step(images, aus)
        trained = snapshot(trainer.generator)
        expected = {key: decay * expected[key] + (1 - decay) * trained[key] for key in trained}
        exported = trainer.exported_generator.state_dict()
        for key, value in exported.items():
            torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    assert trainer.exported_generator is not trainer.generator
    assert changed(trained, trainer.exported_generator)  # the average is not the trained weights
    state = trainer.state_dict()
    assert state["generator_average_updates"] == 4
    assert all(torch.equal(value, trained[key]) for key, value in state["generator_training"].items())


def test_sample_grid_layout() -> None:
    trainer = make_trainer()
    images, aus = batch(3)
    grid = sample_grid(trainer.generator, images, aus, aus.roll(1, 0))
    assert grid.shape == (3 * 32, 5 * 32, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[32:64, :32], to_uint8(images)[1])  # first column: the inputs
    assert trainer.generator.training  # mode restored


def test_to_uint8() -> None:
    values = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(values)[0, 0, :, 0].tolist() == [0, 128, 255, 255, 0]


# --------------------------------------------------------------------------- divergence guard (issue 21)


def poison_critic_from(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The critic's Wasserstein loss turns NaN from the ``step``-th critic step on (1-based), as a
    run with a learning rate far too high does after a while."""
    from ganimation import losses

    real, calls = losses.critic_wasserstein_loss, []

    def poisoned(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        value = real(real_scores, fake_scores)
        return value * float("nan") if len(calls) >= step else value

    monkeypatch.setattr(losses, "critic_wasserstein_loss", poisoned)


def test_check_finite_names_the_losses_and_networks() -> None:
    trainer = make_trainer("optim.ema_decay=0.5")
    trainer.check_finite({"d/total": 1.0})
    with pytest.raises(ValueError, match="^training diverged at step 0: non-finite losses d/total=nan$"):
        trainer.check_finite({"d/total": float("nan"), "g/total": 2.0})
    with torch.no_grad():
        next(trainer.discriminator.parameters())[0].fill_(float("inf"))
    with pytest.raises(ValueError, match="non-finite weights of the discriminator$"):
        trainer.check_finite()


def test_a_diverging_run_stops_before_saving_nan(tmp_path: Path, dataset_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN losses used to end the run with exit 0 and all-NaN weights, and checkpoint rotation
    would have replaced every good checkpoint with a NaN one."""
    from ganimation.checkpoint import MODEL_FILE, checkpoint_dirs, read_model_file
    from ganimation.training import TrainingDiverged

    run_dir = tmp_path / "run"
    poison_critic_from(monkeypatch, 5)
    config = smoke_config(dataset_dir, run_dir, 8, "run.keep_checkpoints=1")  # logs every step, saves every 2
    with pytest.raises(TrainingDiverged) as raised:
        train(config, show_progress=False)
    message = str(raised.value)
    assert message.startswith("training diverged at step 5: non-finite losses d/total=nan")
    assert f"{run_dir / 'checkpoints' / 'step_000000004'} is the last good state" in message
    assert [path.name for path in checkpoint_dirs(run_dir)] == ["step_000000004"]
    read_model_file(checkpoint_dirs(run_dir)[0] / MODEL_FILE)  # finite (the reader checks)
    assert not (run_dir / MODEL_FILE).exists()


def test_weights_are_checked_before_a_checkpoint_between_log_steps(tmp_path: Path, dataset_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ganimation.checkpoint import checkpoint_dirs
    from ganimation.training import TrainingDiverged

    run_dir = tmp_path / "run"
    poison_critic_from(monkeypatch, 5)
    config = smoke_config(dataset_dir, run_dir, 8, "run.keep_checkpoints=1", "run.log_every=100")
    with pytest.raises(TrainingDiverged, match="^training diverged at step 6: non-finite weights of the generator, discriminator;"):
        train(config, show_progress=False)
    assert [path.name for path in checkpoint_dirs(run_dir)] == ["step_000000004"]


def test_a_diverging_run_exits_non_zero_with_one_line(tmp_path: Path, dataset_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from ganimation import cli

    poison_critic_from(monkeypatch, 3)
    code = cli.main(["train", "--data", str(dataset_dir), "-o", str(tmp_path / "run"), "--preset", "smoke",
                     "--steps", "6", "--no-progress", "--set", "run.device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("ganimation train: error: training diverged at step 3")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_metrics_on_a_full_disk_say_so(tmp_path: Path) -> None:
    from ganimation.training import MetricsLog

    log = MetricsLog(tmp_path, 0, tensorboard=False)
    log.path = Path("/dev/full")  # every write to it fails with ENOSPC, a real full disk
    with pytest.raises(OSError, match="^/dev/full: no space left on device"):
        log.write(1, {"d/total": 1.0})
