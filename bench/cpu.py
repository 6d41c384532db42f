"""The CPU half of the benchmark (``python -m bench.run``): every stage's throughput on
the CPU, the end-to-end restore through Ray against the pure model compute and a naive
loop. Writes ``<out>/<date>-<host>.json`` and ``.md``; methods: bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import psutil
import torch

from pipeline import inference
from pipeline.config import InferConfig, MediaConfig, TrainConfig, build_config
from pipeline.media.chunks import decode_chunk, iter_training_frames, plan_chunks, to_rgb
from pipeline.media.encode import ChunkWriter, assemble
from pipeline.media.probe import VideoInfo, probe
from pipeline.models import build_model, checkpoint
from pipeline.models.edsr import EDSR
from pipeline.train.finetune import finetune
from pipeline.upscale import upscale_chunk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CLIP = os.path.join(ROOT, "demo", "carphone_qcif.mp4")


# --- measuring -------------------------------------------------------------------


class PeakRSS:
    """Peak resident memory of this process (``tree``: plus all its descendants, the
    Ray processes a local cluster starts) while the block runs, sampled every 20 ms
    (100 ms for the tree)."""

    def __init__(self, tree: bool = False) -> None:
        self.tree = tree
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)] if self.tree else [me]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(0.1 if self.tree else 0.02)  # a tree of ~20 processes costs more to sample

    def __enter__(self) -> PeakRSS:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(stage: str, unit: str, fn: Callable[[], int], *, device: torch.device | None = None, note: str = "") -> dict[str, Any]:
    """Run ``fn`` (returns how many ``unit`` it did), timed, with its peak memory."""
    dev = device or torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with PeakRSS() as mem:
        _sync(dev)
        t0 = time.perf_counter()
        count = fn()
        _sync(dev)
        seconds = time.perf_counter() - t0
    row = {"stage": stage, "unit": unit, "count": count, "seconds": round(seconds, 3),
           "rate": round(count / seconds, 3) if seconds > 0 else None, "peak_rss_mib": round(mem.mib, 1), "note": note}
    if dev.type == "cuda":
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    print(f"  {stage:<34} {count:>6} {unit:<8} {seconds:8.2f} s  {row['rate'] or 0:9.2f} {unit}/s  peak {mem.mib:7.0f} MiB", flush=True)
    return row


# --- inputs ----------------------------------------------------------------------


def frame_ticks(info: VideoInfo) -> int:
    """Time-base ticks per frame of a constant-rate clip."""
    return round(1 / (info.rate * info.time_base))


def make_clip(path: str, frames: int, source: str = DEMO_CLIP, size: tuple[int, int] | None = None, gop: int = 30) -> VideoInfo:
    """A ``frames``-frame H.264 clip from ``source``, played forwards then backwards as
    often as needed (so no cut repeats), GOP ``gop``, optionally resized to ``size``."""
    info = probe(source)
    with av.open(source) as c:
        src = []
        for f in c.decode(video=0):
            if size:
                f = f.reformat(width=size[0], height=size[1])
            src.append(to_rgb(f, info.colorspace))
    cycle = src + src[-2:0:-1]
    h, w = src[0].shape[:2]
    ticks = frame_ticks(info)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with ChunkWriter(path, width=w, height=h, time_base=info.time_base, rate=info.rate, colorspace=info.colorspace, crf=18, preset="medium",
                     gop_size=gop) as wr:
        for i in range(frames):
            wr.write(i * ticks, cycle[i % len(cycle)])
    return probe(path)


def random_model(scale: int, n_resblocks: int, n_feats: int, seed: int = 0) -> EDSR:
    """EDSR with seeded random weights: the speed of dense convolutions does not depend
    on the weights' values."""
    torch.manual_seed(seed)
    return EDSR(scale=scale, n_resblocks=n_resblocks, n_feats=n_feats)


def conv_flops(model: torch.nn.Module, h: int, w: int) -> float:
    """FLOPs (2 x multiply-adds) of one forward pass on an h x w frame, from the
    convolutions' shapes (everything else in EDSR is negligible)."""
    total = 0.0

    def hook(mod: torch.nn.Conv2d, _inp, out) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += 2.0 * mod.in_channels // mod.groups * mod.out_channels * k * out.shape[-1] * out.shape[-2]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            model.to("meta")(torch.empty(1, 3, h, w, device="meta"))
    finally:
        for hk in hooks:
            hk.remove()
    return total


