"""Restore a video, or every video of a folder, by self-transfer super-resolution.

    python -m jobs.restore --input IN --output OUT [--scale 2|3|4|2.5] [--size 1920x1080 [--fit keep|pad|crop]]
        [--fps 2x|60|59.94]
        [--preset NAME] [--config FILE.yaml] [--set key=value ...] [--reference REF] [--no-finetune]

IN, OUT and REF are local paths or s3://bucket/prefix (endpoint: storage.endpoint_url or
AWS_ENDPOINT_URL; credentials: the standard AWS chain). Rerunning skips the videos
already restored with the same config and resumes interrupted ones.

Any scale in [1, 4] (--scale 2.5) and any output size (--size WxH: each video fitted into
W x H): an integer model (the default preset) restores at the integer scale at or above
it (--scale with --size) and is resized down; the continuous-scale model (--preset any)
restores straight to it.

Runs on a local Ray started by itself, or on the cluster named by RAY_ADDRESS
(``ray job submit --working-dir . -- python -m jobs.restore ...``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import yaml

from pipeline.config import build_config, describe_fields
from pipeline.presets import DEFAULT, PRESETS


def parser(description: str = __doc__) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.restore",
        description=description,
        epilog=describe_fields(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, help="a video file, or a folder or s3://bucket/prefix searched recursively for mp4/mkv/mov/avi/webm/m4v")
    p.add_argument("--output", required=True, help="output folder or s3://bucket/prefix: restored videos at OUT/x<scale>-<config hash>/<path relative to IN>, reports at OUT/reports/")
    p.add_argument("--scale", type=float, help="upscaling factor: 2, 3 or 4 (default 2), or any number in [1, 4] such as 2.5 "
                                                "(an integer model restores at the next integer scale and is resized down; "
                                                "--preset any restores straight to it)")
    p.add_argument("--size", metavar="WxH", help="output frame size, e.g. 1920x1080 (media.size): each video at the scale that fits it, "
                                                 "its aspect kept; an integer model restores at --scale, then is resized down to it, "
                                                 "the continuous-scale model (--preset any) restores straight to it")
    p.add_argument("--fit", choices=("keep", "pad", "crop"), help="with --size (media.fit): keep (default: the output is the picture, "
                                                                   "as large as fits), pad (centred on black to exactly WxH), crop (covers WxH, the excess cut off)")
    p.add_argument("--preset", choices=PRESETS.names(), help="start from a preset: " + ", ".join(PRESETS.names()) + f" (default: {DEFAULT})")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file with config fields (sections as mappings)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one field, e.g. --set train.steps=500 (repeatable)")
    p.add_argument("--no-finetune", action="store_true", help="restore with the starting model (model.pretrained) as it is")
    p.add_argument("--fps", help="frame rate of the restored video (media.fps): a multiple (2x) or a rate (60, 59.94) above the source's; "
                                 "new frames by motion-compensated interpolation, duration and audio kept (default: the source's)")
    return p


def run(p: argparse.ArgumentParser, argv: list[str] | None, work: Callable[..., Any]) -> int:
    """Parse, build the config, call ``work(cfg, args, preset)``; exit code 0 when every
    video was restored, 1 when some failed, 2 for a usage or config error, 3 when another
    run is writing to the same output."""
    args = p.parse_args(argv)
    size = getattr(args, "size", None)
    if getattr(args, "fit", None) and not size:
        p.error("--fit goes with --size")
    preset = args.preset or DEFAULT
    if size and args.scale is not None and PRESETS.get(preset).continuous:
        p.error("with the continuous-scale model, --size decides each video's scale: leave out --scale")
    try:
        cfg = build_config(preset, args.config, args.overrides, scale=args.scale, **({"train.finetune": False} if args.no_finetune else {}),
                           **({"media.fps": args.fps} if args.fps else {}), **({"media.size": size} if size else {}),
                           **({"media.fit": args.fit} if getattr(args, "fit", None) else {}))
    except (ValueError, OSError, yaml.YAMLError) as e:
        p.error(str(e).replace("\n", " "))
    from pipeline.run.lock import RunLocked

    try:
        outcome = work(cfg, args, preset)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunLocked as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 1 if any(r.status == "failed" for r in outcome.rows) else 0


def main(argv: list[str] | None = None) -> int:
    p = parser()
    p.add_argument("--reference", help="high-resolution originals for PSNR/SSIM: a file for a file input, a folder or s3:// prefix with the same relative paths for a folder")

    def work(cfg, args, preset):
        from pipeline.run.driver import restore

        return restore(cfg, args.input, args.output, reference=args.reference, preset=preset)

    return run(p, argv, work)


if __name__ == "__main__":
    sys.exit(main())
