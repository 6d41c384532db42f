"""A continuous-scale model through jobs.restore and jobs.evaluate on a real local Ray:
a video restored to a target size (padded), and one at x2.5 against its original."""

import numpy as np
import pytest
import torch

from pipeline import reports
from pipeline.media.probe import probe
from pipeline.models import checkpoint
from pipeline.models.liif import LIIF
from tests.conftest import DATA, frames_of, run_job

pytestmark = pytest.mark.slow  # real Ray, jobs in subprocesses

CLIP = f"{DATA}/carphone_gop10.mp4"  # 176x144, 40 frames


@pytest.fixture(scope="module")
def liif_checkpoint(tmp_path_factory):
    """A tiny continuous model whose residual is not zero (its start is exactly bicubic)."""
    torch.manual_seed(0)
    model = LIIF(n_resblocks=1, n_feats=8, hidden=8, layers=1)
    with torch.no_grad():
        model.mlp[-1].weight.normal_(0, 0.02)
    path = str(tmp_path_factory.mktemp("liif") / "liif.pt")
    checkpoint.save(model, path, {"trained_by": "tests (random)"})
    return path


def args(ckpt: str) -> list[str]:
    return ["--preset", "tiny", "--set", "model.arch=liif", "--set", f"model.pretrained={ckpt}", "--set", "model.n_resblocks=1",
            "--set", "model.n_feats=8", "--set", "model.hidden=8", "--set", "model.mlp_layers=1", "--set", "train.steps=4",
            "--set", "media.chunk_frames=20", "--set", "metrics.sample_frames=2", "--set", "metrics.crops=0"]


def test_a_target_size_padded_keeps_every_frame_and_the_aspect(liif_checkpoint, tmp_path):
    out = tmp_path / "out"
    proc = run_job("jobs.restore", "--input", CLIP, "--output", str(out), "--size", "480x270", "--fit", "pad", *args(liif_checkpoint))
    assert "size: x1.875 to 330x270 in a 480x270 frame (pad)" in proc.stdout
    path = next(p for p in out.iterdir() if p.name.startswith("480x270-pad-")) / "carphone_gop10.mp4"
    info = probe(str(path))
    assert (info.width, info.height, info.frames) == (480, 270, 40)
    frame = frames_of(str(path))[20].astype(int)
    assert frame[:, :70].max() < 24 and frame[:, 410:].max() < 24  # the pillarbox bars are black
    assert frame[:, 80:400].mean() > 60  # the picture is between them
    row = reports.read_table(str(out), "videos").to_pylist()[0]
    assert row["status"] == "restored" and row["scale"] == pytest.approx(1.875)
    assert (row["width_out"], row["height_out"]) == (480, 270)
    # measured on the picture: the output (encoded) is close to the model's own frames
    assert abs(row["niqe_output"] - row[f"niqe_{row['model_used']}"]) < 1.5
    bad = run_job("jobs.restore", "--input", CLIP, "--output", str(out), "--size", "480x270", "--scale", "2", "--preset", "any", check=False)
    assert bad.returncode == 2 and "--size decides each video's scale: leave out --scale" in bad.stderr
    far = run_job("jobs.restore", "--input", CLIP, "--output", str(tmp_path / "far"), "--size", "1920x1080", *args(liif_checkpoint), check=False)
    assert far.returncode == 1 and "asks x7.50 of this 176x144 video" in far.stdout


def test_a_fractional_scale_is_measured_against_the_original(liif_checkpoint, tmp_path):
    out = tmp_path / "eval"
    run_job("jobs.evaluate", "--input", f"{DATA}/bbb_320x180.mp4", "--output", str(out), "--scale", "2.5", *args(liif_checkpoint))
    # and the default integer model at x2.5: x3, then resized down
    run_job("jobs.evaluate", "--input", f"{DATA}/bbb_320x180.mp4", "--output", str(out), "--scale", "2.5", "--preset", "tiny",
            "--set", "train.steps=4", "--set", "metrics.sample_frames=2", "--set", "metrics.crops=0")
    rows = reports.read_table(str(out), "videos").to_pylist()
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "restored" and row["scale"] == 2.5 and (row["width"], row["height"]) == (128, 72)
        assert (row["width_out"], row["height_out"]) == (320, 180)
        # the restored file lines up with the original: its PSNR is the in-memory model's, less the encoding
        assert row["psnr_bicubic"] > 25 and abs(row["psnr_output"] - row[f"psnr_{row['model_used']}"]) < 0.5
        assert np.isfinite(row["ssim_output"])
    integer = next(r for r in rows if '"arch": "edsr"' in r["config_json"])
    assert integer["psnr_pretrained"] > integer["psnr_bicubic"] + 0.3  # EDSR 2x16 x3, resized, beats bicubic at x2.5


def test_an_integer_model_restores_at_its_scale_and_is_resized_to_the_size(tmp_path):
    out = tmp_path / "int"
    proc = run_job("jobs.restore", "--input", CLIP, "--output", str(out), "--size", "300x200", "--scale", "2", "--preset", "tiny",
                   "--set", "train.steps=4", "--set", "metrics.sample_frames=2", "--set", "metrics.crops=0")
    assert "size: x1.389 to 244x200" in proc.stdout
    path = next(p for p in out.iterdir() if p.name.startswith("300x200-")) / "carphone_gop10.mp4"
    info = probe(str(path))
    assert (info.width, info.height, info.frames) == (244, 200, 40)
    row = reports.read_table(str(out), "videos").to_pylist()[0]
    assert row["status"] == "restored" and (row["width_out"], row["height_out"]) == (244, 200)
    assert abs(row["niqe_output"] - row[f"niqe_{row['model_used']}"]) < 1.5
    # the x2 model cannot reach 1080 lines from 144: the video fails with the way out
    far = run_job("jobs.restore", "--input", CLIP, "--output", str(tmp_path / "far"), "--size", "1920x1080", "--preset", "tiny", check=False)
    assert far.returncode == 1 and "the x2 model restores at most x2 (then resizes down to the size): give a larger --scale" in far.stdout
