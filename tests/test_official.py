"""``--preset official``: the training step of the authors' code (albertpumarola/GANimation,
models/ganimation.py), checked against a plain re-implementation of its formulas.

Both sides start from the same weights and use the same random draws; the reference below is
written from the official code's equations, not from our trainer, and takes its optimiser steps
as that code does: the critic's loss, then a second Adam step on the gradient penalty alone with
the updated critic, then the generator's loss, with MSELoss / batch * 4000, the absolute
smoothness summed over the batch, and the batch's targets unclamped and reused.

Tolerance: everything runs in float64, where the two sides differ only in summation order
(about 1e-16 relative, far below 1e-6 on any CPU). A real difference in the step is far above it:
Adam's first steps move a weight by about lr = 1e-4, and each of the official code's choices,
switched back to our default, moves the losses or weights by more than 1e-4 (checked below).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from ganimation.config import build_config
from ganimation.training import GANimationTrainer

CPU = torch.device("cpu")
BATCH = 4
ITERATIONS = 2  # two full critic + generator iterations: the second Adam step weighs gradient sizes too
TOLERANCE = 1e-6
SMALL_MODEL = ["model.image_size=16", "model.generator_channels=8", "model.generator_residual_blocks=1",
               "model.discriminator_channels=8", "model.discriminator_layers=2"]


def official_config(*overrides: str):  # type: ignore[no-untyped-def]
    return build_config("official", overrides=[*SMALL_MODEL, f"data.batch_size={BATCH}", "optim.critic_steps=1",
                                               "data.flip=false", "run.device=cpu", "run.seed=3", *overrides])


def target_pool() -> Tensor:
    """AU rows with many exact 0s and 1s, as OpenFace's, so the target noise leaves [0, 1]."""
    return (torch.rand(12, 17, generator=torch.Generator().manual_seed(7)) * 1.4 - 0.2).clamp(0.0, 1.0)


def batches() -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(11)
    return [(torch.rand(BATCH, 3, 16, 16, generator=generator, dtype=torch.float64) * 2 - 1,
             torch.rand(BATCH, 17, generator=generator)) for _ in range(ITERATIONS)]


# ---------------------------------------------------------------------- the reference


def smooth(mask: Tensor) -> Tensor:
    """The official _compute_loss_smooth: absolute neighbour differences summed over the batch."""
    return (torch.sum(torch.abs(mask[:, :, :, :-1] - mask[:, :, :, 1:]))
            + torch.sum(torch.abs(mask[:, :, :-1, :] - mask[:, :, 1:, :])))


