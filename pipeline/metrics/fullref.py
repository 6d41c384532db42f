"""Full-reference quality metrics on the luma (Y) channel: PSNR and SSIM.

These follow the conventions of the super-resolution literature (BasicSR's
``calculate_psnr`` / ``calculate_ssim`` with ``test_y_channel=True``, and the
MATLAB scripts used by the SR papers):

* Y is BT.601 luma as MATLAB ``rgb2ycbcr``: Y = 16 + 65.481 R + 128.553 G + 24.966 B
  with R, G, B in [0, 1], giving Y in [16, 235]. Like BasicSR, Y is kept in float64
  and NOT rounded (MATLAB's ``rgb2ycbcr`` on uint8 input rounds Y to integers,
  which changes PSNR by about 0.01 dB).
* ``crop`` pixels are removed at every border before measuring (usually the
  upscale factor).
* SSIM is Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, L = 255, averaged over the 'valid' region only (no padding).
"""

import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma as MATLAB ``rgb2ycbcr`` (unrounded).

    Args:
        rgb: uint8 array (H, W, 3), RGB order.

    Returns:
        float64 array (H, W) in [16, 235]: 16 + (65.481 R + 128.553 G + 24.966 B)
        with R, G, B = channel / 255.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return rgb.astype(np.float64) @ (_Y_WEIGHTS / 255.0) + 16.0


def _cropped_y_pair(a: np.ndarray, b: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    crop = int(crop)
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    ya = rgb_to_y(a)
    yb = rgb_to_y(b)
    h, w = ya.shape
    if h - 2 * crop <= 0 or w - 2 * crop <= 0:
        raise ValueError(f"crop={crop} leaves nothing of images of shape {a.shape} / {b.shape}")
    return ya[crop : h - crop, crop : w - crop], yb[crop : h - crop, crop : w - crop]


def psnr_y(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    """PSNR in dB on Y, peak 255, after cropping ``crop`` px at each border.

    Args:
        a, b: uint8 RGB arrays (H, W, 3) of equal shape (order does not matter).
        crop: pixels removed at each of the four borders (>= 0).

    Returns:
        PSNR in dB (higher is better); ``math.inf`` when the cropped Y planes are identical.

    Raises:
        ValueError: shapes differ (both are named), or the crop leaves nothing.
    """
    return psnr_plane(*_cropped_y_pair(a, b, crop))


def psnr_plane(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB (peak 255) of two float (H, W) planes in [0, 255] of equal shape; inf when equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / mse))


def _gaussian_window_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable Gaussian (the 11x11 window is the outer product of g with itself),
    # then keep only pixels whose window lies fully inside the image ('valid').
    from scipy.ndimage import correlate1d  # here, not at the top: every Ray worker imports this package, few run SSIM

    r = len(g) // 2
    out = correlate1d(img, g, axis=0, mode="constant")
    out = correlate1d(out, g, axis=1, mode="constant")
    return out[r : img.shape[0] - r, r : img.shape[1] - r]


def ssim_y(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    """SSIM (Wang et al. 2004) on Y after cropping ``crop`` px at each border.

    11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255; the SSIM map
    is averaged over the 'valid' region (pixels whose window fits in the cropped
    image), as BasicSR ``calculate_ssim`` and the MATLAB ``ssim_index`` code.

    Args:
        a, b: uint8 RGB arrays (H, W, 3) of equal shape.
        crop: pixels removed at each of the four borders (>= 0).

    Returns:
        Mean SSIM, a float in [-1, 1] (1.0 when identical; higher is better).

    Raises:
        ValueError: shapes differ (both are named), or the crop leaves nothing /
        less than 11x11 pixels.
    """
    ya, yb = _cropped_y_pair(a, b, crop)
    if ya.shape[0] < 11 or ya.shape[1] < 11:
        raise ValueError(
            f"SSIM needs at least 11x11 pixels after crop={crop}; images {np.shape(a)} leave {ya.shape}"
        )
    return ssim_plane(ya, yb)


def ssim_plane(ya: np.ndarray, yb: np.ndarray) -> float:
    """SSIM (settings as ``ssim_y``) of two float (H, W) planes in [0, 255], each >= 11x11."""
    ya, yb = np.asarray(ya, np.float64), np.asarray(yb, np.float64)
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    g = _gaussian_window_1d()
    mu_a = _filter_valid(ya, g)
    mu_b = _filter_valid(yb, g)
    var_a = _filter_valid(ya * ya, g) - mu_a**2
    var_b = _filter_valid(yb * yb, g) - mu_b**2
    cov_ab = _filter_valid(ya * yb, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map.mean())
