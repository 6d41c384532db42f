"""Encode restored chunks and assemble them, with the source's audio, subtitles, chapters
and tags, into one file.

B-frames and DTS
----------------
Chunks are encoded by separate encoder instances and later concatenated by
copying packets. With B-frames every encoder starts its DTS before its first
PTS (by the reorder delay), so the first DTS of chunk k+1 can be equal to or
lower than the last DTS of chunk k and the joined stream is invalid. The
simplest correct fix is to encode WITHOUT B-frames (`max_b_frames = 0`, x264
``bframes=0``): then no frame is reordered, every packet has DTS == PTS, and
since chunks cover disjoint, increasing pts ranges the concatenation has
strictly increasing DTS with every timestamp kept exactly as in the source.
The cost is some compression efficiency (typically 10-20 % more bits at the
same crf); nothing needs rewriting. `assemble` still checks that DTS strictly
increase and raises otherwise.

Timestamps are written in the source video stream's time base and copied
unchanged, so each output frame has its source frame's time. (mp4/mov keep
the ticks exactly; Matroska stores milliseconds.)

Colour: frames are converted from RGB with the given matrix (BT.709 or
BT.601) to limited-range yuv420p (yuv420p10le from 16-bit frames, for 10-bit
output), and the stream is tagged with that matrix, the matching primaries and
transfer, and limited range.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import uuid
from fractions import Fraction
from typing import Self

import av
import numpy as np

from .chunks import from_rgb

# AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic values
# (libavutil/pixfmt.h): 1 = BT709, 6 = SMPTE170M (BT.601 525-line).
_COLOR_TAGS = {"bt709": 1, "bt601": 6}
_AVCOL_RANGE_MPEG = 1

# Output containers by file extension; anything else is written as mp4.
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def _container_format(path: str) -> str:
    return _FORMATS.get(os.path.splitext(path)[1].lower(), "mp4")


def _muxer_options(fmt: str, time_base: Fraction) -> dict[str, str]:
    """mp4/mov options that keep the video timestamps exact.

    The mov muxer writes a start offset (an edit list) in the movie timescale,
    1/1000 s by default, so a chunk starting at pts 20020 in 1/30000 s came
    back as 20010. Using one timescale, a multiple of the time base's
    denominator, for the movie and the video track makes it exact.
    """
    if fmt not in ("mp4", "mov"):
        return {}
    scale = Fraction(time_base).denominator
    while scale < 10000:  # the muxer's own minimum for video tracks
        scale *= 2
    return {"movie_timescale": str(scale), "video_track_timescale": str(scale)}


def encoder_options(codec: str, crf: int, preset: str, threads: int = 0) -> dict[str, str]:
    """The encoder's options for a constant-quality encode without B-frames: libx264's
    and libx265's CRF and preset; FFV1 lossless, intra only; NVENC's constant-quality
    VBR (``cq`` = the CRF, the nearest NVENC has) at its middle preset."""
    if codec == "libx264":
        options = {"crf": str(crf), "preset": preset, "x264-params": "bframes=0"}
        if threads:
            options["threads"] = str(threads)
        return options
    if codec == "libx265":  # its frame threads and pool do not change the stream (checked: 1 and 4 threads, same bytes)
        n = max(1, threads)
        return {"crf": str(crf), "preset": preset, "x265-params": f"bframes=0:log-level=error:pools={n}:frame-threads={min(n, 4)}"}
    if codec == "ffv1":  # lossless, every frame intra (level 3: sliced, multithreaded, CRC per slice)
        return {"level": "3", "g": "1", "slices": "4", "slicecrc": "1", "threads": str(max(1, threads))}
    if codec in ("h264_nvenc", "hevc_nvenc"):
        if crf == 0:  # x264's CRF 0 is lossless; NVENC's cq 0 would mean "automatic"
            return {"preset": "p4", "tune": "lossless", "bf": "0"}
        return {"rc": "vbr", "cq": str(crf), "b": "0", "preset": "p4", "bf": "0"}
    return {"crf": str(crf), "preset": preset}


_NVENC: dict[str, bool] = {}


def nvenc_available(codec: str = "h264_nvenc") -> bool:
    """Whether this process can open the NVENC encoder (a GPU with NVENC, its driver, and
    FFmpeg built with it); tried once per process."""
    if codec not in _NVENC:
        try:
            ctx = av.CodecContext.create(codec, "w")
            ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
            ctx.time_base = Fraction(1, 25)
            ctx.open()
            _NVENC[codec] = True
        except Exception:  # noqa: BLE001 - not in this FFmpeg, no GPU, no driver: x264 then
            _NVENC[codec] = False
    return _NVENC[codec]


class ChunkWriter:
    """Encode RGB frames of one chunk to a video file (a context manager).

    `time_base` is the SOURCE video stream's time base; pts passed to `write`
    are in its ticks and are stored unchanged. `rate` is the nominal frame
    rate (used for the last frame's duration and the stream's rate).
    `colorspace` is "bt709" or "bt601". Width and height must be even. `sar`: the
    sample aspect ratio (the source's: scaling both sides keeps the pixel shape).
    Encodes yuv420p without B-frames (see the module docstring); with `depth` 10,
    yuv420p10le (H.264 High 10, HEVC Main 10 or FFV1) from uint16 frames.
    """

    def __init__(
        self,
        path: str,
        *,
        width: int,
        height: int,
        time_base: Fraction,
        rate: Fraction,
        colorspace: str,
        crf: int = 18,
        preset: str = "medium",
        codec: str = "libx264",
        gop_size: int | None = None,
        threads: int = 0,
        sar: Fraction = Fraction(1),
        depth: int = 8,
    ) -> None:
        if depth not in (8, 10):
            raise ValueError(f"depth must be 8 or 10, got {depth}")
        if depth == 10 and codec == "h264_nvenc":
            raise ValueError("H.264 NVENC encodes 8-bit only: 10-bit output needs libx264, libx265 or ffv1")
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(
                f"yuv420p needs positive even width and height, got {width}x{height}"
            )
        if colorspace not in _COLOR_TAGS:
            raise ValueError(
                f"unsupported colorspace {colorspace!r}; use 'bt709' or 'bt601'"
            )
        self.path = path
        self.width, self.height = width, height
        self.time_base = Fraction(time_base)
        self.colorspace = colorspace
        self.depth = depth
        self._sample = np.uint16 if depth > 8 else np.uint8
        self._frame_ticks = max(1, round(1 / (Fraction(rate) * self.time_base)))
        self._last_pts: int | None = None
        fmt = _container_format(path)
        self._container = av.open(
            path, "w", format=fmt, container_options=_muxer_options(fmt, self.time_base)
        )
        try:
            stream = self._container.add_stream(codec, rate=Fraction(rate))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le" if depth > 8 else "yuv420p"
            stream.time_base = self.time_base
            ctx = stream.codec_context
            ctx.time_base = self.time_base
            ctx.max_b_frames = 0
            if gop_size:
                ctx.gop_size = gop_size  # keyframe interval in frames (x264 default: 250)
            tag = _COLOR_TAGS[colorspace]
            ctx.colorspace, ctx.color_primaries, ctx.color_trc = tag, tag, tag
            ctx.color_range = _AVCOL_RANGE_MPEG
            if sar != 1:  # anamorphic: the pixels keep the source's shape (in the stream and the container)
                ctx.sample_aspect_ratio = Fraction(sar)
            if threads:
                ctx.thread_count = threads
                ctx.thread_type = "FRAME"  # (PyAV's default, SLICE, makes libx264 cut each frame into slices)
            stream.options = encoder_options(codec, crf, preset, threads)
        except Exception:
            self._container.close()
            raise
        self._stream = stream
        self._closed = False

    def set_quantiser(self, q: int) -> None:
        """A fixed quantiser (MPEG-4 Part 2 style encoders), before the first frame."""
        ctx = self._stream.codec_context
        ctx.bit_rate = 1 << 30
        self._stream.options = {**dict(self._stream.options or {}), "qmin": str(q), "qmax": str(q)}

    def write(self, pts: int, rgb: np.ndarray) -> None:
        """Encode one frame.

        `pts` is in the source stream's time_base ticks and must increase;
        `rgb` is uint8 (height, width, 3), RGB order, full range 0..255 (uint16,
        0..65535, for a 10-bit writer).
        """
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != self._sample:
            raise ValueError(
                f"{self.path}: expected {np.dtype(self._sample).name} ({self.height}, {self.width}, 3), "
                f"got {rgb.dtype} {rgb.shape}"
            )
        self._encode(pts, from_rgb(rgb, self.colorspace))

    def write_i420(self, pts: int, planes: np.ndarray) -> None:
        """Encode one frame given as limited-range I420 planes in this writer's colorspace:
        uint8 (height * 3 // 2, width), Y then U then V (``pipeline.media.colour``); uint16
        10-bit samples for a 10-bit writer."""
        if planes.shape != (self.height * 3 // 2, self.width) or planes.dtype != self._sample:
            raise ValueError(
                f"{self.path}: expected {np.dtype(self._sample).name} I420 ({self.height * 3 // 2}, {self.width}), "
                f"got {planes.dtype} {planes.shape}"
            )
        fmt = "yuv420p10le" if self.depth > 8 else "yuv420p"
        self._encode(pts, av.VideoFrame.from_ndarray(np.ascontiguousarray(planes), format=fmt))

    def _encode(self, pts: int, frame: av.VideoFrame) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(
                f"{self.path}: pts {pts} not after previous pts {self._last_pts}"
            )
        frame.pts = int(pts)
        frame.time_base = self.time_base
        frame.duration = self._frame_ticks
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._last_pts = int(pts)

    def close(self) -> None:
        """Flush the encoder and close the file (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _video_packets(chunk_paths: list[str], out_stream):
    """Video packets of every chunk, in order, re-targeted to `out_stream`."""
    first_extradata = None
    last_dts = None  # in seconds
    for path in chunk_paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            extradata = stream.codec_context.extradata
            if first_extradata is None:
                first_extradata = extradata
            elif extradata != first_extradata:
                raise ValueError(
                    f"{path}: codec parameters differ from the first chunk's"
                )
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                dts = (
                    packet.dts if packet.dts is not None else packet.pts
                ) * packet.time_base
                if last_dts is not None and dts <= last_dts:
                    raise ValueError(
                        f"{path}: video dts {float(dts):.6f}s not after previous {float(last_dts):.6f}s"
                    )
                last_dts = dts
                packet.stream = out_stream
                yield dts, packet


def _copied_packets(source, in_stream, out_stream):
    """Packets of a source stream (audio, subtitles), copied (timestamps unchanged)."""
    for packet in source.demux(in_stream):
        if packet.size == 0 or packet.pts is None:
            continue
        dts = packet.dts if packet.dts is not None else packet.pts
        packet.stream = out_stream
        yield dts * packet.time_base, packet


def _audio_reencoded(source, in_stream, out_stream):
    """Audio of the source stream decoded and re-encoded with `out_stream`'s codec."""
    for frame in source.decode(in_stream):
        for packet in out_stream.encode(frame):
            yield packet.dts * packet.time_base, packet
    for packet in out_stream.encode(None):
        yield packet.dts * packet.time_base, packet


# Text subtitle codecs (FFmpeg decodes each to ASS events, so one converts to another) and
# what each output container takes when it cannot hold the source's.
_TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"}
_SUBTITLE_FOR = {"mp4": "mov_text", "mov": "mov_text", "matroska": "subrip"}
# Container tags that describe the file's own format, not the content: left to the muxer.
_FORMAT_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "handler_name", "vendor_id", "duration"}


def _content_tags(tags) -> dict[str, str]:
    """A container's or stream's tags without those of its format (any case: Matroska
    writes them upper-case)."""
    return {k: v for k, v in tags.items() if k.lower() not in _FORMAT_TAGS}


def _subtitles_converted(source, in_stream, out_stream):
    """Text subtitles of the source stream decoded (to ASS events) and encoded with
    `out_stream`'s codec, each at its source time and duration."""
    ctx = out_stream.codec_context
    for packet in source.demux(in_stream):
        if packet.size == 0 or packet.pts is None:
            continue
        subs = in_stream.codec_context.decode2(packet)
        if subs is None or not len(subs.rects):
            continue
        if not ctx.is_open:  # the encoder takes the decoder's ASS header (styles)
            ctx.subtitle_header = in_stream.codec_context.subtitle_header
        out = ctx.encode_subtitle(subs)
        out.stream = out_stream
        out.pts = out.dts = int(packet.pts * packet.time_base / out_stream.time_base)
        out.duration = int((packet.duration or 0) * packet.time_base / out_stream.time_base)
        yield packet.pts * packet.time_base, out


def _add_subtitles(out, fmt: str, source_path: str, stack: contextlib.ExitStack) -> tuple[list, list[str]]:
    """Each subtitle stream of the source as an output stream: copied when the container
    takes its codec, else text subtitles converted (mov_text in mp4/mov, SubRip in
    Matroska). Returns the packet sources, and what could not be kept (bitmap subtitles
    the container cannot hold)."""
    sources, dropped = [], []
    with av.open(source_path) as probe_source:
        count = len(probe_source.streams.subtitles)
    for index in range(count):
        reader = stack.enter_context(av.open(source_path))
        sub_in = reader.streams.subtitles[index]
        name = sub_in.codec_context.name
        if name in out.supported_codecs:
            sub_out = out.add_stream_from_template(sub_in)
            sub_out.time_base = sub_in.time_base
            sources.append(_copied_packets(reader, sub_in, sub_out))
        elif name in _TEXT_SUBTITLES and fmt in _SUBTITLE_FOR:
            sub_out = out.add_stream(_SUBTITLE_FOR[fmt])
            sub_out.time_base = sub_out.codec_context.time_base = Fraction(1, 1000)
            if not sub_in.codec_context.is_open:
                sub_in.codec_context.open()
            sub_out.codec_context.subtitle_header = sub_in.codec_context.subtitle_header
            sources.append(_subtitles_converted(reader, sub_in, sub_out))
        else:
            dropped.append(f"subtitle stream {index} ({name}): {fmt} cannot hold it")
            continue
        sub_out.metadata.update(_content_tags(sub_in.metadata))  # language, title
    return sources, dropped


def assemble(chunk_paths: list[str], source_path: str, out_path: str, rotation: int = 0) -> list[str]:
    """Join the chunks' video and the source's audio and subtitles into `out_path`.

    Video packets of `chunk_paths` are copied in order (they must share codec
    parameters and have increasing DTS); every audio stream of `source_path` is
    copied unchanged, or re-encoded to AAC if the output container cannot hold
    its codec; every subtitle stream copied, or converted (text subtitles) to one the
    container takes; the source's chapters and container tags (title, dates ...) are
    kept. The container follows out_path's extension (.mp4/.m4v, .mov, .mkv; mp4
    otherwise). `rotation` (degrees, counter-clockwise) is written as the video's
    display matrix, so players turn it as they turned the source; the sample aspect
    ratio comes with the chunks. The file is written under a temporary name in the
    same directory and renamed to `out_path` only when complete. Returns what of the
    source could not be kept (bitmap subtitles in mp4), for the log.
    """
    if not chunk_paths:
        raise ValueError("assemble: no chunks")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    # fixed length: a final name near the file system's 255-byte limit stays writable
    tmp_path = os.path.join(out_dir, f".reelsr-{uuid.uuid4().hex[:12]}.partial")
    try:
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(av.open(chunk_paths[0]))
            source = stack.enter_context(av.open(source_path))
            template = first.streams.video[0]
            fmt = _container_format(out_path)
            out = stack.enter_context(
                av.open(
                    tmp_path,
                    "w",
                    format=fmt,
                    container_options=_muxer_options(fmt, template.time_base),
                )
            )
            video_out = out.add_stream_from_template(template)
            video_out.time_base = template.time_base
            if rotation:
                video_out.set_display_rotation(rotation)
            sources = [_video_packets(chunk_paths, video_out)]
            for index in range(len(source.streams.audio)):
                # one demuxer per audio stream: the streams are read side by side
                reader = stack.enter_context(av.open(source_path))
                audio_in = reader.streams.audio[index]
                if audio_in.codec_context.name in out.supported_codecs:
                    audio_out = out.add_stream_from_template(audio_in)
                    audio_out.time_base = audio_in.time_base
                    sources.append(_copied_packets(reader, audio_in, audio_out))
                else:
                    ctx = audio_in.codec_context
                    # the default layout for the channel count ("1 channels" -> mono)
                    layout = av.AudioLayout(f"{ctx.layout.nb_channels}c")
                    audio_out = out.add_stream(
                        "aac", rate=ctx.sample_rate, layout=layout
                    )
                    sources.append(_audio_reencoded(reader, audio_in, audio_out))
            subtitles, dropped = _add_subtitles(out, fmt, source_path, stack)
            sources.extend(subtitles)
            out.metadata.update(_content_tags(source.metadata))
            chapters = source.chapters()
            if chapters:
                out.set_chapters(chapters)
            # Interleave by decode time so the muxer never buffers a whole stream.
            for _, packet in heapq.merge(*sources, key=lambda item: item[0]):
                out.mux(packet)
        os.replace(tmp_path, out_path)
        return dropped
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
