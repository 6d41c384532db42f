"""Tests of pipeline.media on the small real clips in tests/data (see SOURCES.md).

bbb_320x180.mp4: 50 frames, 25 fps, GOP 12 with B-frames and open GOPs, AAC audio.
carphone_gop10.mp4: 40 frames, 29.97 fps, closed GOP 10, no audio.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.config import MediaConfig
from pipeline.media.chunks import (
    DamagedChunk,
    decode_chunk,
    from_rgb,
    iter_training_frames,
    plan_chunks,
    to_rgb,
)
from pipeline.media.encode import ChunkWriter, assemble
from pipeline.media.probe import probe

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
BBB = os.path.join(DATA, "bbb_320x180.mp4")
CARPHONE = os.path.join(DATA, "carphone_gop10.mp4")
CLIPS = [BBB, CARPHONE]


def _sequential_decode(path: str, colorspace: str) -> list[tuple[int, np.ndarray]]:
    """(pts, rgb uint8 HxWx3) for every frame, plain decode from the start."""
    with av.open(path) as container:
        return [(f.pts, to_rgb(f, colorspace)) for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def reference():
    """clip path -> (VideoInfo, sequentially decoded frames)."""
    out = {}
    for path in CLIPS:
        info = probe(path)
        out[path] = (info, _sequential_decode(path, info.colorspace))
    return out


def _audio_span(path: str) -> Fraction | None:
    """Seconds from the first audio packet's pts to the end of the last one."""
    with av.open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.size]
    start = min(p.pts for p in packets)
    end = max(p.pts + p.duration for p in packets)
    return (end - start) * stream.time_base


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of the same shape (peak 255)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


# --- probe -----------------------------------------------------------------


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


# --- chunks ----------------------------------------------------------------


@pytest.mark.parametrize("path", CLIPS)
@pytest.mark.parametrize("min_frames", [1, 12, 20])
def test_plan_chunks_gop_aligned(path, min_frames):
    info = probe(path)
    chunks = plan_chunks(info, min_frames)
    assert len(chunks) >= 2
    assert sum(c.frames for c in chunks) == info.frames
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start_pts is None and chunks[-1].end_pts is None
    assert chunks[0].seek_pts == info.keyframe_pts[0]
    for prev, nxt in itertools.pairwise(chunks):
        assert prev.end_pts == nxt.start_pts
        assert nxt.start_pts in info.keyframe_pts
        assert nxt.seek_pts == nxt.start_pts
    assert all(c.frames >= min_frames for c in chunks[:-1])


def test_plan_chunks_counts():
    assert [c.frames for c in plan_chunks(probe(BBB), 1)] == [12, 12, 12, 12, 2]
    assert [c.frames for c in plan_chunks(probe(BBB), 20)] == [24, 24, 2]
    assert [c.frames for c in plan_chunks(probe(CARPHONE), 15)] == [20, 20]
    assert len(plan_chunks(probe(CARPHONE), 1000)) == 1
    with pytest.raises(ValueError):
        plan_chunks(probe(CARPHONE), 0)


@pytest.mark.parametrize("path", CLIPS)
@pytest.mark.parametrize("min_frames", [1, 20, 30, 1000])
def test_decode_chunks_equal_sequential_decode(reference, path, min_frames):
    info, expected = reference[path]
    got = []
    for chunk in plan_chunks(info, min_frames):
        frames = list(decode_chunk(path, chunk, info))
        assert len(frames) == chunk.frames
        got.extend(frames)
    assert [p for p, _ in got] == [p for p, _ in expected]
    for (pts, a), (_, b) in zip(got, expected, strict=True):
        assert a.dtype == np.uint8 and a.shape == (info.height, info.width, 3)
        assert np.array_equal(a, b), f"pixels differ at pts {pts}"


def test_decode_chunk_open_gop_leading_frames(reference):
    """The frames shown just before keyframe 2 are decoded after it, yet belong to chunk 1."""
    info, _ = reference[BBB]
    chunk = plan_chunks(info, 12)[1]
    pts = [p for p, _ in decode_chunk(BBB, chunk, info)]
    assert pts[0] == chunk.start_pts and pts[-1] == chunk.end_pts - 512
    assert len(pts) == 12


def test_decode_chunk_drops_frames_before_start(reference):
    """Seeking to an earlier keyframe than the chunk's start still yields exactly its frames."""
    info, expected = reference[BBB]
    chunk = plan_chunks(info, 12)[2]
    early = dataclasses.replace(chunk, seek_pts=info.keyframe_pts[1])
    got = list(decode_chunk(BBB, early, info))
    want = [(p, rgb) for p, rgb in expected if chunk.start_pts <= p < chunk.end_pts]
    assert [p for p, _ in got] == [p for p, _ in want]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))


