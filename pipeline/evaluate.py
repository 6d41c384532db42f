"""Evaluation protocol: make the low-resolution input from a high-resolution clip the way
archives were made (a clip degradation: bicubic, blur and subsampling, noise, or a real
video codec), restore it, and compare with the original (PSNR/SSIM on Y, NIQE).

Clip degradations, by name:

* ``bicubic``: the MATLAB-compatible bicubic downscale (the papers' protocol);
* ``blur<s>``: Gaussian blur of sigma s (HR px), then every scale-th pixel, centre-aligned ("BD");
* ``noise<s>``: bicubic, then grey Gaussian noise of sigma s (0-255), new per frame;
* ``x264crf<n>``: bicubic, then the clip encoded by x264 at CRF n (P-frames, a keyframe a second);
* ``mpeg4q<n>``: bicubic, then the clip encoded by MPEG-4 Part 2 at quantiser n.

Every LR clip but the codec ones is stored lossless (x264 CRF 0).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config import RestoreConfig
from pipeline.datasets.patches import lr_side, scale_fraction
from pipeline.media.chunks import decode_chunk, plan_chunks
from pipeline.media.encode import ChunkWriter, assemble
from pipeline.media.probe import probe
from pipeline.metrics.resize import bicubic_resize_uint8

if TYPE_CHECKING:
    from pipeline.run.summary import Outcome


def parse_clip_degradation(name: str) -> tuple[str, float]:
    """("bicubic" | "blur" | "noise" | "x264crf" | "mpeg4q", its number) of a clip degradation name."""
    import re

    if name == "bicubic":
        return "bicubic", 0.0
    m = re.fullmatch(r"(blur|noise|x264crf|mpeg4q)(\d+(?:\.\d+)?)", name)
    if not m:
        raise ValueError(f"unknown clip degradation {name!r}: use bicubic, blur<sigma>, noise<sigma>, x264crf<n> or mpeg4q<n>")
    kind, value = m.group(1), float(m.group(2))
    if (kind == "x264crf" and not 0 <= value <= 51) or (kind == "mpeg4q" and not 2 <= value <= 31) or (kind in ("blur", "noise") and value <= 0):
        raise ValueError(f"clip degradation {name!r}: value out of range")
    return kind, value


def _degrade_frame(hr: np.ndarray, scale: int, kind: str, value: float, index: int) -> np.ndarray:
    """One uint8 HR frame (sides multiples of scale) -> its uint8 LR frame (before any codec)."""
    if kind == "blur":
        import torch

        from pipeline.datasets.degrade import blur_decimate

        x = torch.from_numpy(hr.astype(np.float32) / 255).permute(2, 0, 1)[None]
        y = blur_decimate(x, scale, value)
        return (y[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    lr = bicubic_resize_uint8(hr, (lr_side(hr.shape[0], scale), lr_side(hr.shape[1], scale)))
    if kind == "noise":
        rng = np.random.default_rng(index)
        lr = np.clip(lr + rng.normal(0.0, value, lr.shape[:2])[..., None], 0, 255).round().astype(np.uint8)
    return lr


def make_lr_clip(hr_path: str, lr_path: str, scale: int, max_frames: int | None = None, degrade: str = "bicubic") -> tuple[int, int]:
    """Write the x``scale`` low-resolution version of ``hr_path`` made by the clip
    degradation ``degrade`` (see the module docstring) to ``lr_path`` (a keyframe every
    second so the restore has several chunks, audio copied, timestamps kept). The HR frame
    is first cropped (top-left) to a multiple of 2*scale so the LR size is even (of 2*p
    for a fractional scale p / q, the LR then q / p of it: bicubic inputs only).
    ``max_frames``: only the first frames (a shorter clip). Returns the LR (width, height)."""
    kind, value = parse_clip_degradation(degrade)
    f = scale_fraction(scale)
    if f.denominator > 1 and kind not in ("bicubic", "noise", "x264crf", "mpeg4q"):
        raise ValueError(f"clip degradation {degrade!r} is made at integer scales only, got x{scale:g}")
    info = probe(hr_path)
    m = 2 * f.numerator
    hr_w, hr_h = info.width - info.width % m, info.height - info.height % m
    if hr_w < m or hr_h < m:
        raise ValueError(f"{hr_path}: {info.width}x{info.height} is too small for x{scale:g} evaluation")
    w, h = lr_side(hr_w, scale), lr_side(hr_h, scale)
    os.makedirs(os.path.dirname(os.path.abspath(lr_path)), exist_ok=True)
    tmp = lr_path + ".video" + os.path.splitext(lr_path)[1]
    codec, crf, preset = ("mpeg4", 0, "medium") if kind == "mpeg4q" else ("libx264", int(value) if kind == "x264crf" else 0,
                                                                           "medium" if kind == "x264crf" else "veryfast")
    with ChunkWriter(tmp, width=w, height=h, time_base=info.time_base, rate=info.rate, colorspace=info.colorspace, crf=crf, preset=preset,
                     gop_size=max(1, round(float(info.rate))), codec=codec) as writer:
        if kind == "mpeg4q":
            writer.set_quantiser(int(value))
        written = 0
        for c in plan_chunks(info, info.frames):
            for pts, rgb in decode_chunk(hr_path, c, info):
                if max_frames is not None and written >= max_frames:
                    break
                writer.write(pts, _degrade_frame(rgb[:hr_h, :hr_w], scale, kind, value, written))
                written += 1
    assemble([tmp], hr_path, lr_path)
    os.unlink(tmp)
    return w, h


def evaluate(cfg: RestoreConfig, hr_input: str, output: str, preset: str | None = None, degrade: str = "bicubic") -> Outcome:
    """Degrade every HR clip of ``hr_input`` to low resolution (the clip degradation
    ``degrade``), restore the LR clips into ``output`` with the HR clips as reference, and
    return the run's outcome."""
    parse_clip_degradation(degrade)  # a bad name fails before any work
    from pipeline.run.driver import list_videos, restore

    for p in (hr_input, output):
        if "://" in p:
            raise ValueError(f"jobs.evaluate works on local folders, got {p!r}")
    out_root = os.path.abspath(output)
    single = os.path.isfile(hr_input)
    if cfg.media.size:
        raise ValueError("jobs.evaluate measures a --scale (the reference is the original at that scale), not a --size")
    lr_root = os.path.join(out_root, ".reelsr", "eval_inputs", f"x{cfg.scale:g}", degrade)
    jobs = list_videos(hr_input, out_root, cfg)
    if not jobs:
        raise ValueError(f"no videos found under {hr_input}")
    failed = []
    for job in jobs:
        lr = os.path.join(lr_root, job.rel)
        if os.path.exists(lr):
            continue
        try:
            w, h = make_lr_clip(job.source, lr, cfg.scale, degrade=degrade)
            print(f"[{job.rel}] evaluate: low-resolution input {w}x{h} ({degrade} x{cfg.scale:g}) -> {lr}", flush=True)
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
