"""Measure restoration against high-resolution originals.

    python -m jobs.evaluate --input HR --output OUT --scale S [--degrade D] [--preset NAME] [--set key=value ...]

Each HR clip is made low-resolution by the clip degradation D (default bicubic; blur<s>,
noise<s>, x264crf<n>, mpeg4q<n>: see pipeline/evaluate.py), restored
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
    p.add_argument("--degrade", default="bicubic", metavar="D",
                   help="how the low-resolution input is made: bicubic (default), blur<sigma>, noise<sigma>, x264crf<n>, mpeg4q<n>")

    def work(cfg, args, preset):
        from pipeline.evaluate import evaluate

        return evaluate(cfg, args.input, args.output, preset=preset, degrade=args.degrade)

    return run(p, argv, work)


if __name__ == "__main__":
    sys.exit(main())
