"""pipeline.benchmark / jobs.benchmark: the Set5 single-image SR protocol."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.benchmark import main
from pipeline.benchmark import benchmark, format_table
from pipeline.metrics.fullref import psnr_y
from pipeline.metrics.resize import bicubic_resize_uint8
from pipeline.models.weights import builtin
from tests.conftest import ROOT

REPO = Path(ROOT)
SET5 = REPO / "tests" / "data" / "set5"


@pytest.fixture(scope="module")
def bicubic_x2():
    return benchmark("bicubic", str(SET5), 2)


@pytest.mark.parametrize("scale,published", [(2, 33.66), (4, 28.42)])
def test_bicubic_reproduces_published_set5(scale, published, bicubic_x2):
    result = bicubic_x2 if scale == 2 else benchmark("bicubic", str(SET5), scale)
    print(f"Set5 x{scale} bicubic: {result['mean']['psnr_y']:.4f} dB, SSIM {result['mean']['ssim_y']:.4f}")
    assert result["data"] == str(SET5 / "HR")  # the HR/ subfolder is used
    assert [r["image"] for r in result["rows"]] == ["baby", "bird", "butterfly", "head", "woman"]
    assert result["n_images"] == 5 and result["scale"] == scale
    assert result["mean"]["psnr_y"] == pytest.approx(published, abs=0.05)
    assert result["mean"]["psnr_y"] == pytest.approx(np.mean([r["psnr_y"] for r in result["rows"]]))
    assert 0.7 < result["mean"]["ssim_y"] < 1


def test_hr_folder_given_directly(bicubic_x2):
    direct = benchmark("bicubic", str(SET5 / "HR"), 2)
    assert direct["rows"] == bicubic_x2["rows"]


def test_checkpoint_beats_bicubic(bicubic_x2):
    result = benchmark("builtin:edsr_2x16", str(SET5), 2)
    print(f"Set5 x2 edsr_2x16: {result['mean']['psnr_y']:.4f} dB (bicubic {bicubic_x2['mean']['psnr_y']:.4f})")
    assert result["arch"]["scale"] == 2
    assert result["mean"]["psnr_y"] > bicubic_x2["mean"]["psnr_y"] + 1.0
    assert result["mean"]["ssim_y"] > bicubic_x2["mean"]["ssim_y"]
    # A checkpoint given by path works the same.
    by_path = benchmark(builtin("edsr_2x16").path(2), str(SET5 / "HR"), 2)
    assert by_path["mean"] == result["mean"]


def test_greyscale_image(tmp_path):
    grey = np.asarray(Image.open(SET5 / "HR" / "bird.png").convert("L"))[:, :250]  # 288x250, not a multiple of 4
    Image.fromarray(grey).save(tmp_path / "grey.png")
    result = benchmark("bicubic", str(tmp_path), 4)
    (row,) = result["rows"]
    assert row["channel"] == "grey" and (row["height"], row["width"]) == (288, 248)
    # Scored on the grey plane (0..255), not on Y of the repeated channels ([16, 235]):
    # exactly 20 log10(255/219) dB lower, as the papers' scripts do for a 2-D image.
    rgb = np.repeat(grey[:, :248, None], 3, axis=2)
    sr = bicubic_resize_uint8(bicubic_resize_uint8(rgb, (72, 62)), (288, 248))
    assert row["psnr_y"] == pytest.approx(psnr_y(sr, rgb, 4) - 20 * math.log10(255 / 219), abs=1e-9)
    assert 0 < row["ssim_y"] < 1
    assert "scored on the grey plane" in format_table(result)


def test_cli_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "res" / "set5.json"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.benchmark", "--model", "bicubic", "--data", str(SET5), "--scale", "4", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].split()[0] == "mean" and float(lines[-1].split()[1]) == pytest.approx(28.42, abs=0.05)
    assert sum(name in proc.stdout for name in ("baby", "bird", "butterfly", "head", "woman")) == 5
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == 5 and saved["mean"]["psnr_y"] == pytest.approx(float(lines[-1].split()[1]), abs=0.005)


def test_cli_bad_input_exits_2_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.benchmark", "--model", "bicubic", "--data", str(tmp_path / "nope"), "--scale", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "data folder not found" in proc.stderr and "nope" in proc.stderr


def test_cli_bad_inputs_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    x2 = builtin("edsr_2x16").path(2)
    cases = [
        (["--model", "bicubic", "--data", str(empty), "--scale", "2"], "no images"),
        (["--model", "bicubic", "--data", str(SET5), "--scale", "1"], "scale must be > 1"),
        (["--model", x2, "--data", str(SET5), "--scale", "4"], "upscales x2, but the benchmark scale is x4"),
        (["--model", "builtin:edsr_2x16", "--data", str(SET5), "--scale", "5"], "no shipped file for x5"),
        (["--model", str(tmp_path / "missing.pt"), "--data", str(SET5), "--scale", "2"], "not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
    with pytest.raises(SystemExit) as e:  # argparse: not a number
        main(["--model", "bicubic", "--data", str(SET5), "--scale", "two"])
    assert e.value.code == 2


def test_degraded_inputs_are_fixed_and_harder():
    """The degraded benchmarks give every model the same (seeded) inputs, each harder than clean bicubic."""
    from pipeline.benchmark import degraded_lr
    from tests.conftest import bird

    hr = bird()[:96, :96]
    for name in ("blur1.6", "noise5", "x264crf30"):
        a, b = degraded_lr(hr, 4, name, seed=3), degraded_lr(hr, 4, name, seed=3)
        assert a.shape == (24, 24, 3) and a.dtype == np.uint8 and np.array_equal(a, b), name
    assert not np.array_equal(degraded_lr(hr, 4, "noise5", 3), degraded_lr(hr, 4, "noise5", 4))
    clean = benchmark("bicubic", str(SET5), 4)["mean"]["psnr_y"]
    for name in ("blur1.6", "noise5", "x264crf30"):
        got = benchmark("bicubic", str(SET5), 4, degrade=name)
        assert got["degrade"] == name and got["mean"]["psnr_y"] < clean - 0.3, (name, got["mean"], clean)


def test_a_fractional_scale_crops_to_its_numerator_and_reaches_it_by_resizing_an_integer_model():
    """x2.5: images cropped to multiples of 5, inputs exactly 2/5 of them, 3 px crop;
    bicubic and an x3 model (then resized down) both measured; an x2 model cannot."""
    bic = benchmark("bicubic", str(SET5), 2.5)
    assert bic["scale"] == 2.5 and all(r["height"] % 5 == 0 and r["width"] % 5 == 0 for r in bic["rows"])
    x4 = benchmark("bicubic", str(SET5), 4)
    assert x4["mean"]["psnr_y"] + 1.0 < bic["mean"]["psnr_y"] < bicubic_reference_x2()
    via = benchmark("builtin:edsr_2x16", str(SET5), 2.5)
    assert via["via"] == "x3, then bicubic to the size" and via["arch"]["scale"] == 3
    assert via["mean"]["psnr_y"] > bic["mean"]["psnr_y"] + 0.5
    assert "(x3, then bicubic to the size) x2.5" in format_table(via)
    with pytest.raises(ValueError, match="needs a model of a larger integer scale"):
        benchmark(builtin("edsr_2x16").path(2), str(SET5), 2.5)
    with pytest.raises(ValueError, match="denominator of at most 8"):
        benchmark("bicubic", str(SET5), 2.71828)
    with pytest.raises(ValueError, match="bicubic inputs only"):
        benchmark("bicubic", str(SET5), 2.5, degrade="blur1.6")
    assert main(["--model", "bicubic", "--data", str(SET5), "--scale", "0.5"]) == 2


def bicubic_reference_x2() -> float:
    return benchmark("bicubic", str(SET5), 2)["mean"]["psnr_y"]
