"""Faults injected into real runs: Ray workers killed mid-job, and an S3 endpoint that
answers 5xx, cuts downloads, denies writes or runs out of space (a fault-injecting proxy,
tests/faultproxy.py, in front of the loopback moto server). Retried faults end with the
same output as an undisturbed run; lasting ones fail the video with the key named, and
leave nothing half-written."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from pipeline import reports
from pipeline.config import build_config
from tests.conftest import DATA, ROOT, frames_of, job_env, run_job, tag
from tests.faultproxy import FaultProxy
from tests.s3server import SECRET

# 40 steps: long enough for a training worker to be killed mid-run
pytestmark = pytest.mark.slow  # real Ray, jobs in subprocesses

SETS = ["train.steps=40", "metrics.sample_frames=3", "media.chunk_frames=10", "storage.retries=10"]
FAST = ["--preset", "tiny"] + [a for s in SETS for a in ("--set", s)]
NO_TUNE = [*FAST, "--set", "train.finetune=false"]  # where the failure is in the output's commit: no fine-tune needed
TAG = tag(build_config("tiny", overrides=SETS))
CLIP = os.path.join(DATA, "carphone_gop10.mp4")  # 40 frames, 4 GOPs of 10


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    """The clip restored by a run nothing disturbs: what every faulty run must match."""
    out = tmp_path_factory.mktemp("undisturbed")
    run_job("jobs.restore", "--input", CLIP, "--output", str(out), *FAST)
    return frames_of(str(out / TAG / "carphone_gop10.mp4"))


def assert_same(frames, expected, what):
    assert len(frames) == len(expected) == 40, (what, len(frames))
    mse = np.mean([(a.astype(np.float64) - b) ** 2 for a, b in zip(frames, expected, strict=True)])
    sys.stdout.write(f"\n{what}: output vs undisturbed run, MSE {mse:.4f} over {len(frames)} frames\n")
    assert mse == 0, (what, mse)


def kill_one(name: str, root_pid: int) -> int:
    """SIGKILL the first process of this job's Ray whose command line names ``name``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for p in psutil.Process(root_pid).children(recursive=True):
            try:
                if any(name in part for part in p.cmdline()):
                    p.send_signal(signal.SIGKILL)
                    return p.pid
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no {name} process found")


def test_killed_training_worker_and_inference_actor_are_replaced(undisturbed, tmp_path):
    """Kill the fine-tune's worker (a Ray task) at step 8 and the inference actor while it
    restores the second chunk: Ray retries the task, the actor restarts and redoes the
    chunk, and the output is the undisturbed run's, frame for frame."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.restore", "--input", CLIP, "--output", str(out), *FAST]
    env = job_env({"RAY_DEDUP_LOGS": "0"})  # the restarted worker's progress lines must not be folded into the first's
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log, killed = [], {}
    try:
        for line in proc.stdout:
            log.append(line)
            if "train" not in killed and "train: step 8/40" in line:
                killed["train"] = kill_one("ray::finetune-", proc.pid)
            m = re.search(r"infer: (\d+)/40 frames", line)
            if "infer" not in killed and m and int(m.group(1)) < 40:
                killed["infer"] = kill_one("ChunkRestorer.restore", proc.pid)  # busy with a chunk: it must be redone
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(log)
    assert proc.returncode == 0, text[-6000:]
    assert set(killed) == {"train", "infer"}, text[-6000:]
    assert text.count("train: step 8/40") == 2  # the fine-tune ran again from its start
    assert "1 restored, 0 failed" in text
    sys.stdout.write(f"\nkilled {killed}; the job completed\n")
    assert_same(frames_of(str(out / TAG / "carphone_gop10.mp4")), undisturbed, "workers killed")


@pytest.fixture
def proxy(s3_env):
    with FaultProxy(s3_env.endpoint) as p:
        yield p


def through(proxy, s3):
    """The job's environment, with the proxy as its S3 endpoint."""
    return job_env({**s3.env(), "AWS_ENDPOINT_URL": proxy.endpoint})


def leftovers(s3, bucket):
    """Objects and unfinished multipart uploads under the output prefix."""
    keys = sorted(s3.keys(bucket, "restored/"))
    uploads = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return keys, uploads


