"""Generator and critic: parameter counts, shapes, ranges, the attention composition, init."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ganimation.config import ModelConfig, build_config
from ganimation.networks import (
    Discriminator,
    Generator,
    build_networks,
    count_parameters,
    init_weights,
    tile_aus,
)


@pytest.fixture(scope="module")
def paper_networks() -> tuple[Generator, Discriminator]:
    """The paper-sized networks (~53M parameters), built once for this module."""
    torch.manual_seed(0)
    return build_networks(ModelConfig())


@pytest.fixture
def smoke_networks() -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    return build_networks(build_config("smoke").model)


def test_paper_parameter_counts(paper_networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = paper_networks
    assert count_parameters(generator) == 8_471_296
    assert count_parameters(discriminator) == 44_860_352


def test_replication_variant_parameter_count() -> None:
    generator = Generator(ModelConfig(norm_affine=False, generator_conv_bias=True))
    assert count_parameters(generator) == 8_467_584
    norms = [m for m in generator.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(m.weight is None for m in norms)
    convs = [m for m in generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    # Every conv but the two heads has a bias.
    assert sum(m.bias is not None for m in convs) == len(convs) - 2
    assert generator.colour_head[0].bias is None and generator.attention_head[0].bias is None


def test_paper_networks_at_128(paper_networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = paper_networks
    torch.manual_seed(1)
    images = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        output = generator(images, torch.rand(1, 17))
        critic = discriminator(output.image)
    assert output.image.shape == (1, 3, 128, 128)
    assert output.attention.shape == (1, 1, 128, 128)
    assert output.colour.shape == (1, 3, 128, 128)
    assert output.image.min() >= -1 and output.image.max() <= 1
    assert output.attention.min() >= 0 and output.attention.max() <= 1
    assert critic.realness.shape == (1, 1, 2, 2)
    assert critic.aus.shape == (1, 17)
    # D_y is a single conv whose kernel covers the whole 2x2 final map: 128 / 2^6.
    assert discriminator.au_head.kernel_size == (2, 2)


@pytest.mark.parametrize(("size", "layers", "final"), [(64, 5, 2), (64, 4, 4), (32, 3, 4), (32, 2, 8), (16, 2, 4)])
def test_small_configs(size: int, layers: int, final: int) -> None:
    config = ModelConfig(image_size=size, generator_channels=4, generator_residual_blocks=1,
                         discriminator_channels=4, discriminator_layers=layers)
    torch.manual_seed(0)
    generator, discriminator = build_networks(config)
    images = torch.rand(3, 3, size, size) * 2 - 1
    with torch.no_grad():
        output = generator(images, torch.rand(3, 17))
        critic = discriminator(output.image)
    assert output.image.shape == (3, 3, size, size)
    assert output.attention.shape == (3, 1, size, size)
    assert output.colour.shape == (3, 3, size, size)
    assert -1 <= output.colour.min() and output.colour.max() <= 1
    assert 0 <= output.attention.min() and output.attention.max() <= 1
    assert critic.realness.shape == (3, 1, final, final)
    assert critic.aus.shape == (3, 17)
    assert discriminator.au_head.kernel_size == (final, final) == (size // 2 ** layers,) * 2


def test_cpu64_preset_networks() -> None:
    torch.manual_seed(0)
    generator, discriminator = build_networks(build_config("cpu64").model)
    with torch.no_grad():
        output = generator(torch.zeros(2, 3, 64, 64), torch.full((2, 17), 0.5))
        critic = discriminator(output.image)
    assert output.image.shape == (2, 3, 64, 64)
    assert critic.aus.shape == (2, 17) and critic.realness.shape == (2, 1, 2, 2)


def test_custom_au_count() -> None:
    config = ModelConfig(image_size=16, num_aus=5, generator_channels=4, generator_residual_blocks=1,
                         discriminator_channels=4, discriminator_layers=2)
    generator, discriminator = build_networks(config)
    assert generator.encoder[0][0].in_channels == 3 + 5
    with torch.no_grad():
        assert discriminator(generator(torch.zeros(2, 3, 16, 16), torch.zeros(2, 5)).image).aus.shape == (2, 5)


def test_tile_aus() -> None:
    aus = torch.tensor([[0.1, 0.9], [0.5, 0.0]])
    tiled = tile_aus(aus, 3, 4)
    assert tiled.shape == (2, 2, 3, 4)
    assert torch.equal(tiled[1, 0], torch.full((3, 4), 0.5))
    assert torch.equal(tiled[0, 1], torch.full((3, 4), 0.9))


class _Fixed(nn.Module):
    """A head that ignores its input and returns a fixed tensor."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, features: Tensor) -> Tensor:
        return self.value


