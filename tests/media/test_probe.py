"""Probing real clips (tests/data/SOURCES.md):
bbb_320x180.mp4: 50 frames, 25 fps, GOP 12 with B-frames and open GOPs, AAC audio.
carphone_gop10.mp4: 40 frames, 29.97 fps, closed GOP 10, no audio."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.media.probe import probe
from tests.media.conftest import BBB, CARPHONE, CLIPS


@pytest.mark.parametrize("path", CLIPS)
def test_probe_matches_decode(path):
    info = probe(path)
    with av.open(path) as container:
        frames = list(container.decode(video=0))
        container.seek(0)
        audio_frames = (
            sum(1 for _ in container.decode(audio=0)) if container.streams.audio else 0
        )
    pts = [f.pts for f in frames]
    assert info.frames == len(frames)
    assert (info.width, info.height) == (frames[0].width, frames[0].height)
    assert info.start_pts == min(pts)
    step = Fraction(int(np.median(np.diff(pts)))) * info.time_base
    assert info.rate == 1 / step
    assert info.duration == pytest.approx(float(len(frames) * step), abs=1e-9)
    assert info.has_audio == (audio_frames > 0)
    assert info.keyframe_pts == tuple(f.pts for f in frames if f.key_frame)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"


def test_probe_known_values():
    bbb, car = probe(BBB), probe(CARPHONE)
    assert (bbb.width, bbb.height, bbb.frames, bbb.rate) == (320, 180, 50, 25)
    assert bbb.has_audio and bbb.audio_codec == "aac"
    assert bbb.colorspace == "bt709"  # from the stream's tag
    assert len(bbb.keyframe_pts) == 5
    assert (car.width, car.height, car.frames, car.rate) == (
        176,
        144,
        40,
        Fraction(30000, 1001),
    )
    assert not car.has_audio and car.audio_codec is None
    assert car.colorspace == "bt601"  # untagged SD: ffmpeg's convention
    assert car.keyframe_pts == (0, 10010, 20020, 30030)


def test_bbb_clip_has_open_gop():
    """Some frame after a non-first keyframe (decode order) is shown before it."""
    with av.open(BBB) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    keys = [i for i, p in enumerate(packets) if p.is_keyframe]
    assert len(keys) > 1
    leading = [
        p.pts
        for k in keys[1:]
        for p in packets[k + 1 : k + 4]
        if p.pts < packets[k].pts
    ]
    assert leading


def test_probe_errors(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError, match="garbage.mp4"):
        probe(str(garbage))
    with pytest.raises(ValueError, match="missing.mp4"):
        probe(str(tmp_path / "missing.mp4"))

    # a video stream without packets (and an audio stream with some)
    empty = str(tmp_path / "no_video_packets.mkv")
    with av.open(empty, "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream("pcm_u8", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.full((1, 800), 128, np.uint8), format="u8", layout="mono"
        )
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            out.mux(packet)
    with pytest.raises(ValueError, match="no_video_packets.mkv.*no packets"):
        probe(empty)

    # audio only
    audio_only = str(tmp_path / "audio_only.mkv")
    with av.open(audio_only, "w") as out:
        audio = out.add_stream("pcm_u8", rate=8000, layout="mono")
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            out.mux(packet)
    with pytest.raises(ValueError, match="audio_only.mkv.*no video stream"):
        probe(audio_only)
