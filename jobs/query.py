"""SQL over reelsr's Parquet reports (local or S3), with DuckDB.

    python -m jobs.query --reports OUT "SELECT ..."          # OUT: the restore's --output
    python -m jobs.query --reports s3://bucket/restored --example least-gain
    python -m jobs.query --list-examples

The tables are ``videos`` (one row per video per run) and ``frames`` (one row per
measured frame and method), each with its ``run_id`` column; their columns are
documented in schemas/videos.json and schemas/frames.json. The reports are read with
pyarrow (S3 through the same endpoint settings as the restore: --set storage.* or
AWS_ENDPOINT_URL) and handed to DuckDB as Arrow tables, so DuckDB needs no extension
and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys

EXAMPLES = {
    "least-gain": (
        "Restored videos whose fine-tuning gained least NIQE over bicubic (lower NIQE is better)",
        """SELECT video, run_id, round(niqe_bicubic, 3) AS bicubic, round(niqe_finetuned, 3) AS finetuned,
       round(niqe_bicubic - niqe_finetuned, 3) AS gain
FROM videos WHERE status = 'restored' AND niqe_finetuned IS NOT NULL
ORDER BY gain ASC LIMIT 10""",
    ),
    "psnr-gain-per-run": (
        "Mean PSNR gain of the fine-tuned model over bicubic and over the pretrained model, per run (runs with a reference)",
        """SELECT run_id, count(*) AS videos,
       round(avg(psnr_finetuned - psnr_bicubic), 3) AS gain_over_bicubic_db,
       round(avg(psnr_finetuned - psnr_pretrained), 3) AS gain_over_pretrained_db
FROM videos WHERE status = 'restored' AND psnr_finetuned IS NOT NULL
GROUP BY run_id ORDER BY run_id""",
    ),
    "last-run-failures": (
        "Videos that failed in the most recent run, with the reason",
        """SELECT video, error FROM videos
WHERE status = 'failed' AND run_id = (SELECT max(run_id) FROM videos)
ORDER BY video""",
    ),
    "runs": (
        "What each run did: restored, failed and skipped videos, frames restored, time",
        """SELECT run_id, count(*) FILTER (WHERE status = 'restored') AS restored,
       count(*) FILTER (WHERE status = 'failed') AS failed, count(*) FILTER (WHERE status = 'skipped') AS skipped,
       sum(frames_out) FILTER (WHERE status = 'restored') AS frames, round(sum(total_seconds), 1) AS seconds
FROM videos GROUP BY run_id ORDER BY run_id""",
    ),
}


def query(reports_root: str, sql: str, store=None):
    """Run ``sql`` over the ``videos`` and ``frames`` tables of ``reports_root``; returns
    a pyarrow Table."""
    import duckdb

    from pipeline import reports
    from pipeline.storage.uri import check_uri, join

    root = check_uri(reports_root, "--reports")
    if not reports.has_reports(root, store):
        raise FileNotFoundError(f"no reports under {join(root, 'reports')}: --reports takes the --output of a restore run")
    con = duckdb.connect()
    for table in reports.TABLES:
        con.register(table, reports.read_table(root, table, store))
    try:
        return con.execute(sql).to_arrow_table()
    except duckdb.Error as e:
        raise ValueError(f"SQL error: {e}") from None


def format_table(tbl) -> str:
    cols = tbl.column_names
    rows = [["NULL" if v is None else str(v) for v in r.values()] for r in tbl.to_pylist()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.query", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reports", help="the restore's output root (local path or s3://bucket/prefix); the reports are under REPORTS/reports/")
    p.add_argument("--example", choices=sorted(EXAMPLES), help="run a named example query")
    p.add_argument("--list-examples", action="store_true", help="print the example queries and exit")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="storage.KEY=VALUE",
                   help="S3 settings as for jobs.restore, e.g. --set storage.endpoint_url=http://minio:9000 (repeatable)")
    p.add_argument("sql", nargs="?", help="the SQL (tables: videos, frames)")
    args = p.parse_args(argv)
    if args.list_examples:
        for name, (doc, sql) in EXAMPLES.items():
            print(f"-- {name}: {doc}\n{sql};\n")
        return 0
    if not args.reports or bool(args.sql) == bool(args.example):
        p.error("give --reports and either SQL or --example NAME")
    sql = EXAMPLES[args.example][1] if args.example else args.sql
    try:
        from pipeline.config import build_config
        from pipeline.storage import Store

        if any(not o.startswith("storage.") for o in args.overrides):
            p.error("--set takes storage.* fields only here")
        store = Store.from_config(build_config(None, None, args.overrides).storage)
        tbl = query(args.reports, sql, store)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.csv:
        import pyarrow.csv as pacsv

        pacsv.write_csv(tbl, sys.stdout.buffer)
    else:
        print(format_table(tbl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
