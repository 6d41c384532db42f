"""DUF (Jo et al., "Deep Video Super-Resolution Network Using Dynamic Upsampling Filters
Without Explicit Motion Compensation", CVPR 2018): a window of T low-resolution frames
in, the centre frame upscaled out.

3D convolutions over the window (a dense block: each layer adds ``growth`` feature maps)
predict, for every low-resolution pixel and every one of its scale x scale output
sub-pixels, a 5x5 filter (softmax-normalised) that is applied to the centre frame's 5x5
neighbourhood, and a residual that adds the detail a filter cannot (the paper's "R"
branch). Motion is never estimated: the filters are where the network puts it.

The paper's DUF-16L has 3 dense layers that keep the window's length and 3 that shrink it
(3x3x3 convolutions without temporal padding), growth 32, 64 features, batch norm. Here
``n_layers`` counts the dense layers, the last (T - 1) / 2 of which shrink the window to
the centre frame (T = 7: 3), and there is no batch norm: the model is fine-tuned per
video on small batches, where batch statistics are noise (EDSR dropped it for the same
reason).

The network takes and returns float RGB in [0, 1], like EDSR: ``forward`` takes
(N, T, 3, H, W) and returns (N, 3, scale*H, scale*W), not clamped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.registry import ARCHS

FILTER = 5  # side of the dynamic filters, as in the paper


class DenseLayer(nn.Module):
    """ReLU-1x1x1 conv-ReLU-3x3x3 conv adding ``growth`` maps to its input's; ``shrink``:
    no temporal padding, so the window loses a frame at each end (the input is cut to
    match before the concatenation)."""

    def __init__(self, c_in: int, growth: int, shrink: bool) -> None:
        super().__init__()
        self.shrink = shrink
        self.bottleneck = nn.Conv3d(c_in, c_in, 1)
        self.conv = nn.Conv3d(c_in, growth, 3, padding=(0 if shrink else 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, C, H, W) frames-first features (see ``per_frame``)."""
        y = per_frame(self.conv, F.relu(per_frame(self.bottleneck, F.relu(x))))
        if self.shrink:
            x = x[:, 1:-1]
        return torch.cat([x, y], 2)


