"""A multi-frame model (DUF) fine-tunes on a video's windows and restores it through
jobs.restore on a real local Ray cluster: its chunks, each decoded with a halo of
neighbouring GOPs, give exactly the frames of a one-chunk run with the same fine-tuned
weights (lossless FFV1 output, one frame per forward pass, one actor: DUF's convolutions
sum in another order with another thread count, which moves some output pixels by one
level, so the two runs must compute with the same threads)."""

import numpy as np
import pytest
import torch

from pipeline import inference, reports
from pipeline.media.chunks import from_rgb, to_rgb
from pipeline.media.probe import probe
from pipeline.media.windows import windows
from pipeline.models import build_model, checkpoint
from tests.conftest import DATA, frames_of, run_job
from tests.media.conftest import sequential_decode

pytestmark = pytest.mark.slow  # real Ray, jobs in subprocesses

ARCH = {"name": "duf", "n_layers": 2, "n_feats": 8, "growth": 4, "frames": 3, "scale": 2}  # (3 frames: a third of 7's time)
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
    args = ["--set", "model.arch=duf", "--set", f"model.pretrained={ckpt}", "--set", "model.n_layers=2", "--set", "model.frames=3", "--set", "model.n_feats=8",
            "--set", "model.growth=4", "--set", f"media.chunk_frames={chunk_frames}", "--set", "media.codec=ffv1",
            "--set", "media.container=mkv", "--set", "infer.batch_size=1", "--set", "infer.actors=1", "--set", "metrics.sample_frames=2", "--set", "metrics.temporal_pairs=1"]
    return run_job("jobs.restore", "--input", CLIP, "--output", out, "--preset", "tiny", "--scale", "2", "--set", "train.steps=6", *args, *extra)


def test_duf_chunks_with_halos_equal_a_one_chunk_run(duf_checkpoint, tmp_path):
    model = inference.prepare(checkpoint.load(duf_checkpoint)[0], torch.device("cpu"))
    info = probe(CLIP)
    frames = [rgb for _, rgb in sequential_decode(CLIP, info.colorspace)]
    window = next(w for i, (_, w) in enumerate(windows(((0, f, True) for f in frames), 1)) if i == 20)
    alone = np.stack([window[1]] * 3)  # the same centre frame without its neighbours
    with_n, without = (inference.upscale_frames(model, w[None], 2, device=torch.device("cpu"))[0].astype(int) for w in (window, alone))
    assert np.abs(with_n - without).mean() > 1.0  # the model uses the neighbours: a halo matters

    out = str(tmp_path / "out")
    proc = restore(duf_checkpoint, out, chunk_frames=10)  # fine-tuned on the clip's windows, then 4 chunks
    # the same fine-tuned checkpoint (its name hashes the model and train settings only), one chunk
    one = restore(duf_checkpoint, out, 1000, "--set", "metrics.niqe=false", "--set", "metrics.crops=0")
    rows = {("chunked" if r["chunks"] == 4 else "one"): r for r in reports.read_table(out, "videos").to_pylist()}
    assert set(rows) == {"chunked", "one"}, proc.stdout
    assert "train: 6 windows of 3 frames (fps:4), 6 steps, DUF 2x8 growth 4, 3 frames" in proc.stdout  # 4 per second of 1.3 s
    assert rows["chunked"]["train_steps"] == 6 and rows["chunked"]["model_reason"], proc.stdout
    assert "train: reusing fine-tuned checkpoint" in one.stdout
    for row in rows.values():
        assert row["status"] == "restored" and row["frames_out"] == 40, one.stdout
    # the metrics ran the model on the sampled frames' windows (pipeline.measure.windows_at)
    assert rows["chunked"]["niqe_pretrained"] > 0 and rows["chunked"]["flicker_pretrained"] is not None
    outs = {name: frames_of(rows[name]["output"].replace("file://", "")) for name in rows}
    assert len(outs["chunked"]) == len(outs["one"]) == 40
    for k, (a, b) in enumerate(zip(outs["chunked"], outs["one"], strict=True)):
        assert np.array_equal(a, b), f"frame {k} differs between the chunked and the one-chunk run"
    # and the frames are the model's with its neighbours: frame 20 as the model computes it, through the writer's
    # conversion to yuv420p and back (FFV1 itself is lossless)
    if rows["one"]["model_used"] == "finetuned":
        model = inference.prepare(checkpoint.load(rows["one"]["checkpoint"].replace("file://", ""))[0], torch.device("cpu"))
    written = sequential_decode(rows["one"]["output"].replace("file://", ""), info.colorspace)[20][1].astype(int)
    near, far = (np.abs(written - to_rgb(from_rgb(inference.upscale_frames(model, w[None], 2, device=torch.device("cpu"))[0], info.colorspace),
                                          info.colorspace)).mean() for w in (window, alone))
    assert near < 0.05 and far > 1.0, (near, far)