def test_composition_formula(smoke_networks: tuple[Generator, Discriminator]) -> None:
    generator, _ = smoke_networks
    torch.manual_seed(3)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    attention = torch.rand(2, 1, 32, 32)
    colour = torch.rand(2, 3, 32, 32) * 2 - 1
    generator.attention_head = _Fixed(attention)
    generator.colour_head = _Fixed(colour)
    output = generator(images, torch.rand(2, 17))
    assert torch.equal(output.attention, attention)
    assert torch.equal(output.colour, colour)
    assert torch.equal(output.image, attention * images + (1 - attention) * colour)
    # The extremes: A = 1 keeps the input, A = 0 paints the colour mask.
    generator.attention_head = _Fixed(torch.ones(2, 1, 32, 32))
    assert torch.equal(generator(images, torch.rand(2, 17)).image, images)
    generator.attention_head = _Fixed(torch.zeros(2, 1, 32, 32))
    assert torch.equal(generator(images, torch.rand(2, 17)).image, colour)


def test_real_heads_compose(smoke_networks: tuple[Generator, Discriminator]) -> None:
    generator, _ = smoke_networks
    torch.manual_seed(4)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        output = generator(images, torch.rand(2, 17))
    expected = output.attention * images + (1 - output.attention) * output.colour
    torch.testing.assert_close(output.image, expected, rtol=0, atol=1e-6)
    assert 0.05 < output.attention.mean() < 0.95  # a fresh sigmoid head is not saturated


def test_masks_keep_their_gradient_under_bfloat16_autocast() -> None:
    # An attention logit of ~10 gives A = 0.99995: bfloat16 would round it to exactly 1, where the
    # sigmoid's gradient A (1 - A) is exactly 0 and the pixel could never learn to change.
    torch.manual_seed(8)
    generator, _ = build_networks(build_config("smoke").model)
    images, aus = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 17)
    head = generator.attention_head[0]
    with torch.no_grad():
        logits = head(generator.decoder(generator.bottleneck(generator.encoder(
            torch.cat([images, tile_aus(aus, 32, 32)], dim=1)))))
        head.weight.mul_(10.0 / logits.abs().median())  # most logits now 3-20
    with torch.no_grad():
        kept = (generator(images, aus).attention > 0.999).float()  # the pixels bfloat16 would freeze
    assert 0.1 < kept.mean() < 0.9
    gradients = []
    for bf16 in (False, True):
        generator.zero_grad()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            output = generator(images, aus)
        assert output.attention.dtype == output.colour.dtype == torch.float32
        (output.image.float() * kept).sum().backward()
        gradients.append(head.weight.grad.clone())
    assert gradients[0].abs().sum() > 0
    # The trunk still runs in bfloat16, so the two agree to its precision, not exactly.
    assert (gradients[1] - gradients[0]).norm() < 0.15 * gradients[0].norm()


def test_without_attention() -> None:
    torch.manual_seed(0)
    generator, _ = build_networks(build_config("smoke", overrides=["model.use_attention=false"]).model)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        output = generator(images, torch.rand(2, 17))
    assert torch.equal(output.image, output.colour)
    assert output.attention.shape == (2, 1, 32, 32)
    assert torch.count_nonzero(output.attention) == 0
    assert not torch.equal(output.image, images)


def test_scale_attention_logits_multiplies_every_logit_and_nothing_else(
        smoke_networks: tuple[Generator, Discriminator]) -> None:
    generator, _ = smoke_networks
    images, aus = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 17)
    with torch.no_grad():
        before = generator(images, aus)
        generator.scale_attention_logits(0.5)
        after = generator(images, aus)
    logits_before = torch.logit(before.attention.double())
    assert torch.allclose(torch.logit(after.attention.double()), 0.5 * logits_before, atol=1e-4)
    assert logits_before.abs().max() > 0.01  # the check above is not 0 = 0.5 * 0
    assert torch.equal(after.colour, before.colour)
    # Softer mask, more of the colour mask in the output: A moves towards 0.5 everywhere.
    assert ((after.attention - 0.5).abs() <= (before.attention - 0.5).abs() + 1e-6).all()


