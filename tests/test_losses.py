"""Each loss on tiny tensors whose values are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from ganimation import losses


def test_critic_wasserstein_loss() -> None:
    real = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)  # mean 2
    fake = torch.tensor([[-1.0, 0.0], [1.0, 4.0]]).view(1, 1, 2, 2)  # mean 1
    assert losses.critic_wasserstein_loss(real, fake).item() == pytest.approx(1.0 - 2.0)
    # The critic lowers it by scoring real above fake.
    assert losses.critic_wasserstein_loss(fake, real).item() == pytest.approx(1.0)


def test_critic_wasserstein_patch_maps() -> None:
    real = torch.arange(8.0).view(2, 1, 2, 2)  # mean 3.5
    fake = torch.full((2, 1, 2, 2), 0.5)
    assert losses.critic_wasserstein_loss(real, fake).item() == pytest.approx(0.5 - 3.5)


def test_generator_adversarial_loss() -> None:
    fake = torch.tensor([[0.5, 1.5], [-2.0, 4.0]]).view(2, 1, 1, 2)  # mean 1
    assert losses.generator_adversarial_loss(fake).item() == pytest.approx(-1.0)


def test_au_regression_loss_is_mean_squared() -> None:
    predicted = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    target = torch.tensor([[1.0, 1.0], [0.0, 0.5]])
    # squared errors 1, 0, 0.25, 0 -> mean 1.25 / 4
    assert losses.au_regression_loss(predicted, target).item() == pytest.approx(0.3125)
    assert losses.au_regression_loss(target, target).item() == 0.0


def test_au_regression_loss_upcasts() -> None:
    predicted = torch.tensor([[0.25, 0.75]], dtype=torch.bfloat16)
    target = torch.tensor([[0.0, 1.0]], dtype=torch.bfloat16)
    value = losses.au_regression_loss(predicted, target)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(0.0625)
    # float64 stays float64 (never rounded to float32 on the way), as in every loss.
    assert losses.au_regression_loss(predicted, target.double()).dtype == torch.float64


def test_au_regression_loss_divided_by_batch_as_the_authors_code() -> None:
    predicted, target = torch.zeros(4, 17), torch.ones(4, 17)
    assert losses.au_regression_loss(predicted, target).item() == 1.0
    # MSELoss (a mean) divided by the batch size, which the authors' code weighs by 4000.
    assert losses.au_regression_loss(predicted, target, batch_size=4).item() == 0.25


def test_total_variation_single_2x2() -> None:
    # A = [[0, 1], [3, 7]]
    # vertical:   (3-0)^2 + (7-1)^2 = 9 + 36 = 45
    # horizontal: (1-0)^2 + (7-3)^2 = 1 + 16 = 17
    attention = torch.tensor([[0.0, 1.0], [3.0, 7.0]]).view(1, 1, 2, 2)
    assert losses.total_variation(attention).item() == pytest.approx(62.0)


def test_total_variation_averages_over_batch() -> None:
    first = torch.tensor([[0.0, 1.0], [3.0, 7.0]])  # 62, as above
    # [[1, 1], [1, 3]]: vertical 0 + 4, horizontal 0 + 4 -> 8
    second = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    attention = torch.stack([first, second])[:, None]
    assert attention.shape == (2, 1, 2, 2)
    assert losses.total_variation(attention).item() == pytest.approx((62.0 + 8.0) / 2)


def test_total_variation_constant_and_3x3() -> None:
    assert losses.total_variation(torch.full((3, 1, 5, 5), 0.7)).item() == 0.0
    # A checkerboard 3x3 of 0/1: every neighbour pair differs by 1: 6 vertical + 6 horizontal pairs.
    board = (torch.arange(9).view(3, 3) % 2).float().view(1, 1, 3, 3)
    assert losses.total_variation(board).item() == pytest.approx(12.0)


def test_absolute_smoothness_sums_absolute_differences_over_the_whole_batch() -> None:
    first = torch.tensor([[0.0, 1.0], [3.0, 7.0]])  # |3| + |6| + |1| + |4| = 14
    second = torch.tensor([[1.0, 1.0], [1.0, 3.0]])  # 0 + 2 + 0 + 2 = 4
    attention = torch.stack([first, second])[:, None]
    # The authors' code: summed over the batch, not averaged, and absolute, not squared.
    assert losses.absolute_smoothness(attention).item() == pytest.approx(14.0 + 4.0)
    assert losses.absolute_smoothness(torch.full((3, 1, 5, 5), 0.7)).item() == 0.0
    # Differences below 1 weigh more than their squares, and the batch is summed: on 25 ramps
    # in steps of 1/32 the authors' term is 25 x 32 times the paper's.
    ramp = torch.linspace(0, 1, 33)[None, None, :, None].expand(25, 1, 33, 33)
    ratio = losses.absolute_smoothness(ramp) / losses.total_variation(ramp)
    assert ratio.item() == pytest.approx(25 * 32, rel=1e-4)


def test_attention_loss_smoothness_forms() -> None:
    attention = torch.tensor([[0.0, 1.0], [3.0, 7.0]]).view(1, 1, 2, 2)  # TV 62, absolute 14, mean 11/4
    assert losses.attention_loss(attention, 1.0, 0.0, "squared").item() == pytest.approx(62.0)
    assert losses.attention_loss(attention, 1.0, 0.0, "absolute").item() == pytest.approx(14.0)
    assert losses.attention_loss(attention, 1e-5, 0.1, "absolute").item() == pytest.approx(14e-5 + 0.275)
    with pytest.raises(ValueError, match="smoothness"):
        losses.attention_loss(attention, 1.0, 0.0, "cubic")


def test_attention_loss_weights() -> None:
    attention = torch.tensor([[0.0, 1.0], [3.0, 7.0]]).view(1, 1, 2, 2)  # TV 62, mean 11/4
    assert losses.attention_loss(attention, 1.0, 0.0).item() == pytest.approx(62.0)
    assert losses.attention_loss(attention, 0.0, 1.0).item() == pytest.approx(2.75)
    assert losses.attention_loss(attention, 1e-5, 0.1).item() == pytest.approx(62.0 * 1e-5 + 0.275)
    assert losses.attention_loss(attention, 2.0, 3.0).item() == pytest.approx(124.0 + 8.25)


def test_attention_loss_gradient_pushes_mask_down() -> None:
    attention = torch.full((1, 1, 4, 4), 0.5, requires_grad=True)
    losses.attention_loss(attention, 0.0, 0.1).backward()
    # d/dA of 0.1 * mean(A) = 0.1 / 16 on every pixel.
    torch.testing.assert_close(attention.grad, torch.full((1, 1, 4, 4), 0.1 / 16))


def test_identity_loss_l1() -> None:
    reconstruction = torch.tensor([[0.0, 1.0], [-1.0, 0.5]]).view(1, 1, 2, 2)
    image = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    # |diffs| = 1, 0, 2, 0.5 -> mean 3.5 / 4 (L1, not squared: squared would give 5.25 / 4)
    assert losses.identity_loss(reconstruction, image).item() == pytest.approx(0.875)
    assert losses.identity_loss(image, image).item() == 0.0


def test_same_expression_loss_is_l1_to_the_input() -> None:
    image = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    output = torch.tensor([[0.0, 1.0], [1.0, 0.5]]).view(1, 1, 2, 2)
    assert losses.same_expression_loss(output, image).item() == pytest.approx(1.5 / 4)
    assert losses.same_expression_loss(image, image).item() == 0.0


def test_same_expression_loss_pulls_attention_towards_the_input() -> None:
    """Through ``A * I + (1 - A) * C`` the loss raises A wherever the colour mask differs from I."""
    image = torch.zeros(1, 3, 2, 2)
    colour = torch.tensor([0.5, 0.0, 0.5, 0.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    attention = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    losses.same_expression_loss(attention * image + (1 - attention) * colour, image).backward()
    gradient = attention.grad.flatten()
    assert gradient[0] < 0 and gradient[2] < 0  # gradient descent raises A there
    assert gradient[1] == 0 and gradient[3] == 0  # where C == I the mask is left alone


def test_paired_loss_is_l1_to_the_true_target() -> None:
    truth = torch.tensor([[0.0, -1.0], [0.5, 0.5]]).view(1, 1, 2, 2)
    output = torch.tensor([[0.0, 1.0], [0.0, 0.5]]).view(1, 1, 2, 2)
    assert losses.paired_loss(output, truth).item() == pytest.approx(2.5 / 4)
    assert losses.paired_loss(truth, truth).item() == 0.0


def test_paired_psnr_loss_is_minus_the_mean_psnr_capped_at_60_db() -> None:
    truth = torch.zeros(2, 3, 4, 4)
    output = truth.clone()
    output[0] += 0.2  # 0.1 off in [0, 1]: MSE 1e-2, 20 dB
    output[1] += 0.02  # MSE 1e-4, 40 dB
    expected = (10 * math.log10(1e-2 + 1e-6) + 10 * math.log10(1e-4 + 1e-6)) / 2  # about -30
    assert losses.paired_psnr_loss(output, truth).item() == pytest.approx(expected, rel=1e-5)
    assert losses.paired_psnr_loss(truth, truth).item() == pytest.approx(-60.0)  # the evaluation's cap


def test_paired_psnr_loss_weighs_each_image_by_its_own_error() -> None:
    truth = torch.zeros(2, 3, 4, 4)
    output = truth.clone()
    output[0] += 0.2
    output[1] += 0.02
    output.requires_grad_(True)
    losses.paired_psnr_loss(output, truth).backward()
    # The gradient of log(MSE + floor) per unit of error is 1 / (MSE + floor): the image 10x
    # closer (MSE 100x smaller) pulls about 100x harder.
    per_unit = output.grad.flatten(1)[:, 0] / output.detach().flatten(1)[:, 0]
    assert per_unit[1].item() == pytest.approx((1e-2 + 1e-6) / (1e-4 + 1e-6) * per_unit[0].item(), rel=1e-4)
    l1 = truth.clone().add_(torch.tensor([0.2, 0.02]).view(2, 1, 1, 1)).requires_grad_(True)
    losses.paired_loss(l1, truth).backward()
    assert torch.allclose(l1.grad[0], l1.grad[1])  # the L1 mean does not tell them apart


def test_paired_changed_loss_averages_over_each_images_changed_pixels() -> None:
    image = torch.zeros(3, 3, 4, 4)
    truth = image.clone()
    truth[0, :, 0, 0] = 1.0  # one pixel changes in image 0
    truth[1, :, :2, :] = -1.0  # eight in image 1; image 2 is left alone
    output = truth.clone()
    output[0, :, 0, 0] = 0.5  # off by 0.5 on its one changed pixel
    output[1, 0, 0, :] = 0.0  # channel 0 of four of the eight off by 1: mean over channels 1/3
    output[2] += 0.7  # no changed pixel: not scored here (the other paired losses see it)
    expected = (0.5 + (4 * 1 / 3) / 8 + 0.0) / 3
    assert losses.paired_changed_loss(output, image, truth).item() == pytest.approx(expected)
    assert losses.paired_changed_loss(truth, image, truth).item() == 0.0
    # A change of half a grey level is within tolerance, as for the attention-mask loss.
    assert losses.paired_changed_loss(image + 0.7, image, image + 0.5 / 255).item() == 0.0


def test_paired_unchanged_loss_is_minus_the_psnr_over_the_pixels_the_edit_leaves() -> None:
    image = torch.zeros(2, 3, 4, 4)
    truth = image.clone()
    truth[:, :, 0, :] = 1.0  # the true edit changes the first row (4 of 16 pixels) of both images
    output = truth.clone()
    output[:, :, 0, :] = -1.0  # far off where the edit changes: not scored here
    output[0, :, 3, 3] = 0.2  # image 0 leaks one dot: 0.1 off in [0, 1] on 1 of 12 unchanged pixels
    expected = (10 * math.log10(1e-2 / 12 + 1e-6) + 10 * math.log10(0.0 + 1e-6)) / 2
    assert losses.paired_unchanged_loss(output, image, truth).item() == pytest.approx(expected, rel=1e-5)
    assert losses.paired_unchanged_loss(truth, image, truth).item() == pytest.approx(-60.0)


def test_paired_unchanged_loss_pulls_a_leak_back_to_the_input_and_leaves_the_edit() -> None:
    image = torch.zeros(1, 3, 4, 4)
    truth = image.clone()
    truth[:, :, 0, 0] = 1.0
    output = truth.clone()
    output[:, :, 0, 0] = 0.5  # the edit falls short
    output[:, :, 3, 3] = 0.2  # and a dot leaks
    output.requires_grad_(True)
    losses.paired_unchanged_loss(output, image, truth).backward()
    assert (output.grad[:, :, 3, 3] > 0).all()  # descent lowers the dot towards the input
    assert torch.count_nonzero(output.grad[:, :, 0, 0]) == 0  # the changed pixel is left to the others
    assert torch.count_nonzero(output.grad) == 3


def test_paired_colour_loss_reaches_the_colour_mask_where_attention_keeps_the_input() -> None:
    image = torch.zeros(1, 3, 2, 2)
    truth = torch.tensor([[0.0, 0.5], [0.0, 0.0]]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    colour = torch.full((1, 3, 2, 2), 0.25, requires_grad=True)
    attention = torch.ones(1, 1, 2, 2)  # the input everywhere: the output's loss leaves C untouched
    losses.paired_loss(attention * image + (1 - attention) * colour, truth).backward()
    assert colour.grad is not None and torch.count_nonzero(colour.grad) == 0
    colour.grad = None
    value = losses.paired_colour_loss(colour, truth)
    value.backward()
    assert value.item() == pytest.approx(0.25)  # |0.25 - 0| on 3 pixels, |0.25 - 0.5| on one
    gradient = colour.grad[0, 0].flatten()
    assert gradient[1] < 0 and (gradient[[0, 2, 3]] > 0).all()  # each pixel pulled towards its truth


def test_paired_attention_loss_asks_for_the_input_only_where_the_edit_changes_nothing() -> None:
    image = torch.zeros(1, 3, 2, 2)
    truth = image.clone()
    truth[0, 1, 0, 1] = 0.5  # one channel of one pixel changes
    truth[0, :, 1, 1] = 0.5 / 255  # a quarter of a grey level: within the tolerance, unchanged
    attention = torch.tensor([[0.9, 0.2], [0.6, 0.7]]).view(1, 1, 2, 2).requires_grad_(True)
    value = losses.paired_attention_loss(attention, image, truth)
    value.backward()
    assert value.item() == pytest.approx((0.1 + 0.4 + 0.3) / 4)  # the changed pixel does not count
    gradient = attention.grad.flatten()
    assert gradient[1] == 0  # A is left to the output's loss where the edit changes the pixel
    assert (gradient[[0, 2, 3]] < 0).all()  # and raised towards 1 everywhere else
    assert losses.paired_attention_loss(torch.ones(1, 1, 2, 2), image, truth).item() == 0.0


def _linear_critic(weight: torch.Tensor):
    """D(x) = sum(w * x) per image, as a (B, 1, 1, 1) realness map."""
    return lambda images: (images * weight).flatten(1).sum(1).view(-1, 1, 1, 1)


def test_gradient_penalty_linear_critic() -> None:
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    norm = weight.norm().item()
    real, fake = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)
    penalty = losses.gradient_penalty(_linear_critic(weight), real, fake)
    assert penalty.item() == pytest.approx((norm - 1.0) ** 2, rel=1e-5)


def test_gradient_penalty_zero_for_unit_norm() -> None:
    weight = torch.zeros(3, 2, 2)
    weight[0, 0, 0], weight[1, 1, 1] = 0.6, 0.8  # ||w|| = 1
    penalty = losses.gradient_penalty(_linear_critic(weight), torch.rand(4, 3, 2, 2), torch.rand(4, 3, 2, 2))
    assert penalty.item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_has_gradients_wrt_critic() -> None:
    weight = torch.full((1, 2, 2), 1.0, requires_grad=True)  # ||w|| = 2
    penalty = losses.gradient_penalty(_linear_critic(weight), torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2))
    assert penalty.item() == pytest.approx(1.0)
    penalty.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 1 * 1 / 2 = 1 per entry.
    torch.testing.assert_close(weight.grad, torch.ones(1, 2, 2))


def test_gradient_penalty_does_not_backprop_into_images() -> None:
    weight = torch.full((1, 2, 2), 1.0)
    real = torch.rand(2, 1, 2, 2, requires_grad=True)
    fake = torch.rand(2, 1, 2, 2, requires_grad=True)
    penalty = losses.gradient_penalty(_linear_critic(weight), real, fake)
    assert not penalty.requires_grad  # w is constant and the images are detached
    assert real.grad is None and fake.grad is None


def test_gradient_penalty_respects_alpha() -> None:
    # A quadratic critic D(x) = sum(x^2) / 2 has gradient x, so the norm is that of the interpolate.
    def critic(images: torch.Tensor) -> torch.Tensor:
        return (images ** 2).flatten(1).sum(1).view(-1, 1, 1, 1) / 2

    real = torch.full((2, 1, 1, 4), 1.0)  # norm 2 per image
    fake = torch.zeros(2, 1, 1, 4)
    alpha = torch.tensor([1.0, 0.25]).view(2, 1, 1, 1)
    # Interpolates: real (norm 2) and 0.25 * real (norm 0.5): ((2-1)^2 + (0.5-1)^2) / 2 = 0.625
    assert losses.gradient_penalty(critic, real, fake, alpha=alpha).item() == pytest.approx(0.625)
    alpha_zero = torch.zeros(2, 1, 1, 1)  # pure fakes: gradient 0, penalty (0 - 1)^2 = 1
    assert losses.gradient_penalty(critic, real, fake, alpha=alpha_zero).item() == pytest.approx(1.0)


def test_gradient_penalty_random_alpha_uses_torch_rng() -> None:
    def critic(images: torch.Tensor) -> torch.Tensor:
        return (images ** 2).flatten(1).sum(1).view(-1, 1, 1, 1) / 2

    real, fake = torch.full((3, 1, 1, 4), 1.0), torch.zeros(3, 1, 1, 4)
    torch.manual_seed(11)
    first = losses.gradient_penalty(critic, real, fake).item()
    torch.manual_seed(11)
    expected_alpha = torch.rand(3, 1, 1, 1)
    expected = ((2 * expected_alpha.flatten() - 1) ** 2).mean().item()
    torch.manual_seed(11)
    assert losses.gradient_penalty(critic, real, fake).item() == pytest.approx(first)
    assert first == pytest.approx(expected, rel=1e-5)


def test_gradient_penalty_on_real_discriminator_is_differentiable() -> None:
    from ganimation.config import build_config
    from ganimation.networks import build_networks

    torch.manual_seed(0)
    _, discriminator = build_networks(build_config("smoke").model)
    real, fake = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    penalty = losses.gradient_penalty(lambda x: discriminator(x).realness, real, fake)
    assert penalty.item() >= 0 and math.isfinite(penalty.item())
    penalty.backward()
    grad = discriminator.trunk[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
