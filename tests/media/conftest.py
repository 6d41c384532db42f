"""Fixtures of the media tests: the two real clips (tests/data/SOURCES.md) and their
frames decoded plainly from the start.

bbb_320x180.mp4: 50 frames, 25 fps, GOP 12 with B-frames and open GOPs, AAC audio.
carphone_gop10.mp4: 40 frames, 29.97 fps, closed GOP 10, no audio.
"""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from pipeline.media.chunks import to_rgb
from pipeline.media.probe import probe
from tests.conftest import DATA

BBB = os.path.join(DATA, "bbb_320x180.mp4")
CARPHONE = os.path.join(DATA, "carphone_gop10.mp4")
CLIPS = [BBB, CARPHONE]


def sequential_decode(path: str, colorspace: str) -> list[tuple[int, np.ndarray]]:
    """(pts, rgb uint8 HxWx3) for every frame, plain decode from the start."""
    with av.open(path) as container:
        return [(f.pts, to_rgb(f, colorspace)) for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def reference():
    """clip path -> (VideoInfo, sequentially decoded frames)."""
    out = {}
    for path in CLIPS:
        info = probe(path)
        out[path] = (info, sequential_decode(path, info.colorspace))
    return out
