"""PSNR and SSIM on Y (the papers' protocol)."""

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.metrics import (
    psnr_y,
    rgb_to_y,
    ssim_y,
)
from tests.conftest import DATA as CONF_DATA
from tests.metrics.conftest import blurred, noisy

DATA = Path(CONF_DATA)


def test_rgb_to_y_matlab_values():
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = rgb_to_y(px)
    assert y.dtype == np.float64 and y.shape == (1, 5)
    np.testing.assert_allclose(y[0], [235.0, 16.0, 81.481, 144.553, 40.966], atol=1e-9)


def test_psnr_identical_is_inf(bird):
    assert psnr_y(bird, bird.copy(), 4) == math.inf


def test_psnr_known_offset():
    # +10 on R, G and B raises Y by exactly 10 * 219 / 255 everywhere.
    a = np.full((64, 48, 3), 100, np.uint8)
    b = a + 10
    dy = 10 * 219 / 255
    expected = 10 * math.log10(255**2 / dy**2)
    assert psnr_y(a, b, 0) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(b, a, 3) == pytest.approx(expected, abs=1e-9)


def test_psnr_crop_excludes_border(bird):
    b = bird.copy()
    b[:4] = 255 - b[:4]  # change only the top 4 rows
    b[:, -4:] = 0  # and the right 4 columns
    assert math.isfinite(psnr_y(bird, b, 0))
    assert math.isfinite(psnr_y(bird, b, 3))
    assert psnr_y(bird, b, 4) == math.inf
    assert ssim_y(bird, b, 0) < 0.99
    assert ssim_y(bird, b, 4) == pytest.approx(1.0, abs=1e-12)


def test_shape_and_crop_errors(bird):
    with pytest.raises(ValueError, match=r"\(288, 288, 3\).*\(288, 287, 3\)"):
        psnr_y(bird, bird[:, :287], 0)
    with pytest.raises(ValueError, match=r"\(288, 288, 3\).*\(287, 288, 3\)"):
        ssim_y(bird, bird[:287], 0)
    with pytest.raises(ValueError, match="crop"):
        psnr_y(bird, bird, 144)
    with pytest.raises(ValueError, match="crop"):
        ssim_y(bird, bird, 200)
    with pytest.raises(ValueError):
        psnr_y(bird, bird, -1)


def test_ssim_identical_is_one(bird):
    assert ssim_y(bird, bird.copy(), 4) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("degrade", [blurred, noisy])
def test_ssim_matches_skimage(bird, degrade):
    from skimage.metrics import structural_similarity

    other = degrade(bird)
    crop = 4
    y1 = rgb_to_y(bird)[crop:-crop, crop:-crop]
    y2 = rgb_to_y(other)[crop:-crop, crop:-crop]
    ref = structural_similarity(
        y1, y2, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim_y(bird, other, crop) == pytest.approx(ref, abs=1e-6)


def test_degraded_scores_lower(bird):
    soft, grainy = blurred(bird), noisy(bird)
    assert ssim_y(bird, soft, 4) < 0.95
    assert ssim_y(bird, grainy, 4) < ssim_y(bird, soft, 4)  # sigma-25 noise is worse than x4 blur here
    assert 20 < psnr_y(bird, grainy, 4) < psnr_y(bird, soft, 4) < 40
