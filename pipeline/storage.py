"""Where videos, checkpoints and reports live: a local folder or S3-compatible storage.

Every location is a URI string: ``s3://bucket/prefix/...`` or a local path. ``Store``
holds the S3 settings (endpoint, region, addressing style, scratch space); it is a small
frozen dataclass, so it travels to Ray tasks and actors, and each process builds its own
boto3 client from it once.

Credentials are never handled here: boto3 finds them the standard way (environment
variables, shared profiles, instance roles), and no message of this module prints more
than a bucket, a key and an endpoint.

Commits are atomic on both sides, so no reader ever sees a partial object under a final
name: local files are written under a hidden temporary name in the same folder and
renamed; an S3 object becomes visible only when its PUT (or multipart upload) completes.

Videos are read from a **node-local scratch copy** (``local_copy``), not by ranged reads:
probing, training-frame extraction, every chunk and the metrics each read the file, and
FFmpeg seeks in it freely (an mp4 index may sit at the end). One sequential download per
node at full bandwidth serves all of them, and FFmpeg gets a real file (a Python
file object would run FFmpeg's reads through the GIL). The scratch space is bounded
(``storage.scratch_gb``): least recently used copies are evicted first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_clients: dict[Any, Any] = {}
_clients_lock = threading.Lock()


class StorageError(OSError):
    """A storage operation failed for a reason other than a missing object (access
    denied, no space left, the endpoint failing after every retry); the message names
    the URI and the store's reason, never credentials. ``errno`` is the local error's
    (ENOSPC, EACCES ...) or None; it pickles (Ray ships the exception)."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(errno_, message)

    def __reduce__(self):
        return (StorageError, (self.strerror, self.errno))

    def __str__(self) -> str:
        return self.strerror


@contextlib.contextmanager
def errors_about(uri: str, verb: str, beside: str | None = None) -> Iterator[None]:
    """Re-raise storage failures inside the block as ``StorageError("cannot <verb> <uri>:
    <reason>")``: boto3's own messages name the operation, not the key, and an OSError
    from writing (ENOSPC) names no file. FileNotFoundError passes unchanged. ``beside``:
    a local temporary file; only OSErrors about a file in its folder are mapped (an
    encoder that also reads inputs keeps their errors as they are)."""
    try:
        yield
    except (FileNotFoundError, StorageError):
        raise
    except OSError as e:
        about = os.path.dirname(str(getattr(e, "filename", "") or ""))
        if beside is not None and about != os.path.dirname(beside):
            raise
        raise StorageError(f"cannot {verb} {uri}: {e.strerror or e}", e.errno) from e
    except Exception as e:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(e, S3UploadFailedError) and isinstance(e.__context__, ClientError):
            e = e.__context__  # the store's answer, without boto3's local temporary path
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            why = f"{err.get('Code', '?')} ({err.get('Message') or e.operation_name})"
        elif isinstance(e, S3UploadFailedError):
            why = str(e).rpartition(": An error occurred ")[2] or str(e)
        elif isinstance(e, BotoCoreError):
            why = str(e)
        else:
            raise
        raise StorageError(f"cannot {verb} {uri}: {why}") from e


def _tmp_name(folder: str) -> str:
    """A hidden temporary name in ``folder``, of fixed length whatever the final name's
    (a final name near the 255-byte limit must still be writable)."""
    return os.path.join(folder, f".reelsr-{uuid.uuid4().hex[:12]}.tmp")


def _missing(e: Exception) -> bool:
    """Whether a botocore ClientError says the object does not exist."""
    return e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key


def check_uri(uri: str, what: str) -> str:
    """Normalise a user-given location: s3:// URIs as they are (no trailing slash),
    local paths made absolute. Other schemes are refused with a clear error."""
    if is_s3(uri):
        split(uri)
        return uri.rstrip("/")
    if "://" in uri:
        raise ValueError(f"{what}: unsupported location {uri!r} (use a local path or s3://bucket/prefix)")
    return os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return os.path.join(base, *parts)


