"""Read what reelsr needs to know about a video file, from the packet index.

`probe` demuxes the video stream once (no decoding) and records the frame count,
the keyframe positions and the timing of the stream, plus the colour matrix that
RGB<->YUV conversions must use.
"""

from __future__ import annotations

import bisect
import dataclasses
import fractions
import os
from dataclasses import dataclass

import av

# AVColorSpace values (libavutil/pixfmt.h) -> reelsr's two supported matrices.
_AVCOL_SPC_BT709 = 1
_AVCOL_SPC_BT470BG = 5
_AVCOL_SPC_SMPTE170M = 6


@dataclass(frozen=True)
class VideoInfo:
    """Facts about one video file; timestamps are in the video stream's time_base."""

    path: str
    width: int
    height: int
    codec: str
    pix_fmt: str
    time_base: fractions.Fraction  # of the video stream
    rate: fractions.Fraction  # average frame rate (frames per second)
    frames: int  # counted from the packet index (demux, no decode)
    duration: float  # seconds, video stream: from the smallest pts to the end of the last frame
    start_pts: int  # smallest video pts
    keyframe_pts: tuple[int, ...]  # pts of keyframe packets, ascending
    gop_frames: tuple[int, ...]  # frames per GOP in presentation order (GOP g starts at keyframe_pts[g]; the first also holds frames shown before it)
    colorspace: str  # "bt709" or "bt601"
    has_audio: bool
    audio_codec: str | None
    rotation: int = 0  # display rotation in degrees (counter-clockwise, FFmpeg's sign), from the display matrix
    interlaced: bool = False  # the stream is flagged interlaced (field order top/bottom first)
    sar: fractions.Fraction = fractions.Fraction(1)  # sample (pixel) aspect ratio: 1 square; anamorphic video has another
    fields: bool = False  # one frame per field (media.deinterlace=field): timestamps, counts and rate are of the fields (by_fields)
    damaged: tuple[tuple[int, int], ...] = ()  # (pts, stand-in pts) of frames that do not decode (media.chunks.scan; empty when not scanned)

    @property
    def bit_depth(self) -> int:
        """Bits per sample of the stored pictures (8 for yuv420p, 10 for yuv420p10le...; 8 when unknown)."""
        try:
            return max(8, max(c.bits for c in av.VideoFormat(self.pix_fmt).components))
        except (ValueError, TypeError):
            return 8


def colorspace_of(stream_colorspace: int, height: int) -> str:
    """Matrix name for a stream's AVColorSpace tag.

    The tag wins when it is BT.709 or BT.601 (BT470BG / SMPTE170M); otherwise
    (unspecified or another matrix) ffmpeg's convention applies: "bt709" when
    height >= 720, else "bt601".
    """
    if stream_colorspace == _AVCOL_SPC_BT709:
        return "bt709"
    if stream_colorspace in (_AVCOL_SPC_BT470BG, _AVCOL_SPC_SMPTE170M):
        return "bt601"
    return "bt709" if height >= 720 else "bt601"


# Demuxers FFmpeg uses for single images (a photo renamed .mp4 opens as one of these).
_IMAGE_FORMATS = ("image2", "image2pipe")


def _first_frame(path: str) -> av.VideoFrame:
    """The first decodable frame of the video stream (its rotation and interlacing)."""
    try:
        with av.open(path) as container:
            for frame in container.decode(video=0):
                return frame
    except av.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode the first frame: {exc}") from exc
    raise ValueError(f"{path}: no frame of the video stream can be decoded")


def _truncated(path: str, stream) -> str | None:
    """Why the file is cut short (None when it is not): its index (mp4/mov) points past
    the end of the file."""
    size = os.path.getsize(path) if os.path.isfile(path) else None
    entries = stream.index_entries
    if size is None or not len(entries):
        return None
    beyond = sum(1 for e in entries if e.pos + e.size > size)
    if not beyond:
        return None
    return f"truncated: {beyond} of the {len(entries)} video frames its index declares lie past the end of the file ({size:,} bytes)"


def counted(packet) -> bool:
    """Whether a demuxed video packet is a frame of the video: not the flush packet at
    the end of the stream, and not trimmed by an edit list (flagged discard: the
    decoder drops its frame)."""
    return bool(packet.size) and packet.pts is not None and not packet.is_discard


