"""A real multi-node Ray cluster on loopback: ``ray start --head`` (no CPU: it runs the
driver) and two worker nodes of one CPU each, each with its own scratch folder, restoring
an S3 archive submitted with ``ray job submit``. One worker node is killed (its raylet and
every process of it) while chunks are being restored: the job still finishes on the other
node, and its output is the same, frame for frame, as an undisturbed local run's. Every node
imports the project from this checkout (PYTHONPATH), as nodes of the project's image do."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

from pipeline import reports
from pipeline.config import build_config
from tests.conftest import DATA, ROOT, frames_of, job_env, run_job, tag
from tests.s3server import free_port

pytestmark = pytest.mark.slow

SETS = ["train.finetune=false", "metrics.sample_frames=2", "metrics.niqe=false", "media.chunk_frames=10", "videos_at_once=1"]
FAST = ["--preset", "tiny"] + [a for s in SETS for a in ("--set", s)]
TAG = tag(build_config("tiny", overrides=SETS))
CLIPS = {"a/carphone.mp4": "carphone_gop10.mp4", "b/bbb.mp4": "bbb_320x180.mp4", "c/carphone.mp4": "carphone_gop10.mp4"}


def _node_processes(port: int) -> list[psutil.Process]:
    """The raylet of the node started with this node-manager port, and every process under it
    (its workers retitle themselves ``ray::Class.method``, so they are found as its children)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if f"node_manager_port={port}" in cmd or f"node-manager-port={port}" in cmd:
            out.append(p)
            try:
                out.extend(p.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
    return list({p.pid: p for p in out}.values())


def _kill_when_restoring(port: int, killed: list[int], stop: threading.Event) -> None:
    """Kill the node (raylet and every worker) as soon as one of its processes is restoring a
    chunk (``ray::ChunkRestorer.restore``): the kill follows the cluster's state, not the job's
    log, which under load reaches the test after the whole run is over."""
    while not stop.is_set():
        victims = _node_processes(port)
        busy = False
        for p in victims:
            try:
                busy = busy or "ChunkRestorer.restore" in " ".join(p.cmdline())
            except psutil.Error:
                pass
        if busy:
            for p in victims:
                try:
                    p.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            killed.extend(p.pid for p in victims)
            return
        time.sleep(0.02)


def test_a_worker_node_killed_mid_run_and_the_job_finishes_the_same(s3_env, tmp_path):
    s3 = s3_env
    bucket = s3.bucket()
    for key, name in CLIPS.items():
        s3.upload(os.path.join(DATA, name), bucket, f"in/{key}")
    undisturbed = tmp_path / "undisturbed"
    run_job("jobs.restore", "--input", f"s3://{bucket}/in", "--output", str(undisturbed), *FAST, env=job_env(s3.env()))

    bin_dir = os.path.dirname(sys.executable)
    ray = os.path.join(bin_dir, "ray")
    base = job_env({**s3.env(), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "token"})
    # (every node imports the project from this checkout, as from the image on a real cluster; a
    # working_dir upload would be unpacked by the three nodes into the one session folder they share here)
    port, dash = free_port(), free_port()
    node_ports = [free_port(), free_port()]
    scratch = {}
    try:
        start = subprocess.run([ray, "start", "--head", f"--port={port}", f"--dashboard-port={dash}", "--num-cpus=0",
                                "--object-store-memory=200000000", "--include-dashboard=true", "--disable-usage-stats"],
                               env=base, capture_output=True, text=True, timeout=180)
        assert start.returncode == 0, start.stdout + start.stderr
        for i, nm_port in enumerate(node_ports):
            tmp = tmp_path / f"node{i}"
            tmp.mkdir()
            scratch[nm_port] = tmp / "reelsr-scratch"  # the node's scratch folder: <its TMPDIR>/reelsr-scratch
            w = subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", f"--node-manager-port={nm_port}",
                                "--object-store-memory=200000000", "--disable-usage-stats"],
                               env={**base, "TMPDIR": str(tmp)}, capture_output=True, text=True, timeout=180)
            assert w.returncode == 0, w.stdout + w.stderr
        cmd = [ray, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--",
               "python", "-m", "jobs.restore", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", *FAST]
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**base, "RAY_DEDUP_LOGS": "0"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log, killed, stop = [], [], threading.Event()
        # the node dies while its actor restores a chunk of the first video: that chunk is lost mid-way and
        # restored again (or, had the chunk just finished, the dead actor is found when next given work)
        watcher = threading.Thread(target=_kill_when_restoring, args=(node_ports[1], killed, stop), daemon=True)
        watcher.start()
        deadline = time.monotonic() + 900
        for line in proc.stdout:
            log.append(line)
            if time.monotonic() > deadline:
                proc.kill()
        proc.wait(timeout=60)
        stop.set()
        watcher.join(timeout=10)
        text = "".join(log)
        assert proc.returncode == 0 and "succeeded" in text, text[-6000:]
        assert killed, text[-6000:]
        assert "3 restored, 0 failed" in text
        # the killed node's actor was noticed dead and replaced: mid-chunk (that chunk is restored again), or
        # when it was next given work (a chunk, or another stage, which then runs as a task)
        started = re.search(r"reelsr: (\d+) inference actor\(s\) started .*\(pool of (\d+)", text)
        assert "its actor died" in text or (started and int(started.group(1)) > int(started.group(2))), text[-6000:]
        sys.stdout.write(f"\nkilled the worker node on port {node_ports[1]} ({len(killed)} processes); the job completed\n"
                         + "".join(line for line in log if "actor died" in line or "restored, " in line))
    finally:
        subprocess.run([ray, "stop", "--force"], env=base, capture_output=True, timeout=120)
    assert any(p.exists() and any(p.iterdir()) for p in scratch.values())  # the nodes copied the sources into their own scratch
    for key in CLIPS:
        got = frames_of(s3.download(bucket, f"out/{TAG}/{key}", str(tmp_path / "got" / key)))
        want = frames_of(str(undisturbed / TAG / key))
        assert len(got) == len(want)
        mse = np.mean([(a.astype(np.float64) - b) ** 2 for a, b in zip(got, want, strict=True)])
        sys.stdout.write(f"{key}: {len(got)} frames, MSE against the undisturbed run {mse:.4f}\n")
        assert mse == 0, (key, mse)
    rows = reports.read_table(f"s3://{bucket}/out", "videos").to_pylist()
    assert sorted(r["status"] for r in rows) == ["restored"] * 3
