"""The Ray wrapping of the stages: tasks for probing, training-frame extraction,
assembly and metrics, and the inference actor. Each calls the plain stage functions
(tests call those directly without Ray) on node-local copies of its inputs
(``Store.local_copy``), and commits what it writes to the store atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray
import torch

from pipeline import inference
from pipeline.config import InferConfig, MediaConfig
from pipeline.media.chunks import Chunk, decode_chunk, iter_training_frames
from pipeline.media.encode import ChunkWriter, assemble
from pipeline.media.probe import VideoInfo, probe
from pipeline.models import checkpoint
from pipeline.overlap import Behind, ahead
from pipeline.storage import Store, errors_about, is_s3, split
from pipeline.training import drop_near_duplicates, reservoir


def _threads() -> int:
    """CPU threads a worker may use: the CPUs Ray assigned it (at least 1)."""
    try:
        n = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    except Exception:  # noqa: BLE001 - outside Ray
        n = 1
    return max(1, n)


def _local_tmp(store: Store, final_uri: str, suffix: str) -> str:
    """Where to write a file before committing it to ``final_uri``: a hidden name in the
    same folder for local storage (the commit is a rename), the scratch space for S3."""
    folder = store.scratch() if is_s3(final_uri) else os.path.dirname(final_uri)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f".reelsr-{uuid.uuid4().hex[:12]}.tmp{suffix}")


@contextlib.contextmanager
def _named(local: str, uri: str) -> Iterator[None]:
    """Errors about a scratch copy name the store URI the user knows, not the copy."""
    try:
        yield
    except ValueError as e:
        if local == uri:
            raise
        raise ValueError(str(e).replace(local, uri)) from None


@ray.remote(num_cpus=1)
def probe_task(store: Store, source: str, version: str, max_pixels: int = 0) -> VideoInfo:
    """Probe a video where it will be read (its scratch copy then serves later tasks on
    the node). The returned ``path`` is the store URI, not the node's copy."""
    local = store.local_copy(source, version)
    with _named(local, source):
        return dataclasses.replace(probe(local, max_pixels), path=source)


@ray.remote(num_cpus=1, num_returns=2)
def extract_training_frames(
    store: Store, info: VideoInfo, version: str, policy: str, max_frames: int, seed: int, dedup: float = 0.0
) -> tuple[list[np.ndarray], int]:
    """(training frames of the video ``info.path`` (a store URI) by policy, near-duplicates
    dropped, at most ``max_frames`` as a uniform sample; their count). Two returns, so the
    driver can read the count without fetching the frames."""
    source = info.path
    path = store.local_copy(source, version)
    with _named(path, source):
        kept = drop_near_duplicates((rgb for _, rgb in iter_training_frames(path, policy, dataclasses.replace(info, path=path))), dedup)
        frames = reservoir(kept, max_frames, seed)
    return frames, len(frames)


