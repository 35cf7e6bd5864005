"""Importing the authors' GANimation weights and the 2018 replication's (ganimation.convert).

The reference networks below are written in each foreign code base's own structure (the same
``nn.Sequential`` positions, so their ``state_dict`` keys are exactly those of the published
files); they load the foreign state dict with ``strict=True`` and their outputs are compared to
our networks holding the converted weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganimation.checkpoint import CheckpointError, read_model_file
from ganimation.cli import main as cli_main
from ganimation.config import ModelConfig
from ganimation.convert import (
    build_foreign_networks, convert_checkpoint, find_discriminator_file, load_foreign_checkpoint,
)
from ganimation.inference import GANimation
from ganimation.networks import Generator, count_parameters


# ----------------------------------------------------------------------------- the authors' code


class AuthorsResidualBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), nn.InstanceNorm2d(dim, affine=True), nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), nn.InstanceNorm2d(dim, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class AuthorsGenerator(nn.Module):
    def __init__(self, conv_dim: int, c_dim: int, repeat_num: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3 + c_dim, conv_dim, 7, 1, 3, bias=False),
                                   nn.InstanceNorm2d(conv_dim, affine=True), nn.ReLU(inplace=True)]
        dim = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), nn.InstanceNorm2d(dim * 2, affine=True),
                       nn.ReLU(inplace=True)]
            dim *= 2
        layers += [AuthorsResidualBlock(dim) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False),
                       nn.InstanceNorm2d(dim // 2, affine=True), nn.ReLU(inplace=True)]
            dim //= 2
        self.main = nn.Sequential(*layers)
        self.img_reg = nn.Sequential(nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh())
        self.attetion_reg = nn.Sequential(nn.Conv2d(dim, 1, 7, 1, 3, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = c[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        features = self.main(torch.cat([x, c], dim=1))
        return self.attetion_reg(features), self.img_reg(features)


class AuthorsDiscriminator(nn.Module):
    def __init__(self, image_size: int, conv_dim: int, c_dim: int, repeat_num: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
        dim = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
            dim *= 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(dim, 1, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(dim, c_dim, image_size // 2 ** repeat_num, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        return self.conv1(h), self.conv2(h).flatten(1)


# ----------------------------------------------------------------------------- the 2018 replication


class ReplicationResnetBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=True), nn.InstanceNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ReplicationGenerator(nn.Module):
    def __init__(self, img_nc: int, aus_nc: int, ngf: int, n_blocks: int) -> None:
        super().__init__()
        model: list[nn.Module] = [nn.Conv2d(img_nc + aus_nc, ngf, 7, 1, 3, bias=True), nn.InstanceNorm2d(ngf),
                                  nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 4, 2, 1, bias=True), nn.InstanceNorm2d(ngf * mult * 2),
                      nn.ReLU(True)]
        model += [ReplicationResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=True),
                      nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
        self.model = nn.Sequential(*model)
        self.color_top = nn.Sequential(nn.Conv2d(ngf, img_nc, 7, 1, 3, bias=False), nn.Tanh())
        self.au_top = nn.Sequential(nn.Conv2d(ngf, 1, 7, 1, 3, bias=False), nn.Sigmoid())

    def forward(self, img: torch.Tensor, au: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sparse_au = au[:, :, None, None].expand(-1, -1, img.shape[2], img.shape[3])
        embed = self.model(torch.cat([img, sparse_au], dim=1))
        return self.au_top(embed), self.color_top(embed)


class ReplicationDiscriminator(nn.Module):
    def __init__(self, input_nc: int, aus_nc: int, image_size: int, ndf: int, n_layers: int) -> None:
        super().__init__()
        model: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1, bias=True), nn.LeakyReLU(0.01, True)]
        dim = ndf
        for _ in range(1, n_layers):
            model += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=True), nn.LeakyReLU(0.01, True)]
            dim *= 2
        self.model = nn.Sequential(*model)
        self.dis_top = nn.Conv2d(dim, 1, 3, 1, 1, bias=False)
        self.aus_top = nn.Conv2d(dim, aus_nc, image_size // 2 ** n_layers, 1, bias=False)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embed = self.model(img)
        return self.dis_top(embed), self.aus_top(embed).flatten(1)


# ----------------------------------------------------------------------------- helpers

WIDTH, AUS, SIZE, D_WIDTH, D_LAYERS = 4, 5, 32, 4, 3


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter (norm scales and biases included) to distinct random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module.eval()


def authors_generator_keys(blocks: int) -> list[str]:
    """The published key names, written out by hand."""
    keys = ["main.0.weight", "main.1.weight", "main.1.bias", "main.3.weight", "main.4.weight", "main.4.bias",
            "main.6.weight", "main.7.weight", "main.7.bias"]
    for index in range(9, 9 + blocks):
        keys += [f"main.{index}.main.{i}.{p}" for i, p in
                 ((0, "weight"), (1, "weight"), (1, "bias"), (3, "weight"), (4, "weight"), (4, "bias"))]
    up = 9 + blocks
    keys += [f"main.{up}.weight", f"main.{up + 1}.weight", f"main.{up + 1}.bias",
             f"main.{up + 3}.weight", f"main.{up + 4}.weight", f"main.{up + 4}.bias",
             "img_reg.0.weight", "attetion_reg.0.weight"]
    return keys


def replication_generator_keys(blocks: int) -> list[str]:
    keys = [f"model.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    for index in range(9, 9 + blocks):
        keys += [f"model.{index}.conv_block.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")]
    up = 9 + blocks
    keys += [f"model.{i}.{p}" for i in (up, up + 3) for p in ("weight", "bias")]
    return keys + ["color_top.0.weight", "au_top.0.weight"]


def critic_keys(trunk: str, realness: str, au: str, layers: int) -> list[str]:
    return [f"{trunk}.{2 * i}.{p}" for i in range(layers) for p in ("weight", "bias")] + [
        f"{realness}.weight", f"{au}.weight"]


def our_generator_key(layout: str, key: str, blocks: int) -> str:
    """Where a foreign generator key must land, spelled out independently of convert.py."""
    if key.startswith(("img_reg.", "color_top.")):
        return "colour_head.0.weight"
    if key.startswith(("attetion_reg.", "au_top.")):
        return "attention_head.0.weight"
    parts = key.split(".")
    index, rest = int(parts[1]), parts[2:]
    if 9 <= index < 9 + blocks:
        return ".".join([f"bottleneck.{index - 9}.body", *rest[1:]])
    stage = {0: "encoder.0", 3: "encoder.1", 6: "encoder.2", 9 + blocks: "decoder.0", 12 + blocks: "decoder.1"}
    start = 0 if index < 9 else 9 + blocks  # encoder from 0, decoder after the blocks; conv, norm, ReLU
    base = start + (index - start) // 3 * 3
    sub = index - base
    return ".".join([stage[base], str(sub), *rest])


def our_critic_key(key: str) -> str:
    head = {"conv1": "realness_head", "dis_top": "realness_head", "conv2": "au_head", "aus_top": "au_head"}
    first, *rest = key.split(".")
    return ".".join([head[first], *rest]) if first in head else ".".join(["trunk", *rest])


def make_foreign(layout: str, folder: Path, *, blocks: int = 6, epoch: int = 7,
                 width: int = WIDTH, aus: int = AUS, seed: int = 0) -> tuple[nn.Module, nn.Module, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "authors":
        generator = randomise(AuthorsGenerator(width, aus, blocks), seed)
        critic = randomise(AuthorsDiscriminator(SIZE, D_WIDTH, aus, D_LAYERS), seed + 1)
        g_path, d_path = folder / f"net_epoch_{epoch}_id_G.pth", folder / f"net_epoch_{epoch}_id_D.pth"
        assert list(generator.state_dict()) == authors_generator_keys(blocks)
        assert list(critic.state_dict()) == critic_keys("main", "conv1", "conv2", D_LAYERS)
    else:
        generator = randomise(ReplicationGenerator(3, aus, width, blocks), seed)
        critic = randomise(ReplicationDiscriminator(3, aus, SIZE, D_WIDTH, D_LAYERS), seed + 1)
        g_path, d_path = folder / f"{epoch}_net_gen.pth", folder / f"{epoch}_net_dis.pth"
        assert list(generator.state_dict()) == replication_generator_keys(blocks)
        assert list(critic.state_dict()) == critic_keys("model", "dis_top", "aus_top", D_LAYERS)
    torch.save(generator.state_dict(), g_path)
    torch.save(critic.state_dict(), d_path)
    return generator, critic, g_path, d_path


def fixed_inputs(aus: int = AUS, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    images = torch.rand(3, 3, size, size, generator=generator) * 2 - 1
    targets = torch.rand(3, aus, generator=generator)
    return images, targets


def assert_same_outputs(model: GANimation, generator: nn.Module, critic: nn.Module | None) -> None:
    images, targets = fixed_inputs(model.config.num_aus, model.config.image_size)
    with torch.no_grad():
        attention, colour = generator(images, targets)
        expected = attention * images + (1 - attention) * colour
        ours = model.generator(images, targets)
        torch.testing.assert_close(ours.attention, attention, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.colour, colour, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.image, expected, atol=1e-5, rtol=0)
        if critic is not None:
            assert model.discriminator is not None
            realness, aus = critic(images)
            theirs = model.discriminator(images)
            torch.testing.assert_close(theirs.realness, realness, atol=1e-5, rtol=0)
            torch.testing.assert_close(theirs.aus, aus, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("layout", ["authors", "replication"])
@pytest.mark.parametrize("blocks", [6, 2])
def test_convert_maps_every_tensor_and_matches_the_reference(tmp_path: Path, layout: str, blocks: int) -> None:
    generator, critic, g_path, d_path = make_foreign(layout, tmp_path / "foreign", blocks=blocks)
    assert find_discriminator_file(g_path) == d_path
    output = convert_checkpoint(g_path, tmp_path / "model.safetensors")
    config, tensors, extra = read_model_file(output)
    assert config == ModelConfig(image_size=SIZE, num_aus=AUS, generator_channels=WIDTH,
                                 generator_residual_blocks=blocks, discriminator_channels=D_WIDTH,
                                 discriminator_layers=D_LAYERS, use_attention=True,
                                 norm_affine=layout == "authors", generator_conv_bias=layout == "replication")
    assert extra["converted_from"] == g_path.name and extra["converted_critic"] is True
    # Every foreign tensor lands at its place, values equal; nothing else is in the file.
    expected = {f"generator.{our_generator_key(layout, key, blocks)}": value
                for key, value in generator.state_dict().items()}
    expected.update({f"discriminator.{our_critic_key(key)}": value for key, value in critic.state_dict().items()})
    assert sorted(tensors) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(tensors[key], value), key
    model = GANimation.load(output, device="cpu")
    assert_same_outputs(model, generator, critic)


def test_replication_at_full_size_has_the_published_parameter_count(tmp_path: Path) -> None:
    reference = randomise(ReplicationGenerator(3, 17, 64, 6), 5)
    assert count_parameters(reference) == 8_467_584
    path = tmp_path / "30_net_gen.pth"
    torch.save(reference.state_dict(), path)
    config, generator, critic = build_foreign_networks(path)
    assert critic is None
    assert config == ModelConfig(norm_affine=False, generator_conv_bias=True)  # the paper's sizes, 128 px
    assert count_parameters(generator) == 8_467_584 == count_parameters(Generator(config))
    images, targets = fixed_inputs(17, 64)
    with torch.no_grad():
        attention, colour = reference(images, targets)
        ours = generator.eval()(images, targets)
    torch.testing.assert_close(ours.attention, attention, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.image, attention * images + (1 - attention) * colour, atol=1e-5, rtol=0)


def test_dataparallel_prefix_running_stats_and_wrapped_dict(tmp_path: Path) -> None:
    generator, critic, _, _ = make_foreign("authors", tmp_path / "ref")
    state = {f"module.{key}": value for key, value in generator.state_dict().items()}
    for norm in [key[: -len(".weight")] for key in state if key.endswith(".weight") and state[key].ndim == 1]:
        channels = state[f"{norm}.weight"].shape[0]
        state[f"{norm}.running_mean"] = torch.full((channels,), 3.0)
        state[f"{norm}.running_var"] = torch.full((channels,), 5.0)
        state[f"{norm}.num_batches_tracked"] = torch.tensor(11)
    folder = tmp_path / "dp"
    folder.mkdir()
    torch.save({"state_dict": state, "epoch": 3}, folder / "net_epoch_3_id_G.pth")
    torch.save({f"module.{key}": value for key, value in critic.state_dict().items()}, folder / "net_epoch_3_id_D.pth")
    model = GANimation.load(folder / "net_epoch_3_id_G.pth", device="cpu")
    assert model.discriminator is not None and model.config.norm_affine
    assert_same_outputs(model, generator, critic)


def test_legacy_serialisation_and_critic_given_as_source(tmp_path: Path) -> None:
    """Files in the pre-1.6 (non-zip) format; a critic path given as SRC finds its generator."""
    generator, critic, g_path, d_path = make_foreign("replication", tmp_path, epoch=12)
    torch.save(generator.state_dict(), g_path, _use_new_zipfile_serialization=False)
    torch.save(critic.state_dict(), d_path, _use_new_zipfile_serialization=False)
    config, tensors = load_foreign_checkpoint(d_path)
    assert config.image_size == SIZE and any(key.startswith("discriminator.") for key in tensors)
    model = GANimation.load(g_path, device="cpu")
    assert_same_outputs(model, generator, critic)


def test_generator_without_critic_uses_the_default_or_given_size(tmp_path: Path) -> None:
    generator, _, g_path, d_path = make_foreign("authors", tmp_path)
    d_path.unlink()
    config, tensors = load_foreign_checkpoint(g_path)
    assert config.image_size == 128 and not any(key.startswith("discriminator.") for key in tensors)
    config, _ = load_foreign_checkpoint(g_path, image_size=SIZE)
    assert config.image_size == SIZE and config.discriminator_layers == 5
    model = GANimation.load(g_path, device="cpu")
    assert model.discriminator is None
    images, targets = fixed_inputs()
    with torch.no_grad():
        attention, _ = generator(images, targets)
        torch.testing.assert_close(model.generator(images, targets).attention, attention, atol=1e-5, rtol=0)


def test_unknown_layout_lists_the_keys_that_did_not_match(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"encoder.conv.weight": torch.zeros(2, 2), "decoder.fc.bias": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"other\.pth.*known layout.*decoder\.fc\.bias, encoder\.conv\.weight"):
        load_foreign_checkpoint(path)
    generator, _, g_path, d_path = make_foreign("authors", tmp_path / "extra")
    d_path.unlink()
    state = generator.state_dict()
    state["main.21.weight"] = torch.zeros(3)
    state["attention_extra.0.weight"] = torch.zeros(3)
    torch.save(state, g_path)
    with pytest.raises(CheckpointError, match=r"did not match: attention_extra\.0\.weight, main\.21\.weight"):
        load_foreign_checkpoint(g_path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_foreign_checkpoint(path)


def test_mismatched_critic_and_bad_files_are_refused(tmp_path: Path) -> None:
    _, _, g_path, _ = make_foreign("authors", tmp_path / "a")
    _, other_critic, _, _ = make_foreign("authors", tmp_path / "b", aus=7)
    other = tmp_path / "b" / "critic.pth"
    torch.save(other_critic.state_dict(), other)
    with pytest.raises(CheckpointError, match="critic regresses 7 AUs but the generator .* takes 5"):
        load_foreign_checkpoint(g_path, other)
    truncated = tmp_path / "net_epoch_1_id_G.pth"
    truncated.write_bytes(g_path.read_bytes()[: g_path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"net_epoch_1_id_G\.pth: truncated"):
        load_foreign_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_foreign_checkpoint(tmp_path / "missing.pth")


@pytest.mark.parametrize("content, reason", [
    (b"", r"empty\.pth: truncated or not a PyTorch checkpoint \(EOFError\)$"),
    (bytes(range(256)) * 40, r"noise\.pth: truncated or not a PyTorch checkpoint \(UnpicklingError: Unsupported"),
])
def test_empty_or_random_files_are_not_called_pickled_objects(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / ("empty.pth" if not content else "noise.pth")
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as caught:
        load_foreign_checkpoint(path)
    assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)


def test_a_pickled_object_is_refused_by_name_and_not_unpickled(tmp_path: Path) -> None:
    import argparse
    path = tmp_path / "with_options.pth"
    torch.save({"main.0.weight": torch.zeros(1), "opt": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(CheckpointError, match=r"with_options\.pth: holds more than weights \(a pickled "
                                              r"argparse\.Namespace"):
        load_foreign_checkpoint(path)


def test_cli_convert_half(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generator, critic, g_path, d_path = make_foreign("replication", tmp_path / "foreign")
    moved = tmp_path / "elsewhere" / "critic.pth"
    moved.parent.mkdir()
    d_path.rename(moved)
    output = tmp_path / "out" / "model.safetensors"
    assert cli_main(["convert", str(g_path), "-o", str(output), "--discriminator", str(moved), "--half"]) == 0
    assert "with critic, float16" in capsys.readouterr().out
    _, tensors, _ = read_model_file(output)
    assert all(value.dtype == torch.float16 for value in tensors.values())
    model = GANimation.load(output, device="cpu")
    images, targets = fixed_inputs()
    with torch.no_grad():
        attention, colour = generator(images, targets)
        ours = model.generator(images, targets)
    torch.testing.assert_close(ours.attention, attention, atol=5e-3, rtol=0)  # float16 weights
    assert model.estimate_aus(np.zeros((SIZE, SIZE, 3), dtype=np.uint8)).shape == (AUS,)
    # A bad source is a one-line error and exit status 2.
    assert cli_main(["convert", str(tmp_path / "nothing.pth"), "-o", str(output)]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_own_model_resaved_as_float16(tmp_path: Path) -> None:
    """A finished run becomes a small float16 file that computes what the run's model computes."""
    from safetensors import safe_open

    from ganimation.checkpoint import save_model_file
    from ganimation.config import ModelConfig
    from ganimation.convert import convert_checkpoint
    from ganimation.inference import GANimation
    from ganimation.networks import build_networks

    config = ModelConfig(image_size=32, generator_channels=8, generator_residual_blocks=1,
                         discriminator_channels=8, discriminator_layers=3)
    generator, critic = build_networks(config)
    run = tmp_path / "run"
    save_model_file(run / "model.safetensors", generator, critic, config)
    half = convert_checkpoint(run, tmp_path / "half.safetensors", half=True)
    with safe_open(str(half), framework="pt") as handle:
        assert {handle.get_tensor(key).dtype for key in handle.keys()} == {torch.float16}
    full_model, half_model = GANimation.load(run), GANimation.load(half)
    assert half_model.config == config
    face = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    aus = np.linspace(0, 1, 17).astype(np.float32)
    difference = np.abs(full_model.animate(face, aus).image.astype(int) - half_model.animate(face, aus).image.astype(int))
    assert difference.max() <= 2


