"""`make bench` in its smoke size: every stage runs and lands in the JSON and the
Markdown table (the figures themselves are the benchmark's business, not the tests'),
and the GPU section runs where only torch is installed."""

import json
import os
import subprocess
import sys

import pytest

from bench import run
from tests.conftest import ROOT


@pytest.mark.slow
def test_quick_bench_writes_every_stage(tmp_path):
    assert run.main(["--quick", "--no-e2e", "--no-gpu", "--out", str(tmp_path)]) == 0
    (js,) = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    result = json.loads((tmp_path / js).read_text())
    stages = {r["stage"].split(" (")[0].split(",")[0] for r in result["cpu"]["stages"]}
    assert {"decode", "training frames", "fine-tune", "SR model only", "encode", "chunk restore", "assemble", "metrics",
            "EDSR 16x32 + LIIF 3x64 model only"} <= stages
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


def test_gpu_section_runs_in_a_smoke_size_on_the_cpu(tmp_path):
    """The GPU section's code, tiny, on the CPU: a lent GPU's minutes are not spent on a typo."""
    assert run.main(["--gpu-only", "--smoke", "--out", str(tmp_path)]) == 0
    result = json.loads(next(tmp_path.glob("*-gpu-smoke.json")).read_text())
    assert len(result["inference"]) == 4 and all(r["frames_per_s"] > 0 for r in result["inference"])
    assert result["finetune"]["steps_per_s"] > 0 and len(result["actor"]) == 2
    assert result["host"]["measured"] and all(r["cores_per_100_fps"]["x264 medium"] > 0 for r in result["host"]["rows"])
    assert result["tiling"][-1]["before"] > 2 and result["tiling"][-1]["now"] < 1.03
    assert result["roofline"]["gflop_per_frame"] > 900  # EDSR-baseline x4 on 640x360: 914 GFLOP


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"av", "ray", "pyiqa", "yaml", "boto3", "botocore", "scipy", "psutil", "PIL", "pyarrow", "duckdb", "matplotlib"}:
            raise ImportError(f"{name} is not on this machine")
sys.meta_path.insert(0, Block())
sys.argv = ["bench.run", "--gpu-only", "--smoke", "--out", sys.argv[1]]
import runpy
runpy.run_module("bench.run", run_name="__main__")
"""


def test_gpu_only_needs_nothing_but_torch_and_numpy(tmp_path):
    """What a GPU machine with only torch has: PyAV, Ray, pyiqa, PyYAML, boto3, scipy, psutil,
    Pillow and pyarrow refused at import. The section runs, and says the host-side stages
    were not measured."""
    proc = subprocess.run([sys.executable, "-c", BLOCKER, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(tmp_path.glob("*-gpu-smoke.json")).read_text())
    assert result["host"] == {"measured": False, "why": "PyAV is not installed here"}
    assert "Host-side stages: not measured (PyAV is not installed here)" in proc.stdout


def test_evalset_pans_across_the_image_in_whole_pixels(tmp_path):
    """bench.evalset: each frame is the window at its own offset (the nearest crop by far),
    and an image too small for the window is skipped."""
    import av
    import numpy as np

    from bench.evalset import pan_clip
    from pipeline.benchmark import load_rgb
    from tests.conftest import DATA

    image = load_rgb(os.path.join(DATA, "set5", "HR", "baby.png"))[0][:256]  # 512 wide, 256 tall: a horizontal pan
    path = str(tmp_path / "baby_pan.mp4")
    assert pan_clip(image, path, (256, 192), frames=9, fps=25)
    with av.open(path) as c:
        frames = [f.to_ndarray(format="rgb24").astype(np.float64) for f in c.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (192, 256, 3)
    step, y = (512 - 256) // 8, (256 - 192) // 2
    for i in (0, 4, 8):
        errors = [np.mean((frames[i] - image[y:y + 192, x:x + 256]) ** 2) for x in range(0, 257, step)]
        assert int(np.argmin(errors)) == i and errors[i] < 10
    assert not pan_clip(image[:200, :200], str(tmp_path / "small.mp4"), (256, 192), frames=9, fps=25)


def test_the_scales_table_compares_a_continuous_model_with_integer_ones_and_bicubic(tmp_path):
    """Every method at every scale and set, a fractional scale reached by an integer model
    through the next integer scale; the table has a cell per scale."""
    import torch

    from bench import scales
    from pipeline.models import checkpoint
    from pipeline.models.liif import LIIF

    torch.manual_seed(0)
    ckpt = str(tmp_path / "liif.pt")
    checkpoint.save(LIIF(n_resblocks=1, n_feats=8, hidden=8, layers=1), ckpt, {})
    out = tmp_path / "scales.json"
    set5 = os.path.join(os.path.dirname(__file__), "data", "set5")
    assert scales.main(["--model", ckpt, "--integer", "builtin:edsr_2x16", "--data", f"Set5={set5}", "--scales", "2,2.5", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["scale"], r["method"]) for r in rows] == [(2.0, "bicubic"), (2.0, "integer model"), (2.0, "continuous"),
                                                         (2.5, "bicubic"), (2.5, "integer model, then resized"), (2.5, "continuous")]
    by = {(r["scale"], r["method"]): r for r in rows}
    assert by[(2.5, "integer model, then resized")]["via"] == "x3, then bicubic to the size"
    assert by[(2.5, "integer model, then resized")]["psnr_y"] > by[(2.5, "bicubic")]["psnr_y"] + 1  # EDSR 2x16 beats bicubic
    assert abs(by[(2.5, "continuous")]["psnr_y"] - by[(2.5, "bicubic")]["psnr_y"]) < 0.5  # an untrained head is its bicubic start
    md = (tmp_path / "scales.md").read_text()
    assert "| Set5 | integer model | " in md and md.count("\n") == 5
