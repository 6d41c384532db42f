"""Local folders (and shared mounts): commits by rename."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator

from pipeline.storage.base import Entry
from pipeline.storage.errors import errors_about


def tmp_name(folder: str, suffix: str = "") -> str:
    """A hidden temporary name in ``folder``, of fixed length whatever the final name's
    (a final name near the 255-byte limit must still be writable)."""
    return os.path.join(folder, f".reelsr-{uuid.uuid4().hex[:12]}.tmp{suffix}")


@contextlib.contextmanager
def atomic(path: str, suffix: str = "") -> Iterator[str]:
    """The local commit: yields a hidden temporary path beside ``path``; when the block
    ends without an error it is renamed to ``path`` (readable by all, like a copied
    file), and in every case no temporary file is left."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = tmp_name(folder, suffix)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class LocalBackend:
    def exists(self, uri: str) -> bool:
        return os.path.isfile(uri)

    def entry(self, uri: str, rel: str) -> Entry:
        st = os.stat(uri)
        return Entry(rel, uri, st.st_size, f"mtime:{st.st_mtime_ns}")

    def read_bytes(self, uri: str, missing_ok: bool) -> bytes | None:
        try:
            with open(uri, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            if missing_ok:
                return None
            raise

    def list_files(self, root: str, skip: str | None) -> Iterator[Entry]:
        """One folder at a time, sorted; symlinked folders followed once (loops end)."""
        skip_abs = os.path.abspath(skip) if skip and "://" not in skip else None
        seen: set[tuple[int, int]] = set()  # folders entered (device, inode)

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
        try:
            return {e.name for e in os.scandir(folder) if e.is_file()}
        except FileNotFoundError:
            return set()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with atomic(uri) as tmp, open(tmp, "wb") as fh:
            fh.write(data)

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        data = self.read_bytes(uri, missing_ok=True)
        return None if data is None else (data, hashlib.sha256(data).hexdigest())

    def put_if(self, uri: str, data: bytes, version: str | None) -> str | None:
        """Compare and write under an exclusive flock of the folder (every writer of this
        file takes it; on a network file system, one whose locks reach every node)."""
        folder = os.path.dirname(os.path.abspath(uri))
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            now = self.read_versioned(uri)
            if (now[1] if now else None) != version:
                return None
            self.write_bytes(uri, data)
            return hashlib.sha256(data).hexdigest()
        finally:
            os.close(fd)  # (releases the lock)

    def put_file(self, local_path: str, uri: str) -> None:
        """Rename when on the same file system, else copy to a temporary name and rename."""
        os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
        try:
            os.replace(local_path, uri)
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
        with atomic(uri) as tmp:
            shutil.copyfile(local_path, tmp)

    def download(self, uri: str, local_path: str) -> None:
        with errors_about(uri, "read"):
            shutil.copyfile(uri, local_path)

    def delete_tree(self, uri: str) -> None:
        shutil.rmtree(uri, ignore_errors=True)
