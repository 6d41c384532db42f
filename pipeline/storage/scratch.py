"""The node-local scratch space: copies of remote videos, and files being written
before their commit.

Videos are read from a **node-local copy**, not by ranged reads: probing, training-frame
extraction, every chunk and the metrics each read the file, and FFmpeg seeks in it
freely (an mp4 index may sit at the end). One sequential download per node at full
bandwidth serves all of them, and FFmpeg gets a real file (a Python file object would
run FFmpeg's reads through the GIL). The copies are bounded (``storage.scratch_gb``):
least recently used copies are evicted first.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable

from pipeline.storage.base import Entry

#: A copy used this recently is never evicted: a task may be about to open it.
EVICT_AFTER_S = 600.0


class Scratch:
    def __init__(self, folder: str, budget_gb: float) -> None:
        self.root = folder or os.path.join(tempfile.gettempdir(), "reelsr-scratch")
        self.budget = int(budget_gb * 1e9)

    def folder(self, sub: str = "tmp") -> str:
        """``copies`` (cached sources, evicted by age), ``tmp`` (files being written
        before their commit; never evicted) or ``locks``."""
        path = os.path.join(self.root, sub)
        os.makedirs(path, exist_ok=True)
        return path

    def copy(self, uri: str, version: str, key: str, entry: Callable[[], Entry], download: Callable[[str], None]) -> str:
        """A local copy of ``uri`` at ``version``, downloaded once per node (a file lock
        makes concurrent callers on the node wait for the first download). ``key``
        identifies the store (endpoint); ``entry()`` re-reads the object's size and
        version, so a source replaced during a run is an error, not a mix of two versions."""
        ext = os.path.splitext(uri.rstrip("/").rsplit("/", 1)[-1])[1]
        digest = hashlib.sha256(f"{key}|{uri}|{version}".encode()).hexdigest()[:24]
        root = self.folder("copies")
        path = os.path.join(root, digest + ext)
        with open(os.path.join(self.folder("locks"), digest), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if os.path.exists(path):
                    os.utime(path)  # recently used: evicted last
                    return path
                now = entry()
                if now.version != version:
                    raise RuntimeError(f"{uri} changed during the run (version {version} listed, {now.version} now): run again")
                self._evict(root, need=now.size)
                tmp = os.path.join(self.folder("tmp"), f"{digest}.{uuid.uuid4().hex[:8]}.download")
                try:
                    download(tmp)
                    if os.path.getsize(tmp) != now.size:
                        raise RuntimeError(f"{uri}: downloaded {os.path.getsize(tmp)} bytes, expected {now.size}")
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                return path
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _evict(self, root: str, need: int) -> None:
        """Delete least recently used copies until ``need`` more bytes fit the budget,
        sparing those used in the last ``EVICT_AFTER_S`` seconds (the budget may then be
        exceeded for a while). A copy still open elsewhere stays readable: unlinking
        keeps open files."""
        files = []
        for e in os.scandir(root):
            if e.is_file():
                st = e.stat()
                files.append((st.st_mtime, st.st_size, e.path))
        total = sum(f[1] for f in files)
        now = time.time()
        for mtime, size, path in sorted(files):
            if total + need <= self.budget or now - mtime < EVICT_AFTER_S:
                break
            try:
                os.unlink(path)
                total -= size
            except FileNotFoundError:
                pass
