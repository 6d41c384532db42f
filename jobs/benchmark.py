"""Benchmark single-image super-resolution on Set5 / Set14-style HR folders.

    python -m jobs.benchmark --model CKPT|builtin:NAME|bicubic --data DIR --scale S (2, 3, 4, or e.g. 2.5)
        [--degrade bicubic|blur1.6|noise5|x264crf30] [--device cpu|cuda] [--json FILE]

Each HR image of DIR (or of DIR/HR when that exists) is cropped to a multiple of S,
downscaled with the MATLAB-compatible bicubic, restored by the model (or upscaled back
by bicubic) and scored by Y-PSNR / Y-SSIM with S px cropped; greyscale images are
repeated to RGB. Prints a per-image table and the mean; exit code 0 on success,
2 for bad input (missing folder or checkpoint, no images, wrong scale).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="'bicubic', 'builtin:NAME' (shipped weights, e.g. builtin:edsr_2x16) or a checkpoint file")
    p.add_argument("--data", required=True, help="folder of HR images, or a folder with an HR/ subfolder")
    p.add_argument("--scale", required=True, type=float, help="upscaling factor: 2, 3, 4 (a checkpoint's), or a fraction such as 2.5 "
                   "(bicubic inputs; a continuous-scale checkpoint restores to it, an integer one of a larger scale restores, then resizes down)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where a checkpoint runs (default cpu)")
    p.add_argument("--degrade", default="bicubic", help="how the input is made: bicubic (the papers' protocol, default), "
                   "blur1.6 (Gaussian sigma 1.6, then every S-th pixel, centre-aligned), noise5 (bicubic + Gaussian noise sigma 5), "
                   "x264crf30 (bicubic + x264 CRF 30); seeded, the same for every model")
    p.add_argument("--json", metavar="FILE", help="also write the per-image rows and means to FILE as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from pipeline.benchmark import benchmark, format_table

    try:
        scale = int(args.scale) if args.scale.is_integer() else args.scale
        result = benchmark(args.model, args.data, scale, device=args.device, degrade=args.degrade)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(parent, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
