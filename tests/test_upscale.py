"""A chunk upscaled with decode, model and encode overlapped equals one done in turn."""

import os

import av
import numpy as np
import pytest
import torch

from pipeline import inference
from pipeline.config import InferConfig, MediaConfig
from pipeline.media.chunks import DamagedChunk, plan_chunks
from pipeline.media.probe import probe
from pipeline.models.edsr import EDSR
from pipeline.upscale import upscale_chunk
from tests.conftest import DATA, psnr, thread_names


def _frames(path):
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_overlapped_chunk_equals_the_stages_in_turn(tmp_path):
    clip = os.path.join(DATA, "carphone_gop10.mp4")
    info = probe(clip)
    chunk = plan_chunks(info, 20)[1]
    torch.manual_seed(0)
    model = inference.prepare(EDSR(scale=2, n_resblocks=2, n_feats=16), torch.device("cpu"))
    outs = {}
    for depth in (0, 2):
        path = str(tmp_path / f"d{depth}.mp4")
        n = upscale_chunk(model, 2, info, chunk, path, MediaConfig(preset="veryfast"), InferConfig(batch_size=3), torch.device("cpu"), None, depth)
        assert n == chunk.frames
        outs[depth] = _frames(path)
    assert len(outs[2]) == chunk.frames
    for a, b in zip(outs[0], outs[2], strict=True):
        assert np.array_equal(a, b)


def test_a_chunk_encodes_the_same_whatever_threads_its_actor_has(tmp_path):
    """A chunk redone by another actor (a retry, a resumed run, a video given idle actors'
    threads) must give the same frames: x264's output depends on its thread count, so the
    encoder's is fixed by the config, not the actor's share (8 vs 1 differed before)."""
    clip = os.path.join(DATA, "carphone_gop10.mp4")
    info = probe(clip)
    chunk = plan_chunks(info, 40)[0]
    torch.manual_seed(0)
    model = inference.prepare(EDSR(scale=2, n_resblocks=1, n_feats=8), torch.device("cpu"))
    outs = []
    for threads in (1, 8):
        path = str(tmp_path / f"t{threads}.mp4")
        upscale_chunk(model, 2, info, chunk, path, MediaConfig(preset="veryfast"), InferConfig(), torch.device("cpu"), None,
                      threads=threads)
        outs.append(np.stack(_frames(path)))
    assert outs[0].shape[0] == chunk.frames
    assert np.array_equal(outs[0], outs[1])


def test_a_damaged_chunk_still_fails_with_its_count(tmp_path):
    from tests.corpus import make_corrupt_middle

    src = make_corrupt_middle(str(tmp_path / "corrupt_middle.mp4"))
    info = probe(src)
    model = inference.prepare(EDSR(scale=2, n_resblocks=1, n_feats=8), torch.device("cpu"))
    damaged = []
    for chunk in plan_chunks(info, 10):
        try:
            upscale_chunk(model, 2, info, chunk, str(tmp_path / f"c{chunk.index}.mp4"), MediaConfig(preset="ultrafast"),
                          InferConfig(), torch.device("cpu"), None)
        except DamagedChunk as e:
            damaged.append(e.frames)
    assert sum(damaged) == 3
    assert "reelsr-ahead" not in thread_names() and "reelsr-behind" not in thread_names()


def test_colour_on_the_device_gives_the_same_video(tmp_path):
    """The GPU path (I420 converted where the model ran, deferred copies) rehearsed on the
    CPU: the same frames as the host-side conversion, within a grey level or so."""
    from pipeline.upscale import encoder_for

    path = os.path.join(DATA, "carphone_gop10.mp4")
    info = probe(path)
    chunk = plan_chunks(info, 20)[0]
    torch.manual_seed(0)
    model = EDSR(2, 8, 1.0, 2).eval()
    outs = {}
    for on_device in (False, True):
        p = str(tmp_path / f"{on_device}.mp4")
        n = upscale_chunk(model, 2, info, chunk, p, MediaConfig(preset="veryfast", crf=0), InferConfig(batch_size=3), torch.device("cpu"),
                          None, device_colour=on_device)
        assert n == chunk.frames
        outs[on_device] = _frames(p)
    assert len(outs[True]) == len(outs[False]) == chunk.frames
    assert min(psnr(a, b) for a, b in zip(outs[True], outs[False], strict=True)) > 40
    assert encoder_for(MediaConfig(), torch.device("cpu")) == "libx264"
    with pytest.raises(RuntimeError, match="NVENC cannot be opened"):
        encoder_for(MediaConfig(encoder="nvenc"), torch.device("cpu"))


def test_the_encoder_is_nvenc_only_where_it_opens_and_fits(monkeypatch):
    import pipeline.media.encode as encode
    from pipeline.media.encode import encoder_options
    from pipeline.upscale import encoder_for

    monkeypatch.setattr(encode, "nvenc_available", lambda codec="h264_nvenc": True)
    gpu = torch.device("cuda")
    assert encoder_for(MediaConfig(), gpu, (1440, 2560)) == "h264_nvenc"
    assert encoder_for(MediaConfig(), gpu, (2880, 5120)) == "libx264"  # over H.264 NVENC's 4096 px: x264
    assert encoder_for(MediaConfig(), torch.device("cpu"), (1440, 2560)) == "libx264"
    assert encoder_for(MediaConfig(encoder="x264"), gpu, (1440, 2560)) == "libx264"
    with pytest.raises(RuntimeError, match="up to 4096"):
        encoder_for(MediaConfig(encoder="nvenc"), gpu, (2880, 5120))
    assert encoder_options("h264_nvenc", 0, "medium")["tune"] == "lossless"  # x264's CRF 0 is lossless; NVENC's cq 0 is not
    assert encoder_options("h264_nvenc", 18, "medium")["cq"] == "18" and encoder_options("libx264", 18, "slow", 2)["threads"] == "2"


@pytest.mark.parametrize("on_device", [False, True])
def test_a_ten_bit_source_is_restored_to_ten_bit_unless_asked_for_eight(tmp_path, on_device):
    """The 10-bit corpus clip restored with a real (tiny) EDSR: yuv420p10le output by
    default, whichever side converts the colour; media.bit_depth=8 gives yuv420p. The
    10-bit output's luma is not 8-bit values scaled up (most samples are not multiples
    of 4) and agrees with the 8-bit output within a level or two."""
    from tests import corpus

    clip = corpus.make_ten_bit(str(tmp_path / "ten_bit.mp4"))
    info = probe(clip)
    chunk = plan_chunks(info, 100)[0]
    torch.manual_seed(0)
    model = inference.prepare(EDSR(scale=2, n_resblocks=1, n_feats=8), torch.device("cpu"))
    luma = {}
    for bits in ("source", "8"):
        path = str(tmp_path / f"{bits}.mp4")
        n = upscale_chunk(model, 2, info, chunk, path, MediaConfig(preset="veryfast", crf=0, bit_depth=bits), InferConfig(),
                          torch.device("cpu"), None, device_colour=on_device)
        assert n == info.frames
        with av.open(path) as c:
            assert c.streams.video[0].codec_context.pix_fmt == ("yuv420p10le" if bits == "source" else "yuv420p")
            luma[bits] = np.stack([f.reformat(format="yuv420p10le").to_ndarray()[:2 * info.height] for f in c.decode(video=0)]).astype(int)
    assert np.mean(luma["source"] % 4 != 0) > 0.5 and not np.any(luma["8"] % 4)  # (8-bit samples widen to multiples of 4)
    assert np.mean(np.abs(luma["source"] - luma["8"])) < 3
