"""Listing an input (local and S3), the names of every output, and the done markers."""

import os
import shutil

import pytest

from pipeline.config import build_config
from pipeline.run.driver import list_videos
from pipeline.run.layout import DoneMarkers, Layout, list_entries
from pipeline.storage import Entry, Store
from pipeline.storage.uri import check_uri
from tests.conftest import DATA


def test_archive_listing_on_s3(s3_env, tmp_path):
    bucket = s3_env.bucket()
    for k in ("tapes/a.mp4", "tapes/1994/b.MKV", "tapes/notes.txt", "tapes/.trash/c.mp4", "tapes/out/old.mp4", "other/d.mp4"):
        s3_env.client().put_object(Bucket=bucket, Key=k, Body=b"x")
    cfg = build_config("tiny")
    jobs = list_videos(f"s3://{bucket}/tapes", f"s3://{bucket}/tapes/out", cfg)
    assert [j.rel for j in jobs] == ["1994/b.MKV", "a.mp4"]
    tag = f"x2-{cfg.hash(gpu=False)}"
    assert jobs[0].output == f"s3://{bucket}/tapes/out/{tag}/1994/b.mp4"
    assert jobs[0].size == 1 and jobs[0].version.startswith("etag:")
    single = list_videos(f"s3://{bucket}/tapes/a.mp4", str(tmp_path / "o"), cfg, reference=f"s3://{bucket}/hr/a.mp4")
    assert [(j.rel, j.reference) for j in single] == [("a.mp4", f"s3://{bucket}/hr/a.mp4")]


def test_local_listing_and_layout(tmp_path):
    src = tmp_path / "in"
    for rel in ("a.mp4", "sub/b.MKV", "sub/deep/c.webm", "sub/d.txt", ".hidden/e.mp4", "f.avi", "out/x.mp4"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"x")
    cfg = build_config("tiny", overrides=["media.container=mkv"])
    jobs = list_videos(str(src), str(src / "out"), cfg)
    assert [j.rel for j in jobs] == ["a.mp4", "f.avi", "sub/b.MKV", "sub/deep/c.webm"]
    assert jobs[2].output == str(src / "out" / f"x2-{cfg.hash(gpu=False)}" / "sub" / "b.mkv")
    # another config (scale, model, training, encoding) writes beside, never over
    other = list_videos(str(src), str(src / "out"), build_config("tiny", overrides=["train.steps=7"]))
    assert other[0].output != list_videos(str(src), str(src / "out"), build_config("tiny"))[0].output
    with pytest.raises(FileNotFoundError, match="input not found"):
        list_videos(str(tmp_path / "nope"), str(tmp_path), cfg)
    with pytest.raises(ValueError, match="unsupported location"):
        check_uri("ftp://host/x", "--input")
    with pytest.raises(ValueError, match="must be a folder"):
        list_videos(str(src), str(tmp_path / "o"), cfg, reference=str(src / "a.mp4"))


