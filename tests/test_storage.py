"""Storage on a real S3-protocol server (moto's server mode on loopback) and on local
folders: the same calls, atomic commits, streamed listing, scratch copies, reports
through boto3 and pyarrow, and SQL over them."""

import os
import shutil

import pytest

from jobs.query import EXAMPLES, query
from pipeline import reports
from pipeline.config import build_config
from pipeline.orchestrate import Layout, Run, iter_videos, list_videos
from pipeline.storage import Entry, Store, check_uri
from tests.test_reports import video_row

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    server = request.getfixturevalue("s3_env")
    return f"s3://{server.bucket()}/some/prefix"


def test_same_calls_on_both_stores(root, tmp_path):
    store = Store(scratch_dir=str(tmp_path / "scratch"))
    uri = f"{root}/a/b.bin"
    assert not store.exists(uri) and store.read_bytes(uri, missing_ok=True) is None
    with pytest.raises(FileNotFoundError, match="b.bin"):
        store.read_bytes(uri)
    store.write_bytes(uri, b"hello")
    assert store.exists(uri) and store.read_bytes(uri) == b"hello"
    e = store.entry(uri, "a/b.bin")
    assert e.size == 5 and e.rel == "a/b.bin" and e.version
    local = tmp_path / "f.bin"
    local.write_bytes(b"x" * 1000)
    store.put_file(str(local), f"{root}/a/c.bin")
    assert store.read_bytes(f"{root}/a/c.bin") == b"x" * 1000
    store.write_bytes(f"{root}/.hidden/x.mp4", b"1")
    store.write_bytes(f"{root}/z/.x.mp4", b"1")
    store.write_bytes(f"{root}/out/d.mp4", b"1")
    listed = store.list_files(root, skip=f"{root}/out")
    assert not isinstance(listed, list)  # a stream, not a list held in memory
    assert [x.rel for x in listed] == ["a/b.bin", "a/c.bin"]
    assert store.names(f"{root}/a") == {"b.bin", "c.bin"}
    assert store.names(f"{root}/nothing") == set()
    store.delete_tree(f"{root}/a")
    assert not store.exists(uri) and store.names(f"{root}/a") == set()
    # no temporary names left behind by the commits
    if not root.startswith("s3://"):
        assert not [p for p in (tmp_path / "store").rglob("*") if p.name.endswith(".tmp")]


def test_scratch_copies_are_shared_and_bounded(s3_env, tmp_path):
    bucket = s3_env.bucket()
    clip = os.path.join(DATA, "carphone_gop10.mp4")
    size = os.path.getsize(clip)
    for k in ("v1.mp4", "v2.mp4", "v3.mp4"):
        s3_env.upload(clip, bucket, k)
    store = Store(scratch_dir=str(tmp_path / "scratch"), scratch_gb=2.5 * size / 1e9)
    p1 = store.local_copy(f"s3://{bucket}/v1.mp4")
    assert open(p1, "rb").read() == open(clip, "rb").read()
    assert store.local_copy(f"s3://{bucket}/v1.mp4") == p1  # one download per node
    store.local_copy(f"s3://{bucket}/v2.mp4")
    os.utime(p1, (1, 1))  # v1 least recently used
    store.local_copy(f"s3://{bucket}/v3.mp4")
    kept = os.listdir(tmp_path / "scratch" / "copies")
    assert len(kept) == 2 and not os.path.exists(p1)  # budget 2.5 videos: v1 evicted
    assert store.local_copy(clip) == clip  # local files are read in place
    with pytest.raises(FileNotFoundError):
        store.local_copy(f"s3://{bucket}/missing.mp4")


