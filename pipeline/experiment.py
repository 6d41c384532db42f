"""The self-transfer study: a grid of fine-tuning variants measured with the evaluation
protocol (a high-resolution clip degraded to a low-resolution one, restored, compared with
the original).

For each degradation of the grid (``pipeline.evaluate``: bicubic, blur, noise, x264,
MPEG-4 Part 2), each clip and each cut of it to the grid's ``lengths``: the low-resolution
input is made once, and its degradation estimated from it (``pipeline.estimate``, what a
``train.degrade=auto`` fine-tune reproduces); bicubic and the pretrained model are
measured once; then each variant (a set
of config overrides on the base config) takes its training frames from the input,
fine-tunes a copy of the pretrained model in this process (CUDA when there is a GPU), and
is measured on the same sampled frames against the original. Results: one Parquet row per
clip x method (``bicubic``, ``pretrained``, each variant), a Markdown summary, PNG plots,
and side-by-side crops per clip.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from pipeline import inference, reports
from pipeline.config import RestoreConfig, build_config
from pipeline.datasets.frames import drop_near_duplicates, reservoir
from pipeline.datasets.patches import texture_grid
from pipeline.estimate import estimate
from pipeline.evaluate import make_lr_clip, parse_clip_degradation
from pipeline.measure import Samples, bicubic_outputs, frames_at, load_samples, model_outputs, sample_indices, score
from pipeline.media.chunks import iter_training_frames
from pipeline.media.probe import probe
from pipeline.metrics.resize import bicubic_resize_uint8
from pipeline.models import checkpoint
from pipeline.run.driver import load_pretrained
from pipeline.storage import Store
from pipeline.train.finetune import build_start_model, finetune, self_pairs, too_small_for_self_pairs, too_soft_for_self_pairs


@dataclass(frozen=True)
class Grid:
    variants: dict[str, dict[str, Any]]  # name -> {"train.loss": ..., ...}
    lengths: tuple[float, ...]  # extra cuts of each clip, in seconds (the whole clip is always in)
    degradations: tuple[str, ...] = ("bicubic",)  # how the low-resolution clips are made (pipeline.evaluate)

    @classmethod
    def load(cls, path: str) -> Grid:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        if not isinstance(doc, dict) or not isinstance(doc.get("variants"), dict) or not doc["variants"]:
            raise ValueError(f"{path}: needs a 'variants' mapping of name -> overrides (may be empty: {{}})")
        unknown = set(doc) - {"variants", "lengths", "degradations"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)} (known: variants, lengths, degradations)")
        variants = {}
        for name, over in doc["variants"].items():
            if name in ("bicubic", "pretrained"):
                raise ValueError(f"{path}: variant name {name!r} is reserved for the baselines")
            over = over or {}
            if not isinstance(over, dict):
                raise ValueError(f"{path}: variant {name!r} must map config keys to values, got {over!r}")
            other = [k for k in over if not str(k).startswith("train.")]
            if other:
                # the input, the starting model and the sampled frames are the base config's, shared by all variants
                raise ValueError(f"{path}: variant {name!r} may set train.* fields only, got {other}: set the others with --set")
            variants[str(name)] = {str(k): v for k, v in over.items()}
        lengths = tuple(float(x) for x in doc.get("lengths") or ())
        if any(x <= 0 for x in lengths):
            raise ValueError(f"{path}: lengths must be > 0 seconds, got {list(lengths)}")
        degradations = tuple(str(x) for x in doc.get("degradations") or ("bicubic",))
        for name in degradations:
            try:
                parse_clip_degradation(name)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        return cls(variants, lengths, degradations)

    def config(self, base: RestoreConfig, name: str) -> RestoreConfig:
        """The base config with the variant's overrides (validated like --set)."""
        flat: dict[str, Any] = {}
        for section, value in base.to_dict().items():
            if isinstance(value, dict):
                flat.update({f"{section}.{k}": v for k, v in value.items()})
            else:
                flat[section] = value
        flat.update(self.variants[name])
        try:
            return build_config(None, None, None, **flat)
        except ValueError as e:
            raise ValueError(f"variant {name!r}: {e}") from None


