"""Tiled inference, auto batch and tile sizes."""


import numpy as np
import pytest
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
    # a batch's full-size results are taken off the memory first: at least the fp32 output, the
    # fp32 copy the colour conversion makes, and the uint8 result (1080p x4 at batch 8: over 7 GB)
    assert inference.output_bytes(8, 1080, 1920, 4) >= 8 * 1080 * 1920 * 16 * 3 * (4 + 4 + 1)
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


def test_tiles_are_equal_and_cover_with_little_overlap():
    for length, tile, ov in ((1080, 512, 16), (1920, 448, 16), (1000, 1024, 16), (1080, 1024, 16), (97, 40, 8)):
        spans = inference._tile_spans(length, tile, ov)
        sizes = {te - ts for ts, te, _, _ in spans}
        assert max(sizes) <= max(tile, 1) or len(spans) == 1
        assert max(sizes) - min(sizes) <= 1  # equal tiles: none pushed onto its neighbour
        for (_, b, _, _), (c, _, _, _) in zip(spans, spans[1:], strict=False):
            assert b - c >= ov  # every join has the overlap
    # 1080p x4 in 1024 px tiles: the old last-tile-at-the-edge plan computed 2.02x the frame's pixels
    assert inference.tiled_pixels(1080, 1920, 1024, 16) < 1.03
    assert inference.tiled_pixels(1080, 1920, 512, 16) < 1.06
    assert inference.tiled_pixels(100, 100, 0, 16) == 1.0


def test_the_batch_is_lowered_before_frames_are_tiled(monkeypatch):
    cpu = torch.device("cpu")
    fits = {1: 1500, 2: 1200, 3: 1000, 4: 700}  # batch -> the largest tile that fits
    monkeypatch.setattr(inference, "tile_for", lambda tile, ov, dev, nf, s, b, amp, frame=(0, 0): fits.get(b, 500))
    assert inference.batch_and_tile(8, 0, 16, cpu, 64, 4, None, (1080, 1920)) == (1, 1500)  # only one whole frame fits
    assert inference.batch_and_tile(8, 0, 16, cpu, 64, 4, None, (720, 1080)) == (2, 0)
    assert inference.batch_and_tile(8, 0, 16, cpu, 64, 4, None, (540, 960)) == (3, 0)
    assert inference.batch_and_tile(8, 0, 16, cpu, 64, 4, None, (3000, 3000)) == (1, 1500)  # tiles only when even one frame does not fit
    assert inference.batch_and_tile(8, 300, 16, cpu, 64, 4, None, (3000, 3000)) == (8, 300)  # a set tile is kept


def test_running_out_of_memory_retries_in_smaller_tiles():
    """A model that runs out of memory above 48x48 inputs: the batch is restored in
    smaller tiles, exactly as a run with those tiles from the start, and the tile is kept."""
    torch.manual_seed(0)
    inner = EDSR(1, 8, 1.0, 2).eval()

    class Tight(torch.nn.Module):
        arch = inner.arch

        def forward(self, x):
            if x.shape[-1] * x.shape[-2] > 48 * 48:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return inner(x)

    frames = bird()[None, :100, :90]
    tries = []
    deferred, tile = inference.upscale_frames_fitting(Tight(), frames, 2, device=torch.device("cpu"), tile=0, overlap=8, on_retry=tries.append)
    out = deferred()
    assert tries == [48] and tile == 48
    assert np.array_equal(out, inference.upscale_frames(inner, frames, 2, device=torch.device("cpu"), tile=48, overlap=8))
    with pytest.raises(torch.OutOfMemoryError):
        inference.upscale_frames_fitting(Tight(), frames, 2, device=torch.device("cpu"), tile=0, overlap=16)  # 4 x overlap is the floor


