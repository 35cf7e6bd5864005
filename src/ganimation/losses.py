"""The losses of GANimation (Pumarola et al., ECCV 2018, Sec. 4.2), one function per equation.

The file reads in the paper's order: eq. 1 (the WGAN-GP adversarial loss), eq. 2 (the attention
loss), eq. 3 (the AU regression loss) and eq. 4 (the cycle, which the paper calls the identity
loss). Where the authors' code computes a term differently, the function says so, and the other
form is one option away (``--preset official``, docs/training.md). The losses the paper does not
have come last, in a section of their own (docs/extras.md); all are off by default.

All are pure functions of tensors; the weights (lambdas) come from :class:`~ganimation.config.LossConfig`
and are applied by the training step, except the attention loss whose two terms are weighted
inside eq. 2 itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def at_least_float32(tensor: Tensor) -> Tensor:
    """bfloat16 or float16 (under autocast) -> float32; float32 and float64 stay as they are."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


# ---------------------------------------------------------------------- the paper's losses

def critic_wasserstein_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Eq. 1 without its penalty, as the critic minimises it: ``E[D_I(G(I))] - E[D_I(I)]``.

    Scores are PatchGAN maps (B, 1, h, w); each image's realness is the mean over its patches.
    """
    return at_least_float32(fake_scores).mean() - at_least_float32(real_scores).mean()


def generator_adversarial_loss(fake_scores: Tensor) -> Tensor:
    """The generator's side of eq. 1: maximise ``E[D_I(G(I))]``, i.e. minimise its negative."""
    return -at_least_float32(fake_scores).mean()


