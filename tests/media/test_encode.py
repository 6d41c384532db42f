"""Encoding chunks and assembling them: round trips, colour, audio, errors."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.config import MediaConfig
from pipeline.media.chunks import (
    decode_chunk,
    from_rgb,
    plan_chunks,
    to_rgb,
)
from pipeline.media.encode import ChunkWriter, assemble
from pipeline.media.probe import probe
from tests.media.conftest import BBB, CARPHONE, CLIPS


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


def _streams(path: str) -> dict:
    """What a reader sees of a file's subtitles (codec, language, cue times in ms and
    texts), chapters (ms, title), tags and sample aspect ratio."""
    with av.open(path) as c:
        subs = []
        for st in c.streams.subtitles:
            with av.open(path) as r:
                s = r.streams.subtitles[st.index - len(c.streams.video) - len(c.streams.audio)]
                cues = []
                for p in r.demux(s):
                    if not p.size:
                        continue
                    text = "".join(x.ass.decode().split(",", 8)[-1] for x in s.codec_context.decode2(p).rects) if len(bytes(p)) > 2 else ""
                    if text:
                        cues.append((round(p.pts * p.time_base * 1000), round((p.pts + p.duration) * p.time_base * 1000), text))
            subs.append((s.codec_context.name, s.metadata.get("language"), cues))
        tags = {k.lower(): v for k, v in c.metadata.items()}
        chapters = [(round(ch["start"] * ch["time_base"] * 1000), round(ch["end"] * ch["time_base"] * 1000), ch["metadata"].get("title"))
                    for ch in c.chapters()]
        return {"subtitles": subs, "chapters": chapters, "tags": tags, "sar": c.streams.video[0].sample_aspect_ratio}


@pytest.mark.parametrize("source", ["subtitled.mp4", "subtitled_mkv.mkv"])
@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_assemble_keeps_subtitles_chapters_and_tags(tmp_path, source, container):
    """Subtitle streams come through with their language, cue times and texts: copied
    where the container takes the codec, converted otherwise (SubRip/ASS -> mov_text in
    mp4, mov_text -> SubRip in Matroska); chapters and the title/date/comment tags too."""
    from tests import corpus

    src = corpus.CASES[source](str(tmp_path / source))
    out = str(tmp_path / f"out.{container}")
    assert assemble([src], src, out) == []
    got, want = _streams(out), _streams(src)
    codec = {"mp4": "mov_text", "mkv": {"subtitled.mp4": "srt", "subtitled_mkv.mkv": None}[source]}[container]  # (SubRip reads back as srt)
    assert [(c if codec is None else codec, lang, cues) for c, lang, cues in want["subtitles"]] == got["subtitles"]
    assert [lang for _, lang, _ in got["subtitles"]] == ["eng", "fra"]
    assert [t.replace("\\N", "\n") for _, _, cues in got["subtitles"] for *_, t in cues] == [t for cues in corpus.CUES.values() for *_, t in cues]
    assert got["chapters"] == want["chapters"] == [(a, b, t) for a, b, t in corpus.CHAPTERS]
    assert {k: got["tags"].get(k) for k in corpus.TAGS} == corpus.TAGS


def test_the_pixel_shape_of_an_anamorphic_video_is_kept(tmp_path):
    """A 16:11 sample aspect ratio (176x144 shown as 256x144) is written by the chunk
    encoder and kept by assemble: the restored video shows at 16:9 too."""
    from tests import corpus

    src = corpus.make_anamorphic(str(tmp_path / "a.mp4"))
    info = probe(src)
    assert info.sar == Fraction(16, 11)
    chunk = str(tmp_path / "c.mp4")
    with ChunkWriter(chunk, width=352, height=288, time_base=info.time_base, rate=info.rate, colorspace="bt601", sar=info.sar) as w:
        for pts in range(info.frames):
            w.write(pts * 512, np.zeros((288, 352, 3), np.uint8))
    out = str(tmp_path / "out.mp4")
    assemble([chunk], src, out)
    with av.open(out) as c:
        s = c.streams.video[0]
        assert s.sample_aspect_ratio == Fraction(16, 11) and s.display_aspect_ratio == Fraction(16, 9)


@pytest.mark.parametrize("codec,container", [("libx264", "mp4"), ("libx265", "mp4"), ("libx265", "mkv"), ("ffv1", "mkv")])
def test_each_output_codec_joins_its_chunks_with_every_frame(codec, container, tmp_path):
    """bbb (audio, 50 frames) restored in 5 chunks with each archival codec: the
    assembled file has every frame at its source time and the audio; FFV1 gives back
    the frames it was given (lossless: only the RGB/YUV conversion differs), x264/x265
    at CRF 12 above 35 dB. x265 and FFV1 chunks encode to the same bytes whatever the
    encoder's threads (x264's depend on them: media.encoder_threads is fixed)."""
    info = probe(BBB)
    chunks, frames = [], []
    for chunk in plan_chunks(info, 10):
        decoded = list(decode_chunk(BBB, chunk, info))
        frames.extend(decoded)
        digests = set()
        for threads in (1, 4) if codec != "libx264" else (4,):
            path = str(tmp_path / f"c{chunk.index}-{threads}.{container}")
            with ChunkWriter(path, width=info.width, height=info.height, time_base=info.time_base, rate=info.rate,
                             colorspace=info.colorspace, crf=12, preset="veryfast", codec=codec, threads=threads) as w:
                for pts, rgb in decoded:
                    w.write(pts, rgb)
            digests.add(_packets_digest(path))
        assert len(digests) == 1, codec
        chunks.append(path)
    out = str(tmp_path / f"out.{container}")
    assemble(chunks, BBB, out)
    with av.open(out) as c:
        assert c.streams.video[0].codec_context.name == {"libx264": "h264", "libx265": "hevc", "ffv1": "ffv1"}[codec]
        assert len(c.streams.audio) == 1
        got = [(f.pts, to_rgb(f, info.colorspace)) for f in c.decode(video=0)]
        scale = c.streams.video[0].time_base
    assert [p * scale for p, _ in got] == [p * info.time_base for p, _ in frames]
    worst = min(_psnr(a, b) for (_, a), (_, b) in zip(got, frames, strict=True))
    print(f"\n{codec} in {container}: {os.path.getsize(out):,} bytes, worst frame {worst:.1f} dB")
    assert worst > (45 if codec == "ffv1" else 35), (codec, worst)


def _packets_digest(path: str) -> str:
    import hashlib

    with av.open(path) as c:
        return hashlib.sha256(b"".join(bytes(p) for p in c.demux(video=0) if p.size)).hexdigest()


def _ten_bit_source(tmp_path) -> str:
    from tests import corpus

    return corpus.make_ten_bit(str(tmp_path / "ten_bit.mp4"))


@pytest.mark.parametrize("codec,container", [("libx264", "mp4"), ("libx265", "mkv"), ("ffv1", "mkv")])
def test_a_ten_bit_source_gives_ten_bit_chunks_that_keep_its_low_bits(codec, container, tmp_path):
    """A 10-bit H.264 source decoded deep (uint16 RGB) and written by a 10-bit writer
    comes back as yuv420p10le in every codec. Lossless FFV1 shows the precision kept:
    its luma is within a 10-bit level or two of the source's, 4x closer than the same
    frames through the 8-bit path (whose RGB lost the two low bits)."""
    src = _ten_bit_source(tmp_path)
    info = probe(src)
    assert (info.pix_fmt, info.bit_depth) == ("yuv420p10le", 10)
    chunk = plan_chunks(info, 100)[0]
    deep = list(decode_chunk(src, chunk, info, deep=True))
    shallow = list(decode_chunk(src, chunk, info))
    assert deep[0][1].dtype == np.uint16 and len(deep) == len(shallow) == info.frames
    assert np.mean(deep[0][1] % 257 != 0) > 0.5  # not 8-bit values scaled up: the low bits are there
    with av.open(src) as c:
        luma = [f.to_ndarray()[:info.height].astype(np.float64) for f in c.decode(video=0)]  # 10-bit samples
    errors = {}
    for depth, frames in ((10, deep), (8, shallow)):
        path = str(tmp_path / f"d{depth}.{container}")
        with ChunkWriter(path, width=info.width, height=info.height, time_base=info.time_base, rate=info.rate,
                         colorspace=info.colorspace, crf=0, codec=codec, depth=depth) as w:
            for pts, rgb in frames:
                w.write(pts, rgb)
        with av.open(path) as c:
            assert c.streams.video[0].codec_context.pix_fmt == ("yuv420p10le" if depth == 10 else "yuv420p")
            got = [f.reformat(format="yuv420p10le").to_ndarray()[:info.height] for f in c.decode(video=0)]
        assert len(got) == info.frames
        # (the source overshoots the limited range; the RGB path clips there)
        errors[depth] = float(np.mean([np.abs(np.clip(y, 64, 940) - np.clip(g, 64, 940)).mean() for y, g in zip(luma, got, strict=True)]))
    print(f"\n{codec}: mean |luma error| against the 10-bit source, in 10-bit levels: 10-bit output {errors[10]:.2f}, 8-bit output {errors[8]:.2f}")
    if codec == "ffv1":
        assert errors[10] < 1.5 and errors[10] < errors[8] / 2, errors


def test_a_ten_bit_writer_takes_sixteen_bit_frames_only(tmp_path):
    w = ChunkWriter(str(tmp_path / "a.mp4"), width=16, height=16, time_base=Fraction(1, 30), rate=Fraction(30),
                    colorspace="bt709", depth=10)
    with pytest.raises(ValueError, match="uint16"):
        w.write(0, np.zeros((16, 16, 3), np.uint8))
    w.write(0, np.zeros((16, 16, 3), np.uint16))
    w.close()
    with pytest.raises(ValueError, match="8-bit only"):
        ChunkWriter(str(tmp_path / "b.mp4"), width=16, height=16, time_base=Fraction(1, 30), rate=Fraction(30),
                    colorspace="bt709", depth=10, codec="h264_nvenc")