def test_out_of_memory_with_the_smallest_tiles_halves_the_batch():
    """When even the smallest tiles of a batch do not fit, the frames go half at a time."""
    torch.manual_seed(0)
    inner = EDSR(1, 8, 1.0, 2).eval()

    class OneAtATime(torch.nn.Module):
        arch = inner.arch

        def forward(self, x):
            if x.shape[0] > 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return inner(x)

    frames = np.stack([bird()[:40, :40], bird()[40:80, :40], bird()[80:120, :40]])
    deferred, _ = inference.upscale_frames_fitting(OneAtATime(), frames, 2, device=torch.device("cpu"), tile=0, overlap=8)
    assert np.array_equal(deferred(), inference.upscale_frames(inner, frames, 2, device=torch.device("cpu")))


def test_sixteen_bit_frames_keep_their_low_bits():
    """uint16 frames (a 10-bit source decoded deep) come back uint16 with their precision:
    a pixel-repeating "model" gives them back exactly, which 8-bit frames could not; with
    ``i420`` the planes are 10-bit (uint16, limited range)."""
    net = torch.nn.Upsample(scale_factor=2, mode="nearest")
    frames = (bird()[None, :32, :48].astype(np.uint16) * 257 + np.arange(48, dtype=np.uint16)[None, None, :, None])
    out = inference.upscale_frames(net, frames, 2, device=torch.device("cpu"))
    assert out.dtype == np.uint16 and out.shape == (1, 64, 96, 3)
    assert np.array_equal(out, np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2))
    planes = inference.upscale_frames(net, frames, 2, device=torch.device("cpu"), i420="bt709")
    assert planes.dtype == np.uint16 and planes.shape == (1, 96, 96) and 64 <= planes[0, :64].min() and planes.max() <= 960
    with pytest.raises(ValueError, match="uint8 or uint16"):
        inference.upscale_frames(net, frames.astype(np.float32), 2, device=torch.device("cpu"))


def test_a_continuous_model_restores_to_its_geometry_padded_or_cropped():
    """The picture at any scale (not tiled), then centred on black or cut to the frame."""
    from pipeline.media.geometry import geometry
    from pipeline.models.liif import LIIF

    torch.manual_seed(0)
    model = LIIF(n_resblocks=1, n_feats=8, hidden=8, layers=1).eval()
    x = torch.rand(1, 3, 36, 44)
    keep = inference.upscale_tensor(model, x, 2, tile=16, geometry=geometry(44, 36, 2.5, integer_model=False))
    assert keep.shape == (1, 3, 90, 110)
    default = inference.upscale_tensor(model, x, 2.5)  # no geometry: scale x the input, even sides
    assert torch.equal(default, keep)
    pad = inference.upscale_tensor(model, x, 2, geometry=geometry(44, 36, 2, "160x90", "pad", integer_model=False))
    assert pad.shape == (1, 3, 90, 160)
    ox = (160 - 110) // 2 // 2 * 2
    assert torch.equal(pad[..., ox:ox + 110], keep) and pad[..., :ox].abs().max() == 0 and pad[..., ox + 110:].abs().max() == 0
    crop_geo = geometry(44, 36, 2, "110x60", "crop", integer_model=False)
    crop = inference.upscale_tensor(model, x, 2, geometry=crop_geo)
    assert crop.shape == (1, 3, 60, 110) and crop_geo.picture == (90, 110)
    assert torch.equal(crop, keep[:, :, -crop_geo.offset[0]:-crop_geo.offset[0] + 60])


def test_an_integer_model_in_tiles_is_resized_to_a_smaller_picture():
    """x4 restored in tiles, then resized down to a 2.5x picture: the same as untiled."""
    from pipeline.media.geometry import geometry

    torch.manual_seed(0)
    model = EDSR(1, 8, 1.0, 4).eval()
    x = torch.rand(1, 3, 40, 48)
    geo = geometry(48, 40, 2.5)
    assert geo.picture == (100, 120) and not geo.resized
    whole = inference.upscale_tensor(model, x, 4, geometry=geo)
    tiled = inference.upscale_tensor(model, x, 4, tile=24, overlap=8, geometry=geo)
    assert whole.shape == tiled.shape == (1, 3, 100, 120)
    assert (whole - tiled).abs().max() < 2 / 255  # (as the uint8 tiling test: convolutions of other sizes sum in another order)
    assert (whole - tiled).abs().mean() < 1e-4
