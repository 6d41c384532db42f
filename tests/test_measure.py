"""Metric sampling (no Ray). Input discovery and output paths: test_storage.py."""

import os

import numpy as np
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


def test_a_padded_or_cropped_output_is_measured_on_the_picture_it_shows():
    """Padded: the output's frames are cut back to the picture; cropped: the other
    methods and the reference are cut to the part the output shows."""
    from pipeline.measure import Samples, _on_the_output
    from pipeline.media.geometry import Geometry

    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    padded = np.zeros((20, 40, 3), np.uint8)
    padded[:, 4:34] = picture
    samples = Samples([0], [(0.0, picture[::2, ::2])], [picture.copy()])
    every, s, _ = _on_the_output(Geometry(2.0, (20, 30), (20, 40), (0, 4)), {"bicubic": [picture], "output": [padded]}, samples, None)
    assert np.array_equal(every["output"][0], picture) and np.array_equal(s.refs[0], picture)
    cropped = picture[6:16]
    every, s, _ = _on_the_output(Geometry(2.0, (20, 30), (10, 30), (-6, 0)), {"bicubic": [picture], "output": [cropped]}, samples, None)
    assert np.array_equal(every["bicubic"][0], cropped) and np.array_equal(s.refs[0], cropped)
    assert np.array_equal(every["output"][0], cropped)
