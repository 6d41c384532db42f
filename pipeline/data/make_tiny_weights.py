"""Train the small EDSR (2 blocks x 16 features) that the ``tiny`` preset starts from.

    python -m pipeline.data.make_tiny_weights --data TRAIN_IMAGES --val SET5_HR --steps 3000

(TRAIN_IMAGES: the T91 + BSD200 images, 291 in all, as listed in MODEL_CARD.md.)

Writes ``pipeline/data/weights/edsr_2x16_x{2,3,4}.pt`` (self-describing checkpoints) and
prints a Markdown table of Set5 Y-PSNR (bicubic vs model) for the model card
``pipeline/data/weights/MODEL_CARD.md``. It uses the same pair sampling and training loop
as the per-video fine-tune (``pipeline.train.finetune.finetune``), on CPU, single process.

This is a demo/test-sized model, trained in minutes on a CPU; the full pretraining job
with validation, resume and data parallelism is ``jobs.pretrain``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import torch

from pipeline.benchmark import benchmark
from pipeline.config import TrainConfig
from pipeline.models import checkpoint
from pipeline.models.edsr import EDSR
from pipeline.train.finetune import finetune
from pipeline.train.pretrain import list_images, load_images, validate

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of high-resolution training images")
    ap.add_argument("--val", required=True, help="folder of validation images (Set5 HR)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--scales", default="2,3,4")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    train, val = load_images(list_images(args.data)), load_images(list_images(args.val))
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for scale in (int(s) for s in args.scales.split(",")):
        torch.manual_seed(0)
        model = EDSR(2, 16, 1.0, scale)
        cfg = TrainConfig(steps=args.steps, patch_size=24 * scale, batch_size=16, lr=5e-4, seed=scale)
        t0 = time.perf_counter()
        # Images smaller than a patch would shrink every patch (effective_patch): leave them out.
        usable = [im for im in train if min(im.shape[:2]) >= cfg.patch_size]
        stats = finetune(model, usable, cfg, scale, torch.device("cpu"), seed=scale)
        seconds = time.perf_counter() - t0
        model.eval()
        sr = validate(model, val, scale, torch.device("cpu"))
        bic = benchmark("bicubic", args.val, scale)["mean"]["psnr_y"]
        path = os.path.join(OUT, f"edsr_2x16_x{scale}.pt")
        checkpoint.save(model, path, {
            "trained_by": "pipeline/data/make_tiny_weights.py", "data": os.path.basename(os.path.normpath(args.data)),
            "images": len(usable), "steps": args.steps, "batch": cfg.batch_size, "patch": cfg.patch_size,
            "lr": cfg.lr, "seconds": round(seconds, 1), "device": "cpu", "set5_psnr_y": round(sr, 2),
            "set5_psnr_y_bicubic": round(bic, 2), "loss_first": stats["loss_first"], "loss_last": stats["loss_last"],
        })
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        rows.append(f"| x{scale} | {args.steps} | {seconds:.0f} s | {bic:.2f} | {sr:.2f} | {sr - bic:+.2f} | `{digest[:16]}` |")
        print(rows[-1], flush=True)
    print("| scale | steps | train time | Set5 bicubic Y-PSNR | Set5 model Y-PSNR | gain | sha256 |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
