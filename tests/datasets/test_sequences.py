"""Synthesised training windows: the motion is what was asked, the centre frame is the
image's own pixels, and a window's frames are degraded alike."""

import numpy as np
import pytest
import torch

from pipeline.datasets.degrade import ArchiveDegradation
from pipeline.datasets.patches import PatchSampler
from pipeline.datasets.sequences import margin, sample_windows, synth_window
from tests.conftest import bird  # a real photograph


def region(size: int) -> np.ndarray:
    img = bird()
    return img[:size, :size].copy()


def test_integer_motion_moves_the_content_and_the_centre_is_the_image():
    r = region(120)
    m = margin(5, 2.0, 0.0)
    rng = np.random.default_rng(4)  # (its speed: 1.9 px/frame)
    w = synth_window(r, 5, 48, rng, max_speed=2.0, local=0.0)
    assert w.shape == (5, 3, 48, 48)
    top = (120 - 48) // 2
    centre = torch.from_numpy(r[top:top + 48, top:top + 48]).permute(2, 0, 1).float() / 255
    assert torch.equal(w[2], centre)  # the target is never resampled
    assert m < top
    # the other frames are the picture displaced along one trajectory: twice as far two frames
    # from the centre as one frame away, the opposite way after it (give or take the acceleration)
    def best_shift(a, b):
        errs = {(dy, dx): (a[:, 8:-8, 8:-8] - b[:, 8 + dy:40 + dy, 8 + dx:40 + dx]).abs().mean().item()
                for dy in range(-7, 8) for dx in range(-7, 8)}
        return np.array(min(errs, key=errs.get)), min(errs.values())

    (s0, e0), (s1, e1), (s3, e3) = (best_shift(w[t], w[2]) for t in (0, 1, 3))
    assert np.abs(s1).max() >= 1, s1  # this seed moves at least a pixel a frame
    assert np.abs(s0 - 2 * s1).max() <= 1 and np.abs(s3 + s1).max() <= 1, (s0, s1, s3)
    assert max(e0, e1, e3) < 0.05  # a displaced copy, not another picture
    assert not torch.allclose(w[0], w[2])


def test_local_motion_bends_the_picture_without_tearing():
    r = region(120)
    w = synth_window(r, 3, 48, np.random.default_rng(0), max_speed=0.0, local=1.5)
    moved = (w[0] - w[1]).abs().mean(0)
    assert moved.mean() > 0.005  # content moved
    # smooth motion: neighbouring pixels' frame difference changes little compared to the picture's own edges
    assert (w[0][:, 1:] - w[0][:, :-1]).abs().mean() < 1.5 * (w[1][:, 1:] - w[1][:, :-1]).abs().mean()


def test_small_regions_are_refused():
    with pytest.raises(ValueError, match="too small for 7 frames of 48 px"):
        synth_window(region(60), 7, 48, np.random.default_rng(0))


def test_windows_in_batches_and_degraded_alike():
    rng = np.random.default_rng(0)
    patch, frames, scale = 32, 5, 2
    sampler = PatchSampler([bird()], patch + 2 * margin(frames, 2.0, 0.5))
    lr, hr = sample_windows(sampler, 3, patch, frames, scale, rng)
    assert lr.shape == (3, frames, 3, 16, 16) and hr.shape == (3, 3, 32, 32)
    assert 0 <= lr.min() and lr.max() <= 1
    # one blur kernel and resize for all of a window's frames: identical frames stay identical,
    # where degrading them one by one draws a different kernel for each
    same = torch.from_numpy(bird()[:64, :64].copy()).permute(2, 0, 1).float().div(255)[None].repeat(4, 1, 1, 1)
    blur_only = ArchiveDegradation(p_clean=0.0, p_blur=1.0, p_noise=0.0, p_compress=0.0)
    w = blur_only.window(same, 4, np.random.default_rng(1))
    assert w.shape == (4, 3, 16, 16) and all(torch.equal(w[0], f) for f in w)
    alone = blur_only(same, 4, np.random.default_rng(1))
    assert not all(torch.equal(alone[0], f) for f in alone)
    # compression over the window as one stream; noise drawn per frame
    coded = ArchiveDegradation(p_clean=0.0, p_blur=0.0, p_noise=1.0, p_compress=1.0).window(same, 2, np.random.default_rng(2))
    assert coded.shape == (4, 3, 32, 32) and not torch.equal(coded[0], coded[1])


def test_a_mixed_batch_is_synthesised_windows_then_windows_of_the_videos():
    """Pretraining on real videos: the first batch - n_video windows come from the images,
    the last n_video from the videos' shots (here a flat grey clip, easy to tell apart)."""
    from pipeline.datasets.sequences import sample_mixed_windows, shot_windows

    frames, patch, scale = 3, 32, 2
    sampler = PatchSampler([bird()], patch + 2 * margin(frames, 2.0, 0.5))
    grey = np.full((5, 40, 48, 3), 77, np.uint8)  # one shot of five frames
    clips = shot_windows([grey], frames, patch)
    assert len(clips) == 3
    rng = np.random.default_rng(0)
    for n_video, batch in ((2, 5), (0, 3), (4, 4)):
        lr, hr = sample_mixed_windows(sampler, clips, batch, n_video, patch, frames, scale, rng)
        assert lr.shape == (batch, frames, 3, patch // scale, patch // scale) and hr.shape == (batch, 3, patch, patch)
        flat = [bool(torch.all((h - 77 / 255).abs() < 1e-6)) for h in hr]
        assert flat == [False] * (batch - n_video) + [True] * n_video
