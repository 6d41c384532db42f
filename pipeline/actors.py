"""The Ray wrapping of the stages: probing, training-frame extraction, assembly and
metrics as Ray tasks, and the inference actor ``ChunkRestorer``. Each works on node-local
copies of its inputs (``Store.local_copy``) and commits what it writes through
``Store.committing``.

The light stages (probe, extraction, assembly, metrics) are also methods of the actor:
the run's pool hands them to an idle inference actor when it has one, so they take no
CPU from the pool and start no process; otherwise they run as the tasks below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray
import torch

from pipeline import inference
from pipeline.config import InferConfig, MediaConfig
from pipeline.datasets.frames import drop_near_duplicates, reservoir
from pipeline.media.chunks import Chunk, iter_training_frames, scan
from pipeline.media.encode import assemble
from pipeline.media.probe import VideoInfo, probe
from pipeline.models import build_model, checkpoint
from pipeline.storage import Store
from pipeline.storage.uri import is_s3
from pipeline.train.launch import node_cpus
from pipeline.upscale import encoder_for, upscale_chunk


def _threads() -> int:
    """CPU threads a worker may use: the CPUs Ray assigned it (at least 1)."""
    try:
        n = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    except Exception:  # noqa: BLE001 - outside Ray
        n = 1
    return max(1, n)


@contextlib.contextmanager
def _named(local: str, uri: str) -> Iterator[None]:
    """Errors about a scratch copy name the store URI the user knows, not the copy."""
    try:
        yield
    except ValueError as e:
        if local == uri:
            raise
        raise ValueError(str(e).replace(local, uri)) from None


def probe_source(store: Store, source: str, version: str, max_pixels: int = 0, scan_frames: bool = False) -> VideoInfo:
    """Probe a video where it will be read (its scratch copy then serves later tasks on
    the node), and with ``scan_frames`` find the frames that do not decode (a decode-only
    pass, ``media.chunks.scan``). The returned ``path`` is the store URI, not the node's copy."""
    local = store.local_copy(source, version)
    with _named(local, source):
        info = probe(local, max_pixels)
        if scan_frames:
            info = scan(local, info)
        return dataclasses.replace(info, path=source)


