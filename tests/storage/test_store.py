"""The storage interface on a real S3-protocol server (moto's server mode on loopback) and on local
folders: the same calls, atomic commits, streamed listing, scratch copies."""

import os

import pytest

from pipeline.config import StorageConfig, build_config
from pipeline.storage import Store
from tests.conftest import DATA


@pytest.fixture
def root(store_root):
    return store_root


def test_same_calls_on_both_stores(root, tmp_path):
    store = Store(StorageConfig(scratch_dir=str(tmp_path / "scratch")))
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
    store = Store(StorageConfig(scratch_dir=str(tmp_path / "scratch"), scratch_gb=2.5 * size / 1e9))
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


def test_symlink_loops_end(tmp_path):
    src = tmp_path / "in"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.mp4").write_bytes(b"x")
    os.symlink(src, src / "d" / "loop")
    assert [e.rel for e in Store().list_files(str(src))] == ["d/a.mp4"]


def test_a_source_replaced_during_the_run_is_an_error(s3_env, tmp_path):
    bucket = s3_env.bucket()
    s3_env.client().put_object(Bucket=bucket, Key="v.mp4", Body=b"first")
    store = Store(StorageConfig(scratch_dir=str(tmp_path / "scratch")))
    listed = store.entry(f"s3://{bucket}/v.mp4")
    s3_env.client().put_object(Bucket=bucket, Key="v.mp4", Body=b"second version")
    with pytest.raises(RuntimeError, match="changed during the run"):
        store.local_copy(listed.uri, listed.version)


def test_endpoint_is_resolved_once_for_all_workers(s3_env):
    store = Store.from_config(build_config("tiny").storage)
    assert store.cfg.endpoint_url == s3_env.endpoint and store.cfg.region == "us-east-1"
    with pytest.raises(ValueError, match="must not hold credentials"):
        build_config("tiny", overrides=["storage.endpoint_url=http://key:secret@minio:9000"])


def test_committing_writes_once_complete_and_leaves_nothing_on_failure(root, tmp_path):
    """The one commit helper every writer uses: the final name appears only when the block
    ends without an error; the temporary file is gone either way."""
    store = Store(StorageConfig(scratch_dir=str(tmp_path / "scratch")))
    uri = f"{root}/out/v.mp4"
    with pytest.raises(RuntimeError, match="encoder died"):
        with store.committing(uri, ".mp4") as tmp:
            open(tmp, "wb").write(b"half a video")
            raise RuntimeError("encoder died")
    assert not store.exists(uri)
    with store.committing(uri, ".mp4") as tmp:
        assert tmp.endswith(".mp4") and not store.exists(uri)
        open(tmp, "wb").write(b"a whole video")
    assert store.read_bytes(uri) == b"a whole video" and not os.path.exists(tmp)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and ".tmp" in p.name]
    assert not leftovers, leftovers
