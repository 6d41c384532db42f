"""Storage failures that name the object: boto3's own messages name the operation, not
the key, and an ENOSPC from ``write()`` names no file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


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
    <reason>")``. FileNotFoundError passes unchanged. ``beside``: a local temporary
    file; only OSErrors about a file in its folder are mapped (an encoder that also
    reads inputs keeps their errors as they are)."""
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
