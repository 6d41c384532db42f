"""A restore run over a video file or an archive (a local folder or an S3 prefix), on Ray.

    list the videos (streamed) ─► skip those restored with this config (done markers)
      ─► per video, several at once (``videos_at_once`` threads): the stages of
         ``pipeline.run.video`` ─► report rows ─► done marker ─► work folder removed
      ─► summary

Runs are idempotent and resumable: a video whose done marker matches its content and the
config is skipped; an interrupted video reuses its fine-tuned checkpoint and every chunk
already committed. A video that fails gets a ``failed`` row with the reason; the others
go on.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone

import ray

from pipeline import reports, visual
from pipeline.config import RestoreConfig
from pipeline.models import checkpoint, describe
from pipeline.models.weights import no_weights_error, read_pretrained
from pipeline.run.layout import VIDEO_EXTENSIONS, DoneMarkers, Layout, VideoJob, list_entries
from pipeline.run.lock import RunLock
from pipeline.run.pool import Heartbeat, RestorerPool, reason, say
from pipeline.run.row import VideoRow
from pipeline.run.session import connect, use_gpu, videos_at_once
from pipeline.run.summary import Outcome, print_summary
from pipeline.run.video import VideoStages
from pipeline.storage import Store
from pipeline.storage.uri import check_uri, is_s3, join

SKIPPED_ROWS_PER_FILE = 1000
PAGE_SKIPPED = 200  # skipped videos named on the run's page (the rest are counted)
POOL_IDLE_S = 120.0  # a warm pool left by a finished run is stopped after this long unused


def load_pretrained(cfg: RestoreConfig, store: Store) -> bytes | None:
    """The starting checkpoint's bytes (None: from scratch), checked against the config:
    a mismatch is a config error for the whole run, not a per-video failure."""
    if not cfg.model.pretrained:
        raise no_weights_error(cfg.model.arch_dict(cfg.model_scale), cfg.model_scale)
    if is_s3(cfg.model.pretrained):
        blob = store.read_bytes(cfg.model.pretrained)
    else:
        blob = read_pretrained(cfg.model.pretrained, cfg.model_scale)
        if blob is None:
            return None  # "scratch", asked for by name
    arch = checkpoint.load(blob)[1]["arch"]
    want = {k: v for k, v in cfg.model.arch_dict(cfg.model_scale).items() if k != "res_scale" and not (k == "scale" and cfg.model.arch == "liif")}
    got = {k: arch.get(k) for k in want}
    if got != want:
        fields = ", ".join(f"model.{k}" for k in want if k not in ("name", "scale") and got[k] != want[k])
        raise ValueError(
            f"model.pretrained {cfg.model.pretrained} is {describe(arch)}, the config asks for {describe(want)}: "
            f"set {fields or 'model.arch'}{' / scale' if got.get('scale') != want.get('scale') else ''} to match, or pick another checkpoint"
        )
    return blob



class WarmPool:
    """The inference pool of this driver's last run, kept for its next run (a service,
    the bench) while its config, start model and Ray session match, and stopped after
    ``POOL_IDLE_S`` seconds unused. Runs at the same time share it when they match;
    another config gets a pool of its own, stopped at its end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pool: RestorerPool | None = None
        self.key = ""
        self.users = 0
        self.generation = 0  # a stop armed under an older generation does nothing

    def take(self, cfg: RestoreConfig, gpu: bool, pretrained: bytes | None, digest: str | None = None) -> RestorerPool:
        """``digest``: the SHA-256 of ``pretrained`` when the caller has it already."""
        key = "|".join([ray.get_runtime_context().get_job_id(), repr(cfg.infer), repr(cfg.model), str(cfg.scale), str(gpu),
                        digest or hashlib.sha256(pretrained or b"").hexdigest()])
        with self._lock:
            self.generation += 1
            if self.pool is not None and self.key == key:
                self.users += 1
                return self.pool
            if self.pool is not None and self.users:
                return RestorerPool(cfg, gpu, pretrained)  # the kept one serves another run now
            if self.pool is not None:
                self.pool.shutdown()
            self.pool, self.key, self.users = RestorerPool(cfg, gpu, pretrained), key, 1
            return self.pool

    def give_back(self, pool: RestorerPool) -> None:
        with self._lock:
            if pool is not self.pool:
                pool.shutdown()
                return
            self.users -= 1
            if self.users:
                return
            generation = self.generation
        timer = threading.Timer(POOL_IDLE_S, self._stop, args=(generation,))
        timer.daemon = True
        timer.start()

    def _stop(self, generation: int) -> None:
        with self._lock:
            if generation != self.generation or self.users or self.pool is None:
                return
            pool, self.pool, self.key = self.pool, None, ""
        pool.shutdown()


