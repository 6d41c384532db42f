"""Frame-rate up-conversion on real clips: timestamps, duration, the source frames kept,
inserted frames that follow the motion, and no frame mixing two shots."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.media.fruc import interpolate, output_count, parse_fps
from pipeline.metrics.fullref import psnr_plane

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


def decoded(name: str, size: tuple[int, int] | None = None) -> tuple[list[av.VideoFrame], Fraction]:
    with av.open(os.path.join(DATA, name)) as c:
        s = c.streams.video[0]
        rate = s.average_rate
        frames = [f.reformat(width=size[0], height=size[1], format="yuv420p") if size else f for f in c.decode(s)]
    return frames, rate


def luma(f: av.VideoFrame) -> np.ndarray:
    return f.to_ndarray()[: f.height]


def test_fps_specs_and_refusals():
    ntsc = Fraction(30000, 1001)
    assert parse_fps("2x", ntsc) == Fraction(60000, 1001)
    assert parse_fps("60", Fraction(25)) == 60
    assert parse_fps("59.94", Fraction(25)) == Fraction(60000, 1001)
    assert parse_fps("60000/1001", Fraction(25)) == Fraction(60000, 1001)
    assert parse_fps("2.5x", Fraction(24)) == 60
    with pytest.raises(ValueError, match="not above the source's 29.970"):
        parse_fps("25", ntsc)
    with pytest.raises(ValueError, match="expected a multiple like 2x"):
        parse_fps("fast", ntsc)


def test_doubling_keeps_the_source_frames_and_the_duration_and_follows_the_motion():
    frames, rate = decoded("bbb_320x180.mp4")
    kept, dropped = frames[0::2], frames[1::2]
    out = list(interpolate(kept, rate / 2, rate))
    assert len(out) == 2 * len(kept) == output_count(len(kept), rate / 2, rate)
    assert [f.pts for f in out] == list(range(len(out))) and out[0].time_base == 1 / rate
    for i, f in enumerate(kept):  # the source frames come through untouched
        assert np.array_equal(luma(out[2 * i]), luma(f))
    assert np.array_equal(luma(out[-1]), luma(kept[-1]))  # the last display interval repeats the last frame
    mci, blend = [], []
    for k in range(len(dropped) - 1):  # inserted frame 2k+1 against the dropped original
        a, b = luma(kept[k]).astype(np.uint16), luma(kept[k + 1])
        mci.append(psnr_plane(luma(out[2 * k + 1]), luma(dropped[k])))
        blend.append(psnr_plane(((a + b + 1) // 2).astype(np.uint8), luma(dropped[k])))
    print(f"inserted frames: {np.mean(mci):.2f} dB, blending: {np.mean(blend):.2f} dB")
    assert np.mean(mci) > np.mean(blend) + 0.2, (np.mean(mci), np.mean(blend))


def test_a_rate_that_is_not_a_multiple():
    frames, _ = decoded("carphone_gop10.mp4")
    frames = frames[:10]
    out = list(interpolate(frames, Fraction(25), Fraction(60)))
    assert len(out) == 24  # 10 frames of 1/25 s fill 0.4 s: 24 frames of 1/60 s
    for j, i in ((0, 0), (12, 5)):  # where the two rates' times coincide, the source frame
        assert np.array_equal(luma(out[j]), luma(frames[i]))


def test_no_frame_mixes_two_shots():
    a, rate = decoded("carphone_gop10.mp4")
    b, _ = decoded("bbb_320x180.mp4", size=(176, 144))
    shots = a[:6] + b[:6]
    out = list(interpolate(shots, rate, 2 * rate))
    assert len(out) == 24
    assert np.array_equal(luma(out[11]), luma(a[5]))  # half-way between the shots: the last frame before the cut
    assert np.array_equal(luma(out[12]), luma(b[0]))
    for j, (p, q) in ((9, (a[4], a[5])), (21, (b[4], b[5]))):  # a shot's last interval is interpolated too, not held
        assert max(psnr_plane(luma(out[j]), luma(p)), psnr_plane(luma(out[j]), luma(q))) < 50
    for j in range(12):  # every output of the first shot is closer to it than to the second
        assert psnr_plane(luma(out[j]), luma(a[j // 2])) > psnr_plane(luma(out[j]), luma(b[0])) + 3


def test_high_bit_depth_frames_are_refused():
    f = av.VideoFrame(64, 48, "yuv420p10le")
    with pytest.raises(ValueError, match="8-bit planar YUV"):
        list(interpolate([f, f], Fraction(25), Fraction(50)))


def test_retimed_frames_start_where_the_source_did(tmp_path):
    """A source whose first frame is at 0.12 s (an encoder delay, an edit): the new frames
    are at 0.12 s + j/50, so sound recorded against the source stays in sync."""
    from pipeline.media.encode import ChunkWriter
    from pipeline.media.fruc import retime

    frames, _ = decoded("carphone_gop10.mp4")
    chunk = str(tmp_path / "chunk.mp4")
    with ChunkWriter(chunk, width=176, height=144, time_base=Fraction(1, 25), rate=Fraction(25), colorspace="bt601", crf=12) as w:
        for i, f in enumerate(frames[:10]):
            w.write(3 + i, f.to_ndarray(format="rgb24"))
    out = str(tmp_path / "retimed.mp4")
    n = retime([chunk], out, Fraction(25), Fraction(50), colorspace="bt601", crf=12, preset="ultrafast", codec="libx264",
               threads=1, sar=Fraction(1), start=Fraction(3, 25))
    with av.open(out) as c:
        s = c.streams.video[0]
        times = [f.pts * s.time_base for f in c.decode(s)]
    assert n == len(times) == 20
    assert times == [Fraction(3, 25) + Fraction(j, 50) for j in range(20)]
