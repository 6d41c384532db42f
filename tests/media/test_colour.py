"""RGB to I420 on the device: within a grey level of swscale's conversion, and encoded
through the same writer."""

import numpy as np
import pytest
import torch

from pipeline.media.chunks import from_rgb
from pipeline.media.colour import rgb_to_i420
from tests.conftest import bird, psnr


@pytest.mark.parametrize("colorspace", ["bt601", "bt709"])
def test_matches_swscale(colorspace):
    img = bird()
    ref = from_rgb(img, colorspace).to_ndarray()  # swscale, (H * 3 / 2, W)
    mine = rgb_to_i420(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255, colorspace)[0].numpy()
    h = img.shape[0]
    assert mine.shape == ref.shape and mine.dtype == np.uint8
    assert np.abs(ref[:h].astype(int) - mine[:h]).max() <= 1  # luma: rounding only
    assert psnr(ref[h:], mine[h:]) > 45  # chroma: a 2x2 mean against swscale's filter
    assert 16 <= mine[:h].min() and mine[:h].max() <= 235  # limited range


def test_rejects_odd_sides_and_unknown_matrices():
    with pytest.raises(ValueError, match="even"):
        rgb_to_i420(torch.rand(1, 3, 5, 4), "bt601")
    with pytest.raises(ValueError, match="colorspace"):
        rgb_to_i420(torch.rand(1, 3, 4, 4), "bt2020")


@pytest.mark.parametrize("height", [6, 270])
def test_any_even_height_packs_like_pyav(height):
    """Heights that are 2 mod 4 (x2 of an odd source height, 1080p / 4 ...) pack too."""
    img = bird()[:height, :48]
    mine = rgb_to_i420(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255, "bt601")[0].numpy()
    ref = from_rgb(img, "bt601").to_ndarray()
    assert mine.shape == ref.shape == (height * 3 // 2, 48)
    assert np.abs(ref[:height].astype(int) - mine[:height]).max() <= 1
    assert psnr(ref[height:], mine[height:]) > 40


def test_ten_bit_planes_match_swscale():
    """From 16-bit RGB, the 10-bit planes are within an 8-bit level (4 10-bit levels)
    of swscale's rgb48 -> yuv420p10le in luma (1.1 levels apart on average: swscale's
    fixed-point rounding), and use the 10-bit limited range."""
    img = bird().astype(np.uint16) * 257 + np.arange(bird().shape[1], dtype=np.uint16)[None, :, None] % 200
    ref = from_rgb(img, "bt709").to_ndarray()  # (H * 3 / 2, W) uint16 samples
    mine = rgb_to_i420(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None] / 65535, "bt709", bits=10)[0].numpy()
    h = img.shape[0]
    assert mine.shape == ref.shape and mine.dtype == ref.dtype == np.uint16
    assert np.abs(ref[:h].astype(int) - mine[:h]).max() <= 4 and np.abs(ref[:h].astype(int) - mine[:h]).mean() < 1.5
    assert 64 <= mine[:h].min() and mine[:h].max() <= 940
    assert psnr(ref[h:] / 4, mine[h:] / 4) > 45
