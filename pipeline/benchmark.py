"""Single-image super-resolution benchmark on Set5 / Set14-style folders (the SR papers' protocol).

For each HR image of the folder:

1. the image is read as 8-bit RGB; a greyscale image (Set14 ``bridge``) is converted to
   RGB by repeating its channel three times, so that resizing and models see RGB;
2. it is cropped at the bottom / right to a multiple of the scale ("modcrop");
3. the LR input is made with the MATLAB-compatible bicubic
   :func:`pipeline.metrics.resize.bicubic_resize_uint8` (same as MATLAB ``imresize``);
4. the LR is restored: ``bicubic`` upscales it back with the same resize, a checkpoint
   runs :func:`pipeline.inference.upscale_frames`;
5. Y-PSNR and Y-SSIM (:func:`pipeline.metrics.fullref.psnr_y` / ``ssim_y``, BT.601 Y,
   unrounded) are measured with ``scale`` pixels cropped at every border.

Greyscale images are scored on the grey plane, as the papers' MATLAB scripts do (they
skip ``rgb2ycbcr`` for a 2-D image): the reference is the grey level itself (0..255),
the restored image's BT.601 Y is mapped back to full range, (Y - 16) * 255 / 219 (which
is exactly the grey level when R = G = B), and PSNR / SSIM use the same conventions
(peak 255, 11x11 Gaussian window, 'valid' region) on that plane. Scoring the [16, 235]
Y of the repeated channels instead would make PSNR 20 log10(255/219) = 1.32 dB higher
on such an image (+0.09 dB on the Set14 mean). Such rows have ``"channel": "grey"``.

At a non-integer scale s = p / q (e.g. 2.5 = 5 / 2) the image is cropped to a multiple
of p, so the input is exactly q / p of it (as the continuous-scale papers do), and
ceil(s) px are cropped for the scores. A continuous-scale model restores straight to the
image's size; a model of one integer scale k >= s restores x k and is then resized
down to the size as a restore resizes it (``inference.upscale_tensor``: torch's
antialiased bicubic): the "integer model, then resize" way to reach such a scale.

With ``bicubic`` this reproduces the published bicubic baselines within 0.05 dB
(measured: Set5 x2 / x3 / x4 33.67 / 30.40 / 28.43 dB against 33.66 / 30.39 / 28.42;
Set14 30.23 / 27.54 / 25.99 dB against 30.24 / 27.55 / 26.00).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline import inference
from pipeline.metrics.fullref import psnr_plane, psnr_y, rgb_to_y, ssim_plane, ssim_y
from pipeline.metrics.resize import bicubic_resize_uint8
from pipeline.models import checkpoint
from pipeline.models.weights import BUILTIN_PREFIX, builtin

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def image_folder(data: str) -> tuple[str, list[str]]:
    """The folder of HR images behind ``data`` (``data/HR`` when it exists) and its image files, sorted.

    Raises:
        FileNotFoundError: ``data`` is not a folder.
        ValueError: the folder holds no images.
    """
    if not os.path.isdir(data):
        raise FileNotFoundError(f"data folder not found: {data}")
    folder = os.path.join(data, "HR") if os.path.isdir(os.path.join(data, "HR")) else data
    files = sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return folder, files


def load_rgb(path: str) -> tuple[np.ndarray, bool]:
    """(uint8 (H, W, 3) RGB, is_grey); a greyscale image gets its channel repeated three times."""
    with Image.open(path) as im:
        if im.mode in ("1", "L", "LA", "I;16", "I", "F"):
            grey = np.asarray(im.convert("L"))
            return np.repeat(grey[:, :, None], 3, axis=2), True
        return np.asarray(im.convert("RGB")), False


def _grey_plane_scores(sr: np.ndarray, hr_grey: np.ndarray, crop: int) -> tuple[float, float]:
    """PSNR / SSIM on the grey plane (see the module docstring), ``crop`` px cropped."""
    a = (rgb_to_y(sr) - 16.0) * (255.0 / 219.0)
    b = hr_grey.astype(np.float64)
    h, w = b.shape
    a, b = a[crop : h - crop, crop : w - crop], b[crop : h - crop, crop : w - crop]
    return psnr_plane(a, b), ssim_plane(a, b)


def modcrop(img: np.ndarray, scale: float) -> np.ndarray:
    """Crop the bottom / right so that both sides are multiples of ``scale`` (of its
    numerator p for a non-integer scale p / q: then the input is exactly q / p of it)."""
    m = as_fraction(scale).numerator
    h, w = img.shape[0] - img.shape[0] % m, img.shape[1] - img.shape[1] % m
    return img[:h, :w]


def as_fraction(scale: float) -> Fraction:
    """``scale`` as p / q with q <= 8 (2.5 -> 5/2, 3.5 -> 7/2): ValueError for a scale
    that is not such a fraction, or < 1."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) or not math.isfinite(scale) or scale < 1:
        raise ValueError(f"scale must be a number >= 1, got {scale!r}")
    from pipeline.datasets.patches import scale_fraction

    f = scale_fraction(scale)
    if abs(float(f) - float(scale)) > 1e-9:
        raise ValueError(f"scale must be a fraction with a denominator of at most 8 (e.g. 2.5, 3.25), got {scale!r}")
    return f