def probe(path: str, max_pixels: int = 0) -> VideoInfo:
    """Describe the first video stream of `path`.

    Raises ValueError (naming the file and the reason) if the container cannot be
    read, is a still image, has no video stream, declares more than `max_pixels`
    pixels per frame (checked from the header, before anything is decoded; 0: no
    limit), is truncated (its index points past the end of the file), has no video
    packets, has video packets without timestamps, or its first frame cannot be
    decoded. Packets an edit list trims (flagged discard) are not counted as frames.
    """
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(path)
    except av.InvalidDataError as exc:
        raise ValueError(f"{path}: cannot read container: not a video, or truncated/damaged (no readable index): {exc}") from exc
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: cannot read container: {exc}") from exc
    try:
        fmt = container.format.name
        if fmt in _IMAGE_FORMATS or fmt.endswith("_pipe"):
            raise ValueError(f"{path}: a still image ({fmt}), not a video")
        if not container.streams.video:
            what = "audio only" if container.streams.audio else "no streams"
            raise ValueError(f"{path}: no video stream ({what})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if max_pixels and ctx.width * ctx.height > max_pixels:
            raise ValueError(
                f"{ctx.width}x{ctx.height} ({ctx.width * ctx.height:,} pixels) is over limits.max_pixels ({max_pixels:,})"
            )
        cut = _truncated(path, stream)
        if cut:
            raise ValueError(f"{path}: {cut}")
        audio = container.streams.audio[0] if container.streams.audio else None
        time_base = stream.time_base
        pts_list: list[int] = []
        end_pts: int | None = None
        keyframes: list[int] = []
        trimmed_keys = 0
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pts is None:
                    raise ValueError(f"{path}: video packet without pts (raw stream?)")
                if not counted(packet):
                    trimmed_keys += bool(packet.size and packet.is_keyframe)  # (trimmed by an edit list)
                    continue
                if packet.is_keyframe:
                    keyframes.append(packet.pts)
                pts_list.append(packet.pts)
                end = packet.pts + (packet.duration or 0)
                end_pts = end if end_pts is None else max(end_pts, end)
        except av.FFmpegError as exc:
            raise ValueError(f"{path}: cannot demux video: {exc}") from exc
        if not pts_list:
            raise ValueError(f"{path}: video stream has no packets")
        if trimmed_keys and (not keyframes or min(keyframes) > min(pts_list)):
            keyframes.append(min(pts_list))  # the first GOP's keyframe was trimmed away: decoding starts before it
        if not keyframes:
            raise ValueError(f"{path}: video stream has no keyframe")
        first = _first_frame(path)

        start_pts = min(pts_list)
        keys = sorted(set(keyframes))
        pts_sorted = sorted(pts_list)
        cuts = [0] + [bisect.bisect_left(pts_sorted, k) for k in keys[1:]] + [len(pts_sorted)]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            span = fractions.Fraction(end_pts - start_pts) * time_base
            rate = fractions.Fraction(len(pts_list)) / span
        # Last frame without a duration: count it as one nominal frame long.
        if max(pts_list) == end_pts:
            end_pts += round(1 / (rate * time_base))
        return VideoInfo(
            path=path,
            width=ctx.width,
            height=ctx.height,
            codec=ctx.name,
            pix_fmt=ctx.pix_fmt or "",
            time_base=fractions.Fraction(time_base),
            rate=fractions.Fraction(rate),
            frames=len(pts_list),
            duration=float((end_pts - start_pts) * time_base),
            start_pts=start_pts,
            keyframe_pts=tuple(keys),
            gop_frames=tuple(cuts[g + 1] - cuts[g] for g in range(len(cuts) - 1)),
            colorspace=colorspace_of(ctx.colorspace, ctx.height),
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            rotation=int(round(first.rotation or 0)) % 360,
            interlaced=bool(first.interlaced_frame) or ctx.field_order > 1,
            sar=fractions.Fraction(stream.sample_aspect_ratio or ctx.sample_aspect_ratio or 1),
        )
    finally:
        container.close()


def by_fields(info: VideoInfo) -> VideoInfo:
    """The view of an interlaced video as one frame per field (twice the frames, twice
    the rate): timestamps in half the stream's time base, so that frame p's fields are at
    2p and 2p + its duration (the deinterlacer's own convention). Damaged frames' fields
    stand in for each other the same way. A progressive video is returned unchanged."""
    if not info.interlaced or info.fields:
        return info
    ticks = max(1, round(1 / (info.rate * info.time_base)))
    return dataclasses.replace(
        info, fields=True, time_base=info.time_base / 2, rate=info.rate * 2, frames=info.frames * 2, start_pts=info.start_pts * 2,
        keyframe_pts=tuple(2 * k for k in info.keyframe_pts), gop_frames=tuple(2 * g for g in info.gop_frames),
        damaged=tuple((2 * p + half, 2 * s + half) for p, s in info.damaged for half in (0, ticks)),
    )


def by_frames(info: VideoInfo) -> VideoInfo:
    """The stream as stored (the inverse of ``by_fields``), for seeking and decoding."""
    if not info.fields:
        return info
    return dataclasses.replace(
        info, fields=False, time_base=info.time_base * 2, rate=info.rate / 2, frames=info.frames // 2, start_pts=info.start_pts // 2,
        keyframe_pts=tuple(k // 2 for k in info.keyframe_pts), gop_frames=tuple(g // 2 for g in info.gop_frames), damaged=(),
    )
