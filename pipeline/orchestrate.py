"""A restore run over a video file or an archive (a local folder or an S3 prefix), on Ray.

Videos are listed as a stream and restored several at a time (``videos_at_once``),
each in its own driver thread. Per video: probe (Ray task) -> chunk plan -> training
frames (Ray task) -> fine-tune (Ray Train) -> chunks restored by a pool of inference
actors -> assembly (Ray task) -> metrics (Ray task) -> report rows -> done marker.

Runs are idempotent and resumable: a video whose done marker matches its content and the
config is skipped; an interrupted video reuses its fine-tuned checkpoint and every chunk
already committed. A video that fails gets a ``failed`` row with the reason; the others
go on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import ray

from pipeline import reports, storage
from pipeline.config import RestoreConfig
from pipeline.media.chunks import DamagedChunk, plan_chunks
from pipeline.models import checkpoint
from pipeline.resources import check_train_workers, inference_pool, use_gpu
from pipeline.storage import Store, check_uri, is_s3, join

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
SKIPPED_ROWS_PER_FILE = 1000


class DamagedVideo(ValueError):
    """Frames of a video could not be decoded: it is not restored (frames would be lost)."""


def reason(e: BaseException) -> str:
    """One line saying why: the original exception of a failed Ray task, not its
    remote traceback."""
    cause = getattr(e, "cause", None) if isinstance(e, ray.exceptions.RayTaskError) else None
    e = cause if isinstance(cause, BaseException) else e
    return f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__


def say(label: str, msg: str) -> None:
    """Progress line, visible in the terminal and in ``ray job logs``."""
    print(f"[{label}] {msg}", flush=True)


@dataclass(frozen=True)
class VideoJob:
    rel: str  # path relative to the input root
    source: str  # input URI (local path or s3://)
    size: int
    version: str  # S3 ETag or local mtime: with the size, identifies the content
    out_rel: str  # output path relative to OUT/<tag>/
    output: str  # restored video URI
    reference: str | None
    problem: str | None = None  # set when the name cannot be used: the video fails with it

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.size}:{self.version}".encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Layout:
    """Where a run writes, under the output root OUT::

        OUT/x<scale>-<config hash>/<path>.<container>      restored videos
        OUT/checkpoints/<path>.<train hash>.<source>.pt    fine-tuned models
        OUT/reports/{videos,frames}/run_id=<run>/          Parquet reports
        OUT/.reelsr/done/x<scale>-<hash>/<path>.json       done markers (what was restored, by which run)
        OUT/.reelsr/work/x<scale>-<hash>/<path>.<source>/  committed chunks of unfinished videos

    The config hash covers everything that changes the restored pixels (scale, model,
    training, encoding), so a changed config writes beside earlier results, never over.
    """

    root: str
    tag: str
    container: str

    @classmethod
    def of(cls, root: str, cfg: RestoreConfig) -> Layout:
        return cls(root, f"x{cfg.scale}-{cfg.hash()}", cfg.media.container)

    def job(self, entry: storage.Entry, reference: str | None) -> VideoJob:
        problem = storage.unsafe_rel(entry.rel)
        if problem:
            return VideoJob(entry.rel, entry.uri, entry.size, entry.version, "", "", None, problem)
        out_rel = os.path.splitext(entry.rel)[0] + "." + self.container
        job = VideoJob(entry.rel, entry.uri, entry.size, entry.version, out_rel, join(self.root, self.tag, out_rel), reference)
        problem = self._too_long(job)
        return dataclasses.replace(job, out_rel="", output="", reference=None, problem=problem) if problem else job

    def _too_long(self, job: VideoJob) -> str | None:
        """Why the output name cannot be stored (None when it can): a local file name
        over 255 bytes, or an S3 key over 1,024 bytes (the longest the video needs: a
        chunk in its work folder)."""
        if storage.is_s3(job.output):
            keys = (job.output, self.done(job), self.chunk(job, "0" * 12, 0))
            n = max(len(storage.split(uri)[1].encode()) for uri in keys)
            return f"name too long: its keys under the output would be up to {n} bytes (S3 allows 1024)" if n > 1024 else None
        n = max(len(part.encode()) for part in job.out_rel.split("/"))
        return f"name too long: an output file name would be {n} bytes (the file system allows {NAME_MAX})" if n > NAME_MAX else None

    def done(self, job: VideoJob) -> str:
        return join(self.root, ".reelsr", "done", self.tag, _fit(job.out_rel, ".json"))

    def work(self, job: VideoJob) -> str:
        return join(self.root, ".reelsr", "work", self.tag, _fit(job.rel, f".{job.fingerprint}"))

    def checkpoint(self, job: VideoJob, train_hash: str) -> str:
        return join(self.root, "checkpoints", _fit(job.rel, f".{train_hash}.{job.fingerprint}.pt"))

    def model_work(self, job: VideoJob, model_sha: str) -> str:
        """The committed chunks of one model (its checkpoint's sha) for the video."""
        return join(self.work(job), model_sha)

    def chunk(self, job: VideoJob, model_sha: str, index: int) -> str:
        return join(self.model_work(job, model_sha), f"chunk-{index:05d}.{self.container}")


NAME_MAX = 255  # bytes per file name on Linux file systems


def _fit(rel: str, suffix: str) -> str:
    """``rel + suffix``, with the last name shortened (a prefix and a hash of the whole
    name) when the suffix would push it over NAME_MAX bytes."""
    folder, _, name = rel.rpartition("/")
    if len((name + suffix).encode()) > NAME_MAX:
        digest = "~" + hashlib.sha256(name.encode()).hexdigest()[:16]
        keep = name.encode()[: NAME_MAX - len(suffix.encode()) - len(digest) - 3].decode("utf-8", "ignore")
        name = keep + digest
    return f"{folder}/{name}{suffix}" if folder else name + suffix


def iter_videos(store: Store, input_uri: str, layout: Layout, reference: str | None) -> Iterator[VideoJob]:
    """The videos of a file or folder/prefix input, streamed in sorted order (memory does
    not grow with the archive). Hidden names and the output root are left out."""
    single = os.path.isfile(input_uri) if not is_s3(input_uri) else store.exists(input_uri)
    if single:
        if reference is not None and not is_s3(reference) and not os.path.isfile(reference):
            raise ValueError(f"--reference must be a file when --input is a file, got {reference!r}")
        yield layout.job(store.entry(input_uri), reference)
        return
    if not is_s3(input_uri) and not os.path.isdir(input_uri):
        raise FileNotFoundError(f"input not found: {input_uri}")
    if reference is not None and not is_s3(reference) and not os.path.isdir(reference):
        raise ValueError(f"--reference must be a folder when --input is a folder, got {reference!r}")
    for entry in store.list_files(input_uri, skip=layout.root):
        if entry.rel.lower().endswith(VIDEO_EXTENSIONS):
            yield layout.job(entry, join(reference, entry.rel) if reference else None)


def list_videos(input_path: str, output_root: str, cfg: RestoreConfig, reference: str | None = None, store: Store | None = None) -> list[VideoJob]:
    """``iter_videos`` as a list (for small inputs and tests)."""
    store = store or Store.from_config(cfg.storage)
    layout = Layout.of(check_uri(output_root, "--output"), cfg)
    return list(iter_videos(store, check_uri(input_path, "--input"), layout, check_uri(reference, "--reference") if reference else None))


def connect() -> None:
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``), or start a
    local Ray with this machine's CPUs and GPUs."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network but the user's storage
        ray.init(include_dashboard=True, log_to_driver=True, runtime_env={"env_vars": {"PYTHONPATH": path}})


