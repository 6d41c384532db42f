"""Shared fixtures and helpers of the suite.

Tiers: every test that starts Ray, a job in a subprocess, or trains for more than a few
seconds carries ``@pytest.mark.slow``; ``pytest -m "not slow"`` is the fast tier, plain
``pytest`` (``make test``) runs everything.
"""

from __future__ import annotations

import os
import subprocess
import sys

import av
import numpy as np
import pytest

from tests.s3server import S3Server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")


def tag(cfg, gpu: bool = False) -> str:
    """The output folder name of a config's videos (OUT/<tag>/), as a CPU run names it."""
    return f"x{cfg.scale}-{cfg.hash(gpu=gpu)}"


def job_env(extra: dict | None = None) -> dict:
    """The environment of a job started by a test: this checkout on the path, a local
    Ray (never a cluster named by the caller's RAY_ADDRESS)."""
    env = dict(os.environ, PYTHONPATH=ROOT, **(extra or {}))
    env.pop("RAY_ADDRESS", None)
    return env


def run_job(module: str, *args: str, env: dict | None = None, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in a subprocess, as a user runs it; with ``check``,
    a non-zero exit fails the test with the job's output."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env or job_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def frames_of(path: str) -> list[np.ndarray]:
    """Every frame of a video file's first video stream, decoded to uint8 RGB."""
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free loopback port, for the whole session."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """This process's AWS variables point at the loopback server (as a user's would)."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@pytest.fixture(params=["local", "s3"])
def store_root(request, tmp_path):
    """A place in each kind of store: a local folder, and a prefix in a bucket of the
    loopback S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    server = request.getfixturevalue("s3_env")
    return f"s3://{server.bucket()}/some/prefix"


BIRD = os.path.join(DATA, "bird.png")  # Set5 "bird", 288 x 288


def bird() -> np.ndarray:
    """A real image, uint8 RGB (288, 288, 3)."""
    from PIL import Image

    return np.asarray(Image.open(BIRD).convert("RGB"))


def thread_names() -> set[str]:
    import threading

    return {t.name for t in threading.enumerate()}


def video_row(**kw) -> dict:
    """A valid videos report row (a restored video), with ``kw`` changed."""
    from pipeline.run.row import VideoRow

    row = VideoRow(video="a.mp4", source="/in/a.mp4", source_bytes=None, status="restored", config_hash="abc", scale=2,
                   total_seconds=1.5, config_json="{}", frames_in=10, frames_out=10).record()
    row.update(kw)
    return row