WARM = WarmPool()


def restore(
    cfg: RestoreConfig,
    input_path: str | None,
    output: str,
    reference: str | None = None,
    preset: str | None = None,
    failed_before: list[tuple[VideoJob, str]] | None = None,
    store: Store | None = None,
) -> Outcome:
    """Restore every new video of ``input_path`` (file, folder or s3:// prefix) into
    ``output``; writes the reports and returns the outcome.

    Videos already restored with the same config (their done marker matches their size
    and version) are skipped and recorded as ``skipped``. ``failed_before``: videos that
    failed in a preparation step (e.g. making evaluation inputs), reported as failed.
    """
    store = store or Store.from_config(cfg.storage)
    out_root = check_uri(output, "--output")
    in_uri = check_uri(input_path, "--input") if input_path else None
    ref = check_uri(reference, "--reference") if reference else None
    if in_uri == out_root:
        raise ValueError("--output must differ from --input (restored videos would be mixed with the archive)")
    entries = list_entries(store, in_uri, out_root, ref) if in_uri else iter(())
    first = next(entries, None)  # fail fast, before starting Ray, on an empty input
    if first is None and not failed_before:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {input_path}")
    pretrained = load_pretrained(cfg, store)  # read and checked once per run: fails fast on a bad checkpoint
    started = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with RunLock(store, out_root, f"{started}-starting", wait_s=cfg.lock_wait) as lock:  # one run at a time per output, before Ray starts
        connect()
        gpu = use_gpu(cfg)
        config_hash = cfg.hash(gpu=gpu)
        run_id = f"{started}-{config_hash}"
        lock.run_id = run_id
        lock.renew()  # the lease names the run
        return _restore_locked(cfg, store, out_root, entries, first, pretrained, gpu, config_hash, run_id, preset, failed_before)


