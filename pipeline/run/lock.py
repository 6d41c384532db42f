"""One run at a time per output: a lease in the output store.

``OUT/.reelsr/run.lock`` holds who writes there (run id, host, pid) and until when. It is
taken with a conditional write (S3: If-None-Match / If-Match; local: under a lock of its
folder), renewed by a thread while the run lasts, and released at the end. A second run
on the same output waits for it (``lock_wait``) or exits with the reason; the lease of a
run that crashed, or whose machine went away, expires after ``lease_s`` and the next run
takes it over (at once when that run was on the same machine and its process is gone).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime, timezone

from pipeline.storage import Store
from pipeline.storage.uri import join


class RunLocked(RuntimeError):
    """Another run holds the output's lease."""


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dead(holder: dict) -> bool:
    """Whether the lease's holder ran on this machine and its process is gone (a killed
    run restarted here need not wait for its lease to expire)."""
    if holder.get("host") != socket.gethostname() or holder.get("pid") == os.getpid():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, KeyError):
        return False
    return False


class RunLock:
    """The lease of one run on one output (a context manager)."""

    def __init__(self, store: Store, output_root: str, run_id: str, lease_s: float = 600.0, wait_s: float = 0.0,
                 poll_s: float = 10.0) -> None:
        self.store, self.uri, self.run_id = store, join(output_root, ".reelsr", "run.lock"), run_id
        self.lease_s, self.wait_s, self.poll_s = lease_s, wait_s, poll_s
        self.version: str | None = None
        self.lost = threading.Event()  # set when another run took the lease (this one stalled past it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self, released: bool = False) -> bytes:
        now = time.time()
        return json.dumps({"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                           "renewed": now, "expires": 0.0 if released else now + self.lease_s}).encode()

    def acquire(self) -> None:
        """Take the lease, waiting up to ``wait_s`` for a live holder; RunLocked names it."""
        deadline = time.monotonic() + self.wait_s
        announced = False
        while True:
            held = self.store.read_versioned(self.uri)
            holder = json.loads(held[0]) if held else None
            if holder is None or holder.get("expires", 0) < time.time() or _dead(holder):  # free, released, expired, or its process is gone
                self.version = self.store.put_if(self.uri, self._record(), held[1] if held else None)
                if self.version is not None:
                    if holder and holder.get("expires", 0) > 0:
                        why = "whose process is gone" if holder["expires"] >= time.time() else "expired"
                        print(f"reelsr: took over the lease of run {holder['run_id']} ({holder['host']}, pid {holder['pid']}) on this output: "
                              f"{why}", flush=True)
                    return
                continue  # another run was quicker: look again
            who = (f"run {holder['run_id']} on {holder['host']} (pid {holder['pid']}) is writing to this output; its lease "
                   f"runs until {_when(holder['expires'])} and is renewed while it runs ({self.uri})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunLocked(who + ("; waited " + f"{self.wait_s:g} s" if self.wait_s else "")
                                + ": wait for it to end, or wait here with --set lock_wait=SECONDS")
            if not announced:
                print(f"reelsr: waiting up to {self.wait_s:g} s: {who}", flush=True)
                announced = True
            time.sleep(min(self.poll_s, left))

    def renew(self) -> bool:
        """Push the lease's end forward; False (and ``lost`` set) when another run took it."""
        version = self.store.put_if(self.uri, self._record(), self.version)
        if version is None:
            self.lost.set()
            return False
        self.version = version
        return True

    def release(self) -> None:
        """End the lease now (a conditional write: a lease another run took is left alone)."""
        if self.version is not None and not self.lost.is_set():
            self.store.put_if(self.uri, self._record(released=True), self.version)
        self.version = None

    def _renewing(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self.renew():
                    print(f"reelsr: WARNING: this run's lease on the output was taken over by another run ({self.uri})", flush=True)
                    return
            except Exception as e:  # noqa: BLE001 - a storage hiccup: try again at the next period
                print(f"reelsr: WARNING: could not renew the output's lease: {e}", flush=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        self._thread = threading.Thread(target=self._renewing, name="reelsr-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release()
