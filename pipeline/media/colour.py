"""RGB to limited-range YUV 4:2:0 (I420) in torch, on the device the model ran on.

A restored frame leaves the model as RGB on its device; converting it there (a handful
of tensor ops) and copying the I420 planes to the host moves half the bytes of RGB and
takes the per-frame colour conversion off the host's CPUs (swscale on one core: about
24 ms for a 2560x1440 frame). The matrix is the stream's (BT.601 or BT.709); chroma is
the mean of each 2x2 block (centred siting), which is within a grey level of swscale's
filtered conversion.
"""

from __future__ import annotations

import torch

#: (Kr, Kb) luma coefficients of each matrix
_K = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def rgb_to_i420(rgb: torch.Tensor, colorspace: str, bits: int = 8) -> torch.Tensor:
    """float (N, 3, H, W) RGB in [0, 1] (any device; H and W even) -> uint8
    (N, H * 3 // 2, W): each frame's Y plane, then U, then V (the layout of PyAV's
    ``VideoFrame.from_ndarray(..., format="yuv420p")``), limited range (Y 16-235, UV 16-240).
    ``bits`` 10: uint16 planes of ``yuv420p10le`` (Y 64-940, UV 64-960)."""
    if colorspace not in _K:
        raise ValueError(f"unsupported colorspace {colorspace!r}; use 'bt709' or 'bt601'")
    n, c, h, w = rgb.shape
    if c != 3 or h % 2 or w % 2:
        raise ValueError(f"expected (N, 3, H, W) with even H and W, got {tuple(rgb.shape)}")
    kr, kb = _K[colorspace]
    kg = 1.0 - kr - kb
    x = rgb.float() * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    luma = kr * r + kg * g + kb * b  # 0..255
    y = 16.0 + luma * (219.0 / 255.0)
    # chroma of the 2x2 means (the conversion is linear, so this is the mean of the four pixels' chroma)
    rm, gm, bm = (torch.nn.functional.avg_pool2d(p[:, None], 2)[:, 0] for p in (r, g, b))
    lm = kr * rm + kg * gm + kb * bm
    u = 128.0 + (bm - lm) / (2.0 * (1.0 - kb)) * (224.0 / 255.0)
    v = 128.0 + (rm - lm) / (2.0 * (1.0 - kr)) * (224.0 / 255.0)
    if bits not in (8, 10):
        raise ValueError(f"bits must be 8 or 10, got {bits}")
    f, top = 2 ** (bits - 8), 2**bits - 1
    q = [(p * f).round().clamp_(0, top).to(torch.uint8 if bits == 8 else torch.uint16) for p in (y, u, v)]
    # PyAV reads the array as flat planes (Y: h*w samples, then U and V: h*w/4 each): any height that is even
    return torch.cat([p.reshape(n, -1) for p in q], dim=1).view(n, h * 3 // 2, w)
