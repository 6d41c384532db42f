"""What every storage backend does, whatever the URI's scheme."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Entry:
    """One listed file: its path relative to the listed root, size and version (S3 ETag,
    or local modification time), which together identify its content cheaply."""

    rel: str
    uri: str
    size: int
    version: str


class Backend(Protocol):
    """One kind of storage. Every method names the URI in its errors (``StorageError``;
    FileNotFoundError for a missing object) and every write is atomic: nothing partial
    is ever visible under a final name."""

    def exists(self, uri: str) -> bool: ...

    def entry(self, uri: str, rel: str) -> Entry:
        """Size and version of one file; FileNotFoundError when it is not there."""

    def read_bytes(self, uri: str, missing_ok: bool) -> bytes | None: ...

    def list_files(self, root: str, skip: str | None) -> Iterator[Entry]:
        """Files under ``root``, streamed in sorted order; hidden names and everything
        under ``skip`` left out."""

    def names(self, folder: str) -> set[str]:
        """Names of the files directly in ``folder`` (empty when it does not exist)."""

    def write_bytes(self, uri: str, data: bytes) -> None: ...

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """(content, version) of ``uri``, None when it does not exist."""

    def put_if(self, uri: str, data: bytes, version: str | None) -> str | None:
        """Write ``data`` only if ``uri`` is absent (``version`` None) or still has
        ``version``, atomically against other writers; the new version, or None when the
        condition did not hold."""

    def put_file(self, local_path: str, uri: str) -> None:
        """Commit a finished local file to ``uri`` (the local file may be moved)."""

    def download(self, uri: str, local_path: str) -> None: ...

    def delete_tree(self, uri: str) -> None:
        """Remove ``uri`` and everything under it (missing is fine)."""
