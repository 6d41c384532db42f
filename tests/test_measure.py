"""Metric sampling (no Ray). Input discovery and output paths: test_storage.py."""

import os

import pytest

from pipeline.measure import sample_indices
from tests.conftest import DATA


def test_sample_indices():
    assert sample_indices(120, 4) == [0, 40, 79, 119]
    assert sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(0, 8) == []


def test_frames_at_matches_a_sequential_decode():
    """Sampling decodes only the GOPs it needs, and gets the same frames and times as
    decoding the whole clip (open-GOP clip included)."""
    import numpy as np

    from pipeline.measure import frames_at
    from pipeline.media.chunks import iter_training_frames

    for clip in ("bbb_320x180.mp4", "carphone_gop10.mp4"):
        path = os.path.join(DATA, clip)
        every = list(iter_training_frames(path, "all"))
        idx = sample_indices(len(every), 7)
        got = frames_at(path, idx)
        assert [t for t, _ in got] == [every[i][0] for i in idx]
        assert all(np.array_equal(a, every[i][1]) for (_, a), i in zip(got, idx, strict=True))
    with pytest.raises(ValueError, match="sampled frame 999"):
        frames_at(path, [0, 999])
