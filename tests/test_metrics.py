"""PSNR, SSIM and change maps against answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ganimation.metrics import mean_abs_change, psnr, squared_error_split, ssim, ssim_map

SIZE = 32


@pytest.fixture
def image() -> np.ndarray:
    """A smooth uint8 picture within [20, 230], so that +/-20 never clips."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(0.0, 1.0, SIZE)
    base = 20 + 150 * np.add.outer(ramp, ramp)[..., None] / 2 + rng.integers(0, 60, (SIZE, SIZE, 3))
    return np.clip(base, 20, 230).astype(np.uint8)


def shifted(image: np.ndarray, amount: int) -> np.ndarray:
    return (image.astype(np.int16) + amount).astype(np.uint8)


def test_identical_images(image: np.ndarray) -> None:
    assert psnr(image, image) == math.inf
    assert psnr(image, image.copy(), np.ones((SIZE, SIZE), bool)) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert mean_abs_change(image, image) == 0.0
    np.testing.assert_allclose(ssim_map(image, image), 1.0, atol=1e-12)


def test_psnr_of_a_constant_shift(image: np.ndarray) -> None:
    # Every pixel off by 10/255: MSE = (10/255)^2, so PSNR = 10 log10(1 / MSE) = 20 log10(25.5).
    expected = 10.0 * math.log10(1.0 / (10.0 / 255.0) ** 2)
    assert expected == pytest.approx(28.1308, abs=1e-4)
    assert psnr(shifted(image, 10), image) == pytest.approx(expected, abs=1e-9)
    assert psnr(image, shifted(image, -10)) == pytest.approx(expected, abs=1e-9)  # symmetric
    # The same images on the [0, 1] float scale give the same answer.
    assert psnr(shifted(image, 10) / 255.0, image / 255.0) == pytest.approx(expected, abs=1e-9)
    # Grey (H, W) images too; a shift in one channel of three is a third of the MSE.
    assert psnr(shifted(image[..., 0], 10), image[..., 0]) == pytest.approx(expected, abs=1e-9)
    one_channel = image.copy()
    one_channel[..., 1] += 10
    assert psnr(one_channel, image) == pytest.approx(expected + 10 * math.log10(3), abs=1e-9)


def test_masked_psnr_only_counts_the_mask(image: np.ndarray) -> None:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[8:20, 4:28] = True
    edited = shifted(image, 10)
    edited[~mask] = shifted(image, -20)[~mask]  # a bigger change outside the mask
    inside = 10.0 * math.log10(1.0 / (10.0 / 255.0) ** 2)
    assert psnr(edited, image, mask) == pytest.approx(inside, abs=1e-9)
    assert psnr(edited, image, ~mask) == pytest.approx(10.0 * math.log10(1.0 / (20.0 / 255.0) ** 2), abs=1e-9)
    assert psnr(edited, image) < inside  # the whole image sees both
    noisy = image.copy()
    noisy[~mask] = np.random.default_rng(0).integers(0, 256, noisy[~mask].shape)
    assert psnr(noisy, image, mask) == math.inf  # anything outside the mask does not matter


def test_ssim_of_constant_images_is_the_luminance_term() -> None:
    # No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = 0.01^2, at every window.
    a, b = 100 / 255, 120 / 255
    first, second = np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 120, np.uint8)
    expected = (2 * a * b + 0.01 ** 2) / (a * a + b * b + 0.01 ** 2)
    assert expected == pytest.approx(0.9836, abs=1e-4)
    assert ssim(first, second) == pytest.approx(expected, abs=1e-9)
    np.testing.assert_allclose(ssim_map(first, second), expected, atol=1e-9)


def test_ssim_shift_and_noise(image: np.ndarray) -> None:
    shift = ssim(shifted(image, 10), image)
    assert 0.95 < shift < 1.0  # only the luminance term moves
    assert ssim(shifted(image, 20), image) < shift
    noise = np.random.default_rng(1).integers(0, 256, image.shape, dtype=np.uint8)
    assert ssim(noise, image) < 0.2
    other_noise = np.random.default_rng(2).integers(0, 256, image.shape, dtype=np.uint8)
    assert abs(ssim(noise, other_noise)) < 0.1


