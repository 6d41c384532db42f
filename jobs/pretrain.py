"""Pretrain a base model on folders of high-resolution images (any image folder, DIV2K's
layout included): in this process, or with Ray (Train) for several workers.

    python -m jobs.pretrain --data DIR [--data DIR ...] --output DIR --scale S
        [--val DIR | --val NAME=DIR ...] [--preset NAME] [--flavour bicubic|archive]
        [--set field=value ...] [--init CKPT] [--max-seconds N] [--ray]

One worker runs in this process (torch is all it needs) unless --ray is given or
RAY_ADDRESS names a cluster; --set workers=N > 1 trains data-parallel on Ray Train.
Rerun the same command to continue a run that was killed or stopped by --max-seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

import yaml

from pipeline.config import _coerce
from pipeline.presets import DEFAULT, PRESETS
from pipeline.train.pretrain import FLAVOURS, PretrainConfig


def fields_help() -> str:
    base = PretrainConfig()
    lines = ["fields (--set name=value):"]
    for f in dataclasses.fields(PretrainConfig):
        lines.append(f"  {f.name} = {getattr(base, f.name)!r}\n      {f.metadata['help']}")
    lines.append("presets (--preset NAME):")
    lines += [f"  {e.name}: {e.help}; pretraining fields {e.item.pretrain_fields()}" for e in PRESETS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.pretrain", description=__doc__, epilog=fields_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, action="append", help="folder of high-resolution training images (searched recursively; repeatable)")
    p.add_argument("--output", required=True, help="folder for state.pt, history.jsonl, the image store and the final checkpoint")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), required=True)
    p.add_argument("--val", action="append", default=[], metavar="[NAME=]DIR", help="validation images (e.g. Set5=.../Set5/HR); repeatable")
    p.add_argument("--preset", choices=PRESETS.names(), default=DEFAULT)
    p.add_argument("--flavour", choices=sorted(FLAVOURS), help="input side of the pairs (default bicubic)")
    p.add_argument("--video", action="append", default=[], metavar="FILE",
                   help="a video file a DUF model also cuts training windows from (with --set p_video=SHARE); repeatable")
    p.add_argument("--init", help="start from this checkpoint (same scale, or x2 for x3/x4)")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds, saving the state (train in slices)")
    p.add_argument("--ray", action="store_true", help="run on Ray even with one worker (a GPU worker of the cluster)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    args = p.parse_args(argv)
    values: dict = dict(PRESETS.get(args.preset).pretrain_fields(), scale=args.scale)
    types = typing.get_type_hints(PretrainConfig)
    try:
        for item in args.overrides:
            if "=" not in item:
                raise ValueError(f"--set takes field=value, got {item!r}")
            k, v = item.split("=", 1)
            if k not in types:
                raise ValueError(f"unknown field {k!r} (fields: {', '.join(types)})")
            values[k] = _coerce(yaml.safe_load(v) if v.strip() else None, types[k], k)
        for flag, field in ((args.init, "init"), (args.max_seconds, "max_seconds"), (args.flavour, "flavour")):
            if flag is not None:
                values[field] = flag
        cfg = PretrainConfig(**values)
        val = {}
        for v in args.val:
            name, sep, folder = v.partition("=")
            val[name if sep else v.rstrip("/").removesuffix("/HR").rsplit("/", 1)[-1]] = folder if sep else v
    except (ValueError, TypeError, yaml.YAMLError) as e:
        p.error(str(e))
    from pipeline.train.pretrain import pretrain

    try:
        summary = pretrain(cfg, args.data, args.output, val=val, where="ray" if args.ray else None, videos=args.video)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pretrain: step {summary['step']}/{cfg.steps}, checkpoint: {summary['checkpoint'] or '(not finished: run again)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
