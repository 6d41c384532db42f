"""Evaluation protocol: make the low-resolution input from a high-resolution clip by
bicubic downscaling, restore it, and compare with the original (PSNR/SSIM on Y, NIQE).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipeline.config import RestoreConfig
from pipeline.media.chunks import decode_chunk, plan_chunks
from pipeline.media.encode import ChunkWriter, assemble
from pipeline.media.probe import probe
from pipeline.metrics.resize import bicubic_resize_uint8

if TYPE_CHECKING:
    from pipeline.run.summary import Outcome


def make_lr_clip(hr_path: str, lr_path: str, scale: int, max_frames: int | None = None) -> tuple[int, int]:
    """Write the bicubic x``scale`` downscale of ``hr_path`` to ``lr_path`` (x264 lossless,
    a keyframe every second so the restore has several chunks, audio copied, timestamps kept). The HR frame is first cropped (top-left) to a multiple
    of 2*scale so the LR size is even. ``max_frames``: only the first frames (a shorter
    clip). Returns the LR (width, height)."""
    info = probe(hr_path)
    m = 2 * scale
    hr_w, hr_h = info.width - info.width % m, info.height - info.height % m
    if hr_w < m or hr_h < m:
        raise ValueError(f"{hr_path}: {info.width}x{info.height} is too small for x{scale} evaluation")
    w, h = hr_w // scale, hr_h // scale
    os.makedirs(os.path.dirname(os.path.abspath(lr_path)), exist_ok=True)
    tmp = lr_path + ".video" + os.path.splitext(lr_path)[1]
    with ChunkWriter(tmp, width=w, height=h, time_base=info.time_base, rate=info.rate, colorspace=info.colorspace, crf=0, preset="veryfast",
                     gop_size=max(1, round(float(info.rate)))) as writer:
        written = 0
        for c in plan_chunks(info, info.frames):
            for pts, rgb in decode_chunk(hr_path, c, info):
                if max_frames is not None and written >= max_frames:
                    break
                writer.write(pts, bicubic_resize_uint8(rgb[:hr_h, :hr_w], (h, w)))
                written += 1
    assemble([tmp], hr_path, lr_path)
    os.unlink(tmp)
    return w, h


def evaluate(cfg: RestoreConfig, hr_input: str, output: str, preset: str | None = None) -> Outcome:
    """Downscale every HR clip of ``hr_input``, restore the LR clips into ``output`` with
    the HR clips as reference, and return the run's outcome."""
    from pipeline.run.driver import list_videos, restore

    for p in (hr_input, output):
        if "://" in p:
            raise ValueError(f"jobs.evaluate works on local folders, got {p!r}")
    out_root = os.path.abspath(output)
    single = os.path.isfile(hr_input)
    lr_root = os.path.join(out_root, ".reelsr", "eval_inputs", f"x{cfg.scale}")
    jobs = list_videos(hr_input, out_root, cfg)
    if not jobs:
        raise ValueError(f"no videos found under {hr_input}")
    failed = []
    for job in jobs:
        lr = os.path.join(lr_root, job.rel)
        if os.path.exists(lr):
            continue
        try:
            w, h = make_lr_clip(job.source, lr, cfg.scale)
            print(f"[{job.rel}] evaluate: low-resolution input {w}x{h} (bicubic x{cfg.scale}) -> {lr}", flush=True)
        except Exception as e:  # noqa: BLE001 - a bad clip fails alone
            for leftover in (lr, lr + ".video" + os.path.splitext(lr)[1]):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            failed.append((job, f"cannot make the low-resolution input: {type(e).__name__}: {e}"))
            print(f"[{job.rel}] FAILED: {failed[-1][1]}", flush=True)
    good = [j for j in jobs if all(j is not f for f, _ in failed)]
    if single:
        lr_input = os.path.join(lr_root, jobs[0].rel) if good else None
    else:
        lr_input = lr_root if good else None
    return restore(cfg, lr_input, out_root, reference=os.path.abspath(hr_input), preset=preset, failed_before=failed)