def _clips(hr_input: str, lengths: tuple[float, ...]) -> list[tuple[str, str, int | None, float]]:
    """(name, HR path, frames to keep or None, seconds) per clip and cut."""
    entries = [e for e in Store().list_files(hr_input)] if os.path.isdir(hr_input) else [Store().entry(hr_input)]
    out = []
    for e in entries:
        if not e.rel.lower().endswith((".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")):
            continue
        info = probe(e.uri)
        out.append((e.rel, e.uri, None, info.duration))
        for s in lengths:
            n = int(round(s * float(info.rate)))
            if 0 < n < info.frames:
                out.append((f"{e.rel}@{s:g}s", e.uri, n, n / float(info.rate)))
    if not out:
        raise ValueError(f"no videos found under {hr_input}")
    return out


def run_experiment(grid: Grid, base: RestoreConfig, hr_input: str, output: str) -> list[dict[str, Any]]:
    """Run the grid; writes OUT/experiment/results/*.parquet and OUT/experiment/report/;
    returns the result rows."""
    out = os.path.abspath(output)
    lr_root = os.path.join(out, "experiment", "inputs", f"x{base.scale}")
    report_dir = os.path.join(out, "experiment", "report")
    os.makedirs(report_dir, exist_ok=True)
    for name in grid.variants:
        grid.config(base, name)  # every variant is valid before any work
    pretrained = load_pretrained(base, Store())  # checked against the base architecture
    device = inference.pick_device()
    clips = [(d, *c) for d in grid.degradations for c in _clips(hr_input, grid.lengths)]
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    print(f"experiment {run_id}: {len(clips)} clip(s) ({', '.join(grid.degradations)}) x {len(grid.variants)} variant(s), "
          f"x{base.scale}, on {device}", flush=True)
    rows: list[dict[str, Any]] = []
    for degradation, name_, hr, keep, seconds in clips:
        clip = name_ if degradation == "bicubic" else f"{name_}[{degradation}]"
        lr = os.path.join(lr_root, degradation, name_.replace("@", "_") + ("" if name_.endswith(".mp4") else ".mp4"))
        if not os.path.exists(lr):
            make_lr_clip(hr, lr, base.scale, max_frames=keep, degrade=degradation)
        info = probe(lr)
        extracted: dict[tuple, list] = {}  # variants with the same frame choices share one extraction
        # the clip's degradation as a restore estimates it: from the base config's training frames
        est = estimate(lr, _training_frames(extracted, lr, info, base.train), base.scale).to_dict()
        common = {"clip": clip, "clip_seconds": seconds, "clip_frames": info.frames, "lr_width": info.width, "lr_height": info.height,
                  "degradation": degradation, "est_blur_sigma": est["blur_sigma"], "est_noise_sigma": est["noise_sigma"],
                  "est_qp": est["qp"], "est_detail": est["detail"]}
        print(f"[{clip}] estimated: blur sigma {est['blur_sigma']}, noise sigma {est['noise_sigma']}, {est['codec']} "
              f"QP {est['qp']}, {est['bits_per_pixel']} bits/px, detail {est['detail']}", flush=True)
        # the sampled frames are decoded, and the baselines scored, once per clip; variants only add their own outputs
        samples = load_samples(lr, hr, base.scale, info.frames, base.metrics.sample_frames)
        outputs = {"bicubic": bicubic_outputs(samples, base.scale)}
        if pretrained is not None:
            outputs["pretrained"] = _outputs(samples, pretrained, base)
        measured = score(clip, samples, outputs, base.scale, base.metrics.niqe)["summary"]
        base_rows = {}
        for method in ("bicubic", "pretrained"):
            base_rows[method] = _row(common, method, {}, measured, method)
            rows.append(base_rows[method])
        print(f"[{clip}] bicubic PSNR {_f(base_rows['bicubic']['psnr'])}, pretrained {_f(base_rows['pretrained']['psnr'])}", flush=True)
        best = None
        for name in grid.variants:
            cfg = grid.config(base, name)
            t0 = time.perf_counter()
            frames = _training_frames(extracted, lr, info, cfg.train)
            skip = (too_small_for_self_pairs(info.width, info.height, cfg.scale, cfg.train.min_pair_side)
                    or too_soft_for_self_pairs(est["detail"], cfg.train.min_detail)) if pretrained is not None else None
            try:
                if skip:  # as a restore does: nothing is trained, the starting model restores the clip
                    row = _row(common, name, grid.variants[name], measured, "pretrained")
                    row.update(train_frames=len(frames), train_steps=0, train_seconds=0.0, total_seconds=time.perf_counter() - t0,
                               model_used="pretrained", model_reason=skip)
                    blob = None
                    print(f"[{clip}] {name}: not fine-tuned: {skip}", flush=True)
                else:
                    row, blob = _variant(clip, common, name, grid, cfg, pretrained, frames, samples, est, device, t0)
            except Exception as e:  # noqa: BLE001 - a variant that fails is a result too
                row = _row(common, name, grid.variants[name], None, "finetuned")
                row.update(train_frames=len(frames), error=f"{type(e).__name__}: {e}", total_seconds=time.perf_counter() - t0)
                blob = None
            for k in ("psnr", "ssim"):
                row[f"{k}_gain"] = None if row[k] is None or base_rows["pretrained"][k] is None else row[k] - base_rows["pretrained"][k]
            row["niqe_gain"] = None if row["niqe"] is None or base_rows["pretrained"]["niqe"] is None else base_rows["pretrained"]["niqe"] - row["niqe"]
            rows.append(row)
            print(f"[{clip}] {name}: PSNR {_f(row['psnr'])} (gain {_f(row['psnr_gain'], '+.3f')} dB), NIQE {_f(row['niqe'])}, "
                  f"{row['train_frames']} frames, {row['train_steps']} steps, {_f(row['train_seconds'], '.1f')} s"
                  + (f"  FAILED: {row['error']}" if row["error"] else ""), flush=True)
            if blob is not None and (best is None or (row["psnr"] or -1) > best[0]):
                best = (row["psnr"] or -1, name, blob)
        if best is not None:
            try:
                _crops(clip, lr, hr, info.frames, base.scale, pretrained, best[2], best[1], report_dir)
            except Exception as e:  # noqa: BLE001 - the measurements stand without the picture
                print(f"[{clip}] WARNING: no crops: {type(e).__name__}: {e}", flush=True)
        for r in rows:
            r["run_id"] = run_id
        # rewritten after every clip: an interrupted grid keeps what it measured
        reports.write_file(os.path.join(out, "experiment", "results", f"run-{run_id}.parquet"), "experiment", rows)
    write_report(rows, report_dir, base)
    return rows


