"""A plain eager GANimation iteration: the baseline that ``benchmarks/speed.py`` times the trainer against.

Written the way the paper (Pumarola et al., ECCV 2018, Sec. 4) reads and the way a first
implementation would do it, with nothing from ``ganimation`` but its config:

* its own networks, plain ``nn.Sequential`` stacks of ``nn.Conv2d`` (Sec. 4.1, Fig. 3), holding the
  same weights as the project's (:meth:`ReferenceGANimation.from_networks` copies them);
* a critic step: the generator's edit without gradients, the critic on the real images, the
  critic on the edits, the gradient penalty on interpolates (Gulrajani et al. 2017), the AU
  regression on the real images, one backward and PyTorch's default ``Adam``;
* a generator step: edit, cycle back, score the edit with the critic (whose gradients are
  computed and thrown away, as a plain implementation does), eqs. 1-4, one backward, ``Adam``.

Its losses are those of ``ganimation.losses`` written out again, and its random draws (flips,
target AUs, mixing weights) come from one ``torch.Generator`` in the trainer's order, so from the
same weights and seed it computes the trainer's iteration: ``tests/test_speed.py`` holds the two to
each other, which makes this file the plain path the trainer's fast path is checked against.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def _conv_norm_relu(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
                    transposed: bool = False) -> list[nn.Module]:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    return [conv(in_channels, out_channels, kernel, stride, padding, bias=False),
            nn.InstanceNorm2d(out_channels, affine=True), nn.ReLU(inplace=True)]


class PlainResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.InstanceNorm2d(channels, affine=True), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PlainGenerator(nn.Module):
    """Encoder, residual blocks, decoder, colour head (tanh) and attention head (sigmoid)."""

    def __init__(self, num_aus: int = 17, width: int = 64, blocks: int = 6) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm_relu(3 + num_aus, width, 7, 1, 3),
            *_conv_norm_relu(width, 2 * width, 4, 2, 1),
            *_conv_norm_relu(2 * width, 4 * width, 4, 2, 1),
            *[PlainResidualBlock(4 * width) for _ in range(blocks)],
            *_conv_norm_relu(4 * width, 2 * width, 4, 2, 1, transposed=True),
            *_conv_norm_relu(2 * width, width, 4, 2, 1, transposed=True),
        )
        self.colour = nn.Sequential(nn.Conv2d(width, 3, 7, 1, 3, bias=False), nn.Tanh())
        self.attention = nn.Sequential(nn.Conv2d(width, 1, 7, 1, 3, bias=False), nn.Sigmoid())

    def forward(self, image: Tensor, aus: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tiled = aus[:, :, None, None].expand(-1, -1, image.shape[2], image.shape[3])
        features = self.body(torch.cat([image, tiled], dim=1))
        colour, attention = self.colour(features), self.attention(features)
        return attention * image + (1 - attention) * colour, attention, colour


class PlainCritic(nn.Module):
    """Strided 4x4 convolutions with LeakyReLU(0.01); realness map D_I and AU regressor D_y."""

    def __init__(self, image_size: int = 128, num_aus: int = 17, width: int = 64, layers: int = 6) -> None:
        super().__init__()
        trunk: list[nn.Module] = []
        channels = 3
        for index in range(layers):
            trunk += [nn.Conv2d(channels, width * 2 ** index, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
            channels = width * 2 ** index
        self.trunk = nn.Sequential(*trunk)
        self.realness = nn.Conv2d(channels, 1, 3, 1, 1, bias=False)
        self.aus = nn.Conv2d(channels, num_aus, image_size // 2 ** layers, bias=False)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        features = self.trunk(image)
        return self.realness(features), self.aus(features).flatten(1)


def _copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Copy parameters in order (the two layouts differ only in module names)."""
    sources, targets = list(source.parameters()), list(target.parameters())
    if [p.shape for p in sources] != [p.shape for p in targets]:
        raise ValueError("the reference networks do not have the project's parameter shapes")
    with torch.no_grad():
        for value, parameter in zip(sources, targets):
            parameter.copy_(value)


def _total_variation(mask: Tensor) -> Tensor:
    return (((mask[:, :, 1:, :] - mask[:, :, :-1, :]) ** 2).flatten(1).sum(1)
            + ((mask[:, :, :, 1:] - mask[:, :, :, :-1]) ** 2).flatten(1).sum(1)).mean()


