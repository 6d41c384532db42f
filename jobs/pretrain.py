"""Pretrain the base EDSR on a folder of high-resolution images (any image folder,
DIV2K's layout included), with Ray Train.

    python -m jobs.pretrain --data DIR --output DIR --scale S [--val DIR] [--preset NAME]
        [--set field=value ...] [--init CKPT] [--max-seconds N]

Rerun the same command to continue a run that was killed or stopped by --max-seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

import yaml

from pipeline.config import _coerce
from pipeline.pretrain import PretrainConfig

PRESETS = {
    "tiny": {"n_resblocks": 2, "n_feats": 16, "steps": 200, "batch_size": 8, "val_every": 50, "checkpoint_every": 50, "lr_step": 10_000},
    "baseline": {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0},
    "full": {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1},
}


def fields_help() -> str:
    base = PretrainConfig()
    lines = ["fields (--set name=value):"]
    for f in dataclasses.fields(PretrainConfig):
        lines.append(f"  {f.name} = {getattr(base, f.name)!r}\n      {f.metadata['help']}")
    lines.append("presets: " + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.pretrain", description=__doc__, epilog=fields_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of high-resolution training images (searched recursively)")
    p.add_argument("--output", required=True, help="folder for state.pt, history.jsonl and the final checkpoint")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), required=True)
    p.add_argument("--val", help="folder of validation images (e.g. Set5/HR)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="baseline")
    p.add_argument("--init", help="start from this checkpoint (same scale, or x2 for x3/x4)")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds, saving the state (train in slices)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    args = p.parse_args(argv)
    values: dict = dict(PRESETS[args.preset], scale=args.scale)
    types = typing.get_type_hints(PretrainConfig)
    try:
        for item in args.overrides:
            if "=" not in item:
                raise ValueError(f"--set takes field=value, got {item!r}")
            k, v = item.split("=", 1)
            if k not in types:
                raise ValueError(f"unknown field {k!r} (fields: {', '.join(types)})")
            values[k] = _coerce(yaml.safe_load(v) if v.strip() else None, types[k], k)
        if args.init:
            values["init"] = args.init
        if args.max_seconds is not None:
            values["max_seconds"] = args.max_seconds
        cfg = PretrainConfig(**values)
    except (ValueError, TypeError, yaml.YAMLError) as e:
        p.error(str(e))
    from pipeline.pretrain import pretrain

    try:
        summary = pretrain(cfg, args.data, args.output, val=args.val)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pretrain: step {summary['step']}/{cfg.steps}, checkpoint: {summary['checkpoint'] or '(not finished: run again)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
