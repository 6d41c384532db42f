"""The web app's state: users and jobs in one SQLite file (``DATA/reelsr.db``).

Every job query takes the user: there is no way to read, change or delete another
user's job through this module, so a handler cannot forget the check.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    password_hash TEXT NOT NULL,
    token_sha256 TEXT UNIQUE NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    status TEXT NOT NULL,              -- queued | running | restored | failed
    filename TEXT NOT NULL,            -- the name the user uploaded (shown, never used as a path)
    input TEXT NOT NULL,               -- the uploaded file in the store
    output TEXT NOT NULL,              -- the run's output root in the store
    scale INTEGER NOT NULL,
    preset TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    progress TEXT NOT NULL DEFAULT '{}',  -- JSON: stage, frames_done, frames_total, fps, eta_s
    error TEXT,
    result TEXT NOT NULL DEFAULT '{}',    -- JSON: the restored file, metrics, crops
    fps TEXT NOT NULL DEFAULT '',         -- the restored video's frame rate (media.fps); '' the source's
    size TEXT NOT NULL DEFAULT ''         -- the restored video's frame size WxH (media.size); '' the scale's
);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs(user_id, created);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created);
"""

ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    password_hash: str


@dataclass(frozen=True)
class Job:
    id: str
    user_id: int
    status: str
    filename: str
    input: str
    output: str
    scale: int
    preset: str
    created: float
    started: float | None
    finished: float | None
    progress: dict[str, Any]
    error: str | None
    result: dict[str, Any]
    fps: str = ""
    size: str = ""

    def public(self) -> dict[str, Any]:
        """What the API shows of the job (no store locations)."""
        return {"id": self.id, "status": self.status, "filename": self.filename, "scale": self.scale, "size": self.size, "preset": self.preset, "fps": self.fps,
                "created": self.created, "started": self.started, "finished": self.finished, "progress": self.progress,
                "error": self.error, "metrics": self.result.get("metrics", {}), "model_used": self.result.get("model_used"),
                "model_reason": self.result.get("model_reason")}


def _job(row: sqlite3.Row) -> Job:
    d = dict(row)
    d["progress"] = json.loads(d["progress"] or "{}")
    d["result"] = json.loads(d["result"] or "{}")
    return Job(**d)


class Database:
    """Thread-safe access to the SQLite file (one connection, serialised)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:  # (outside a transaction: executescript commits by itself)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(SCHEMA)
            columns = {r["name"] for r in self._conn.execute("PRAGMA table_info(jobs)")}
            for name in ("fps", "size"):  # a database made before the column
                if name not in columns:
                    self._conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} TEXT NOT NULL DEFAULT ''")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ users

    def add_user(self, name: str, password_hash: str, token_sha256: str) -> int:
        try:
            with self._tx() as c:
                cur = c.execute("INSERT INTO users(name, password_hash, token_sha256, created) VALUES (?, ?, ?, ?)",
                                (name, password_hash, token_sha256, time.time()))
                return int(cur.lastrowid)
        except sqlite3.IntegrityError:
            raise ValueError(f"user {name!r} exists already") from None

    def user_by_name(self, name: str) -> User | None:
        with self._tx() as c:
            row = c.execute("SELECT id, name, password_hash FROM users WHERE name = ?", (name,)).fetchone()
        return User(**dict(row)) if row else None

    def user_by_id(self, user_id: int) -> User | None:
        with self._tx() as c:
            row = c.execute("SELECT id, name, password_hash FROM users WHERE id = ?", (user_id,)).fetchone()
        return User(**dict(row)) if row else None

    def user_by_token(self, token_sha256: str) -> User | None:
        with self._tx() as c:
            row = c.execute("SELECT id, name, password_hash FROM users WHERE token_sha256 = ?", (token_sha256,)).fetchone()
        return User(**dict(row)) if row else None

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))

    # ------------------------------------------------------------------ jobs

    def add_job(self, user_id: int, filename: str, input_uri: str, output: str, scale: int, preset: str, job_id: str,
                limit: int, fps: str = "", size: str = "") -> Job | None:
        """A new queued job, or None when the user has ``limit`` jobs queued or running."""
        with self._tx() as c:
            active = c.execute(f"SELECT count(*) FROM jobs WHERE user_id = ? AND status IN {ACTIVE}", (user_id,)).fetchone()[0]
            if active >= limit:
                return None
            c.execute("INSERT INTO jobs(id, user_id, status, filename, input, output, scale, preset, created, fps, size) "
                      "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                      (job_id, user_id, filename, input_uri, output, scale, preset, time.time(), fps, size))
            return _job(c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def job(self, user_id: int, job_id: str) -> Job | None:
        """The user's job ``job_id``; None when it does not exist or is another user's."""
        with self._tx() as c:
            row = c.execute("SELECT * FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id)).fetchone()
        return _job(row) if row else None

    def jobs(self, user_id: int) -> list[Job]:
        with self._tx() as c:
            return [_job(r) for r in c.execute("SELECT * FROM jobs WHERE user_id = ? ORDER BY created DESC", (user_id,))]

    def delete_job(self, user_id: int, job_id: str) -> Job | None:
        with self._tx() as c:
            row = c.execute("SELECT * FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id)).fetchone()
            if row:
                c.execute("DELETE FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id))
        return _job(row) if row else None

    # ------------------------------------------------------------------ the runner's side

    def next_queued(self) -> Job | None:
        """The oldest queued job, marked running."""
        with self._tx() as c:
            row = c.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            c.execute("UPDATE jobs SET status = 'running', started = ?, progress = ? WHERE id = ?",
                      (time.time(), json.dumps({"stage": "starting"}), row["id"]))
            return _job(c.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def exists(self, job_id: str) -> bool:
        with self._tx() as c:
            return c.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is not None

    def progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self._tx() as c:
            c.execute("UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'", (json.dumps(progress), job_id))

    def finish(self, job_id: str, status: str, error: str | None, result: dict[str, Any], progress: dict[str, Any]) -> None:
        with self._tx() as c:
            c.execute("UPDATE jobs SET status = ?, error = ?, result = ?, progress = ?, finished = ? WHERE id = ?",
                      (status, error, json.dumps(result), json.dumps(progress), time.time(), job_id))

    def requeue_running(self) -> int:
        """After a restart: jobs left running go back to the queue (the restore resumes
        from the chunks it committed). Returns how many."""
        with self._tx() as c:
            return c.execute("UPDATE jobs SET status = 'queued', progress = ? WHERE status = 'running'",
                             (json.dumps({"stage": "queued again after a server restart"}),)).rowcount


def new_id() -> str:
    return secrets.token_hex(8)