def test_decode_chunk_raises_on_count_mismatch(reference):
    info, _ = reference[CARPHONE]
    chunk = plan_chunks(info, 10)[1]
    with pytest.raises(DamagedChunk, match="1 of 11 frames could not be decoded"):
        list(decode_chunk(CARPHONE, dataclasses.replace(chunk, frames=11), info))


# --- training frames --------------------------------------------------------


@pytest.mark.parametrize("path", CLIPS)
def test_iter_training_frames(reference, path):
    info, expected = reference[path]
    seconds = [float((p - info.start_pts) * info.time_base) for p, _ in expected]

    iframes = list(iter_training_frames(path, "iframes"))
    assert len(iframes) == len(info.keyframe_pts)
    assert [t for t, _ in iframes] == [
        float((k - info.start_pts) * info.time_base) for k in info.keyframe_pts
    ]
    by_time = dict(zip(seconds, (rgb for _, rgb in expected), strict=True))
    assert all(np.array_equal(rgb, by_time[t]) for t, rgb in iframes)

    everything = list(iter_training_frames(path, "all"))
    assert len(everything) == info.frames
    assert [t for t, _ in everything] == seconds

    for n in (5, 3, 2.5):
        # the first frame at or after each multiple of 1/n s, each at most once
        multiples = [k / Fraction(n) for k in range(int(seconds[-1] * n) + 1)]
        expect = sorted({min(t for t in seconds if t >= m - 1e-9) for m in multiples})
        got = [t for t, _ in iter_training_frames(path, f"fps:{n}")]
        assert got == pytest.approx(expect)


def test_training_frame_counts():
    assert len(list(iter_training_frames(BBB, "fps:5"))) == 10  # 2.0 s at 5/s
    assert len(list(iter_training_frames(CARPHONE, "fps:3"))) == 4  # 1.33 s at 3/s


@pytest.mark.parametrize(
    "policy", ["keyframes", "fps:0", "fps:-2", "fps:abc", "fps:", "fps:nan", ""]
)
def test_training_frames_bad_policy(policy):
    with pytest.raises(ValueError, match=repr(policy).replace("[", r"\[")):
        next(iter_training_frames(CARPHONE, policy))


# --- encode / assemble -----------------------------------------------------


def _restore(
    path: str, info, tmp_path, *, scale: int = 1, crf: int = MediaConfig().crf, min_frames: int = 10
):
    """Decode every chunk, "upscale" by pixel repetition, encode, assemble; return
    (output path, source frames, chunk count)."""
    chunk_paths, source_frames = [], []
    chunks = plan_chunks(info, min_frames)
    for chunk in chunks:
        chunk_path = str(tmp_path / f"chunk{chunk.index:03d}.mp4")
        with ChunkWriter(
            chunk_path,
            width=info.width * scale,
            height=info.height * scale,
            time_base=info.time_base,
            rate=info.rate,
            colorspace=info.colorspace,
            crf=crf,
        ) as writer:
            for pts, rgb in decode_chunk(path, chunk, info):
                source_frames.append((pts, rgb))
                writer.write(
                    pts, np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
                )
        chunk_paths.append(chunk_path)
    out_path = str(tmp_path / "restored.mp4")
    assemble(chunk_paths, path, out_path)
    return out_path, source_frames, len(chunks)


