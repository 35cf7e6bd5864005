"""GANimation's networks (Pumarola et al., ECCV 2018, Sec. 4.1 and Fig. 3).

* :class:`Generator` ``G(I_yo | y_f)``: a CycleGAN-style encoder / residual bottleneck / decoder
  fed with the image concatenated with the target AUs tiled over every pixel, ending in two
  parallel heads, the colour mask ``C`` (tanh) and the attention mask ``A`` (sigmoid). The
  output is ``I_yf = A * I_yo + (1 - A) * C``: where ``A`` is near 1 the input pixel is kept.
* :class:`Discriminator`: a PatchGAN critic without normalisation (WGAN-GP forbids batch
  statistics in the critic) with two heads, the realness map ``D_I`` and the AU regressor ``D_y``.

With the paper's defaults the generator has 8,471,296 parameters and the critic 44,860,352.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ganimation.config import NORM_INITS, ModelConfig


class GeneratorOutput(NamedTuple):
    image: Tensor  # (B, 3, H, W) in [-1, 1], the composed edit
    attention: Tensor  # (B, 1, H, W) in [0, 1], 1 = keep the input pixel
    colour: Tensor  # (B, 3, H, W) in [-1, 1]


class DiscriminatorOutput(NamedTuple):
    realness: Tensor  # (B, 1, H/2^L, W/2^L) patch map of critic scores, no sigmoid
    aus: Tensor  # (B, num_aus) regressed AU intensities


def tile_aus(aus: Tensor, height: int, width: int) -> Tensor:
    """Expand AU vectors (B, n) to constant feature maps (B, n, H, W)."""
    return aus[:, :, None, None].expand(-1, -1, height, width)


def _norm(channels: int, affine: bool) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=affine)


class ConvNormReLU(nn.Sequential):
    """Convolution (or transposed convolution), InstanceNorm, ReLU: the CycleGAN block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 *, transposed: bool = False, bias: bool = False, norm_affine: bool = True) -> None:
        conv_type = nn.ConvTranspose2d if transposed else nn.Conv2d
        super().__init__(
            conv_type(in_channels, out_channels, kernel_size, stride, padding, bias=bias),
            _norm(out_channels, norm_affine),
            nn.ReLU(inplace=True),
        )


class ResizeConvNormReLU(nn.Sequential):
    """Nearest-neighbour x2, 3x3 convolution, InstanceNorm, ReLU: the decoder step of
    ``model.upsampling="resize"``. Every output pixel sees the same number of kernel taps, so the
    colour and attention masks cannot carry the transposed convolution's checkerboard (Odena et al.,
    "Deconvolution and Checkerboard Artifacts", Distill 2016)."""

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool = False, norm_affine: bool = True) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=bias),
            _norm(out_channels, norm_affine),
            nn.ReLU(inplace=True),
        )


def _upsampling_block(config: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    """One x2 decoder step: the paper's 4x4 stride-2 transposed convolution, or resize-convolution."""
    bias, affine = config.generator_conv_bias, config.norm_affine
    if config.upsampling == "resize":
        return ResizeConvNormReLU(in_channels, out_channels, bias=bias, norm_affine=affine)
    return ConvNormReLU(in_channels, out_channels, 4, 2, 1, transposed=True, bias=bias, norm_affine=affine)


class ResidualBlock(nn.Module):
    """``x + IN(conv3x3(ReLU(IN(conv3x3(x)))))`` at constant width."""

    def __init__(self, channels: int, *, bias: bool = False, norm_affine: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=bias),
            _norm(channels, norm_affine),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=bias),
            _norm(channels, norm_affine),
        )

    def forward(self, features: Tensor) -> Tensor:
        return features + self.body(features)


