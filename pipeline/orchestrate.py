"""A restore run over a video file or a folder of videos, on Ray.

Per video: probe -> chunk plan -> training frames (Ray task) -> fine-tune (Ray Train)
-> chunks restored by a pool of inference actors -> assembled output -> metrics (Ray
task) -> a report row. A video that fails gets a ``failed`` row with the reason; the
others go on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import ray

from pipeline import reports
from pipeline.config import RestoreConfig
from pipeline.media.chunks import plan_chunks
from pipeline.media.encode import assemble
from pipeline.media.probe import probe
from pipeline.models import checkpoint
from pipeline.resources import check_train_workers, inference_pool, use_gpu

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
log = logging.getLogger("reelsr")


def say(label: str, msg: str) -> None:
    """Progress line, visible in the terminal and in ``ray job logs``."""
    print(f"[{label}] {msg}", flush=True)


@dataclass(frozen=True)
class VideoJob:
    rel: str  # path relative to the input root
    source: str  # absolute input path
    output: str  # restored video path
    reference: str | None


def list_videos(input_path: str, output_root: str, container: str, reference: str | None) -> list[VideoJob]:
    """The videos of a file or folder input (recursive, sorted), with their output and
    reference paths: ``OUT/<path relative to IN>`` with the container's extension."""
    for p in (input_path, output_root, reference or ""):
        if "://" in p:
            raise ValueError(f"only local paths are supported so far, got {p!r}")
    input_path = os.path.abspath(input_path)
    if os.path.isfile(input_path):
        pairs = [(os.path.basename(input_path), input_path)]
        if reference is not None and not os.path.isfile(reference):
            raise ValueError(f"--reference must be a file when --input is a file, got {reference!r}")
        refs = {pairs[0][0]: os.path.abspath(reference) if reference else None}
    elif os.path.isdir(input_path):
        out_abs = os.path.abspath(output_root)
        pairs = []
        for dirpath, dirnames, filenames in os.walk(input_path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and os.path.join(dirpath, d) != out_abs)
            for name in sorted(filenames):
                if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                    full = os.path.join(dirpath, name)
                    pairs.append((os.path.relpath(full, input_path), full))
        if reference is not None and not os.path.isdir(reference):
            raise ValueError(f"--reference must be a folder when --input is a folder, got {reference!r}")
        refs = {rel: os.path.join(os.path.abspath(reference), rel) if reference else None for rel, _ in pairs}
    else:
        raise FileNotFoundError(f"input not found: {input_path}")
    jobs = []
    for rel, full in pairs:
        out = os.path.join(os.path.abspath(output_root), os.path.splitext(rel)[0] + "." + container)
        if os.path.abspath(out) == os.path.abspath(full):
            raise ValueError(f"output {out} would overwrite its source: choose another --output")
        jobs.append(VideoJob(rel=rel, source=full, output=out, reference=refs[rel]))
    seen: dict[str, str] = {}
    for j in jobs:
        if j.output in seen:
            raise ValueError(f"{seen[j.output]} and {j.rel} would both be restored to {j.output}: rename one, or set media.container")
        seen[j.output] = j.rel
    return jobs


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


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def load_pretrained(cfg: RestoreConfig) -> bytes | None:
    """The starting checkpoint's bytes (None: from scratch), checked against the config:
    a mismatch is a config error for the whole run, not a per-video failure."""
    path = checkpoint.resolve(cfg.model.pretrained, cfg.scale)
    if path is None:
        return None
    blob = _read(path)
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