@pytest.mark.parametrize("path", CLIPS)
def test_round_trip_identity(reference, path, tmp_path):
    info, _ = reference[path]
    out_path, source_frames, n_chunks = _restore(path, info, tmp_path)
    assert n_chunks >= 3
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"chunk{i:03d}.mp4" for i in range(n_chunks)] + ["restored.mp4"]
    )  # no temporary file left behind

    out = probe(out_path)
    assert out.frames == info.frames
    assert (out.width, out.height) == (info.width, info.height)
    assert out.colorspace == info.colorspace
    assert abs(out.duration - info.duration) <= float(1 / info.rate)

    with av.open(out_path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        assert (
            ctx.colorspace
            == ctx.color_primaries
            == ctx.color_trc
            == (1 if info.colorspace == "bt709" else 6)
        )
        assert ctx.color_range == 1  # limited
        packets = [p for p in container.demux(stream) if p.size]
        dts = [p.dts for p in packets]
        assert dts == sorted(set(dts))  # strictly increasing
        container.seek(0)
        decoded = [
            (f.pts * stream.time_base, to_rgb(f, out.colorspace))
            for f in container.decode(stream)
        ]

    assert len(decoded) == len(source_frames)
    assert [t for t, _ in decoded] == [p * info.time_base for p, _ in source_frames]
    psnr = [_psnr(a, b) for (_, a), (_, b) in zip(decoded, source_frames, strict=True)]
    print(
        f"{os.path.basename(path)}: {n_chunks} chunks, mean PSNR {np.mean(psnr):.2f} dB, min {np.min(psnr):.2f} dB"
    )
    assert np.mean(psnr) >= 40.0

    assert out.has_audio == info.has_audio
    if info.has_audio:
        assert out.audio_codec == info.audio_codec
        assert _audio_span(out_path) == _audio_span(path)
        assert abs(float(_audio_span(out_path)) - out.duration) <= float(1 / info.rate)


def test_round_trip_upscale_x2(reference, tmp_path):
    info, _ = reference[CARPHONE]
    out_path, source_frames, _ = _restore(
        CARPHONE, info, tmp_path, scale=2, min_frames=20
    )
    out = probe(out_path)
    assert (out.width, out.height) == (2 * info.width, 2 * info.height)
    assert out.frames == info.frames
    with av.open(out_path) as container:
        stream = container.streams.video[0]
        times = [f.pts * stream.time_base for f in container.decode(stream)]
    assert times == [p * info.time_base for p, _ in source_frames]


def test_odd_size_raises(tmp_path):
    with pytest.raises(ValueError, match="175x144"):
        ChunkWriter(
            str(tmp_path / "odd.mp4"),
            width=175,
            height=144,
            time_base=Fraction(1, 30000),
            rate=Fraction(30000, 1001),
            colorspace="bt601",
        )
    with pytest.raises(ValueError, match="176x143"):
        from_rgb(np.zeros((143, 176, 3), np.uint8), "bt601")


def test_writer_rejects_bad_frames(tmp_path):
    with ChunkWriter(
        str(tmp_path / "c.mp4"),
        width=64,
        height=48,
        time_base=Fraction(1, 25),
        rate=Fraction(25),
        colorspace="bt601",
    ) as writer:
        with pytest.raises(ValueError):
            writer.write(0, np.zeros((48, 64, 3), np.float32))
        with pytest.raises(ValueError):
            writer.write(0, np.zeros((64, 48, 3), np.uint8))
        writer.write(3, np.zeros((48, 64, 3), np.uint8))
        with pytest.raises(ValueError):
            writer.write(3, np.zeros((48, 64, 3), np.uint8))


def test_colour_conversion_matches_bt_formulas():
    """A flat limited-range YUV colour converts with the right matrix and back."""
    yuv = (100, 150, 90)
    for colorspace, (kr, kb) in {
        "bt709": (0.2126, 0.0722),
        "bt601": (0.299, 0.114),
    }.items():
        frame = av.VideoFrame(16, 16, "yuv420p")
        for plane, value in zip(frame.planes, yuv, strict=True):
            plane.update(np.full(plane.buffer_size, value, np.uint8))
        y = (yuv[0] - 16) * 255 / 219
        u, v = ((c - 128) * 255 / 224 for c in yuv[1:])
        r, b = y + 2 * (1 - kr) * v, y + 2 * (1 - kb) * u
        g = (y - kr * r - kb * b) / (1 - kr - kb)
        rgb = to_rgb(frame, colorspace)
        assert np.abs(rgb[8, 8].astype(float) - (r, g, b)).max() <= 0.51
        back = from_rgb(rgb, colorspace)
        assert [int(np.frombuffer(p, np.uint8)[0]) for p in back.planes] == list(yuv)


def test_assemble_bad_order_leaves_nothing(reference, tmp_path):
    info, _ = reference[CARPHONE]
    chunk_dir = tmp_path / "chunks"
    chunk_dir.mkdir()
    _restore(CARPHONE, info, chunk_dir, min_frames=20)
    chunks = sorted(
        str(chunk_dir / n) for n in os.listdir(chunk_dir) if n.startswith("chunk")
    )
    final = tmp_path / "final.mp4"
    with pytest.raises(ValueError, match="dts"):
        assemble(chunks[::-1], CARPHONE, str(final))
    assert os.listdir(tmp_path) == ["chunks"]


def test_assemble_reencodes_audio_the_container_cannot_hold(reference, tmp_path):
    """pcm_u8 cannot go in mp4: the source's audio is re-encoded to AAC."""
    info, _ = reference[CARPHONE]
    source = str(tmp_path / "source.mkv")
    with av.open(CARPHONE) as src, av.open(source, "w") as out:
        video = out.add_stream_from_template(src.streams.video[0])
        audio = out.add_stream("pcm_u8", rate=8000, layout="mono")
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = video
                out.mux(packet)
        t = np.arange(int(8000 * info.duration)) / 8000
        samples = (128 + 60 * np.sin(2 * np.pi * 440 * t)).astype(np.uint8)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="u8", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            out.mux(packet)
    chunk_dir = tmp_path / "chunks"
    chunk_dir.mkdir()
    src_info = probe(source)
    out_path, _, _ = _restore(source, src_info, chunk_dir, min_frames=20)
    out = probe(out_path)
    assert out.audio_codec == "aac"
    assert out.frames == info.frames
    assert (
        abs(float(_audio_span(out_path)) - out.duration) <= 0.2
    )  # AAC frames of 1024 samples
