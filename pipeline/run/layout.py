"""Where a run reads and writes, and what it has done already: the videos of an input,
the names of every output, and the done markers. No Ray here.

Under the output root OUT::

    OUT/x<scale>-<config hash>/<path>.<container>      restored videos
    OUT/checkpoints/<path>.<train hash>.<source>.pt    fine-tuned models
    OUT/reports/{videos,frames}/run_id=<run>/          Parquet reports
    OUT/reports/runs/<run>.html                        the run's page: each video's status, metrics, crops
    OUT/reports/crops/x<scale>-<hash>/<path>.frame<i>.png  before/after crops of sampled frames
    OUT/.reelsr/done/x<scale>-<hash>/<path>.json       done markers (what was restored, by which run)
    OUT/.reelsr/work/x<scale>-<hash>/<path>.<source>/  committed chunks of unfinished videos
    OUT/.reelsr/run.lock                               the lease of the run writing here (run/lock.py)

The config hash covers everything that changes the restored pixels (scale, device,
model, training, inference precision, encoding), so a changed config writes beside
earlier results, never over them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from pipeline.config import RestoreConfig
from pipeline.storage import Entry, Store
from pipeline.storage.uri import is_s3, join, split, unsafe_rel

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
NAME_MAX = 255  # bytes per file name on Linux file systems


@dataclass(frozen=True)
class VideoJob:
    """One listed video and the names of its outputs."""

    rel: str  # path relative to the input root
    source: str  # input URI (local path or s3://)
    size: int
    version: str  # S3 ETag or local mtime: with the size, identifies the content
    out_rel: str  # output path relative to OUT/<tag>/
    output: str  # restored video URI
    reference: str | None
    problem: str | None = None  # set when the name cannot be used: the video fails with it

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.size}:{self.version}".encode()).hexdigest()[:8]


def _fit(rel: str, suffix: str) -> str:
    """``rel + suffix``, with the last name shortened (a prefix and a hash of the whole
    name) when the suffix would push it over NAME_MAX bytes."""
    folder, _, name = rel.rpartition("/")
    if len((name + suffix).encode()) > NAME_MAX:
        digest = "~" + hashlib.sha256(name.encode()).hexdigest()[:16]
        keep = name.encode()[: NAME_MAX - len(suffix.encode()) - len(digest) - 3].decode("utf-8", "ignore")
        name = keep + digest
    return f"{folder}/{name}{suffix}" if folder else name + suffix


@dataclass(frozen=True)
class Layout:
    """The names under the output root ``root`` for one config (``tag``)."""

    root: str
    tag: str
    container: str

    @classmethod
    def of(cls, root: str, cfg: RestoreConfig, gpu: bool) -> Layout:
        size = f"{cfg.media.size}{'' if cfg.media.fit == 'keep' else '-' + cfg.media.fit}" if cfg.media.size else f"x{cfg.scale:g}"
        return cls(root, f"{size}-{cfg.hash(gpu=gpu)}", cfg.media.container)

    def job(self, entry: Entry, reference: str | None) -> VideoJob:
        problem = unsafe_rel(entry.rel)
        if problem:
            return VideoJob(entry.rel, entry.uri, entry.size, entry.version, "", "", None, problem)
        out_rel = os.path.splitext(entry.rel)[0] + "." + self.container
        job = VideoJob(entry.rel, entry.uri, entry.size, entry.version, out_rel, join(self.root, self.tag, out_rel), reference)
        problem = self._too_long(job)
        return dataclasses.replace(job, out_rel="", output="", reference=None, problem=problem) if problem else job

    def _too_long(self, job: VideoJob) -> str | None:
        """Why the output name cannot be stored (None when it can): a local file name
        over 255 bytes, or an S3 key over 1,024 bytes (the longest the video needs: a
        chunk in its work folder)."""
        if is_s3(job.output):
            keys = (job.output, self.done(job), self.chunk(job, "0" * 12, 0))
            n = max(len(split(uri)[1].encode()) for uri in keys)
            return f"name too long: its keys under the output would be up to {n} bytes (S3 allows 1024)" if n > 1024 else None
        n = max(len(part.encode()) for part in job.out_rel.split("/"))
        return f"name too long: an output file name would be {n} bytes (the file system allows {NAME_MAX})" if n > NAME_MAX else None

    @property
    def videos(self) -> str:
        return join(self.root, self.tag)

    def done(self, job: VideoJob) -> str:
        return join(self.root, ".reelsr", "done", self.tag, _fit(job.out_rel, ".json"))

    def work(self, job: VideoJob) -> str:
        return join(self.root, ".reelsr", "work", self.tag, _fit(job.rel, f".{job.fingerprint}"))

    def checkpoint(self, job: VideoJob, train_hash: str) -> str:
        return join(self.root, "checkpoints", _fit(job.rel, f".{train_hash}.{job.fingerprint}.pt"))

    def model_work(self, job: VideoJob, model_sha: str) -> str:
        """The committed chunks of one model (its checkpoint's sha) for the video."""
        return join(self.work(job), model_sha)

    def chunk(self, job: VideoJob, model_sha: str, index: int) -> str:
        return join(self.model_work(job, model_sha), f"chunk-{index:05d}.{self.container}")

    def crop(self, job: VideoJob, frame_index: int) -> str:
        """The before/after picture of one sampled frame (``pipeline.visual``)."""
        return join(self.root, "reports", "crops", self.tag, _fit(job.out_rel, f".frame{frame_index:06d}.png"))

    def page(self, run_id: str) -> str:
        """The run's HTML page."""
        return join(self.root, "reports", "runs", f"{run_id}.html")


def list_entries(store: Store, input_uri: str, skip: str, reference: str | None) -> Iterator[tuple[Entry, str | None]]:
    """The videos of a file or folder/prefix input with their references, streamed in
    sorted order (memory does not grow with the archive). Hidden names and the output
    root ``skip`` are left out."""
    single = os.path.isfile(input_uri) if not is_s3(input_uri) else store.exists(input_uri)
    if single:
        if reference is not None and not is_s3(reference) and not os.path.isfile(reference):
            raise ValueError(f"--reference must be a file when --input is a file, got {reference!r}")
        yield store.entry(input_uri), reference
        return
    if not is_s3(input_uri) and not os.path.isdir(input_uri):
        raise FileNotFoundError(f"input not found: {input_uri}")
    if reference is not None and not is_s3(reference) and not os.path.isdir(reference):
        raise ValueError(f"--reference must be a folder when --input is a folder, got {reference!r}")
    for entry in store.list_files(input_uri, skip=skip):
        if entry.rel.lower().endswith(VIDEO_EXTENSIONS):
            yield entry, (join(reference, entry.rel) if reference else None)


class DoneMarkers:
    """The done markers of one layout: what was restored with this config, from which
    source content, by which run."""

    def __init__(self, store: Store, layout: Layout, config_hash: str) -> None:
        self.store, self.layout, self.config_hash = store, layout, config_hash

    def state(self, job: VideoJob) -> tuple[str, str | None]:
        """("new", None), ("skip", run that restored it), ("changed", that run) when the
        source changed since, or ("collision", other source) when another input of the
        archive already restored to the same output."""
        blob = self.store.read_bytes(self.layout.done(job), missing_ok=True)
        if blob is None:
            return "new", None
        marker = json.loads(blob)
        same_content = (marker["source_bytes"], marker["source_version"]) == (job.size, job.version)
        if marker["video"] != job.rel or (marker["source"] != job.source and not same_content):
            return "collision", marker["source"]  # another input made this output: never written over
        if not same_content:
            return "changed", marker["run_id"]
        return "skip", marker["run_id"]  # (the same file, even if the archive moved)

    def mark(self, job: VideoJob, run_id: str) -> None:
        marker = {"video": job.rel, "source": job.source, "source_bytes": job.size, "source_version": job.version,
                  "output": job.output, "run_id": run_id, "config_hash": self.config_hash,
                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.store.write_bytes(self.layout.done(job), json.dumps(marker, indent=1).encode())
