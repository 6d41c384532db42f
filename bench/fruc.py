"""Frame-rate up-conversion measured: every other frame of a clip is dropped, the rest
doubled in rate again, and each inserted frame compared with the frame that was dropped.

    python -m bench.fruc CLIP [CLIP ...] [--frames N] [--out bench/results/fruc.json]

Methods: ``mci`` (``pipeline.media.fruc.interpolate``: motion-compensated, cuts respected),
``repeat`` (the frame before) and ``blend`` (the mean of the frames before and after).
PSNR and SSIM on the luma plane as decoded (8-bit, full frame); frames/s of ``mci`` is
its wall time over its output frames. Prints a Markdown table and writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import av
import numpy as np

from pipeline.media.fruc import interpolate
from pipeline.metrics.fullref import psnr_plane, ssim_plane


def measure(path: str, frames: int = 0) -> dict:
    with av.open(path) as c:
        s = c.streams.video[0]
        rate = s.average_rate
        src = []
        for f in c.decode(s):
            src.append(f.reformat(format="yuv420p"))
            if frames and len(src) >= frames:
                break
    h = src[0].height
    y = [f.to_ndarray()[:h] for f in src]
    kept = src[0::2]
    t0 = time.perf_counter()
    out = list(interpolate(kept, rate / 2, rate))
    seconds = time.perf_counter() - t0
    rows: dict[str, list[tuple[float, float]]] = {"mci": [], "repeat": [], "blend": []}
    for k in range(1, len(src) - 1, 2):  # frame k was dropped; k-1 and k+1 were kept
        a, b, gt = y[k - 1], y[k + 1], y[k]
        guesses = {"mci": out[k].to_ndarray()[:h], "repeat": a,
                   "blend": ((a.astype(np.uint16) + b + 1) // 2).astype(np.uint8)}
        for name, g in guesses.items():
            rows[name].append((psnr_plane(g, gt), ssim_plane(g.astype(np.float64), gt.astype(np.float64))))
    result = {"clip": os.path.basename(path), "size": f"{src[0].width}x{h}", "fps": float(rate), "frames": len(src),
              "inserted": len(rows["mci"]), "mci_frames_per_s": len(out) / seconds}
    for name, v in rows.items():
        result[f"{name}_psnr"] = float(np.mean([p for p, _ in v]))
        result[f"{name}_ssim"] = float(np.mean([q for _, q in v]))
    return result


def table(results: list[dict]) -> str:
    lines = ["| clip | size | fps | inserted | repeat PSNR / SSIM | blend PSNR / SSIM | mci PSNR / SSIM | mci frames/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['clip']} | {r['size']} | {r['fps']:.2f} | {r['inserted']} | "
                     + " | ".join(f"{r[m + '_psnr']:.2f} / {r[m + '_ssim']:.4f}" for m in ("repeat", "blend", "mci"))
                     + f" | {r['mci_frames_per_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--frames", type=int, default=0, help="the first N frames of each clip (0: all)")
    ap.add_argument("--out", default="", help="write the rows here as JSON")
    args = ap.parse_args(argv)
    results = []
    for path in args.clips:
        results.append(measure(path, args.frames))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