def low_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """The input size of an ``h`` x ``w`` (modcropped) image at ``scale``."""
    f = as_fraction(scale)
    return h * f.denominator // f.numerator, w * f.denominator // f.numerator


def border(scale: float) -> int:
    """Pixels cropped at each border for the scores: the scale, rounded up."""
    return math.ceil(float(scale))


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    return dev


def _restorer(model: str, scale: float, dev: torch.device):
    """A function (uint8 LR (h, w, 3), output (H, W)) -> uint8 SR (H, W, 3), and a description."""
    if model == "bicubic":
        return (lambda lr, size: bicubic_resize_uint8(lr, size)), {"model": "bicubic"}
    integer = float(scale).is_integer()
    if model.startswith(BUILTIN_PREFIX):
        entry = builtin(model)
        path = entry.path(int(scale) if integer else min((k for k in entry.files if k >= scale), default=max(entry.files)))
    elif os.path.isfile(model):
        path = model
    else:
        raise FileNotFoundError(f"model must be 'bicubic', 'builtin:NAME' or a checkpoint file; not found: {model}")
    net, meta = checkpoint.load(path, map_location=dev)
    info = {"model": model, "checkpoint": path, "arch": dict(meta["arch"])}
    if inference.continuous(net):
        from pipeline.models.liif import check_scale

        check_scale(float(scale))
        ckpt_scale = math.ceil(scale)  # (only the memory estimates count it: the model restores to the size)
    else:
        ckpt_scale = int(meta["arch"]["scale"])
        if ckpt_scale != scale and (integer or ckpt_scale < scale):
            raise ValueError(f"checkpoint {model} upscales x{ckpt_scale}, but the benchmark scale is x{scale:g}"
                             + ("" if integer else " (a non-integer scale needs a model of a larger integer scale, then resizes down)"))
        if ckpt_scale != scale:
            info["via"] = f"x{ckpt_scale}, then bicubic to the size"

    def restore(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The restore's own inference path: a continuous model to ``size``, an integer one
        at its scale and resized to it when that differs (as a restore to a media.size)."""
        from pipeline.media.geometry import Geometry

        return inference.upscale_frames(net, lr[None], ckpt_scale, device=dev, geometry=Geometry(size[0] / lr.shape[0], size, size))[0]

    return restore, info


def degraded_lr(hr: np.ndarray, scale: int, degrade: str, seed: int) -> np.ndarray:
    """The uint8 low-resolution input of the modcropped uint8 HR image ``hr``: the
    MATLAB bicubic (``degrade`` "bicubic", the papers' protocol), or one of the fixed
    degradations of :data:`pipeline.datasets.degrade.EVAL_DEGRADATIONS`, seeded."""
    h, w = hr.shape[:2]
    if degrade == "bicubic":
        return bicubic_resize_uint8(hr, (h // scale, w // scale))
    from pipeline.datasets.degrade import EVAL_DEGRADATIONS

    if degrade not in EVAL_DEGRADATIONS:
        raise ValueError(f"degrade must be one of {', '.join(EVAL_DEGRADATIONS)}, got {degrade!r}")
    x = torch.from_numpy(hr.astype(np.float32) / 255).permute(2, 0, 1)[None]
    lr = EVAL_DEGRADATIONS[degrade][1](x, scale, np.random.default_rng(seed))
    return (lr[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def benchmark(model: str, data: str, scale: int, device: str = "cpu", degrade: str = "bicubic", seed: int = 0) -> dict[str, Any]:
    """Y-PSNR / Y-SSIM of ``model`` on the HR images of ``data`` at ``scale``, the input
    made by ``degrade`` ("bicubic": the papers' protocol; else a fixed, seeded
    degradation of ``EVAL_DEGRADATIONS``; image ``i`` uses the seed ``seed + i``).

    Args:
        model: ``"bicubic"``, ``"builtin:NAME"`` (shipped weights, see
            :data:`pipeline.models.weights.WEIGHTS`) or a checkpoint path.
        data: a folder of HR images, or a folder with an ``HR/`` subfolder (then that is used).
        scale: upscaling factor: an integer >= 2 (a checkpoint must be trained for it), or
            a fraction > 1 with a denominator up to 8 (e.g. 2.5; bicubic inputs only) for
            bicubic, a continuous-scale checkpoint, or an integer one of a larger scale.
        device: "cpu" or "cuda" (for a checkpoint; bicubic runs on the CPU).

    Returns:
        ``{"model", "data" (the HR folder), "scale", "device", "rows": [{"image", "height",
        "width" (after modcrop), "channel" ("Y", or "grey" for a greyscale image),
        "psnr_y", "ssim_y"}, ...], "mean": {"psnr_y", "ssim_y"},
        "n_images"}`` (plus ``"checkpoint"`` and ``"arch"`` for a checkpoint).

    Raises:
        FileNotFoundError: the folder or checkpoint does not exist.
        ValueError: no images, bad scale or device, checkpoint cannot reach ``scale``,
            or an image too small for the scale.
    """
    if as_fraction(scale) <= 1:
        raise ValueError(f"scale must be > 1, got {scale!r}")
    scale = int(scale) if float(scale).is_integer() else float(scale)
    if not isinstance(scale, int) and degrade != "bicubic":
        raise ValueError(f"a non-integer scale is measured on bicubic inputs only, got degrade={degrade!r}")
    crop = border(scale)
    folder, files = image_folder(data)
    dev = _device(device)
    restore, info = _restorer(model, scale, dev)
    rows = []
    for i, path in enumerate(files):
        name = os.path.splitext(os.path.basename(path))[0]
        rgb, grey = load_rgb(path)
        hr = modcrop(rgb, scale)
        h, w = hr.shape[:2]
        if min(low_size(h, w, scale)) < 1 or h - 2 * crop < 11 or w - 2 * crop < 11:
            raise ValueError(f"{path}: image {w}x{h} is too small for x{scale} (SSIM needs 11x11 px after the crop)")
        lr = degraded_lr(hr, scale, degrade, seed + i) if isinstance(scale, int) else bicubic_resize_uint8(hr, low_size(h, w, scale))
        sr = restore(lr, (h, w))
        if sr.shape != hr.shape:
            raise ValueError(f"{path}: restored image is {sr.shape}, HR is {hr.shape}")
        if grey:
            psnr, ssim = _grey_plane_scores(sr, hr[:, :, 0], crop)
        else:
            psnr, ssim = psnr_y(sr, hr, crop=crop), ssim_y(sr, hr, crop=crop)
        rows.append({"image": name, "height": h, "width": w, "channel": "grey" if grey else "Y",
                     "psnr_y": psnr, "ssim_y": ssim})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr_y", "ssim_y")}
    return {**info, "data": folder, "scale": scale, "degrade": degrade, "device": str(dev), "rows": rows, "mean": mean, "n_images": len(rows)}


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of the per-image rows and the mean."""
    rows = result["rows"]
    width = max([len("image"), len("mean")] + [len(r["image"]) for r in rows])
    lines = [
        f"{result['model']}{' (' + result['via'] + ')' if result.get('via') else ''} x{result['scale']:g} on {result['data']} "
        f"({result['n_images']} images, input {result.get('degrade', 'bicubic')}, Y channel, {border(result['scale'])} px crop)",
        f"{'image':<{width}}  {'size':>9}  {'PSNR-Y dB':>9}  {'SSIM-Y':>6}",
    ]
    for r in rows:
        note = "  (greyscale: scored on the grey plane)" if r.get("channel") == "grey" else ""
        lines.append(f"{r['image']:<{width}}  {r['width']:>4}x{r['height']:<4}  {r['psnr_y']:>9.2f}  {r['ssim_y']:.4f}{note}")
    lines.append(f"{'mean':<{width}}  {'':>9}  {result['mean']['psnr_y']:>9.2f}  {result['mean']['ssim_y']:.4f}")
    return "\n".join(lines)