def official_iteration(G: nn.Module, D: nn.Module, optimizer_G: torch.optim.Optimizer,
                       optimizer_D: torch.optim.Optimizer, real: Tensor, real_cond: Tensor,
                       desired_cond: Tensor, alpha: Tensor) -> dict[str, float]:
    """One optimize_parameters(train_generator=True) of the official code, lambdas at its defaults."""
    mse, l1 = nn.MSELoss(), nn.L1Loss()
    B = real.shape[0]

    # train D: D(real) and D(fake) separately, each critic output a (B, 1, h, w) map
    out = G(real, desired_cond)
    fake = out.attention * real + (1 - out.attention) * out.colour
    real_prob, real_pred = D(real)
    loss_d_real = -torch.mean(real_prob)
    loss_d_cond = mse(real_pred, real_cond) / B * 4000
    fake_prob, _ = D(fake.detach())
    loss_d_fake = torch.mean(fake_prob)
    optimizer_D.zero_grad()
    (loss_d_real + loss_d_cond + loss_d_fake).backward()
    optimizer_D.step()

    # gradient penalty: its own Adam step, with the critic just updated. PyTorch 0.3's zero_grad
    # zeroed gradients (it did not free them), so weights the penalty does not reach still step.
    interpolated = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    interpolated_prob, _ = D(interpolated)
    grad = torch.autograd.grad(interpolated_prob, interpolated, grad_outputs=torch.ones_like(interpolated_prob),
                               retain_graph=True, create_graph=True)[0]
    grad_l2norm = torch.sqrt(torch.sum(grad.view(B, -1) ** 2, dim=1))
    loss_d_gp = torch.mean((grad_l2norm - 1) ** 2) * 10
    optimizer_D.zero_grad(set_to_none=False)
    loss_d_gp.backward()
    optimizer_D.step()

    # train G, towards the same desired_cond
    out = G(real, desired_cond)
    fake_mask = out.attention
    fake = fake_mask * real + (1 - fake_mask) * out.colour
    fake_prob, fake_pred = D(fake)
    loss_g_fake = -torch.mean(fake_prob)
    loss_g_cond = mse(fake_pred, desired_cond) / B * 4000
    rec_out = G(fake, real_cond)
    rec_mask = rec_out.attention
    rec = rec_mask * fake + (1 - rec_mask) * rec_out.colour
    loss_g_cyc = l1(rec, real) * 10
    loss_g_masks = (torch.mean(fake_mask) * 0.1 + torch.mean(rec_mask) * 0.1
                    + smooth(fake_mask) * 1e-5 + smooth(rec_mask) * 1e-5)
    loss_g = loss_g_fake + loss_g_cond + loss_g_cyc + loss_g_masks
    optimizer_G.zero_grad()
    loss_g.backward()
    optimizer_G.step()
    return {"d_wasserstein": (loss_d_real + loss_d_fake).item(), "d_cond": loss_d_cond.item(),
            "d_gp": loss_d_gp.item(), "g_fake": loss_g_fake.item(), "g_cond": loss_g_cond.item(),
            "g_cyc": loss_g_cyc.item(), "g_masks": loss_g_masks.item(), "g_total": loss_g.item()}


# ---------------------------------------------------------------------- the comparison


def discrepancy(*overrides: str) -> tuple[float, float]:
    """Largest difference between our trainer (official preset + overrides) and the reference
    over ITERATIONS iterations: (in the losses, in the updated weights)."""
    torch.manual_seed(0)
    config = official_config(*overrides)
    pool = target_pool()
    trainer = GANimationTrainer(config, pool, steps_per_epoch=5, device=CPU)
    trainer.generator.double()  # in place: the optimisers keep the same parameters
    trainer.discriminator.double()
    G, D = copy.deepcopy(trainer.generator), copy.deepcopy(trainer.discriminator)
    betas = (config.optim.beta1, config.optim.beta2)
    optimizer_G = torch.optim.Adam(G.parameters(), lr=config.optim.lr_generator, betas=betas)
    optimizer_D = torch.optim.Adam(D.parameters(), lr=config.optim.lr_discriminator, betas=betas)
    # The same random numbers: each batch draws its targets (a pool row + U(-0.1, 0.1)), then the
    # penalty's mixing weights, from the trainer's stream.
    draws = torch.Generator().set_state(trainer.rng.get_state())
    loss_gap = 0.0
    for real, real_cond in batches():
        rows = torch.randint(len(pool), (BATCH,), generator=draws)
        desired_cond = pool[rows] + (torch.rand(BATCH, 17, generator=draws) * 2.0 - 1.0) * 0.1
        alpha = torch.rand(BATCH, 1, 1, 1, generator=draws).double()
        expected = official_iteration(G, D, optimizer_G, optimizer_D, real, real_cond, desired_cond, alpha)
        ours = trainer.train_step(real, real_cond)
        weights = config.loss
        ours_scaled = {
            "d_wasserstein": ours["d/wasserstein"], "d_cond": weights.lambda_cond * ours["d/au_real"],
            "d_gp": weights.lambda_gp * ours["d/gradient_penalty"], "g_fake": ours["g/adversarial"],
            "g_cond": weights.lambda_cond * ours["g/au_fake"], "g_cyc": weights.lambda_idt * ours["g/cycle"],
            "g_masks": ours["g/attention"], "g_total": ours["g/total"]}
        loss_gap = max(loss_gap, *(abs(ours_scaled[key] - value) for key, value in expected.items()))
    weight_gap = max((ours_value - theirs).abs().max().item()
                     for ours_module, theirs_module in ((trainer.generator, G), (trainer.discriminator, D))
                     for ours_value, theirs in zip(ours_module.state_dict().values(),
                                                   theirs_module.state_dict().values()))
    return loss_gap, weight_gap


