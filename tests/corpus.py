"""A corpus of bad or unusual input videos for reelsr's tests, made from real content.

Every case is a function ``make_<case>(path) -> str`` that writes one file at
``path`` and returns it; ``CASES`` maps the corpus file name to its maker and
``build(folder)`` writes them all (about 1 s on 2 cores; every file < 100 kB but
``good_audio.mp4``, a 247 kB copy of bbb).
The pictures are the 40 decoded frames of ``tests/data/carphone_gop10.mp4``
(176x144, no audio); the audio is the AAC stream of ``tests/data/bbb_320x180.mp4``.
Encodes run with one encoder thread (one slice per frame on any machine); even so
libx264 output through PyAV is not always bit-identical between runs, so the
truncated_* and corrupt_* cases cut or damage the fixed bytes of carphone_gop10.mp4.

What a reader sees with PyAV 18.1 / its FFmpeg 8 libraries (``describe`` checks it; run
``python -m tests.corpus OUT`` for the table):

* ``empty`` and ``random`` (64 kiB, seeded): ``av.open`` raises ``InvalidDataError``
  (errno 1094995529, "Invalid data found when processing input"); with a .mp4 name
  FFmpeg falls back to the mov demuxer, whose log says "moov atom not found".
* ``truncated``: moov at the end, cut at half: ``av.open`` raises ``InvalidDataError``
  (log: "moov atom not found").
* ``truncated_faststart``: moov first, cut at half: opens; ``stream.frames`` (the
  index) still says 40, but demux yields only the 18 packets in the file (the 18th
  partial, ``packet.is_corrupt`` True, its decode raises ``InvalidDataError``),
  then ends quietly (no exception; log "partial file"); 17 frames decode.
* ``corrupt_*``: a damaged packet may raise ``InvalidDataError`` from
  ``stream.decode(packet)``, be dropped silently, or give a frame with
  ``is_corrupt``; frames that reference it come out damaged and unflagged. A reader
  can count: decode errors, frames missing (packets sent - frames out, flush
  included) and ``is_corrupt`` frames; nothing flags the damaged references.
* ``rotated``: display matrix -90 deg (as a phone writes for a portrait video);
  read back as ``VideoFrame.rotation == -90`` on every decoded frame (no
  stream-level accessor in PyAV 18; ``stream.metadata`` has no "rotate").
* ``anamorphic``: ``stream.sample_aspect_ratio == 16/11``, ``display_aspect_ratio == 16/9``.
* ``subtitled`` (mp4: two mov_text streams) and ``subtitled_mkv`` (SubRip + ASS, read
  back as ``srt`` and ``ssa``): languages in the streams' tags; the mp4 also shows its
  chapters as a data stream (the QuickTime chapter track); Matroska writes its tags
  upper-case (``COMMENT``, ``DATE``).
* ``interlaced``: ``stream.codec_context.field_order == 2`` (AV_FIELD_TT) right
  after ``av.open``; ``frame.interlaced_frame`` True on every frame.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import time
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CARPHONE = os.path.join(DATA, "carphone_gop10.mp4")  # 40 frames, 176x144, H.264, no audio
BBB = os.path.join(DATA, "bbb_320x180.mp4")  # 50 frames 320x180 H.264 + AAC 5.1 48 kHz

# The good clip and the truncated cases: GOP 10 (keyframes are packets 0, 10, 20, 30),
# 3 B-frames, one slice per frame.
GOP10 = {"crf": "23", "x264-params": "keyint=10:min-keyint=10:scenecut=0"}


@functools.cache
def frames() -> tuple[np.ndarray, ...]:
    """The 40 frames of carphone as RGB24 arrays (144, 176, 3)."""
    with av.open(CARPHONE) as c:
        return tuple(f.to_ndarray(format="rgb24") for f in c.decode(video=0))


def encode(
    path: str,
    images,
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rate: int = 30,
    options: dict | None = None,
    container_options: dict | None = None,
    fmt: str | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    setup: Callable | None = None,
) -> str:
    """Encode RGB24 `images` into `path`; `setup(stream)` runs before the first frame."""
    with av.open(path, "w", format=fmt, container_options=container_options or {}) as out:
        s = out.add_stream(codec, rate=rate, options=options or {})
        s.height, s.width = images[0].shape[:2]
        s.pix_fmt = pix_fmt
        s.codec_context.thread_count = 1  # one slice per frame, same bytes on every machine
        if time_base is not None:
            s.time_base = s.codec_context.time_base = time_base
        if setup is not None:
            setup(s)
        for i, img in enumerate(images):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], time_base
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def packet_ranges(path: str) -> list[tuple[int, int, bool]]:
    """(byte offset, size, keyframe) of each video packet, in file order."""
    with av.open(path) as c:
        return [(p.pos, p.size, p.is_keyframe) for p in c.demux(video=0) if p.size]


# ---------------------------------------------------------------- good helpers


def make_good(path: str) -> str:
    """A plain valid clip: 40 frames 176x144 yuv420p H.264, GOP 10, moov at the end."""
    return encode(path, frames(), options=GOP10)


def make_good_audio(path: str) -> str:
    """A valid clip with audio: a copy of bbb_320x180.mp4 (H.264 + AAC)."""
    with open(BBB, "rb") as fh:
        return _write(path, fh.read())


# ---------------------------------------------------------------- not videos at all


def make_empty(path: str) -> str:
    return _write(path, b"")


def make_random(path: str, size: int = 64 << 10, seed: int = 0) -> str:
    return _write(path, np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())


def make_still(path: str) -> str:
    """A PNG image's bytes under a .mp4 name (FFmpeg probes it as "png_pipe": one
    176x144 rgb24 'png' stream, frames=0, duration None, one packet pts=dts=0)."""
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base = 176, 144, "rgb24", Fraction(1, 25)
    f = av.VideoFrame.from_ndarray(frames()[0], format="rgb24")
    return _write(path, b"".join(bytes(p) for p in cc.encode(f) + cc.encode(None)))


def _remux(source: str, path: str, kind: str, container_options: dict | None = None) -> str:
    """The first `kind` ("audio" or "video") stream of `source`, packets copied into an mp4."""
    with av.open(source) as src, av.open(path, "w", format="mp4", container_options=container_options or {}) as out:
        stream = getattr(src.streams, kind)[0]
        copy = out.add_stream_from_template(stream)
        for p in src.demux(stream):
            if p.size:
                p.stream = copy
                out.mux(p)
    return path


def make_audio_only(path: str) -> str:
    """AAC only (bbb's 5.1 48 kHz packets remuxed, 94 packets, ~2 s), no video stream."""
    return _remux(BBB, path, "audio")


# ---------------------------------------------------------------- damaged files


def _truncate(path: str, container_options: dict | None) -> str:
    """carphone_gop10.mp4 remuxed (packets copied, so the bytes are fixed), cut at half."""
    _remux(CARPHONE, path, "video", container_options)
    with open(path, "rb") as fh:
        data = fh.read()
    return _write(path, data[: len(data) // 2])


def make_truncated(path: str) -> str:
    """Default mp4 muxing (moov after mdat) cut at half: no moov, av.open fails."""
    return _truncate(path, None)


def make_truncated_faststart(path: str) -> str:
    """moov first, cut at half: opens, the index declares 40 frames, fewer demux
    (the last one partial, ``is_corrupt``, its decode raises)."""
    return _truncate(path, {"movflags": "faststart"})


def _corrupt(path: str, packets: list[int], keep: int | None, seed: int = 1) -> str:
    """carphone_gop10.mp4 with the given video packets (indices in file order)
    overwritten with seeded random bytes.

    The clip's own bytes are the base, not a fresh encode: libx264 through PyAV is
    not bit-exact from run to run here, and what a decoder makes of the damage
    depends on the bytes. The clip: 40 packets, keyframes 0/10/20/30, B-frames,
    2 slices (NAL units) per frame. keep=None: whole packets, AVCC length prefixes
    included. keep=k: walk each packet's NAL units, keep each one's 4-byte length
    and first k bytes."""
    with open(CARPHONE, "rb") as fh:
        data = bytearray(fh.read())
    rng = np.random.default_rng(seed)
    ranges = packet_ranges(CARPHONE)
    for i in packets:
        pos, size, _ = ranges[i]
        if keep is None:
            spans = [(pos, pos + size)]
        else:
            spans, j = [], pos
            while j < pos + size:
                n = int.from_bytes(data[j : j + 4], "big")
                spans.append((j + 4 + keep, j + 4 + n))
                j += 4 + n
        for a, b in spans:
            if b > a:
                data[a:b] = rng.integers(0, 256, b - a, dtype=np.uint8).tobytes()
    return _write(path, bytes(data))


# Results below are the same with the decoder's thread_type SLICE/FRAME/AUTO and
# thread_count 0/1/4/8, except that in FRAME/AUTO mode an error surfaces on a later
# packet (thread_count-ish packets later) than the damaged one.


def make_corrupt_middle(path: str) -> str:
    """Whole packets 14-16 (P/B, not keyframes) overwritten with garbage.

    ``stream.decode(packet)`` raises ``av.error.InvalidDataError`` ("Error splitting
    the input into NAL units.") for each; 37 frames come out of 40 packets, none with
    ``is_corrupt``; frames referencing them come out damaged and unflagged.
    ``err_detect=explode`` makes a 4th packet raise (36 frames)."""
    return _corrupt(path, [14, 15, 16], None)


def make_corrupt_keyframe(path: str) -> str:
    """Whole packets 19-21 (20 is the keyframe of the 3rd GOP) overwritten: those 3
    raise ``InvalidDataError``, 5 more frames of that GOP are dropped without any
    error (32 frames out of 40 packets)."""
    return _corrupt(path, [19, 20, 21], None)


def make_corrupt_flagged(path: str) -> str:
    """Packet 16's slices garbled after 4 bytes: no exception, 40 frames, 1 with
    ``is_corrupt`` (decoder error concealment). With err_detect=explode: packet 16
    raises instead, 39 frames, none flagged."""
    return _corrupt(path, [16], 4)


def make_corrupt_silent(path: str) -> str:
    """Packet 15's slices garbled after 2 bytes: no exception, no ``is_corrupt``, 39
    frames out of 40 packets: only counting tells. With err_detect=explode: packet
    15 raises."""
    return _corrupt(path, [15], 2)


# ---------------------------------------------------------------- unusual but valid


def make_tiny_1x1(path: str) -> str:
    """1x1 H.264: libx264 refuses yuv420p/yuv422p at odd sizes ("width not divisible
    by 2 (1x1)"), yuv444p works (profile High 4:4:4 Predictive)."""
    return encode(path, [f[70:71, 88:89] for f in frames()[:10]], pix_fmt="yuv444p")


def make_odd_175x143(path: str) -> str:
    """175x143 H.264 in yuv444p (libx264 refuses odd yuv420p; the SPS crop of the
    h264_metadata filter must be a multiple of 2 in 4:2:0, so no 4:2:0 H.264 either)."""
    return encode(path, [f[:143, :175] for f in frames()[:20]], pix_fmt="yuv444p")


def make_odd_175x143_yuv420p(path: str) -> str:
    """175x143 yuv420p, as MPEG-4 Part 2 (chroma planes 88x72)."""
    return encode(path, [f[:143, :175] for f in frames()[:20]], codec="mpeg4", options={"qscale": "4"})


def make_ten_bit(path: str) -> str:
    """yuv420p10le H.264, profile High 10 (the bundled libx264 does 8 and 10 bit)."""
    return encode(path, frames()[:20], pix_fmt="yuv420p10le", options={"crf": "28"})


def make_rotated(path: str, degrees: int = -90) -> str:
    """Display matrix as a phone writes it for portrait video (tkhd matrix
    [0, 1, 0, -1, 0, 0, 0, 0, 1] in 16.16): show the frame rotated 90 deg clockwise.
    PyAV's `degrees` is counter-clockwise, like ``VideoFrame.rotation`` on read."""
    return encode(path, frames()[:10], setup=lambda s: s.set_display_rotation(degrees))


def vfr_pts() -> list[int]:
    """pts (1/90000 s) of `make_vfr`: gaps alternate 1/30 and 1/15 s, a 1 s pause after the 16th frame."""
    pts = [0]
    for i in range(1, 30):
        pts.append(pts[-1] + (90000 if i == 16 else 3000 if i % 2 else 6000))
    return pts


def make_vfr(path: str) -> str:
    return encode(path, frames()[:30], pts=vfr_pts(), time_base=Fraction(1, 90000))


def make_anamorphic(path: str) -> str:
    """Anamorphic: 176x144 stored pixels with sample aspect ratio 16:11, shown 256x144
    (16:9), as widescreen DVD and DV tapes store it."""
    def setup(s):
        s.codec_context.sample_aspect_ratio = Fraction(16, 11)
    return encode(path, frames()[:10], setup=setup)


# A minimal ASS header: what text subtitle encoders need to open (styles of the cues).
ASS_HEADER = (b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
              b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
              b"Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
              b"MarginR, MarginV, Encoding\nStyle: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,1\n\n"
              b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n")
# (start ms, end ms, text) of the subtitle cues, per language
CUES = {"eng": [(100, 500, "Hello there"), (600, 950, "Two rows\nof text")],
        "fra": [(150, 450, "Bonjour"), (700, 900, "Au revoir")]}
CHAPTERS = [(0, 400, "Opening"), (400, 1000, "The end")]  # ms
TAGS = {"title": "A home movie", "date": "1987-06-14", "comment": "digitised from VHS"}


def _cue_bytes(codec: str, index: int, text: str) -> bytes:
    """One cue as the packet of a text subtitle codec: mov_text is a 16-bit length and
    UTF-8 text, SubRip the text, ASS a Matroska dialogue line."""
    data = text.encode()
    if codec == "mov_text":
        return len(data).to_bytes(2, "big") + data
    if codec == "ass":
        return f"{index},0,Default,,0,0,0,,{text.replace(chr(10), chr(92) + 'N')}".encode()
    return data


def _subtitled(path: str, fmt: str, codecs: dict[str, str]) -> str:
    """20 carphone frames (30 fps, 1/1000 s ticks) with a subtitle stream per language
    (``codecs``: language -> codec, cues from CUES), CHAPTERS and TAGS."""
    with av.open(path, "w", format=fmt) as out:
        v = out.add_stream("libx264", rate=30, options={**GOP10, "bf": "0"})  # no B-frames: it can serve as a chunk
        v.height, v.width = frames()[0].shape[:2]
        v.pix_fmt = "yuv420p"
        v.codec_context.thread_count = 1
        v.time_base = v.codec_context.time_base = Fraction(1, 1000)
        subs = []
        for lang, codec in codecs.items():
            st = out.add_stream(codec)
            st.time_base = st.codec_context.time_base = Fraction(1, 1000)
            st.codec_context.subtitle_header = ASS_HEADER
            st.metadata["language"] = lang
            subs.append((st, codec, CUES[lang]))
        out.metadata.update(TAGS)
        out.set_chapters([{"id": i + 1, "start": a, "end": b, "time_base": Fraction(1, 1000), "metadata": {"title": t}}
                          for i, (a, b, t) in enumerate(CHAPTERS)])
        for i, img in enumerate(frames()[:20]):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts, f.time_base = round(i * 1000 / 30), Fraction(1, 1000)
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        for st, codec, cues in subs:
            for i, (a, b, text) in enumerate(cues):
                p = av.Packet(_cue_bytes(codec, i, text))
                p.stream, p.pts, p.dts, p.duration = st, a, a, b - a
                out.mux(p)
    return path


def make_subtitled(path: str) -> str:
    """mp4 with two mov_text subtitle streams (English, French), two chapters and tags."""
    return _subtitled(path, "mp4", {"eng": "mov_text", "fra": "mov_text"})


def make_subtitled_mkv(path: str) -> str:
    """Matroska with a SubRip (English) and an ASS (French) subtitle stream, two
    chapters and tags: restored to mp4 both become mov_text."""
    return _subtitled(path, "matroska", {"eng": "subrip", "fra": "ass"})


def make_interlaced(path: str) -> str:
    """H.264 coded as interlaced (PAFF/MBAFF), top field first."""
    return encode(path, frames()[:20], options={"crf": "23", "x264-params": "interlaced=1:tff=1"})


def make_big(path: str) -> str:
    """1920x1080 (4 upscaled frames, ~30 kB) for pixel-count limits."""
    with av.open(CARPHONE) as c:
        big = [f.reformat(1920, 1080, "rgb24", interpolation="BILINEAR").to_ndarray() for f in itertools.islice(c.decode(video=0), 4)]
    return encode(path, big, options={"crf": "30", "preset": "veryfast"})


def make_long(path: str) -> str:
    """12 s: 24 frames at 2 fps, for duration limits."""
    return encode(path, frames()[:24], rate=2)


def make_trimmed_start(path: str) -> str:
    """carphone_gop10.mp4 with its first 5 frames trimmed by an edit list, as an editor's
    lossless cut writes it: every packet is in the file, the first 5 (keyframe included)
    are flagged discard on demux and their frames dropped by the decoder: 35 shown frames."""
    with av.open(CARPHONE) as src, av.open(path, "w", format="mp4") as out:
        v = src.streams.video[0]
        copy = out.add_stream_from_template(v)
        packets = [p for p in src.demux(v) if p.size]
        shift = 5 * packets[0].duration  # five frames earlier: negative timestamps become an edit list
        for p in packets:
            p.pts, p.dts, p.stream = p.pts - shift, p.dts - shift, copy
            out.mux(p)
    return path


def make_interlaced_gop10(path: str) -> str:
    """Interlaced H.264 with a keyframe every 10 frames (four GOPs), closed GOPs."""
    return encode(path, frames(), options={"crf": "23", "x264-params": "interlaced=1:tff=1:keyint=10:min-keyint=10:scenecut=0"})


CASES: dict[str, Callable[[str], str]] = {
    "good.mp4": make_good,
    "good_audio.mp4": make_good_audio,
    "empty.mp4": make_empty,
    "random.mp4": make_random,
    "still.mp4": make_still,
    "audio_only.mp4": make_audio_only,
    "truncated.mp4": make_truncated,
    "truncated_faststart.mp4": make_truncated_faststart,
    "corrupt_middle.mp4": make_corrupt_middle,
    "corrupt_keyframe.mp4": make_corrupt_keyframe,
    "corrupt_flagged.mp4": make_corrupt_flagged,
    "corrupt_silent.mp4": make_corrupt_silent,
    "anamorphic.mp4": make_anamorphic,
    "subtitled.mp4": make_subtitled,
    "subtitled_mkv.mkv": make_subtitled_mkv,
    "tiny_1x1.mp4": make_tiny_1x1,
    "odd_175x143.mp4": make_odd_175x143,
    "odd_175x143_yuv420p.mp4": make_odd_175x143_yuv420p,
    "ten_bit.mp4": make_ten_bit,
    "rotated.mp4": make_rotated,
    "vfr.mp4": make_vfr,
    "interlaced.mp4": make_interlaced,
    "big.mp4": make_big,
    "long.mp4": make_long,
    "trimmed_start.mp4": make_trimmed_start,
}


def build(folder: str) -> dict[str, str]:
    """Write every case into `folder`; {file name: path}."""
    os.makedirs(folder, exist_ok=True)
    return {name: make(os.path.join(folder, name)) for name, make in CASES.items()}


# ---------------------------------------------------------------- checking


def describe(path: str) -> dict:
    """What PyAV makes of `path`: the open error, or format, streams, packets, frames.

    Decodes packet by packet and catches errors, as a robust reader must
    (``container.decode()`` stops at the first one). FFmpeg's log is captured, not printed."""
    r: dict = {"size": os.path.getsize(path)}
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # without a level, exceptions carry no log line
    try:
        with av.logging.Capture(local=False):  # slice/frame threads log from other threads
            _describe(path, r)
    finally:
        av.logging.set_level(level)
    return r


def _err(e: av.error.FFmpegError) -> str:
    return type(e).__name__ + (f"({e.log[2].strip()})" if e.log else "")


def _describe(path: str, r: dict) -> None:
    try:
        c = av.open(path)
    except av.error.FFmpegError as e:
        r["open_error"] = _err(e)
        return
    with c:
        r["format"] = c.format.name
        r["duration"] = c.duration / 1e6 if c.duration is not None else None
        r["streams"] = st = []
        for s in c.streams:
            cc = s.codec_context
            d = {"type": s.type, "codec": cc.name, "declared": s.frames, "packets": 0, "frames": 0, "corrupt": 0, "errors": [], "pts": []}
            if s.type == "video":
                d.update(size=f"{cc.width}x{cc.height}", pix_fmt=cc.pix_fmt, profile=s.profile, field_order=cc.field_order, interlaced=0)
            st.append(d)
        for p in c.demux():
            d = st[p.stream.index]
            if p.size:  # the empty packets at the end flush the decoders
                d["packets"] += 1
                d["pts"].append(p.pts)
            try:
                out = p.decode()
            except av.error.FFmpegError as e:
                d["errors"].append(f"pkt{d['packets'] - 1}:{_err(e)}")
                continue
            for f in out:
                d["frames"] += 1
                d["corrupt"] += f.is_corrupt
                if isinstance(f, av.VideoFrame):
                    d["interlaced"] += f.interlaced_frame
                    d.setdefault("rotation", f.rotation)
                    d.setdefault("frame_fmt", f.format.name)
        for d in st:
            d["pts"] = sorted(x for x in d["pts"] if x is not None)


def table(paths: dict[str, str]) -> str:
    """One line per file: size, then the open error or format, duration and streams."""
    rows = []
    for name, path in paths.items():
        r = describe(path)
        head = f"{name:24} {r['size']:>6} "
        if "open_error" in r:
            rows.append(head + "OPEN " + r["open_error"])
            continue
        streams = []
        for d in r["streams"]:
            s = f"{d['type']}:{d['codec']}"
            if d["type"] == "video":
                gaps = sorted(set(np.diff(d["pts"]).tolist()))
                s += f" {d['size']} {d['pix_fmt']} [{d['profile']}] rot={d.get('rotation')} field_order={d['field_order']}"
                s += f" interlaced={d['interlaced']} pts_gaps={gaps[:4]}"
            s += f" declared={d['declared']} pkts={d['packets']} frames={d['frames']} corrupt={d['corrupt']}"
            if d["errors"]:
                s += f" errors={len(d['errors'])}:{d['errors'][:4]}"
            streams.append(s)
        rows.append(head + f"{r['format']} dur={r['duration']} " + " | ".join(streams))
    return "\n".join(rows)


if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else "corpus"
    t0 = time.perf_counter()
    built = build(folder)
    print(f"built {len(built)} files in {folder} in {time.perf_counter() - t0:.2f} s")
    print(table(built))