def test_reports_on_s3_through_boto3_and_pyarrow(s3_env):
    root = f"s3://{s3_env.bucket()}/restored"
    store = Store()
    assert reports.read_table(root, "videos").num_rows == 0  # no reports yet: empty, not an error
    reports.write(root, "videos", "r1", [video_row()], store)
    reports.write(root, "videos", "r2", [video_row(video="b.mp4", status="failed", error="bad", frames_out=None)], store)
    keys = s3_env.keys(root.split("/")[2], "restored/reports/videos/")
    assert len(keys) == 2 and all("/run_id=r" in k and k.endswith(".parquet") for k in keys)
    tbl = reports.read_table(root, "videos", store)  # pyarrow's S3 filesystem
    assert sorted(tbl.column("run_id").to_pylist()) == ["r1", "r2"]
    assert reports.read_table(root, "videos", store, run_id="r2").column("video").to_pylist() == ["b.mp4"]
    got = query(root, "SELECT video, error FROM videos WHERE run_id = (SELECT max(run_id) FROM videos) AND status = 'failed'")
    assert got.to_pylist() == [{"video": "b.mp4", "error": "bad"}]
    for _, sql in EXAMPLES.values():  # every README example runs on real reports
        query(root, sql)
    with pytest.raises(ValueError, match="SQL error"):
        query(root, "SELECT nope FROM videos")


def test_archive_listing_on_s3(s3_env, tmp_path):
    bucket = s3_env.bucket()
    for k in ("tapes/a.mp4", "tapes/1994/b.MKV", "tapes/notes.txt", "tapes/.trash/c.mp4", "tapes/out/old.mp4", "other/d.mp4"):
        s3_env.client().put_object(Bucket=bucket, Key=k, Body=b"x")
    cfg = build_config("tiny")
    jobs = list_videos(f"s3://{bucket}/tapes", f"s3://{bucket}/tapes/out", cfg)
    assert [j.rel for j in jobs] == ["1994/b.MKV", "a.mp4"]
    tag = f"x2-{cfg.hash()}"
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
    assert jobs[2].output == str(src / "out" / f"x2-{cfg.hash()}" / "sub" / "b.mkv")
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
    layout = Layout.of(str(tmp_path / "out"), cfg)
    run = Run(cfg, store, layout, "run-1", None, "tiny")
    a_mkv, a_mp4 = list(iter_videos(store, str(src), layout, None))
    assert a_mkv.output == a_mp4.output
    assert run.done_state(a_mp4) == ("new", None)
    run.mark_done(a_mkv)
    assert run.done_state(a_mkv) == ("skip", "run-1")
    assert run.done_state(a_mp4) == ("collision", str(src / "a.mkv"))
    moved = tmp_path / "moved"
    shutil.copytree(src, moved)
    shutil.copystat(src / "a.mkv", moved / "a.mkv")
    assert run.done_state(list(iter_videos(store, str(moved), layout, None))[0]) == ("skip", "run-1")  # same file, archive moved
    (moved / "a.mkv").write_bytes(b"other content")
    assert run.done_state(list(iter_videos(store, str(moved), layout, None))[0])[0] == "collision"  # another file, same name
    os.utime(src / "a.mkv", ns=(1, 1))  # the archive's file was replaced
    changed = list(iter_videos(store, str(src), layout, None))[0]
    assert run.done_state(changed) == ("changed", "run-1")


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
    layout = Layout.of(str(tmp_path / "out"), cfg)
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


def test_symlink_loops_end(tmp_path):
    src = tmp_path / "in"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.mp4").write_bytes(b"x")
    os.symlink(src, src / "d" / "loop")
    assert [e.rel for e in Store().list_files(str(src))] == ["d/a.mp4"]


def test_a_source_replaced_during_the_run_is_an_error(s3_env, tmp_path):
    bucket = s3_env.bucket()
    s3_env.client().put_object(Bucket=bucket, Key="v.mp4", Body=b"first")
    store = Store(scratch_dir=str(tmp_path / "scratch"))
    listed = store.entry(f"s3://{bucket}/v.mp4")
    s3_env.client().put_object(Bucket=bucket, Key="v.mp4", Body=b"second version")
    with pytest.raises(RuntimeError, match="changed during the run"):
        store.local_copy(listed.uri, listed.version)


def test_endpoint_is_resolved_once_for_all_workers(s3_env):
    store = Store.from_config(build_config("tiny").storage)
    assert store.endpoint_url == s3_env.endpoint and store.region == "us-east-1"
    with pytest.raises(ValueError, match="must not hold credentials"):
        build_config("tiny", overrides=["storage.endpoint_url=http://key:secret@minio:9000"])