def test_done_markers_decide_skip_collision_and_change(tmp_path):
    """A video is skipped only when its marker matches its content and the config;
    a second input restoring to the same output is refused, not written over."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(os.path.join(DATA, "carphone_gop10.mp4"), src / "a.mp4")
    shutil.copy(os.path.join(DATA, "carphone_gop10.mp4"), src / "a.mkv")
    cfg = build_config("tiny")
    store = Store()
    layout = Layout.of(str(tmp_path / "out"), cfg, gpu=False)
    markers = DoneMarkers(store, layout, cfg.hash(gpu=False))

    def jobs(folder):
        return [layout.job(e, r) for e, r in list_entries(store, str(folder), layout.root, None)]

    a_mkv, a_mp4 = jobs(src)
    assert a_mkv.output == a_mp4.output
    assert markers.state(a_mp4) == ("new", None)
    markers.mark(a_mkv, "run-1")
    assert markers.state(a_mkv) == ("skip", "run-1")
    assert markers.state(a_mp4) == ("collision", str(src / "a.mkv"))
    moved = tmp_path / "moved"
    shutil.copytree(src, moved)
    shutil.copystat(src / "a.mkv", moved / "a.mkv")
    assert markers.state(jobs(moved)[0]) == ("skip", "run-1")  # same file, archive moved
    (moved / "a.mkv").write_bytes(b"other content")
    assert markers.state(jobs(moved)[0])[0] == "collision"  # another file, same name
    os.utime(src / "a.mkv", ns=(1, 1))  # the archive's file was replaced
    assert markers.state(jobs(src)[0]) == ("changed", "run-1")


def test_precision_and_device_name_another_output_folder():
    """Outputs that differ in pixels never share a folder (and never skip each other)."""
    base = build_config("tiny")
    tags = {Layout.of("/out", base, gpu=False).tag, Layout.of("/out", base, gpu=True).tag,
            Layout.of("/out", build_config("tiny", overrides=["infer.precision=bf16"]), gpu=False).tag}
    assert len(tags) == 3
    same = Layout.of("/out", build_config("tiny", overrides=["infer.actors=3", "metrics.sample_frames=9"]), gpu=False).tag
    assert same == Layout.of("/out", base, gpu=False).tag  # speed and measurement settings do not change pixels


def test_names_that_would_escape_the_output_fail_alone(s3_env, tmp_path):
    bucket = s3_env.bucket()
    for k in ("tapes/ok.mp4", "tapes//abs.mp4", "tapes/a//b.mp4", "tapes/a/./c.mp4", "tapes2/other.mp4"):
        s3_env.client().put_object(Bucket=bucket, Key=k, Body=b"x")
    cfg = build_config("tiny")
    jobs = {j.rel: j for j in list_videos(f"s3://{bucket}/tapes", str(tmp_path / "out"), cfg)}
    assert set(jobs) == {"ok.mp4", "/abs.mp4", "a//b.mp4"}  # "tapes2/" is not under "tapes/"; "." parts are hidden
    assert jobs["ok.mp4"].problem is None and jobs["ok.mp4"].output.startswith(str(tmp_path / "out"))
    for rel in ("/abs.mp4", "a//b.mp4"):
        assert "unusable name" in jobs[rel].problem and jobs[rel].output == ""


def test_hostile_keys_cannot_write_outside_the_output(s3_env, tmp_path):
    """Keys with '..', absolute parts, NUL, unicode, and names too long for the output: each
    either maps under OUT or fails alone with the reason; derived names stay within limits."""
    bucket = s3_env.bucket()
    long_key = "tapes/" + "v" * 1020 + ".mp4"  # S3 keys go to 1,024 bytes; OUT/x2-<hash>/ would pass it
    for k in ("tapes/../../etc/passwd.mp4", "tapes/a/../b.mp4", "tapes/nul\x00.mp4", "tapes/\u6620\u50cf \u2615.mp4",
              long_key, "tapes/" + "w" * 300 + ".mp4"):
        s3_env.client().put_object(Bucket=bucket, Key=k, Body=b"x")
    assert {"tapes/../../etc/passwd.mp4", "tapes/a/../b.mp4", "tapes/nul\x00.mp4"} <= set(s3_env.keys(bucket))  # stored as sent
    cfg = build_config("tiny")
    for out in (f"s3://{bucket}/out", str(tmp_path / "out")):
        jobs = {j.rel: j for j in list_videos(f"s3://{bucket}/tapes", out, cfg)}
        assert "../../etc/passwd.mp4" not in jobs and "a/../b.mp4" not in jobs  # dot parts are hidden: never listed
        assert "unusable name" in jobs["nul\x00.mp4"].problem
        assert jobs["\u6620\u50cf \u2615.mp4"].problem is None
        assert "name too long" in jobs[long_key[6:]].problem
        long_local = jobs["w" * 300 + ".mp4"]
        if out.startswith("s3://"):  # a 304-byte name is a fine S3 key; its derived names too
            assert long_local.problem is None
        else:
            assert "name too long: an output file name would be 304 bytes" in long_local.problem
        for j in jobs.values():
            assert j.problem or (j.output.startswith(out + "/") and "/../" not in j.output)
    layout = Layout.of(str(tmp_path / "out"), cfg, gpu=False)
    job = layout.job(Entry("d/" + "\u00e9" * 125 + ".mp4", "u", 1, "v"), None)  # a 254-byte name
    for derived in (layout.done(job), layout.checkpoint(job, "h" * 12), layout.work(job)):
        name = os.path.basename(derived)
        assert len(name.encode()) <= 255 and derived.startswith(str(tmp_path / "out") + "/"), derived


def test_bucket_root_and_output_around_input(s3_env, tmp_path):
    bucket = s3_env.bucket()
    s3_env.client().put_object(Bucket=bucket, Key="a.mp4", Body=b"x")
    s3_env.client().put_object(Bucket=bucket, Key="out/tapes/b.mp4", Body=b"x")
    cfg = build_config("tiny")
    assert [j.rel for j in list_videos(f"s3://{bucket}", f"s3://{bucket}/out", cfg)] == ["a.mp4"]  # bucket root; OUT left out
    assert [j.rel for j in list_videos(f"s3://{bucket}/", str(tmp_path), cfg)] == ["a.mp4", "out/tapes/b.mp4"]
    # the input inside the output prefix is still listed
    assert [j.rel for j in list_videos(f"s3://{bucket}/out/tapes", f"s3://{bucket}/out", cfg)] == ["b.mp4"]
    assert Store().names(f"s3://{bucket}") == {"a.mp4"}
    with pytest.raises(ValueError, match="whole bucket"):
        Store().delete_tree(f"s3://{bucket}")