def per_frame(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (a 3D convolution, temporal padding 0 or (kt - 1) / 2) over frames-first
    features (N, T, C, H, W), as kt 2D convolutions of the frames, one per temporal tap,
    summed: the same sums on PyTorch's fast 2D kernels, where its CPU Conv3d takes a
    generic path (DUF 6x32 on an 80x60 window, one thread: 0.53 s as Conv3d, 0.22 s so;
    on 176x144: 1.91 and 1.76 s). The parameters stay the Conv3d's."""
    kt, pt = conv.kernel_size[0], conv.padding[0]
    if pt:
        x = F.pad(x, (0, 0, 0, 0, 0, 0, pt, pt))  # zeros before the first frame and after the last, as Conv3d pads
    n, t, c, h, w = x.shape
    t_out = t - kt + 1
    y = None
    for d in range(kt):
        part = F.conv2d(x[:, d:d + t_out].reshape(n * t_out, c, h, w), conv.weight[:, :, d], conv.bias if d == 0 else None,
                        padding=conv.padding[1:])
        y = part if y is None else y.add_(part)
    return y.view(n, t_out, *y.shape[1:])


@ARCHS.register("duf", help="DUF: a window of frames (model.frames) through 3D convolutions predicts per-pixel 5x5 upsampling filters for the centre frame, plus a residual")
class DUF(nn.Module):
    """Dynamic upsampling filters over a window of ``frames`` (odd) frames."""

    def __init__(self, n_layers: int = 6, n_feats: int = 32, growth: int = 16, frames: int = 7, scale: int = 4) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        if frames < 1 or frames % 2 == 0:
            raise ValueError(f"DUF needs an odd number of frames (the centre one is restored), got {frames}")
        shrinking = (frames - 1) // 2
        if n_layers < shrinking:
            raise ValueError(f"DUF with {frames} frames needs at least {shrinking} dense layers (each shrinking one takes a frame "
                             f"off each end), got n_layers={n_layers}")
        self.arch = {"name": "duf", "n_layers": n_layers, "n_feats": n_feats, "growth": growth, "frames": frames, "scale": scale}
        self.scale, self.frames = scale, frames
        self.head = nn.Conv3d(3, n_feats, (1, 3, 3), padding=(0, 1, 1))
        layers, c = [], n_feats
        for i in range(n_layers):
            layers.append(DenseLayer(c, growth, shrink=i >= n_layers - shrinking))
            c += growth
        self.body = nn.Sequential(*layers)
        self.join = nn.Conv3d(c, 4 * n_feats, (1, 3, 3), padding=(0, 1, 1))
        r2 = scale * scale
        self.residual = nn.Sequential(nn.Conv3d(4 * n_feats, 4 * n_feats, 1), nn.ReLU(inplace=True), nn.Conv3d(4 * n_feats, 3 * r2, 1))
        self.filters = nn.Sequential(nn.Conv3d(4 * n_feats, 8 * n_feats, 1), nn.ReLU(inplace=True),
                                     nn.Conv3d(8 * n_feats, FILTER * FILTER * r2, 1))
        with torch.no_grad():  # start as a smooth interpolation with a small residual: training begins near a sane upscale
            self.filters[-1].weight.mul_(0.01)
            self.filters[-1].bias.copy_(_interpolation_logits(scale).flatten())
            self.residual[-1].weight.zero_()  # (its gradient is not zero: it learns from the first step)
            self.residual[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.frames or x.shape[2] != 3:
            raise ValueError(f"DUF takes (N, {self.frames}, 3, H, W) windows, got {tuple(x.shape)}")
        n, t, _, h, w = x.shape
        centre = x[:, t // 2]
        f = self.body(per_frame(self.head, x))  # (N, 1, C, H, W): the window shrunk to its centre
        f = F.relu(per_frame(self.join, F.relu(f)))
        r, r2 = self.scale, self.scale * self.scale
        residual = per_frame(self.residual[2], F.relu(per_frame(self.residual[0], f)))[:, 0]  # (N, 3 r^2, H, W)
        logits = per_frame(self.filters[2], F.relu(per_frame(self.filters[0], f)))[:, 0]
        weights = logits.view(n, FILTER * FILTER, r2, h, w).softmax(1)
        padded = F.pad(centre, (FILTER // 2,) * 4, mode="replicate")  # edges repeat, as the resizers do
        patches = F.unfold(padded, FILTER).view(n, 3, FILTER * FILTER, h, w)
        # sum over the 25 taps, one at a time: einsum picks a batched matmul of tiny matrices here, 30x slower on a CPU
        filtered = sum(patches[:, :, k, None] * weights[:, None, k] for k in range(FILTER * FILTER)).reshape(n, 3 * r2, h, w)
        return F.pixel_shuffle(filtered + residual, r)


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    x = x.abs()
    return torch.where(x <= 1, (a + 2) * x**3 - (a + 3) * x**2 + 1, torch.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0))


def _interpolation_logits(scale: int) -> torch.Tensor:
    """(25, scale^2) logits whose softmax is, for each output sub-pixel, the positive part
    of the bicubic kernel at its offset from the low-resolution pixel (renormalised)."""
    taps = torch.arange(FILTER, dtype=torch.float64) - FILTER // 2
    phase = (torch.arange(scale, dtype=torch.float64) + 0.5) / scale - 0.5  # sub-pixel centres, in LR pixels
    w1 = _cubic(phase[:, None] - taps[None, :]).clamp_min(1e-4)  # (scale, 5)
    w2 = w1[:, None, :, None] * w1[None, :, None, :]  # (sy, sx, ky, kx)
    w2 = w2 / w2.sum((2, 3), keepdim=True)
    return w2.permute(2, 3, 0, 1).reshape(FILTER * FILTER, scale * scale).log().float()


def receptive_radius(n_layers: int) -> int:
    """Low-resolution pixels of spatial context each output pixel depends on, per side:
    head (1) + one 3x3 per dense layer + join (1) + the filter's reach (2)."""
    return 1 + n_layers + 1 + FILTER // 2
