"""Split a video into GOP-aligned chunks, decode them to RGB, sample training frames.

Chunks are planned from the packet index (no decoding): each chunk is a run of
whole GOPs, [keyframe_i, keyframe_j) in presentation time, so it can be decoded
alone by seeking to keyframe_i. With open GOPs the B-frames that follow a
keyframe in decode order but are shown before it belong to the chunk *before*
that keyframe; `decode_chunk` therefore decodes past its end keyframe until it
has every frame of its pts range, and drops frames shown before its start.

Colour: RGB arrays are uint8 (H, W, 3), full range 0..255. YUV is converted with
the stream's matrix (BT.709 or BT.601, see `probe.colorspace_of`) and limited
("MPEG", 16..235) range in both directions, with bicubic chroma resampling,
accurate rounding and full chroma interpolation in swscale. A decoded frame explicitly tagged full range
(JPEG) is read as full range; written frames are always limited range.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import Interpolation

from .probe import VideoInfo, by_frames, counted, probe

# swscale flags: bicubic chroma resampling, accurate rounding, full chroma
# interpolation on both sides. Without the last three swscale's fast path is
# off by 1-2 levels against the BT.601/709 formulas; bicubic rather than
# bilinear chroma makes an RGB -> yuv420p -> RGB round trip ~48 dB instead of
# ~44 dB PSNR on the test clips.
_SWS_FLAGS = (
    Interpolation.BICUBIC
    | Interpolation.ACCURATE_RND
    | Interpolation.FULL_CHR_H_INT
    | Interpolation.FULL_CHR_H_INP
)
_SWS_MATRIX = {"bt709": "ITU709", "bt601": "ITU601"}
_AVCOL_RANGE_JPEG = 2


@dataclass(frozen=True)
class Chunk:
    """A run of whole GOPs; pts in the video stream's time_base."""

    index: int
    start_pts: int | None  # inclusive; None for the first chunk (everything before)
    end_pts: int | None  # exclusive; None for the last chunk
    seek_pts: int  # keyframe pts the decoder seeks to
    frames: int  # exact number of frames in [start_pts, end_pts), from the packet index

    def contains(self, pts: int) -> bool:
        """True if a frame with this pts belongs to the chunk."""
        if self.start_pts is not None and pts < self.start_pts:
            return False
        return self.end_pts is None or pts < self.end_pts


def _sws_matrix(colorspace: str) -> str:
    try:
        return _SWS_MATRIX[colorspace]
    except KeyError:
        raise ValueError(
            f"unsupported colorspace {colorspace!r}; use 'bt709' or 'bt601'"
        ) from None


def to_rgb(frame: av.VideoFrame, colorspace: str, deep: bool = False) -> np.ndarray:
    """Convert a decoded frame to RGB.

    `colorspace` is "bt709" or "bt601" (the matrix to use). The frame is read as
    limited range unless it is tagged full range. Returns uint8 (H, W, 3), RGB
    order, full range 0..255; with `deep`, uint16 0..65535 (for sources of more
    than 8 bits: their low bits kept).
    """
    full = frame.color_range == _AVCOL_RANGE_JPEG or frame.format.name.startswith(
        "yuvj"
    )
    return frame.to_ndarray(
        format="rgb48le" if deep else "rgb24",
        src_colorspace=_sws_matrix(colorspace),
        src_color_range="JPEG" if full else "MPEG",
        dst_color_range="JPEG",
        interpolation=_SWS_FLAGS,
    )


def from_rgb(rgb: np.ndarray, colorspace: str) -> av.VideoFrame:
    """Convert an RGB image to a yuv420p frame, limited range, tagged with the matrix.

    `rgb` is uint8 (H, W, 3), RGB order, full range 0..255, with H and W even, or
    uint16 (0..65535), which gives a yuv420p10le frame.
    `colorspace` is "bt709" or "bt601". Returns a frame without pts.
    """
    if rgb.dtype not in (np.uint8, np.uint16) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 or uint16 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs even width and height, got {width}x{height}")
    deep = rgb.dtype == np.uint16
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb48le" if deep else "rgb24")
    return frame.reformat(
        format="yuv420p10le" if deep else "yuv420p",
        dst_colorspace=_sws_matrix(colorspace),
        dst_color_range="MPEG",
        interpolation=_SWS_FLAGS,
    )


