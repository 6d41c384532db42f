"""Measure restoration against high-resolution originals.

    python -m jobs.evaluate --input HR --output OUT --scale S [--preset NAME] [--set key=value ...]

Each HR clip is downscaled by bicubic interpolation (the low-resolution input), restored
exactly as ``jobs.restore`` would, and compared with the original: the reports in
OUT/reports/ then hold PSNR/SSIM (Y channel, S px cropped) for bicubic, the pretrained
model and the fine-tuned model, beside NIQE.
"""

from __future__ import annotations

import sys

from jobs.restore import parser, run


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.prog = "python -m jobs.evaluate"

    def work(cfg, args, preset):
        from pipeline.evaluate import evaluate

        return evaluate(cfg, args.input, args.output, preset=preset)

    return run(p, argv, work)


if __name__ == "__main__":
    sys.exit(main())
