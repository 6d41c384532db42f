"""The continuous-scale model against the integer models and bicubic, on Set5/Set14-style
folders at integer and fractional scales (the benchmark protocol of ``pipeline.benchmark``).

    python -m bench.scales --model CONTINUOUS.pt|builtin:NAME --integer builtin:edsr_16x32_bicubic \\
        --data Set5=DIR --data Set14=DIR [--scales 2,2.5,3,3.5,4] --out FILE.json

An integer model reaches a fractional scale s by restoring at the next integer scale
above it and resizing down (torch's antialiased bicubic, as a restore to a media.size
does): the way to get such a scale without a continuous model. Writes FILE.json (every mean) and FILE.md (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pipeline.benchmark import benchmark


def table(rows: list[dict], sets: list[str], scales: list[float]) -> str:
    """Markdown: one line per set and method, one column per scale (Y-PSNR dB)."""
    head = "| set | method | " + " | ".join(f"x{s:g}" for s in scales) + " |"
    lines = [head, "|---|---|" + "---:|" * len(scales)]
    for name in sets:
        for method in dict.fromkeys(r["method"] for r in rows):
            cells = []
            for s in scales:
                hit = [r for r in rows if r["set"] == name and r["method"] == method and r["scale"] == s]
                cells.append(f"{hit[0]['psnr_y']:.2f}" if hit else "")
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scales", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the continuous-scale checkpoint (or builtin:NAME)")
    p.add_argument("--integer", default="builtin:edsr_16x32_bicubic", help="integer models to compare with: builtin:NAME with x2/x3/x4 files")
    p.add_argument("--data", action="append", required=True, metavar="NAME=DIR", help="a benchmark folder (repeatable)")
    p.add_argument("--scales", default="2,2.5,3,3.5,4", help="comma-separated scales")
    p.add_argument("--out", required=True, help="results JSON (a .md table beside it)")
    args = p.parse_args(argv)
    sets = dict(d.split("=", 1) for d in args.data)
    scales = [float(s) for s in args.scales.split(",")]
    rows = []
    for name, folder in sets.items():
        for s in scales:
            scale = int(s) if s.is_integer() else s
            for method, model in (("bicubic", "bicubic"), ("integer model" if s.is_integer() else "integer model, then resized", args.integer),
                                  ("continuous", args.model)):
                t0 = time.perf_counter()
                r = benchmark(model, folder, scale)
                rows.append({"set": name, "scale": s, "method": method, "model": model, "via": r.get("via", ""),
                             "psnr_y": round(r["mean"]["psnr_y"], 3), "ssim_y": round(r["mean"]["ssim_y"], 4),
                             "seconds": round(time.perf_counter() - t0, 1)})
                print(f"{name} x{s:g} {method}: {rows[-1]['psnr_y']:.2f} dB", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump({"model": args.model, "integer": args.integer, "rows": rows}, fh, indent=1)
        fh.write("\n")
    md = table([{**r, "method": r["method"].replace("integer model, then resized", "integer model")} for r in rows], list(sets), scales)
    with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as fh:
        fh.write(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