def plan_chunks(info: VideoInfo, min_frames: int) -> list[Chunk]:
    """Group whole GOPs into chunks of at least `min_frames` frames (the last may be shorter).

    GOP boundaries are the keyframe pts; the first GOP also holds any frame
    shown before the first keyframe. Consecutive GOPs are merged until a chunk
    has >= min_frames frames. Frame counts per GOP come from the packet index
    `probe` read (``info.gop_frames``), so sum(c.frames) == info.frames.
    """
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    keys = list(info.keyframe_pts)
    gop_frames = info.gop_frames

    chunks: list[Chunk] = []
    first_gop = 0
    count = 0
    for g, n in enumerate(gop_frames):
        count += n
        last = g == len(gop_frames) - 1
        if count >= min_frames or last:
            chunks.append(
                Chunk(
                    index=len(chunks),
                    start_pts=None if first_gop == 0 else keys[first_gop],
                    end_pts=None if last else keys[g + 1],
                    seek_pts=keys[first_gop],
                    frames=count,
                )
            )
            first_gop, count = g + 1, 0
    return chunks


def _packets_from(container, stream, chunk: Chunk, info: VideoInfo):
    """Demux packets starting at a keyframe at or before chunk.seek_pts.

    Seeks to seek_pts; if the demuxer lands on a later keyframe (it searches by
    dts on some containers), seeks again to earlier keyframes, finally to the
    start of the file.
    """
    if chunk.start_pts is None:
        yield from container.demux(stream)
        return
    earlier = [k for k in info.keyframe_pts if k < chunk.seek_pts]
    for target in [chunk.seek_pts, *reversed(earlier), None]:
        if target is None:
            container.seek(0, backward=True, any_frame=False)
        else:
            container.seek(target, stream=stream, backward=True, any_frame=False)
        packets = container.demux(stream)
        first = next((p for p in packets if p.size), None)
        if first is None:
            return
        if target is None or first.pts is None or first.pts <= chunk.seek_pts:
            yield first
            yield from packets
            return


class DamagedChunk(ValueError):
    """Frames of a chunk could not be decoded (damaged data): how many are missing, how
    many came out flagged corrupt, and how many packets the decoder rejected."""

    def __init__(self, message: str, chunk: int, missing: int, corrupt: int, errors: int) -> None:
        super().__init__(message, chunk, missing, corrupt, errors)  # all in args: it pickles (Ray ships it)
        self.chunk, self.missing, self.corrupt, self.errors = chunk, missing, corrupt, errors

    @classmethod
    def of(cls, path: str, chunk: Chunk, missing: int, corrupt: int, errors: int) -> DamagedChunk:
        return cls(
            f"{path}: chunk {chunk.index}: {missing + corrupt} of {chunk.frames} frames could not be decoded "
            f"({missing} missing, {corrupt} flagged corrupt; {errors} packets rejected by the decoder)",
            chunk.index, missing, corrupt, errors,
        )

    def __str__(self) -> str:
        return self.args[0]

    @property
    def frames(self) -> int:
        return self.missing + self.corrupt


def _decode(stream, packet, errors: list[str]) -> list:
    """``stream.decode(packet)``, a damaged packet counted in ``errors`` instead of raised
    (the decoder goes on with the next one, as a player would)."""
    try:
        return stream.decode(packet)
    except av.InvalidDataError as exc:  # damaged data; anything else (memory, I/O, unsupported) is raised
        errors.append(str(exc))
        return []