def source_fingerprint(path: str, info) -> str:
    """Short hash of what identifies a source video's content cheaply (size, frame count,
    keyframe positions), so a checkpoint is never reused for another video that happens
    to have the same relative path."""
    blob = f"{os.path.getsize(path)}:{info.frames}:{info.time_base}:{info.keyframe_pts}"
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def run_chunks(label: str, info, chunks, paths, ckpt: bytes, cfg: RestoreConfig, gpu: bool, start_timeout_s: float = 600.0) -> None:
    """Restore ``chunks`` on a pool of inference actors, printing progress.

    Work goes only to actors that have started, so an actor waiting for resources the
    cluster does not have (yet) delays nothing; if none starts within ``start_timeout_s``
    the run fails with the reason.
    """
    from pipeline.actors import restorer_actor

    pool = inference_pool(cfg, len(chunks), gpu)
    actors = [restorer_actor(cfg.infer, pool.use_gpu, pool.cpus_per_actor) for _ in range(pool.actors)]
    what = "1 GPU" if pool.use_gpu else f"{pool.cpus_per_actor} CPU"
    say(label, f"infer: {len(chunks)} chunks on {pool.actors} actor(s) ({what} each)")
    ckpt_box = [ray.put(ckpt)]  # boxed: actors fetch it once, not per chunk
    key = hashlib.sha256(ckpt).hexdigest()
    queue = list(zip(chunks, paths, strict=True))
    starting = {a.__ray_ready__.remote(): a for a in actors}
    working: dict[Any, Any] = {}
    t0 = time.perf_counter()
    done_frames = 0

    def give(actor) -> None:
        if queue:
            c, path = queue.pop(0)
            working[actor.restore.remote(key, ckpt_box, cfg.scale, info, c, path, cfg.media)] = actor

    try:
        while queue or working:
            ready, _ = ray.wait(list(starting) + list(working), num_returns=1, timeout=5.0)
            if not ready:
                if not working and starting and time.perf_counter() - t0 > start_timeout_s:
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
            done_frames += ray.get(ref)["frames"]
            say(label, f"infer: {done_frames}/{info.frames} frames  {done_frames / (time.perf_counter() - t0):.1f} fps")
            give(actor)
    finally:
        for a in actors:
            ray.kill(a)


