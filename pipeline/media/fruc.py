"""Frame-rate up-conversion: new frames at the timestamps of a higher frame rate, made by
motion-compensated interpolation from the video's own motion (FFmpeg's ``minterpolate``:
bidirectional block motion estimation, overlapped-block motion compensation), with
scene cuts respected and the duration kept.

A cut is found with the same test as the multi-frame model's windows
(``windows.is_cut``, from the two frames either side alone); the frames on each side of a
cut are interpolated separately, and an output time between the last frame before a cut
and the first after it shows the last frame before (no frame mixes two shots). Output
times after the last input frame, up to the end of its display time, repeat it, so the
output lasts exactly as long as the input: N frames at ``rate_in`` give
ceil(N * rate_out / rate_in) frames at ``rate_out``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np

from pipeline.media.windows import luma_small, lumas_cut

#: minterpolate's planar 8-bit formats (it has no high-bit-depth path)
FORMATS = ("yuv420p", "yuv422p", "yuv444p", "yuvj420p", "yuvj444p", "gray")
#: bidirectional motion estimation, adaptive overlapped-block compensation, variable-size
#: blocks; its own scene detection off (cuts are ours)
MCI = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1:scd=none"


def parse_fps(spec: str, rate_in: Fraction | None) -> Fraction:
    """The output frame rate of ``spec``: ``"2x"`` (a multiple of the source's
    ``rate_in``), a number (``"60"``, ``"59.94"``: NTSC-style rates become n*1000/1001) or
    a fraction (``"60000/1001"``). Refused: not above the source's rate, or unreadable.
    With ``rate_in`` None only the form is checked (the source's rate is not known yet)."""
    s = str(spec).strip().lower()
    try:
        if s.endswith("x"):
            times = Fraction(s[:-1])
            if times <= 1:
                raise ValueError(f"fps {spec!r}: a multiple must be above 1 (frame-rate conversion only adds frames)")
            return times * rate_in if rate_in is not None else times
        rate = Fraction(s)
    except (ValueError, ZeroDivisionError) as e:
        if "multiple must be" in str(e):
            raise
        raise ValueError(f"fps {spec!r}: expected a multiple like 2x, a rate like 60 or 59.94, or a fraction like 60000/1001") from None
    if "/" not in s and rate.denominator != 1:
        ntsc = Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)
        if abs(float(ntsc - rate)) < 0.006:
            rate = ntsc
    if rate <= 0:
        raise ValueError(f"fps {spec!r}: a rate must be above 0")
    if rate_in is not None and rate <= rate_in:
        raise ValueError(f"fps {spec!r} is {float(rate):.3f} frames/s, not above the source's "
                         f"{float(rate_in):.3f}: frame-rate conversion only adds frames")
    return rate


def _copy(frame: av.VideoFrame, pts: int, time_base: Fraction) -> av.VideoFrame:
    """A new frame with ``frame``'s pixels and the given timestamp (``reformat()`` would
    return the frame itself)."""
    f = av.VideoFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name)
    f.pts, f.time_base = pts, time_base
    return f


def output_count(n: int, rate_in: Fraction, rate_out: Fraction) -> int:
    """Frames at ``rate_out`` that fill the display time of ``n`` frames at ``rate_in``."""
    return math.ceil(Fraction(n) * rate_out / rate_in)


def _segment(frames: list[av.VideoFrame], first: int, rate_in: Fraction, rate_out: Fraction) -> dict[int, av.VideoFrame]:
    """minterpolate over one shot whose first frame is input frame ``first``: its output
    frames by output index (times first/rate_in .. last/rate_in)."""
    if len(frames) == 1:
        j = math.ceil(Fraction(first) * rate_out / rate_in)
        return {j: frames[0]} if Fraction(j) / rate_out == Fraction(first) / rate_in else {}
    # a time base in which both rates' frame times are whole numbers
    tb = Fraction(1, math.lcm(rate_in.numerator, rate_out.numerator))
    step = Fraction(rate_in.denominator, rate_in.numerator) / tb
    f0 = frames[0]
    graph = av.filter.Graph()
    src = graph.add_buffer(width=f0.width, height=f0.height, format=f0.format.name, time_base=tb)
    mi = graph.add("minterpolate", f"fps={rate_out.numerator}/{rate_out.denominator}:{MCI}")
    sink = graph.add("buffersink")
    src.link_to(mi)
    mi.link_to(sink)
    graph.configure()
    out: dict[int, av.VideoFrame] = {}

    def drain() -> None:
        while True:
            try:
                f = graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            t = Fraction(f.pts) * f.time_base  # seconds from the video's first frame
            out[round(t * rate_out)] = f

    # minterpolate puts out a time only once it holds a frame after the next one: the shot's
    # last frame goes in twice more, so its last interval is interpolated too
    for i, frame in enumerate([*frames, frames[-1], frames[-1]]):
        graph.push(_copy(frame, int((first + i) * step), tb))
        drain()
    graph.push(None)
    drain()
    last = round(Fraction(first + len(frames) - 1) / rate_in * rate_out, 9)  # the last real frame's time, in output frames
    return {j: f for j, f in out.items() if j <= last}


