"""A chunk of a video upscaled: decoded, run through the model in batches and encoded,
the three overlapped in threads (``pipeline.overlap``). A plain function over a local
file: the inference actor (``pipeline.actors``) and the speed bench call it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from pipeline import inference
from pipeline.config import InferConfig, MediaConfig
from pipeline.media.chunks import Chunk, decode_chunk
from pipeline.media.encode import ChunkWriter
from pipeline.media.geometry import Geometry
from pipeline.media.geometry import geometry as geometry_of
from pipeline.media.probe import VideoInfo
from pipeline.media.windows import chunk_windows
from pipeline.overlap import Behind, ahead

NVENC_MAX_SIDE = 4096  # H.264 NVENC's largest frame side


def encoder_for(media: MediaConfig, device: torch.device, size: tuple[int, int] = (0, 0), depth: int = 8) -> str:
    """The FFmpeg encoder of a video's chunks, for output frames of ``size`` (h, w) and
    ``depth`` bits: ``media.codec`` when it is not H.264; for H.264, NVENC when asked
    for, or with ``media.encoder`` auto on a GPU that has it and frames it can take
    (sides up to 4096, 8-bit); libx264 otherwise. Decided once per video (by one
    actor), so all its chunks join."""
    from pipeline.media.encode import nvenc_available

    if media.codec != "libx264":
        return media.codec  # NVENC is for H.264 only here
    fits = max(size) <= NVENC_MAX_SIDE and depth == 8
    if media.encoder == "nvenc" and depth > 8:
        raise RuntimeError("media.encoder=nvenc, but H.264 NVENC encodes 8-bit only and this video's output is 10-bit: "
                           "set media.bit_depth=8 or media.encoder=auto")
    if media.encoder == "nvenc":
        if not nvenc_available():
            raise RuntimeError("media.encoder=nvenc, but NVENC cannot be opened here (no NVIDIA GPU with NVENC, driver, or FFmpeg support)")
        if not fits:
            raise RuntimeError(f"media.encoder=nvenc, but H.264 NVENC takes sides up to {NVENC_MAX_SIDE} px, the output is {size[1]}x{size[0]}")
        return "h264_nvenc"
    if media.encoder == "auto" and device.type == "cuda" and fits and nvenc_available():
        return "h264_nvenc"
    return "libx264"


def upscale_chunk(
    model: torch.nn.Module, scale: int, info: VideoInfo, chunk: Chunk, path: str, media: MediaConfig,
    infer: InferConfig, device: torch.device, amp: torch.dtype | None, depth: int = 2, threads: int = 1,
    device_colour: bool | None = None, codec: str | None = None, geometry: Geometry | None = None,
) -> int:
    """Decode ``chunk`` of the local file ``info.path``, upscale it with ``model`` and
    encode it to ``path``; returns the frames written.

    Decoding runs one thread ahead of the model and encoding one thread behind it, so
    the three overlap; each queue holds ``depth`` batches (0: all three in turn in this
    thread, for comparison). On a GPU the colour conversion to I420 runs on the device
    and the copies back overlap the next batch (``inference.HostCopy``). ``threads``:
    the decoder's CPU threads (the actor's share; the decoder's output does not depend on
    it). The encoder's are ``media.encoder_threads``, the same everywhere: x264's output
    depends on its thread count.
    ``device_colour``: convert to I420 on the model's device (None: on a GPU only; on
    the CPU swscale is faster). ``codec``: the video's encoder (None: ``encoder_for``).
    A multi-frame model (DUF) gets each frame's window (``media.windows``: the chunk is
    decoded with the neighbouring GOPs that hold its context, so chunking does not change
    the output; windows stop at scene cuts). A source of more than 8 bits gives 10-bit output unless ``media.bit_depth`` is 8:
    its frames stay 16-bit integers from the decoder to the encoder, and the model runs
    in fp32 where ``amp`` is bf16 (8 significant bits). ``geometry``: the output's size
    and the picture's place in it (``media.geometry``; default: ``scale`` x the source).
    """
    if geometry is None:
        geometry = geometry_of(info.width, info.height, scale, integer_model=not inference.continuous(model))
    # yuv420p needs even sides: an odd output side (x3 of an odd input) loses its last pixel row/column
    height, width = geometry.frame
    # the model's own scale: an integer model restores at it (then resized to the picture); the memory estimates count whole scales
    scale = math.ceil(geometry.scale) if inference.continuous(model) else int(getattr(model, "arch", {}).get("scale", scale))
    depth = media.output_depth(info.bit_depth)
    if depth > 8 and amp is torch.bfloat16:
        amp = None  # bf16 keeps 8 significant bits: a 10-bit output needs fp32 (or fp16) results
    n_feats = inference.feature_maps(getattr(model, "arch", {}))
    radius = inference.frames_in(model) // 2
    batch_size, tile = inference.batch_and_tile(infer.batch_size or inference.auto_batch(device, n_feats, info.height, info.width),
                                                infer.tile, infer.tile_overlap, device, n_feats, scale, amp, (info.height, info.width))

    on_device = device.type == "cuda" if device_colour is None else device_colour
    host = inference.HostCopy()

    def batches() -> Iterator[tuple[list[int], np.ndarray]]:
        pts: list[int] = []
        rgbs: list[np.ndarray] = []
        if radius:  # a multi-frame model: each frame's window, the chunk decoded with its halo
            decoded = chunk_windows(info.path, chunk, info, radius, threads=threads, deep=depth > 8)
        else:
            decoded = decode_chunk(info.path, chunk, info, threads=threads, deep=depth > 8)
        for p, rgb in decoded:
            pts.append(p)
            rgbs.append(rgb)
            if len(pts) == batch_size:
                yield pts, np.stack(rgbs)
                pts, rgbs = [], []
        if pts:
            yield pts, np.stack(rgbs)

    n = 0
    with ChunkWriter(
        path, width=width, height=height, time_base=info.time_base, rate=info.rate,
        colorspace=info.colorspace, crf=media.crf, preset=media.preset, threads=media.encoder_threads, sar=info.sar,
        codec=codec or encoder_for(media, device, (height, width), depth), depth=depth,
    ) as writer:

        def encode(item: tuple[list[int], Callable[[], np.ndarray]]) -> None:
            pts, result = item
            for p, frame in zip(pts, result(), strict=True):
                if on_device:
                    writer.write_i420(p, frame)
                else:
                    writer.write(p, frame[:height, :width])

        with Behind(encode, depth) as encoder:
            for pts, frames in ahead(batches(), depth):
                out, tile = inference.upscale_frames_fitting(
                    model, frames, scale, device=device, tile=tile, overlap=infer.tile_overlap, amp=amp, host=host,
                    i420=info.colorspace if on_device else None, crop=(height, width) if on_device else None, geometry=geometry,
                    on_retry=lambda t: print(f"infer: out of memory, tiles of {t} px now", flush=True))
                encoder.put((pts, out))
                n += len(pts)
    return n