@pytest.mark.parametrize("factor", [0.0, -1.0, float("nan"), float("inf")])
def test_scale_attention_logits_refuses_a_bad_factor(smoke_networks: tuple[Generator, Discriminator],
                                                     factor: float) -> None:
    generator, _ = smoke_networks
    with pytest.raises(ValueError, match="positive number"):
        generator.scale_attention_logits(factor)


def test_scale_attention_logits_needs_an_attention_mask() -> None:
    generator, _ = build_networks(build_config("smoke", overrides=["model.use_attention=false"]).model)
    with pytest.raises(ValueError, match="no attention mask"):
        generator.scale_attention_logits(0.5)


def test_aus_condition_the_output(smoke_networks: tuple[Generator, Discriminator]) -> None:
    generator, _ = smoke_networks
    torch.manual_seed(5)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        neutral = generator(image, torch.zeros(1, 17))
        smiling = generator(image, torch.eye(17)[8:9])  # AU12 = 1
        neutral_again = generator(image, torch.zeros(1, 17))
    assert torch.equal(neutral.image, neutral_again.image)  # deterministic in eval and train alike
    difference = (neutral.image - smiling.image).abs().max().item()
    assert difference > 1e-4
    assert (neutral.attention - smiling.attention).abs().max().item() > 1e-5


def test_batch_items_are_independent(smoke_networks: tuple[Generator, Discriminator]) -> None:
    # InstanceNorm, not BatchNorm: an image's edit may not depend on its batch mates.
    generator, _ = smoke_networks
    torch.manual_seed(6)
    images, aus = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 17)
    with torch.no_grad():
        together = generator(images, aus).image
        alone = generator(images[1:2], aus[1:2]).image
    torch.testing.assert_close(together[1:2], alone, rtol=0, atol=1e-5)


def test_gradients_reach_every_generator_parameter(smoke_networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = smoke_networks
    torch.manual_seed(7)
    output = generator(torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 17))
    critic = discriminator(output.image)
    (critic.realness.mean() + critic.aus.pow(2).mean() + output.attention.mean()).backward()
    for name, parameter in list(generator.named_parameters()) + list(discriminator.named_parameters()):
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert generator.encoder[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("images", "aus", "message"), [
    (torch.zeros(2, 4, 32, 32), torch.zeros(2, 17), r"\(2, 4, 32, 32\)"),
    (torch.zeros(2, 1, 32, 32), torch.zeros(2, 17), r"\(2, 1, 32, 32\)"),
    (torch.zeros(2, 3, 32, 32), torch.zeros(2, 16), r"AUs \(B, 17\).*\(2, 16\)"),
    (torch.zeros(2, 3, 32, 32), torch.zeros(3, 17), r"\(3, 17\)"),
    (torch.zeros(2, 3, 32, 32), torch.zeros(17), r"\(17,\)"),
])
def test_generator_rejects_bad_shapes(smoke_networks: tuple[Generator, Discriminator], images: Tensor,
                                      aus: Tensor, message: str) -> None:
    generator, _ = smoke_networks
    with pytest.raises(ValueError, match=message):
        generator(images, aus)


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 3, 32, 16), (2, 1, 32, 32), (2, 4, 32, 32)])
def test_discriminator_rejects_bad_shapes(smoke_networks: tuple[Generator, Discriminator],
                                          shape: tuple[int, ...]) -> None:
    _, discriminator = smoke_networks
    with pytest.raises(ValueError, match=r"expects images \(B, 3, 32, 32\)"):
        discriminator(torch.zeros(shape))


def test_generator_rejects_3d_input(smoke_networks: tuple[Generator, Discriminator]) -> None:
    generator, _ = smoke_networks
    with pytest.raises(ValueError):
        generator(torch.zeros(3, 32, 32), torch.zeros(1, 17))


