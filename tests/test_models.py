"""EDSR shapes, checkpoints (own and official format), tiled inference, fine-tuning."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import inference
from pipeline.config import TrainConfig
from pipeline.models import checkpoint
from pipeline.models.edsr import EDSR, receptive_radius
from pipeline.training import effective_patch, finetune, reservoir, sample_pairs

BIRD = "tests/data/bird.png"


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


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_checkpoint_roundtrip_and_official_format(tmp_path, scale):
    torch.manual_seed(0)
    m = EDSR(3, 8, 1.0, scale).eval()
    x = torch.rand(1, 3, 9, 11)
    path = tmp_path / "m.pt"
    checkpoint.save(m, str(path), {"note": "test"})
    m2, meta = checkpoint.load(str(path))
    assert meta["format"] == "reelsr.edsr/1" and meta["provenance"]["note"] == "test"
    assert meta["arch"] == {"n_resblocks": 3, "n_feats": 8, "res_scale": 1.0, "scale": scale}
    assert torch.equal(m(x), m2(x))
    # The official EDSR-PyTorch files are bare state dicts with the same module names.
    official = tmp_path / f"edsr_baseline_x{scale}.pt"
    torch.save(m.state_dict(), official)
    m3, meta3 = checkpoint.load(str(official))
    assert meta3["format"] == "edsr-pytorch" and meta3["arch"]["scale"] == scale and meta3["arch"]["n_resblocks"] == 3
    assert torch.equal(m(x), m3(x))


def test_checkpoint_loads_onto_the_requested_device(tmp_path):
    """load() must move the model to map_location (a GPU in real runs): "meta" stands in
    for a device other than the CPU here."""
    path = tmp_path / "m.pt"
    checkpoint.save(EDSR(1, 8, 1.0, 2), str(path), {})
    model, _ = checkpoint.load(str(path), map_location="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        checkpoint.load(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        checkpoint.load(str(bad))
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not an EDSR state dict"):
        checkpoint.load(str(other))
    extra = tmp_path / "extra.pt"
    torch.save({**EDSR(1, 8, 1.0, 2).state_dict(), "stray.weight": torch.zeros(1)}, extra)
    with pytest.raises(ValueError, match="weights do not fit"):
        checkpoint.load(str(extra))


def test_tiled_inference_matches_whole_frame():
    torch.manual_seed(0)
    m = EDSR(2, 8, 1.0, 2).eval()
    frames = np.asarray(Image.open(BIRD).convert("RGB"))[None, :100, :90]
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


def test_sample_pairs_are_bicubic_downscales():
    img = np.asarray(Image.open(BIRD).convert("RGB"))
    rng = np.random.default_rng(0)
    lr, hr = sample_pairs([img], 4, 48, 2, rng)
    assert lr.shape == (4, 3, 24, 24) and hr.shape == (4, 3, 48, 48)
    assert 0 <= float(lr.min()) and float(lr.max()) <= 1
    # each input is close to the 2x2 mean of its target (bicubic ~ box at this scale)
    box = torch.nn.functional.avg_pool2d(hr, 2)
    assert float((lr - box).abs().mean()) < 0.03


def test_reservoir_bounds_and_keeps_order():
    out = reservoir(iter(range(1000)), 10, seed=0)
    assert len(out) == 10 and out == sorted(out) and out[-1] > 100
    assert reservoir(iter(range(5)), 10, seed=0) == list(range(5))


def test_effective_patch():
    small = [np.zeros((30, 50, 3), np.uint8)]
    assert effective_patch(small, 96, 4) == 28
    with pytest.raises(ValueError, match="too small"):
        effective_patch([np.zeros((3, 3, 3), np.uint8)], 96, 2)


def test_finetune_lowers_loss_on_a_real_image():
    img = np.asarray(Image.open(BIRD).convert("RGB"))
    torch.manual_seed(0)
    m = EDSR(2, 16, 1.0, 2)
    cfg = TrainConfig(steps=60, patch_size=48, batch_size=8, lr=5e-4)
    stats = finetune(m, [img], cfg, 2, torch.device("cpu"), seed=0)
    assert stats["loss_last"] < 0.5 * stats["loss_first"], stats


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_tiny_weights_load_and_beat_bicubic(scale):
    """The tiny preset's starting weights ship with the package, describe themselves,
    and restore a real image (Set5 bird, not in their training data) better than bicubic."""
    from pipeline.metrics.fullref import psnr_y
    from pipeline.metrics.resize import bicubic_resize_uint8

    path = checkpoint.resolve("builtin:edsr_2x16", scale)
    model, meta = checkpoint.load(path)
    assert meta["arch"] == {"n_resblocks": 2, "n_feats": 16, "res_scale": 1.0, "scale": scale}
    assert meta["provenance"]["trained_by"] == "pipeline/data/make_tiny_weights.py"
    hr = np.asarray(Image.open(BIRD).convert("RGB"))
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    hr = hr[:h, :w]
    lr = bicubic_resize_uint8(hr, (h // scale, w // scale))
    sr = inference.upscale_frames(model, lr[None], scale, device=torch.device("cpu"))[0]
    bic = bicubic_resize_uint8(lr, (h, w))
    assert psnr_y(sr, hr, crop=scale) > psnr_y(bic, hr, crop=scale) + 0.5


def test_resolve_errors(tmp_path):
    assert checkpoint.resolve(None, 2) is None
    with pytest.raises(ValueError, match="no shipped weights 'builtin:nope'"):
        checkpoint.resolve("builtin:nope", 2)
    with pytest.raises(FileNotFoundError, match="model.pretrained not found"):
        checkpoint.resolve(str(tmp_path / "x.pt"), 2)
