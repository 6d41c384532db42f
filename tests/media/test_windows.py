"""Windows of consecutive frames for multi-frame models: a chunk's windows, decoded with
its halo, equal a whole-video pass's; windows stop at scene cuts and at the video's ends."""

from __future__ import annotations

import av
import numpy as np
import pytest

from pipeline.media.chunks import plan_chunks
from pipeline.media.probe import probe
from pipeline.media.windows import chunk_windows, is_cut, window_positions, windows
from tests.media.conftest import BBB, CARPHONE, CLIPS, sequential_decode


def whole_pass(path: str, radius: int) -> list[tuple[int, np.ndarray]]:
    """The windows of every frame from one plain decode of the whole video."""
    info = probe(path)
    return list(windows(((p, rgb, True) for p, rgb in sequential_decode(path, info.colorspace)), radius))


@pytest.mark.parametrize("path", CLIPS)
@pytest.mark.parametrize("min_frames", [1, 13])
def test_chunked_windows_equal_a_whole_video_pass(path, min_frames):
    info = probe(path)
    radius = 3
    whole = whole_pass(path, radius)
    chunked = [w for c in plan_chunks(info, min_frames) for w in chunk_windows(path, c, info, radius)]
    assert len(plan_chunks(info, min_frames)) > 1
    assert [p for p, _ in chunked] == [p for p, _ in whole] and len(whole) == info.frames
    for (p, a), (_, b) in zip(chunked, whole, strict=True):
        assert a.shape == (2 * radius + 1, info.height, info.width, 3)
        assert np.array_equal(a, b), f"window of pts {p} differs"
    # the centre is the frame itself; the video's first window repeats its first frame
    frames = sequential_decode(path, info.colorspace)
    assert all(np.array_equal(w[radius], f) for (_, w), (_, f) in zip(whole, frames, strict=True))
    assert all(np.array_equal(whole[0][1][k], frames[0][1]) for k in range(radius + 1))
    assert np.array_equal(whole[0][1][radius + 1], frames[1][1])
    assert all(np.array_equal(whole[-1][1][k], frames[-1][1]) for k in range(radius, 2 * radius + 1))


def test_window_positions_stop_at_cuts_and_ends():
    assert window_positions(5, 3, 0, 20, []) == [2, 3, 4, 5, 6, 7, 8]
    assert window_positions(1, 3, 0, 20, []) == [0, 0, 0, 1, 2, 3, 4]
    assert window_positions(5, 3, 0, 6, []) == [2, 3, 4, 5, 6, 6, 6]
    assert window_positions(5, 3, 0, 20, [3]) == [4, 4, 4, 5, 6, 7, 8]  # a cut between 3 and 4
    assert window_positions(5, 3, 0, 20, [6]) == [2, 3, 4, 5, 6, 6, 6]  # a cut between 6 and 7
    assert window_positions(5, 3, 0, 20, [5]) == [2, 3, 4, 5, 5, 5, 5]  # right after the centre


def spliced(tmp_path, gop: int) -> tuple[str, int]:
    """A 176x144 clip: 20 carphone frames, then 20 of Big Buck Bunny (cropped): one cut,
    after frame 19."""
    a = [rgb for _, rgb in sequential_decode(CARPHONE, "bt601")][:20]
    b = [rgb[18:162, 72:248] for _, rgb in sequential_decode(BBB, probe(BBB).colorspace)][:20]
    path = str(tmp_path / "spliced.mp4")
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 176, 144, "yuv420p"
        s.options = {"crf": "12", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0"}
        for rgb in a + b:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path, 19


def test_windows_do_not_reach_across_a_scene_cut(tmp_path):
    path, last_a = spliced(tmp_path, gop=8)  # the cut is inside a GOP and near chunk edges
    info = probe(path)
    frames = [rgb for _, rgb in sequential_decode(path, info.colorspace)]
    cuts = [i for i in range(len(frames) - 1) if is_cut(frames[i], frames[i + 1])]
    assert cuts == [last_a]  # found, and no false cut in either shot (carphone moves, the bunny pans)
    radius = 3
    got = {p: w for c in plan_chunks(info, 8) for p, w in chunk_windows(path, c, info, radius)}
    pts = sorted(got)
    for i, p in enumerate(pts):
        want = [frames[j] for j in window_positions(i, radius, 0, len(frames) - 1, cuts)]
        assert all(np.array_equal(x, y) for x, y in zip(got[p], want, strict=True)), f"frame {i}"
    # the last frame of the first shot sees only its own shot: the next three repeat it
    assert all(np.array_equal(got[pts[last_a]][k], frames[last_a]) for k in range(radius, 2 * radius + 1))
    assert np.array_equal(got[pts[last_a + 1]][0], frames[last_a + 1])


def test_a_brightness_change_or_a_pan_is_not_a_cut():
    _, rgb = sequential_decode(CARPHONE, "bt601")[0]
    brighter = np.clip(rgb.astype(np.int16) + 15, 0, 255).astype(np.uint8)
    shifted = np.roll(rgb, 24, axis=1)
    assert not is_cut(rgb, shifted) and not is_cut(rgb, rgb) and not is_cut(rgb, brighter)
    assert is_cut(rgb, np.full_like(rgb, 250))


@pytest.mark.parametrize("policy", ["fps:4", "iframes", "all"])
def test_training_windows_are_the_restore_windows_of_the_picked_frames(policy):
    from pipeline.media.chunks import iter_training_frames
    from pipeline.media.windows import training_windows

    info = probe(BBB)
    picked = [rgb for _, rgb in iter_training_frames(BBB, policy, info)]
    frames = [rgb for _, rgb in sequential_decode(BBB, info.colorspace)]
    at = [next(i for i, f in enumerate(frames) if np.array_equal(f, p)) for p in picked]
    whole = [w for _, w in whole_pass(BBB, 2)]
    got = list(training_windows(BBB, policy, info, 2))
    assert len(got) == len(picked) and len(got) > 1
    assert all(np.array_equal(g, whole[i]) for g, i in zip(got, at, strict=True))


def test_training_clips_split_at_the_cut_and_their_windows_stay_in_one_shot(tmp_path):
    """Windows a multi-frame model pretrains on, cut from a video file: the frames shrunk
    by block means, one array per shot, and no window spanning the cut."""
    from pipeline.datasets.sequences import clip_shots, shot_windows

    path, last_a = spliced(tmp_path, gop=8)
    frames = [rgb for _, rgb in sequential_decode(path, probe(path).colorspace)]
    shots = clip_shots(path, downscale=2)
    assert [s.shape for s in shots] == [(last_a + 1, 72, 88, 3), (len(frames) - last_a - 1, 72, 88, 3)]
    mean = frames[5].reshape(72, 2, 88, 2, 3).mean(axis=(1, 3))
    assert np.abs(shots[0][5].astype(float) - mean).max() <= 0.5  # the block mean, rounded
    wins = shot_windows(shots, 7, 64)
    assert len(wins) == (last_a + 1 - 6) + (len(frames) - last_a - 1 - 6)
    assert all(any(np.shares_memory(w, s) for s in shots) for w in wins)  # views, not copies
    assert shot_windows(shots, 7, 80) == []  # 72 px shots cannot give 80 px patches
    with pytest.raises(ValueError, match="downscale must be >= 1"):
        clip_shots(path, downscale=0)
