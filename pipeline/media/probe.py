"""Read what reelsr needs to know about a video file, from the packet index.

`probe` demuxes the video stream once (no decoding) and records the frame count,
the keyframe positions and the timing of the stream, plus the colour matrix that
RGB<->YUV conversions must use.
"""

from __future__ import annotations

import bisect
import fractions
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


def probe(path: str) -> VideoInfo:
    """Describe the first video stream of `path`.

    Raises ValueError (naming the file and the reason) if the container cannot be
    read, has no video stream, has no video packets, or has video packets
    without timestamps.
    """
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: cannot read container: {exc}") from exc
    try:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        time_base = stream.time_base
        pts_list: list[int] = []
        end_pts: int | None = None
        keyframes: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # flush packet at end of stream
                    continue
                if packet.pts is None:
                    raise ValueError(f"{path}: video packet without pts (raw stream?)")
                pts_list.append(packet.pts)
                end = packet.pts + (packet.duration or 0)
                end_pts = end if end_pts is None else max(end_pts, end)
                if packet.is_keyframe:
                    keyframes.append(packet.pts)
        except av.FFmpegError as exc:
            raise ValueError(f"{path}: cannot demux video: {exc}") from exc
        if not pts_list:
            raise ValueError(f"{path}: video stream has no packets")
        if not keyframes:
            raise ValueError(f"{path}: video stream has no keyframe")

        start_pts = min(pts_list)
        keys = sorted(set(keyframes))
        pts_sorted = sorted(pts_list)
        cuts = [0] + [bisect.bisect_left(pts_sorted, k) for k in keys[1:]] + [len(pts_sorted)]
        ctx = stream.codec_context
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
        )
    finally:
        container.close()
