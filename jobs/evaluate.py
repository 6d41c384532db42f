"""Measure restoration against high-resolution originals.

    python -m jobs.evaluate --input HR --output OUT --scale S [--preset NAME] [--set key=value ...]

Each HR clip is downscaled by bicubic interpolation (the low-resolution input), restored
exactly as ``jobs.restore`` would, and compared with the original: the reports in
OUT/reports/ then hold PSNR/SSIM (Y channel, S px cropped) for bicubic, the pretrained
model and the fine-tuned model, beside NIQE.
"""

from __future__ import annotations

import sys

from jobs.restore import parser
from pipeline.config import build_config


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.prog = "python -m jobs.evaluate"
    args = p.parse_args(argv)
    preset = args.preset or "baseline"
    try:
        cfg = build_config(preset, args.config, args.overrides, scale=args.scale, **({"train.finetune": False} if args.no_finetune else {}))
    except (ValueError, OSError) as e:
        p.error(str(e))
    from pipeline.evaluate import evaluate

    try:
        rows = evaluate(cfg, args.input, args.output, preset=preset)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