class ReferenceGANimation:
    """Both networks, their Adam optimisers and one random stream; :meth:`iteration` trains one
    GANimation iteration (``critic_steps`` critic steps, then one generator step)."""

    def __init__(self, config: Any, target_pool: Tensor, device: torch.device | str = "cpu") -> None:
        model = config.model
        unsupported = {"use_attention": not model.use_attention, "norm_affine": not model.norm_affine,
                       "generator_conv_bias": model.generator_conv_bias, "upsampling": model.upsampling != "transposed"}
        if any(unsupported.values()):
            raise ValueError(f"the reference is the paper's model; unsupported: {[k for k, v in unsupported.items() if v]}")
        self.config, self.device = config, torch.device(device)
        self.generator = PlainGenerator(model.num_aus, model.generator_channels,
                                        model.generator_residual_blocks).to(self.device)
        self.critic = PlainCritic(model.image_size, model.num_aus, model.discriminator_channels,
                                  model.discriminator_layers).to(self.device)
        optim = config.optim
        self.generator_optimizer = torch.optim.Adam(self.generator.parameters(), lr=optim.lr_generator,
                                                    betas=(optim.beta1, optim.beta2))
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=optim.lr_discriminator,
                                                 betas=(optim.beta1, optim.beta2))
        self.target_pool = target_pool.to(self.device, torch.float32)
        self.rng = torch.Generator().manual_seed(config.run.seed)

    @classmethod
    def from_networks(cls, config: Any, generator: nn.Module, discriminator: nn.Module, target_pool: Tensor,
                      device: torch.device | str = "cpu") -> ReferenceGANimation:
        """A reference holding the weights of the project's ``generator`` and ``discriminator``."""
        reference = cls(config, target_pool, device)
        _copy_weights(generator, reference.generator)
        _copy_weights(discriminator, reference.critic)
        return reference

    # The trainer's random draws, in its order, from the CPU stream.
    def _rand(self, *shape: int) -> Tensor:
        return torch.rand(*shape, generator=self.rng).to(self.device)

    def _targets(self, batch: int) -> Tensor:
        rows = torch.randint(len(self.target_pool), (batch,), generator=self.rng).to(self.device)
        noise = (self._rand(batch, self.target_pool.shape[1]) * 2 - 1) * self.config.loss.target_noise
        return (self.target_pool[rows] + noise).clamp(0, 1)

    def critic_step(self, real: Tensor, aus: Tensor) -> dict[str, float]:
        weights = self.config.loss
        targets = self._targets(real.shape[0])
        with torch.no_grad():
            fake = self.generator(real, targets)[0]
        real_scores, real_aus = self.critic(real)
        fake_scores, _ = self.critic(fake)
        wasserstein = fake_scores.mean() - real_scores.mean()
        alpha = self._rand(real.shape[0], 1, 1, 1)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (gradient,) = torch.autograd.grad(self.critic(mixed)[0].sum(), mixed, create_graph=True)
        penalty = ((gradient.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        condition = ((real_aus - aus) ** 2).mean()
        total = wasserstein + weights.lambda_gp * penalty + weights.lambda_cond * condition
        self.critic_optimizer.zero_grad()
        total.backward()
        self.critic_optimizer.step()
        return {"d/total": total.item(), "d/wasserstein": wasserstein.item(), "d/gradient_penalty": penalty.item(),
                "d/au_real": condition.item()}

    def generator_step(self, real: Tensor, aus: Tensor) -> dict[str, float]:
        weights = self.config.loss
        targets = self._targets(real.shape[0])
        edited, attention, _ = self.generator(real, targets)
        reconstructed, reconstructed_attention, _ = self.generator(edited, aus)
        scores, predicted_aus = self.critic(edited)
        adversarial = -scores.mean()
        expression = ((predicted_aus - targets) ** 2).mean()
        attention_loss = (weights.lambda_tv * _total_variation(attention) + weights.lambda_attention * attention.mean()
                          + weights.lambda_tv * _total_variation(reconstructed_attention)
                          + weights.lambda_attention * reconstructed_attention.mean())
        cycle = (reconstructed - real).abs().mean()
        total = adversarial + weights.lambda_cond * expression + attention_loss + weights.lambda_idt * cycle
        self.generator_optimizer.zero_grad()
        total.backward()
        self.generator_optimizer.step()
        return {"g/total": total.item(), "g/adversarial": adversarial.item(), "g/au_fake": expression.item(),
                "g/attention": attention_loss.item(), "g/cycle": cycle.item()}

    def step(self, images: Tensor, aus: Tensor, generator: bool) -> dict[str, float]:
        """A critic step on a randomly flipped copy of the batch, then a generator step if asked."""
        images, aus = images.to(self.device), aus.to(self.device).float()
        if self.config.data.flip:
            flip = self._rand(images.shape[0]) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        metrics = self.critic_step(images, aus)
        if generator:
            metrics.update(self.generator_step(images, aus))
        return metrics

    def iteration(self, images: Tensor, aus: Tensor) -> list[dict[str, float]]:
        """One GANimation iteration on one batch: ``critic_steps`` steps, the last with a generator
        step. Returns each step's losses."""
        steps = self.config.optim.critic_steps
        return [self.step(images, aus, generator=index == steps - 1) for index in range(steps)]
