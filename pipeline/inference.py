"""Super-resolution of frames with a loaded model: batching, autocast, tiling.

Pure functions over arrays; the Ray actor that restores whole chunks lives in
``pipeline.actors`` and calls these.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
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


def cuda_or_raise() -> torch.device:
    """This process's GPU, or a RuntimeError saying why CUDA cannot be used (a worker
    given a GPU must never fall back to the CPU silently)."""
    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA device is visible (driver, CUDA_VISIBLE_DEVICES)"
        raise RuntimeError(f"this worker was given a GPU but CUDA is unusable: {why}")
    torch.cuda.init()
    torch.backends.cudnn.benchmark = True  # fixed shapes per video (and per training run): cuDNN picks its fastest kernels once
    return torch.device("cuda", torch.cuda.current_device())


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
    # bf16 where the GPU computes it natively (Ampere and later); fp16 on older GPUs, where bf16 is emulated and slow
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, from /proc/cpuinfo; False
    where that file does not exist)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def training_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training step for ``precision`` ("auto", "fp32", "bf16") on
    ``device``; None means plain fp32. "auto": bf16 where it is native (a GPU that supports
    it, a CPU with AVX512-BF16 / AMX), else fp32 (fp16 training would need loss scaling)."""
    if precision != "auto":
        return autocast_dtype(precision, device)
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16() else None
    amp = autocast_dtype("auto", device)
    return amp if amp == torch.bfloat16 else None


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on ``device`` for inference: eval mode, channels-last weights.

    Channels-last (NHWC) convolutions measured 1.2x faster than NCHW on the CPU
    (EDSR 16x64, 176x144 frames, batch 1, 2 cores: 5.32 against 4.40 frames/s in
    bench/results/2026-11-22-vm.md; 4.6 against 2.9 in an earlier micro-run) and are
    what tensor cores want on a GPU. A model with 3D convolutions (DUF) keeps its layout
    (channels-last is a 4D format).
    """
    model = model.to(device).eval()
    if any(p.dim() == 5 for p in model.parameters()):
        return model
    return model.to(memory_format=torch.channels_last)


def frames_in(model: nn.Module) -> int:
    """Frames a model takes per output frame: its window (DUF), or 1."""
    return int(getattr(model, "arch", {}).get("frames", 1))


def feature_maps(arch: dict) -> int:
    """An EDSR-equivalent feature count of an architecture, for the memory estimates
    below (which count EDSR's maps): EDSR's n_feats; for DUF, its widest dense layer's
    input and output over the whole window plus the filter weights, in those units."""
    if arch.get("name") == "duf":
        widest = arch["n_feats"] + arch["n_layers"] * arch["growth"]
        return -(-(3 * widest * arch["frames"] + 25 * arch["scale"] ** 2) // 4)
    return int(arch.get("n_feats", 64))


# A CPU batch is as many frames as keep one feature map under this many bytes: above
# it the maps fall out of the caches and batching is slower than one frame at a time
# (EDSR 16x64 on 176x144: batch 1 4.6 frames/s, batch 8 2.7; 2x16 on 176x144: batch 1
# 69, batch 2 85 frames/s).
CPU_BATCH_BYTES = 4 << 20
GPU_BATCH = 8


def auto_batch(device: torch.device, n_feats: int, height: int, width: int) -> int:
    """Frames per forward pass when infer.batch_size is 0 (auto)."""
    if device.type == "cuda":
        return GPU_BATCH
    return max(1, min(8, CPU_BATCH_BYTES // max(1, n_feats * height * width * 4)))


def activation_bytes_per_pixel(n_feats: int, scale: int, amp: torch.dtype | None) -> int:
    """Peak activation bytes per input pixel of an EDSR forward pass, from its shapes:
    the body holds about four feature maps at once (input, skip, block input and
    output), each x2 (or x3) upsampler step a conv output and its pixel shuffle at the
    step's resolution, plus the fp32 output; doubled for the allocator's slack."""
    size = 2 if amp in (torch.float16, torch.bfloat16) else 4
    peak, side = 4 * n_feats, 1
    for step in (2, 2) if scale == 4 else (scale,):
        side *= step
        peak = max(peak, 2 * n_feats * side * side)
    return 2 * (peak * size + 3 * scale * scale * 4)


def output_bytes(batch: int, height: int, width: int, scale: int) -> int:
    """Bytes of a batch's full-size results: the fp32 output and its conversion, which
    holds an fp32 copy, the luma and chroma temporaries and the uint8 planes (about 13
    bytes per output value at its peak, more than the uint8 RGB path's 6)."""
    return max(1, batch) * height * width * scale * scale * 3 * 13


def fit_tile(free_bytes: int, n_feats: int, scale: int, batch: int, amp: torch.dtype | None) -> int:
    """The largest tile side (input px, a multiple of 64, at least 64) whose batch's
    activations fit in half of ``free_bytes`` (GPU or RAM) (the rest stays for the other stages and
    the allocator's fragmentation)."""
    per_pixel = activation_bytes_per_pixel(n_feats, scale, amp) * max(1, batch)
    return max(64, int((max(0, free_bytes) / 2 / per_pixel) ** 0.5) // 64 * 64)


CPU_TILE = 512


def tile_for(
    tile: int, overlap: int, device: torch.device, n_feats: int, scale: int, batch: int, amp: torch.dtype | None,
    frame: tuple[int, int] = (0, 0),
) -> int:
    """infer.tile resolved. A positive value as it is. 0 (auto): sized from memory less
    the full-size results of a batch of ``frame`` (height, width) frames, on a GPU
    from its free memory (plus what this process's allocator holds unused, so the
    actor's own cache does not shrink later tiles), on the CPU from this CPU's share
    of the machine's memory, at most ``CPU_TILE``. Always more than twice the overlap."""
    if tile:
        return tile
    out = output_bytes(batch, frame[0], frame[1], scale)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return max(fit_tile(free - out, n_feats, scale, batch, amp), 4 * overlap)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf: the fixed CPU tile
        return max(CPU_TILE, 4 * overlap)
    share = total // (os.cpu_count() or 1)
    return max(min(CPU_TILE, fit_tile(share - out, n_feats, scale, batch, amp)), 4 * overlap)


def batch_and_tile(
    batch: int, tile: int, overlap: int, device: torch.device, n_feats: int, scale: int, amp: torch.dtype | None,
    frame: tuple[int, int],
) -> tuple[int, int]:
    """(frames per forward pass, tile side) for ``frame`` (height, width) frames.

    A set ``tile`` is kept with the batch. Auto (0): the batch is lowered before the
    frames are tiled: the largest batch up to ``batch`` whose whole frames fit (no
    tiling, tile 0); when not even one whole frame fits, one frame at a time in the
    largest tiles that fit."""
    if tile:
        return batch, tile
    for b in range(batch, 0, -1):
        t = tile_for(0, overlap, device, n_feats, scale, b, amp, frame)
        if t >= max(frame):
            return b, 0
    return 1, tile_for(0, overlap, device, n_feats, scale, 1, amp, frame)


def tiled_pixels(height: int, width: int, tile: int, overlap: int) -> float:
    """Input pixels the model computes for a frame in tiles, over the frame's pixels (1.0
    untiled): the cost of the overlaps."""
    rows, cols = _tile_spans(height, tile or height, overlap), _tile_spans(width, tile or width, overlap)
    return sum((ye - ys) * (xe - xs) for ys, ye, _, _ in rows for xs, xe, _, _ in cols) / (height * width)


def _tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split [0, length) into equal tiles of at most ``tile`` px overlapping by >= ``overlap``
    (as few as can cover it; equal sizes, so no tile is pushed onto its neighbour).

    Returns (tile_start, tile_end, own_start, own_end): each output pixel is taken from
    exactly one tile, the one whose owned span holds it (boundaries sit in the middle
    of the overlaps, as far as possible from every tile's edge).
    """
    if length <= tile:
        return [(0, length, 0, length)]
    n = -(-(length - overlap) // (tile - overlap))  # tiles needed
    size = -(-(length + (n - 1) * overlap) // n)  # equal sides, each <= tile
    starts = [round(i * (length - size) / (n - 1)) for i in range(n)]
    spans = []
    for i, s in enumerate(starts):
        own_start = 0 if i == 0 else (s + starts[i - 1] + size) // 2
        own_end = length if i == len(starts) - 1 else (starts[i + 1] + s + size) // 2
        spans.append((s, s + size, own_start, own_end))
    return spans


def _forward(model: nn.Module, x: torch.Tensor, amp: torch.dtype | None, size: tuple[int, int] | None = None) -> torch.Tensor:
    ctx = torch.autocast(device_type=x.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    with ctx:
        return (model(x) if size is None else model(x, size=size)).float()


def continuous(model: nn.Module) -> bool:
    """Whether ``model`` restores to any size (``forward(x, size)``): a continuous-scale model."""
    return getattr(model, "arch", {}).get("name") == "liif"


def place(y: torch.Tensor, geo) -> torch.Tensor:
    """The picture ``y`` (N, 3, h, w) in the frame of ``geo`` (a ``media.geometry.Geometry``):
    itself, or centred on black (``pad``), or its centre (``crop``)."""
    if not geo.resized:
        return y
    (fh, fw), (oy, ox) = geo.frame, geo.offset
    out = y.new_zeros((y.shape[0], 3, fh, fw)).contiguous(memory_format=torch.channels_last)
    ys, xs = max(0, -oy), max(0, -ox)  # where the picture's visible part starts
    ye, xe = min(y.shape[2], fh - oy), min(y.shape[3], fw - ox)
    out[:, :, ys + oy:ye + oy, xs + ox:xe + ox] = y[:, :, ys:ye, xs:xe]
    return out


@torch.inference_mode()
def upscale_tensor(model: nn.Module, x: torch.Tensor, scale: int, tile: int = 0, overlap: int = 16, amp: torch.dtype | None = None,
                   geometry=None) -> torch.Tensor:
    """float (N, 3, H, W) in [0, 1] on the model's device -> float (N, 3, sH, sW) in [0, 1];
    for a multi-frame model, windows (N, T, 3, H, W) -> their centre frames upscaled.

    When ``tile`` > 0 and H or W exceeds it, the frame is restored in overlapping tiles
    so memory is bounded by the tile size, not the frame size. A continuous-scale model
    restores to ``geometry``'s picture (``media.geometry``; default ``scale`` x the input,
    rounded to even sides), placed in its frame; it is never tiled: the whole frame's
    features are computed, and the output pixels asked for in blocks (``models.liif``).
    Another model restores at its scale, then is resized (bicubic, antialiased) to a
    ``geometry`` picture of another size, and placed likewise.
    """
    h, w = x.shape[-2:]
    x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x.contiguous()
    if continuous(model):
        if geometry is None:
            from pipeline.media.geometry import geometry as geometry_of

            geometry = geometry_of(w, h, scale, integer_model=False)
        return place(_forward(model, x, amp, geometry.picture).clamp_(0, 1), geometry)
    if not tile or (h <= tile and w <= tile):
        return _resized(_forward(model, x, amp).clamp_(0, 1), geometry)
    out = torch.empty((x.shape[0], 3, h * scale, w * scale), device=x.device, memory_format=torch.channels_last)
    for ys, ye, oys, oye in _tile_spans(h, tile, overlap):
        for xs, xe, oxs, oxe in _tile_spans(w, tile, overlap):
            y = _forward(model, x[..., ys:ye, xs:xe], amp)
            out[:, :, oys * scale:oye * scale, oxs * scale:oxe * scale] = y[
                :, :, (oys - ys) * scale:(oye - ys) * scale, (oxs - xs) * scale:(oxe - xs) * scale
            ]
    return _resized(out.clamp_(0, 1), geometry)


def _resized(y: torch.Tensor, geo) -> torch.Tensor:
    """An integer model's output ``y`` at ``geo``'s picture size (bicubic, antialiased,
    when it differs) in ``geo``'s frame; ``y`` itself without a geometry."""
    if geo is None:
        return y
    if tuple(y.shape[-2:]) != tuple(geo.picture):
        y = F.interpolate(y, size=geo.picture, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
    return place(y, geo)


class HostCopy:
    """Device-to-host copies of results that overlap the next batch's compute: on a GPU
    each copy runs on a side stream into a pinned buffer (reused once its consumer has
    read it) and ``start`` returns at once; ``result()`` waits for that copy only. On
    the CPU the result is the tensor's own memory."""

    def __init__(self) -> None:
        self._free: list[torch.Tensor] = []
        self._stream = None
        self._lock = threading.Lock()

    def _buffer(self, like: torch.Tensor) -> torch.Tensor:
        with self._lock:
            for i, b in enumerate(self._free):
                if b.shape == like.shape and b.dtype == like.dtype:
                    return self._free.pop(i)
        return torch.empty(like.shape, dtype=like.dtype, pin_memory=True)

    def start(self, t: torch.Tensor) -> Callable[[], np.ndarray]:
        if t.device.type != "cuda":
            host = t.cpu().numpy()
            return lambda: host
        if self._stream is None:
            self._stream = torch.cuda.Stream(t.device)
        buf = self._buffer(t)
        self._stream.wait_stream(torch.cuda.current_stream(t.device))
        with torch.cuda.stream(self._stream):
            buf.copy_(t, non_blocking=True)
            t.record_stream(self._stream)  # the allocator must not hand t's memory out before the copy ends
            done = torch.cuda.Event()
            done.record(self._stream)

        def result() -> np.ndarray:
            done.synchronize()
            host = buf.numpy().copy()
            with self._lock:
                self._free.append(buf)
            return host

        return result


def upscale_frames_deferred(
    model: nn.Module,
    frames: np.ndarray,
    scale: int,
    *,
    device: torch.device,
    tile: int = 0,
    overlap: int = 16,
    amp: torch.dtype | None = None,
    i420: str | None = None,
    crop: tuple[int, int] | None = None,
    host: HostCopy | None = None,
    geometry=None,
) -> Callable[[], np.ndarray]:
    """Upscale uint8 (N, H, W, 3) RGB frames; returns a function giving the result once
    its copy to the host is done (see ``HostCopy``): uint8 (N, scale*H, scale*W, 3) RGB
    (rounded), or with ``i420`` (the colorspace) the limited-range I420 planes
    (N, h * 3 // 2, w) converted on the device. ``crop`` (h, w): keep the top-left
    h x w of each result (I420 needs even sides). uint16 frames (0..65535, from a source
    of more than 8 bits) give uint16 RGB, or 10-bit I420 planes (uint16). A multi-frame
    model takes windows (N, T, H, W, 3) and gives their centre frames upscaled. A
    continuous-scale model gives ``geometry``'s frames (``upscale_tensor``)."""
    want = 5 if frames_in(model) > 1 else 4
    if frames.ndim != want or frames.shape[-1] != 3 or frames.dtype not in (np.uint8, np.uint16):
        shape = "(N, T, H, W, 3) windows" if want == 5 else "(N, H, W, 3)"
        raise ValueError(f"frames must be uint8 or uint16 {shape}, got {frames.dtype} {frames.shape}")
    deep = frames.dtype == np.uint16
    peak = 65535.0 if deep else 255.0
    with torch.inference_mode():
        # integers go to the device (a quarter or half of the bytes of float), are quantised
        # back there, and an NHWC result is already in the (N, H, W, 3) order of the frames
        x = torch.from_numpy(np.ascontiguousarray(frames))
        if device.type == "cuda":
            x = x.pin_memory()  # (torch's caching host allocator reuses the block) so the upload does not block the stream
        x = x.to(device, non_blocking=True).movedim(-1, -3).float().div_(peak)
        y = upscale_tensor(model, x, scale, tile=tile, overlap=overlap, amp=amp, geometry=geometry)
        if crop is not None:
            y = y[:, :, :crop[0], :crop[1]]
        if i420 is not None:
            from pipeline.media.colour import rgb_to_i420

            out = rgb_to_i420(y, i420, bits=10 if deep else 8)
        else:
            out = y.mul_(peak).round_().clamp_(0, peak).to(torch.uint16 if deep else torch.uint8).permute(0, 2, 3, 1).contiguous()
        return (host or HostCopy()).start(out)


def upscale_frames(model: nn.Module, frames: np.ndarray, scale: int, **kwargs) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> uint8 (N, scale*H, scale*W, 3) RGB (rounded); the
    keyword arguments of ``upscale_frames_deferred``."""
    return upscale_frames_deferred(model, frames, scale, **kwargs)()


def smaller_tile(tile: int, frame: tuple[int, int], overlap: int) -> int | None:
    """The next tile to try after running out of memory: half the frame's longer side
    when untiled, else half the tile (a multiple of 16), never below 4 x overlap; None
    when nothing smaller is left."""
    current = tile or max(frame)
    nxt = current // 2 // 16 * 16
    return nxt if nxt >= max(4 * overlap, 32) else None


def upscale_frames_fitting(
    model: nn.Module, frames: np.ndarray, scale: int, *, device: torch.device, tile: int = 0, overlap: int = 16,
    on_retry=None, **kwargs,
) -> tuple[Callable[[], np.ndarray], int]:
    """``upscale_frames_deferred``, retried in smaller tiles when the device runs out of
    memory (another process took some, or the estimate was short); returns (the deferred
    result, the tile that worked), so the caller keeps it for the next batches.
    ``on_retry(tile)`` is told."""
    frame = frames.shape[-3:-1]
    tile = min(tile, max(frame)) if tile else 0
    while True:
        try:
            return upscale_frames_deferred(model, frames, scale, device=device, tile=tile, overlap=overlap, **kwargs), tile
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not isinstance(e, torch.OutOfMemoryError) and "ALLOC_FAILED" not in str(e):  # cuDNN/cuBLAS workspaces
                raise
            nxt = smaller_tile(tile, frame, overlap)
            if nxt is None and len(frames) == 1:
                raise
        if device.type == "cuda":
            torch.cuda.empty_cache()  # (outside the except block: its traceback held the failed attempt's tensors)
        if nxt is None:  # the smallest tiles still do not fit a batch: half the frames at a time
            half = len(frames) // 2
            first, tile = upscale_frames_fitting(model, frames[:half], scale, device=device, tile=tile, overlap=overlap, on_retry=on_retry, **kwargs)
            second, tile = upscale_frames_fitting(model, frames[half:], scale, device=device, tile=tile, overlap=overlap, on_retry=on_retry, **kwargs)
            return (lambda first=first, second=second: np.concatenate([first(), second()])), tile
        tile = nxt
        if on_retry:
            on_retry(tile)