def restore_video(
    job: VideoJob, cfg: RestoreConfig, out_root: str, run_id: str, pretrained: bytes | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Restore one video; returns its report row (status restored) and frame rows.
    Raises on failure (the caller records it); leaves no partial file behind."""
    staging = os.path.join(out_root, ".reelsr", "staging", run_id, job.rel)
    try:
        return _restore_video(job, cfg, out_root, run_id, staging, pretrained)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _restore_video(
    job: VideoJob, cfg: RestoreConfig, out_root: str, run_id: str, staging: str, pretrained: bytes | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from pipeline.actors import extract_training_frames, measure_video_task
    from pipeline.training import train_with_ray

    label = job.rel
    row: dict[str, Any] = {}
    t_start = time.perf_counter()
    if job.reference is not None and not os.path.isfile(job.reference):
        raise FileNotFoundError(f"reference not found: {job.reference}")
    info = probe(job.source)
    chunks = plan_chunks(info, cfg.media.chunk_frames)
    row.update(width=info.width, height=info.height, fps=float(info.rate), duration_s=info.duration,
               has_audio=info.has_audio, chunks=len(chunks), frames_in=info.frames)
    say(label, f"probe: {info.width}x{info.height} {float(info.rate):.3f} fps, {info.frames} frames, "
        f"{info.duration:.2f} s, {'audio' if info.has_audio else 'no audio'}, {len(chunks)} chunks")

    arch = {"n_resblocks": cfg.model.n_resblocks, "n_feats": cfg.model.n_feats, "res_scale": cfg.model.res_scale, "scale": cfg.scale}
    gpu = use_gpu(cfg)

    # --- fine-tune (or reuse a finished one) ---------------------------------
    t0 = time.perf_counter()
    ckpt_name = f"{job.rel}.{cfg.hash('model', 'train')}.{source_fingerprint(job.source, info)}.pt"
    ckpt_path = os.path.join(out_root, "checkpoints", ckpt_name)
    row.update(train_frames=None, train_steps=None, train_loss_first=None, train_loss_last=None,
               checkpoint=None, checkpoint_reused=None)
    if not cfg.train.finetune:
        ckpt = pretrained
        say(label, "train: skipped (--no-finetune), restoring with the starting model")
    elif os.path.exists(ckpt_path):
        ckpt = _read(ckpt_path)
        prov = checkpoint.load(ckpt)[1]["provenance"]
        row.update(checkpoint=ckpt_path, checkpoint_reused=True, train_frames=prov.get("train_frames"),
                   train_steps=int(prov.get("steps", 0)), train_loss_first=prov.get("loss_first"), train_loss_last=prov.get("loss_last"))
        say(label, f"train: reusing fine-tuned checkpoint {ckpt_path}")
    else:
        if pretrained is None:
            say(label, "WARNING: no pretrained model configured (model.pretrained): fine-tuning from scratch; expect lower quality")
        note = check_train_workers(cfg, gpu)
        if note:
            say(label, f"train: {note}")
        frames_ref, count_ref = extract_training_frames.remote(job.source, cfg.train.frames, cfg.train.max_frames, cfg.train.seed)
        n_frames = ray.get(count_ref)
        if n_frames == 0:
            raise ValueError(f"no training frames with policy {cfg.train.frames!r}")
        say(label, f"train: {n_frames} frames ({cfg.train.frames}), {cfg.train.steps} steps, EDSR {arch['n_resblocks']}x{arch['n_feats']}, "
            f"{cfg.train.workers} {'GPU' if gpu else 'CPU'} worker(s)")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job.rel)
        train_dir = os.path.join(out_root, ".reelsr", "ray_train")
        name = f"{safe}-{cfg.hash('model', 'train')}-{run_id}"
        try:
            ckpt, stats = train_with_ray(
                frames_ref, cfg=cfg.train, arch=arch, start=pretrained, scale=cfg.scale, use_gpu=gpu,
                storage_path=train_dir, name=name, label=label,
                provenance={"video": job.rel, "train_frames": n_frames, "frames_policy": cfg.train.frames,
                            "pretrained": cfg.model.pretrained, "run_id": run_id},
            )
        finally:
            shutil.rmtree(os.path.join(train_dir, name), ignore_errors=True)  # Ray Train's own copy
        os.makedirs(os.path.dirname(ckpt_path), exist_ok=True)
        tmp = ckpt_path + f".{run_id}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(ckpt)
            os.replace(tmp, ckpt_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        row.update(checkpoint=ckpt_path, checkpoint_reused=False, train_frames=n_frames, train_steps=cfg.train.steps,
                   train_loss_first=stats.get("loss_first"), train_loss_last=stats.get("loss_last"))
        say(label, f"train: done in {time.perf_counter() - t0:.1f} s, L1 {stats.get('loss_first', 0):.4f} -> {stats.get('loss_last', 0):.4f}")
    row["train_seconds"] = time.perf_counter() - t0

    # --- inference: chunks in parallel on a pool of actors, then assembly -----
    t0 = time.perf_counter()
    paths = [os.path.join(staging, f"chunk-{c.index:05d}.{cfg.media.container}") for c in chunks]
    run_chunks(label, info, chunks, paths, ckpt, cfg, gpu)
    out_dir, out_name = os.path.split(job.output)
    os.makedirs(out_dir, exist_ok=True)
    tmp_out = os.path.join(out_dir, f".{out_name}.{run_id}.partial.{cfg.media.container}")
    try:
        assemble(paths, job.source, tmp_out)
        out_info = probe(tmp_out)
        if out_info.frames != info.frames:
            raise RuntimeError(f"restored video has {out_info.frames} frames, source {info.frames}")
        os.replace(tmp_out, job.output)  # only a checked file reaches the final name
    finally:
        if os.path.exists(tmp_out):
            os.unlink(tmp_out)
    row.update(frames_out=out_info.frames, output=job.output)
    row["infer_seconds"] = time.perf_counter() - t0
    say(label, f"assemble: {job.output} ({out_info.width}x{out_info.height}, {out_info.frames} frames)")

    # --- metrics: a failure here is reported, the restored video stands -------
    t0 = time.perf_counter()
    say(label, f"metrics: {cfg.metrics.sample_frames} sampled frames"
        + (f", PSNR/SSIM against {job.reference}" if job.reference else ""))
    frames: list[dict[str, Any]] = []
    try:
        task = measure_video_task.options(num_gpus=1 if gpu else 0)
        measured = ray.get(task.remote(
            video=job.rel, source=job.source, output=job.output, reference=job.reference, scale=cfg.scale,
            total_frames=info.frames, sample_frames=cfg.metrics.sample_frames, pretrained=pretrained,
            finetuned=ckpt if cfg.train.finetune else None, niqe=cfg.metrics.niqe,
            precision=cfg.infer.precision, tile=cfg.infer.tile, tile_overlap=cfg.infer.tile_overlap))
        row.update(measured["summary"])
        frames = measured["frames"]
    except Exception as e:  # noqa: BLE001
        row["error"] = f"metrics failed: {type(e).__name__}: {e}"
        say(label, f"WARNING: {row['error']}")
    row["metrics_seconds"] = time.perf_counter() - t0
    row["total_seconds"] = time.perf_counter() - t_start
    return row, frames


METHODS = ("bicubic", "pretrained", "finetuned", "output")
EMPTY_METRICS = {f"{m}_{k}": None for m in ("niqe", "psnr", "ssim") for k in METHODS}


def _base_row(job: VideoJob, cfg: RestoreConfig, preset: str | None) -> dict[str, Any]:
    """A videos row with every column, as a failure until the video is restored."""
    return {
        "video": job.rel, "source": job.source, "output": None, "status": "failed", "error": None,
        "config_hash": cfg.hash(), "preset": preset, "scale": cfg.scale, "width": None, "height": None,
        "fps": None, "duration_s": None, "has_audio": None, "chunks": None, "frames_in": None, "frames_out": None,
        "train_frames": None, "train_steps": None, "train_loss_first": None, "train_loss_last": None,
        "checkpoint": None, "checkpoint_reused": None, "pretrained": cfg.model.pretrained, "metric_frames": None,
        **EMPTY_METRICS, "train_seconds": None, "infer_seconds": None, "metrics_seconds": None,
        "total_seconds": 0.0, "config_json": json.dumps(cfg.to_dict(), sort_keys=True),
    }


def restore(
    cfg: RestoreConfig,
    input_path: str,
    output: str,
    reference: str | None = None,
    preset: str | None = None,
    failed_before: list[tuple[VideoJob, str]] | None = None,
) -> list[dict[str, Any]]:
    """Restore every video of ``input_path`` into ``output``; writes the reports and
    returns the videos rows. ``failed_before``: videos that failed in a preparation step
    (e.g. making evaluation inputs), reported as failed in this run."""
    jobs = list_videos(input_path, output, cfg.media.container, reference) if input_path else []
    if not jobs and not failed_before:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {input_path}")
    pretrained = load_pretrained(cfg)  # read and checked once per run: fails fast on a bad checkpoint
    connect()
    out_root = os.path.abspath(output)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + cfg.hash()
    print(f"reelsr: run {run_id}: {len(jobs)} video(s), x{cfg.scale}, cluster {ray.cluster_resources()}", flush=True)
    rows = []
    for job, error in failed_before or []:
        base = _base_row(job, cfg, preset)
        base["error"] = error
        reports.write(out_root, "videos", run_id, [base])
        rows.append(base)
    for n, job in enumerate(jobs, 1):
        say(job.rel, f"video {n}/{len(jobs)}")
        base = _base_row(job, cfg, preset)
        t0 = time.perf_counter()
        frames: list[dict[str, Any]] = []
        try:
            row, frames = restore_video(job, cfg, out_root, run_id, pretrained)
            base.update(row, status="restored")
        except Exception as e:  # noqa: BLE001 - a bad video fails alone
            base.update(error=f"{type(e).__name__}: {e}", total_seconds=time.perf_counter() - t0)
            say(job.rel, f"FAILED: {base['error']}")
            log.debug("%s", traceback.format_exc())
        reports.write(out_root, "videos", run_id, [base])
        reports.write(out_root, "frames", run_id, frames)
        rows.append(base)
    print_summary(rows, out_root, run_id)
    return rows


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_summary(rows: list[dict[str, Any]], out_root: str, run_id: str, file=sys.stdout) -> None:
    """The end-of-run table: one line per video, then where the outputs are."""
    with_ref = any(r["psnr_bicubic"] is not None for r in rows)
    metrics = ["niqe"] + (["psnr"] if with_ref else [])
    header = ["video", "status", "frames"] + [f"{m.upper()} {k}" for m in metrics for k in METHODS] + ["time s"]
    lines = [header]
    for r in rows:
        frames = f"{_fmt(r['frames_out'], 'd')}/{_fmt(r['frames_in'], 'd')}"
        lines.append([r["video"], r["status"], frames] + [_fmt(r[f"{m}_{k}"]) for m in metrics for k in METHODS] + [_fmt(r["total_seconds"], ".1f")])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    print("", file=file)
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
    print(f"\n{len(rows) - len(failed)} restored, {len(failed)} failed", file=file)
    for r in rows:
        if r["output"]:
            print(f"output:  {r['output']}", file=file)
    print(f"reports: {os.path.join(out_root, 'reports', 'videos')} and {os.path.join(out_root, 'reports', 'frames')} (run_id={run_id})", file=file)
    file.flush()