@ray.remote(num_cpus=1)
def assemble_task(
    store: Store, chunk_uris: list[str], source: str, version: str, output: str, expected_frames: int, rotation: int = 0
) -> dict[str, int]:
    """Join the restored chunks and the source's audio (and display rotation), check the
    frame count, and commit the result to ``output``; returns the output's width, height
    and frames."""
    src = store.local_copy(source, version)
    work = tempfile.mkdtemp(prefix="reelsr-assemble-", dir=store.scratch())
    tmp = _local_tmp(store, output, os.path.splitext(output)[1])
    try:
        paths = []
        for i, uri in enumerate(chunk_uris):
            if is_s3(uri):
                paths.append(os.path.join(work, f"{i:05d}{os.path.splitext(uri)[1]}"))
                with errors_about(uri, "download"):
                    store.client().download_file(*split(uri), paths[-1])
            else:
                paths.append(uri)
        with errors_about(output, "write", beside=tmp):  # a full disk names the output, not the temporary file
            assemble(paths, src, tmp, rotation)
        info = probe(tmp)
        if info.frames != expected_frames:
            raise RuntimeError(f"restored video has {info.frames} frames, source {expected_frames}")
        store.put_file(tmp, output)  # only a checked file reaches the final name
        return {"width": info.width, "height": info.height, "frames": info.frames}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if os.path.exists(tmp):
            os.unlink(tmp)


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
            self._model, self._model_key = inference.prepare(model, self.device), key
        return self._model

    def restore(
        self, key: str, ckpt_box: list, scale: int, info: VideoInfo, chunk: Chunk, store: Store, version: str, out_uri: str, media: MediaConfig
    ) -> dict[str, Any]:
        """Restore ``chunk`` of ``info.path`` (a store URI; read from this node's copy)
        into ``out_uri``, committed only when complete; returns {"frames", "seconds"}.

        ``key`` names the checkpoint (its sha256); ``ckpt_box`` is ``[ObjectRef]`` to its
        bytes, boxed in a list so Ray does not fetch the bytes for every chunk: the actor
        fetches them only when the key changes (once per video).
        """
        model = self._load(key, ckpt_box)
        t0 = time.perf_counter()
        n = 0
        source = info.path
        info = dataclasses.replace(info, path=store.local_copy(source, version))
        tmp = _local_tmp(store, out_uri, "." + media.container)
        try:
            with errors_about(out_uri, "write", beside=tmp):
                n = restore_chunk(model, scale, info, chunk, tmp, media, self.infer, self.device, self.amp)
            if n != chunk.frames:
                raise RuntimeError(f"{source} chunk {chunk.index}: restored {n} frames, expected {chunk.frames}")
            store.put_file(tmp, out_uri)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return {"frames": n, "seconds": time.perf_counter() - t0, "chunk": chunk.index}


def restore_chunk(
    model: torch.nn.Module, scale: int, info: VideoInfo, chunk: Chunk, path: str, media: MediaConfig,
    infer: InferConfig, device: torch.device, amp: torch.dtype | None, depth: int = 2,
) -> int:
    """Decode ``chunk`` of the local file ``info.path``, upscale it with ``model`` and
    encode it to ``path``; returns the frames written.

    Decoding runs one thread ahead of the model and encoding one thread behind it
    (``pipeline.overlap``), so the three overlap; each queue holds ``depth`` batches
    (0: all three in turn in this thread, for comparison).
    """
    # yuv420p needs even sides: an odd output side (x3 of an odd input) loses its last pixel row/column
    width, height = info.width * scale // 2 * 2, info.height * scale // 2 * 2
    n_feats = int(getattr(model, "arch", {}).get("n_feats", 64))
    batch_size = infer.batch_size or inference.auto_batch(device, n_feats, info.height, info.width)
    tile = inference.tile_for(infer.tile, infer.tile_overlap, device, n_feats, scale, batch_size, amp, (info.height, info.width))

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
                out = inference.upscale_frames(model, frames, scale, device=device, tile=tile, overlap=infer.tile_overlap, amp=amp)
                encoder.put((pts, out))
                n += len(pts)
    return n


def restorer_actor(infer: InferConfig, use_gpu: bool, cpus: int):
    """A ChunkRestorer Ray actor on one GPU, or on ``cpus`` CPUs. A dead actor is
    restarted and its chunk retried (a chunk is committed only when complete, so a
    retry cannot leave a partial one)."""
    opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": cpus}
    return ray.remote(ChunkRestorer).options(max_restarts=2, max_task_retries=2, **opts).remote(infer)


@ray.remote(num_cpus=1)
def measure_video_task(store: Store, versions: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    """``measure_video`` on this node's copies of the source, output and reference."""
    from pipeline.measure import measure_video

    for name in ("source", "output", "reference"):
        if kwargs.get(name):
            kwargs[name] = store.local_copy(kwargs[name], versions.get(name, ""))
    return measure_video(**kwargs)