def load_pretrained(cfg: RestoreConfig, store: Store) -> bytes | None:
    """The starting checkpoint's bytes (None: from scratch), checked against the config:
    a mismatch is a config error for the whole run, not a per-video failure."""
    if cfg.model.pretrained and is_s3(cfg.model.pretrained):
        blob = store.read_bytes(cfg.model.pretrained)
    else:
        path = checkpoint.resolve(cfg.model.pretrained, cfg.scale)
        if path is None:
            return None
        blob = store.read_bytes(path)
    arch = checkpoint.load(blob)[1]["arch"]
    want = {"n_resblocks": cfg.model.n_resblocks, "n_feats": cfg.model.n_feats, "scale": cfg.scale}
    got = {k: arch[k] for k in want}
    if got != want:
        raise ValueError(
            f"model.pretrained {cfg.model.pretrained} is EDSR {got['n_resblocks']}x{got['n_feats']} x{got['scale']}, "
            f"the config asks for {want['n_resblocks']}x{want['n_feats']} x{want['scale']}: "
            "set model.n_resblocks / model.n_feats / scale to match, or pick another checkpoint"
        )
    return blob


def videos_at_once(cfg: RestoreConfig) -> int:
    if cfg.videos_at_once:
        return cfg.videos_at_once
    res = ray.cluster_resources()
    return max(1, min(16, max(int(res.get("GPU", 0)), int(res.get("CPU", 0)) // 4)))


class Heartbeat:
    """Videos in flight, how many of them wait for inference actors to start, and when the
    run last made progress. A video waiting for actors fails only when every video in
    flight is waiting (none holds resources it will release) and the run has made no
    progress for the timeout; a video training or restoring elsewhere keeps it waiting."""

    def __init__(self) -> None:
        self._t = time.monotonic()
        self._videos = 0
        self._waiting = 0
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._t = time.monotonic()

    def video(self, delta: int) -> None:
        with self._lock:
            self._videos += delta
            self._t = time.monotonic()

    def waiting(self, delta: int) -> None:
        with self._lock:
            self._waiting += delta

    def stuck_s(self) -> float:
        """Seconds without progress while every video in flight waits (0 otherwise)."""
        with self._lock:
            return time.monotonic() - self._t if self._waiting >= self._videos else 0.0


def run_chunks(
    label: str, info, work: list, ckpt: bytes, cfg: RestoreConfig, gpu: bool, store: Store, version: str,
    heartbeat: Heartbeat, done_frames: int = 0, start_timeout_s: float = 600.0,
) -> list[DamagedChunk]:
    """Restore ``work`` ([(chunk, uri)]) on a pool of inference actors, printing progress;
    returns the chunks that could not be decoded whole (the others are still restored,
    so the report can say how many frames of the video are damaged).

    Work goes only to actors that have started, so an actor waiting for resources the
    cluster does not have (yet), or that other videos hold, delays nothing; if none
    starts within ``start_timeout_s`` while every video in flight is waiting likewise,
    the video fails with the reason.
    """
    from pipeline.actors import restorer_actor

    if not work:
        return []
    pool = inference_pool(cfg, len(work), gpu)
    actors = [restorer_actor(cfg.infer, pool.use_gpu, pool.cpus_per_actor) for _ in range(pool.actors)]
    what = "1 GPU" if pool.use_gpu else f"{pool.cpus_per_actor} CPU"
    say(label, f"infer: {len(work)} chunks on {pool.actors} actor(s) ({what} each)")
    ckpt_box = [ray.put(ckpt)]  # boxed: actors fetch it once, not per chunk
    info_ref = ray.put(info)  # the keyframe index grows with the video: stored once, not pickled into every call
    key = hashlib.sha256(ckpt).hexdigest()
    queue = list(work)
    starting = {a.__ray_ready__.remote(): a for a in actors}
    working: dict[Any, Any] = {}
    t0 = time.perf_counter()
    first = done_frames
    damaged: list[DamagedChunk] = []

    def give(actor) -> None:
        if queue:
            c, uri = queue.pop(0)
            working[actor.restore.remote(key, ckpt_box, cfg.scale, info_ref, c, store, version, uri, cfg.media)] = actor

    waiting = False

    def wait_state(now: bool) -> None:
        nonlocal waiting
        if now != waiting:
            heartbeat.waiting(+1 if now else -1)
            waiting = now

    try:
        while queue or working:
            wait_state(not working)
            ready, _ = ray.wait(list(starting) + list(working), num_returns=1, timeout=5.0)
            if not ready:
                if not working and starting and heartbeat.stuck_s() > start_timeout_s:
                    raise RuntimeError(
                        f"no inference actor started within {start_timeout_s:.0f} s "
                        f"(each needs {what}; cluster: {ray.cluster_resources()})"
                    )
                continue
            ref = ready[0]
            if ref in starting:
                ray.get(ref)  # raises if the actor failed to start
                give(starting.pop(ref))
                continue
            actor = working.pop(ref)
            try:
                done_frames += ray.get(ref)["frames"]
            except DamagedChunk as e:  # (a RayTaskError that is also the DamagedChunk raised)
                damaged.append(e)
                say(label, f"infer: chunk {e.chunk}: {e.frames} frames could not be decoded")
            heartbeat.beat()
            rate = (done_frames - first) / (time.perf_counter() - t0)
            say(label, f"infer: {done_frames}/{info.frames} frames  {rate:.1f} fps")
            give(actor)
    finally:
        wait_state(False)
        for a in actors:
            ray.kill(a)
    return damaged


def check_input(info, cfg: RestoreConfig) -> None:
    """Refuse, with the reason, a video the run should not restore: frames too small to
    train on, or longer than limits.max_seconds (from the packet index, before the video
    is decoded; limits.max_pixels is checked by the probe, from the header)."""
    lim = cfg.limits
    side = 2 * cfg.scale
    if min(info.width, info.height) < side:
        raise ValueError(f"{info.width}x{info.height} is too small to restore x{cfg.scale} (each side needs at least {side} px)")
    if lim.max_seconds and info.duration > lim.max_seconds:
        raise ValueError(f"{info.duration:.1f} s long, over limits.max_seconds ({lim.max_seconds:g} s)")


class Run:
    """One run: the config, the store, where things go, and the per-video flow."""

    def __init__(self, cfg: RestoreConfig, store: Store, layout: Layout, run_id: str, pretrained: bytes | None, preset: str | None) -> None:
        self.cfg, self.store, self.layout, self.run_id = cfg, store, layout, run_id
        self.pretrained, self.preset = pretrained, preset
        self.heartbeat = Heartbeat()

    # ------------------------------------------------------------------ done markers

    def done_state(self, job: VideoJob) -> tuple[str, str | None]:
        """("new", None), ("skip", run that restored it), ("changed", that run) when the
        source changed since, or ("collision", other source) when another input of the
        archive already restored to the same output."""
        blob = self.store.read_bytes(self.layout.done(job), missing_ok=True)
        if blob is None:
            return "new", None
        marker = json.loads(blob)
        same_content = (marker["source_bytes"], marker["source_version"]) == (job.size, job.version)
        if marker["video"] != job.rel or (marker["source"] != job.source and not same_content):
            return "collision", marker["source"]  # another input made this output: never written over
        if not same_content:
            return "changed", marker["run_id"]
        return "skip", marker["run_id"]  # (the same file, even if the archive moved)

    def mark_done(self, job: VideoJob) -> None:
        marker = {"video": job.rel, "source": job.source, "source_bytes": job.size, "source_version": job.version,
                  "output": job.output, "run_id": self.run_id, "config_hash": self.cfg.hash(),
                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.store.write_bytes(self.layout.done(job), json.dumps(marker, indent=1).encode())

    # ------------------------------------------------------------------ one video

    def process(self, job: VideoJob) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Restore one video and commit its results: report rows, then the done marker,
        then the work folder is removed. Failures become a failed row."""
        base = _base_row(job, self.cfg, self.preset)
        t0 = time.perf_counter()
        frames: list[dict[str, Any]] = []
        row: dict[str, Any] = {}
        self.heartbeat.video(+1)
        try:
            try:
                frames = self.restore_video(job, row)
                base.update(row, status="restored")
            except Exception as e:  # noqa: BLE001 - a bad video fails alone
                row.pop("output", None)
                base.update(row, error=reason(e), total_seconds=time.perf_counter() - t0)
                say(job.rel, f"FAILED: {base['error']}")
                sys.stderr.write(f"[{job.rel}] traceback of the failure:\n{traceback.format_exc()}")
            reports.write(self.layout.root, "videos", self.run_id, [base], self.store)
            reports.write(self.layout.root, "frames", self.run_id, frames, self.store)
            if base["status"] == "restored":
                self.mark_done(job)
                try:
                    self.store.delete_tree(self.layout.work(job))
                except Exception as e:  # noqa: BLE001 - the video is done; leftovers only cost space
                    say(job.rel, f"WARNING: could not remove its work folder {self.layout.work(job)}: {reason(e)}")
        finally:
            self.heartbeat.video(-1)
        return base, frames

    def finetuned(self, job: VideoJob, info, gpu: bool, row: dict[str, Any]) -> bytes:
        """The video's fine-tuned checkpoint: an earlier run's when there is one, else
        trained now (rank 0 commits it to the store)."""
        from pipeline.actors import extract_training_frames
        from pipeline.training import train_with_ray

        cfg, label = self.cfg, job.rel
        if not cfg.train.finetune:
            say(label, "train: skipped (--no-finetune), restoring with the starting model")
            return self.pretrained
        t0 = time.perf_counter()
        train_hash = cfg.hash("model", "train")
        uri = self.layout.checkpoint(job, train_hash)
        blob = self.store.read_bytes(uri, missing_ok=True)
        if blob is not None:
            prov = checkpoint.load(blob)[1]["provenance"]
            row.update(checkpoint=uri, checkpoint_reused=True, train_frames=prov.get("train_frames"),
                       train_steps=int(prov.get("steps", 0)), train_loss_first=prov.get("loss_first"), train_loss_last=prov.get("loss_last"))
            say(label, f"train: reusing fine-tuned checkpoint {uri}")
            return blob
        if self.pretrained is None:
            say(label, "WARNING: no pretrained model configured (model.pretrained): fine-tuning from scratch; expect lower quality")
        note = check_train_workers(cfg, gpu)
        if note:
            say(label, f"train: {note}")
        frames_ref, count_ref = extract_training_frames.remote(
            self.store, info, job.version, cfg.train.frames, cfg.train.max_frames, cfg.train.seed, cfg.train.dedup)
        n_frames = ray.get(count_ref)
        if n_frames == 0:
            raise ValueError(f"no training frames with policy {cfg.train.frames!r}")
        say(label, f"train: {n_frames} frames ({cfg.train.frames}), {cfg.train.steps} steps, EDSR {cfg.model.n_resblocks}x{cfg.model.n_feats}, "
            f"{cfg.train.workers} {'GPU' if gpu else 'CPU'} worker(s)")
        safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in job.rel)[-60:]  # Ray Train run name
        arch = {"n_resblocks": cfg.model.n_resblocks, "n_feats": cfg.model.n_feats, "res_scale": cfg.model.res_scale, "scale": cfg.scale}
        train_with_ray(
            frames_ref, cfg=cfg.train, arch=arch, start=self.pretrained, scale=cfg.scale, use_gpu=gpu,
            store=self.store, checkpoint_uri=uri, name=f"{safe}-{train_hash}-{self.run_id}", label=label,
            provenance={"video": job.rel, "train_frames": n_frames, "frames_policy": cfg.train.frames,
                        "pretrained": cfg.model.pretrained, "run_id": self.run_id},
        )
        self.heartbeat.beat()
        blob = self.store.read_bytes(uri)
        stats = checkpoint.load(blob)[1]["provenance"]
        row.update(checkpoint=uri, checkpoint_reused=False, train_frames=n_frames, train_steps=int(stats.get("steps", cfg.train.steps)),
                   train_loss_first=stats.get("loss_first"), train_loss_last=stats.get("loss_last"))
        say(label, f"train: done in {time.perf_counter() - t0:.1f} s, L1 {stats.get('loss_first', 0):.4f} -> {stats.get('loss_last', 0):.4f}")
        return blob

    def restore_video(self, job: VideoJob, row: dict[str, Any]) -> list[dict[str, Any]]:
        """Restore one video, filling its report ``row`` as it goes; returns the frame
        rows. Raises on failure (the caller records it, with what ``row`` holds by
        then). Nothing partial is ever visible under a final name; committed chunks stay
        in the work folder for a rerun."""
        from pipeline.actors import assemble_task, measure_video_task, probe_task

        cfg, store, label = self.cfg, self.store, job.rel
        t_start = time.perf_counter()
        ref_version = ""
        if job.reference:
            try:
                ref_version = store.entry(job.reference).version
            except FileNotFoundError:
                raise FileNotFoundError(f"reference not found: {job.reference}") from None
        info = ray.get(probe_task.remote(store, job.source, job.version, cfg.limits.max_pixels))
        chunks = plan_chunks(info, cfg.media.chunk_frames)
        row.update(width=info.width, height=info.height, fps=float(info.rate), duration_s=info.duration,
                   has_audio=info.has_audio, chunks=len(chunks), frames_in=info.frames, pix_fmt=info.pix_fmt,
                   rotation=info.rotation, interlaced=info.interlaced)
        say(label, f"probe: {info.width}x{info.height} {info.pix_fmt} {float(info.rate):.3f} fps, {info.frames} frames, "
            f"{info.duration:.2f} s, {'audio' if info.has_audio else 'no audio'}, {len(chunks)} chunks"
            + (f", rotated {info.rotation} deg" if info.rotation else "") + (", interlaced" if info.interlaced else ""))
        check_input(info, cfg)
        gpu = use_gpu(cfg)

        # --- fine-tune (or reuse a finished one) -------------------------------
        t0 = time.perf_counter()
        ckpt = self.finetuned(job, info, gpu, row)
        row["train_seconds"] = time.perf_counter() - t0

        # --- inference: chunks not committed yet, on a pool of actors; assembly --
        t0 = time.perf_counter()
        model_sha = hashlib.sha256(ckpt).hexdigest()[:12]  # chunks of this model only
        work = self.layout.model_work(job, model_sha)
        uris = [self.layout.chunk(job, model_sha, c.index) for c in chunks]
        have = store.names(work)
        todo = [(c, u) for c, u in zip(chunks, uris, strict=True) if storage.name_of(u) not in have]
        row["chunks_reused"] = len(chunks) - len(todo)
        reused_frames = sum(c.frames for c, u in zip(chunks, uris, strict=True) if storage.name_of(u) in have)
        if row["chunks_reused"]:
            say(label, f"infer: reusing {row['chunks_reused']}/{len(chunks)} chunks ({reused_frames} frames) committed by an earlier run")
        damaged = run_chunks(label, info, todo, ckpt, cfg, gpu, store, job.version, self.heartbeat, done_frames=reused_frames)
        row["frames_damaged"] = 0
        if damaged:
            row["frames_damaged"] = sum(d.frames for d in damaged)
            where = ", ".join(str(d.chunk) for d in sorted(damaged, key=lambda d: d.chunk))
            raise DamagedVideo(
                f"{job.source}: {row['frames_damaged']} of {info.frames} frames could not be decoded "
                f"({sum(d.missing for d in damaged)} missing, {sum(d.corrupt for d in damaged)} flagged corrupt; "
                f"chunk{'s' if len(damaged) > 1 else ''} {where}); not restored, so that no frame is silently lost")
        out = ray.get(assemble_task.remote(store, uris, job.source, job.version, job.output, info.frames, info.rotation))
        row.update(frames_out=out["frames"], output=job.output)
        row["infer_seconds"] = time.perf_counter() - t0
        say(label, f"assemble: {job.output} ({out['width']}x{out['height']}, {out['frames']} frames)")

        # --- metrics: a failure here is reported, the restored video stands -------
        t0 = time.perf_counter()
        say(label, f"metrics: {cfg.metrics.sample_frames} sampled frames"
            + (f", PSNR/SSIM against {job.reference}" if job.reference else ""))
        frames: list[dict[str, Any]] = []
        try:
            task = measure_video_task.options(num_gpus=1 if gpu else 0)
            measured = ray.get(task.remote(
                store, {"source": job.version, "reference": ref_version},
                video=job.rel, source=job.source, output=job.output, reference=job.reference, scale=cfg.scale,
                total_frames=info.frames, sample_frames=cfg.metrics.sample_frames, pretrained=self.pretrained,
                finetuned=ckpt if cfg.train.finetune else None, niqe=cfg.metrics.niqe,
                precision=cfg.infer.precision, tile=cfg.infer.tile, tile_overlap=cfg.infer.tile_overlap))
            row.update(measured["summary"])
            frames = measured["frames"]
        except Exception as e:  # noqa: BLE001
            row["error"] = f"metrics failed: {reason(e)}"
            say(label, f"WARNING: {row['error']}")
        row["metrics_seconds"] = time.perf_counter() - t0
        row["total_seconds"] = time.perf_counter() - t_start
        return frames


METHODS = ("bicubic", "pretrained", "finetuned", "output")
EMPTY_METRICS = {f"{m}_{k}": None for m in ("niqe", "psnr", "ssim") for k in METHODS}


def _base_row(job: VideoJob, cfg: RestoreConfig, preset: str | None) -> dict[str, Any]:
    """A videos row with every column, as a failure until the video is restored."""
    return {
        "video": job.rel, "source": job.source, "source_bytes": job.size, "output": None, "status": "failed", "error": None,
        "restored_run_id": None, "config_hash": cfg.hash(), "preset": preset, "scale": cfg.scale, "width": None, "height": None,
        "fps": None, "duration_s": None, "has_audio": None, "pix_fmt": None, "rotation": None, "interlaced": None,
        "chunks": None, "frames_in": None, "frames_out": None, "frames_damaged": None,
        "train_frames": None, "train_steps": None, "train_loss_first": None, "train_loss_last": None,
        "checkpoint": None, "checkpoint_reused": None, "chunks_reused": None, "pretrained": cfg.model.pretrained, "metric_frames": None,
        **EMPTY_METRICS, "train_seconds": None, "infer_seconds": None, "metrics_seconds": None,
        "total_seconds": 0.0, "config_json": json.dumps(cfg.to_dict(), sort_keys=True),
    }


@dataclass
class Outcome:
    """What a run did: the rows of the videos it restored or failed (skipped videos are
    only counted here; their rows are in the report), and where the results are."""

    rows: list[dict[str, Any]]
    skipped: int
    run_id: str
    layout: Layout


def restore(
    cfg: RestoreConfig,
    input_path: str | None,
    output: str,
    reference: str | None = None,
    preset: str | None = None,
    failed_before: list[tuple[VideoJob, str]] | None = None,
    store: Store | None = None,
) -> Outcome:
    """Restore every new video of ``input_path`` (file, folder or s3:// prefix) into
    ``output``; writes the reports and returns the outcome.

    Videos already restored with the same config (their done marker matches their size
    and version) are skipped and recorded as ``skipped``. ``failed_before``: videos that
    failed in a preparation step (e.g. making evaluation inputs), reported as failed.
    """
    store = store or Store.from_config(cfg.storage)
    out_root = check_uri(output, "--output")
    in_uri = check_uri(input_path, "--input") if input_path else None
    ref = check_uri(reference, "--reference") if reference else None
    if in_uri == out_root:
        raise ValueError("--output must differ from --input (restored videos would be mixed with the archive)")
    layout = Layout.of(out_root, cfg)
    jobs = iter_videos(store, in_uri, layout, ref) if in_uri else iter(())
    first = next(jobs, None)  # fail fast, before starting Ray, on an empty input
    if first is None and not failed_before:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {input_path}")
    pretrained = load_pretrained(cfg, store)  # read and checked once per run: fails fast on a bad checkpoint
    connect()
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + cfg.hash()
    at_once = videos_at_once(cfg)
    print(f"reelsr: run {run_id}: x{cfg.scale}, results in {join(out_root, layout.tag)}, "
          f"{at_once} video(s) at a time, cluster {ray.cluster_resources()}", flush=True)
    run = Run(cfg, store, layout, run_id, pretrained, preset)
    rows: list[dict[str, Any]] = []
    skipped_rows: list[dict[str, Any]] = []
    skipped = 0

    def flush_skipped() -> None:
        reports.write(out_root, "videos", run_id, skipped_rows, store)
        skipped_rows.clear()

    def fail(job: VideoJob, error: str, announce: bool = True) -> None:
        """A failed row for a video that never reached the restore flow, reported now."""
        base = _base_row(job, cfg, preset)
        base["error"] = error
        if announce:
            say(job.rel, f"FAILED: {error}")
        reports.write(out_root, "videos", run_id, [base], store)
        rows.append(base)

    for job, error in failed_before or []:
        fail(job, error, announce=False)  # the preparation step said so already

    in_flight: dict[Future, VideoJob] = {}

    def collect() -> None:
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for fut in done:
            job = in_flight.pop(fut)
            try:
                rows.append(fut.result()[0])
            except Exception as e:  # noqa: BLE001 - e.g. its report or done marker could not be written
                base = _base_row(job, cfg, preset)
                base["error"] = f"could not commit its results: {reason(e)}"
                say(job.rel, f"FAILED: {base['error']}")
                rows.append(base)
                try:
                    reports.write(out_root, "videos", run_id, [base], store)
                except Exception as e2:  # noqa: BLE001 - the storage itself fails: the log has it
                    say(job.rel, f"WARNING: the failure could not be reported either: {reason(e2)}")

    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="video") as pool:
        for n, job in enumerate(itertools.chain([first] if first else [], jobs), 1):
            if job.problem:
                fail(job, job.problem)
                continue
            try:
                state, other = run.done_state(job)
            except Exception as e:  # noqa: BLE001
                state, other = "error", f"cannot read its done marker: {reason(e)}"
            busy = next((j.rel for j in in_flight.values() if j.output == job.output), None)
            if state == "skip":
                say(job.rel, f"skipped: restored by run {other} with this config ({job.output})")
                skipped += 1
                base = _base_row(job, cfg, preset)
                base.update(status="skipped", output=job.output, restored_run_id=other)
                skipped_rows.append(base)
                if len(skipped_rows) >= SKIPPED_ROWS_PER_FILE:
                    flush_skipped()
                continue
            if state in ("collision", "error") or busy:
                fail(job, other if state == "error" else
                     f"{job.output} is the restored {other or busy}; {job.rel} would overwrite it: rename one, or set media.container")
                continue
            say(job.rel, f"video {n}" + (f": source changed since run {other}, restoring again" if state == "changed" else ""))
            while len(in_flight) >= at_once:
                collect()
            in_flight[pool.submit(run.process, job)] = job
        while in_flight:
            collect()
    flush_skipped()
    outcome = Outcome(rows, skipped, run_id, layout)
    print_summary(outcome)
    return outcome


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_summary(outcome: Outcome, file=sys.stdout) -> None:
    """The end-of-run table: one line per video restored or failed, then the counts and
    where the outputs are."""
    rows = outcome.rows
    with_ref = any(r["psnr_bicubic"] is not None for r in rows)
    metrics = ["niqe"] + (["psnr"] if with_ref else [])
    header = ["video", "status", "frames"] + [f"{m.upper()} {k}" for m in metrics for k in METHODS] + ["time s"]
    lines = [header]
    for r in rows:
        frames = f"{_fmt(r['frames_out'], 'd')}/{_fmt(r['frames_in'], 'd')}"
        lines.append([r["video"], r["status"], frames] + [_fmt(r[f"{m}_{k}"]) for m in metrics for k in METHODS] + [_fmt(r["total_seconds"], ".1f")])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    print("", file=file)
    if rows:
        for i, line in enumerate(lines):
            print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=file)
            if i == 0:
                print("  ".join("-" * w for w in widths), file=file)
        print("(NIQE: lower is better; PSNR in dB on Y. bicubic/pretrained/finetuned: the methods on the same frames;"
              " output: the restored file, encoding included)", file=file)
    failed = [r for r in rows if r["status"] == "failed"]
    for r in rows:
        if r["error"]:
            print(f"{r['status']}: {r['video']}: {r['error']}", file=file)
    print(f"\n{len(rows) - len(failed)} restored, {len(failed)} failed, {outcome.skipped} skipped (already restored with this config)", file=file)
    for r in rows:
        if r["output"]:
            print(f"output:  {r['output']}", file=file)
    root = outcome.layout.root
    print(f"videos:  {join(root, outcome.layout.tag)}", file=file)
    print(f"reports: {join(root, 'reports', 'videos')} and {join(root, 'reports', 'frames')} (run_id={outcome.run_id})", file=file)
    file.flush()
