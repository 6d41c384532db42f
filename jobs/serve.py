"""The reelsr web app: people upload a video, watch it restored and compare before with
after; scripts use the same jobs through an HTTP API with a bearer token.

    python -m jobs.serve --data DIR [--host 127.0.0.1] [--port 8000] [--store URI]
        [--max-upload-mb 500] [--jobs-per-user 3] [--workers 1] [--ray-address ADDR]
        [--set KEY=VALUE ...]
    python -m jobs.serve --data DIR add-user NAME     (asks for the password; prints the API token last)

DIR holds the accounts and jobs (SQLite), the key that signs session cookies and the
restores' logs; uploads and restored videos go to --store (default DIR/store; a folder or
s3://bucket/prefix), under a prefix per user. Each upload is restored by
``python -m jobs.restore`` on Ray: the cluster --ray-address names (as RAY_ADDRESS does
for ``ray job submit``), or a local Ray started per job. A stopped server loses no job:
the next start queues again what was running (the restore resumes from its committed
chunks). The API is described at /api/docs.
"""

from __future__ import annotations

import argparse
import getpass
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the server's folder (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--store", default="", help="where uploads and restored videos go: a folder or s3://bucket/prefix (default DATA/store)")
    p.add_argument("--max-upload-mb", type=float, default=500.0, help="largest upload accepted (default 500)")
    p.add_argument("--jobs-per-user", type=int, default=3, help="queued + running jobs a user may have (default 3)")
    p.add_argument("--workers", type=int, default=1, help="jobs restored at the same time (default 1)")
    p.add_argument("--ray-address", default="", help="Ray cluster to restore on (default: a local Ray per job)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="a restore setting for every job, as jobs.restore --set takes it, e.g. --set train.steps=200 (repeatable)")
    p.add_argument("command", nargs="*", help="add-user NAME: create an account")
    args = p.parse_args(argv)

    from pipeline.web.app import Settings, create_app, open_db

    if args.command:
        if args.command[0] != "add-user" or len(args.command) != 2:
            p.error("the only command is: add-user NAME")
        from pipeline.web import auth

        password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass(f"password for {args.command[1]}: ")
        try:
            token = auth.add_user(open_db(args.data), args.command[1], password)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"user {args.command[1]} added; their API token (shown once, keep it secret):")
        print(f"token: {token}")
        return 0

    import uvicorn

    settings = Settings(data=args.data, store_root=args.store, max_upload_mb=args.max_upload_mb, jobs_per_user=args.jobs_per_user,
                        ray_address=args.ray_address, workers=args.workers, restore_args=[a for kv in args.overrides for a in ("--set", kv)])
    if not settings.presets:
        print("error: no preset has shipped weights to offer", file=sys.stderr)
        return 2
    app = create_app(settings)
    print(f"serve: http://{args.host}:{args.port}/ (data {settings.data}, store {settings.store_root}, presets {', '.join(settings.presets)})",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
