"""The evaluation's clip degradations (pipeline.evaluate): each makes the low-resolution
clip it names, and the estimators read back what was done."""

import os

import av
import numpy as np
import pytest

from pipeline.estimate import estimate
from pipeline.evaluate import make_lr_clip, parse_clip_degradation
from tests.conftest import DATA

CLIP = os.path.join(DATA, "carphone_gop10.mp4")


def _frames(path):
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("lr")
    out = {}
    for name in ("bicubic", "blur1.6", "noise5", "x264crf30", "mpeg4q8"):
        path = str(root / f"{name}.mp4")
        assert make_lr_clip(CLIP, path, 2, max_frames=20, degrade=name) == (88, 72)
        with av.open(path) as c:
            out[name] = (path, c.streams.video[0].codec_context.name, _frames(path))
    return out


def test_each_degradation_makes_its_clip(clips):
    ref = np.stack(clips["bicubic"][2]).astype(np.float64)
    assert clips["bicubic"][1] == "h264" and clips["mpeg4q8"][1] == "mpeg4"
    for name, (_, _, frames) in clips.items():
        assert len(frames) == 20, name
    rms = {n: float(np.sqrt(np.mean((np.stack(f).astype(np.float64) - ref) ** 2))) for n, (_, _, f) in clips.items()}
    assert rms["bicubic"] == 0
    assert 3.5 < rms["noise5"] < 7  # grey noise of sigma 5 (clipped at 0/255, then chroma subsampled)
    for n in ("blur1.6", "x264crf30", "mpeg4q8"):
        assert rms[n] > 1, (n, rms[n])
    # blur-and-subsample is softer than bicubic: less energy in the finest detail
    def detail(frames):
        y = np.stack(frames).astype(np.float64).mean(-1)
        return float(np.mean(np.abs(np.diff(y, axis=2))))
    assert detail(clips["blur1.6"][2]) < 0.9 * detail(clips["bicubic"][2])


def test_the_estimates_follow_the_degradation(clips):
    est = {n: estimate(p, f[::2], 2) for n, (p, _, f) in clips.items()}
    assert est["mpeg4q8"].codec == "mpeg4" and est["mpeg4q8"].qp == pytest.approx(16, abs=1.5)  # FFmpeg exports 2x the quantiser
    assert est["x264crf30"].qp > 25 and est["bicubic"].qp < 1  # lossless
    assert est["noise5"].noise_sigma > est["bicubic"].noise_sigma + 2
    assert est["blur1.6"].blur_sigma > est["bicubic"].blur_sigma
    # the blurred frames keep less fine detail: below train.min_detail's default, the clean ones above it
    assert est["blur1.6"].detail < 0.15 < est["bicubic"].detail


@pytest.mark.parametrize("name", ["bilinear", "blur", "blur-1", "x264crf60", "mpeg4q1", "noise0"])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="clip degradation"):
        parse_clip_degradation(name)


def test_noise_is_read_from_the_quietest_blocks_not_from_texture():
    """Set5 at x2 (butterfly's wings are fine stripes; 114-256 px images, few blocks):
    clean images read little noise, the same with grey noise of sigma 5 read about 5. The
    first estimator read woman 3.11 clean and 6.61 noisy."""
    from pipeline.benchmark import load_rgb
    from pipeline.estimate import estimate_noise
    from pipeline.metrics.resize import bicubic_resize_uint8

    rng = np.random.default_rng(0)
    for name in ("baby", "bird", "butterfly", "head", "woman"):
        hr = load_rgb(os.path.join(DATA, "set5", "HR", f"{name}.png"))[0]
        lr = bicubic_resize_uint8(hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2], (hr.shape[0] // 2, hr.shape[1] // 2))
        noisy = np.clip(lr + rng.normal(0, 5, lr.shape[:2])[..., None], 0, 255).round().astype(np.uint8)
        clean_read, noisy_read = estimate_noise([lr]), estimate_noise([noisy])
        assert clean_read < 2.5, (name, clean_read)
        assert 4.0 < noisy_read < 6.5, (name, noisy_read)
