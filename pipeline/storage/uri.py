"""Locations as strings: ``s3://bucket/prefix/...`` or a local path. Pure functions, no I/O."""

from __future__ import annotations

import os


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


def hidden(rel: str) -> bool:
    """Whether a relative path has a part starting with ``.`` (left out of listings)."""
    return any(part.startswith(".") for part in rel.split("/"))


def folder_prefix(key: str) -> str:
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
