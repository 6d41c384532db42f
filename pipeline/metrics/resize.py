"""Bicubic resizing: the single place reelsr resizes images.

Everything that down- or up-scales an image (making LR inputs, bicubic baselines,
upscaling for display) goes through these functions.

The resize is MATLAB ``imresize(..., 'bicubic')``-compatible:

* Keys cubic kernel with a = -0.5, support 4 taps;
* antialiasing when downscaling: the kernel is stretched by 1/scale (and its height
  scaled by ``scale``), so its support becomes 4/scale input pixels, as MATLAB does;
  upscaling uses the plain kernel;
* MATLAB's coordinate mapping: output pixel x (1-based) samples input position
  u = x / scale + 0.5 * (1 - 1 / scale);
* MATLAB's boundary handling: taps outside the image are mirrored back into it
  (symmetric padding, the edge pixel repeated: ..., 2, 1, 1, 2, ... ), not dropped
  and renormalised as PIL / PyTorch do;
* each output pixel's weights are normalised to sum to 1.

``scale`` is ``out / in`` per axis when a size is given (as MATLAB does when called
with an output size), or the given factor for :func:`imresize_scale` (output size
``ceil(in * scale)``, as MATLAB called with a factor).

The resize is separable and linear, so it is applied as two dense weight matrices,
``out = Wh @ img @ Ww.T``, built in float64 with NumPy, cached per
(in_size, out_size, scale) with :func:`functools.lru_cache`, and cast to the input's
device and dtype: one batched matmul per axis, on CPU or GPU.

Checked against MATLAB: the Set5 ``LR_bicubic`` x2 / x3 / x4 images made by MATLAB
``imresize`` on uint8 (SwinIR test sets; for x3 the HR image is first cropped to a
multiple of 3, "modcrop") are reproduced bit for bit by :func:`bicubic_resize_uint8`
from the HR images (mean absolute difference 0.00 grey levels for all 15 images), and
:func:`bicubic_resize` rounded once at the end is within 0.16 grey levels MAD of them
(``tests/metrics/test_resize.py``, references in ``tests/data/set5``). Bicubic down-and-up
Y-PSNR on Set5 / Set14 reproduces the published bicubic baselines (Set5 x2 33.66 dB,
x4 28.42 dB) within 0.05 dB (``tests/test_benchmark.py``, ``pipeline.benchmark``).

On uint8 images (:func:`bicubic_resize_uint8`, :func:`imresize_scale` on an array)
MATLAB's arithmetic is followed exactly: one axis at a time, the axis that shrinks more
first, the intermediate image rounded (half up) and saturated to uint8. The float path
(:func:`bicubic_resize`, for training batches) applies both matrices without
intermediate rounding and only clamps the result to [0, 1].
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

_KERNEL_WIDTH = 4.0


def _check_size(size) -> tuple[int, int]:
    if len(size) != 2:
        raise ValueError(f"size must be (h, w), got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h != size[0] or w != size[1] or h < 1 or w < 1:
        raise ValueError(f"size must be two positive integers (h, w), got {size!r}")
    return h, w


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB ``imresize``'s 'bicubic')."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1.0) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1.0) & (ax <= 2.0)
    )


@functools.lru_cache(maxsize=256)
def resize_matrix(in_size: int, out_size: int, scale: float | None = None) -> np.ndarray:
    """The (out_size, in_size) float64 matrix of a MATLAB-compatible bicubic resize of one axis.

    ``scale`` defaults to ``out_size / in_size``. The array is cached and read-only.
    """
    in_size, out_size = int(in_size), int(out_size)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in={in_size} out={out_size}")
    scale = out_size / in_size if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if scale < 1.0:  # antialiasing: stretch the kernel by 1/scale
        width = _KERNEL_WIDTH / scale

        def kernel(x):
            return scale * _cubic(scale * x)
    else:
        width = _KERNEL_WIDTH
        kernel = _cubic
    x = np.arange(1, out_size + 1, dtype=np.float64)  # 1-based output coordinates
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based input coordinates
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, may fall outside
    weights = kernel(u[:, None] - idx)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric padding: index sequence 1..n, n..1 repeated (0-based below).
    mirror = np.concatenate([np.arange(in_size), np.arange(in_size)[::-1]])
    src = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_size)]
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], src.shape)
    np.add.at(mat, (rows, src), weights)
    mat.setflags(write=False)
    return mat


@functools.lru_cache(maxsize=64)
def _matrix_on(in_size: int, out_size: int, scale: float | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(resize_matrix(in_size, out_size, scale).copy()).to(device=device, dtype=dtype)


def _check_img(img) -> None:
    if not torch.is_tensor(img) or img.ndim != 4 or not img.is_floating_point():
        raise ValueError(
            "img must be a floating torch.Tensor of shape (N, C, H, W), got "
            f"{type(img).__name__} {getattr(img, 'dtype', None)} {tuple(getattr(img, 'shape', ()))}"
        )


def _resize(
    img: torch.Tensor,
    h: int,
    w: int,
    scale_h: float | None,
    scale_w: float | None,
    *,
    peak: float = 1.0,
    quantize: bool = False,
) -> torch.Tensor:
    """Both axes, the one that shrinks more first (MATLAB's order; height first on a tie).

    ``quantize``: round half up and saturate to [0, ``peak``] after each axis, as MATLAB
    does on uint8 images (``peak`` 255); else only clamp the final result to [0, peak].
    """
    in_h, in_w = img.shape[-2:]
    scale_h_eff = h / in_h if scale_h is None else scale_h
    scale_w_eff = w / in_w if scale_w is None else scale_w

    def along_h(x):
        if h == in_h and scale_h_eff == 1.0:
            return x
        return torch.matmul(_matrix_on(in_h, h, scale_h, x.device, x.dtype), x)

    def along_w(x):
        if w == in_w and scale_w_eff == 1.0:
            return x
        return torch.matmul(x, _matrix_on(in_w, w, scale_w, x.device, x.dtype).T)

    def q(x):
        return torch.floor(x + 0.5).clamp_(0.0, peak) if quantize else x

    first, second = (along_h, along_w) if scale_h_eff <= scale_w_eff else (along_w, along_h)
    out = q(second(q(first(img))))
    return out if quantize else out.clamp(0.0, peak)


def bicubic_resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a batch of images with MATLAB-compatible bicubic interpolation.

    Args:
        img: floating tensor (N, C, H, W), values in [0, 1], any device.
        size: output (h, w) in pixels; the scale of each axis is out / in.

    Returns:
        Tensor (N, C, h, w), same dtype and device as ``img``, clamped to [0, 1].
        (Antialiasing is applied automatically when downscaling.) A same-size resize
        returns a clamped copy.
    """
    _check_img(img)
    h, w = _check_size(size)
    return _resize(img, h, w, None, None)


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return rgb


def _from_uint8(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float64 (1, 3, H, W) with values 0..255."""
    return torch.from_numpy(_check_rgb(rgb).astype(np.float64)).permute(2, 0, 1)[None]


def _resize_uint8(rgb: np.ndarray, h: int, w: int, scale_h: float | None, scale_w: float | None) -> np.ndarray:
    y = _resize(_from_uint8(rgb), h, w, scale_h, scale_w, peak=255.0, quantize=True)
    return y[0].permute(1, 2, 0).to(torch.uint8).contiguous().numpy()


def bicubic_resize_uint8(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one uint8 RGB image exactly as MATLAB ``imresize(rgb, size, 'bicubic')``.

    The same weights as :func:`bicubic_resize`, applied in float64 one axis at a time
    (the one that shrinks more first), rounding half up and saturating to uint8 after
    each axis as MATLAB does on uint8 images. :func:`bicubic_resize` on the same
    image, rounded, differs only by that intermediate rounding (at most 2 levels,
    about 0.1 to 0.15 on average).

    Args:
        rgb: uint8 array (H, W, 3), values 0..255.
        size: output (h, w) in pixels.

    Returns:
        uint8 array (h, w, 3).
    """
    h, w = _check_size(size)
    return _resize_uint8(rgb, h, w, None, None)


def scaled_size(in_size: int, scale: float) -> int:
    """MATLAB's output length for a resize by ``scale``: ceil(in_size * scale).

    A product within 1e-9 of an integer counts as that integer, so that e.g.
    510 * (1/3) gives 170 whatever the rounding of 1/3.
    """
    v = in_size * float(scale)
    r = round(v)
    return int(r) if abs(v - r) < 1e-9 else int(math.ceil(v))


def imresize_scale(img: torch.Tensor | np.ndarray, scale: float) -> torch.Tensor | np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')``: resize by a factor.

    The output size is ``ceil(in * scale)`` per axis (:func:`scaled_size`), and the
    kernel and coordinate mapping use ``scale`` itself (not out / in), as MATLAB does
    when called with a factor; for sizes divisible by 1/scale the two are identical.

    Args:
        img: a floating tensor (N, C, H, W) in [0, 1] or a uint8 array (H, W, 3).
        scale: positive factor (< 1 shrinks, with antialiasing).

    Returns:
        The same kind as ``img``: a tensor as :func:`bicubic_resize` or a uint8 array
        as :func:`bicubic_resize_uint8`.
    """
    scale = float(scale)
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be a positive number, got {scale}")
    if torch.is_tensor(img):
        _check_img(img)
        in_h, in_w = img.shape[-2:]
        return _resize(img, scaled_size(in_h, scale), scaled_size(in_w, scale), scale, scale)
    in_h, in_w = _check_rgb(img).shape[:2]
    return _resize_uint8(img, scaled_size(in_h, scale), scaled_size(in_w, scale), scale, scale)
