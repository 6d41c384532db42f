"""jobs.experiment on a real clip: the grid's rows, the Parquet results, the report."""

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline import reports
from pipeline.config import build_config
from pipeline.experiment import Grid
from tests.conftest import ROOT

CLIP = os.path.join(ROOT, "tests", "data", "carphone_gop10.mp4")


@pytest.mark.slow
def test_grid_runs_and_reports(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("lengths: [0.5]\ndegradations: [bicubic, x264crf30]\nvariants:\n  l1: {}\n  auto: {train.degrade: auto}\n  last1: {train.train_last: 1, train.augment: false}\n  broken: {train.loss: vgg, train.vgg_weights: /nonexistent/vgg19.pth}\n  small: {train.min_pair_side: 40}\n  soft: {train.min_detail: 100}\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "jobs.experiment", "--grid", str(grid), "--input", CLIP, "--output", str(out),
                           "--preset", "tiny", "--set", "train.steps=4", "--set", "metrics.sample_frames=3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # "broken" fails: its VGG weights do not exist
    files = list((out / "experiment" / "results").glob("run-*.parquet"))
    assert len(files) == 1
    assert pq.read_schema(files[0]).remove_metadata() == reports.schema("experiment").remove_metadata()
    rows = pq.read_table(files[0]).to_pylist()
    assert {r["clip"] for r in rows} == {"carphone_gop10.mp4", "carphone_gop10.mp4@0.5s", "carphone_gop10.mp4[x264crf30]",
                                         "carphone_gop10.mp4@0.5s[x264crf30]"}
    assert len(rows) == 4 * 8  # degradations x clips x (bicubic, pretrained, 6 variants)
    by = {(r["clip"], r["method"]): r for r in rows}
    full = "carphone_gop10.mp4"
    assert by[(full, "pretrained")]["psnr"] > by[(full, "bicubic")]["psnr"] + 1  # the shipped base model beats bicubic
    for v in ("l1", "last1", "auto"):
        r = by[(full, v)]
        assert r["error"] is None and r["train_steps"] == 4 and r["train_frames"] >= 1
        assert r["psnr_gain"] == pytest.approx(r["psnr"] - by[(full, "pretrained")]["psnr"])
        # do no harm decided on the held-out self-pairs, both scores kept; the fine-tune's own result measured too
        assert r["model_used"] in ("finetuned", "pretrained") and r["holdout_l1_pretrained"] > 0 and r["holdout_l1_finetuned"] > 0
        assert r["psnr_best"] is not None
        if r["model_used"] == "pretrained":
            assert r["psnr"] == pytest.approx(by[(full, "pretrained")]["psnr"], abs=1e-6)
        assert r["model_reason"].startswith("held-out self-pair L1")
    # 88x72 inputs at x2: self-pairs of 44x36, below the variant's min_pair_side: nothing trained, the starting model's scores
    small = by[(full, "small")]
    assert small["model_used"] == "pretrained" and small["train_steps"] == 0 and "44x36 px, below train.min_pair_side=40" in small["model_reason"]
    assert small["psnr"] == by[(full, "pretrained")]["psnr"] and small["psnr_gain"] == 0
    # frames with less fine detail than the variant's min_detail: nothing trained either
    soft = by[(full, "soft")]
    assert soft["model_used"] == "pretrained" and soft["train_steps"] == 0 and "below train.min_detail=100" in soft["model_reason"]
    assert 0 < soft["est_detail"] < 100 and soft["psnr_gain"] == 0
    # the compressed clip: the estimate reads the stream's quantiser (x264 CRF 30 -> QP ~ 34), the clean one's is lossless
    assert by[("carphone_gop10.mp4[x264crf30]", "l1")]["est_qp"] > 25 and by[(full, "l1")]["est_qp"] < 1
    assert by[("carphone_gop10.mp4[x264crf30]", "bicubic")]["psnr"] < by[(full, "bicubic")]["psnr"] - 0.5
    cut = ("carphone_gop10.mp4@0.5s", "broken")
    assert "vgg_weights not found" in by[cut]["error"] and by[cut]["psnr"] is None
    assert by[("carphone_gop10.mp4@0.5s", "l1")]["clip_frames"] == 15
    report = out / "experiment" / "report"
    for name in ("summary.md", "per_variant.png", "gain_vs_length_and_frames.png", "crops_carphone_gop10.mp4.png"):
        assert (report / name).stat().st_size > 500, name
    assert "| x264crf30 | last1 |" in (report / "summary.md").read_text()


def test_grid_files_are_checked(tmp_path):
    bad = tmp_path / "g.yaml"
    for text, msg in (("{}", "variants"), ("variants: {a: {train.steps: -1}}", "variant 'a'"), ("variants: {bicubic: {}}", "reserved"),
                      ("variants: {a: {}}\nlength: [1]", "unknown keys"), ("variants: {a: {scale: 4}}", "train.. fields only")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=msg):
            g = Grid.load(str(bad))
            for name in g.variants:
                g.config(build_config("tiny"), name)
