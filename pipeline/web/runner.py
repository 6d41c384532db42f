"""The web app's job runner: queued uploads are restored one after another (``workers`` at
a time) by the same entry point a person runs, ``python -m jobs.restore``, on Ray: the
cluster named by ``ray_address`` (as under ``ray job submit``), or a local Ray that the
job starts. Its progress lines are read as they come (stage, frames, fps, ETA); when it
ends, the run's videos report gives the status, the reason of a failure, the restored
file and the metrics, and the run's crops are listed for the comparison view.

A job is restartable: the restore resumes from the chunks it committed, so a job left
``running`` by a stopped server is queued again when the server starts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from pipeline.presets import PRESETS
from pipeline.storage import Store
from pipeline.storage.uri import join
from pipeline.web.db import Database, Job

# progress lines of jobs.restore (the CLI's own output; see pipeline/run/)
_PROBE = re.compile(r"\] probe: (\d+)x(\d+) .*?, (\d+) frames")
_TRAIN = re.compile(r"train: step (\d+)/(\d+)\s.*?([\d.]+) steps/s")
_INFER = re.compile(r"\] infer: (\d+)/(\d+) frames\s+([\d.]+) fps")
_STAGES = (("] assemble:", "assembling"), ("] metrics:", "measuring"), ("] probe:", "probing"), ("] train:", "training"),
           ("] infer:", "restoring"))
METRIC_KEYS = ("niqe_bicubic", "niqe_pretrained", "niqe_finetuned", "niqe_output", "psnr_bicubic", "psnr_pretrained",
               "psnr_finetuned", "psnr_output", "ssim_bicubic", "ssim_output") + tuple(
    f"{k}_{m}" for k in ("flicker", "terr") for m in ("bicubic", "pretrained", "finetuned", "output"))


def parse_progress(line: str, progress: dict[str, Any]) -> dict[str, Any]:
    """``progress`` updated with what one line of the restore's output says."""
    p = dict(progress)
    for marker, stage in _STAGES:
        if marker in line and p.get("stage") != stage:
            p = {k: v for k, v in p.items() if k not in ("eta_s", "fps")}  # a new stage: the last one's rate and ETA are void
            p["stage"] = stage
    if m := _PROBE.search(line):
        p["frames_total"] = int(m.group(3))
    if m := _TRAIN.search(line):
        done, total, rate = int(m.group(1)), int(m.group(2)), float(m.group(3))
        p.update(stage="training", steps_done=done, steps_total=total, eta_s=round((total - done) / rate, 1) if rate > 0 else None)
    if m := _INFER.search(line):
        done, total, fps = int(m.group(1)), int(m.group(2)), float(m.group(3))
        p.update(stage="restoring", frames_done=done, frames_total=total, fps=fps, eta_s=round((total - done) / fps, 1) if fps > 0 else None)
    return p


class Runner:
    """Takes queued jobs from the database and restores them in the background."""

    def __init__(self, db: Database, store: Store, logs: str, *, ray_address: str = "", workers: int = 1,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.db, self.store, self.logs = db, store, logs
        self.ray_address, self.workers = ray_address, workers
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        os.makedirs(logs, exist_ok=True)

    def start(self) -> None:
        n = self.db.requeue_running()
        if n:
            print(f"serve: {n} job(s) left running by the last server queued again", flush=True)
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"runner-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop taking jobs; running restores are stopped and stay ``running`` in the
        database, to be queued again by the next start (they resume)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _terminate(proc)
        for t in self._threads:
            t.join(timeout=30)

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job's restore if it runs (its files are the caller's to delete)."""
        with self._lock:
            proc = self._procs.get(job_id)
        if proc is not None:
            _terminate(proc)

    def log_path(self, job_id: str) -> str:
        return os.path.join(self.logs, f"{job_id}.log")

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.db.next_queued()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except Exception as e:  # noqa: BLE001 - a job fails alone; the runner goes on
                self.db.finish(job.id, "failed", f"the server could not run it: {e}", {}, {"stage": "failed"})

    def command(self, job: Job) -> list[str]:
        return [sys.executable, "-m", "jobs.restore", "--input", job.input, "--output", job.output,
                *(["--size", job.size] if job.size else []), *([] if job.size and PRESETS.get(job.preset).continuous else ["--scale", str(job.scale)]),
                "--preset", job.preset, *(["--fps", job.fps] if job.fps else []), *self.extra_args]

    def _run(self, job: Job) -> None:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        if self.ray_address:
            env["RAY_ADDRESS"] = self.ray_address
        progress: dict[str, Any] = {"stage": "starting"}
        last_write = 0.0
        with open(self.log_path(job.id), "a", encoding="utf-8") as log:
            proc = subprocess.Popen(self.command(job), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    start_new_session=True, bufsize=1)
            with self._lock:
                self._procs[job.id] = proc
            try:
                for line in proc.stdout:
                    log.write(line)
                    new = parse_progress(line, progress)
                    if new != progress and (time.monotonic() - last_write > 0.5 or new.get("stage") != progress.get("stage")):
                        self.db.progress(job.id, new)
                        last_write = time.monotonic()
                    progress = new
                rc = proc.wait()
            finally:
                with self._lock:
                    self._procs.pop(job.id, None)
        if self._stop.is_set() or not self.db.exists(job.id):
            return  # stopped with the server (queued again at the next start), or deleted by its user
        self._finish(job, rc, progress)

    def _finish(self, job: Job, rc: int, progress: dict[str, Any]) -> None:
        from pipeline import reports

        rows = []
        try:
            rows = reports.read_table(job.output, "videos", self.store).to_pylist()
        except Exception:  # noqa: BLE001 - no report: the run failed before its first video (the log says why)
            pass
        row = max(rows, key=lambda r: r["run_id"]) if rows else None
        if row is not None and row["status"] in ("restored", "skipped") and row["output"]:
            result = {"video": row["output"], "model_used": row.get("model_used"), "model_reason": row.get("model_reason"),
                      "metrics": {k: row.get(k) for k in METRIC_KEYS if row.get(k) is not None},
                      "crops": sorted(e.uri for e in self.store.list_files(join(job.output, "reports", "crops")) if e.uri.endswith(".png")),
                      "frames": row.get("frames_out"), "duration_s": row.get("duration_s"),
                      "seconds": {k: row.get(f"{k}_seconds") for k in ("train", "infer", "metrics", "total")}}
            self.db.finish(job.id, "restored", row.get("error"), result, {**progress, "stage": "done", "eta_s": 0})
            return
        error = (row or {}).get("error") or _last_error(self.log_path(job.id)) or f"the restore exited with code {rc}"
        self.db.finish(job.id, "failed", error, {}, {**progress, "stage": "failed"})


def _last_error(log_path: str) -> str | None:
    """The reason a run gave up, from the end of its log ("error: ..." or "FAILED: ...")."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()[-200:]
    except OSError:
        return None
    for line in reversed(lines):
        for marker in ("error: ", "FAILED: "):
            if marker in line:
                return line.split(marker, 1)[1].strip()
    return None


def _terminate(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the restore's process group (its local Ray goes with it), then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
