"""Windows of consecutive frames for multi-frame models (DUF): each frame of a chunk with
``radius`` frames of context on each side, the same whichever chunk it falls in.

A chunk is decoded with a halo: the whole GOPs before and after it that hold its
``radius`` neighbours on each side (GOPs are the unit a decoder can start from), so a
window at a chunk's edge holds the same frames a whole-video pass would give it. A
window never reaches across a scene cut, nor past the first or last frame: the frames
beyond are replaced by the last one on the window's side of the cut (edge frames
repeat). A cut is decided from the two frames either side of it alone (``is_cut``), so
chunking cannot move one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from pipeline.media.chunks import Chunk, decode_chunk, fps_picker, parse_policy, plan_chunks
from pipeline.media.probe import VideoInfo

#: luma histogram bins of the cut test
BINS = 32
#: a cut where the luma histograms of two consecutive frames differ by more than CUT_HIST
#: (L1 distance of the normalised histograms, 0..2) and their mean absolute difference
#: (1/4 size, 0..255) is above CUT_MAD: a fast pan moves pixels but keeps the histogram,
#: a brightness change moves the histogram but little of each pixel. Checked on five real
#: clips (a film trailer with three cuts in 270 frames, two surveillance-style and two
#: test clips): the three cuts had MAD 42-46 and histogram distance 0.39-0.43; the
#: largest in-shot values were MAD 10.2 and distance 0.32 (not on the same frame pair).
CUT_HIST = 0.25
CUT_MAD = 20.0


def block_mean(x: np.ndarray, k: int) -> np.ndarray:
    """(H, W, C) shrunk k times by the mean of each k x k block (a partial last row or
    column of blocks left out; smaller than a block: returned as it is)."""
    h, w = x.shape[0] // k * k, x.shape[1] // k * k
    if h == 0 or w == 0:
        return x
    return x[:h, :w].reshape(h // k, k, w // k, k, x.shape[2]).mean(axis=(1, 3))


def luma_small(rgb: np.ndarray) -> np.ndarray:
    """A 1/4-size luma (BT.601 weights, 0..255 floats) of an RGB frame (8 or 16 bits)."""
    x = rgb.astype(np.float32) * (255.0 / 65535.0 if rgb.dtype == np.uint16 else 1.0)
    return block_mean(x, 4) @ np.array([0.299, 0.587, 0.114], np.float32)


def is_cut(a: np.ndarray, b: np.ndarray, hist: float = CUT_HIST, mad: float = CUT_MAD) -> bool:
    """Whether a scene cut lies between consecutive frames ``a`` and ``b`` (RGB)."""
    return lumas_cut(luma_small(a), luma_small(b), hist, mad)


def lumas_cut(ya: np.ndarray, yb: np.ndarray, hist: float = CUT_HIST, mad: float = CUT_MAD) -> bool:
    """``is_cut`` on the frames' ``luma_small`` (a stream computes each frame's once)."""
    if float(np.abs(ya - yb).mean()) <= mad:
        return False
    ha = np.histogram(ya, BINS, (0, 256))[0] / ya.size
    hb = np.histogram(yb, BINS, (0, 256))[0] / yb.size
    return float(np.abs(ha - hb).sum()) > hist


def window_positions(centre: int, radius: int, first: int, last: int, cut_after: Iterable[int]) -> list[int]:
    """The frame positions of the window around ``centre``: ``centre - radius`` ..
    ``centre + radius``, each replaced by the nearest one inside the shot (no cut between
    it and the centre) and inside ``first`` .. ``last``. ``cut_after``: positions p with
    a cut between p and p + 1."""
    lo, hi = first, last
    for p in cut_after:
        if p < centre:
            lo = max(lo, p + 1)
        else:
            hi = min(hi, p)
    return [min(max(centre + k, lo), hi) for k in range(-radius, radius + 1)]


def _gop_index(info: VideoInfo, pts: int) -> int:
    return list(info.keyframe_pts).index(pts)


def halo_chunks(info: VideoInfo, chunk: Chunk, radius: int) -> tuple[Chunk | None, Chunk | None]:
    """(the GOPs before ``chunk`` holding at least its ``radius`` previous frames, those
    after it holding its ``radius`` next ones), each as a Chunk to decode; None at the
    video's start or end (or with radius 0)."""
    keys, counts = list(info.keyframe_pts), list(info.gop_frames)
    first = 0 if chunk.start_pts is None else _gop_index(info, chunk.start_pts)
    last = len(keys) - 1 if chunk.end_pts is None else _gop_index(info, chunk.end_pts) - 1
    before = after = None
    if radius and first > 0:
        g, n = first, 0
        while g > 0 and n < radius:
            g -= 1
            n += counts[g]
        before = Chunk(-1, None if g == 0 else keys[g], keys[first], keys[g], n)
    if radius and last < len(keys) - 1:
        g, n = last, 0
        while g < len(keys) - 1 and n < radius:
            g += 1
            n += counts[g]
        after = Chunk(-1, keys[last + 1], None if g == len(keys) - 1 else keys[g + 1], keys[last + 1], n)
    return before, after


