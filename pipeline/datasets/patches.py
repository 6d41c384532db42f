"""Training pairs from frames or images: a random high-resolution patch is the target,
its downscale (degraded as configured) the input.

Frames are uint8 (H, W, 3) arrays, or any sequence of such arrays (the memory-mapped
image store of pretraining): a patch is sliced, so only its pixels are read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np
import torch

from pipeline.metrics.resize import bicubic_resize, bicubic_resize_uint8

#: (hr batch float (N, 3, P, P) in [0, 1], scale, rng) -> lr batch (N, 3, P/scale, P/scale) in [0, 1]
MakeLR = Callable[[torch.Tensor, int, np.random.Generator], torch.Tensor]


def bicubic_lr(hr: torch.Tensor, scale: float, rng: np.random.Generator) -> torch.Tensor:
    """The benchmark protocol's input: MATLAB-compatible bicubic downscale (to 1/scale of
    the patch, a whole number of pixels: see ``effective_patch``)."""
    return bicubic_resize(hr, (lr_side(hr.shape[-2], scale), lr_side(hr.shape[-1], scale)))


def scale_fraction(scale: float) -> Fraction:
    """``scale`` as the nearest fraction p / q with q <= 8 (2.5 = 5/2, 1080/576 = 15/8): the
    scale self-pairs and evaluation inputs are made at, so an input is a whole number of
    pixels when its target is a multiple of p."""
    return Fraction(float(scale)).limit_denominator(8)


def lr_side(side: int, scale: float) -> int:
    """The input side of a target ``side`` px at ``scale`` (an integer, or a fraction
    p / q with q <= 8, for which ``side`` is a multiple of p)."""
    f = scale_fraction(scale)
    return side * f.denominator // f.numerator


def effective_patch(frames: Sequence[np.ndarray], patch: int, scale: float) -> int:
    """The HR patch side: the largest multiple of ``scale`` (of its numerator p for a
    fractional scale p / q, so the input side is whole) up to ``patch`` that fits the
    smallest frame."""
    m = scale_fraction(scale).numerator
    fit = min(min(f.shape[0], f.shape[1]) for f in frames)
    p = min(patch - patch % m, fit - fit % m)
    if p < 2 * scale or p < m:
        raise ValueError(f"frames of {fit} px are too small to train x{scale:g} (need at least {max(m, math.ceil(2 * scale))} px)")
    return p


def texture_grid(f: np.ndarray, patch: int) -> tuple[np.ndarray, int, int]:
    """Gradient energy (sum of |dx|+|dy| of the grey frame) of every ``patch``-side
    window on a grid of stride patch/4, from an integral image: (energies, flattened
    row-major; the grid's column count; the stride)."""
    g = f.mean(axis=2, dtype=np.float32)
    energy = np.zeros_like(g)
    energy[:, 1:] += np.abs(np.diff(g, axis=1))
    energy[1:, :] += np.abs(np.diff(g, axis=0))
    ii = np.pad(energy.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, patch // 4)
    ys = np.arange(0, g.shape[0] - patch + 1, step)
    xs = np.arange(0, g.shape[1] - patch + 1, step)
    p = patch
    e = ii[ys[:, None] + p, xs[None, :] + p] - ii[ys[:, None], xs[None, :] + p] - ii[ys[:, None] + p, xs[None, :]] + ii[ys[:, None], xs[None, :]]
    return np.maximum(e.ravel(), 0.0), len(xs), step


class PatchSampler:
    """Random patches of frames: uniform positions, or positions weighted by the patch's
    gradient energy (``texture``), so flat sky and black borders rarely make a batch.
    With ``multiscale`` half of the patches come from the frames downscaled x2."""

    def __init__(self, frames: Sequence[np.ndarray], patch: int, mode: str = "uniform", multiscale: bool = False) -> None:
        if mode not in ("uniform", "texture"):
            raise ValueError(f"patch sampling must be uniform or texture, got {mode!r}")
        self.patch, self.mode = patch, mode
        self.sources: list[Sequence[np.ndarray]] = [frames]
        if multiscale:
            half = [bicubic_resize_uint8(f, (f.shape[0] // 2, f.shape[1] // 2)) for f in frames if min(f.shape[:2]) // 2 >= patch]
            if half:
                self.sources.append(half)
        self.multiscale = len(self.sources) > 1  # False when the frames are too small to halve
        self._weights = [[self._texture(f) for f in src] for src in self.sources] if mode == "texture" else None

    def _texture(self, f: np.ndarray) -> tuple[np.ndarray, int]:
        """Patch sampling probabilities on the texture grid, and the grid's column count."""
        energy, cols, _ = texture_grid(f, self.patch)
        w = energy + 1e-6 * self.patch * self.patch  # flat patches stay possible, just rare
        return w / w.sum(), cols

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        s = int(rng.integers(len(self.sources)))
        i = int(rng.integers(len(self.sources[s])))
        f = self.sources[s][i]
        if self._weights is None:
            y = int(rng.integers(0, f.shape[0] - self.patch + 1))
            x = int(rng.integers(0, f.shape[1] - self.patch + 1))
        else:
            w, cols = self._weights[s][i]
            k = int(rng.choice(len(w), p=w))
            step = max(1, self.patch // 4)
            y, x = (k // cols) * step, (k % cols) * step
        return np.asarray(f[y:y + self.patch, x:x + self.patch])


def sample_pairs(
    frames: Sequence[np.ndarray] | PatchSampler,
    batch: int,
    patch: int,
    scale: int,
    rng: np.random.Generator,
    augment: bool = True,
    make_lr: MakeLR = bicubic_lr,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training pairs from uint8 (H, W, 3) frames (or a ``PatchSampler``).

    Returns (lr, hr): float (batch, 3, patch/scale, patch/scale) and (batch, 3, patch, patch)
    in [0, 1]. The target is a patch of a frame, flipped and rotated by a random multiple
    of 90 degrees when ``augment``; the input is ``make_lr`` of it (default: bicubic).
    """
    sampler = frames if isinstance(frames, PatchSampler) else PatchSampler(frames, patch)
    hrs = []
    for _ in range(batch):
        p = sampler.sample(rng)
        if augment:
            if rng.random() < 0.5:
                p = p[:, ::-1]
            if rng.random() < 0.5:
                p = p[::-1, :]
            p = np.rot90(p, int(rng.integers(4)))
        hrs.append(np.ascontiguousarray(p))
    hr = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).float().div_(255)
    return make_lr(hr, scale, rng), hr


def sample_any_scale(sampler: PatchSampler, batch: int, lr_side: int, rng: np.random.Generator,
                     scales: tuple[float, float] = (1.0, 4.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs at one random scale s, uniform in ``scales``, for a continuous-scale
    model: targets of side round(lr_side * s), cut from the sampler's patches (which must
    be at least lr_side * scales[1] px) and flipped/rotated at random; inputs their
    MATLAB-compatible bicubic downscales to lr_side px. Returns float (batch, 3, lr_side,
    lr_side) and (batch, 3, S, S) in [0, 1]; the batch shares its scale (one tensor)."""
    side = round(lr_side * float(rng.uniform(*scales)))
    if sampler.patch < side:
        raise ValueError(f"patches of {sampler.patch} px cannot hold a target of {side} px")
    hrs = []
    for _ in range(batch):
        p = sampler.sample(rng)
        y, x = (int(rng.integers(0, sampler.patch - side + 1)) for _ in range(2))
        p = p[y:y + side, x:x + side]
        if rng.random() < 0.5:
            p = p[:, ::-1]
        if rng.random() < 0.5:
            p = p[::-1, :]
        hrs.append(np.ascontiguousarray(np.rot90(p, int(rng.integers(4)))))
    hr = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).float().div_(255)
    return bicubic_resize(hr, (lr_side, lr_side)), hr


def sample_queries(hr: torch.Tensor, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random pixels of each target (N, 3, H, W): their centre coordinates (N, n, 2;
    (y, x) on [-1, 1], as ``pipeline.models.liif`` queries them) and their values (N, 3, n)."""
    N, _, H, W = hr.shape
    n = min(n, H * W)
    idx = torch.from_numpy(np.stack([rng.choice(H * W, n, replace=False) for _ in range(N)]))
    ys, xs = (idx // W).float(), (idx % W).float()
    coords = torch.stack([(2 * ys + 1) / H - 1, (2 * xs + 1) / W - 1], -1)
    return coords, hr.flatten(2).gather(2, idx.unsqueeze(1).expand(N, 3, n))
