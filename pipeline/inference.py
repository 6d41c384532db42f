"""Super-resolution of frames with a loaded model: batching, autocast, tiling.

Pure functions over arrays; the Ray actor that restores whole chunks lives in
``pipeline.actors`` and calls these.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn


def pick_device() -> torch.device:
    """CUDA when this process may use a GPU, else CPU.

    Inside a Ray task or actor, only GPUs that Ray assigned count: Ray does not hide
    the node's GPUs from a task that asked for none, and using them unreserved would
    oversubscribe them.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        import ray
        from ray._private.worker import WORKER_MODE, global_worker

        if ray.is_initialized() and global_worker.mode == WORKER_MODE:
            return torch.device("cuda") if ray.get_gpu_ids() else torch.device("cpu")
    except ImportError:
        pass
    return torch.device("cuda")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32.

    "auto": bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split [0, length) into tiles of ``tile`` px overlapping by >= ``overlap``.

    Returns (tile_start, tile_end, own_start, own_end): each output pixel is taken from
    exactly one tile, the one whose owned span holds it (boundaries sit in the middle
    of the overlaps, as far as possible from every tile's edge).
    """
    if length <= tile:
        return [(0, length, 0, length)]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    spans = []
    for i, s in enumerate(starts):
        own_start = 0 if i == 0 else (s + starts[i - 1] + tile) // 2
        own_end = length if i == len(starts) - 1 else (starts[i + 1] + s + tile) // 2
        spans.append((s, s + tile, own_start, own_end))
    return spans


def _forward(model: nn.Module, x: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    ctx = torch.autocast(device_type=x.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    with ctx:
        return model(x).float()


@torch.inference_mode()
def upscale_tensor(model: nn.Module, x: torch.Tensor, scale: int, tile: int = 0, overlap: int = 16, amp: torch.dtype | None = None) -> torch.Tensor:
    """float (N, 3, H, W) in [0, 1] on the model's device -> float (N, 3, sH, sW) in [0, 1].

    When ``tile`` > 0 and H or W exceeds it, the frame is restored in overlapping tiles
    so memory is bounded by the tile size, not the frame size.
    """
    _, _, h, w = x.shape
    if not tile or (h <= tile and w <= tile):
        return _forward(model, x, amp).clamp_(0, 1)
    out = torch.empty((x.shape[0], 3, h * scale, w * scale), device=x.device)
    for ys, ye, oys, oye in _tile_spans(h, tile, overlap):
        for xs, xe, oxs, oxe in _tile_spans(w, tile, overlap):
            y = _forward(model, x[:, :, ys:ye, xs:xe], amp)
            out[:, :, oys * scale:oye * scale, oxs * scale:oxe * scale] = y[
                :, :, (oys - ys) * scale:(oye - ys) * scale, (oxs - xs) * scale:(oxe - xs) * scale
            ]
    return out.clamp_(0, 1)


def upscale_frames(
    model: nn.Module,
    frames: np.ndarray,
    scale: int,
    *,
    device: torch.device,
    tile: int = 0,
    overlap: int = 16,
    amp: torch.dtype | None = None,
) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> uint8 (N, scale*H, scale*W, 3) RGB (rounded)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255)
        y = upscale_tensor(model, x, scale, tile=tile, overlap=overlap, amp=amp)
        return y.mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
