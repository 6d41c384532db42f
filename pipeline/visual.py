"""What a restoration looks like: before/after crops of sampled frames, and one HTML page
per run.

Crops are cut at full output resolution (no rescaling) from the frames the metrics stage
already has in memory: the source frame upscaled by bicubic interpolation, the starting
model's output, the restored file's frame (encoding included) and, when a reference video
is given, the reference. The window is the ``CROP`` x ``CROP`` square with the most detail
(luma gradient energy of the restored frame), so flat sky is not what a reader is shown.
The page embeds its pictures (data URIs), so it stays whole when copied or downloaded, up
to ``EMBED_BYTES`` of them; the pictures of a larger run are linked (their PNG files, like
the restored videos, by links relative to the page).
"""

from __future__ import annotations

import base64
import html
import io
import posixpath
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

CROP = 256  # side of a crop, in output pixels
CROPS_PER_VIDEO = 3
LABELS = {"bicubic": "bicubic", "pretrained": "pretrained", "finetuned": "fine-tuned", "output": "restored", "reference": "ground truth"}
_GAP, _BAR = 6, 22  # px between panels; height of the label bar
EMBED_BYTES = 32 << 20  # pictures embedded in a run's page, at most; beyond, linked


def detail_box(rgb: np.ndarray, size: int = CROP, step: int = 8) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the ``size`` square (the frame, where smaller) whose
    luma gradient energy is largest, on a ``step``-pixel grid."""
    h, w = rgb.shape[:2]
    ch, cw = min(size, h), min(size, w)
    y = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    energy = np.zeros((h, w))
    energy[:, 1:] += np.abs(np.diff(y, axis=1))
    energy[1:, :] += np.abs(np.diff(y, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    tops, lefts = np.arange(0, h - ch + 1, step), np.arange(0, w - cw + 1, step)
    t, lf = tops[:, None], lefts[None, :]
    sums = integral[t + ch, lf + cw] - integral[t, lf + cw] - integral[t + ch, lf] + integral[t, lf]  # every window at once
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)  # (the first of equal sums, as the scan in row order)
    return int(tops[i]), int(lefts[j]), ch, cw


def comparison_png(panels: Sequence[tuple[str, np.ndarray]], box: tuple[int, int, int, int]) -> bytes:
    """The ``box`` of each (label, uint8 RGB frame) side by side, each under its label, as
    PNG; its text chunk ``panels`` says where each panel is ("label:x:width", comma-separated)."""
    top, left, h, w = box
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (len(panels) * w + (len(panels) - 1) * _GAP, h + _BAR), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, (label, rgb) in enumerate(panels):
        x = i * (w + _GAP)
        crop = np.ascontiguousarray(rgb[top:top + h, left:left + w, :3])
        if crop.shape[:2] != (h, w):
            raise ValueError(f"{label}: frame {rgb.shape[1]}x{rgb.shape[0]} does not hold the crop {w}x{h} at ({left}, {top})")
        sheet.paste(Image.fromarray(crop), (x, _BAR))
        draw.text((x + 4, 4), label, fill=(235, 235, 235), font=font)
    info = PngImagePlugin.PngInfo()
    info.add_text("panels", ",".join(f"{label}:{i * (w + _GAP)}:{w}" for i, (label, _) in enumerate(panels)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True, pnginfo=info)
    return buf.getvalue()


def panel(png: bytes, label: str) -> bytes:
    """The picture of one panel (by its label) of a ``comparison_png`` sheet, as PNG; KeyError if it has none."""
    sheet = Image.open(io.BytesIO(png))
    spans = {name: (int(x), int(w)) for name, x, w in (p.rsplit(":", 2) for p in sheet.text.get("panels", "").split(",") if p)}
    x, w = spans[label]
    out = io.BytesIO()
    sheet.crop((x, _BAR, x + w, sheet.height)).save(out, format="PNG")
    return out.getvalue()


def crops(idx: Sequence[int], times: Sequence[float], outputs: dict[str, list[np.ndarray]], refs: list[np.ndarray] | None,
          count: int = CROPS_PER_VIDEO, size: int = CROP) -> list[dict[str, Any]]:
    """Comparison PNGs of ``count`` of the sampled frames (evenly spaced among them):
    [{"frame_index", "time_s", "box": (top, left, h, w), "png"}]. ``outputs``: method ->
    frames as ``pipeline.measure`` has them; the panels are bicubic, pretrained, the
    restored file ("output") and the reference, where each exists."""
    if not idx or count <= 0:
        return []
    picks = sorted({int(round(p)) for p in np.linspace(0, len(idx) - 1, min(count, len(idx)))})
    shown = [m for m in ("bicubic", "pretrained", "output") if m in outputs]
    result = []
    for j in picks:
        panels = [(LABELS[m], outputs[m][j]) for m in shown]
        if refs is not None:
            panels.append((LABELS["reference"], refs[j]))
        h = min(p.shape[0] for _, p in panels)
        w = min(p.shape[1] for _, p in panels)
        panels = [(label, p[:h, :w]) for label, p in panels]
        box = detail_box(panels[-2 if refs is not None else -1][1], size)  # the restored frame's detail
        result.append({"frame_index": int(idx[j]), "time_s": float(times[j]), "box": box, "png": comparison_png(panels, box)})
    return result


# ---------------------------------------------------------------------------- the run's page


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def _relative(target: str, page: str) -> str:
    """A link from the page at ``page`` to ``target`` (both under one root: paths or s3:// URIs)."""
    def key(uri: str) -> str:
        return uri.split("://", 1)[1] if "://" in uri else uri
    return posixpath.relpath(key(target), posixpath.dirname(key(page)))


def _metrics_table(row: dict[str, Any]) -> str:
    methods = ("bicubic", "pretrained", "finetuned", "output")
    metrics = [("NIQE ↓", "niqe", ".2f"), ("PSNR dB ↑", "psnr", ".2f"), ("SSIM ↑", "ssim", ".4f"), ("Flicker ↓", "flicker", ".2f"),
               ("Temporal error ↓", "terr", ".2f")]
    present = [(name, key, spec) for name, key, spec in metrics if any(row.get(f"{key}_{m}") is not None for m in methods)]
    if not present:
        return ""
    head = "".join(f"<th>{LABELS[m]}</th>" for m in methods)
    body = ""
    for name, key, spec in present:
        cells = ""
        for m in methods:
            v = row.get(f"{key}_{m}")
            lo, hi = row.get(f"{key}_{m}_lo"), row.get(f"{key}_{m}_hi")
            interval = f"<small> [{_fmt(lo)}, {_fmt(hi)}]</small>" if lo is not None and hi is not None else ""
            cells += f"<td>{_fmt(v, spec)}{interval}</td>"
        body += f"<tr><th>{name}</th>{cells}</tr>"
    return f"<table class=m><tr><th></th>{head}</tr>{body}</table>"


def run_page(run_id: str, page_uri: str, rows: list[dict[str, Any]], pictures: dict[str, list[dict[str, Any]]],
             skipped: int = 0, skipped_names: Sequence[str] = ()) -> str:
    """The HTML page of a run: each restored or failed video's status, facts, metrics and
    crops, and a link to its restored file; then the videos skipped (restored earlier with
    the same config: ``skipped`` of them, the first ``skipped_names`` named). ``rows``:
    videos report rows; ``pictures``: video -> ``crops`` items."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("restored", "failed")}
    counts["skipped"] = skipped
    embed = sum(len(p["png"]) for pics in pictures.values() for p in pics) <= EMBED_BYTES
    parts = [f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<title>reelsr run {html.escape(run_id)}</title>
<style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}}
h2{{margin:28px 0 4px;font-size:17px}} .restored{{color:#176c2e}} .failed{{color:#b00020}} .skipped{{color:#666}}
table.m{{border-collapse:collapse;margin:8px 0}} table.m td,table.m th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
figure{{margin:10px 0}} figure img{{max-width:100%;image-rendering:pixelated;border:1px solid #888}}
figcaption{{color:#555;font-size:12px}} .facts{{color:#444}}
</style></head><body>
<h1>reelsr run {html.escape(run_id)}</h1>
<p>{counts['restored']} restored, {counts['failed']} failed, {counts['skipped']} skipped (restored earlier with this config).
Crops are at full output resolution: bicubic | pretrained | restored{' | ground truth' if any(r.get('psnr_output') is not None for r in rows) else ''}.</p>"""]
    for row in rows:
        video, status = row["video"], row["status"]
        parts.append(f"<h2>{html.escape(video)} <span class={status}>{status}</span></h2>")
        facts = []
        if row.get("width"):
            facts.append(f"{row['width']}×{row['height']} → ×{row['scale']}")
        if row.get("frames_in") is not None:
            facts.append(f"{_fmt(row.get('frames_out'), 'd')}/{row['frames_in']} frames")
        if row.get("frames_damaged"):
            facts.append(f"{row['frames_damaged']} damaged frames concealed")
        if row.get("model_used"):
            facts.append(f"model used: {row['model_used']}")
        if row.get("total_seconds"):
            facts.append(f"{row['total_seconds']:.1f} s")
        if facts:
            parts.append(f"<p class=facts>{html.escape(' · '.join(facts))}</p>")
        if row.get("error"):
            parts.append(f"<p class=failed>{html.escape(row['error'])}</p>")
        if row.get("output"):
            parts.append(f'<p><a href="{html.escape(_relative(row["output"], page_uri))}">{html.escape(row["output"])}</a>'
                         + (f" (restored by run {html.escape(row['restored_run_id'])})" if row.get("restored_run_id") else "") + "</p>")
        parts.append(_metrics_table(row))
        for pic in pictures.get(video, []):
            src = f"data:image/png;base64,{base64.b64encode(pic['png']).decode()}" if embed or "uri" not in pic else html.escape(_relative(pic["uri"], page_uri))
            top, left, h, w = pic["box"]
            parts.append(f'<figure><img alt="{html.escape(video)} frame {pic["frame_index"]}" src="{src}">'
                         f"<figcaption>frame {pic['frame_index']} ({pic['time_s']:.2f} s), {w}×{h} px at ({left}, {top})</figcaption></figure>")
    if skipped:
        more = f" and {skipped - len(skipped_names)} more" if skipped > len(skipped_names) else ""
        parts.append(f"<h2 class=skipped>{skipped} skipped</h2><p class=skipped>{html.escape(', '.join(skipped_names))}{more}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