def in_order(frames: Iterable[av.VideoFrame], depth: int = 4) -> Iterator[av.VideoFrame]:
    """``frames`` as the decoder puts them out (display order), their timestamps sorted
    over a window of ``depth`` frames. Some files label frames out of order: an AVI
    with MPEG-4 "packed B-frames" (DivX/XviD) gives each frame the timestamp of a
    neighbour (pts 1, 2, 3, 5, 4, 6, 8, 7 ...), although the decoder puts the
    pictures out in the right order. The set of timestamps is right; the k-th frame
    out takes the k-th smallest of them. Correctly labelled frames pass unchanged."""
    held: deque[av.VideoFrame] = deque()
    labels: list[int] = []

    def release(keep: int) -> Iterator[av.VideoFrame]:
        while len(held) > keep:
            out = held.popleft()
            out.pts = heapq.heappop(labels)
            yield out

    for frame in frames:
        if frame.pts is None:  # no label to sort: the caller refuses it
            yield from release(0)
            yield frame
            continue
        held.append(frame)
        heapq.heappush(labels, frame.pts)
        yield from release(depth)
    yield from release(0)


def _decoded_in_order(stream, packets: Iterable, errors: list[str]) -> Iterator[av.VideoFrame]:
    """The frames of ``packets`` (damaged ones counted in ``errors``), timestamps sorted
    (``in_order``): what every reader of a stream here decodes through."""
    return in_order(f for packet in packets for f in _decode(stream, packet, errors))


def _deinterlaced(frames: Iterable[av.VideoFrame], stream, fields: bool = False) -> Iterator[av.VideoFrame]:
    """``frames`` with those flagged interlaced deinterlaced by FFmpeg's bwdif, one frame
    out per frame in (timestamps kept); progressive frames pass unchanged. ``fields``:
    one frame out per field, every frame (twice the frames; timestamps in half the
    stream's time base: frame p's fields at 2p and 2p + its duration). bwdif looks one
    frame ahead, so each comes out once the next is in (the last on the flush)."""
    graph = av.filter.Graph()
    src = graph.add_buffer(template=stream)
    bwdif = graph.add("bwdif", "mode=send_field:parity=auto:deint=all" if fields else "mode=send_frame:parity=auto:deint=interlaced")
    want = stream.time_base / 2 if fields else stream.time_base
    sink = graph.add("buffersink")
    src.link_to(bwdif)
    bwdif.link_to(sink)
    graph.configure()
    for frame in itertools.chain(frames, [None]):
        graph.push(frame)
        while True:
            try:
                out = graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            # bwdif halves the time base (for its one frame per field): back to the stream's, per frame
            if out.pts is not None and out.time_base != want:
                out.pts = int(out.pts * Fraction(out.time_base) / want)
                out.time_base = want
            yield out


