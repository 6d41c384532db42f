"""GOP chunks: planned at keyframes, each decodable alone, frame-exact against a sequential decode; training frames."""

from __future__ import annotations

import dataclasses
import itertools
from fractions import Fraction

import numpy as np
import pytest

from pipeline.media.chunks import (
    DamagedChunk,
    decode_chunk,
    iter_training_frames,
    plan_chunks,
)
from pipeline.media.probe import probe
from tests.media.conftest import BBB, CARPHONE, CLIPS


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
def test_decode_chunks_equalsequential_decode(reference, path, min_frames):
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
