"""``Store``: one interface over local folders and S3-compatible storage.

A ``Store`` is built from the run's ``StorageConfig``; it is a small frozen dataclass,
so it travels to Ray tasks and actors, and each process builds its own S3 client from
it once. Every method takes a URI and hands it to the backend for its scheme
(``LocalBackend``, ``S3Backend``); ``committing`` is the one way files are written
before they appear under a final name (chunks, restored videos, checkpoints, reports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.config import StorageConfig
from pipeline.storage.base import Backend, Entry
from pipeline.storage.errors import errors_about
from pipeline.storage.local import LocalBackend, atomic, tmp_name
from pipeline.storage.s3 import S3Backend
from pipeline.storage.scratch import Scratch
from pipeline.storage.uri import is_s3, name_of

_LOCAL = LocalBackend()


@dataclass(frozen=True)
class Store:
    cfg: StorageConfig = field(default_factory=StorageConfig)

    @classmethod
    def from_config(cls, cfg: StorageConfig) -> Store:
        """With the endpoint and region resolved here, from this process's environment,
        so every Ray worker uses the same ones whatever its own environment holds."""
        endpoint = cls(cfg).endpoint() or ""
        region = cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
        try:
            return cls(dataclasses.replace(cfg, endpoint_url=endpoint, region=region))
        except ValueError as e:
            if cfg.endpoint_url:
                raise
            raise ValueError(f"the S3 endpoint from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL: {e}".replace("storage.endpoint_url ", "")) from None

    def endpoint(self) -> str | None:
        """The configured endpoint, else the standard AWS_ENDPOINT_URL_S3 /
        AWS_ENDPOINT_URL environment variables, else AWS's own (None)."""
        return self.cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None

    def s3(self) -> S3Backend:
        return S3Backend(self.endpoint(), self.cfg.region, self.cfg.addressing_style, self.cfg.retries)

    def backend(self, uri: str) -> Backend:
        return self.s3() if is_s3(uri) else _LOCAL

    def arrow_fs(self):
        """pyarrow's S3 file system with this store's endpoint, region and addressing."""
        return self.s3().arrow_fs()

    @property
    def scratch(self) -> Scratch:
        return Scratch(self.cfg.scratch_dir, self.cfg.scratch_gb)

    # ------------------------------------------------------------------ reading

    def exists(self, uri: str) -> bool:
        return self.backend(uri).exists(uri)

    def entry(self, uri: str, rel: str = "") -> Entry:
        """Size and version of one file; FileNotFoundError when it is not there."""
        return self.backend(uri).entry(uri, rel or name_of(uri))

    def read_bytes(self, uri: str, missing_ok: bool = False) -> bytes | None:
        """The content of ``uri``; when it does not exist, None with ``missing_ok``,
        else FileNotFoundError."""
        return self.backend(uri).read_bytes(uri, missing_ok)

    def list_files(self, root: str, skip: str | None = None) -> Iterator[Entry]:
        """Files under ``root``, streamed in sorted order (S3: one page of 1,000 keys at a
        time; local: one folder at a time). Hidden names (a path part starting with
        ``.``) and everything under ``skip`` (e.g. the output prefix) are left out."""
        return self.backend(root).list_files(root, skip)

    def names(self, folder: str) -> set[str]:
        """Names of the files directly in ``folder`` (empty when it does not exist)."""
        return self.backend(folder).names(folder)

    def local_copy(self, uri: str, version: str = "") -> str:
        """A local path with the content of ``uri``: the path itself for local files, else
        this node's scratch copy (downloaded once per node). The object must still have
        ``version`` (its ETag), so a source replaced during a run is an error."""
        if not is_s3(uri):
            if not os.path.isfile(uri):
                raise FileNotFoundError(f"not found: {uri}")
            return uri
        backend = self.s3()
        listed = self.entry(uri) if not version else None
        return self.scratch.copy(
            uri, version or listed.version, self.endpoint() or "",
            entry=lambda: listed or self.entry(uri), download=lambda tmp: backend.download(uri, tmp))

    def download(self, uri: str, local_path: str) -> None:
        self.backend(uri).download(uri, local_path)

    # ------------------------------------------------------------------ writing (atomic)

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Commit ``data`` to ``uri`` (S3: one PUT; local: a hidden temporary file in the
        same folder, renamed). On failure nothing is left: StorageError names ``uri``."""
        with errors_about(uri, "write"):
            self.backend(uri).write_bytes(uri, data)

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """(content, version) of ``uri``, None when it does not exist (for ``put_if``)."""
        return self.backend(uri).read_versioned(uri)

    def put_if(self, uri: str, data: bytes, version: str | None) -> str | None:
        """Write ``data`` to ``uri`` only if it is absent (``version`` None) or unchanged
        since it was read with ``version``, atomically against other writers (S3: a
        conditional PUT; local: under a lock of its folder). The new version, or None
        when the condition did not hold."""
        with errors_about(uri, "write"):
            return self.backend(uri).put_if(uri, data, version)

    def put_file(self, local_path: str, uri: str) -> None:
        """Commit a finished local file to ``uri`` (S3: upload; local: rename, or copy
        and rename across file systems). StorageError names ``uri``."""
        with errors_about(uri, "write"):
            self.backend(uri).put_file(local_path, uri)

    @contextlib.contextmanager
    def committing(self, uri: str, suffix: str = "") -> Iterator[str]:
        """A local temporary path to write ``uri``'s content to; committed to ``uri``
        when the block ends without an exception, deleted in every case. The temporary
        file sits beside the final name for a local store (the commit is a rename) and
        in the scratch space for S3. A full disk or a refused write raises StorageError
        naming ``uri``, not the temporary file."""
        if not is_s3(uri):
            with errors_about(uri, "write", beside=uri), atomic(uri, suffix) as tmp:
                yield tmp
            return
        tmp = tmp_name(self.scratch.folder("tmp"), suffix)
        try:
            with errors_about(uri, "write", beside=tmp):
                yield tmp
            self.put_file(tmp, uri)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delete_tree(self, uri: str) -> None:
        """Remove ``uri`` and everything under it (missing is fine)."""
        self.backend(uri).delete_tree(uri)