class Generator(nn.Module):
    """Attention-based generator, paper Sec. 4.1: ``I_yf = A * I_yo + (1 - A) * C``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width, bias, affine = config.generator_channels, config.generator_conv_bias, config.norm_affine
        self.encoder = nn.Sequential(
            ConvNormReLU(3 + config.num_aus, width, 7, 1, 3, bias=bias, norm_affine=affine),
            ConvNormReLU(width, 2 * width, 4, 2, 1, bias=bias, norm_affine=affine),
            ConvNormReLU(2 * width, 4 * width, 4, 2, 1, bias=bias, norm_affine=affine),
        )
        self.bottleneck = nn.Sequential(
            *[ResidualBlock(4 * width, bias=bias, norm_affine=affine) for _ in range(config.generator_residual_blocks)]
        )
        self.decoder = nn.Sequential(
            _upsampling_block(config, 4 * width, 2 * width),
            _upsampling_block(config, 2 * width, width),
        )
        # The heads never have a bias, in both the authors' code and the replication.
        self.colour_head = nn.Sequential(nn.Conv2d(width, 3, 7, 1, 3, bias=False), nn.Tanh())
        self.attention_head = nn.Sequential(nn.Conv2d(width, 1, 7, 1, 3, bias=False), nn.Sigmoid())

    def forward(self, image: Tensor, aus: Tensor) -> GeneratorOutput:
        batch, channels, height, width = image.shape
        if channels != 3 or aus.shape != (batch, self.config.num_aus):
            raise ValueError(f"Generator expects images (B, 3, H, W) and AUs (B, {self.config.num_aus}); "
                             f"got {tuple(image.shape)} and {tuple(aus.shape)}")
        features = torch.cat([image, tile_aus(aus.to(image.dtype), height, width)], dim=1)  # (B, 3+n, H, W)
        features = self.encoder(features)  # (B, 4w, H/4, W/4)
        features = self.bottleneck(features)  # (B, 4w, H/4, W/4)
        features = self.decoder(features)  # (B, w, H, W)
        # The heads run in float32 even under bfloat16 autocast: bfloat16 rounds a sigmoid above
        # about 0.998 to exactly 1, where its gradient A (1 - A) is exactly 0 and the colour mask's
        # is (1 - A) = 0, so a pixel the attention mask keeps could never learn to change.
        with torch.autocast(device_type=features.device.type, enabled=False):
            features = features.to(torch.promote_types(features.dtype, torch.float32))
            colour = self.colour_head(features)  # (B, 3, H, W)
            if not self.config.use_attention:
                # Ablation: the generator renders the whole image (StarGAN-style); A = 0 everywhere.
                return GeneratorOutput(colour, torch.zeros_like(colour[:, :1]), colour)
            attention = self.attention_head(features)  # (B, 1, H, W)
        composed = attention * image + (1.0 - attention) * colour
        return GeneratorOutput(composed, attention, colour)

    @torch.no_grad()
    def scale_attention_logits(self, factor: float) -> None:
        """Multiply the attention mask's logits by ``factor``: a temperature of ``1 / factor``.

        The head is one convolution without a bias, so scaling its weights scales every logit
        exactly. Below 1 the mask softens (``A`` moves towards 0.5, so more of the colour mask
        shows); above 1 it hardens. A mask trained to near-certainty keeps the input almost
        everywhere, and its saturated pixels barely learn (the sigmoid's gradient is
        ``A (1 - A)``); softening it is the attention-mask analogue of temperature scaling
        (Guo et al. 2017) and of shrinking a warm start (Ash & Adams 2020).
        """
        if not self.config.use_attention:
            raise ValueError("this generator has no attention mask to scale (model.use_attention=false)")
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(f"the attention-logit scale must be a positive number, got {factor}")
        self.attention_head[0].weight.mul_(factor)


class UnfoldConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same weights, same state dict) computed on the CPU as one matrix product over
    unfolded patches, for the critic's deepest layers.

    Those have few output pixels and huge weights (1024 -> 2048 channels, 4x4 kernels: 134 MB at
    paper128) that oneDNN reorders into its blocked layout on every call, forward, backward and
    the gradient penalty's double backward alike; the product reads them as they are. At paper128
    and batch 4, forward and backward of the deepest layer took 122 ms this way against 406 ms.
    Each output is the same sum of products in another order (float32 rounding apart).
    """

    def forward(self, input: Tensor) -> Tensor:
        if input.device.type != "cpu" or self.groups != 1 or self.padding_mode != "zeros":
            return super().forward(input)
        batch, _, height, width = input.shape
        rows = (height + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        columns = (width + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        patches = nn.functional.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)  # (B, C*k*k, L)
        # One (B*L, C*k*k) x (C*k*k, O) product, the weights read once (a batched product would read them per image).
        patches = patches.transpose(1, 2).reshape(batch * rows * columns, -1)
        output = nn.functional.linear(patches, self.weight.flatten(1), self.bias)  # (B*L, O)
        return output.view(batch, rows * columns, -1).transpose(1, 2).reshape(batch, -1, rows, columns)


#: Critic layers with at most this many output pixels run as :class:`UnfoldConv2d` (at paper128 the
#: last two of six, 4x4 and 2x2; the 8x8 one before them was as fast either way).
UNFOLD_MAX_OUTPUT_PIXELS = 16


class Discriminator(nn.Module):
    """PatchGAN critic with the realness head ``D_I`` and the AU regression head ``D_y``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels, out_channels = 3, config.discriminator_channels
        for index in range(config.discriminator_layers):
            output_size = config.image_size // 2 ** (index + 1)
            conv = UnfoldConv2d if output_size ** 2 <= UNFOLD_MAX_OUTPUT_PIXELS else nn.Conv2d
            layers += [conv(in_channels, out_channels, 4, 2, 1, bias=True), nn.LeakyReLU(0.01, inplace=True)]
            in_channels, out_channels = out_channels, out_channels * 2
        self.trunk = nn.Sequential(*layers)
        final_size = config.image_size // 2 ** config.discriminator_layers
        self.realness_head = nn.Conv2d(in_channels, 1, 3, 1, 1, bias=False)
        self.au_head = nn.Conv2d(in_channels, config.num_aus, final_size, 1, 0, bias=False)

    def forward(self, image: Tensor) -> DiscriminatorOutput:
        size = self.config.image_size
        if image.shape[1:] != (3, size, size):
            raise ValueError(f"Discriminator expects images (B, 3, {size}, {size}); got {tuple(image.shape)}")
        features = self.trunk(image)  # (B, w * 2^(L-1), H/2^L, W/2^L)
        realness = self.realness_head(features)  # (B, 1, H/2^L, W/2^L)
        aus = self.au_head(features).flatten(1)  # (B, n)
        return DiscriminatorOutput(realness, aus)


def init_weights(module: nn.Module, std: float = 0.02, norm_init: str = "ones") -> None:
    """N(0, 0.02) for convolutions, as the reference code; norm scales 1 (``norm_init="ones"``) or
    U(0, 1) (``"uniform"``, the authors' code, which left PyTorch 0.3's default), norm shifts 0."""
    if norm_init not in NORM_INITS:
        raise ValueError(f"norm_init must be one of {', '.join(NORM_INITS)}; got {norm_init!r}")
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.InstanceNorm2d) and layer.affine:
            if norm_init == "uniform":
                nn.init.uniform_(layer.weight, 0.0, 1.0)
            else:
                nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def build_networks(config: ModelConfig, *, initialise: bool = True, norm_init: str = "ones"
                   ) -> tuple[Generator, Discriminator]:
    config.validate()
    generator, discriminator = Generator(config), Discriminator(config)
    if initialise:
        init_weights(generator, norm_init=norm_init)
        init_weights(discriminator)
    return generator, discriminator


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