def test_convert_attention_scale_scales_the_head_and_records_it(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from ganimation.checkpoint import read_model_file, save_model_file
    from ganimation.config import ModelConfig
    from ganimation.networks import build_networks

    config = ModelConfig(image_size=32, generator_channels=8, generator_residual_blocks=1,
                         discriminator_channels=8, discriminator_layers=3)
    generator, critic = build_networks(config)
    source = save_model_file(tmp_path / "model.safetensors", generator, critic, config)
    once, twice = tmp_path / "once.safetensors", tmp_path / "twice.safetensors"
    assert cli_main(["convert", str(source), "-o", str(once), "--attention-scale", "0.5"]) == 0
    assert cli_main(["convert", str(once), "-o", str(twice), "--attention-scale", "0.8"]) == 0
    _, original, _ = read_model_file(source)
    _, scaled, extra = read_model_file(twice)
    head = "generator.attention_head.0.weight"
    assert torch.allclose(scaled[head], 0.4 * original[head])
    assert all(torch.equal(scaled[key], original[key]) for key in original if key != head)
    assert extra["attention_scale"] == pytest.approx(0.4)
    capsys.readouterr()
    assert cli_main(["convert", str(source), "-o", str(tmp_path / "bad.safetensors"), "--attention-scale", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "positive number" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "bad.safetensors").exists()


def test_foreign_weights_are_checked_like_ours(tmp_path: Path) -> None:
    """NaN weights in an authors' .pth loaded silently (and animated black faces)."""
    generator, critic, g_path, _ = make_foreign("authors", tmp_path)
    state = generator.state_dict()
    name = next(key for key, value in state.items() if value.is_floating_point() and value.dim() == 4)
    state[name] = torch.full_like(state[name], float("nan"))
    torch.save(state, g_path)
    with pytest.raises(CheckpointError, match="holds NaN or infinite values"):
        load_foreign_checkpoint(g_path)
    with pytest.raises(CheckpointError, match="holds NaN or infinite values"):
        GANimation.load(g_path, device="cpu")
