"""The run's inference actors, shared by every video in flight.

Actors start once per run (not once per video) and load the run's starting model in
``__init__``; a video's fine-tuned weights are copied into the actors that restore its
chunks. Chunks go only to actors that have started, so an actor waiting for resources
the cluster does not have (yet), or that other videos hold, delays nothing. Idle actors
give their resources back when another stage of the run needs them (``make_room``:
probing, training, assembly and metrics are Ray tasks that would otherwise wait behind
an idle pool) and are started again when a video needs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray
import torch

from pipeline.config import RestoreConfig
from pipeline.media.chunks import DamagedChunk
from pipeline.run.session import inference_pool_size
from pipeline.storage import Store

CHUNK_RETRIES = 2  # a chunk whose actor dies is restored again this many times at most


def say(label: str, msg: str) -> None:
    """Progress line, visible in the terminal and in ``ray job logs``."""
    print(f"[{label}] {msg}", flush=True)


def reason(e: BaseException) -> str:
    """One line saying why: the original exception of a failed Ray task, or the one an
    actor's constructor raised (the last line of the creation task's traceback), not
    the remote traceback."""
    cause = getattr(e, "cause", None) if isinstance(e, ray.exceptions.RayTaskError) else None
    if isinstance(e, ray.exceptions.RayActorError) and "\n  File " in getattr(e, "error_msg", ""):
        lines = e.error_msg.splitlines()
        after = max(i for i, ln in enumerate(lines) if ln.startswith("  File "))
        raised = next((ln for ln in lines[after + 1:] if ln and not ln[0].isspace()), "")
        if raised:
            return raised
    e = cause if isinstance(cause, BaseException) else e
    return f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__


class Heartbeat:
    """Videos in flight, how many of them wait for inference actors to start, and when the
    run last made progress. A video waiting for actors fails only when every video in
    flight is waiting (none holds resources it will release) and the run has made no
    progress for the timeout; a video training or restoring elsewhere keeps it waiting."""

    def __init__(self) -> None:
        self._t = time.monotonic()
        self._videos = 0
        self._waiting = 0
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._t = time.monotonic()

    def video(self, delta: int) -> None:
        with self._lock:
            self._videos += delta
            self._t = time.monotonic()

    def waiting(self, delta: int) -> None:
        with self._lock:
            self._waiting += delta

    def stuck_s(self) -> float:
        """Seconds without progress while every video in flight waits (0 otherwise)."""
        with self._lock:
            return time.monotonic() - self._t if self._waiting >= self._videos else 0.0


class RestorerPool:
    """A pool of ``ChunkRestorer`` actors sized from the cluster when the run starts
    (one per GPU, or one single-threaded actor per CPU).

    Actors hold their CPU or GPU while alive, idle or not. When another stage needs a
    Ray task of its own (a fine-tune, or a light stage that found no idle actor), it
    declares that demand (``outside``): idle actors are stopped until the cluster has
    room, actors that become idle meanwhile are stopped too, and none is started, until
    the demand ends; so a task never waits on an idle pool.
    """

    def __init__(self, cfg: RestoreConfig, gpu: bool, start: bytes | None) -> None:
        self.cfg, self.gpu = cfg, gpu
        self.size = inference_pool_size(cfg, gpu)
        self.arch = cfg.model.arch_dict(cfg.model_scale)
        self._start_box = [ray.put(start)] if start is not None else None
        self._lock = threading.Condition()
        self._idle: list[Any] = []
        self._starting: dict[Any, Any] = {}  # ready ref -> actor
        self._busy = 0
        self._demand = 0  # stages waiting for, or running, a task of their own
        self._failed_starts = 0  # since the last actor that started
        self._last_failure = ""
        self.started = 0  # actors started (for the log and the bench)

    @property
    def what(self) -> str:
        return f"1 GPU + {self.size.cpus_per_actor} CPU" if self.size.use_gpu else f"{self.size.cpus_per_actor} CPU"

    def _alive(self) -> int:
        return len(self._idle) + len(self._starting) + self._busy

    def _fill(self) -> None:
        """Start actors up to the pool's size (lock held), unless another stage's task
        is waiting for resources, or every start of late has failed (then raise the
        reason: starting more would fail the same way)."""
        from pipeline.actors import restorer_actor

        if self._failed_starts:
            if self._starting:
                return  # a start failed: see how the others end before starting more
            if self._failed_starts >= self.size.actors and not self._alive():
                raise RuntimeError(f"no inference actor could start: {self._last_failure}")
        if self._demand:
            return
        for _ in range(self.size.actors - self._alive()):
            a = restorer_actor(self.cfg.infer, self.size.use_gpu, self.size.cpus_per_actor, self.arch, self._start_box)
            self._starting[a.__ray_ready__.remote()] = a
            self.started += 1

    def _collect_started(self, timeout: float) -> None:
        """Move actors that finished starting to the idle list (or stop them while another
        stage waits for resources); record those that failed, with the reason."""
        with self._lock:
            refs = list(self._starting)
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        with self._lock:
            for ref in ready:
                actor = self._starting.pop(ref, None)
                if actor is None:
                    continue
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 - e.g. CUDA unusable: the reason is reported
                    self._failed_starts += 1
                    self._last_failure = reason(e)
                    ray.kill(actor)
                    continue
                self._failed_starts = 0
                if self._demand:
                    ray.kill(actor)
                else:
                    self._idle.append(actor)
            if ready:
                self._lock.notify_all()

    def acquire(self, most: int, fill: bool = True) -> list[Any]:
        """Up to ``most`` started, idle actors (none when none is free now); with
        ``fill``, starts the actors the pool lacks (raising when none can start)."""
        with self._lock:
            if fill:
                self._fill()
        self._collect_started(timeout=0)
        with self._lock:
            got, self._idle = self._idle[:most], self._idle[most:]
            self._busy += len(got)
            return got

    def release(self, actor: Any) -> None:
        with self._lock:
            self._busy -= 1
            if self._demand:
                ray.kill(actor)  # another stage's task waits for what it holds
            else:
                self._idle.append(actor)
            self._lock.notify_all()

    def discard(self, actor: Any) -> None:
        with self._lock:
            self._busy -= 1
            self._lock.notify_all()
        ray.kill(actor)

    @contextlib.contextmanager
    def outside(self, cpus: float = 1.0, gpus: float = 0.0) -> Iterator[None]:
        """Declare, for the block, a task of another stage that needs ``cpus`` / ``gpus``:
        idle actors are stopped until the cluster has room for it, and the pool neither
        keeps newly idle actors nor starts new ones until the block ends."""
        with self._lock:
            self._demand += 1
        try:
            self._make_room(cpus, gpus)
            yield
        finally:
            with self._lock:
                self._demand -= 1
                self._lock.notify_all()

    def _make_room(self, cpus: float, gpus: float, settle_s: float = 1.0) -> None:
        """Stop idle actors until the cluster has ``cpus`` / ``gpus`` free. Ray's view of
        the free resources lags the tasks that just finished, so an actor is stopped only
        after the view has said "no room" for ``settle_s`` seconds, one at a time; actors
        that are busy now are stopped when they become idle (``release``)."""
        deadline = time.monotonic() + settle_s
        while True:
            free = ray.available_resources()
            if free.get("CPU", 0.0) >= cpus and free.get("GPU", 0.0) >= gpus:
                return
            with self._lock:
                if not self._idle:
                    return
                if time.monotonic() >= deadline:
                    ray.kill(self._idle.pop())
                    deadline = time.monotonic() + settle_s
            time.sleep(0.05)

    def stage(self, method: str, task: Any, *args: Any, num_returns: int = 1, cpus: float = 1.0, gpus: float = 0.0,
              **kwargs: Any) -> Any:
        """Run a light stage (probe, training-frame extraction, assembly, metrics) on an
        idle actor when one is free now: no process to start, and no CPU or GPU taken
        from the pool; else as its Ray ``task`` (needing ``cpus``/``gpus``, declared to
        the pool). Returns the call's ObjectRef(s), ready (an error inside is raised by
        the caller's ``ray.get``)."""
        for actor in self.acquire(1, fill=False):
            call = getattr(actor, method)
            refs = (call.options(num_returns=num_returns) if num_returns != 1 else call).remote(*args, **kwargs)
            last = refs[-1] if num_returns != 1 else refs
            try:
                ray.get(last)
            except ray.exceptions.RayTaskError:
                pass  # the stage's own failure, raised by the caller's ray.get
            except ray.exceptions.RayError:
                self.discard(actor)  # the actor died (or was killed for memory): the task below does the stage
                break
            self.release(actor)
            return refs
        with self.outside(cpus, gpus):
            refs = (task.options(num_returns=num_returns) if num_returns != 1 else task).remote(*args, **kwargs)
            ray.wait(list(refs) if num_returns != 1 else [refs], num_returns=num_returns)
        return refs

    def encoder(self, media, size: tuple[int, int], heartbeat: Heartbeat, start_timeout_s: float = 600.0, depth: int = 8) -> str:
        """The encoder of one video's chunks, decided once (by an actor, on a GPU pool:
        whether NVENC opens depends on the node), so that all its chunks join."""
        from pipeline.upscale import encoder_for

        if not self.size.use_gpu:
            return encoder_for(media, torch.device("cpu"), size, depth)
        heartbeat.waiting(+1)
        try:
            while True:
                got = self.acquire(1)
                if got:
                    break
                self.wait(5.0)
                if heartbeat.stuck_s() > start_timeout_s:
                    raise RuntimeError(f"no inference actor started within {start_timeout_s:.0f} s (each needs {self.what})")
        finally:
            heartbeat.waiting(-1)
        try:
            return ray.get(got[0].encoder.remote(media, size, depth))
        finally:
            self.release(got[0])

    def wait(self, timeout: float) -> None:
        """Wait until an actor becomes free or finishes starting (at most ``timeout`` s)."""
        with self._lock:
            starting = bool(self._starting)
        if starting:
            self._collect_started(timeout)
        else:
            with self._lock:
                if not self._idle:
                    self._lock.wait(timeout)

    def shutdown(self) -> None:
        with self._lock:
            actors, self._idle, self._starting = self._idle + list(self._starting.values()), [], {}
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - Ray was shut down meanwhile: the actors went with it
                pass

    def run_chunks(
        self, label: str, info, work: list, ckpt: bytes, store: Store, version: str, media, heartbeat: Heartbeat,
        done_frames: int = 0, start_timeout_s: float = 600.0, codec: str | None = None, geometry=None,
    ) -> list[DamagedChunk]:
        """Restore ``work`` ([(chunk, uri)]) of one video with its checkpoint ``ckpt``
        (encoded with ``media``), printing progress; returns the chunks that could not be
        decoded whole (the others are still restored, so the report can say how many
        frames are damaged).

        If no actor starts within ``start_timeout_s`` while every video in flight is
        waiting likewise, the video fails with the reason.
        """
        if not work:
            return []
        scale = self.cfg.model_scale
        # CPU actors are single-threaded; a video with fewer chunks than actors gives each of its calls
        # the threads of the actors it leaves idle (capped by the node's CPUs in the actor)
        threads = 0 if self.size.use_gpu else self.size.cpus_per_actor * max(1, self.size.actors // min(len(work), self.size.actors))
        say(label, f"infer: {len(work)} chunks on up to {min(self.size.actors, len(work))} actor(s) ({self.what}"
            + (f", {threads} threads" if threads > 1 else "") + " each)")
        box = [ray.put(ckpt)]  # boxed: an actor fetches it once per video, not per chunk
        key = hashlib.sha256(ckpt).hexdigest()
        info_ref = ray.put(info)  # the keyframe index grows with the video: stored once, not pickled into every call
        queue = list(work)
        working: dict[Any, Any] = {}
        t0 = time.perf_counter()
        first = done_frames
        damaged: list[DamagedChunk] = []
        waiting = False
        lost: dict[Any, tuple] = {}  # call -> its (chunk, uri), to redo it if the actor dies
        retries: dict[int, int] = {}

        def wait_state(now: bool) -> None:
            nonlocal waiting
            if now != waiting:
                heartbeat.waiting(+1 if now else -1)
                waiting = now

        def give(actor) -> None:
            c, uri = queue.pop(0)
            ref = actor.restore.remote(key, box, scale, info_ref, c, store, version, uri, media, threads, codec, geometry)
            working[ref], lost[ref] = actor, (c, uri)

        try:
            while queue or working:
                if queue:
                    for actor in self.acquire(len(queue)):
                        give(actor)
                wait_state(not working)
                if not working:
                    self.wait(5.0)
                    if heartbeat.stuck_s() > start_timeout_s:
                        raise RuntimeError(
                            f"no inference actor started within {start_timeout_s:.0f} s "
                            f"(each needs {self.what}; cluster: {ray.cluster_resources()})")
                    continue
                ready, _ = ray.wait(list(working), num_returns=1, timeout=5.0)
                if not ready:
                    continue
                actor = working.pop(ready[0])
                lost_chunk = lost.pop(ready[0])
                try:
                    done_frames += ray.get(ready[0])["frames"]
                except DamagedChunk as e:  # (a RayTaskError that is also the DamagedChunk raised)
                    damaged.append(e)
                    say(label, f"infer: chunk {e.chunk}: {e.frames} frames could not be decoded")
                except ray.exceptions.RayTaskError:
                    self.release(actor)
                    raise
                except ray.exceptions.RayError as e:  # the actor died (or was killed for memory)
                    self.discard(actor)  # the pool starts a replacement
                    c, uri = lost_chunk
                    retries[c.index] = retries.get(c.index, 0) + 1
                    if retries[c.index] > CHUNK_RETRIES:
                        raise RuntimeError(f"chunk {c.index}: its inference actor died {retries[c.index]} times, last: {reason(e)}") from e
                    say(label, f"infer: chunk {c.index}: its actor died ({reason(e)}); restoring it again")
                    queue.insert(0, (c, uri))  # a chunk is committed only when complete: nothing partial to undo
                    continue
                if queue:
                    give(actor)  # the same actor goes on with this video: its weights are loaded
                else:
                    self.release(actor)
                heartbeat.beat()
                rate = (done_frames - first) / (time.perf_counter() - t0)
                say(label, f"infer: {done_frames}/{info.frames} frames  {rate:.1f} fps")
        finally:
            wait_state(False)
            for actor in working.values():  # a failure left chunks running: their actors stop with them
                self.discard(actor)
        return damaged