def training_frames(
    store: Store, info: VideoInfo, version: str, policy: str, max_frames: int, seed: int, dedup: float = 0.0, scale: int = 0,
    radius: int = 0,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """(training frames of the video ``info.path`` (a store URI) by policy, near-duplicates
    dropped, at most ``max_frames`` as a uniform sample; {"count", and with ``scale`` the
    video's estimated "degradation"}). Two returns, so the driver can read the second
    without fetching the frames. ``radius`` > 0 (a multi-frame model): each picked frame's
    window of 2 * radius + 1 (``media.windows.training_windows``), at most
    max_frames // (2 * radius + 1) windows, so memory holds max_frames frames."""
    from pipeline.estimate import estimate
    from pipeline.media.windows import training_windows

    source = info.path
    path = store.local_copy(source, version)
    local = dataclasses.replace(info, path=path)
    with _named(path, source):
        if radius:
            picked = training_windows(path, policy, local, radius)
            max_frames = max(1, max_frames // (2 * radius + 1))
        else:
            picked = (rgb for _, rgb in iter_training_frames(path, policy, local))
        frames = reservoir(drop_near_duplicates(picked, dedup), max_frames, seed)
        about: dict[str, Any] = {"count": len(frames)}
        if scale and frames:
            about["degradation"] = estimate(path, [w[radius] for w in frames] if radius else frames, scale).to_dict()
    return frames, about


def assemble_output(
    store: Store, chunk_uris: list[str], source: str, version: str, output: str, expected_frames: int, rotation: int = 0,
    retimed: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Join the restored chunks and the source's audio, subtitles, chapters and tags (and
    display rotation), check the frame count, and commit the result to ``output``; returns
    the output's width, height and frames, and what of the source it could not keep.
    ``retimed``: a new frame rate (``fruc.retime``'s ``rate_in``, ``rate_out`` and encoder
    settings): the chunks' frames are interpolated to it and encoded once more first."""
    src = store.local_copy(source, version)
    work = tempfile.mkdtemp(prefix="reelsr-assemble-", dir=store.scratch.folder())
    try:
        paths = []
        for i, uri in enumerate(chunk_uris):
            if is_s3(uri):
                paths.append(os.path.join(work, f"{i:05d}{os.path.splitext(uri)[1]}"))
                store.download(uri, paths[-1])
            else:
                paths.append(uri)
        if retimed:
            from pipeline.media.fruc import output_count, retime

            video = os.path.join(work, "retimed" + os.path.splitext(paths[0])[1])
            retime(paths, video, **retimed)
            paths = [video]
            expected_frames = output_count(expected_frames, retimed["rate_in"], retimed["rate_out"])
        with store.committing(output, os.path.splitext(output)[1]) as tmp:  # only a checked file reaches the final name
            dropped = assemble(paths, src, tmp, rotation)
            info = probe(tmp)
            if info.frames != expected_frames:
                raise RuntimeError(f"restored video has {info.frames} frames, {'the new rate gives' if retimed else 'source'} {expected_frames}")
        return {"width": info.width, "height": info.height, "frames": info.frames, "dropped": dropped}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(store: Store, versions: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    """``measure_video`` on this node's copies of the source, output and reference."""
    from pipeline.measure import measure_video

    for name in ("source", "output", "reference"):
        if kwargs.get(name):
            kwargs[name] = store.local_copy(kwargs[name], versions.get(name, ""))
    return measure_video(**kwargs)


probe_task = ray.remote(num_cpus=1)(probe_source)
extract_training_frames = ray.remote(num_cpus=1, num_returns=2)(training_frames)
assemble_task = ray.remote(num_cpus=1)(assemble_output)
measure_video_task = ray.remote(num_cpus=1)(measure)


def _fetch(box: list) -> bytes:
    """The bytes of a boxed ObjectRef (boxed in a list so Ray does not fetch the bytes
    for every call, only when the actor needs them)."""
    return ray.get(box[0]) if isinstance(box[0], ray.ObjectRef) else box[0]


class ChunkRestorer:
    """An inference actor: restores whole chunks (decode -> batched SR -> encode).

    The model is built and loaded in ``__init__`` (the run's starting model, or the
    architecture freshly initialised); a video's fine-tuned weights are copied into it
    when a call names other weights than those loaded (``weights`` is that cache key:
    the sha256 of the loaded checkpoint). Calls carry everything else; nothing
    per-call is kept on ``self``. An actor given a GPU fails at start, with the reason,
    when CUDA is unusable: it never runs the model on the CPU instead.
    """

    def __init__(self, infer: InferConfig, gpu: bool, arch: dict[str, Any], start_box: list | None) -> None:
        self.infer = infer
        self.device = inference.cuda_or_raise() if gpu else torch.device("cpu")
        self.cpus = _threads()  # the actor's CPU share: the model's threads on the CPU, the codecs' on a GPU
        if not gpu:
            torch.set_num_threads(self.cpus)
        self.amp = inference.autocast_dtype(infer.precision, self.device)
        blob = _fetch(start_box) if start_box else None
        model = checkpoint.load(blob)[0] if blob is not None else build_model(arch)
        self.model = inference.prepare(model, self.device)
        self.weights = hashlib.sha256(blob).hexdigest() if blob is not None else "init"

    def _use(self, key: str, box: list) -> None:
        if key == self.weights:
            return
        model, meta = checkpoint.load(_fetch(box))
        if meta["arch"] == self.model.arch:
            self.model.load_state_dict(model.state_dict())  # copied into the loaded (channels-last) parameters
        else:
            self.model = inference.prepare(model, self.device)
        self.weights = key

    def restore(
        self, key: str, box: list, scale: int, info: VideoInfo, chunk: Chunk, store: Store, version: str, out_uri: str,
        media: MediaConfig, threads: int = 0, codec: str | None = None, geometry=None,
    ) -> dict[str, Any]:
        """Restore ``chunk`` of ``info.path`` (a store URI; read from this node's copy)
        with the checkpoint ``key`` (its sha256; ``box`` = [ObjectRef to its bytes]) into
        ``out_uri``, committed only when complete; returns {"frames", "seconds", "chunk"}.
        ``threads`` (CPU): the threads this call may use, when the pool's other actors
        are left idle (at most the node's CPUs); 0: the actor's own. ``geometry``: the
        output's size (``media.geometry``; default ``scale`` x the source)."""
        threads = min(threads, node_cpus()) if threads else self.cpus
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self._use(key, box)
        t0 = time.perf_counter()
        source = info.path
        info = dataclasses.replace(info, path=store.local_copy(source, version))
        with store.committing(out_uri, "." + media.container) as tmp:
            n = upscale_chunk(self.model, scale, info, chunk, tmp, media, self.infer, self.device, self.amp, threads=threads, codec=codec,
                              geometry=geometry)
            if n != chunk.frames:
                raise RuntimeError(f"{source} chunk {chunk.index}: restored {n} frames, expected {chunk.frames}")
        return {"frames": n, "seconds": time.perf_counter() - t0, "chunk": chunk.index}

    def encoder(self, media: MediaConfig, size: tuple[int, int], depth: int = 8) -> str:
        """The encoder this actor's node would use for frames of ``size`` (h, w) and ``depth`` bits."""
        return encoder_for(media, self.device, size, depth)

    # the light stages, run here when the pool has this actor idle
    def probe(self, *args: Any) -> VideoInfo:
        return probe_source(*args)

    def extract(self, *args: Any) -> tuple[list[np.ndarray], int]:
        return training_frames(*args)

    def assemble(self, *args: Any) -> dict[str, int]:
        return assemble_output(*args)

    def measure(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return measure(*args, **kwargs)


def restorer_actor(infer: InferConfig, use_gpu: bool, cpus: int, arch: dict[str, Any], start_box: list | None):
    """A ChunkRestorer Ray actor on one GPU with ``cpus`` CPUs (for decoding and
    encoding), or on ``cpus`` CPUs. Ray does not restart
    it: the pool replaces a dead actor and restores its chunk again (a chunk is committed
    only when complete, so a retry cannot leave a partial one)."""
    opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": cpus} if use_gpu else {"num_cpus": cpus}
    return ray.remote(ChunkRestorer).options(max_restarts=0, **opts).remote(infer, use_gpu, arch, start_box)
