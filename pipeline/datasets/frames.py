"""Which decoded frames of a video become training frames: near-duplicates dropped,
then a bounded uniform sample. Both work on streams, holding at most the kept frames."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


def reservoir(frames: Iterable[np.ndarray], k: int, seed: int) -> list[np.ndarray]:
    """A uniform sample of at most ``k`` items of an iterator, in stream order,
    holding at most ``k`` in memory."""
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, np.ndarray]] = []
    for i, f in enumerate(frames):
        if i < k:
            kept.append((i, f))
        else:
            j = int(rng.integers(0, i + 1))
            if j < k:
                kept[j] = (i, f)
    return [f for _, f in sorted(kept, key=lambda t: t[0])]


def drop_near_duplicates(frames: Iterable[np.ndarray], threshold: float) -> Iterator[np.ndarray]:
    """Frames whose mean absolute difference from the last kept frame (on a 1/4-size grey
    copy, 0-255 scale) is at least ``threshold``; the first frame is always kept. A
    window of frames (T, H, W, 3) is compared by its centre frame."""
    last = None
    for f in frames:
        c = f[len(f) // 2] if f.ndim == 4 else f
        grey = c[::4, ::4].mean(axis=2, dtype=np.float32)
        if threshold <= 0 or last is None or grey.shape != last.shape or float(np.abs(grey - last).mean()) >= threshold:
            last = grey
            yield f
