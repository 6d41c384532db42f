"""Tiled inference, auto batch and tile sizes."""


import numpy as np
import torch

from pipeline import inference
from pipeline.models.edsr import EDSR, receptive_radius
from tests.conftest import bird


def test_tiled_inference_matches_whole_frame():
    torch.manual_seed(0)
    m = EDSR(2, 8, 1.0, 2).eval()
    frames = bird()[None, :100, :90]
    whole = inference.upscale_frames(m, frames, 2, device=torch.device("cpu"), tile=0)
    overlap = 2 * receptive_radius(2)
    tiled = inference.upscale_frames(m, frames, 2, device=torch.device("cpu"), tile=40, overlap=overlap)
    assert tiled.shape == whole.shape == (1, 200, 180, 3)
    # With the overlap covering the receptive field, tiles stitch with no seam (float rounding only).
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    # Too small an overlap leaves visible seams: the test can fail.
    seamy = inference.upscale_frames(m, frames, 2, device=torch.device("cpu"), tile=40, overlap=0)
    assert np.abs(seamy.astype(int) - whole.astype(int)).max() > 1


def test_tile_spans_cover_exactly():
    for length, tile, ov in [(100, 40, 10), (41, 40, 8), (40, 40, 8), (257, 64, 16)]:
        spans = inference._tile_spans(length, tile, ov)
        owned = [i for _, _, a, b in spans for i in range(a, b)]
        assert owned == list(range(length))
        assert all(e - s <= tile and s <= a and b <= e for s, e, a, b in spans)


def test_auto_batch_and_tiles():
    cpu = torch.device("cpu")
    assert inference.auto_batch(cpu, 64, 144, 176) == 1  # 6.5 MB per feature map: one frame at a time
    assert inference.auto_batch(cpu, 16, 144, 176) == 2
    assert inference.auto_batch(cpu, 16, 36, 44) == 8  # capped
    assert inference.auto_batch(torch.device("cuda"), 64, 360, 640) == inference.GPU_BATCH
    assert inference.tile_for(300, 16, cpu, 64, 4, 1, None) == 300  # a set tile is kept
    auto = inference.tile_for(0, 16, cpu, 64, 4, 1, None, (1080, 1920))
    assert 64 <= auto <= inference.CPU_TILE and auto % 64 == 0
    # GPU tiles from free memory: more memory or a smaller batch -> larger tiles; 1080p x4
    # on 40 GiB free in bf16 with batch 8 must be tiled, a 640x360 frame must not
    bf16 = torch.bfloat16
    t40 = inference.fit_tile(40 << 30, 64, 4, 8, bf16)
    assert 360 < t40 < 1920 and t40 % 64 == 0
    # a batch's full-size results are taken off the memory first: 1080p x4 at batch 8 is 4.8 GB
    assert inference.output_bytes(8, 1080, 1920, 4) == 8 * 1080 * 1920 * 16 * 3 * 6
    assert inference.fit_tile(80 << 30, 64, 4, 8, bf16) > t40 > inference.fit_tile(40 << 30, 64, 4, 16, bf16)
    assert inference.fit_tile(1 << 20, 64, 4, 8, bf16) == 64  # never below 64 px
    assert inference.fit_tile(-5, 64, 4, 8, bf16) == 64  # less than nothing left: still 64


def test_activation_estimate_covers_the_largest_maps():
    """The per-pixel estimate that sizes GPU tiles is at least what the widest layer
    holds at once (its input and output), at x2 and x4."""
    for scale in (2, 4):
        model = EDSR(scale=scale, n_resblocks=2, n_feats=16).eval()
        sizes = []
        hooks = [m.register_forward_hook(lambda _m, i, o, sizes=sizes: sizes.append(i[0].numel() + o.numel()))
                 for m in model.modules() if not list(m.children())]
        with torch.inference_mode():
            model(torch.rand(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        assert max(sizes) * 4 / (32 * 32) <= inference.activation_bytes_per_pixel(16, scale, None)