def test_init_normal_002(paper_networks: tuple[Generator, Discriminator]) -> None:
    generator, discriminator = paper_networks
    # Every conv of the generator, and the critic's first layers (its big last ones add nothing).
    layers = [m for m in generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    layers += [m for m in discriminator.trunk if isinstance(m, nn.Conv2d)][:4] + [discriminator.realness_head]
    count = sum(m.weight.numel() for m in layers)
    total = sum(m.weight.detach().double().sum().item() for m in layers)
    squares = sum(m.weight.detach().double().pow(2).sum().item() for m in layers)
    assert count > 1_000_000
    assert abs(total / count) < 5e-4
    assert abs((squares / count) ** 0.5 - 0.02) < 5e-4
    for network in paper_networks:
        for module in network.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.bias is not None:
                assert torch.count_nonzero(module.bias) == 0
            if isinstance(module, nn.InstanceNorm2d) and module.affine:
                assert torch.equal(module.weight, torch.ones_like(module.weight))
                assert torch.count_nonzero(module.bias) == 0


def test_init_weights_custom_std() -> None:
    torch.manual_seed(0)
    generator = Generator(ModelConfig(image_size=32, generator_channels=16, generator_residual_blocks=2))
    init_weights(generator, std=0.1)
    weights = torch.cat([m.weight.detach().flatten() for m in generator.modules() if isinstance(m, nn.Conv2d)])
    assert abs(weights.std().item() - 0.1) < 0.005


def test_build_networks_without_init_differs_from_init() -> None:
    torch.manual_seed(0)
    plain, _ = build_networks(build_config("smoke").model, initialise=False)
    weights = plain.bottleneck[0].body[0].weight.detach()  # 32 -> 32 channels, 3x3: fan-in 288
    # PyTorch's default, Kaiming uniform with bound 1/sqrt(fan_in): std = 1/sqrt(3 * 288) ~ 0.034.
    assert abs(weights.std().item() - 1 / (3 * 288) ** 0.5) < 0.003
    assert weights.abs().max().item() <= 1 / 288 ** 0.5
    torch.manual_seed(0)
    initialised, _ = build_networks(build_config("smoke").model)
    assert abs(initialised.bottleneck[0].body[0].weight.std().item() - 0.02) < 0.002


def test_build_networks_validates() -> None:
    from ganimation.config import ConfigError

    with pytest.raises(ConfigError, match="divisible"):
        build_networks(ModelConfig(image_size=100))


def test_resize_upsampling_parameter_count() -> None:
    # Each decoder step trades a 4x4 transposed kernel for a 3x3 one: 16 - 9 = 7 weights per
    # input-output channel pair, over 4w*2w + 2w*w = 10 w^2 pairs.
    resize = Generator(ModelConfig(upsampling="resize"))
    assert count_parameters(resize) == 8_471_296 - 7 * 10 * 64 * 64
    assert not any(isinstance(layer, nn.ConvTranspose2d) for layer in resize.modules())


def test_resize_upsampling_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    generator, _ = build_networks(build_config("smoke", overrides=["model.upsampling=resize"]).model)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    output = generator(images, torch.rand(2, 17))
    assert output.image.shape == (2, 3, 32, 32) and output.attention.shape == (2, 1, 32, 32)
    output.image.mean().backward()
    assert all(parameter.grad is not None for parameter in generator.parameters())


@pytest.mark.parametrize(("upsampling", "checkerboard"), [("transposed", True), ("resize", False)])
def test_decoder_checkerboard(upsampling: str, checkerboard: bool) -> None:
    """A constant feature map decodes to a constant image with resize-convolution, but to the
    period-2 checkerboard with transposed convolutions (Odena et al. 2016)."""
    torch.manual_seed(0)
    generator, _ = build_networks(ModelConfig(image_size=32, generator_channels=8, generator_residual_blocks=1,
                                              discriminator_layers=5, upsampling=upsampling))
    with torch.no_grad():
        decoded = generator.decoder(torch.ones(1, 32, 8, 8))  # (1, 8, 32, 32)
    interior = decoded[..., 4:-4, 4:-4]
    spread = (interior - interior.mean(dim=(-2, -1), keepdim=True)).abs().amax().item()
    assert (spread > 1e-3) == checkerboard, spread


def test_unknown_upsampling_rejected() -> None:
    from ganimation.config import ConfigError

    with pytest.raises(ConfigError, match="model.upsampling must be one of transposed, resize; got 'bilinear'"):
        build_networks(ModelConfig(upsampling="bilinear"))