def _variant(clip, common, name, grid, cfg, pretrained, frames, samples, est, device, t0) -> tuple[dict[str, Any], bytes]:
    """Fine-tune a copy of the starting model on the clip's frames with one variant's
    settings and measure it: (its row, its checkpoint)."""
    arch = {"n_resblocks": cfg.model.n_resblocks, "n_feats": cfg.model.n_feats, "res_scale": cfg.model.res_scale, "scale": cfg.scale}
    model = build_start_model(arch, pretrained, cfg.train.seed)
    best_w: dict[str, Any] = {}
    stats = finetune(model, frames, cfg.train, cfg.scale, device, seed=cfg.train.seed,
                     make_lr=self_pairs(cfg.train.degrade, est), best=best_w)
    blob = checkpoint.to_bytes(model.cpu(), {"variant": name, **stats})
    outs = {"finetuned": _outputs(samples, blob, cfg)}
    if stats.get("model_used") == "pretrained" and "state" in best_w:  # what the fine-tune alone would have given
        model.load_state_dict(best_w["state"])
        outs["best"] = _outputs(samples, checkpoint.to_bytes(model.cpu(), {"variant": name}), cfg)
    m = score(clip, samples, outs, cfg.scale, cfg.metrics.niqe)["summary"]
    row = _row(common, name, grid.variants[name], m, "finetuned")
    row.update(train_frames=int(stats["train_frames"]), train_steps=int(stats["steps"]), train_seconds=stats["seconds"],
               total_seconds=time.perf_counter() - t0, model_used=stats.get("model_used"), model_reason=stats.get("model_reason"),
               holdout_l1_pretrained=stats.get("val_first"), holdout_l1_finetuned=stats.get("val_best"),
               psnr_best=m.get("psnr_best", m.get("psnr_finetuned")))
    if cfg.train.multiscale and not stats["multiscale_used"]:
        print(f"[{clip}] {name}: frames too small to halve for train.multiscale: trained without it", flush=True)
    return row, blob


