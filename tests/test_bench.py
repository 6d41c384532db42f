"""`make bench` in its smoke size: every stage runs and lands in the JSON and the
Markdown table (the figures themselves are the benchmark's business, not the tests')."""

import json
import os

import pytest

from bench import run


@pytest.mark.slow
def test_quick_bench_writes_every_stage(tmp_path):
    assert run.main(["--quick", "--no-e2e", "--no-gpu", "--out", str(tmp_path)]) == 0
    (js,) = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    result = json.loads((tmp_path / js).read_text())
    stages = {r["stage"].split(" (")[0].split(",")[0] for r in result["cpu"]["stages"]}
    assert {"decode", "training frames", "fine-tune", "SR model only", "encode", "chunk restore", "assemble", "metrics"} <= stages
    for r in result["cpu"]["stages"]:
        assert r["count"] > 0 and r["seconds"] > 0 and r["rate"] > 0 and r["peak_rss_mib"] > 100, r
    by = {r["stage"]: r for r in result["cpu"]["stages"]}
    assert by["decode (to RGB)"]["count"] == result["cpu"]["extra"]["clip"]["frames"] == 60
    assert by["chunk restore, stages overlapped"]["count"] == 60
    roof = result["cpu"]["extra"]["roofline"]
    assert 1.0 < roof["gflop_per_frame"] < 1.3  # EDSR 2x16 x2 on 176x144: 1.16 GFLOP by the layer shapes
    assert result["meta"]["commit"] and result["meta"]["cores"] == os.cpu_count()
    md = (tmp_path / js.replace(".json", ".md")).read_text()
    assert "| decode (to RGB) | 60 frames |" in md and "| check | value | target | pass |" in md


def test_gpu_section_code_runs_in_a_smoke_size_on_the_cpu():
    """The GPU section runs only where CUDA is; its code is exercised here on the CPU,
    tiny, so that a lent GPU's minutes are not spent on a typo."""
    import torch

    args = run.parser().parse_args(["--gpu-width", "32", "--gpu-height", "24", "--gpu-frames", "2", "--gpu-batches", "1,2",
                                    "--gpu-train-steps", "2", "--gpu-big", "64x48"])
    out = run.gpu_stages(args, torch.device("cpu"))
    stages = [r["stage"] for r in out["rows"]]
    assert len(stages) == 2 * 2 + 2 and all(r["rate"] > 0 for r in out["rows"])
    assert out["tile_big"] == 512 and out["roofline"]["gflop_per_frame"] > 0
