"""The metric table drives the report's metric columns and the summary's legend; and
importing the pipeline stays cheap."""

import io
import subprocess
import sys

from pipeline.metrics import METRICS
from pipeline.reports import schema_doc
from pipeline.run.layout import Layout
from pipeline.run.row import METHODS, VideoRow
from pipeline.run.summary import Outcome, print_summary
from tests.conftest import ROOT


def test_every_metric_has_its_report_columns():
    columns = {f["name"] for f in schema_doc("videos")["fields"]}
    for m in METRICS.values():
        for method in METHODS:
            assert f"{m.column_prefix}_{method}" in columns
    assert METRICS["niqe"].lower_is_better and not METRICS["niqe"].needs_reference
    assert all(not METRICS[n].lower_is_better and METRICS[n].needs_reference for n in ("psnr", "ssim"))


def test_summary_legend_comes_from_the_table():
    row = VideoRow(video="a.mp4", source="/in/a.mp4", source_bytes=1, status="restored", frames_in=3, frames_out=3,
                   niqe_bicubic=5.0, psnr_bicubic=30.0, total_seconds=1.0)
    out = io.StringIO()
    print_summary(Outcome([row], 0, "r1", Layout("/out", "x2-abc", "mp4")), out)
    text = out.getvalue()
    assert "NIQE: lower is better" in text and "PSNR: higher is better, dB" in text
    assert "NIQE bicubic" in text and "PSNR bicubic" in text and "1 restored, 0 failed" in text


def test_summary_says_when_niqe_cannot_rank_two_methods():
    row = VideoRow(video="a.mp4", source="/in/a.mp4", source_bytes=1, status="restored", frames_in=3, frames_out=3,
                   niqe_pretrained=5.0, niqe_pretrained_lo=4.8, niqe_pretrained_hi=5.3,
                   niqe_finetuned=5.4, niqe_finetuned_lo=5.2, niqe_finetuned_hi=5.6,
                   niqe_bicubic=6.5, niqe_bicubic_lo=6.3, niqe_bicubic_hi=6.7,
                   niqe_output=5.5, niqe_output_lo=5.3, niqe_output_hi=5.7, total_seconds=1.0)
    out = io.StringIO()
    print_summary(Outcome([row], 0, "r1", Layout("/out", "x2-abc", "mp4")), out)
    assert "a.mp4: NIQE within each other's 90% interval, not ranked: pretrained ~ finetuned\n" in out.getvalue()
    row.niqe_finetuned_lo = 5.31  # apart now
    out = io.StringIO()
    print_summary(Outcome([row], 0, "r1", Layout("/out", "x2-abc", "mp4")), out)
    assert "not ranked" not in out.getvalue()


def test_importing_the_pipeline_is_cheap():
    # Every Ray worker imports pipeline.actors; scipy (~0.3 s) and pyiqa are imported
    # only by the code that uses them.
    code = "import sys, pipeline.actors; print(sorted(m for m in ('scipy', 'pyiqa') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