def gradient_penalty(critic_realness: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     alpha: Tensor | None = None) -> Tensor:
    """The penalty of eq. 1, ``E[(||grad_I~ D_I(I~)||_2 - 1)^2]`` (Gulrajani et al., 2017).

    ``I~`` are random interpolates between real and (detached) fake images, one mixing weight
    per image. The norm is taken per image over all its pixels and channels and averaged over
    the batch, as in the reference code. ``critic_realness`` maps images to realness maps;
    ``alpha`` (B, 1, 1, 1) fixes the mixing weights, drawn uniformly when not given.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    alpha = alpha.to(device=real.device, dtype=real.dtype)
    interpolates = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    scores = at_least_float32(critic_realness(interpolates))
    (gradients,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    norms = gradients.flatten(1).norm(2, dim=1)  # (B,)
    return ((norms - 1.0) ** 2).mean()


def total_variation(attention: Tensor) -> Tensor:
    """Squared-difference total variation of eq. 2, summed over pixels, averaged over the batch.

    ``sum_ij (A[i+1,j] - A[i,j])^2 + (A[i,j+1] - A[i,j])^2``, the paper's equation. The authors'
    code sums absolute differences over the whole batch instead (:func:`absolute_smoothness`).
    """
    vertical = (attention[:, :, 1:, :] - attention[:, :, :-1, :]) ** 2
    horizontal = (attention[:, :, :, 1:] - attention[:, :, :, :-1]) ** 2
    return (vertical.flatten(1).sum(1) + horizontal.flatten(1).sum(1)).mean()


def absolute_smoothness(attention: Tensor) -> Tensor:
    """Eq. 2's smoothness term as the authors' code computes it: ``sum |A[i+1,j] - A[i,j]| +
    |A[i,j+1] - A[i,j]|`` over every pixel of the whole batch (summed, not averaged, over images).

    At batch 25 it is about 100x :func:`total_variation` on the same masks: absolute differences
    below 1 exceed their squares, and the batch is summed. ``loss.attention_smoothness="absolute"``.
    """
    vertical = (attention[:, :, 1:, :] - attention[:, :, :-1, :]).abs()
    horizontal = (attention[:, :, :, 1:] - attention[:, :, :, :-1]).abs()
    return vertical.sum() + horizontal.sum()


def attention_loss(attention: Tensor, lambda_tv: float, lambda_attention: float,
                   smoothness: str = "squared") -> Tensor:
    """Eq. 2, weighted: ``lambda_TV * TV(A) + lambda_A * E[A]``.

    ``lambda_tv`` is the paper's ``lambda_A * lambda_TV`` (0.1 x 1e-4) and ``lambda_attention`` its
    ``lambda_A``. The second term keeps the mask from saturating at 1 (copying the input
    everywhere). The paper writes ``||A||_2``; like the authors' code we penalise the mean of ``A``
    (A >= 0, so this is its L1 norm per pixel), which pulls every pixel alike and does not vanish
    near 0. ``smoothness`` is ``"squared"`` (:func:`total_variation`, the paper's) or
    ``"absolute"`` (:func:`absolute_smoothness`, the authors' code's).
    """
    if smoothness not in ("squared", "absolute"):
        raise ValueError(f"smoothness must be 'squared' or 'absolute', got {smoothness!r}")
    smooth = total_variation if smoothness == "squared" else absolute_smoothness
    attention = at_least_float32(attention)
    return lambda_tv * smooth(attention) + lambda_attention * attention.mean()


def au_regression_loss(predicted_aus: Tensor, target_aus: Tensor, batch_size: int | None = None) -> Tensor:
    """One term of eq. 3: ``||D_y(I) - y||_2^2``, as the mean over batch and AUs.

    The paper writes a squared L2 norm per image; the authors' code divides ``MSELoss`` (this
    mean) once more by the batch size, given here as ``batch_size``, and weighs it by 4000. By
    default we keep the plain mean and fold the constant into ``lambda_cond`` (160 = 4000 / 25 at
    the paper's batch size), so the weight no longer depends on the batch.
    """
    loss = torch.mean((at_least_float32(predicted_aus) - at_least_float32(target_aus)) ** 2)
    return loss if batch_size is None else loss / batch_size


def identity_loss(reconstruction: Tensor, image: Tensor) -> Tensor:
    """Eq. 4, the cycle loss: ``|| G(G(I_yo | y_f) | y_o) - I_yo ||_1``, as a mean over pixels."""
    return torch.mean(torch.abs(at_least_float32(reconstruction) - at_least_float32(image)))


# ---------------------------------------------------------------------- not the paper's: extra losses
# Each is weighted by its own loss.lambda_* (0 by default, i.e. the paper's objective) and
# documented with its reasons in docs/extras.md. The paired ones need each image's partner: the
# same identity at other AUs, pixel-aligned, which synthetic renders have and the paper's data has not.


def same_expression_loss(output: Tensor, image: Tensor) -> Tensor:
    """Not in the paper: ``|| G(I_yo | y_o) - I_yo ||_1``, CycleGAN's identity-mapping loss.

    Asked for the expression the image already shows, the generator should change nothing. The
    paper's losses never put that to it directly: the cycle of eq. 4 only asks that a second edit
    undo the first, so the attention mask may hand whole regions to the colour mask for every
    target. Weighted by ``lambda_same_expression`` (0 by default, i.e. the paper's objective).
    """
    return identity_loss(output, image)


def paired_loss(output: Tensor, truth: Tensor) -> Tensor:
    """Not in the paper: ``|| G(I_yo | y_p) - I_yp ||_1`` against the true image at the target AUs.

    Needs the same face at both expressions, pixel-aligned (synthetic renders); the paper's data
    has no such pairs. Weighted by ``lambda_paired`` (0 by default, i.e. the paper's objective).
    """
    return identity_loss(output, truth)


def paired_changed_loss(output: Tensor, image: Tensor, truth: Tensor, tolerance: float = 1.0 / 255.0) -> Tensor:
    """Not in the paper: ``|| G(I_yo | y_p) - I_yp ||_1`` over the pixels the true edit changes only.

    Each image's L1 is averaged over its own changed pixels (where ``I_yp`` differs from ``I_yo`` by
    more than ``tolerance``, as :func:`paired_attention_loss` decides), then over the batch; an image
    the edit leaves unchanged adds 0. The L1 over the whole image weighs a raised brow (1-2% of the
    pixels) so little that an edit which leaves the brow and paints a few dots the critic reads as
    the AU costs almost nothing; here the brow is the whole of that image's term. Weighted by
    ``lambda_paired_changed`` (0 by default, i.e. the paper's objective).
    """
    error = (at_least_float32(output) - at_least_float32(truth)).abs().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    return _mean_per_image(error, _changed_pixels(image, truth, tolerance)).mean()


def paired_psnr_loss(output: Tensor, truth: Tensor, floor: float = 1e-6) -> Tensor:
    """Not in the paper: minus the edit's PSNR (dB) against the true image, averaged over images.

    ``mean_i 10 log10(MSE_i + floor)`` with ``MSE_i`` the mean squared error of image ``i`` in the
    [0, 1] range, so its value is minus the mean PSNR that ``ganimation evaluate`` reports, with
    ``floor`` = 1e-6 its 60 dB cap. An L1 mean over the batch lets the large edits, which carry most
    of the error, set the gradient; the evaluation averages PSNR, i.e. log-error, over edits, and
    there a small edit (one AU, a little) counts as much as a whole expression. The log gives each
    image a weight inversely proportional to its own error, so small edits are held to their own
    scale. Weighted by ``lambda_paired_psnr`` (0 by default, i.e. the paper's objective).
    """
    return _mean_decibels(_squared_error(output, truth).flatten(1).mean(dim=1), floor)


def paired_unchanged_loss(output: Tensor, image: Tensor, truth: Tensor, tolerance: float = 1.0 / 255.0,
                          floor: float = 1e-6) -> Tensor:
    """Not in the paper: minus the edit's PSNR (dB) over the pixels the true edit leaves unchanged.

    ``mean_i 10 log10(MSE_i + floor)``, with ``MSE_i`` image ``i``'s mean squared error in the [0, 1]
    range over the pixels where ``I_yp`` equals ``I_yo`` (as :func:`paired_attention_loss` decides),
    where the exact answer is the input itself. An edit that paints a few dots far from the features
    it should move (dots the critic's ``D_y`` reads as the AU) pays almost nothing in a whole-image
    L1, but on a small edit those dots are most of the image's error. On a log scale each image's
    leak is held to its own size, and the pixels the edit changes are left to the other losses, so
    this does not damp the edit itself as :func:`paired_psnr_loss` does. Weighted by
    ``lambda_paired_unchanged`` (0 by default, i.e. the paper's objective).
    """
    unchanged = 1.0 - _changed_pixels(image, truth, tolerance)  # (B, 1, H, W)
    return _mean_decibels(_mean_per_image(_squared_error(output, truth), unchanged), floor)


def paired_colour_loss(colour: Tensor, truth: Tensor) -> Tensor:
    """Not in the paper: ``|| C(I_yo | y_p) - I_yp ||_1``, the colour mask against the true image.

    The composed output (Sec. 4.1, ``A * I_yo + (1 - A) * C``) only passes the colour mask's
    gradient through ``1 - A``, so where the attention mask keeps the input ``C`` is left free and
    may be anything. Any pixel whose attention is not fully saturated then leaks that into the
    edit. Scoring ``C`` itself against the true result everywhere asks it to be the whole edited
    face. Weighted by ``lambda_paired_colour`` (0 by default, i.e. the paper's objective).
    """
    return identity_loss(colour, truth)


def paired_attention_loss(attention: Tensor, image: Tensor, truth: Tensor, tolerance: float = 1.0 / 255.0) -> Tensor:
    """Not in the paper: ``mean((1 - A) * [I_yp == I_yo])``, the attention mask where the edit changes nothing.

    Where the true result ``I_yp`` equals the input (to half a grey level, ``tolerance`` in the
    [-1, 1] range), the output is exact only if ``A = 1`` there. The output's own loss gives ``A``
    little push once the colour mask is close to the face (its gradient on ``A`` is ``I - C``), so
    ``A`` stays a little short of 1 around the features and every edit blurs them slightly. Pixels
    the edit changes are left to the output's loss. Weighted by ``lambda_paired_attention`` (0 by
    default, i.e. the paper's objective).
    """
    unchanged = 1.0 - _changed_pixels(image, truth, tolerance)  # (B, 1, H, W)
    return torch.mean((1.0 - at_least_float32(attention)) * unchanged)


def _changed_pixels(image: Tensor, truth: Tensor, tolerance: float) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) float mask: 1 where any channel of ``truth`` differs from ``image``
    by more than ``tolerance``, the pixels the true edit changes."""
    return ((at_least_float32(truth) - at_least_float32(image)).abs().amax(dim=1, keepdim=True) > tolerance).float()


def _squared_error(output: Tensor, truth: Tensor) -> Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 1, H, W) squared error in [0, 1], averaged over channels:
    halving the range quarters it."""
    return (at_least_float32(output) - at_least_float32(truth)).pow(2).mean(dim=1, keepdim=True) / 4.0


def _mean_per_image(values: Tensor, mask: Tensor) -> Tensor:
    """(B, 1, H, W) values and 0/1 mask -> (B,) mean of each image's values over its masked pixels
    (0 for an image with none)."""
    return (values * mask).flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1).clamp(min=1.0)


def _mean_decibels(error: Tensor, floor: float) -> Tensor:
    """(B,) mean squared errors in [0, 1] -> ``mean_i 10 log10(error_i + floor)``, minus the mean
    PSNR, with ``floor`` its cap (1e-6: 60 dB, the evaluation's)."""
    return 10.0 * torch.log10(error + floor).mean()