def windows(frames: Iterable[tuple[int, np.ndarray, bool]], radius: int) -> Iterator[tuple[int, np.ndarray]]:
    """(pts, window (2 * radius + 1, H, W, 3)) for each frame of ``frames`` -- (pts, rgb,
    wanted) in presentation order -- that is wanted. The first and last frames given
    are taken for the video's ends (windows repeat them): the caller gives ``radius``
    frames of context beyond the wanted ones wherever the video goes on. Holds
    2 * radius + 1 frames at a time."""
    buf: deque[tuple[int, np.ndarray, bool]] = deque()  # positions base .. base + len(buf) - 1
    cuts: list[int] = []  # positions p with a cut between p and p + 1
    base = centre = 0  # centre: the next position to emit
    last_luma = None  # the newest frame's luma_small

    def emit(last: int, ended: bool) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal centre
        while centre <= last and (ended or centre + radius <= last):
            pts, _, wanted = buf[centre - base]
            if wanted:
                pos = window_positions(centre, radius, 0, last, [c for c in cuts if centre - radius <= c < centre + radius])
                yield pts, np.stack([buf[p - base][1] for p in pos])
            centre += 1

    for pos, item in enumerate(frames):
        luma = luma_small(item[1])
        if last_luma is not None and lumas_cut(last_luma, luma):
            cuts.append(pos - 1)
        buf.append(item)
        last_luma = luma
        yield from emit(pos, False)
        while base < centre - radius:  # frames no window needs any more
            buf.popleft()
            base += 1
        while cuts and cuts[0] < base:
            cuts.pop(0)
    yield from emit(base + len(buf) - 1, True)


def chunk_windows(path: str, chunk: Chunk, info: VideoInfo, radius: int, threads: int = 0, deep: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """(pts, window) for every frame of ``chunk`` (``decode_chunk``'s frames, in order),
    the chunk decoded with its halo (``halo_chunks``)."""
    before, after = halo_chunks(info, chunk, radius)

    def frames() -> Iterator[tuple[int, np.ndarray, bool]]:
        if before is not None:  # the halo GOPs' last ``radius`` frames (not the GOPs: a 10 s GOP would be held whole)
            for pts, rgb in deque(decode_chunk(path, before, info, threads=threads, deep=deep), maxlen=radius):
                yield pts, rgb, False
        for pts, rgb in decode_chunk(path, chunk, info, threads=threads, deep=deep):
            yield pts, rgb, True
        if after is not None:
            for k, (pts, rgb) in enumerate(decode_chunk(path, after, info, threads=threads, deep=deep)):
                if k == radius:
                    break
                yield pts, rgb, False

    yield from windows(frames(), radius)


def training_windows(path: str, policy: str, info: VideoInfo, radius: int) -> Iterator[np.ndarray]:
    """The windows of the frames a training-frame policy picks (``media.chunks
    .iter_training_frames``: "iframes", "fps:N", "all"), built as a restore builds them;
    the video is decoded once, start to end, holding 2 * radius + 1 frames."""
    kind, fps = parse_policy(policy)
    keys = set(info.keyframe_pts)
    whole = plan_chunks(info, max(1, info.frames))[0]
    on_time = fps_picker(fps) if kind == "fps" else None

    def marked() -> Iterator[tuple[int, np.ndarray, bool]]:
        for pts, rgb in decode_chunk(path, whole, info):
            if on_time is not None:
                wanted = on_time((pts - info.start_pts) * info.time_base)
            else:
                wanted = kind == "all" or pts in keys
            yield pts, rgb, wanted

    for _, w in windows(marked(), radius):
        yield w
