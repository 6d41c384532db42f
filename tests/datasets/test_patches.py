"""Training pairs: bicubic inputs, effective patch sizes, texture-weighted and multi-scale patches."""

import numpy as np
import pytest
import torch

from pipeline.datasets.patches import PatchSampler, effective_patch, sample_pairs
from tests.conftest import bird


def test_sample_pairs_are_bicubic_downscales():
    img = bird()
    rng = np.random.default_rng(0)
    lr, hr = sample_pairs([img], 4, 48, 2, rng)
    assert lr.shape == (4, 3, 24, 24) and hr.shape == (4, 3, 48, 48)
    assert 0 <= float(lr.min()) and float(lr.max()) <= 1
    # each input is close to the 2x2 mean of its target (bicubic ~ box at this scale)
    box = torch.nn.functional.avg_pool2d(hr, 2)
    assert float((lr - box).abs().mean()) < 0.03


def test_effective_patch():
    small = [np.zeros((30, 50, 3), np.uint8)]
    assert effective_patch(small, 96, 4) == 28
    with pytest.raises(ValueError, match="too small"):
        effective_patch([np.zeros((3, 3, 3), np.uint8)], 96, 2)


def test_texture_patches_come_from_textured_regions():
    rng = np.random.default_rng(0)
    frame = np.full((96, 192, 3), 128, np.uint8)
    frame[:, 96:] = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)  # right half: texture
    textured = {}
    for mode in ("texture", "uniform"):
        s = PatchSampler([frame], 32, mode)
        textured[mode] = np.mean([s.sample(rng).std() > 20 for _ in range(400)])
    assert textured["texture"] >= 0.9
    assert 0.3 < textured["uniform"] < 0.65  # positions uniform over the frame: about half reach the textured half


def test_multiscale_pairs_include_the_half_size_frames():
    img = bird()  # 288 x 288
    s = PatchSampler([img], 48, multiscale=True)
    assert len(s.sources) == 2 and s.sources[1][0].shape[:2] == (img.shape[0] // 2, img.shape[1] // 2)
    lr, hr = sample_pairs(s, 6, 48, 2, np.random.default_rng(0))
    assert lr.shape == (6, 3, 24, 24) and hr.shape == (6, 3, 48, 48)


def test_texture_sampling_on_large_frames_with_flat_areas():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    frame[:540, :960] = 16  # a flat quadrant: float32 sums used to make its weights negative
    s = PatchSampler([frame], 96, "texture")
    w, _ = s._weights[0][0]
    assert (w >= 0).all() and abs(w.sum() - 1) < 1e-9
    picks = [s.sample(rng) for _ in range(200)]
    assert all(p.shape == (96, 96, 3) for p in picks)
    assert np.mean([p.std() < 1 for p in picks]) < 0.05  # a quarter of the positions, almost never picked