def interpolate(frames: Iterable[av.VideoFrame], rate_in: Fraction, rate_out: Fraction) -> Iterator[av.VideoFrame]:
    """The frames of a constant-rate sequence (consecutive frames at ``rate_in``) at
    ``rate_out``: output frame j shows time j/rate_out from the first input frame; its
    ``pts`` is j (time base 1/rate_out). Input frames must be in one of ``FORMATS``."""
    shot: list[av.VideoFrame] = []
    first = 0  # input index of the shot's first frame
    last_luma: np.ndarray | None = None  # the newest frame's small luma for the cut test (each frame's computed once)
    j = 0  # next output index
    n = 0

    def flush(upto: int) -> Iterator[av.VideoFrame]:
        """Output frames j .. upto - 1: the shot's interpolation, and where it made none
        (after the shot's last frame) the input frame last shown at that time."""
        nonlocal j
        made = _segment(shot, first, rate_in, rate_out)
        while j < upto:
            f = made.get(j)
            if f is None:
                shown = math.floor(Fraction(j) / rate_out * rate_in) - first
                f = shot[min(max(shown, 0), len(shot) - 1)]
            yield _copy(f, j, 1 / rate_out)
            j += 1

    for frame in frames:
        if frame.format.name not in FORMATS:
            raise ValueError(f"frame-rate conversion takes 8-bit planar YUV frames ({', '.join(FORMATS)}), got {frame.format.name}")
        luma = luma_small(frame.to_ndarray(format="rgb24"))
        if shot and last_luma is not None and lumas_cut(last_luma, luma):
            yield from flush(output_count(n, rate_in, rate_out))
            shot, first = [], n
        shot.append(frame)
        last_luma = luma
        n += 1
    if shot:
        yield from flush(output_count(n, rate_in, rate_out))


def chunk_frames(paths: list[str]) -> Iterator[av.VideoFrame]:
    """The video frames of restored chunk files, in order."""
    for path in paths:
        with av.open(path) as c:
            yield from c.decode(c.streams.video[0])


def retime(chunk_paths: list[str], out_path: str, rate_in: Fraction, rate_out: Fraction, *, colorspace: str, crf: int,
           preset: str, codec: str, threads: int, sar: Fraction, start: Fraction = Fraction(0)) -> int:
    """The restored chunks' frames at ``rate_out`` (``interpolate``), encoded to the
    video-only file ``out_path``; returns the frames written. Output frame j is at
    ``start`` + j / rate_out seconds (``start``: the source's first frame time, so the
    audio stays in sync). The frames are taken as a constant-rate sequence at ``rate_in``."""
    from pipeline.media.encode import ChunkWriter

    frames = chunk_frames(chunk_paths)
    first = next(frames)  # (its size opens the writer)
    n = 0
    start = Fraction(start)
    tb = Fraction(1, math.lcm(rate_out.numerator, start.denominator))  # both the start and 1/rate_out are whole ticks
    step, offset = (1 / rate_out) / tb, start / tb
    with ChunkWriter(out_path, width=first.width, height=first.height, time_base=tb, rate=rate_out,
                     colorspace=colorspace, crf=crf, preset=preset, codec=codec, threads=threads, sar=sar) as writer:
        for f in interpolate(itertools.chain([first], frames), rate_in, rate_out):
            writer.write_i420(int(offset + f.pts * step), f.to_ndarray())
            n += 1
    return n