def decode_chunk(
    path: str, chunk: Chunk, info: VideoInfo, threads: int = 0, deep: bool = False
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode one chunk to RGB.

    Yields (pts, rgb) for exactly the frames whose pts is in
    [chunk.start_pts, chunk.end_pts), in presentation order; pts is in the
    video stream's time_base, rgb is uint8 (H, W, 3), full range 0..255,
    converted with `info.colorspace`. Timestamps are sorted as ``in_order`` says.
    A frame the decode-only scan found damaged (``info.damaged``) is concealed: its
    stand-in (the nearest decoded frame, perhaps in another chunk) is put out at its
    timestamp. Other packets the decoder rejects (and frames it puts out of order) are
    counted, not raised; after the last frame, raises DamagedChunk if frames are
    missing or came out flagged corrupt. An interlaced video (``info.interlaced``) is
    deinterlaced (``_deinterlaced``); the frames before the chunk that the decoder
    goes through serve as the first frame's neighbours.
    ``threads``: the decoder's threads (0: FFmpeg's choice, one per core of the machine,
    which oversubscribes a node shared by several actors). ``deep``: uint16 RGB
    (``to_rgb``), for a source of more than 8 bits restored to 10-bit output.
    """
    stored, seek = by_frames(info), _stored(chunk) if info.fields else chunk  # (seeking is in the stream's own units)
    gaps = {pts: stand_in for pts, stand_in in info.damaged if chunk.contains(pts)}
    # stand-ins in other chunks are decoded first; those in this chunk are kept as they go by
    kept = {pts: rgb for pts, rgb in _frames_at(path, sorted({s for s in gaps.values() if not chunk.contains(s)}), info, deep)}
    wanted = set(gaps.values())
    pending = sorted(gaps)
    if info.interlaced and chunk.start_pts is not None:
        # bwdif needs the frame before the chunk's first: start one GOP earlier (its frames are
        # decoded, then dropped), so the result does not depend on where the chunks are cut
        earlier = [k for k in stored.keyframe_pts if k < seek.seek_pts]
        if earlier:
            seek = dataclasses.replace(seek, seek_pts=earlier[-1])
    count = 0
    corrupt: set[int] = set()  # pts of frames the decoder flagged
    errors: list[str] = []
    last_pts: int | None = None
    with av.open(path) as container:
        stream = container.streams.video[0]
        if threads:
            stream.codec_context.thread_count = threads
            stream.codec_context.thread_type = "AUTO"  # frame threads too (PyAV's default, SLICE, barely helps H.264)

        def decoded() -> Iterator[av.VideoFrame]:
            for frame in _decoded_in_order(stream, _packets_from(container, stream, seek, stored), errors):
                if frame.is_corrupt and frame.pts is not None:
                    at = 2 * frame.pts if info.fields else frame.pts  # (a field view's units)
                    if at not in gaps:
                        corrupt.add(at)
                yield frame

        frames = _deinterlaced(decoded(), stream, info.fields) if info.interlaced else decoded()
        for frame in frames:
            if frame.pts is None:
                raise RuntimeError(f"{path}: decoded frame without pts in chunk {chunk.index}")
            if chunk.end_pts is not None and frame.pts >= chunk.end_pts:
                break  # frames come in presentation order: the chunk's are all out
            if not chunk.contains(frame.pts) or frame.pts in gaps:
                continue
            if last_pts is not None and frame.pts <= last_pts:  # damaged data upset the reordering
                errors.append(f"frame pts {frame.pts} after {last_pts}")
                continue
            last_pts = frame.pts
            rgb = to_rgb(frame, info.colorspace, deep)
            if frame.pts in wanted:
                kept[frame.pts] = rgb
            while pending and pending[0] < frame.pts:
                yield _concealed(path, chunk, pending.pop(0), gaps, kept)
            count += 1
            yield frame.pts, rgb
            if count == chunk.frames - len(gaps):
                break
    while pending:
        yield _concealed(path, chunk, pending.pop(0), gaps, kept)
    flagged = sum(1 for pts in corrupt if chunk.contains(pts))
    if count < chunk.frames - len(gaps) or flagged:
        raise DamagedChunk.of(path, chunk, chunk.frames - len(gaps) - count, flagged, len(errors))


def _stored(chunk: Chunk) -> Chunk:
    """A chunk of a field view (``probe.by_fields``) in the stream's own units."""
    start = None if chunk.start_pts is None else chunk.start_pts // 2
    end = None if chunk.end_pts is None else chunk.end_pts // 2
    return Chunk(chunk.index, start, end, chunk.seek_pts // 2, chunk.frames // 2)


def _concealed(path: str, chunk: Chunk, pts: int, gaps: dict[int, int], kept: dict[int, np.ndarray]) -> tuple[int, np.ndarray]:
    """A damaged frame's timestamp with its stand-in's picture."""
    rgb = kept.get(gaps[pts])
    if rgb is None:  # the scan decoded the stand-in, this decode did not
        raise DamagedChunk.of(path, chunk, 1, 0, 0)
    return pts, rgb


def _frames_at(path: str, wanted: list[int], info: VideoInfo, deep: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """The frames at the timestamps ``wanted`` (sorted), each decoded from its GOP."""
    plain = dataclasses.replace(info, damaged=())
    for pts in wanted:
        seek = max((k for k in info.keyframe_pts if k <= pts), default=info.keyframe_pts[0])
        yield from decode_chunk(path, Chunk(index=-1, start_pts=pts, end_pts=pts + 1, seek_pts=seek, frames=1), plain, deep=deep)


def scan(path: str, info: VideoInfo) -> VideoInfo:
    """The decode-only pass that finds the frames a video has but cannot put out (the
    decoder rejects their packets, drops them, or flags them corrupt), before any
    training or inference. Returns ``info`` with ``damaged``: each such frame's
    timestamp and its stand-in's, the nearest frame that decoded (the earlier one of two
    as near). Raises ValueError when no frame decodes."""
    expected: list[int] = []
    good: set[int] = set()
    errors: list[str] = []
    with av.open(path) as container:
        stream = container.streams.video[0]

        def packets():
            for packet in container.demux(stream):
                if counted(packet):
                    expected.append(packet.pts)
                yield packet

        for frame in _decoded_in_order(stream, packets(), errors):
            if frame.pts is not None and not frame.is_corrupt:
                good.add(frame.pts)
    shown = sorted(good.intersection(expected))
    if not shown:
        raise ValueError(f"{path}: none of its {len(expected)} frames can be decoded")
    damaged = []
    for pts in sorted(set(expected) - good):
        i = bisect.bisect_left(shown, pts)
        near = [shown[j] for j in (i - 1, i) if 0 <= j < len(shown)]
        damaged.append((pts, min(near, key=lambda s: (abs(s - pts), s))))
    return dataclasses.replace(info, damaged=tuple(damaged))


def parse_policy(policy: str) -> tuple[str, Fraction | None]:
    """("iframes"|"all", None) or ("fps", frames per second as a Fraction)."""
    if policy in ("iframes", "all"):
        return policy, None
    if isinstance(policy, str) and policy.startswith("fps:"):
        text = policy[4:].strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            return "fps", Fraction(text)
    raise ValueError(
        f"bad frame policy {policy!r}: use 'iframes', 'all' or 'fps:N' with N > 0"
    )


def fps_picker(fps: Fraction) -> Callable[[Fraction], bool]:
    """The "fps:N" policy as a test of each frame's time t (s from the first frame, in
    presentation order): for each multiple m of 1/N s, the first frame with t >= m."""
    next_k = 0  # index of the next multiple of 1/fps to satisfy

    def picks(t: Fraction) -> bool:
        nonlocal next_k
        if t < next_k / fps:
            return False
        next_k = math.floor(t * fps) + 1
        return True

    return picks


def iter_training_frames(path: str, policy: str, info: VideoInfo | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Sample frames of `path` for training.

    Yields (t, rgb): t is seconds from the first frame of the video stream
    (pts - start_pts) * time_base; rgb is uint8 (H, W, 3), full range 0..255.
    policy:
      "iframes" -- keyframes only (decoder skip_frame NONKEY: only they are decoded);
      "fps:N"   -- N frames per second (N a positive float): for each multiple
                   m of 1/N s, the first frame with t >= m (each frame at most once);
      "all"     -- every frame.
    `info`: the file's probe when the caller has it (else it is probed here).
    Raises ValueError naming the policy if it is malformed.
    """
    kind, fps = parse_policy(policy)
    info = info or probe(path)
    with av.open(path) as container:
        stream = container.streams.video[0]
        if kind == "iframes":
            stream.codec_context.skip_frame = "NONKEY"
        on_time = fps_picker(fps) if kind == "fps" else None
        errors: list[str] = []  # damaged packets are skipped here; inference reports them
        decoded = (f for f in _decoded_in_order(stream, container.demux(stream), errors) if not f.is_corrupt)
        if not info.interlaced:
            frames: Iterable[av.VideoFrame] = decoded
        elif kind == "iframes":  # keyframes are far apart: each deinterlaced on its own
            frames = (d for f in decoded for d in _deinterlaced([f], stream, info.fields))
        else:
            frames = _deinterlaced(decoded, stream, info.fields)
        for frame in frames:
            t = (frame.pts - info.start_pts) * info.time_base
            if on_time is not None and not on_time(t):
                continue
            yield float(t), to_rgb(frame, info.colorspace)