def test_official_preset_reproduces_the_official_training_step() -> None:
    loss_gap, weight_gap = discrepancy()
    assert loss_gap < TOLERANCE and weight_gap < TOLERANCE, (loss_gap, weight_gap)


@pytest.mark.parametrize("default", [
    "loss.attention_smoothness=squared",
    "optim.penalty_step=joint",
    "loss.clamp_targets=true",
    "loss.reuse_critic_targets=false",
    "loss.au_loss_divided_by_batch=false",
])
def test_each_official_choice_is_seen_by_the_comparison(default: str) -> None:
    """Switched back to our default, each choice moves the result by 100x the tolerance."""
    assert max(discrepancy(default)) > 100 * TOLERANCE


def test_official_preset_initialises_norm_scales_uniformly() -> None:
    torch.manual_seed(0)
    trainer = GANimationTrainer(official_config(), target_pool(), steps_per_epoch=5, device=CPU)
    scales = torch.cat([layer.weight.detach() for layer in trainer.generator.modules()
                        if isinstance(layer, nn.InstanceNorm2d)])
    assert scales.numel() > 50 and scales.min() >= 0.0 and scales.max() < 1.0
    assert 0.3 < scales.mean().item() < 0.7  # U(0, 1), not the ones of our default
    assert all(torch.all(layer.bias == 0) for layer in trainer.generator.modules()
               if isinstance(layer, nn.InstanceNorm2d))
    torch.manual_seed(0)
    default = GANimationTrainer(official_config("optim.norm_init=ones"), target_pool(), 5, CPU)
    assert all(torch.all(layer.weight == 1) for layer in default.generator.modules()
               if isinstance(layer, nn.InstanceNorm2d))


def test_official_preset_decays_the_rate_once_an_epoch() -> None:
    trainer = GANimationTrainer(official_config(), target_pool(), steps_per_epoch=3, device=CPU)
    factor = trainer.generator_scheduler.lr_lambdas[0]
    assert trainer.total_steps == 3 * 30
    # Epochs count from 0 here: epochs 0-20 (the official code's 1-21) at the full rate, then
    # lr_0 / 10 less each epoch, to 0.1x in the last (epoch 29, the official code's 30).
    assert [factor(3 * epoch + 2) for epoch in (0, 19, 20)] == [1.0, 1.0, 1.0]
    assert [factor(3 * epoch) for epoch in range(21, 30)] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4,
                                                                            0.3, 0.2, 0.1])
    assert factor(3 * 21 - 1) == 1.0 and factor(3 * 21 + 2) == pytest.approx(0.9)  # constant within an epoch
    assert trainer.discriminator_scheduler.lr_lambdas[0](3 * 29) == pytest.approx(0.1)


def test_official_preset_targets_are_unclamped_and_reused() -> None:
    trainer = GANimationTrainer(official_config(), target_pool(), steps_per_epoch=5, device=CPU)
    images, aus = batches()[0]
    seen = []
    generator_forward = trainer.generator.forward
    trainer.generator.forward = lambda image, target: seen.append(target) or generator_forward(image, target)
    trainer.train_step(images.float(), aus)
    # The critic's fakes, the generator step's edit (then its cycle back to the batch's own AUs).
    critic_targets, edit_targets, cycle_targets = seen
    assert torch.equal(critic_targets, edit_targets) and torch.equal(cycle_targets, aus)
    assert critic_targets.min() < 0.0 and critic_targets.max() > 1.0