def name_of(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _folder_prefix(key: str) -> str:
    """The key prefix of everything under a "folder" key ("" for a bucket's root)."""
    key = key.strip("/")
    return key + "/" if key else ""


def unsafe_rel(rel: str) -> str | None:
    """Why a listed relative path cannot be used to name outputs (None when it can): an
    absolute path, or an empty, ``.`` or ``..`` part, would place outputs outside OUT."""
    if rel.startswith("/") or "\x00" in rel:
        return f"unusable name {rel!r}: absolute or contains NUL"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return f"unusable name {rel!r}: empty, '.' or '..' path part"
    return None


@dataclass(frozen=True)
class Entry:
    """One listed file: its path relative to the listed root, size and version (S3 ETag,
    or local modification time), which together identify its content cheaply."""

    rel: str
    uri: str
    size: int
    version: str


@dataclass(frozen=True)
class Store:
    endpoint_url: str = ""
    region: str = ""
    addressing_style: str = "auto"
    scratch_dir: str = ""
    scratch_gb: float = 20.0
    retries: int = 8

    @classmethod
    def from_config(cls, storage: Any) -> Store:
        """From a ``StorageConfig`` (the ``storage`` section of the run's config), with the
        endpoint and region resolved here, from this process's environment, so every
        Ray worker uses the same ones whatever its own environment holds."""
        store = cls(**dataclasses.asdict(storage))
        region = store.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
        return dataclasses.replace(store, endpoint_url=store.endpoint() or "", region=region)

    # ------------------------------------------------------------------ S3 client

    def endpoint(self) -> str | None:
        """The configured endpoint, else the standard AWS_ENDPOINT_URL_S3 /
        AWS_ENDPOINT_URL environment variables, else AWS's own (None)."""
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None

    def client(self):
        """This process's boto3 S3 client for these settings (built once; clients are
        thread-safe). Retries with backoff on throttling and 5xx answers."""
        key = (self, self.endpoint(), os.getpid())
        with _clients_lock:
            if key not in _clients:
                import boto3
                from botocore.config import Config

                cfg = Config(
                    retries={"total_max_attempts": self.retries, "mode": "standard"},
                    s3={"addressing_style": self.addressing_style},
                    max_pool_connections=32,
                )
                session = boto3.session.Session()
                _clients[key] = session.client("s3", endpoint_url=self.endpoint(), region_name=self.region or None, config=cfg)
            return _clients[key]

    def arrow_fs(self):
        """A pyarrow S3FileSystem with the same endpoint, region and addressing (for
        reading the Parquet reports as a dataset)."""
        from pyarrow import fs

        kwargs: dict[str, Any] = {}
        ep = self.endpoint()
        if ep:
            scheme, _, host = ep.partition("://")
            kwargs.update(endpoint_override=host.rstrip("/") if host else scheme, scheme=scheme if host else "https")
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        if self.addressing_style == "virtual":
            kwargs["force_virtual_addressing"] = True
        return fs.S3FileSystem(**kwargs)

    # ------------------------------------------------------------------ reading

    def exists(self, uri: str) -> bool:
        if not is_s3(uri):
            return os.path.isfile(uri)
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        if not key or key.endswith("/"):
            return False  # a bucket or a "folder", not an object
        with errors_about(uri, "read"):
            try:
                self.client().head_object(Bucket=bucket, Key=key)
                return True
            except ClientError as e:
                if _missing(e):
                    return False
                raise

    def entry(self, uri: str, rel: str = "") -> Entry:
        """Size and version of one file; FileNotFoundError when it is not there."""
        rel = rel or name_of(uri)
        if not is_s3(uri):
            st = os.stat(uri)
            return Entry(rel, uri, st.st_size, f"mtime:{st.st_mtime_ns}")
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        with errors_about(uri, "read"):
            try:
                head = self.client().head_object(Bucket=bucket, Key=key)
            except ClientError as e:
                if _missing(e):
                    raise FileNotFoundError(f"not found: {uri}") from None
                raise
        return Entry(rel, uri, int(head["ContentLength"]), "etag:" + head["ETag"].strip('"'))

    def read_bytes(self, uri: str, missing_ok: bool = False) -> bytes | None:
        """The content of ``uri``; when it does not exist, None with ``missing_ok``,
        else FileNotFoundError."""
        if not is_s3(uri):
            try:
                with open(uri, "rb") as fh:
                    return fh.read()
            except FileNotFoundError:
                if missing_ok:
                    return None
                raise
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        from botocore.exceptions import ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError

        with errors_about(uri, "read"):
            for attempt in range(1, self.retries + 1):
                try:
                    body = self.client().get_object(Bucket=bucket, Key=key)["Body"]  # (botocore retried the request)
                except ClientError as e:
                    if _missing(e):
                        if missing_ok:
                            return None
                        raise FileNotFoundError(f"not found: {uri}") from None
                    raise
                try:
                    return body.read()
                except (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ConnectionClosedError):
                    # botocore retries requests, not bodies: a connection cut mid-body is retried here
                    if attempt == self.retries:
                        raise
                    time.sleep(min(5.0, 0.1 * 2**attempt))

    def list_files(self, root: str, skip: str | None = None) -> Iterator[Entry]:
        """Files under ``root``, streamed in sorted order (S3: one page of 1,000 keys at a
        time; local: one folder at a time). Hidden names (a path part starting with
        ``.``) and everything under ``skip`` (e.g. the output prefix) are left out."""
        if is_s3(root):
            bucket, prefix = split(root)
            prefix = _folder_prefix(prefix)
            skip_key = _folder_prefix(split(skip)[1]) if skip and is_s3(skip) and split(skip)[0] == bucket else None
            if skip_key is not None and not (skip_key.startswith(prefix) and skip_key != prefix):
                skip_key = None  # the output is not inside the input: nothing to leave out
            pages = iter(self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
            while True:
                with errors_about(root, "list"):
                    page = next(pages, None)
                if page is None:
                    return
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    rel = key[len(prefix):]
                    if not rel or key.endswith("/") or _hidden(rel) or (skip_key and key.startswith(skip_key)):
                        continue
                    yield Entry(rel, f"s3://{bucket}/{key}", int(obj["Size"]), "etag:" + obj["ETag"].strip('"'))
        skip_abs = os.path.abspath(skip) if skip and not is_s3(skip) else None
        seen: set[tuple[int, int]] = set()  # folders entered (device, inode): symlink loops end

        def walk(folder: str, rel: str) -> Iterator[Entry]:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
            for e in items:
                if e.name.startswith("."):
                    continue
                r = f"{rel}{e.name}"
                if e.is_dir(follow_symlinks=True):
                    if skip_abs is not None and os.path.abspath(e.path) == skip_abs:
                        continue
                    yield from walk(e.path, r + "/")
                elif e.is_file(follow_symlinks=True):
                    st = e.stat()
                    yield Entry(r, e.path, st.st_size, f"mtime:{st.st_mtime_ns}")

        yield from walk(root, "")

    def names(self, folder: str) -> set[str]:
        """Names of the files directly in ``folder`` (empty when it does not exist)."""
        if not is_s3(folder):
            try:
                return {e.name for e in os.scandir(folder) if e.is_file()}
            except FileNotFoundError:
                return set()
        bucket, prefix = split(folder)
        prefix = _folder_prefix(prefix)
        out = set()
        with errors_about(folder, "list"):
            for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                out.update(obj["Key"][len(prefix):] for obj in page.get("Contents", []))
        return out

    # ------------------------------------------------------------------ writing (atomic)

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Commit ``data`` to ``uri`` (S3: one PUT; local: a hidden temporary file in the
        same folder, renamed). On failure nothing is left: StorageError names ``uri``."""
        with errors_about(uri, "write"):
            if is_s3(uri):
                bucket, key = split(uri)
                self.client().put_object(Bucket=bucket, Key=key, Body=data)
                return
            folder = os.path.dirname(os.path.abspath(uri))
            os.makedirs(folder, exist_ok=True)
            tmp = _tmp_name(folder)
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, uri)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def put_file(self, local_path: str, uri: str) -> None:
        """Commit a finished local file to ``uri`` (S3: upload, multipart for big files;
        local: rename when on the same file system, else copy to a temporary name and
        rename). On failure nothing is left under ``uri`` (a failed multipart upload is
        aborted by boto3); StorageError names ``uri``."""
        with errors_about(uri, "write"):
            if is_s3(uri):
                bucket, key = split(uri)
                self.client().upload_file(local_path, bucket, key)
                return
            folder = os.path.dirname(os.path.abspath(uri))
            os.makedirs(folder, exist_ok=True)
            try:
                os.replace(local_path, uri)
                return
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
            tmp = _tmp_name(folder)
            try:
                shutil.copyfile(local_path, tmp)
                os.replace(tmp, uri)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def delete_tree(self, uri: str) -> None:
        """Remove ``uri`` and everything under it (best effort; missing is fine)."""
        if not is_s3(uri):
            shutil.rmtree(uri, ignore_errors=True)
            return
        bucket, prefix = split(uri)
        prefix = _folder_prefix(prefix)
        if not prefix:
            raise ValueError(f"refusing to delete a whole bucket: {uri}")
        client = self.client()
        with errors_about(uri, "delete"):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    # ------------------------------------------------------------------ local copies

    def scratch(self, sub: str = "tmp") -> str:
        """A folder of this node's scratch space: ``copies`` (cached sources, evicted by
        age) or ``tmp`` (files being written before their commit; never evicted)."""
        path = os.path.join(self.scratch_dir or os.path.join(tempfile.gettempdir(), "reelsr-scratch"), sub)
        os.makedirs(path, exist_ok=True)
        return path

    def local_copy(self, uri: str, version: str = "") -> str:
        """A local path with the content of ``uri``: the path itself for local files,
        else a copy in this node's scratch space, downloaded once per node (a file lock
        makes concurrent callers on the node wait for the first download). The object
        must still have ``version`` (its ETag), so a source replaced during a run is an
        error, not a mix of two versions."""
        if not is_s3(uri):
            if not os.path.isfile(uri):
                raise FileNotFoundError(f"not found: {uri}")
            return uri
        ext = os.path.splitext(name_of(uri))[1]
        root = self.scratch("copies")
        entry = None
        if not version:
            entry = self.entry(uri)
            version = entry.version
        digest = hashlib.sha256(f"{self.endpoint()}|{uri}|{version}".encode()).hexdigest()[:24]
        path = os.path.join(root, digest + ext)
        with open(os.path.join(self.scratch("locks"), digest), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if os.path.exists(path):
                    os.utime(path)  # recently used: evicted last
                    return path
                entry = entry or self.entry(uri)
                if entry.version != version:
                    raise RuntimeError(f"{uri} changed during the run (version {version} listed, {entry.version} now): run again")
                self._evict(root, need=entry.size)
                tmp = os.path.join(self.scratch("tmp"), f"{digest}.{uuid.uuid4().hex[:8]}.download")
                try:
                    with errors_about(uri, "download"):
                        self.client().download_file(*split(uri), tmp)
                    if os.path.getsize(tmp) != entry.size:
                        raise RuntimeError(f"{uri}: downloaded {os.path.getsize(tmp)} bytes, expected {entry.size}")
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                return path
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    #: A copy used this recently is never evicted: a task may be about to open it.
    EVICT_AFTER_S = 600.0

    def _evict(self, root: str, need: int) -> None:
        """Delete least recently used copies until ``need`` more bytes fit the budget,
        sparing those used in the last ``EVICT_AFTER_S`` seconds (the budget may then be
        exceeded for a while). A copy still open elsewhere stays readable: unlinking
        keeps open files."""
        budget = int(self.scratch_gb * 1e9)
        files = []
        for e in os.scandir(root):
            if e.is_file():
                st = e.stat()
                files.append((st.st_mtime, st.st_size, e.path))
        total = sum(f[1] for f in files)
        now = time.time()
        for mtime, size, path in sorted(files):
            if total + need <= budget or now - mtime < self.EVICT_AFTER_S:
                break
            try:
                os.unlink(path)
                total -= size
            except FileNotFoundError:
                pass
