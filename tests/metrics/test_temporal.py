"""Temporal consistency: temporal error against a reference, flicker where the source is still."""

import math
import os

import numpy as np
import pytest

from pipeline.metrics.fullref import rgb_to_y
from pipeline.metrics.resize import bicubic_resize_uint8
from pipeline.metrics.temporal import flicker, static_mask, temporal_error
from tests.conftest import DATA


def shifted(rgb: np.ndarray, dx: int) -> np.ndarray:
    return np.roll(rgb, dx, axis=1)


def test_temporal_error_compares_changes_not_frames(bird):
    a, b = bird, shifted(bird, 2)
    # an output that changes exactly as the reference does has no temporal error, whatever its per-frame error
    darker = lambda x: (x * 0.9).astype(np.uint8)  # noqa: E731
    assert temporal_error(a, b, a, b, crop=4) == 0
    assert temporal_error(darker(a), darker(b), a, b, crop=4) < 3
    # an output frozen while the reference moves: the error is the reference's own change
    frozen = temporal_error(a, a, a, b, crop=4)
    change = rgb_to_y(b) - rgb_to_y(a)
    assert frozen == pytest.approx(np.sqrt(np.mean(change[4:-4, 4:-4] ** 2)))
    assert frozen > 5
    with pytest.raises(ValueError, match="differ in size"):
        temporal_error(a, b[:-1], a, b, crop=0)


def test_flicker_sees_detail_invented_afresh_on_a_still_picture(bird):
    src = bird[::4, ::4].copy()  # 72x72 source, x4 output
    up = bicubic_resize_uint8(src, (288, 288))
    assert static_mask(src, src, 4, (288, 288)).all()
    assert flicker(up, up, src, src, 4) == 0  # a still source restored the same way twice
    rng = np.random.default_rng(0)
    jitter = [np.clip(up + rng.normal(0, 4, up.shape), 0, 255).astype(np.uint8) for _ in range(2)]
    f = flicker(jitter[0], jitter[1], src, src, 4)
    assert 2 < f < 6  # about the mean |difference| of two independent noise draws on Y
    # a pan over texture: nothing is still, nothing to measure (the bird's flat background would stay still)
    texture = rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)
    assert math.isnan(flicker(up, shifted(up, 8), texture, shifted(texture, 2), 4))
    # only the still part counts: a moving square leaves the rest measured
    moved = src.copy()
    moved[10:30, 10:30] = 255 - moved[10:30, 10:30]
    mask = static_mask(src, moved, 4, (288, 288))
    assert 0.8 < mask.mean() < 0.95 and not mask[60:100, 60:100].any()


def test_measure_video_reports_flicker_and_temporal_error(tmp_path):
    """On a real clip restored by bicubic, against itself as the reference: flicker of every
    method from the measured pairs, the temporal error of the bicubic upscale against the
    reference is that of an x2 round trip (small, not zero)."""
    from pipeline.measure import measure_video
    from pipeline.media.probe import probe

    clip = os.path.join(DATA, "carphone_gop10.mp4")  # 176x144: evaluated at x2 against itself downscaled
    from pipeline.evaluate import make_lr_clip

    lr = str(tmp_path / "lr.mp4")
    make_lr_clip(clip, lr, 2)
    info = probe(lr)
    got = measure_video(video="c", source=lr, output=None, reference=clip, scale=2, total_frames=info.frames, sample_frames=6,
                        pretrained=None, finetuned=None, niqe=False, temporal_pairs=3)
    s = got["summary"]
    assert s["flicker_bicubic"] is not None and 0 <= s["flicker_bicubic"] < 10
    assert s["terr_bicubic"] is not None and 0 < s["terr_bicubic"] < 10
    rows = [r for r in got["frames"] if r["terr"] is not None]
    assert len(rows) == 3 and all(r["method"] == "bicubic" for r in rows)
    none = measure_video(video="c", source=lr, output=None, reference=clip, scale=2, total_frames=info.frames, sample_frames=6,
                         pretrained=None, finetuned=None, niqe=False, temporal_pairs=0)["summary"]
    assert none["flicker_bicubic"] is None and none["terr_bicubic"] is None and none["psnr_bicubic"] == s["psnr_bicubic"]
