"""Evaluation clips from still images: a camera pan across each image (whole-pixel steps,
so no frame is resampled), written lossless, for the evaluation protocol of
``jobs.evaluate`` / ``jobs.experiment`` beside real clips.

    python -m bench.evalset --images SET14_HR --out evalset [--names baboon,zebra] \\
        [--size 320x240] [--frames 50] [--fps 25]

Each image at least ``size`` + 32 px wide (or tall) gives ``<name>_pan.mp4``: a
``size`` window moving from the left edge to the right (or top to bottom), the same
number of whole pixels each frame. Images too small for a pan are skipped (and named).
"""

from __future__ import annotations

import argparse
import os
from fractions import Fraction

import numpy as np

from pipeline.benchmark import load_rgb
from pipeline.media.encode import ChunkWriter


def pan_clip(image: np.ndarray, path: str, size: tuple[int, int], frames: int, fps: int) -> bool:
    """Write the pan of ``image`` (uint8 RGB) to ``path``; False when it is too small."""
    w, h = size
    ih, iw = image.shape[:2]
    span_x, span_y = iw - w, ih - h
    if min(span_x, span_y) < 0 or max(span_x, span_y) < 32:
        return False
    horizontal = span_x >= span_y
    step = max(1, (span_x if horizontal else span_y) // (frames - 1))
    ticks = 1000
    with ChunkWriter(path, width=w, height=h, time_base=Fraction(1, fps * ticks), rate=Fraction(fps), colorspace="bt709",
                     crf=0, preset="veryfast", gop_size=fps) as writer:
        for i in range(frames):
            x, y = (min(i * step, span_x), span_y // 2) if horizontal else (span_x // 2, min(i * step, span_y))
            writer.write(i * ticks, np.ascontiguousarray(image[y:y + h, x:x + w]))
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--names", default="", help="comma-separated image names without extension (default: all)")
    ap.add_argument("--size", default="320x240", help="the window, WxH (even sides)")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--fps", type=int, default=25)
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if w % 2 or h % 2 or args.frames < 2:
        ap.error("--size needs even sides and --frames at least 2")
    wanted = {n for n in args.names.split(",") if n}
    os.makedirs(args.out, exist_ok=True)
    for f in sorted(os.listdir(args.images)):
        name, ext = os.path.splitext(f)
        if ext.lower() not in (".png", ".jpg", ".jpeg", ".bmp") or (wanted and name not in wanted):
            continue
        image = load_rgb(os.path.join(args.images, f))[0]
        path = os.path.join(args.out, f"{name}_pan.mp4")
        print(f"{path}" if pan_clip(image, path, (w, h), args.frames, args.fps) else f"{name}: too small for a {args.size} pan, skipped")


if __name__ == "__main__":
    main()
