"""The end-of-run table: one line per video restored or failed, the counts, and where
the outputs are."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from pipeline.metrics import METRICS
from pipeline.run.layout import Layout
from pipeline.run.row import METHODS, VideoRow
from pipeline.storage.uri import join


@dataclass
class Outcome:
    """What a run did: the rows of the videos it restored or failed (skipped videos are
    only counted here; their rows are in the report), and where the results are."""

    rows: list[VideoRow]
    skipped: int
    run_id: str
    layout: Layout
    page: str | None = None  # the run's HTML page


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def niqe_tied(row: Any, a: str, b: str) -> bool:
    """Whether methods ``a`` and ``b`` of a report row are within each other's NIQE
    bootstrap interval (both intervals known and overlapping)."""
    ends = [getattr(row, f"niqe_{m}_{side}") for m in (a, b) for side in ("lo", "hi")]
    return None not in ends and ends[0] <= ends[3] and ends[2] <= ends[1]


def print_summary(outcome: Outcome, file=sys.stdout) -> None:
    rows = outcome.rows
    with_ref = any(r.psnr_bicubic is not None for r in rows)
    with_flicker = any(r.flicker_bicubic is not None for r in rows)
    metrics = [METRICS["niqe"]] + ([METRICS["psnr"]] if with_ref else []) + ([METRICS["flicker"]] if with_flicker else [])
    header = ["video", "status", "frames"] + [f"{m.name.upper()} {k}" for m in metrics for k in METHODS] + ["time s"]
    lines = [header]
    for r in rows:
        frames = f"{_fmt(r.frames_out, 'd')}/{_fmt(r.frames_in, 'd')}"
        lines.append([r.video, r.status, frames] + [_fmt(getattr(r, f"{m.column_prefix}_{k}")) for m in metrics for k in METHODS] + [_fmt(r.total_seconds, ".1f")])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    print("", file=file)
    if rows:
        for i, line in enumerate(lines):
            print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=file)
            if i == 0:
                print("  ".join("-" * w for w in widths), file=file)
        legend = "; ".join(f"{m.name.upper()}: {'lower' if m.lower_is_better else 'higher'} is better" + (f", {m.unit}" if m.unit else "")
                           for m in metrics)
        print(f"({legend}. bicubic/pretrained/finetuned: the methods on the same frames;"
              " output: the restored file, encoding included)", file=file)
    for r in rows:
        if r.status == "restored" and r.frames_damaged:
            print(f"{r.video}: {r.frames_damaged} of {r.frames_in} frames did not decode: each concealed by the nearest decoded frame", file=file)
    for r in rows:
        ties = [f"{a} ~ {b}" for a, b in (("pretrained", "finetuned"), ("bicubic", "output")) if niqe_tied(r, a, b)]
        if ties:
            print(f"{r.video}: NIQE within each other's 90% interval, not ranked: {', '.join(ties)}", file=file)
    failed = [r for r in rows if r.status == "failed"]
    for r in rows:
        if r.error:
            print(f"{r.status}: {r.video}: {r.error}", file=file)
    print(f"\n{len(rows) - len(failed)} restored, {len(failed)} failed, {outcome.skipped} skipped (already restored with this config)", file=file)
    for r in rows:
        if r.output:
            print(f"output:  {r.output}", file=file)
    root = outcome.layout.root
    print(f"videos:  {outcome.layout.videos}", file=file)
    print(f"reports: {join(root, 'reports', 'videos')} and {join(root, 'reports', 'frames')} (run_id={outcome.run_id})", file=file)
    if outcome.page:
        print(f"page:    {outcome.page}", file=file)
    file.flush()