def _training_frames(cache: dict[tuple, list], lr: str, info, train) -> list:
    """The training frames of the clip ``lr`` for ``train``'s frame choices, extracted once
    per choice (as the restore's extraction task does)."""
    key = (train.frames, train.dedup, train.max_frames, train.seed)
    if key not in cache:
        cache[key] = reservoir(drop_near_duplicates((rgb for _, rgb in iter_training_frames(lr, train.frames, info)), train.dedup),
                               train.max_frames, train.seed)
    return cache[key]


def _f(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _outputs(samples: Samples, blob: bytes, cfg: RestoreConfig) -> list[np.ndarray]:
    return model_outputs(samples, blob, cfg.scale, cfg.infer.precision, cfg.infer.tile, cfg.infer.tile_overlap)


def _row(common: dict[str, Any], method: str, overrides: dict[str, Any], measured: dict[str, Any] | None, key: str) -> dict[str, Any]:
    m = measured or {}
    return {**common, "method": method, "overrides_json": json.dumps(overrides, sort_keys=True),
            "psnr": m.get(f"psnr_{key}"), "ssim": m.get(f"ssim_{key}"), "niqe": m.get(f"niqe_{key}"),
            "psnr_gain": None, "ssim_gain": None, "niqe_gain": None, "train_frames": None, "train_steps": None,
            "train_seconds": None, "total_seconds": None, "model_used": None, "model_reason": None, "holdout_l1_pretrained": None,
            "holdout_l1_finetuned": None, "psnr_best": None, "error": None}


def _crops(clip, lr, hr, total, scale, pretrained, finetuned, variant, report_dir) -> str:
    """bicubic | pretrained | fine-tuned | ground truth, on the most textured 96 px (LR)
    window of the middle sampled frame, enlarged 2x with nearest neighbour for viewing."""
    from PIL import Image, ImageDraw

    three = sample_indices(total, 3)
    i = three[len(three) // 2]
    (_, src), = frames_at(lr, [i])
    (_, ref), = frames_at(hr, [i])
    device = inference.pick_device()
    outs = [bicubic_resize_uint8(src, (src.shape[0] * scale, src.shape[1] * scale))]
    labels = ["bicubic"]
    for blob, label in ((pretrained, "pretrained"), (finetuned, f"fine-tuned ({variant})")):
        if blob is not None:  # no starting model: no "pretrained" panel
            model, _ = checkpoint.load(blob, map_location=device)
            outs.append(inference.upscale_frames(model, src[None], scale, device=device)[0])
            labels.append(label)
    h, w = outs[0].shape[:2]
    outs.append(ref[:h, :w])
    labels.append("ground truth")
    side = min(96 * scale, h, w)
    energy, cols, step = texture_grid(np.ascontiguousarray(ref[:h, :w]), side)
    k = int(np.argmax(energy))
    by, bx = (k // cols) * step, (k % cols) * step
    zoom = 2 if side <= 192 else 1
    tile = side * zoom
    canvas = Image.new("RGB", (len(outs) * (tile + 10) - 10, tile + 22), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (img, label) in enumerate(zip(outs, labels, strict=True)):
        crop = Image.fromarray(np.ascontiguousarray(img[by:by + side, bx:bx + side])).resize((tile, tile), Image.NEAREST)
        canvas.paste(crop, (k * (tile + 10), 22))
        draw.text((k * (tile + 10) + 2, 4), label, fill="black")
    path = os.path.join(report_dir, "crops_" + clip.replace("/", "_").replace("@", "_") + ".png")
    canvas.save(path)
    return path


def write_report(rows: list[dict[str, Any]], report_dir: str, base: RestoreConfig) -> str:
    """summary.md (mean per method over clips), and PNG plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    variants = [m for m in methods if m not in ("bicubic", "pretrained")]

    def mean(method: str, key: str, degradation: str | None = None) -> float | None:
        vals = [r[key] for r in rows if r["method"] == method and r[key] is not None
                and (degradation is None or r["degradation"] == degradation)]
        return float(np.mean(vals)) if vals else None

    lines = [f"# Self-transfer grid: x{base.scale}, EDSR {base.model.n_resblocks}x{base.model.n_feats}, "
             f"start {base.model.pretrained}, {len({r['clip'] for r in rows})} clips", "",
             "Mean over clips. Gains are over the pretrained model (NIQE gain: pretrained minus variant; higher is better).", "",
             "| degradation | method | PSNR dB | SSIM | NIQE | PSNR gain dB | SSIM gain | NIQE gain | train s | kept pretrained | clips failed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in dict.fromkeys(r["degradation"] for r in rows):
        for m in methods:
            mine = [r for r in rows if r["method"] == m and r["degradation"] == d]
            failed = sum(1 for r in mine if r["error"])
            kept = sum(1 for r in mine if r["model_used"] == "pretrained")
            lines.append(f"| {d} | {m} | {_f(mean(m, 'psnr', d))} | {_f(mean(m, 'ssim', d), '.4f')} | {_f(mean(m, 'niqe', d))} | "
                         f"{_f(mean(m, 'psnr_gain', d), '+.3f')} | {_f(mean(m, 'ssim_gain', d), '+.4f')} | "
                         f"{_f(mean(m, 'niqe_gain', d), '+.3f')} | {_f(mean(m, 'train_seconds', d), '.1f')} | "
                         f"{kept if m in variants else '-'} | {failed} |")
    lines += ["", "Per clip (PSNR dB):", "", "| clip | s | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for clip in dict.fromkeys(r["clip"] for r in rows):
        by = {r["method"]: r for r in rows if r["clip"] == clip}
        lines.append(f"| {clip} | {by[methods[0]]['clip_seconds']:.1f} | " + " | ".join(_f(by[m]["psnr"]) if m in by else "-" for m in methods) + " |")
    path = os.path.join(report_dir, "summary.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(variants) + 4), 4))
    for ax, key, title in ((axes[0], "psnr_gain", "PSNR gain over pretrained (dB)"), (axes[1], "niqe", "NIQE (lower is better)")):
        names = variants if key == "psnr_gain" else methods
        vals = [mean(m, key) or 0.0 for m in names]
        errs = [float(np.std([r[key] for r in rows if r["method"] == m and r[key] is not None] or [0])) for m in names]
        ax.bar(range(len(names)), vals, yerr=errs, color="tab:blue", capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "per_variant.png"), dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, x, label in ((axes[0], "clip_seconds", "clip length (s)"), (axes[1], "train_frames", "training frames")):
        colors = plt.get_cmap("tab20").colors
        for k, m in enumerate(variants):
            pts = [(r[x], r["psnr_gain"]) for r in rows if r["method"] == m and r["psnr_gain"] is not None and r[x] is not None]
            if pts:
                ax.scatter(*zip(*pts, strict=True), label=m, s=22, color=colors[k % 20], marker="osD^v<>"[k % 7])
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("PSNR gain over pretrained (dB)")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "gain_vs_length_and_frames.png"), dpi=110)
    plt.close(fig)
    return path