def _restore_locked(cfg, store, out_root, entries, first, pretrained, gpu, config_hash, run_id, preset, failed_before) -> Outcome:
    layout = Layout.of(out_root, cfg, gpu)
    markers = DoneMarkers(store, layout, config_hash)
    at_once = videos_at_once(cfg)
    print(f"reelsr: run {run_id}: x{cfg.scale}, results in {layout.videos}, "
          f"{at_once} video(s) at a time, cluster {ray.cluster_resources()}", flush=True)
    heartbeat = Heartbeat()
    # which weights, exactly (a builtin name keeps its config hash when a newer file ships, so
    # the rows record the file); hashed once for the rows and the warm pool's key
    digest = hashlib.sha256(pretrained).hexdigest() if pretrained is not None else None
    pool = WARM.take(cfg, gpu, pretrained, digest)
    started_before = pool.started
    stages = VideoStages(cfg, store, layout, run_id, pretrained, gpu, pool, heartbeat)
    rows: list[VideoRow] = []
    skipped_rows: list[dict] = []
    skipped_names: list[str] = []  # (the first PAGE_SKIPPED, for the run's page)
    skipped = 0

    def new_row(job: VideoJob) -> VideoRow:
        return VideoRow.new(job, cfg, config_hash, preset, digest)

    def flush_skipped() -> None:
        reports.write(out_root, "videos", run_id, skipped_rows, store)
        skipped_rows.clear()

    def fail(job: VideoJob, error: str, announce: bool = True) -> None:
        """A failed row for a video that never reached the stages, reported now."""
        row = new_row(job)
        row.error = error
        if announce:
            say(job.rel, f"FAILED: {error}")
        reports.write(out_root, "videos", run_id, [row.record()], store)
        rows.append(row)

    def process(job: VideoJob) -> VideoRow:
        """One video through the stages, then its results committed: report rows, then
        the done marker, then its work folder removed. A failure becomes a failed row."""
        row = new_row(job)
        frames: list[dict] = []
        heartbeat.video(+1)
        t0 = time.perf_counter()
        try:
            try:
                frames = stages.restore(job, row)
                row.status = "restored"
            except Exception as e:  # noqa: BLE001 - a bad video fails alone
                row.output, row.error = None, reason(e)
                row.total_seconds = time.perf_counter() - t0
                say(job.rel, f"FAILED: {row.error}")
                sys.stderr.write(f"[{job.rel}] traceback of the failure:\n{traceback.format_exc()}")
            reports.write(out_root, "videos", run_id, [row.record()], store)
            reports.write(out_root, "frames", run_id, frames, store)
            if row.status == "restored":
                markers.mark(job, run_id)
                try:
                    store.delete_tree(layout.work(job))
                except Exception as e:  # noqa: BLE001 - the video is done; leftovers only cost space
                    say(job.rel, f"WARNING: could not remove its work folder {layout.work(job)}: {reason(e)}")
        finally:
            heartbeat.video(-1)
        return row

    for job, error in failed_before or []:
        fail(job, error, announce=False)  # the preparation step said so already

    in_flight: dict[Future, VideoJob] = {}

    def collect() -> None:
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for fut in done:
            job = in_flight.pop(fut)
            try:
                rows.append(fut.result())
            except Exception as e:  # noqa: BLE001 - e.g. its report or done marker could not be written
                row = new_row(job)
                row.error = f"could not commit its results: {reason(e)}"
                say(job.rel, f"FAILED: {row.error}")
                rows.append(row)
                try:
                    reports.write(out_root, "videos", run_id, [row.record()], store)
                except Exception as e2:  # noqa: BLE001 - the storage itself fails: the log has it
                    say(job.rel, f"WARNING: the failure could not be reported either: {reason(e2)}")

    try:
        with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="video") as threads:
            listed = itertools.chain([first] if first else [], entries)
            for n, (entry, reference_uri) in enumerate(listed, 1):
                job = layout.job(entry, reference_uri)
                if job.problem:
                    fail(job, job.problem)
                    continue
                try:
                    state, other = markers.state(job)
                except Exception as e:  # noqa: BLE001
                    state, other = "error", f"cannot read its done marker: {reason(e)}"
                busy = next((j.rel for j in in_flight.values() if j.output == job.output), None)
                if state == "skip":
                    say(job.rel, f"skipped: restored by run {other} with this config ({job.output})")
                    skipped += 1
                    if len(skipped_names) < PAGE_SKIPPED:
                        skipped_names.append(job.rel)
                    row = new_row(job)
                    row.status, row.output, row.restored_run_id = "skipped", job.output, other
                    row.pretrained_sha256 = None  # (the restoring run's row has the weights that restored it)
                    skipped_rows.append(row.record())
                    if len(skipped_rows) >= SKIPPED_ROWS_PER_FILE:
                        flush_skipped()
                    continue
                if state in ("collision", "error") or busy:
                    fail(job, other if state == "error" else
                         f"{job.output} is the restored {other or busy}; {job.rel} would overwrite it: rename one, or set media.container")
                    continue
                say(job.rel, f"video {n}" + (f": source changed since run {other}, restoring again" if state == "changed" else ""))
                while len(in_flight) >= at_once:
                    collect()
                in_flight[threads.submit(process, job)] = job
            while in_flight:
                collect()
    finally:
        WARM.give_back(pool)
    restored = sum(r.status == "restored" for r in rows)
    if restored:
        print(f"reelsr: {pool.started - started_before} inference actor(s) started for {restored} restored video(s) "
              f"(pool of {pool.size.actors}, {pool.what} each)", flush=True)
    flush_skipped()
    outcome = Outcome(rows, skipped, run_id, layout, page=write_page(store, layout, run_id, rows, skipped, skipped_names, stages.pictures))
    print_summary(outcome)
    return outcome


def write_page(store: Store, layout: Layout, run_id: str, rows: list[VideoRow], skipped: int, skipped_names: list[str],
               pictures: dict[str, list[dict]]) -> str | None:
    """The run's HTML page (``pipeline.visual.run_page``) in the output store; its URI, or
    None when it could not be written (the run's results stand: the log says why)."""
    page = layout.page(run_id)
    try:
        store.write_bytes(page, visual.run_page(run_id, page, [r.record() for r in rows], pictures, skipped, skipped_names).encode())
        return page
    except Exception as e:  # noqa: BLE001 - the videos and reports are written already
        print(f"reelsr: WARNING: the run's page could not be written to {page}: {reason(e)}", flush=True)
        return None


def list_videos(input_path: str, output_root: str, cfg: RestoreConfig, reference: str | None = None,
                store: Store | None = None, gpu: bool = False) -> list[VideoJob]:
    """The jobs of an input as a list (for small inputs and tests)."""
    store = store or Store.from_config(cfg.storage)
    layout = Layout.of(check_uri(output_root, "--output"), cfg, gpu)
    ref = check_uri(reference, "--reference") if reference else None
    return [layout.job(e, r) for e, r in list_entries(store, check_uri(input_path, "--input"), layout.root, ref)]


__all__ = ["Outcome", "join", "list_videos", "load_pretrained", "restore"]
