"""A continuous-scale model: EDSR's features read by a local implicit function (LIIF: Chen
et al., "Learning Continuous Image Representation with Local Implicit Image Function",
CVPR 2021), so one model upscales by any factor, to any output size.

EDSR's head and body (no upsampler) compute a feature vector per low-resolution pixel.
An output pixel at continuous coordinate x asks the four low-resolution pixels around it:
each answers with an MLP of (its 3x3 neighbourhood of features, the offset from its centre
to x, and the output pixel's size — the "cell", so one model knows how much detail a
scale can hold); the four answers are mixed with bilinear-area weights (the local
ensemble), and added to the bicubic upscale of the input (the MLP learns the residual).

The MLP's first layer is linear in the unfolded features, so it is computed once per
low-resolution pixel as a 3x3 convolution (``lift``) rather than once per output pixel;
the offset and cell enter through a second linear map (``where``) added to it. The same
sums as the paper's first layer, at a fraction of its cost when the output has many
times the input's pixels.

Module names of the encoder follow EDSR's (``sub_mean``, ``head``, ``body``), so an EDSR
checkpoint's encoder loads into it unchanged (``load_encoder``). Takes and returns float
RGB in [0, 1], like EDSR: ``forward(x, size)`` with x (N, 3, h, w) returns (N, 3, H, W),
not clamped; ``size`` defaults to ``scale`` times the input's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.edsr import RGB_RANGE, MeanShift, ResBlock, _conv
from pipeline.models.registry import ARCHS

#: the widest a continuous model is trained and run for (the input to output side ratio)
SCALE_MAX = 4.0
#: output pixels queried at once: bounds the memory of a large frame's query maps
QUERY_BLOCK = 1 << 18


def output_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """The output (H, W) of an h x w input upscaled by ``scale``: rounded to the nearest pixel."""
    return max(1, round(h * scale)), max(1, round(w * scale))


def pixel_centres(n: int) -> torch.Tensor:
    """The centres of n pixels on [-1, 1] (``align_corners=False`` coordinates), (n,) float."""
    return (torch.arange(n, dtype=torch.float32) * 2 + 1) / n - 1


@ARCHS.register("liif", help="EDSR features read by a local implicit function: any scale in [1, 4] and any output size from one model")
class LIIF(nn.Module):
    """EDSR encoder (``n_resblocks`` x ``n_feats``) and a local implicit MLP (``hidden``
    wide, ``layers`` layers after the first). ``scale`` is the default output/input ratio
    of ``forward`` (any float in [1, 4]), not a property of the weights."""

    def __init__(self, n_resblocks: int = 16, n_feats: int = 32, hidden: int = 64, layers: int = 3, scale: float = 2.0) -> None:
        super().__init__()
        check_scale(scale)
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be >= 1, got {hidden} and {layers}")
        self.arch = {"name": "liif", "n_resblocks": n_resblocks, "n_feats": n_feats, "hidden": hidden, "layers": layers, "scale": scale}
        self.scale = float(scale)
        self.sub_mean = MeanShift(-1)
        self.head = nn.Sequential(_conv(3, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, 1.0) for _ in range(n_resblocks)], _conv(n_feats, n_feats))
        self.lift = nn.Conv2d(n_feats, hidden, 3, padding=1)  # the MLP's first layer on the 3x3-unfolded features
        self.where = nn.Conv2d(4, hidden, 1)  # ... and on (offset y, offset x, cell h, cell w)
        mlp: list[nn.Module] = []
        for _ in range(layers - 1):
            mlp += [nn.ReLU(inplace=True), nn.Conv2d(hidden, hidden, 1)]
        mlp += [nn.ReLU(inplace=True), nn.Conv2d(hidden, 3, 1)]
        self.mlp = nn.Sequential(*mlp)
        nn.init.zeros_(self.mlp[-1].weight)  # starts as bicubic: the residual is learnt from zero
        nn.init.zeros_(self.mlp[-1].bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3, h, w) in [0, 1] -> the first MLP layer's pre-activation per input pixel, (N, hidden, h, w)."""
        f = self.head(self.sub_mean(x * RGB_RANGE))
        return self.lift(f + self.body(f))

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None, coords: torch.Tensor | None = None) -> torch.Tensor:
        """The (N, 3, H, W) output of ``size`` (default: ``scale`` times the input's); with
        ``coords`` (N, Q, 2: (y, x) pixel centres of that output on [-1, 1]) only those
        pixels, (N, 3, Q) — how training reads a few thousand pixels of a large target."""
        h, w = x.shape[-2:]
        H, W = size if size is not None else output_size(h, w, self.scale)
        if coords is not None:
            return self.query(x, self.features(x), coords, (H, W))
        ys, xs = pixel_centres(H).to(x.device), pixel_centres(W).to(x.device)
        lifted = self.features(x)
        out = []
        for i in range(0, H * W, QUERY_BLOCK):  # each block's coordinates made when it is queried, not the whole output's at once
            flat = torch.arange(i, min(i + QUERY_BLOCK, H * W), device=x.device)
            block = torch.stack([ys[flat // W], xs[flat % W]], -1).unsqueeze(0).expand(x.shape[0], -1, -1)
            out.append(self.query(x, lifted, block, (H, W)))
        return torch.cat(out, 2).view(x.shape[0], 3, H, W)

    def query(self, x: torch.Tensor, lifted: torch.Tensor, coords: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """RGB at ``coords`` (N, Q, 2; (y, x) on [-1, 1], pixel centres of an output of
        ``size``) of the input x (N, 3, h, w) with its ``features`` ``lifted`` -> (N, 3, Q)."""
        h, w = x.shape[-2:]
        H, W = size
        n, q = coords.shape[:2]
        cell = coords.new_tensor([2 * h / H, 2 * w / W]).view(1, 2, 1, 1).expand(n, 2, 1, q)  # an output pixel, in input half-pixels
        step = coords.new_tensor([1 / h, 1 / w])  # half an input pixel, on [-1, 1]
        centres = centres_of(lifted)  # (the same grid for the four neighbours)
        preds, areas = [], []
        for vy in (-1, 1):
            for vx in (-1, 1):
                shifted = (coords + coords.new_tensor([vy, vx]) * step + 1e-6).clamp(-1 + 1e-6, 1 - 1e-6)
                grid = shifted.flip(-1).unsqueeze(1)  # grid_sample wants (x, y), (N, 1, Q, 2)
                z = F.grid_sample(lifted, grid, mode="nearest", align_corners=False)  # (N, hidden, 1, Q)
                centre = F.grid_sample(centres, grid, mode="nearest", align_corners=False)  # (N, 2, 1, Q)
                offset = (coords.permute(0, 2, 1).unsqueeze(2) - centre) * coords.new_tensor([h, w]).view(1, 2, 1, 1)
                preds.append(self.mlp(z + self.where(torch.cat([offset, cell], 1))))
                areas.append((offset[:, 0] * offset[:, 1]).abs().unsqueeze(1) + 1e-9)
        total = sum(areas)
        # each prediction weighs by the area of the rectangle opposite it (bilinear weights)
        out = sum(p * a for p, a in zip(preds, areas[::-1], strict=True)) / total
        base = F.grid_sample(x, coords.flip(-1).unsqueeze(1), mode="bicubic", padding_mode="border", align_corners=False)
        return (out + base).squeeze(2)


def centres_of(t: torch.Tensor) -> torch.Tensor:
    """The (y, x) centre coordinates on [-1, 1] of t's pixels: (N, 2, h, w)."""
    h, w = t.shape[-2:]
    ys, xs = pixel_centres(h).to(t.device), pixel_centres(w).to(t.device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), 0).unsqueeze(0).expand(t.shape[0], -1, -1, -1)


def check_scale(scale: float) -> None:
    if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and math.isfinite(scale) and 1.0 <= scale <= SCALE_MAX):
        raise ValueError(f"scale must be a number in [1, {SCALE_MAX:g}] (2, 3, 4, or e.g. 2.5), got {scale!r}")


def load_encoder(model: LIIF, edsr_state: dict[str, torch.Tensor]) -> int:
    """Copy an EDSR state dict's encoder (``head``, ``body``) into ``model``; returns the
    number of tensors copied. Raises ValueError when the shapes differ."""
    own = model.state_dict()
    picked = {k: v for k, v in edsr_state.items() if k.split(".")[0] in ("head", "body")}
    for k, v in picked.items():
        if k not in own or own[k].shape != v.shape:
            raise ValueError(f"the EDSR weights do not fit this model's encoder at {k}: {tuple(v.shape)}")
    model.load_state_dict(picked, strict=False)
    return len(picked)
