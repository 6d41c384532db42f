"""The Ray wrapping of the stages: tasks for training-frame extraction and metrics,
and the inference actor. Each calls the plain stage functions; tests call those
directly without Ray.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import ray
import torch

from pipeline import inference
from pipeline.config import InferConfig, MediaConfig
from pipeline.media.chunks import Chunk, decode_chunk, iter_training_frames
from pipeline.media.encode import ChunkWriter
from pipeline.media.probe import VideoInfo
from pipeline.models import checkpoint
from pipeline.training import reservoir


def _threads() -> int:
    """CPU threads a worker may use: the CPUs Ray assigned it (at least 1)."""
    try:
        n = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    except Exception:  # noqa: BLE001 - outside Ray
        n = 1
    return max(1, n)


@ray.remote(num_cpus=1, num_returns=2)
def extract_training_frames(path: str, policy: str, max_frames: int, seed: int) -> tuple[list[np.ndarray], int]:
    """(training frames of a video by policy, at most ``max_frames`` as a uniform
    sample; their count). Two returns, so the driver can read the count without
    fetching the frames."""
    frames = reservoir((rgb for _, rgb in iter_training_frames(path, policy)), max_frames, seed)
    return frames, len(frames)


class ChunkRestorer:
    """Restores whole chunks: decode -> batched SR -> encode to a chunk file.

    The model is loaded once per actor and per checkpoint (a video's fine-tuned
    model); calls carry everything else, nothing per-call is kept on ``self``.
    """

    def __init__(self, infer: InferConfig) -> None:
        self.infer = infer
        self.device = inference.pick_device()
        if self.device.type == "cpu":
            torch.set_num_threads(_threads())
        self.amp = inference.autocast_dtype(infer.precision, self.device)
        self._model_key: str | None = None
        self._model: torch.nn.Module | None = None

    def _load(self, key: str, ckpt_box: list) -> torch.nn.Module:
        if key != self._model_key:
            blob = ray.get(ckpt_box[0]) if isinstance(ckpt_box[0], ray.ObjectRef) else ckpt_box[0]
            model, _ = checkpoint.load(blob, map_location=self.device)
            self._model, self._model_key = model.to(self.device).eval(), key
        return self._model

    def restore(
        self, key: str, ckpt_box: list, scale: int, info: VideoInfo, chunk: Chunk, out_path: str, media: MediaConfig
    ) -> dict[str, Any]:
        """Restore ``chunk`` of ``info.path`` into ``out_path``; returns {"frames", "seconds"}.

        ``key`` names the checkpoint (its sha256); ``ckpt_box`` is ``[ObjectRef]`` to its
        bytes, boxed in a list so Ray does not fetch the bytes for every chunk: the actor
        fetches them only when the key changes (once per video).
        """
        model = self._load(key, ckpt_box)
        t0 = time.perf_counter()
        n = 0
        tmp = out_path + ".tmp." + media.container
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        with ChunkWriter(
            tmp,
            width=info.width * scale,
            height=info.height * scale,
            time_base=info.time_base,
            rate=info.rate,
            colorspace=info.colorspace,
            crf=media.crf,
            preset=media.preset,
        ) as writer:
            batch: list[tuple[int, np.ndarray]] = []

            def flush() -> None:
                out = inference.upscale_frames(
                    model,
                    np.stack([rgb for _, rgb in batch]),
                    scale,
                    device=self.device,
                    tile=self.infer.tile,
                    overlap=self.infer.tile_overlap,
                    amp=self.amp,
                )
                for (pts, _), frame in zip(batch, out, strict=True):
                    writer.write(pts, frame)
                batch.clear()

            for pts, rgb in decode_chunk(info.path, chunk, info):
                batch.append((pts, rgb))
                n += 1
                if len(batch) == self.infer.batch_size:
                    flush()
            if batch:
                flush()
        if n != chunk.frames:
            raise RuntimeError(f"{info.path} chunk {chunk.index}: restored {n} frames, expected {chunk.frames}")
        os.replace(tmp, out_path)
        return {"frames": n, "seconds": time.perf_counter() - t0, "chunk": chunk.index}


def restorer_actor(infer: InferConfig, use_gpu: bool, cpus: int):
    """A ChunkRestorer Ray actor on one GPU, or on ``cpus`` CPUs."""
    opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": cpus}
    return ray.remote(ChunkRestorer).options(**opts).remote(infer)


@ray.remote(num_cpus=1)
def measure_video_task(**kwargs: Any) -> dict[str, Any]:
    from pipeline.measure import measure_video

    return measure_video(**kwargs)
