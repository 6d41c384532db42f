"""EDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", 2017).

One implementation, parameterised: EDSR-baseline is ``EDSR(16, 64, 1.0, s)``, the paper's
full model ``EDSR(32, 256, 0.1, s)``. Module names follow the official EDSR-PyTorch code
(``sub_mean``, ``head``, ``body``, ``tail``, ``add_mean``) so its checkpoint files load
with ``load_state_dict`` unchanged.

The network takes and returns float RGB in [0, 1]; internally it works in the official
code's [0, 255] range so the official weights and mean shift apply as they were trained.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.registry import ARCHS

# RGB mean of DIV2K, as in the official code (rgb_range 255, std 1).
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
RGB_RANGE = 255.0


class MeanShift(nn.Conv2d):
    """Adds (sign=+1) or subtracts (sign=-1) the dataset mean: a frozen 1x1 conv."""

    def __init__(self, sign: int, mean: tuple[float, float, float] = DIV2K_MEAN) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * RGB_RANGE * torch.tensor(mean))
        for p in self.parameters():
            p.requires_grad = False


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class ResBlock(nn.Module):
    """conv-ReLU-conv with residual scaling: x + res_scale * f(x). No batch norm."""

    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(n_feats, n_feats), nn.ReLU(inplace=True), _conv(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling: x2 and x3 in one conv + PixelShuffle, x4 as two x2 steps."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale in (2, 4):
            for _ in range({2: 1, 4: 2}[scale]):
                layers += [_conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [_conv(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        super().__init__(*layers)


@ARCHS.register("edsr", help="EDSR: residual blocks without batch norm, sub-pixel upsampling (x2, x3, x4)")
class EDSR(nn.Module):
    """EDSR super-resolution network.

    forward: float tensor (N, 3, H, W) in [0, 1] -> (N, 3, scale*H, scale*W), not clamped.
    """

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0, scale: int = 2) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        self.arch = {"name": "edsr", "n_resblocks": n_resblocks, "n_feats": n_feats, "res_scale": res_scale, "scale": scale}
        self.scale = scale
        self.sub_mean = MeanShift(-1)
        self.add_mean = MeanShift(+1)
        self.head = nn.Sequential(_conv(3, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)], _conv(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), _conv(n_feats, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x * RGB_RANGE)
        x = self.head(x)
        x = x + self.body(x)
        x = self.add_mean(self.tail(x))
        return x / RGB_RANGE


def receptive_radius(n_resblocks: int) -> int:
    """Low-resolution pixels of context each output pixel depends on, per side.

    head (1) + 2 per block + body conv (1) + upsampler conv(s) and tail conv (<= 3).
    Tiles overlapping by twice this are stitched without seams.
    """
    return 1 + 2 * n_resblocks + 1 + 3
