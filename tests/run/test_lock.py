"""The run lock: a lease in the output store, on local folders and on a real S3-protocol
server (moto's server mode on loopback), taken with conditional writes."""

import json
import threading
import time

import pytest

from pipeline.config import StorageConfig
from pipeline.run.lock import RunLock, RunLocked
from pipeline.storage import Store
from tests.conftest import run_job


@pytest.fixture
def out(store_root):
    return store_root


@pytest.fixture
def store(tmp_path):
    return Store(StorageConfig(scratch_dir=str(tmp_path / "scratch")))


def test_conditional_writes(out, store):
    uri = f"{out}/x.json"
    v1 = store.put_if(uri, b"one", None)
    assert v1 and store.put_if(uri, b"two", None) is None  # it exists now
    assert store.put_if(uri, b"two", "not-its-version") is None
    v2 = store.put_if(uri, b"two", v1)
    assert v2 and v2 != v1 and store.read_versioned(uri) == (b"two", v2)
    assert store.put_if(uri, b"three", v1) is None and store.read_bytes(uri) == b"two"


def test_a_second_run_is_refused_with_the_holder_named_then_gets_it_after_the_release(out, store):
    with RunLock(store, out, "run-A"):
        with pytest.raises(RunLocked, match=r"run run-A on .* \(pid \d+\) is writing to this output; its lease runs until"):
            RunLock(store, out, "run-B").acquire()
    b = RunLock(store, out, "run-B")
    b.acquire()
    assert json.loads(store.read_bytes(f"{out}/.reelsr/run.lock"))["run_id"] == "run-B"


def test_only_one_of_many_racing_runs_gets_the_lease(out, store):
    won, lost = [], []
    start = threading.Barrier(6)

    def race(i):
        lock = RunLock(store, out, f"run-{i}")
        start.wait()
        try:
            lock.acquire()
            won.append(i)
        except RunLocked:
            lost.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 5
    assert json.loads(store.read_bytes(f"{out}/.reelsr/run.lock"))["run_id"] == f"run-{won[0]}"


def test_a_waiting_run_gets_the_lease_when_the_holder_ends(out, store):
    holder = RunLock(store, out, "run-A")
    holder.acquire()
    threading.Timer(0.5, holder.release).start()
    t0 = time.monotonic()
    RunLock(store, out, "run-B", wait_s=30, poll_s=0.1).acquire()
    assert 0.4 < time.monotonic() - t0 < 10


def test_a_crashed_runs_lease_expires_and_is_taken_over(out, store, capsys):
    crashed = RunLock(store, out, "run-A", lease_s=0.5)
    crashed.acquire()  # and never renewed: the process "died"
    with pytest.raises(RunLocked):
        RunLock(store, out, "run-B").acquire()
    time.sleep(0.6)
    RunLock(store, out, "run-B").acquire()
    assert "took over the lease of run run-A" in capsys.readouterr().out
    assert not crashed.renew() and crashed.lost.is_set()  # the stalled run learns it lost the lease
    crashed.release()  # and leaves the new holder's lease alone
    assert json.loads(store.read_bytes(f"{out}/.reelsr/run.lock"))["run_id"] == "run-B"


def test_the_lease_of_a_killed_run_on_this_machine_is_taken_at_once(out, store, capsys):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    gone = RunLock(store, out, "run-A")
    gone.acquire()
    record = json.loads(store.read_bytes(gone.uri))
    store.write_bytes(gone.uri, json.dumps(dict(record, pid=int(proc.stdout))).encode())  # as the killed process wrote it
    RunLock(store, out, "run-B").acquire()
    said = capsys.readouterr().out
    assert "took over the lease of run run-A" in said and "whose process is gone" in said


def test_the_lease_is_renewed_while_the_run_lasts(out, store):
    with RunLock(store, out, "run-A", lease_s=0.6):
        time.sleep(1.5)  # past two lease lengths: renewed every 0.2 s
        with pytest.raises(RunLocked):
            RunLock(store, out, "run-B").acquire()
    assert json.loads(store.read_bytes(f"{out}/.reelsr/run.lock"))["expires"] == 0.0  # released


@pytest.mark.slow
def test_a_second_restore_on_the_same_output_exits_with_the_reason(tmp_path):
    """Two jobs.restore on one output: while the first holds the lease (as a live run
    would), the second exits with code 3 before starting Ray, naming the holder."""
    out = str(tmp_path / "out")
    store = Store(StorageConfig(scratch_dir=str(tmp_path / "scratch")))
    with RunLock(store, out, "20261205T000000Z-abc"):
        proc = run_job("jobs.restore", "--input", "demo/carphone_qcif.mp4", "--output", out, "--preset", "tiny", check=False, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "run 20261205T000000Z-abc on " in proc.stderr and "is writing to this output" in proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
