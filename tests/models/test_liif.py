"""The continuous-scale model: any output size from one model, a start equal to bicubic,
the encoder of an EDSR checkpoint, checkpoints that rebuild it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.models import build_model, checkpoint, describe
from pipeline.models.edsr import EDSR
from pipeline.models.liif import LIIF, load_encoder, output_size, pixel_centres


def smooth(h: int = 20, w: int = 28) -> torch.Tensor:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = 0.5 + 0.35 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    return torch.from_numpy(img).float()[None, None].repeat(1, 3, 1, 1)


@pytest.mark.parametrize("scale", [1.0, 2.0, 2.5, 3.7, 4.0])
def test_any_scale_and_a_start_equal_to_bicubic(scale):
    torch.manual_seed(0)
    m = LIIF(n_resblocks=2, n_feats=8, hidden=16, layers=2, scale=scale).eval()
    x = smooth()
    with torch.no_grad():
        y = m(x)
    assert y.shape[-2:] == output_size(20, 28, scale) == (round(20 * scale), round(28 * scale))
    # the last layer starts at zero: the output is the bicubic upscale, whatever the features
    assert torch.allclose(y, F.interpolate(x, size=y.shape[-2:], mode="bicubic", align_corners=False), atol=1e-4)


def test_a_trained_head_reads_the_features_and_sizes_are_free():
    torch.manual_seed(0)
    m = LIIF(n_resblocks=2, n_feats=8, hidden=16, layers=2).eval()
    torch.nn.init.normal_(m.mlp[-1].weight, std=0.1)  # as after training
    x = smooth()
    with torch.no_grad():
        y = m(x, size=(37, 61))  # any size, not a multiple of the input's, aspect not kept
        base = F.interpolate(x, size=(37, 61), mode="bicubic", align_corners=False)
        assert y.shape == (1, 3, 37, 61) and (y - base).abs().mean() > 1e-4
        # a few pixels asked by coordinates are those pixels of the whole output
        ys, xs = pixel_centres(37), pixel_centres(61)
        picks = [(0, 0), (5, 17), (36, 60), (20, 3)]
        coords = torch.tensor([[[ys[i], xs[j]] for i, j in picks]])
        some = m(x, size=(37, 61), coords=coords)
        assert torch.allclose(some[0].T, torch.stack([y[0, :, i, j] for i, j in picks]), atol=1e-5)
        # one output block or many: the same pixels
        import pipeline.models.liif as liif
        was, liif.QUERY_BLOCK = liif.QUERY_BLOCK, 100
        try:
            assert torch.allclose(m(x, size=(37, 61)), y, atol=1e-6)
        finally:
            liif.QUERY_BLOCK = was


def test_scale_is_checked_and_the_checkpoint_rebuilds_the_model(tmp_path):
    for bad in (0.5, 4.5, float("nan"), "2"):
        with pytest.raises(ValueError, match=r"scale must be a number in \[1, 4\]"):
            LIIF(scale=bad)
    m = build_model({"name": "liif", "n_resblocks": 2, "n_feats": 8, "hidden": 16, "layers": 2, "scale": 3.5})
    assert describe(m.arch) == "EDSR 2x8 + LIIF 2x16 x3.5"
    checkpoint.save(m, str(tmp_path / "m.pt"), {"note": "test"})
    again, meta = checkpoint.load(str(tmp_path / "m.pt"))
    assert isinstance(again, LIIF) and again.scale == 3.5 and meta["arch"]["name"] == "liif"
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), m.state_dict().values(), strict=True))


def test_the_encoder_of_an_edsr_checkpoint_loads():
    torch.manual_seed(1)
    edsr = EDSR(2, 8, 1.0, 2)
    m = LIIF(n_resblocks=2, n_feats=8, hidden=16, layers=2)
    n = load_encoder(m, edsr.state_dict())
    assert n == len([k for k in edsr.state_dict() if k.startswith(("head.", "body."))])
    assert torch.equal(m.body[0].body[0].weight, edsr.body[0].body[0].weight)
    with pytest.raises(ValueError, match="do not fit this model's encoder"):
        load_encoder(LIIF(n_resblocks=2, n_feats=16), edsr.state_dict())
