"""S3-compatible object storage (AWS, MinIO, Ceph ...): commits by a completed PUT.

Credentials are never handled here: boto3 finds them the standard way (environment
variables, shared profiles, instance roles), and no message prints more than a bucket,
a key and an endpoint. Requests are retried by botocore (standard mode); a body cut
mid-download is retried here (botocore retries requests, not bodies).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from pipeline.storage.base import Entry
from pipeline.storage.errors import errors_about
from pipeline.storage.uri import folder_prefix, hidden, is_s3, split

_clients: dict[Any, Any] = {}
_clients_lock = threading.Lock()


def _missing(e: Exception) -> bool:
    """Whether a botocore ClientError says the object does not exist."""
    return e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class S3Backend:
    def __init__(self, endpoint: str | None, region: str, addressing_style: str, retries: int) -> None:
        self.endpoint, self.region, self.addressing_style, self.retries = endpoint, region, addressing_style, retries

    def client(self):
        """This process's boto3 S3 client for these settings (built once per process;
        clients are thread-safe)."""
        key = (self.endpoint, self.region, self.addressing_style, self.retries, os.getpid())
        with _clients_lock:
            if key not in _clients:
                import boto3
                from botocore.config import Config

                cfg = Config(
                    retries={"total_max_attempts": self.retries, "mode": "standard"},
                    s3={"addressing_style": self.addressing_style},
                    max_pool_connections=32,
                )
                _clients[key] = boto3.session.Session().client("s3", endpoint_url=self.endpoint, region_name=self.region or None, config=cfg)
            return _clients[key]

    def _or_none(self, uri: str, call):
        """``call()``, or None when it says the object does not exist (other errors
        raised, naming ``uri``)."""
        from botocore.exceptions import ClientError

        with errors_about(uri, "read"):
            try:
                return call()
            except ClientError as e:
                if _missing(e):
                    return None
                raise

    def exists(self, uri: str) -> bool:
        bucket, key = split(uri)
        if not key or key.endswith("/"):
            return False  # a bucket or a "folder", not an object
        return self._or_none(uri, lambda: self.client().head_object(Bucket=bucket, Key=key)) is not None

    def entry(self, uri: str, rel: str) -> Entry:
        bucket, key = split(uri)
        head = self._or_none(uri, lambda: self.client().head_object(Bucket=bucket, Key=key))
        if head is None:
            raise FileNotFoundError(f"not found: {uri}")
        return Entry(rel, uri, int(head["ContentLength"]), "etag:" + head["ETag"].strip('"'))

    def read_bytes(self, uri: str, missing_ok: bool) -> bytes | None:
        from botocore.exceptions import ClientError, ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError

        bucket, key = split(uri)
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
                    if attempt == self.retries:
                        raise
                    time.sleep(min(5.0, 0.1 * 2**attempt))
        return None  # (not reached)

    def list_files(self, root: str, skip: str | None) -> Iterator[Entry]:
        """One page of 1,000 keys at a time (keys come sorted)."""
        bucket, prefix = split(root)
        prefix = folder_prefix(prefix)
        skip_key = folder_prefix(split(skip)[1]) if skip and is_s3(skip) and split(skip)[0] == bucket else None
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
                if not rel or key.endswith("/") or hidden(rel) or (skip_key and key.startswith(skip_key)):
                    continue
                yield Entry(rel, f"s3://{bucket}/{key}", int(obj["Size"]), "etag:" + obj["ETag"].strip('"'))

    def names(self, folder: str) -> set[str]:
        bucket, prefix = split(folder)
        prefix = folder_prefix(prefix)
        out = set()
        with errors_about(folder, "list"):
            for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                out.update(obj["Key"][len(prefix):] for obj in page.get("Contents", []))
        return out

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split(uri)
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        bucket, key = split(uri)
        obj = self._or_none(uri, lambda: self.client().get_object(Bucket=bucket, Key=key))
        if obj is None:
            return None
        with errors_about(uri, "read"):
            return obj["Body"].read(), obj["ETag"]

    def put_if(self, uri: str, data: bytes, version: str | None) -> str | None:
        """A conditional PUT: If-None-Match: * (create) or If-Match: ETag (replace)."""
        from botocore.exceptions import ClientError

        bucket, key = split(uri)
        cond = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        with errors_about(uri, "write"):
            try:
                return self.client().put_object(Bucket=bucket, Key=key, Body=data, **cond)["ETag"]
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    return None
                raise

    def put_file(self, local_path: str, uri: str) -> None:
        """Upload (multipart for big files; a failed multipart upload is aborted by boto3)."""
        self.client().upload_file(local_path, *split(uri))

    def download(self, uri: str, local_path: str) -> None:
        with errors_about(uri, "download"):
            self.client().download_file(*split(uri), local_path)

    def delete_tree(self, uri: str) -> None:
        bucket, prefix = split(uri)
        prefix = folder_prefix(prefix)
        if not prefix:
            raise ValueError(f"refusing to delete a whole bucket: {uri}")
        client = self.client()
        with errors_about(uri, "delete"):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def arrow_fs(self):
        """A pyarrow S3FileSystem with the same endpoint, region and addressing (for
        reading the Parquet reports as a dataset)."""
        from pyarrow import fs

        kwargs: dict[str, Any] = {}
        if self.endpoint:
            scheme, _, host = self.endpoint.partition("://")
            kwargs.update(endpoint_override=host.rstrip("/") if host else scheme, scheme=scheme if host else "https")
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        if self.addressing_style == "virtual":
            kwargs["force_virtual_addressing"] = True
        return fs.S3FileSystem(**kwargs)
