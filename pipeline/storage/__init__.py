"""Where videos, checkpoints and reports live: a local folder or S3-compatible storage.

Every location is a URI string (``uri``): ``s3://bucket/prefix/...`` or a local path.
``Store`` is the one interface over both backends (``local``, ``s3``); ``scratch`` is
the node-local cache of remote videos; ``errors`` makes every failure name its URI.
Commits are atomic on both sides: no reader ever sees a partial object under a final name.
"""

from pipeline.storage.base import Entry
from pipeline.storage.errors import StorageError, errors_about
from pipeline.storage.store import Store

__all__ = ["Entry", "Store", "StorageError", "errors_about"]
