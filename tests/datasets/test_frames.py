"""Training-frame selection: near-duplicates dropped, bounded uniform sample."""

import numpy as np

from pipeline.datasets.frames import drop_near_duplicates, reservoir
from tests.conftest import bird


def test_reservoir_bounds_and_keeps_order():
    out = reservoir(iter(range(1000)), 10, seed=0)
    assert len(out) == 10 and out == sorted(out) and out[-1] > 100
    assert reservoir(iter(range(5)), 10, seed=0) == list(range(5))


def test_near_duplicate_frames_are_dropped():
    img = bird()
    still = [img] * 5
    moved = [np.roll(img, 8 * k, axis=1) for k in range(1, 4)]
    kept = list(drop_near_duplicates(iter(still + moved + [moved[-1]]), threshold=2.0))
    assert len(kept) == 1 + 3  # the first still frame, then each real change
    assert len(list(drop_near_duplicates(iter(still), threshold=0))) == 5  # 0 keeps all
