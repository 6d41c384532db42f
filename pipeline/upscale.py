"""A chunk of a video upscaled: decoded, run through the model in batches and encoded,
the three overlapped in threads (``pipeline.overlap``). A plain function over a local
file: the inference actor (``pipeline.actors``) and the speed bench call it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from pipeline import inference
from pipeline.config import InferConfig, MediaConfig
from pipeline.media.chunks import Chunk, decode_chunk
from pipeline.media.encode import ChunkWriter
from pipeline.media.probe import VideoInfo
from pipeline.overlap import Behind, ahead


def upscale_chunk(
    model: torch.nn.Module, scale: int, info: VideoInfo, chunk: Chunk, path: str, media: MediaConfig,
    infer: InferConfig, device: torch.device, amp: torch.dtype | None, depth: int = 2,
) -> int:
    """Decode ``chunk`` of the local file ``info.path``, upscale it with ``model`` and
    encode it to ``path``; returns the frames written.

    Decoding runs one thread ahead of the model and encoding one thread behind it, so
    the three overlap; each queue holds ``depth`` batches (0: all three in turn in this
    thread, for comparison).
    """
    # yuv420p needs even sides: an odd output side (x3 of an odd input) loses its last pixel row/column
    width, height = info.width * scale // 2 * 2, info.height * scale // 2 * 2
    n_feats = int(getattr(model, "arch", {}).get("n_feats", 64))
    batch_size, tile = inference.batch_and_tile(infer.batch_size or inference.auto_batch(device, n_feats, info.height, info.width),
                                                infer.tile, infer.tile_overlap, device, n_feats, scale, amp, (info.height, info.width))

    def batches() -> Iterator[tuple[list[int], np.ndarray]]:
        pts: list[int] = []
        rgbs: list[np.ndarray] = []
        for p, rgb in decode_chunk(info.path, chunk, info):
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
        colorspace=info.colorspace, crf=media.crf, preset=media.preset,
    ) as writer:

        def encode(item: tuple[list[int], np.ndarray]) -> None:
            for p, frame in zip(*item, strict=True):
                writer.write(p, frame[:height, :width])

        with Behind(encode, depth) as encoder:
            for pts, frames in ahead(batches(), depth):
                out, tile = inference.upscale_frames_fitting(model, frames, scale, device=device, tile=tile, overlap=infer.tile_overlap,
                                                             amp=amp, on_retry=lambda t: print(f"infer: out of memory, tiles of {t} px now", flush=True))
                encoder.put((pts, out))
                n += len(pts)
    return n
