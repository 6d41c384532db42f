"""EDSR shapes and sizes."""

import pytest
import torch

from pipeline.models.edsr import EDSR


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_shapes(scale):
    m = EDSR(2, 8, 1.0, scale)
    y = m(torch.rand(2, 3, 12, 10))
    assert y.shape == (2, 3, 12 * scale, 10 * scale)


def test_edsr_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale must be 2, 3 or 4, got 5"):
        EDSR(1, 8, 1.0, 5)


def test_edsr_paper_sizes():
    # EDSR-baseline x2 has about 1.37M parameters (paper: 1.5M including x3/x4 variants' tails)
    n = sum(p.numel() for p in EDSR(16, 64, 1.0, 2).parameters() if p.requires_grad)
    assert 1.3e6 < n < 1.45e6
    n_full = sum(p.numel() for p in EDSR(32, 256, 0.1, 2).parameters() if p.requires_grad)
    assert 40e6 < n_full < 41e6  # paper: 43M with the x4 tail
