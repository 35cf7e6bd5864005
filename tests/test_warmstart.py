"""Starting training from a trained model, at the same width or grown wider (Net2WiderNet)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import smoke_config
from ganimation.checkpoint import CheckpointError, save_model_file
from ganimation.cli import main
from ganimation.config import ModelConfig
from ganimation.inference import GANimation
from ganimation.networks import build_networks
from ganimation.training import train
from ganimation.warmstart import grow_discriminator, grow_generator, initial_networks

SMALL = ModelConfig(image_size=32, generator_channels=8, generator_residual_blocks=2, discriminator_channels=8,
                    discriminator_layers=3)


def trained_like_networks(config: ModelConfig, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Randomly initialised networks whose norms are not the identity, as trained ones are not."""
    torch.manual_seed(seed)
    generator, discriminator = build_networks(config)
    for layer in generator.modules():
        if isinstance(layer, nn.InstanceNorm2d) and layer.affine:
            nn.init.normal_(layer.weight, 1.0, 0.3)
            nn.init.normal_(layer.bias, 0.0, 0.3)
    return generator.eval(), discriminator.eval()


def inputs(batch: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1, torch.rand(batch, 17, generator=generator)


@pytest.mark.parametrize("upsampling", ["transposed", "resize"])
@pytest.mark.parametrize("norm_affine", [True, False])
def test_grown_networks_compute_what_the_trained_ones_did(upsampling: str, norm_affine: bool) -> None:
    config = dataclasses.replace(SMALL, upsampling=upsampling, norm_affine=norm_affine)
    generator, discriminator = trained_like_networks(config)
    wider = dataclasses.replace(config, generator_channels=13, discriminator_channels=11)
    grown_generator = grow_generator(generator, wider).eval()
    grown_discriminator = grow_discriminator(discriminator, wider).eval()
    assert grown_generator.colour_head[0].weight.shape[1] == 13
    assert grown_generator.bottleneck[0].body[0].weight.shape[:2] == (52, 52)
    assert grown_discriminator.trunk[0].weight.shape[0] == 11
    images, aus = inputs()
    with torch.no_grad():
        before, after = generator(images, aus), grown_generator(images, aus)
        critic_before, critic_after = discriminator(images), grown_discriminator(images)
    torch.testing.assert_close(after.image, before.image, atol=2e-5, rtol=0)
    torch.testing.assert_close(after.attention, before.attention, atol=2e-5, rtol=0)
    torch.testing.assert_close(critic_after.realness, critic_before.realness, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(critic_after.aus, critic_before.aus, atol=2e-5, rtol=1e-4)


def test_copied_channels_get_their_own_gradients() -> None:
    generator, _ = trained_like_networks(SMALL)
    grown = grow_generator(generator, dataclasses.replace(SMALL, generator_channels=12)).train()
    images, aus = inputs()
    grown(images, aus).image.square().mean().backward()
    first = grown.encoder[0][0]
    # Channels 8-11 copy four of channels 0-7: the same incoming weights, different gradients,
    # because the next layer shares each original's outgoing weights unevenly among its copies.
    copies = [(new, original) for new in range(8, 12) for original in range(8)
              if torch.equal(first.weight[new], first.weight[original])]
    assert len(copies) == 4
    for new, original in copies:
        assert not torch.allclose(first.weight.grad[new], first.weight.grad[original])


def test_same_width_keeps_the_weights_and_growth_is_seeded() -> None:
    generator, _ = trained_like_networks(SMALL)
    same = grow_generator(generator, SMALL)
    for key, value in generator.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key
    wider = dataclasses.replace(SMALL, generator_channels=12)
    first, again, other = (grow_generator(generator, wider, seed) for seed in (3, 3, 4))
    assert all(torch.equal(value, again.state_dict()[key]) for key, value in first.state_dict().items())
    assert not all(torch.equal(value, other.state_dict()[key]) for key, value in first.state_dict().items())


@pytest.mark.parametrize("change, message", [
    ({"generator_channels": 4}, "model.generator_channels is 4, narrower than the model's 8"),
    ({"generator_residual_blocks": 3}, r"\(generator_residual_blocks 2 vs 3\); only widths may grow"),
    ({"use_attention": False}, "use_attention True vs False"),
])
def test_growth_refuses_other_architectures(change: dict[str, object], message: str) -> None:
    generator, _ = trained_like_networks(SMALL)
    with pytest.raises(CheckpointError, match=message):
        grow_generator(generator, dataclasses.replace(SMALL, **change))


def test_initial_networks_from_a_run_and_from_a_missing_file(trained_run: Path, tmp_path: Path) -> None:
    model = GANimation.load(trained_run)
    wider = dataclasses.replace(model.config, generator_channels=model.config.generator_channels + 4,
                                discriminator_channels=model.config.discriminator_channels + 2)
    generator, discriminator = initial_networks(str(trained_run), wider)
    assert generator.training and discriminator.training
    images, aus = inputs()
    generator.eval()
    with torch.no_grad():
        torch.testing.assert_close(generator(images, aus).image, model.generator(images, aus).image, atol=2e-5,
                                   rtol=0)
        torch.testing.assert_close(discriminator(images).aus, model.discriminator(images).aus, atol=2e-5, rtol=1e-4)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        initial_networks(str(tmp_path / "absent.safetensors"), wider)


def test_a_model_file_without_critic_gets_a_fresh_one(trained_run: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    model = GANimation.load(trained_run)
    generator_only = save_model_file(tmp_path / "generator.safetensors", model.generator, None, model.config)
    generator, discriminator = initial_networks(str(generator_only), model.config)
    assert "has no critic; training starts a fresh one" in caplog.text
    images, aus = inputs()
    assert discriminator(images).aus.shape == (3, model.config.num_aus)
    for key, value in model.generator.state_dict().items():
        assert torch.equal(generator.state_dict()[key], value), key


def test_training_from_a_model_starts_at_its_weights(trained_run: Path, dataset_dir: Path, tmp_path: Path) -> None:
    """One step (learning rate 1e-4) from the trained model stays next to it; a fresh start does not."""
    start = GANimation.load(trained_run)
    wider = start.config.generator_channels + 4
    main(["train", "--data", str(dataset_dir), "-o", str(tmp_path / "grown"), "--preset", "smoke",
          "--init", str(trained_run), "--set", f"model.generator_channels={wider}", "--set", "run.device=cpu",
          "--steps", "1", "--no-progress"])
    assert f"init_from: {trained_run}" in (tmp_path / "grown" / "config.yaml").read_text()
    train(smoke_config(dataset_dir, tmp_path / "fresh", 1, f"model.generator_channels={wider}"), show_progress=False)
    grown, fresh = GANimation.load(tmp_path / "grown"), GANimation.load(tmp_path / "fresh")
    assert grown.config.generator_channels == wider
    images, aus = inputs()
    with torch.no_grad():
        reference = start.generator(images, aus).image
        grown_gap = (grown.generator(images, aus).image - reference).abs().mean().item()
        fresh_gap = (fresh.generator(images, aus).image - reference).abs().mean().item()
    assert grown_gap < 0.02 < fresh_gap


def test_resuming_prefers_the_runs_own_checkpoint(trained_run: Path, dataset_dir: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ganimation")
    run = tmp_path / "run"
    train(smoke_config(dataset_dir, run, 2), show_progress=False)
    # The init file does not exist, so reading it would fail: the run's checkpoint is used instead.
    config = smoke_config(dataset_dir, run, 3, f"run.init_from={tmp_path / 'absent.safetensors'}")
    train(config, resume=True, show_progress=False)
    assert "resumed from" in caplog.text
