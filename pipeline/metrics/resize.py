"""Bicubic resizing: the single place reelsr resizes images.

Everything that down- or up-scales an image (making LR inputs, bicubic baselines,
upscaling for display) goes through these two functions, so that a MATLAB-exact
``imresize`` can be dropped in here later without touching callers.

Kernel: ``torch.nn.functional.interpolate(mode="bicubic", antialias=True,
align_corners=False)``. With ``antialias=True`` PyTorch uses the Keys cubic with
a = -0.5 (the kernel of MATLAB ``imresize`` and PIL ``BICUBIC``), widened by the
scale factor when downscaling (anti-aliasing) and unwidened when upscaling. It
matches PIL ``Image.resize(..., BICUBIC)`` to within 1 grey level on uint8. It
differs from MATLAB ``imresize`` near the borders: PyTorch/PIL renormalise the
weights of the in-image taps, MATLAB pads symmetrically.
"""

import numpy as np
import torch
import torch.nn.functional as F


def _check_size(size) -> tuple[int, int]:
    if len(size) != 2:
        raise ValueError(f"size must be (h, w), got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h != size[0] or w != size[1] or h < 1 or w < 1:
        raise ValueError(f"size must be two positive integers (h, w), got {size!r}")
    return h, w


def bicubic_resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a batch of images with antialiased bicubic interpolation.

    Args:
        img: floating tensor (N, C, H, W), values in [0, 1], any device.
        size: output (h, w) in pixels.

    Returns:
        Tensor (N, C, h, w), same dtype and device as ``img``, clamped to [0, 1].
        (Antialiasing is applied automatically when downscaling.)
    """
    if not torch.is_tensor(img) or img.ndim != 4 or not img.is_floating_point():
        raise ValueError(
            "img must be a floating torch.Tensor of shape (N, C, H, W), got "
            f"{type(img).__name__} {getattr(img, 'dtype', None)} {tuple(getattr(img, 'shape', ()))}"
        )
    h, w = _check_size(size)
    out = F.interpolate(img, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def bicubic_resize_uint8(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one uint8 RGB image with :func:`bicubic_resize`.

    Args:
        rgb: uint8 array (H, W, 3), values 0..255.
        size: output (h, w) in pixels.

    Returns:
        uint8 array (h, w, 3): the float32 result scaled by 255 and rounded to nearest.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    y = bicubic_resize(x, size)
    y = (y * 255.0).round_()
    return y[0].permute(1, 2, 0).to(torch.uint8).contiguous().numpy()