def conv3x3_gflops(device: torch.device, feats: int, h: int, w: int, batch: int, amp: torch.dtype | None, seconds: float = 2.0) -> float:
    """What EDSR's dominant layer, one 3x3 feats->feats convolution (channels-last),
    reaches alone on an h x w batch: the speed the whole model could at best run at."""
    conv = torch.nn.Conv2d(feats, feats, 3, padding=1).to(device).eval().to(memory_format=torch.channels_last)
    x = torch.rand(batch, feats, h, w, device=device).contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        conv(x)
        _sync(device)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conv(x)
            reps += 1
            _sync(device)
    return 2.0 * feats * feats * 9 * h * w * batch * reps / (time.perf_counter() - t0) / 1e9


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 2.0) -> float:
    """What a large square matmul reaches here: the compute ceiling of this device."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        _sync(device)
    return 2.0 * n**3 * reps / (time.perf_counter() - t0) / 1e9


# --- the CPU stages --------------------------------------------------------------


def _decode_all(info: VideoInfo, chunks) -> list[np.ndarray]:
    return [rgb for c in chunks for _, rgb in decode_chunk(info.path, c, info)]


def naive_loop(model: torch.nn.Module, src: str, out: str, scale: int, media: MediaConfig) -> int:
    """What one would write first: decode a frame, run the model on it (batch 1, the
    model as loaded), encode it; one process, one thread of Python."""
    info = probe(src)
    n = 0
    with av.open(src) as c, ChunkWriter(out, width=info.width * scale, height=info.height * scale, time_base=info.time_base,
                                        rate=info.rate, colorspace=info.colorspace, crf=media.crf, preset=media.preset) as wr:
        for frame in c.decode(video=0):
            rgb = to_rgb(frame, info.colorspace)
            with torch.inference_mode():
                x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
                y = model(x).clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
            wr.write(frame.pts, y)
            n += 1
    return n


def cpu_stages(work: str, args: argparse.Namespace) -> dict[str, Any]:
    scale, nb, nf = args.scale, args.n_resblocks, args.n_feats
    media = MediaConfig()
    clip = os.path.join(work, "in1", "clip.mp4")
    info = make_clip(clip, args.frames)
    chunks = plan_chunks(info, media.chunk_frames)
    dev = torch.device("cpu")
    model = inference.prepare(random_model(scale, nb, nf), dev)
    plain = random_model(scale, nb, nf).eval()  # as loaded: NCHW
    infer = InferConfig()
    batch = inference.auto_batch(dev, nf, info.height, info.width)
    stages: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"clip": {"frames": info.frames, "width": info.width, "height": info.height, "chunks": len(chunks),
                                      "fps": float(info.rate)}, "batch": batch}
    print(f"clip: {info.width}x{info.height}, {info.frames} frames, {len(chunks)} chunks; EDSR {nb}x{nf} x{scale}; "
          f"{torch.get_num_threads()} torch threads; CPU batch {batch}", flush=True)

    frames: list[np.ndarray] = []

    def decode() -> int:
        frames.extend(_decode_all(info, chunks))
        return len(frames)

    stages.append(timed("decode (to RGB)", "frames", decode))
    for policy in ("fps:4", "iframes"):
        kept: list[int] = []
        row = timed(f"training frames, {policy}", "frames", lambda policy=policy, kept=kept: kept.append(
            sum(1 for _ in iter_training_frames(clip, policy, info))) or info.frames)
        row["note"] = f"video frames gone through per second; {kept[0]} frames kept"
        stages.append(row)

    train_frames = [f for _, f in iter_training_frames(clip, "fps:4", info)]
    tcfg = TrainConfig(steps=args.train_steps, batch_size=16, patch_size=96)
    tmodel = random_model(scale, nb, nf)
    stages.append(timed("fine-tune (b16, 96 px HR patches)", "steps", lambda: int(finetune(tmodel, train_frames, tcfg, scale, dev, 0)["steps"])))

    outs: list[np.ndarray] = []

    def upscale_all(some: list[np.ndarray]) -> list[np.ndarray]:
        return [o for i in range(0, len(some), batch)
                for o in inference.upscale_frames(model, np.stack(some[i:i + batch]), scale, device=dev, tile=inference.CPU_TILE)]

    def model_only() -> int:
        outs.extend(upscale_all(frames))
        return len(frames)

    with torch.inference_mode():
        model(torch.zeros(1, 3, info.height, info.width).contiguous(memory_format=torch.channels_last))  # warm-up
    model_row = timed(f"SR model only (channels-last, batch {batch})", "frames", model_only)
    stages.append(model_row)
    sample = frames[:48]

    def model_fps() -> float:
        t0 = time.perf_counter()
        upscale_all(sample)
        return len(sample) / (time.perf_counter() - t0)


    def plain_only() -> int:
        with torch.inference_mode():
            for f in frames:
                plain(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255)
        return len(frames)

    stages.append(timed("SR model only (NCHW as loaded, batch 1)", "frames", plain_only))

    # the multi-frame model at the same output size: one 7-frame window per output frame (edges repeated)
    torch.manual_seed(0)
    duf = build_model({"name": "duf", "n_layers": 6, "n_feats": 32, "growth": 16, "frames": 7, "scale": scale}).eval()

    def duf_only() -> int:
        clip = torch.from_numpy(np.stack(frames[:8 if args.quick else 24])).permute(0, 3, 1, 2).float() / 255
        with torch.inference_mode():
            for t in range(len(clip)):
                duf(clip[[min(max(t + k, 0), len(clip) - 1) for k in range(-3, 4)]][None])
        return len(clip)

    stages.append(timed("DUF 6x32 g16 model only (7-frame windows, batch 1)", "frames", duf_only,
                        note="random weights (speed does not depend on them); compare with the NCHW batch-1 EDSR row"))

    # the continuous-scale model at the same output size, and at x2.5 of it (its whole frame, queried in blocks)
    torch.manual_seed(0)
    liif = build_model({"name": "liif", "n_resblocks": 16, "n_feats": 32, "hidden": 64, "layers": 3, "scale": float(scale)}).eval()
    liif = liif.to(memory_format=torch.channels_last)

    def liif_only(at: float) -> Callable[[], int]:
        def run() -> int:
            clip = frames[:8 if args.quick else 24]
            with torch.inference_mode():
                for f in clip:
                    x = torch.from_numpy(f).permute(2, 0, 1)[None].float().div(255).contiguous(memory_format=torch.channels_last)
                    liif(x, size=(round(f.shape[0] * at), round(f.shape[1] * at)))
            return len(clip)
        return run

    for at in (scale, 2.5):
        stages.append(timed(f"EDSR 16x32 + LIIF 3x64 model only (x{at:g}, batch 1)", "frames", liif_only(at),
                            note="random weights; the continuous-scale model (preset any)"))

    def encode() -> int:
        with ChunkWriter(os.path.join(work, "enc.mp4"), width=info.width * scale, height=info.height * scale, time_base=info.time_base,
                         rate=info.rate, colorspace=info.colorspace, crf=media.crf, preset=media.preset) as wr:
            ticks = frame_ticks(info)
            for i, o in enumerate(outs):
                wr.write(i * ticks, o)
        return len(outs)

    stages.append(timed(f"encode (libx264 {media.preset}, crf {media.crf})", "frames", encode))

    paths = [os.path.join(work, "chunks", f"{c.index:05d}.mp4") for c in chunks]
    os.makedirs(os.path.dirname(paths[0]), exist_ok=True)

    def restore_chunks(net: torch.nn.Module, depth: int) -> Callable[[], int]:
        return lambda: sum(upscale_chunk(net, scale, info, c, p, media, infer, dev, None, depth) for c, p in zip(chunks, paths, strict=True))

    # overlapped first: any warm-up cost falls on it, not on the comparison run
    ovl = timed("chunk restore, stages overlapped", "frames", restore_chunks(model, 2), note="decode ahead and encode behind the model, in threads")
    seq = timed("chunk restore, stages in turn", "frames", restore_chunks(model, 0), note="decode, model, encode one after the other")
    stages += [ovl, seq]
    # the same with the tiny model, where decoding and encoding are a large share of the time
    small = inference.prepare(random_model(scale, 2, 16), dev)
    stages.append(timed("chunk restore, EDSR 2x16, overlapped", "frames", restore_chunks(small, 2)))
    stages.append(timed("chunk restore, EDSR 2x16, in turn", "frames", restore_chunks(small, 0)))
    out_path = os.path.join(work, "assembled.mp4")
    stages.append(timed("assemble (packet copy)", "frames", lambda: (assemble(paths, clip, out_path), probe(out_path).frames)[1]))

    from pipeline.measure import measure_video

    blob = checkpoint.to_bytes(random_model(scale, nb, nf), {"note": "random weights (benchmark)"})
    stages.append(timed("metrics (NIQE, 8 sampled frames)", "frames", lambda: len(measure_video(
        video="clip.mp4", source=clip, output=out_path, reference=None, scale=scale, total_frames=info.frames, sample_frames=8,
        pretrained=blob, finetuned=None, niqe=True)["frames"]), note="bicubic, model and output measured on each"))

    flops = conv_flops(random_model(scale, nb, nf), info.height, info.width)
    mm = matmul_gflops(dev, torch.float32, 2048)
    conv = conv3x3_gflops(dev, nf, info.height, info.width, batch, None)
    achieved = flops * model_row["rate"] / 1e9
    extra["roofline"] = {"gflop_per_frame": round(flops / 1e9, 2), "model_gflops": round(achieved, 1), "matmul_gflops": round(mm, 1),
                         "conv3x3_gflops": round(conv, 1), "fraction_of_conv": round(achieved / conv, 3)}
    print(f"  roofline: {flops / 1e9:.1f} GFLOP/frame, model {achieved:.0f} GFLOP/s; its 3x3 conv alone {conv:.0f} GFLOP/s "
          f"({achieved / conv:.0%}); fp32 matmul {mm:.0f} GFLOP/s", flush=True)

    if not args.no_naive:
        stages.append(timed("naive loop (decode 1, model NCHW, encode 1)", "frames",
                            lambda: naive_loop(plain, clip, os.path.join(work, "naive.mp4"), scale, media)))
    return {"stages": stages, "extra": extra, "info": info, "model_fps": model_fps}


# --- end to end through Ray ------------------------------------------------------


def e2e(work: str, args: argparse.Namespace, info1: VideoInfo, model_fps: Callable[[], float]) -> dict[str, Any]:
    """The real pipeline (``pipeline.run.driver.restore``) on a running local Ray, on
    the CPU like the model figures it is compared with, the clip and the clip twice as
    long, after a warm-up run on a short clip.

    ``model_fps()`` (the model alone on a few frames, in this process) is measured just
    before and just after each run, with Ray up and idle: their mean is that run's
    reference, so a drift of the machine's speed between the stage table and the run
    (this VM's varies by +-10 % over minutes) does not count as overhead."""
    import ray

    from pipeline.run.driver import restore

    info2 = make_clip(os.path.join(work, "in2", "clip.mp4"), 2 * info1.frames)
    warm = make_clip(os.path.join(work, "in0", "clip.mp4"), 30)
    ckpt = os.path.join(work, f"edsr_{args.n_resblocks}x{args.n_feats}_x{args.scale}.pt")
    checkpoint.save(random_model(args.scale, args.n_resblocks, args.n_feats), ckpt, {"note": "random weights (benchmark)"})
    overrides = [f"model.pretrained={ckpt}", f"model.n_resblocks={args.n_resblocks}", f"model.n_feats={args.n_feats}",
                 "train.finetune=false", "metrics.niqe=false", "metrics.sample_frames=1", "device=cpu", *args.set]
    cfg = build_config("baseline", overrides=overrides, scale=args.scale)
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    runs: dict[str, Any] = {"ray_start_s": round(ray_start, 2)}
    try:
        for name, info in (("warm-up", warm), ("1x", info1), ("2x", info2)):
            src, frames = info.path, info.frames
            out = os.path.join(work, f"out-{name}")
            before = model_fps() if name != "warm-up" else None
            with PeakRSS(tree=True) as mem:
                t0 = time.perf_counter()
                outcome = restore(cfg, src, out)
                seconds = time.perf_counter() - t0
            ok = [r for r in outcome.rows if r.status == "restored"]
            if len(ok) != 1:
                raise RuntimeError(f"e2e {name}: not restored: {outcome.rows}")
            row = ok[0]
            parts = {"infer_and_assemble_s": row.infer_seconds, "metrics_s": row.metrics_seconds,
                     "probe_and_train_s": row.total_seconds - row.infer_seconds - row.metrics_seconds - row.train_seconds,
                     "outside_the_video_s": seconds - row.total_seconds}  # listing, checks, reports
            runs[name] = {"frames": frames, "seconds": round(seconds, 2), "fps": round(frames / seconds, 3), "peak_rss_tree_mib": round(mem.mib, 1),
                          **{k: round(v, 2) for k, v in parts.items()}}
            if before is not None:
                after = model_fps()
                ref = (before + after) / 2
                runs[name].update(model_fps_before=round(before, 3), model_fps_after=round(after, 3), model_seconds=round(frames / ref, 2))
                print(f"  e2e {name}: the model alone, just before / after: {before:.2f} / {after:.2f} frames/s -> {frames / ref:.2f} s for the clip",
                      flush=True)
            print(f"  e2e {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()), flush=True)
            print(f"  e2e {name:<8} {frames:5d} frames {seconds:8.2f} s {frames / seconds:7.2f} frames/s  peak (all Ray processes) {mem.mib:7.0f} MiB",
                  flush=True)
    finally:
        ray.shutdown()
    return runs


# --- report ----------------------------------------------------------------------


def checks(cpu: dict[str, Any], runs: dict[str, Any] | None) -> list[dict[str, Any]]:
    by = {r["stage"]: r for r in cpu["stages"]}
    model = next(r for k, r in by.items() if k.startswith("SR model only (channels-last"))
    ovl = by["chunk restore, stages overlapped"]
    s_seq, s_ovl = by["chunk restore, EDSR 2x16, in turn"], by["chunk restore, EDSR 2x16, overlapped"]
    out = [{"check": "overlap, EDSR 2x16: chunk restore overlapped vs in turn (time ratio)", "value": round(s_ovl["seconds"] / s_seq["seconds"], 3),
            "target": "< 1", "pass": s_ovl["seconds"] < s_seq["seconds"]}]
    out.append({"check": "chunk restore (overlapped) overhead over the model alone", "value": round(ovl["seconds"] / model["seconds"] - 1, 3),
                "target": "<= 0.15", "pass": ovl["seconds"] / model["seconds"] - 1 <= 0.15})
    if runs:
        one, two = runs["1x"], runs["2x"]
        for k, r in (("1x", one), ("2x", two)):
            over = r["seconds"] / r["model_seconds"] - 1
            out.append({"check": f"end to end (Ray, {k}) overhead over the model alone (measured around the run)", "value": round(over, 3),
                        "target": "<= 0.15", "pass": over <= 0.15})
        over = one["seconds"] / model["seconds"] - 1
        out.append({"check": "end to end (Ray, 1x) overhead over the model alone of the stage table", "value": round(over, 3),
                    "target": "(for comparison)", "pass": over <= 0.15})
        naive = by.get("naive loop (decode 1, model NCHW, encode 1)")
        if naive:
            out.append({"check": "end to end (Ray, 1x) vs naive loop (time ratio)", "value": round(one["seconds"] / naive["seconds"], 3),
                        "target": "< 1", "pass": one["seconds"] < naive["seconds"]})
        out.append({"check": "2x clip length: time ratio", "value": round(two["seconds"] / one["seconds"], 3), "target": "<= 2.10",
                    "pass": two["seconds"] / one["seconds"] <= 2.10})
        out.append({"check": "2x clip length: peak memory ratio (all Ray processes)", "value": round(two["peak_rss_tree_mib"] / one["peak_rss_tree_mib"], 3),
                    "target": "<= 1.05", "pass": two["peak_rss_tree_mib"] / one["peak_rss_tree_mib"] <= 1.05})
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    lines = [f"# reelsr benchmark, {m['date']} on {m['host']}", "",
             f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; GPU: {m['gpu'] or 'none'}; "
             f"torch {m['torch']}, PyAV {m['av']}; commit {m['commit']}", "",
             "Clip: {frames} frames of {width}x{height} at {fps:.2f} fps, {chunks} chunks; ".format(**result["cpu"]["extra"]["clip"])
             + f"model EDSR {m['model']} (random weights), CPU batch {result['cpu']['extra']['batch']}", "",
             "| stage | count | seconds | rate | peak RSS MiB | note |", "|---|---:|---:|---:|---:|---|"]
    for r in result["cpu"]["stages"]:
        lines.append(f"| {r['stage']} | {r['count']} {r['unit']} | {r['seconds']:.2f} | {r['rate']:.2f} {r['unit']}/s | {r['peak_rss_mib']:.0f} | {r['note']} |")
    runs = result.get("e2e")
    if runs:
        lines += ["", f"End to end through Ray (`restore()` on a running local Ray; Ray itself started in {runs['ray_start_s']} s):", "",
                  "| run | frames | seconds | frames/s | the model alone before / after, frames/s | peak RSS, all processes MiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for k in ("warm-up", "1x", "2x"):
            r = runs[k]
            around = f"{r['model_fps_before']:.2f} / {r['model_fps_after']:.2f}" if "model_fps_before" in r else ""
            lines.append(f"| {k} | {r['frames']} | {r['seconds']:.2f} | {r['fps']:.2f} | {around} | {r['peak_rss_tree_mib']:.0f} |")
    rf = result["cpu"]["extra"]["roofline"]
    lines += ["", f"CPU roofline: {rf['gflop_per_frame']} GFLOP per frame; the model runs at {rf['model_gflops']} GFLOP/s, "
              f"its 3x3 64->64 convolution alone at {rf['conv3x3_gflops']} GFLOP/s ({rf['fraction_of_conv']:.0%}); "
              f"a 2048² fp32 matmul (MKL) reaches {rf['matmul_gflops']} GFLOP/s.", "",
              "| check | value | target | pass |", "|---|---:|---|---|"]
    for c in result["checks"]:
        lines.append(f"| {c['check']} | {c['value']} | {c['target']} | {'yes' if c['pass'] else '**no**'} |")
    gpu = result.get("gpu")
    lines.append("")
    if gpu and "see" in gpu:
        lines.append("GPU: measured by the GPU section, in the <date>-<host>-gpu results files.")
    elif gpu:
        rf = gpu["roofline"]
        lines += [f"GPU: {gpu['device']}", "", "| stage | count | seconds | rate | peak GPU MiB |", "|---|---:|---:|---:|---:|"]
        for r in gpu["rows"]:
            lines.append(f"| {r['stage']} | {r['count']} {r['unit']} | {r['seconds']:.2f} | {r['rate']:.1f} {r['unit']}/s | {r.get('peak_gpu_mib', 0):.0f} |")
        lines += ["", f"GPU roofline: {rf['gflop_per_frame']} GFLOP per frame, bf16 matmul {rf['matmul_bf16_tflops']} TFLOP/s: "
                  f"at most {rf['ceiling_fps']} frames/s; its 3x3 convolution alone (bf16, b16) {rf['conv3x3_bf16_tflops']} TFLOP/s: "
                  f"at most {rf['conv_ceiling_fps']} frames/s; best measured {rf['best_fps']}."]
    else:
        lines.append("GPU: none here; the GPU section did not run.")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(args: argparse.Namespace) -> int:
    """The CPU stages and the runs through Ray (``bench.run`` parses the arguments); the
    GPU section too when CUDA is here."""
    if args.quick:
        args.frames, args.n_resblocks, args.n_feats, args.train_steps, args.no_naive = 60, 2, 16, 2, True
    work = tempfile.mkdtemp(prefix="reelsr-bench-")
    try:
        started = datetime.datetime.now(datetime.UTC)
        cpu = cpu_stages(work, args)
        runs = None if args.no_e2e else e2e(work, args, cpu["info"], cpu["model_fps"])
        gpu = None
        if torch.cuda.is_available() and not args.no_gpu:
            from bench import gpu as gpu_bench

            gpu_bench.main(args)  # its own files, <date>-<host>-gpu.{json,md}
            gpu = {"see": "the -gpu results files"}
        meta = {"date": started.strftime("%Y-%m-%d"), "started": started.isoformat(timespec="seconds"), "host": socket.gethostname(),
                "cpu": _cpu_name(), "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__,
                "av": av.__version__, "python": platform.python_version(), "commit": _commit(),
                "model": f"{args.n_resblocks}x{args.n_feats} x{args.scale}", "args": vars(args)}
        cpu_out = {"stages": cpu["stages"], "extra": cpu["extra"]}
        result = {"meta": meta, "cpu": cpu_out, "e2e": runs, "gpu": gpu}
        result["checks"] = checks(cpu_out, runs)
        os.makedirs(args.out, exist_ok=True)
        base = os.path.join(args.out, f"{meta['date']}-{meta['host']}" + ("-quick" if args.quick else ""))
        with open(base + ".json", "w") as fh:
            json.dump(result, fh, indent=2, default=str)
            fh.write("\n")
        md = markdown(result)
        with open(base + ".md", "w") as fh:
            fh.write(md)
        print("\n" + md)
        print(f"results: {base}.json and {base}.md")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


