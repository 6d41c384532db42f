"""Quality measurements of one restored video on sampled frames.

Methods compared on the same evenly spaced frames:

- ``bicubic``: the source frame upscaled by bicubic interpolation;
- ``pretrained``: the starting model's output, when one is configured;
- ``finetuned``: the fine-tuned model's output, when the video was fine-tuned;
- ``output``: the frames decoded from the restored video file (what the user gets,
  x264 encoding included).

The first three are computed in memory on the same decoded source frames, so they
compare the models alone; ``output`` minus the model that made it is the encoding loss.

NIQE needs no reference; PSNR/SSIM (Y channel, ``scale`` px cropped) are measured
when a high-resolution reference video is given.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from pipeline import inference, visual
from pipeline.media.chunks import decode_chunk, plan_chunks
from pipeline.media.probe import by_fields, probe
from pipeline.media.windows import is_cut, window_positions
from pipeline.metrics.fullref import psnr_y, ssim_y
from pipeline.metrics.niqe import NIQE_BLOCK
from pipeline.metrics.resize import bicubic_resize_uint8
from pipeline.models import checkpoint


def sample_indices(total: int, k: int) -> list[int]:
    """``k`` evenly spaced frame indices in [0, total), first and last included."""
    if total <= 0:
        return []
    k = min(k, total)
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, k)})


def frames_at(path: str, indices: list[int], fields: bool = False) -> list[tuple[float, np.ndarray]]:
    """(time in s from the first frame, uint8 RGB (H, W, 3)) of the frames at ``indices``
    (presentation order, ascending); ``fields``: of an interlaced video, counted one per
    field (media.deinterlace=field). Only the GOPs holding those frames are decoded, so
    the cost follows the number of samples, not the length of the video."""
    info = by_fields(probe(path)) if fields else probe(path)
    if indices and indices[-1] >= info.frames:
        raise ValueError(f"{path}: has {info.frames} frames, sampled frame {indices[-1]} asked for")
    want = set(indices)
    out = []
    first = 0
    for chunk in plan_chunks(info, 1):  # one chunk per GOP
        last = first + chunk.frames
        if any(first <= i < last for i in want):
            for i, (pts, rgb) in enumerate(decode_chunk(path, chunk, info), start=first):
                if i in want:
                    out.append((float((pts - info.start_pts) * info.time_base), rgb))
        first = last
    return out


def _fit_reference(ref: np.ndarray, shape: tuple[int, ...], scale: int, path: str) -> np.ndarray:
    """Crop a reference frame to the output size (evaluation inputs are cut to a multiple
    of the scale); refuse anything that is not that case."""
    h, w = shape[:2]
    if ref.shape[0] < h or ref.shape[1] < w or ref.shape[0] - h >= 2 * scale or ref.shape[1] - w >= 2 * scale:
        raise ValueError(f"reference {path} is {ref.shape[1]}x{ref.shape[0]}, the restored video {w}x{h}: sizes do not match")
    return ref[:h, :w]


@dataclass(frozen=True)
class Samples:
    """The sampled source frames of a video (and the reference's, cut to the output size);
    ``partners``: the frames right after some of them (for the temporal measures), the
    first of each pair at position ``pair_pos[k]`` of ``idx``."""

    idx: list[int]
    src: list[tuple[float, np.ndarray]]  # (time s, uint8 RGB)
    refs: list[np.ndarray] | None
    partners: Samples | None = None
    pair_pos: tuple[int, ...] = ()
    windows: list[np.ndarray] | None = None  # each frame's window, for a multi-frame model (``windows_at``)


def windows_at(path: str, indices: list[int], radius: int, total_frames: int, fields: bool = False) -> list[np.ndarray]:
    """The window (2 * radius + 1, H, W, 3) of each frame at ``indices``, as a restore
    builds it (``media.windows``: no reaching across a scene cut or past the video's ends)."""
    last = total_frames - 1
    need = sorted({j for i in indices for j in range(max(0, i - radius), min(last, i + radius) + 1)})
    decoded = dict(zip(need, (rgb for _, rgb in frames_at(path, need, fields)), strict=True))
    cut: dict[int, bool] = {}
    out = []
    for i in indices:
        span = range(max(0, i - radius), min(last, i + radius))
        cuts = [p for p in span if cut.setdefault(p, is_cut(decoded[p], decoded[p + 1]))]
        out.append(np.stack([decoded[p] for p in window_positions(i, radius, 0, last, cuts)]))
    return out


def load_samples(source: str, reference: str | None, scale: float, total_frames: int, sample_frames: int, fields: bool = False,
                 temporal_pairs: int = 0, size: tuple[int, int] | None = None) -> Samples:
    """Decode the evenly spaced sampled frames of ``source`` (and ``reference``) once
    (``fields``: the source's fields, as restored with media.deinterlace=field), and for
    ``temporal_pairs`` of them (evenly spaced) the frame after each. ``size``: the
    restored picture's (h, w) (default ``scale`` x the source's), the reference cut to it."""
    idx = sample_indices(total_frames, sample_frames)
    eligible = [p for p, i in enumerate(idx) if i + 1 < total_frames]  # (the last frame has none after it)
    pos = [eligible[k] for k in sample_indices(len(eligible), temporal_pairs)] if temporal_pairs else []
    nxt = [idx[p] + 1 for p in pos]
    want = sorted(set(idx) | set(nxt))
    decoded = dict(zip(want, frames_at(source, want, fields), strict=True))
    ref_decoded = None
    if reference is not None:
        h, w = decoded[idx[0]][1].shape[:2]
        ref_decoded = {i: _fit_reference(rgb, size or (h * scale, w * scale), scale, reference)
                       for i, (_, rgb) in zip(want, frames_at(reference, want), strict=True)}
    partners = None
    if nxt:
        partners = Samples(nxt, [decoded[i] for i in nxt], None if ref_decoded is None else [ref_decoded[i] for i in nxt])
    return Samples(idx, [decoded[i] for i in idx], None if ref_decoded is None else [ref_decoded[i] for i in idx], partners, tuple(pos))


def bicubic_outputs(samples: Samples, scale: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The sampled frames bicubic-upscaled ``scale`` x, or to ``size`` (h, w)."""
    return [bicubic_resize_uint8(rgb, size or (rgb.shape[0] * scale, rgb.shape[1] * scale)) for _, rgb in samples.src]


def model_outputs(samples: Samples, blob: bytes | tuple[torch.nn.Module, dict[str, Any]], scale: int, precision: str = "auto", tile: int = 0,
                  tile_overlap: int = 16, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The checkpoint's outputs on the sampled frames (on this process's device; a
    multi-frame model's on ``samples.windows``); ``tile`` as infer.tile (0: auto).
    ``blob``: the checkpoint's bytes, or what ``checkpoint.load`` made of them.
    ``size``: the picture's (h, w) when it is not ``scale`` x the frame's (a continuous
    model restores to it; another at its scale, then resized)."""
    device = inference.pick_device()
    amp = inference.autocast_dtype(precision, device)
    model, meta = checkpoint.load(blob) if isinstance(blob, bytes) else blob
    model = inference.prepare(model, device)
    frame = samples.src[0][1].shape[:2] if samples.src else (0, 0)
    geo = None
    if size is not None:
        from pipeline.media.geometry import Geometry

        geo = Geometry(size[0] / max(1, frame[0]), size, size)
    scale = int(meta["arch"].get("scale", scale)) if not inference.continuous(model) else scale  # (an integer model runs at its own)
    tile = inference.tile_for(tile, tile_overlap, device, inference.feature_maps(meta["arch"]), math.ceil(scale), 1, amp, frame)
    if inference.frames_in(model) > 1:
        if samples.windows is None:
            raise ValueError("a multi-frame model needs the samples' windows (load_samples(radius=...))")
        inputs = samples.windows
    else:
        inputs = [rgb for _, rgb in samples.src]
    out = [inference.upscale_frames(model, x[None], scale, device=device, tile=tile, overlap=tile_overlap, amp=amp, geometry=geo)[0]
           for x in inputs]
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def score(video: str, samples: Samples, outputs: dict[str, list[np.ndarray]], scale: int, niqe: bool,
          partner_outputs: dict[str, list[np.ndarray]] | None = None, at: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """NIQE (and PSNR/SSIM against the reference) of each method's outputs on the samples;
    returns {"summary": {column: value}, "frames": rows}: PSNR and SSIM are means over the
    frames, NIQE is pooled over them (``NiqeScorer.pooled``) with its interval
    (``niqe_<method>_lo`` / ``_hi``); the frame rows hold each frame's own scores. With
    ``partner_outputs`` (each method's outputs on ``samples.partners``): the temporal
    measures of each pair (``pipeline.metrics.temporal``), flicker always, the temporal
    error with a reference; means in the summary, each pair's on its first frame's row.
    ``at``: where the outputs' top-left lies in ``scale`` x the source (a cropped output)."""
    scorer = None
    if niqe and min(next(iter(outputs.values()))[0].shape[:2]) < NIQE_BLOCK:
        niqe = False  # NIQE needs at least one 96x96 block: left null for tiny videos
    if niqe:
        from pipeline.metrics.niqe import NiqeScorer

        scorer = NiqeScorer(device=str(inference.pick_device()))
    refs = samples.refs
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"metric_frames": len(samples.idx)}
    pairs = _pair_context(samples, scale, at) if partner_outputs else []
    for method, frames in outputs.items():
        vals: dict[str, list[float]] = {"niqe": [], "psnr": [], "ssim": [], "flicker": [], "terr": []}
        feats = []
        tempo = _temporal(pairs, frames, (partner_outputs or {}).get(method), scale)
        for j, (i, (t, _)) in enumerate(zip(samples.idx, samples.src, strict=True)):
            row = {"video": video, "frame_index": i, "time_s": float(t), "method": method, "niqe": None, "psnr": None, "ssim": None,
                   "flicker": None, "terr": None, **tempo.get(j, {})}
            if scorer is not None:
                feats.append(scorer.features(frames[j]))
                value = scorer.from_features(feats[-1])
                row["niqe"] = value if np.isfinite(value) else None
            if refs is not None:
                row["psnr"] = float(psnr_y(frames[j], refs[j], crop=math.ceil(scale)))
                row["ssim"] = float(ssim_y(frames[j], refs[j], crop=math.ceil(scale)))
            for k in vals:
                if row[k] is not None:
                    vals[k].append(row[k])
            rows.append(row)
        for k, v in vals.items():
            finite = [x for x in v if np.isfinite(x) or x == float("inf")]
            summary[f"{k}_{method}"] = float(np.mean(finite)) if finite else None
        if scorer is not None:
            # NIQE of the method: one Gaussian over the blocks of all its frames (a 352x288 frame has
            # only 9 blocks: per-frame scores move by 0.5 with a pixel's shift), and a bootstrap interval
            pooled = scorer.pooled(feats)
            for key, value in zip(("", "_lo", "_hi"), pooled, strict=True):
                summary[f"niqe_{method}{key}"] = value if np.isfinite(value) else None
    return {"summary": summary, "frames": rows}


def _on_the_output(geo, every: dict[str, list[np.ndarray]], samples: Samples, partners: Samples | None):
    """Padded output: its frames cut back to the picture. Cropped: every other method's
    frames, and the reference's, cut to the part of the picture the output shows."""
    (ph, pw), (fh, fw), (oy, ox) = geo.picture, geo.frame, geo.offset
    if oy >= 0 and ox >= 0:  # padded: the picture lies inside the frame
        every = {**every, "output": [f[oy:oy + ph, ox:ox + pw] for f in every["output"]]}
        return every, samples, partners
    ys, xs = -oy, -ox

    def cut(frames):
        return None if frames is None else [f[ys:ys + fh, xs:xs + fw] for f in frames]

    every = {m: (frames if m == "output" else cut(frames)) for m, frames in every.items()}
    samples = dataclasses.replace(samples, refs=cut(samples.refs))
    if partners is not None:
        partners = dataclasses.replace(partners, refs=cut(partners.refs))
        samples = dataclasses.replace(samples, partners=partners)
    return every, samples, partners


def _pair_context(samples: Samples, scale: int, at: tuple[int, int] = (0, 0)) -> list[tuple[int, int, np.ndarray, np.ndarray | None]]:
    """What every method's temporal measures share, computed once per pair: (position in
    samples, position in partners, the source's still regions at output size, the
    reference's Y change or None)."""
    from pipeline.metrics.temporal import static_mask, y_change

    if samples.partners is None:
        return []
    out = []
    for k, j in enumerate(samples.pair_pos):
        src0, src1 = samples.src[j][1], samples.partners.src[k][1]
        mask = static_mask(src0, src1, scale, (math.ceil(src0.shape[0] * scale), math.ceil(src0.shape[1] * scale)))[at[0]:, at[1]:]
        ref = None
        if samples.refs is not None and samples.partners.refs is not None:
            ref = y_change(samples.refs[j], samples.partners.refs[k])
        out.append((j, k, mask, ref))
    return out


def _temporal(pairs: list[tuple[int, int, np.ndarray, np.ndarray | None]], frames: list[np.ndarray], partners: list[np.ndarray] | None,
              scale: int) -> dict[int, dict[str, float | None]]:
    """{position in samples: {"flicker", "terr"}} of a method's pairs (none without partners)."""
    if partners is None:
        return {}
    from pipeline.metrics.temporal import change_error, still_change

    out = {}
    for j, k, mask, ref in pairs:
        a, b = frames[j], partners[k]
        h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
        a, b = a[:h, :w], b[:h, :w]
        f = still_change(a, b, mask[:h, :w])
        e = None if ref is None else change_error(a, b, ref[:h, :w], crop=math.ceil(scale))
        out[j] = {"flicker": f if np.isfinite(f) else None, "terr": e}
    return out


def measure_video(
    *,
    video: str,
    source: str,
    output: str | None,
    reference: str | None,
    scale: int,
    total_frames: int,
    sample_frames: int,
    pretrained: bytes | None,
    finetuned: bytes | None,
    niqe: bool,
    precision: str = "auto",
    tile: int = 0,
    tile_overlap: int = 16,
    fields: bool = False,
    crops: int = 0,
    temporal_pairs: int = 0,
    output_ratio: Fraction = Fraction(1),
    geometry=None,
) -> dict[str, Any]:
    """Measure the methods on sampled frames (and ``temporal_pairs`` of them with the frame
    after each); returns {"summary": {column: mean}, "frames": rows, "crops": ``crops``
    before/after pictures (``pipeline.visual.crops``)}. ``output_ratio``: the output's
    frames per source frame (a new frame rate): source frame i is output frame
    round(i * output_ratio), the one at its time (the nearest where the rates' times do
    not meet). ``geometry``: the output's (``media.geometry``) when it is not ``scale`` x the
    source: every method is measured on the picture, and the output's frames are cut back
    to it (padded) or the others to the output's part of it (cropped)."""
    size = None
    if geometry is not None:
        scale, size = (int(geometry.scale) if geometry.scale.is_integer() else geometry.scale), geometry.picture
    samples = load_samples(source, reference, scale, total_frames, sample_frames, fields, temporal_pairs, size)
    partners = samples.partners
    # the sampled frames and their partners go through each method together: one model load, one decode of the output
    joint = samples if partners is None else Samples(samples.idx + partners.idx, samples.src + partners.src, None)
    models = {m: checkpoint.load(b) for m, b in (("pretrained", pretrained), ("finetuned", finetuned)) if b is not None}  # on the CPU
    radius = max((meta["arch"].get("frames", 1) // 2 for _, meta in models.values()), default=0)
    if radius:  # a multi-frame model: each sample's window, as the restore made it
        joint = dataclasses.replace(joint, windows=windows_at(source, joint.idx, radius, total_frames, fields))
    every: dict[str, list[np.ndarray]] = {"bicubic": bicubic_outputs(joint, scale, size)}
    for method in list(models):
        every[method] = model_outputs(joint, models.pop(method), scale, precision, tile, tile_overlap, size)
    if output is not None:
        at = {i: round(i * output_ratio) for i in set(joint.idx)}
        want = sorted(set(at.values()))
        decoded = dict(zip(want, (rgb for _, rgb in frames_at(output, want)), strict=True))
        every["output"] = [decoded[at[i]] for i in joint.idx]
        if geometry is not None and geometry.resized:
            every, samples, partners = _on_the_output(geometry, every, samples, partners)
    n = len(samples.idx)
    outputs = {m: frames[:n] for m, frames in every.items()}
    partner_outputs = {m: frames[n:] for m, frames in every.items()} if partners is not None else None
    if output is not None:
        # an odd output side was cut to even for yuv420p: every method is compared on that area
        h, w = outputs["output"][0].shape[:2]
        outputs = {m: [f[:h, :w] for f in frames] for m, frames in outputs.items()}
        if samples.refs is not None:
            samples = dataclasses.replace(samples, refs=[r[:h, :w] for r in samples.refs])
    shown = (max(0, -geometry.offset[0]), max(0, -geometry.offset[1])) if geometry is not None and geometry.resized else (0, 0)
    measured = score(video, samples, outputs, scale, niqe, partner_outputs, shown)
    measured["crops"] = visual.crops(samples.idx, [t for t, _ in samples.src], outputs, samples.refs, crops) if crops else []
    return measured
