"""The self-transfer study: a grid of fine-tuning variants, measured against originals.

    python -m jobs.experiment --grid GRID.yaml --input HR --output OUT [--scale S]
        [--preset NAME] [--config FILE.yaml] [--set key=value ...]

HR is a high-resolution clip or a local folder of them. Each clip (and each cut of it to
the grid's ``lengths``, in seconds) is made low-resolution by each of the grid's
``degradations`` (default bicubic; see jobs.evaluate --help); bicubic, the
pretrained model and every variant (the base config plus the variant's overrides) are
measured on the same sampled frames against the original. GRID.yaml::

    lengths: [1, 2]                 # optional: also cut each clip to these lengths
    degradations: [bicubic, blur1.6, x264crf30]   # optional: how the inputs are made
    variants:
      l1: {}                        # the base config as it is
      ssim: {train.loss: "l1:1,ssim:0.2"}
      texture: {train.patches: texture}

Writes OUT/experiment/results/run-<id>.parquet (schema: schemas/experiment.json) and
OUT/experiment/report/ (summary.md, per_variant.png, gain_vs_length_and_frames.png,
crops_<clip>.png: bicubic | pretrained | best variant | ground truth).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from pipeline.config import build_config
from pipeline.presets import DEFAULT, PRESETS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.experiment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", required=True, metavar="GRID.yaml", help="the variants (and optional clip lengths)")
    p.add_argument("--input", required=True, help="a high-resolution clip or a local folder of them")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor (default 2)")
    p.add_argument("--preset", choices=PRESETS.names(), help=f"base config preset (default: {DEFAULT})")
    p.add_argument("--config", metavar="FILE.yaml", help="base config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="base config override (repeatable)")
    args = p.parse_args(argv)
    try:
        from pipeline.experiment import Grid, run_experiment

        base = build_config(args.preset or DEFAULT, args.config, args.overrides, scale=args.scale)
        grid = Grid.load(args.grid)
        rows = run_experiment(grid, base, args.input, args.output)
    except (ValueError, FileNotFoundError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in rows if r["error"]]
    print(f"\n{len(rows)} rows, {len(failed)} failed; report: {args.output}/experiment/report/summary.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
