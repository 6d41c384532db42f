"""Which EDSR shape learns most per CPU-hour: short learning curves, same data and recipe.

    python -m bench.shapes --data TRAIN_DIR [--data ...] --val Set5=DIR --val Set14=DIR \
        --out runs/shapes --shapes 8x32,16x32,16x48,16x64 --cpu-hours 1 [--plot docs/results/shapes.png]

Each shape is pretrained at x2 (bicubic pairs, batch 16, 48-px LR patches, Adam 2e-4
constant, bf16 autocast and channels-last as the real training runs, single-threaded) until its training has used ``--cpu-hours`` of CPU time
(process CPU time, so a busy machine slows the run but does not bias the curve);
Set5/Set14 Y-PSNR is measured about ten times along the way. Runs resume where they
stopped. ``--plot`` draws PSNR against CPU-hours, one line per shape, from the runs'
``history.jsonl``, and prints the table; its CPU-hours are steps times the shape's step
cost measured on one machine (``STEP_COST``), as the machines that ran the curves differ
in speed (``--cpu-hours`` is the run's own CPU time).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.models.edsr import EDSR
from pipeline.train.pretrain import PretrainConfig, pretrain

#: CPU-seconds of one training step of the recipe per shape, all measured on one machine (one
#: thread, bf16): the plot's x-axis is steps times this, so that runs made on machines of
#: different speeds share an axis. A shape not listed is plotted by its own CPU time.
STEP_COST = {"8x32": 0.159, "16x32": 0.248, "16x48": 0.502, "16x64": 0.785}

RECIPE = {"scale": 2, "batch_size": 16, "patch_size": 96, "lr": 2e-4, "lr_step": 10**9, "steps": 10**7, "threads": 1, "precision": "bf16"}


def step_cpu_seconds(blocks: int, feats: int, repeat: int = 3, bf16: bool = True) -> float:
    """CPU seconds of one training step of the recipe, single-threaded."""
    torch.set_num_threads(1)
    model = EDSR(blocks, feats, 1.0, 2).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.rand(16, 3, 48, 48).contiguous(memory_format=torch.channels_last), torch.rand(16, 3, 96, 96)
    times = []
    for _ in range(repeat + 1):
        c0 = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = F.l1_loss(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.process_time() - c0)
    return float(np.median(times[1:]))


def parse_shape(s: str) -> tuple[int, int]:
    b, _, f = s.partition("x")
    return int(b), int(f)


def run(shape: str, data: list[str], val: dict[str, str], out: str, cpu_hours: float, points: int) -> None:
    blocks, feats = parse_shape(shape)
    budget = cpu_hours * 3600
    folder = os.path.join(out, f"edsr_{shape}")
    every_file = os.path.join(folder, "every.json")
    if os.path.exists(every_file):  # the first run's choice, so resumes keep the same points
        with open(every_file) as fh:
            every = json.load(fh)["every"]
    else:
        every = max(10, int(round(budget / points / step_cpu_seconds(blocks, feats) / 10)) * 10)
        os.makedirs(folder, exist_ok=True)
        with open(every_file, "w") as fh:
            json.dump({"every": every}, fh)
    cfg = PretrainConfig(**RECIPE, n_resblocks=blocks, n_feats=feats, val_every=every, checkpoint_every=every, max_cpu_seconds=budget)
    print(f"shapes: EDSR {shape}: validating every {every} steps, {cpu_hours:g} CPU-h", flush=True)
    pretrain(cfg, data, folder, val=val, where="local")


def curves(out: str) -> dict[str, list[dict]]:
    result = {}
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name, "history.jsonl")
        if name.startswith("edsr_") and os.path.exists(path):
            with open(path) as fh:
                result[name[5:]] = [json.loads(ln) for ln in fh if ln.strip()]
    return result


def cpu_hours(shape: str, row: dict) -> float:
    """The x-axis: a history row's steps at the shape's measured step cost (its own CPU time when unlisted)."""
    return row["step"] * STEP_COST[shape] / 3600 if shape in STEP_COST else row["train_cpu_seconds"] / 3600


def plot(out: str, png: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(out)
    sets = sorted({k[4:] for h in data.values() for r in h for k in r if k.startswith("val_") and k != "val_psnr_y"})
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.2), squeeze=False)
    for ax, s in zip(axes[0], sets, strict=True):
        for shape, hist in data.items():
            pts = [(cpu_hours(shape, r), r[f"val_{s}"]) for r in hist if f"val_{s}" in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=f"EDSR {shape}")
        ax.set_xlabel("training CPU-hours (steps x the shape's measured step cost, one thread, bf16)")
        ax.set_ylabel(f"{s} x2 Y-PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=110)
    lines = ["| shape | steps | CPU-h (steps x step cost) | CPU-h (its own run) | " + " | ".join(f"{s} x2" for s in sets) + " |", "|---|---:|---:|---:|" + "---:|" * len(sets)]
    for shape, hist in data.items():
        last = [r for r in hist if any(k.startswith("val_") for k in r)][-1]
        lines.append(f"| {shape} | {last['step']} | {cpu_hours(shape, last):.2f} | {last['train_cpu_seconds'] / 3600:.2f} | "
                     + " | ".join(f"{last.get(f'val_{s}', float('nan')):.2f}" for s in sets) + " |")
    return "\n".join(lines)


def export(out: str, shape: str, path: str) -> None:
    """Write a shape run's current weights as a checkpoint (to warm-start the real training)."""
    import io

    from pipeline.models import checkpoint

    blocks, feats = parse_shape(shape)
    folder = os.path.join(out, f"edsr_{shape}")
    with open(os.path.join(folder, "state.pt"), "rb") as fh:
        st = torch.load(io.BytesIO(fh.read()), map_location="cpu", weights_only=True)
    model = EDSR(blocks, feats, 1.0, 2)
    model.load_state_dict(st["model"])
    hist = curves(out)[shape][-1]
    checkpoint.save(model, path, {"trained_by": "python -m bench.shapes", "recipe": RECIPE, "steps_done": st["step"],
                                  "train_cpu_seconds": st["train_cpu_seconds"], "val": {k[4:]: v for k, v in hist.items() if k.startswith("val_")}})
    print(f"shapes: EDSR {shape} at step {st['step']} -> {path}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", default=[])
    ap.add_argument("--val", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="8x32,16x32,16x48,16x64")
    ap.add_argument("--cpu-hours", type=float, default=1.0)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--plot", help="write the curves to this PNG and print the table (no training)")
    ap.add_argument("--export", nargs=2, metavar=("SHAPE", "CHECKPOINT"), help="write a run's current weights as a checkpoint (no training)")
    args = ap.parse_args(argv)
    if args.plot:
        print(plot(args.out, args.plot))
        return
    if args.export:
        export(args.out, *args.export)
        return
    val = dict(v.split("=", 1) for v in args.val)
    for shape in args.shapes.split(","):
        run(shape, args.data, val, args.out, args.cpu_hours, args.points)


if __name__ == "__main__":
    main()
