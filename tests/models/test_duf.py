"""DUF: windows in, the centre frame upscaled out; starts near bicubic; checkpoints."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.models import build_model, checkpoint
from pipeline.models.duf import DUF


def smooth_window(frames: int, h: int = 24, w: int = 32, shift: float = 0.0) -> torch.Tensor:
    """A smooth picture panning by ``shift`` px per frame: (1, T, 3, H, W)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = [0.5 + 0.35 * np.sin((xx + shift * t) / 4.0) * np.cos(yy / 5.0) for t in range(frames)]
    return torch.from_numpy(np.stack(out)).float()[None, :, None].repeat(1, 1, 3, 1, 1)


@pytest.mark.parametrize("scale,frames", [(2, 3), (3, 5), (4, 7)])
def test_shapes_and_a_start_near_bicubic(scale, frames):
    torch.manual_seed(0)
    m = DUF(n_layers=3, n_feats=8, growth=4, frames=frames, scale=scale).eval()
    x = smooth_window(frames)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (1, 3, 24 * scale, 32 * scale)
    # before any training its filters are the bicubic kernel's positive part: close to a bicubic upscale
    bicubic = F.interpolate(x[:, frames // 2], scale_factor=scale, mode="bicubic", align_corners=False)
    assert (y - bicubic).abs().mean() < 0.01
    # ... and far from a wrong-phase upscale (shifted half a low-resolution pixel)
    k = scale // 2
    assert (y[..., k:] - bicubic[..., :-k]).abs().mean() > 2 * (y - bicubic).abs().mean()


def test_the_neighbouring_frames_are_used_and_the_window_is_checked():
    torch.manual_seed(0)
    m = DUF(n_layers=3, n_feats=8, growth=4, frames=5, scale=2).eval()
    torch.nn.init.normal_(m.residual[-1].weight, std=0.05)  # as after training (it starts at zero)
    x = smooth_window(5, shift=1.0)
    y = m(x)
    x2 = x.clone()
    x2[:, 0] = 1 - x2[:, 0]  # change only the first frame of the window
    assert (m(x2) - y).abs().max() > 1e-6  # the 3D body sees it (a model blind to it gives exactly the same output)
    with pytest.raises(ValueError, match=r"takes \(N, 5, 3, H, W\) windows"):
        m(x[:, :3])
    with pytest.raises(ValueError, match="odd number of frames"):
        DUF(frames=4)
    with pytest.raises(ValueError, match="at least 3 dense layers"):
        DUF(n_layers=2, frames=7)


def test_a_few_steps_learn_and_checkpoints_describe_the_model(tmp_path):
    torch.manual_seed(0)
    m = build_model({"name": "duf", "n_layers": 2, "n_feats": 8, "growth": 4, "frames": 3, "scale": 2})
    hr = smooth_window(3, 32, 32, shift=0.5)[:, 1]
    lr = F.avg_pool2d(smooth_window(3, 32, 32, shift=0.5)[0], 2)[None]  # (1, 3, 3, 16, 16)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    first = None
    for _ in range(30):
        loss = (m(lr) - hr).abs().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first
    path = tmp_path / "duf.pt"
    checkpoint.save(m, str(path), {"note": "test"})
    m2, meta = checkpoint.load(str(path))
    assert meta["arch"] == {"name": "duf", "n_layers": 2, "n_feats": 8, "growth": 4, "frames": 3, "scale": 2}
    with torch.no_grad():
        assert torch.equal(m(lr), m2(lr))