def test_ssim_map_shape() -> None:
    first = np.zeros((32, 40, 3), np.uint8)
    assert ssim_map(first, first).shape == (22, 30)  # 'valid' 11x11 windows
    assert ssim_map(first[..., 0], first[..., 0]).shape == (22, 30)
    assert ssim_map(first[:11, :11], first[:11, :11]).shape == (1, 1)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_map(first[:10, :20], first[:10, :20])


def test_ssim_mask(image: np.ndarray) -> None:
    # The right half becomes noise; windows centred at column c reach columns c-5..c+5.
    edited = image.copy()
    edited[:, 16:] = np.random.default_rng(4).integers(0, 256, (SIZE, 16, 3))
    left = np.zeros((SIZE, SIZE), bool)
    left[:, :11] = True  # centres up to column 10 never see column 16
    right = np.zeros((SIZE, SIZE), bool)
    right[:, 21:] = True  # centres from column 21 see noise only
    assert ssim(edited, image, left) == pytest.approx(1.0, abs=1e-12)
    assert ssim(edited, image, right) < 0.3
    whole = ssim(edited, image)
    assert ssim(edited, image, right) < whole < ssim(edited, image, left)
    # Equal to averaging the map over the masked centres by hand.
    values = ssim_map(edited, image)
    assert ssim(edited, image, right) == pytest.approx(values[:, 21 - 5:].mean(), abs=1e-12)
    border = np.zeros((SIZE, SIZE), bool)
    border[:5] = True  # centres within 5 px of the edge have no valid window
    with pytest.raises(ValueError, match="no window centre"):
        ssim(edited, image, border)


def test_mean_abs_change_known_values() -> None:
    before = np.zeros((16, 16, 3), np.uint8)
    after = before.copy()
    after[:4, :4] = 255  # 16 of 256 pixels change fully
    block = np.zeros((16, 16), bool)
    block[:4, :4] = True
    assert mean_abs_change(after, before) == pytest.approx(16 / 256)
    assert mean_abs_change(after, before, block) == pytest.approx(1.0)
    assert mean_abs_change(after, before, ~block) == 0.0
    assert mean_abs_change(before, after) == pytest.approx(16 / 256)  # absolute: symmetric
    red = before.copy()
    red[..., 0] = 51  # one channel of three by 0.2
    assert mean_abs_change(red, before) == pytest.approx(0.2 / 3)
    assert mean_abs_change(after, before, np.zeros((16, 16), bool)) == 0.0  # nothing selected, nothing changed


def test_squared_error_split_adds_up_to_the_mse() -> None:
    reference = np.zeros((2, 2, 3))
    image = np.array([[[0.5] * 3, [0.1] * 3], [[0.0] * 3, [0.2, 0.2, 0.5]]])
    region = np.array([[True, False], [False, False]])
    inside, outside = squared_error_split(image, reference, region)
    assert inside == pytest.approx(0.25 / 4)  # one pixel of error 0.5 over 4 pixels
    assert outside == pytest.approx((0.01 + 0.0 + 0.11) / 4)  # (0.04 + 0.04 + 0.25) / 3 = 0.11
    assert inside + outside == pytest.approx(((image - reference) ** 2).mean())
    assert squared_error_split(image, reference, ~region) == pytest.approx((outside, inside))
    with pytest.raises(ValueError, match="does not fit"):
        squared_error_split(image, reference, np.ones((3, 3), dtype=bool))


def test_errors(image: np.ndarray) -> None:
    other = image[:, :-1]
    for metric in (psnr, ssim, mean_abs_change, ssim_map):
        with pytest.raises(ValueError, match="differ in shape"):
            metric(image, other)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(image, image[..., 0])
    empty = np.zeros((SIZE, SIZE), bool)
    with pytest.raises(ValueError, match="selects no pixel"):
        psnr(shifted(image, 1), image, empty)
    with pytest.raises(ValueError, match="selects no window centre"):
        ssim(shifted(image, 1), image, empty)
    with pytest.raises(ValueError, match="uint8 .* or floating point"):
        psnr(image.astype(np.int64) + 10, image.astype(np.int64))  # 0-255 or 0-1? refused, not guessed
    wrong = np.ones((SIZE - 2, SIZE), bool)
    for metric in (psnr, ssim, mean_abs_change):
        with pytest.raises(ValueError, match="does not fit"):
            metric(shifted(image, 1), image, wrong)
