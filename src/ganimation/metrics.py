"""Image-comparison metrics for the ground-truth benchmark: PSNR, SSIM and change maps.

Written here rather than taken from scikit-image to keep the install small (scikit-image
would be the only user of SciPy); the SSIM follows Wang et al. (2004) with the usual 11x11
Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, computed on each RGB channel and averaged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _as_float(image: np.ndarray) -> np.ndarray:
    """uint8 (0-255) or floating point (0-1) -> float64 in [0, 1]; other integers are ambiguous."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be uint8 (0-255) or floating point (0-1), got {array.dtype}")
    return array.astype(np.float64)


def _check_pair(first: np.ndarray, second: np.ndarray) -> None:
    if np.shape(first) != np.shape(second):
        raise ValueError(f"images differ in shape: {np.shape(first)} vs {np.shape(second)}")


def _mask(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A boolean (H, W) mask, checked against the image's height and width."""
    selected = np.asarray(mask, dtype=bool)
    if selected.shape != np.shape(image)[:2]:
        raise ValueError(f"mask of shape {selected.shape} does not fit images of shape {np.shape(image)}")
    return selected


def _squared_error_map(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(H, W) squared error in [0, 1] units, averaged over the channels."""
    _check_pair(image, reference)
    squared = (_as_float(image) - _as_float(reference)) ** 2
    return squared.mean(axis=2) if squared.ndim == 3 else squared


def psnr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (or uint8), optionally inside a mask.

    Identical images give ``inf``.
    """
    squared = _squared_error_map(image, reference)
    if mask is not None:
        selected = _mask(mask, image)
        if not selected.any():
            raise ValueError("PSNR mask selects no pixel")
        squared = squared[selected]
    error = float(squared.mean())
    return math.inf if error == 0.0 else 10.0 * math.log10(1.0 / error)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coordinates = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    profile = torch.exp(-(coordinates ** 2) / (2 * sigma ** 2))
    profile = profile / profile.sum()
    return torch.outer(profile, profile)[None, None]  # (1, 1, size, size)


def ssim_map(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (H - 10, W - 10) averaged over channels ('valid' windows only)."""
    _check_pair(image, reference)
    first = torch.from_numpy(_as_float(image))
    second = torch.from_numpy(_as_float(reference))
    if first.ndim == 2:
        first, second = first[..., None], second[..., None]
    first = first.permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    second = second.permute(2, 0, 1)[:, None]
    window = _gaussian_window()
    if first.shape[-1] < window.shape[-1] or first.shape[-2] < window.shape[-2]:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {tuple(first.shape[-2:])}")
    mean_x, mean_y = F.conv2d(first, window), F.conv2d(second, window)
    var_x = F.conv2d(first * first, window) - mean_x ** 2
    var_y = F.conv2d(second * second, window) - mean_y ** 2
    covariance = F.conv2d(first * second, window) - mean_x * mean_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2))
    return values[:, 0].mean(0).numpy()


def ssim(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM, optionally over the windows whose centre lies inside ``mask``."""
    values = ssim_map(image, reference)
    if mask is None:
        return float(values.mean())
    inner = _mask(mask, image)[5:-5, 5:-5]
    if not inner.any():
        raise ValueError("SSIM mask selects no window centre")
    return float(values[inner].mean())


def mean_abs_change(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference (0-1 scale) between two images, optionally inside a mask."""
    _check_pair(image, reference)
    difference = np.abs(_as_float(image) - _as_float(reference))
    if difference.ndim == 3:
        difference = difference.mean(axis=2)
    if mask is not None:
        selected = _mask(mask, image)
        return float(difference[selected].mean()) if selected.any() else 0.0
    return float(difference.mean())


def squared_error_split(image: np.ndarray, reference: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """The mean squared error (0-1 scale) of ``image`` against ``reference``, split in two parts.

    Returns (the part from pixels inside ``region``, the part from the others), each a sum over its
    pixels divided by the number of *all* pixels, so the two add up to the whole image's MSE. With
    ``region`` = where the true edit differs from the source, it tells whether an edit loses to
    copying the input by drawing the change badly (first part) or by disturbing the rest (second).
    """
    squared = _squared_error_map(image, reference)
    selected = _mask(region, image)
    return float(squared[selected].sum() / squared.size), float(squared[~selected].sum() / squared.size)
