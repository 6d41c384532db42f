"""reelsr's benchmark suite: every stage's throughput, the end-to-end restore against
the pure model compute and a naive loop (``bench/cpu.py``), and the GPU path
(``bench/gpu.py``).

    python -m bench.run [--frames N] [--quick] [--no-e2e] [--out bench/results]
    python -m bench.run --gpu-only [--smoke] [--out bench/results]

``--gpu-only`` imports nothing beyond torch, numpy and reelsr's model, inference and
training modules (PyAV when present), so it runs on a GPU machine that has only torch.
Writes ``<out>/<date>-<host>[-gpu].json`` and ``.md`` and prints the Markdown. Methods and
how to read the figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=240, help="frames of the benchmark clip (176x144 carphone, forwards and back); the 2x run doubles it")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--n-resblocks", type=int, default=16)
    p.add_argument("--n-feats", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=5, help="fine-tune steps timed on the CPU")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for the runs through Ray (repeatable)")
    p.add_argument("--no-e2e", action="store_true", help="skip the runs through Ray")
    p.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU section even when CUDA is available")
    p.add_argument("--gpu-only", action="store_true", help="only the GPU section (bench/gpu.py): torch, numpy and reelsr's own modules")
    p.add_argument("--smoke", action="store_true", help="with --gpu-only: tiny sizes (what the tests run on the CPU)")
    p.add_argument("--gpu-frames", type=int, default=64, help="frames per GPU inference measurement")
    p.add_argument("--gpu-train-steps", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="a small smoke run: 60 frames, EDSR 2x16, 2 training steps, no naive loop")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.gpu_only:
        from bench import gpu

        return gpu.main(args)
    from bench import cpu

    return cpu.main(args)


if __name__ == "__main__":
    sys.exit(main())
