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
import os
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
TABLES = ("videos", "frames")
_TYPES = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}


@cache
def schema_doc(table: str) -> dict[str, Any]:
    if table not in TABLES:
        raise ValueError(f"unknown report table {table!r}; tables are {', '.join(TABLES)}")
    with open(SCHEMA_DIR / f"{table}.json", encoding="utf-8") as fh:
        return json.load(fh)


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


def write(root: str, table: str, run_id: str, rows: list[dict[str, Any]]) -> str | None:
    """Append ``rows`` to ``root/reports/<table>/run_id=<run_id>/``; returns the file path.

    The file is written under a hidden temporary name and renamed into place, so a
    reader never sees a partial Parquet file.
    """
    if not rows:
        return None
    tbl = to_table(table, rows)
    folder = os.path.join(root, "reports", table, f"run_id={run_id}")
    os.makedirs(folder, exist_ok=True)
    name = f"part-{uuid.uuid4().hex[:12]}.parquet"
    tmp = os.path.join(folder, f".{name}.tmp")
    pq.write_table(tbl, tmp)
    os.replace(tmp, os.path.join(folder, name))
    return os.path.join(folder, name)


def read_table(root: str, table: str) -> pa.Table:
    """All runs of ``table`` under ``root/reports`` with ``run_id`` as a column."""
    part = pa.schema([pa.field("run_id", pa.string())])
    dataset = ds.dataset(
        os.path.join(root, "reports", table),
        format="parquet",
        partitioning=ds.partitioning(part, flavor="hive"),
        exclude_invalid_files=True,
        ignore_prefixes=[".", "_"],
    )
    return dataset.to_table()
