"""Archive runs end to end, on a real local Ray and a real S3-protocol server on
loopback: an S3 archive restored concurrently and then incrementally, a job killed
mid-run and resumed, and ``ray job submit`` against a ``ray start`` head."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline import reports
from pipeline.config import build_config
from pipeline.media.probe import probe
from tests.conftest import DATA, ROOT, frames_of, job_env, run_job, tag
from tests.s3server import SECRET, free_port

pytestmark = pytest.mark.slow  # real Ray, jobs in subprocesses

SETS = ["train.steps=12", "metrics.sample_frames=3", "media.chunk_frames=10"]
FAST = ["--preset", "tiny"] + [a for s in SETS for a in ("--set", s)]
TAG = tag(build_config("tiny", overrides=SETS))


def test_s3_archive_concurrent_then_incremental(s3_env, tmp_path):
    """Input and output on S3: good videos restored two at a time, a broken one fails
    alone; the rerun restores only the video added since; credentials leak nowhere."""
    s3 = s3_env
    bucket = s3.bucket()
    s3.upload(os.path.join(DATA, "bbb_320x180.mp4"), bucket, "tapes/bbb.mp4")
    s3.upload(os.path.join(DATA, "carphone_gop10.mp4"), bucket, "tapes/reels/1994/carphone.mp4")
    s3.client().put_object(Bucket=bucket, Key="tapes/broken.mp4", Body=os.urandom(4096))
    env = job_env(s3.env())
    args = ["--input", f"s3://{bucket}/tapes", "--output", f"s3://{bucket}/restored", *FAST, "--set", "videos_at_once=2"]
    first = run_job("jobs.restore", *args, env=env, check=False)
    assert first.returncode == 1, first.stdout + first.stderr  # one video failed
    assert "2 restored, 1 failed, 0 skipped" in first.stdout and "2 video(s) at a time" in first.stdout

    keys = s3.keys(bucket, "restored/")
    for rel, src in (("bbb.mp4", "bbb_320x180.mp4"), ("reels/1994/carphone.mp4", "carphone_gop10.mp4")):
        local = s3.download(bucket, f"restored/{TAG}/{rel}", str(tmp_path / "dl" / rel))
        si, oi = probe(os.path.join(DATA, src)), probe(local)
        assert (oi.width, oi.height, oi.frames, oi.has_audio) == (2 * si.width, 2 * si.height, si.frames, si.has_audio)
    # only committed results under the output prefix: no chunks, temporary or partial objects
    assert not [k for k in keys if "/.reelsr/work/" in k or ".tmp" in k or ".partial" in k], keys
    assert sum(k.startswith("restored/.reelsr/done/") for k in keys) == 2
    # the visual report is on S3 too: crops of each restored video, and the run's page
    assert sum(k.startswith(f"restored/reports/crops/{TAG}/") and k.endswith(".png") for k in keys) == 2 * 3, keys
    pages = [k for k in keys if k.startswith("restored/reports/runs/") and k.endswith(".html")]
    assert len(pages) == 1 and b"bbb.mp4" in s3.client().get_object(Bucket=bucket, Key=pages[0])["Body"].read()

    rows = {r["video"]: r for r in reports.read_table(f"s3://{bucket}/restored", "videos").to_pylist()}  # pyarrow on S3
    assert rows["broken.mp4"]["status"] == "failed" and "s3://" in rows["broken.mp4"]["error"]
    assert "reelsr-scratch" not in rows["broken.mp4"]["error"]  # named by its URI, not the scratch copy
    assert rows["bbb.mp4"]["status"] == "restored" and rows["bbb.mp4"]["output"] == f"s3://{bucket}/restored/{TAG}/bbb.mp4"
    assert rows["bbb.mp4"]["source_bytes"] == os.path.getsize(os.path.join(DATA, "bbb_320x180.mp4"))

    # credentials appear in no log and no object the run wrote
    assert SECRET not in first.stdout + first.stderr
    for k in keys:
        body = s3.client().get_object(Bucket=bucket, Key=k)["Body"].read()
        assert SECRET.encode() not in body, k

    # the nightly rerun: one video was added since; only it is restored
    s3.upload(os.path.join(DATA, "carphone_gop10.mp4"), bucket, "tapes/new/carphone2.mp4")
    second = run_job("jobs.restore", *args, env=env, check=False)
    assert "1 restored, 1 failed, 2 skipped" in second.stdout, second.stdout
    assert second.stdout.count("train: step 12/12") == 1 and "[new/carphone2.mp4] train: step 12/12" in second.stdout
    assert "[bbb.mp4] skipped: restored by run" in second.stdout
    run2 = max(r["run_id"] for r in reports.read_table(f"s3://{bucket}/restored", "videos").to_pylist())
    latest = {r["video"]: r["status"] for r in reports.read_table(f"s3://{bucket}/restored", "videos", run_id=run2).to_pylist()}
    assert latest == {"bbb.mp4": "skipped", "reels/1994/carphone.mp4": "skipped", "broken.mp4": "failed", "new/carphone2.mp4": "restored"}


def test_killed_job_resumes_and_matches_an_uninterrupted_run(tmp_path):
    """SIGKILL the driver and its Ray processes while the second of three videos is being
    restored; the rerun skips the first, reuses the second's checkpoint and committed
    chunks, and every output equals the uninterrupted run's (the three are copies of one
    clip: one uninterrupted restore of it is the reference for all)."""
    arch = tmp_path / "in"
    arch.mkdir()
    for name in ("v1.mp4", "v2.mp4", "v3.mp4"):
        shutil.copy(os.path.join(DATA, "carphone_gop10.mp4"), arch / name)
    once = ["--input", str(arch), *FAST, "--set", "videos_at_once=1"]
    run_job("jobs.restore", "--input", str(arch / "v1.mp4"), *FAST, "--output", str(tmp_path / "whole"))

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "jobs.restore", *once, "--output", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            m = re.search(r"\[v2\.mp4\] infer: (\d+)/40 frames", line)
            if m and int(m.group(1)) < 40:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
                break
        else:
            raise AssertionError("never reached v2's inference:\n" + "".join(seen))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    time.sleep(1)
    assert (out / TAG / "v1.mp4").is_file() and not (out / TAG / "v2.mp4").exists()
    assert not [p for p in (out / TAG).rglob("*") if p.name.startswith(".")]  # nothing partial under a final name
    committed = list((out / ".reelsr" / "work").rglob("chunk-*.mp4"))
    assert 1 <= len(committed) < 4

    t0 = time.perf_counter()
    resumed = run_job("jobs.restore", *once, "--output", str(out))
    seconds = time.perf_counter() - t0
    log = resumed.stdout
    assert "[v1.mp4] skipped: restored by run" in log
    assert "[v2.mp4] train: reusing fine-tuned checkpoint" in log and "[v2.mp4] train: step" not in log
    assert f"[v2.mp4] infer: reusing {len(committed)}/4 chunks" in log
    assert "[v3.mp4] train: step 12/12" in log
    assert "2 restored, 0 failed, 1 skipped" in log
    rows = {r["video"]: r for r in reports.read_table(str(out), "videos").to_pylist() if r["status"] != "skipped"}
    assert rows["v2.mp4"]["chunks_reused"] == len(committed) and rows["v2.mp4"]["checkpoint_reused"] is True
    sys.stdout.write(f"\nresume: {len(committed)}/4 chunks of v2 reused, rerun {seconds:.1f} s\n")

    for name in ("v1.mp4", "v2.mp4", "v3.mp4"):
        a, b = frames_of(str(tmp_path / "whole" / TAG / "v1.mp4")), frames_of(str(out / TAG / name))
        assert len(a) == len(b) == 40
        mse = np.mean([(x.astype(np.float64) - y) ** 2 for x, y in zip(a, b, strict=True)])
        sys.stdout.write(f"{name}: resumed vs uninterrupted output, MSE {mse:.4f} over {len(a)} frames\n")
        assert mse == 0 or 10 * np.log10(255**2 / mse) > 45, (name, mse)  # same frames, within encoder determinism
    assert not list((out / ".reelsr" / "work").rglob("*.mp4"))


def test_ray_job_submit_to_a_started_head(s3_env, tmp_path):
    """``ray start --head``, then ``ray job submit --working-dir .`` of jobs.restore on an
    S3 archive, as a user would; then the head is stopped."""
    s3 = s3_env
    bucket = s3.bucket()
    s3.upload(os.path.join(DATA, "carphone_gop10.mp4"), bucket, "in/clip.mp4")
    dash = free_port()
    bin_dir = os.path.dirname(sys.executable)
    env = job_env({**s3.env(), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"})
    env.pop("PYTHONPATH")  # the job must run from its uploaded working dir
    ray = os.path.join(bin_dir, "ray")
    start = subprocess.run([ray, "start", "--head", f"--port={free_port()}", f"--dashboard-port={dash}", "--num-cpus=2",
                            "--include-dashboard=true", "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        sub = subprocess.run([ray, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", ROOT, "--",
                              "python", "-m", "jobs.restore", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", *FAST],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert sub.returncode == 0 and "succeeded" in sub.stdout, sub.stdout[-6000:] + sub.stderr[-3000:]
        assert "1 restored, 0 failed" in sub.stdout
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    got = s3.download(bucket, f"out/{TAG}/clip.mp4", str(tmp_path / "clip.mp4"))
    assert probe(got).frames == probe(os.path.join(DATA, "carphone_gop10.mp4")).frames
    row = reports.read_table(f"s3://{bucket}/out", "videos").to_pylist()
    assert [r["status"] for r in row] == ["restored"]
