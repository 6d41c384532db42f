"""Parquet quality reports, written against the versioned schemas in ``schemas/``.

Layout under the output root::

    reports/videos/run_id=<run>/part-<uuid>.parquet   one row per video per run
    reports/frames/run_id=<run>/part-<uuid>.parquet   one row per measured frame

Readable with ``pyarrow.dataset.dataset(path, partitioning="hive")`` (or
``read_table`` below), DuckDB's ``read_parquet(..., hive_partitioning=true)``, Spark, ...
Every write is checked against the schema: unknown or missing columns, wrong types and
nulls in non-nullable columns raise before anything is written.
"""

from __future__ import annotations

import json
import uuid
from functools import cache
from importlib import resources
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.storage import Store
from pipeline.storage.uri import is_s3, join

SCHEMA_DIR = resources.files("schemas")  # package data: found in a checkout and in an installed wheel alike
TABLES = ("videos", "frames")  # the restore reports; "experiment" is jobs.experiment's table
SCHEMAS = TABLES + ("experiment",)
_TYPES = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}


@cache
def schema_doc(table: str) -> dict[str, Any]:
    if table not in SCHEMAS:
        raise ValueError(f"unknown report table {table!r}; tables are {', '.join(SCHEMAS)}")
    return json.loads((SCHEMA_DIR / f"{table}.json").read_text(encoding="utf-8"))


def schema(table: str) -> pa.Schema:
    """The file schema of ``table`` (without the partition column)."""
    doc = schema_doc(table)
    return pa.schema(
        [pa.field(f["name"], _TYPES[f["type"]], nullable=f["nullable"]) for f in doc["fields"]],
        metadata={"table": table, "version": str(doc["version"])},
    )


def to_table(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> a pyarrow Table of exactly the schema; raises ValueError on any mismatch."""
    sch = schema(table)
    names = set(sch.names)
    for i, row in enumerate(rows):
        extra, missing = set(row) - names, names - set(row)
        if extra or missing:
            raise ValueError(f"{table} row {i}: unknown columns {sorted(extra)}, missing columns {sorted(missing)}")
        for f in sch:
            if not f.nullable and row[f.name] is None:
                raise ValueError(f"{table} row {i}: column {f.name!r} may not be null")
    try:
        return pa.Table.from_pylist(rows, schema=sch)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"{table}: rows do not fit the schema: {e}") from None


def to_parquet(tbl: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(tbl, sink)
    return sink.getvalue().to_pybytes()


def write(root: str, table: str, run_id: str, rows: list[dict[str, Any]], store: Store | None = None) -> str | None:
    """Append ``rows`` to ``root/reports/<table>/run_id=<run_id>/`` (local or s3://);
    returns the file's URI.

    The file is committed atomically (a hidden temporary name renamed into place, or
    one S3 PUT), so a reader never sees a partial Parquet file.
    """
    if not rows:
        return None
    return write_file(join(root, "reports", table, f"run_id={run_id}", f"part-{uuid.uuid4().hex[:12]}.parquet"), table, rows, store)


def write_file(uri: str, table: str, rows: list[dict[str, Any]], store: Store | None = None) -> str:
    """Write ``rows`` as one Parquet file at ``uri``, checked against the schema, atomically."""
    (store or Store()).write_bytes(uri, to_parquet(to_table(table, rows)))
    return uri


def has_reports(root: str, store: Store | None = None) -> bool:
    """Whether ``root/reports`` holds at least one report file (of any table)."""
    for t in TABLES:
        try:
            if any(e.rel.endswith(".parquet") for e in _first((store or Store()).list_files(join(root, "reports", t)), 1000)):
                return True
        except FileNotFoundError:
            pass
    return False


def _first(it, n):
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


def read_table(root: str, table: str, store: Store | None = None, run_id: str | None = None) -> pa.Table:
    """All runs of ``table`` under ``root/reports`` (local or s3://) with ``run_id`` as
    a column; an empty table of the schema when there is none yet."""
    part = pa.schema([pa.field("run_id", pa.string())])
    path = join(root, "reports", table)
    filesystem = None
    if is_s3(path):
        filesystem = (store or Store()).arrow_fs()
        path = path[len("s3://"):]
    try:
        dataset = ds.dataset(
            path,
            # the current schema: files of older schema versions read with nulls for the new columns
            schema=schema(table).append(pa.field("run_id", pa.string())),
            format="parquet",
            filesystem=filesystem,
            partitioning=ds.partitioning(part, flavor="hive"),
            exclude_invalid_files=True,
            ignore_prefixes=[".", "_"],
        )
    except FileNotFoundError:
        return schema(table).empty_table().append_column("run_id", pa.array([], pa.string()))
    flt = ds.field("run_id") == run_id if run_id else None
    return dataset.to_table(filter=flt)
