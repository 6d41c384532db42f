"""A multi-frame model (DUF) restores a video through jobs.restore on a real local Ray
cluster: its chunks, each decoded with a halo of neighbouring GOPs, give exactly the
frames of a one-chunk run (lossless FFV1 output, one frame per forward pass)."""

import numpy as np
import pytest
import torch

from pipeline import inference, reports
from pipeline.media.probe import probe
from pipeline.media.windows import windows
from pipeline.models import build_model, checkpoint
from tests.conftest import DATA, frames_of, run_job
from tests.media.conftest import sequential_decode

pytestmark = pytest.mark.slow  # real Ray, jobs in subprocesses

ARCH = {"name": "duf", "n_layers": 3, "n_feats": 8, "growth": 4, "frames": 7, "scale": 2}
CLIP = f"{DATA}/carphone_gop10.mp4"  # 40 frames, 4 closed GOPs of 10


@pytest.fixture(scope="module")
def duf_checkpoint(tmp_path_factory):
    """A tiny DUF whose weights are perturbed from its bicubic start, so that its output
    depends on the neighbouring frames (the start's filters ignore them)."""
    torch.manual_seed(0)
    model = build_model(ARCH)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    path = str(tmp_path_factory.mktemp("duf") / "duf.pt")
    checkpoint.save(model, path, {"trained_by": "tests (random)"})
    return path


def restore(ckpt: str, out: str, chunk_frames: int, *extra: str):
    args = ["--set", "model.arch=duf", "--set", f"model.pretrained={ckpt}", "--set", "model.n_layers=3", "--set", "model.n_feats=8",
            "--set", "model.growth=4", "--set", f"media.chunk_frames={chunk_frames}", "--set", "media.codec=ffv1",
            "--set", "media.container=mkv", "--set", "infer.batch_size=1", "--set", "metrics.sample_frames=3"]
    return run_job("jobs.restore", "--input", CLIP, "--output", out, "--preset", "tiny", "--scale", "2", "--no-finetune", *args, *extra)


def test_duf_chunks_with_halos_equal_a_one_chunk_run(duf_checkpoint, tmp_path):
    model = inference.prepare(checkpoint.load(duf_checkpoint)[0], torch.device("cpu"))
    info = probe(CLIP)
    frames = [rgb for _, rgb in sequential_decode(CLIP, info.colorspace)]
    window = next(w for i, (_, w) in enumerate(windows(((0, f, True) for f in frames), 3)) if i == 20)
    alone = np.stack([window[3]] * 7)  # the same centre frame without its neighbours
    with_n, without = (inference.upscale_frames(model, w[None], 2, device=torch.device("cpu"))[0].astype(int) for w in (window, alone))
    assert np.abs(with_n - without).mean() > 1.0  # the model uses the neighbours: a halo matters

    proc = restore(duf_checkpoint, str(tmp_path / "chunked"), chunk_frames=10)
    one = restore(duf_checkpoint, str(tmp_path / "one"), 1000, "--set", "metrics.niqe=false", "--set", "metrics.crops=0")
    rows = {name: reports.read_table(str(tmp_path / name), "videos").to_pylist()[0] for name in ("chunked", "one")}
    assert rows["chunked"]["chunks"] == 4 and rows["one"]["chunks"] == 1, proc.stdout
    for row in rows.values():
        assert row["status"] == "restored" and row["model_used"] == "pretrained" and row["frames_out"] == 40, one.stdout
    # the metrics ran the model on the sampled frames' windows (pipeline.measure.windows_at)
    assert rows["chunked"]["niqe_pretrained"] > 0 and rows["chunked"]["flicker_pretrained"] is not None
    outs = {name: frames_of(rows[name]["output"].replace("file://", "")) for name in rows}
    assert len(outs["chunked"]) == len(outs["one"]) == 40
    for k, (a, b) in enumerate(zip(outs["chunked"], outs["one"], strict=True)):
        assert np.array_equal(a, b), f"frame {k} differs between the chunked and the one-chunk run"
    # and the frames are the model's with its neighbours: frame 20 as computed above, compared in luma (FFV1 is
    # lossless, but the output is yuv420p, and this random model's colours change from pixel to pixel)
    luma = lambda rgb: rgb.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    near, far = (np.abs(luma(outs["one"][20]) - luma(x)).mean() for x in (with_n, without))
    assert near < 2.5 and far > 1.8 * near, (near, far)  # measured 1.57 and 3.61