def test_transient_storage_errors_are_retried(undisturbed, s3_env, proxy, tmp_path):
    """A share of every S3 request answered 500 InternalError or 503 SlowDown, and of
    downloads cut mid-body: the job retries with backoff and writes the same output."""
    s3 = s3_env
    bucket = s3.bucket()
    s3.upload(CLIP, bucket, "tapes/clip.mp4")
    proxy.fail(every=4, statuses=(500, "reset", 503))  # every 4th request, these in turn
    t0 = time.perf_counter()
    done = run_job("jobs.restore", "--input", f"s3://{bucket}/tapes", "--output", f"s3://{bucket}/restored", *FAST, env=through(proxy, s3))
    seconds = time.perf_counter() - t0
    proxy.clear()
    assert "1 restored, 0 failed" in done.stdout
    assert proxy.injected[500] and proxy.injected[503] and proxy.injected["reset"], (proxy.requests, proxy.injected)
    sys.stdout.write(f"\n{proxy.requests} S3 requests, injected {dict(proxy.injected)}; job {seconds:.1f} s\n")
    got = s3.download(bucket, f"restored/{TAG}/clip.mp4", str(tmp_path / "clip.mp4"))
    assert_same(frames_of(got), undisturbed, "storage 5xx")
    keys, uploads = leftovers(s3, bucket)
    assert not uploads and not [k for k in keys if "/.reelsr/work/" in k], keys
    assert SECRET not in done.stdout + done.stderr


def test_denied_or_full_storage_fails_naming_the_key(s3_env, proxy):
    """The restored videos' writes refused: one with 403 AccessDenied (permission denied),
    the other with MinIO's 507 XMinioStorageFull (out of space). Each video fails with a
    reason that names its key and the store's code; no output object, no done marker, no
    unfinished multipart upload, and no credentials in the log or the report."""
    s3 = s3_env
    bucket = s3.bucket()
    for name in ("a.mp4", "b.mp4"):
        s3.upload(CLIP, bucket, f"tapes/{name}")
    # every write of a final output fails, 403 and 507 in turn: one video gets each
    proxy.fail(every=1, statuses=(403, 507), methods={"PUT", "POST"}, key_contains="/restored/x2-")
    done = run_job("jobs.restore", "--input", f"s3://{bucket}/tapes", "--output", f"s3://{bucket}/restored", *NO_TUNE,
                   "--set", "videos_at_once=2", env=through(proxy, s3), check=False)
    proxy.clear()
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    assert proxy.injected == {403: 1, 507: 1}, proxy.injected  # the store's refusals are not retried
    out_tag = tag(build_config("tiny", overrides=[*SETS, "train.finetune=false"]))
    rows = {r["video"]: r for r in reports.read_table(f"s3://{bucket}/restored", "videos").to_pylist()}
    codes = set()
    for name, row in rows.items():
        key = f"s3://{bucket}/restored/{out_tag}/{name}"
        assert row["status"] == "failed" and row["error"].startswith(f"StorageError: cannot write {key}: "), row["error"]
        assert f"[{name}] FAILED: {row['error']}" in done.stdout
        codes.add(row["error"].split(": ")[2].split(" ")[0])
        assert SECRET not in row["error"]
        sys.stdout.write(f"\n{row['error']}")
    assert codes == {"AccessDenied", "XMinioStorageFull"}, codes
    keys, uploads = leftovers(s3, bucket)
    assert not uploads and not [k for k in keys if k.startswith(f"restored/{out_tag}/")], keys
    assert not [k for k in keys if k.startswith("restored/.reelsr/done/")], keys
    assert SECRET not in done.stdout + done.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 512 kB tmpfs: room for the chunks, not for the assembled video as well."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mount.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_local_disk_full_fails_naming_the_file(small_disk):
    """The output disk fills up while the video is assembled: the video fails with "No
    space left on device" naming the output file; no partial or temporary file remains."""
    done = run_job("jobs.restore", "--input", CLIP, "--output", str(small_disk), *NO_TUNE, check=False)
    out = small_disk / (tag(build_config("tiny", overrides=[*SETS, "train.finetune=false"]))) / "carphone_gop10.mp4"
    text = done.stdout + done.stderr
    assert done.returncode == 1, text[-4000:]
    assert f"FAILED: StorageError: cannot write {out}: No space left on device" in done.stdout, done.stdout[-3000:]
    assert not out.exists()
    assert not [p for p in small_disk.rglob("*") if p.name.startswith(".reelsr-")], list(small_disk.rglob("*"))
    sys.stdout.write(f"\ndisk full: {[ln for ln in done.stdout.splitlines() if 'FAILED' in ln][0]}\n")
