"""Input discovery, output paths, reference mapping and metric sampling (no Ray)."""

import os

import pytest

from pipeline.measure import sample_indices
from pipeline.orchestrate import list_videos


def touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")


def test_folder_is_searched_recursively(tmp_path):
    src = tmp_path / "in"
    for rel in ("a.mp4", "sub/b.MKV", "sub/deep/c.webm", "sub/d.txt", ".hidden/e.mp4", "f.avi", "g.m4v", "h.mov"):
        touch(src / rel)
    jobs = list_videos(str(src), str(tmp_path / "out"), "mp4", None)
    assert [j.rel for j in jobs] == ["a.mp4", "f.avi", "g.m4v", "h.mov", os.path.join("sub", "b.MKV"), os.path.join("sub", "deep", "c.webm")]
    assert jobs[4].output == str(tmp_path / "out" / "sub" / "b.mp4")


def test_output_inside_input_is_not_listed(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "out" / "a.mp4")
    assert [j.rel for j in list_videos(str(tmp_path), str(tmp_path / "out"), "mp4", None)] == ["a.mp4"]


def test_references(tmp_path):
    touch(tmp_path / "in" / "x" / "a.mp4")
    touch(tmp_path / "ref" / "x" / "a.mp4")
    jobs = list_videos(str(tmp_path / "in"), str(tmp_path / "o"), "mkv", str(tmp_path / "ref"))
    assert jobs[0].reference == str(tmp_path / "ref" / "x" / "a.mp4") and jobs[0].output.endswith("a.mkv")
    with pytest.raises(ValueError, match="must be a folder"):
        list_videos(str(tmp_path / "in"), str(tmp_path / "o"), "mp4", str(tmp_path / "ref" / "x" / "a.mp4"))
    single = list_videos(str(tmp_path / "in" / "x" / "a.mp4"), str(tmp_path / "o"), "mp4", str(tmp_path / "ref" / "x" / "a.mp4"))
    assert single[0].rel == "a.mp4" and single[0].reference.endswith("ref/x/a.mp4")


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        list_videos(str(tmp_path / "nope"), str(tmp_path), "mp4", None)
    with pytest.raises(ValueError, match="only local paths"):
        list_videos("s3://bucket/prefix", str(tmp_path), "mp4", None)
    touch(tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="would overwrite its source"):
        list_videos(str(tmp_path), str(tmp_path), "mp4", None)


def test_two_inputs_with_one_output_are_refused(tmp_path):
    touch(tmp_path / "in" / "a.mp4")
    touch(tmp_path / "in" / "a.mkv")
    with pytest.raises(ValueError, match="would both be restored to"):
        list_videos(str(tmp_path / "in"), str(tmp_path / "out"), "mp4", None)


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
        path = os.path.join(os.path.dirname(__file__), "data", clip)
        every = list(iter_training_frames(path, "all"))
        idx = sample_indices(len(every), 7)
        got = frames_at(path, idx)
        assert [t for t, _ in got] == [every[i][0] for i in idx]
        assert all(np.array_equal(a, every[i][1]) for (_, a), i in zip(got, idx, strict=True))
    with pytest.raises(ValueError, match="sampled frame 999"):
        frames_at(path, [0, 999])
