"""Train the small EDSR (2 blocks x 16 features) that the ``tiny`` preset starts from.

    python -m pipeline.data.make_tiny_weights --data ../shared/datasets/train \
        --val ../shared/datasets/val/Set5/HR --steps 3000

Writes ``pipeline/data/weights/edsr_2x16_x{2,3,4}.pt`` (self-describing checkpoints) and
prints a Markdown table of Set5 Y-PSNR (bicubic vs model) for the model card
``pipeline/data/weights/MODEL_CARD.md``. It uses the same pair sampling and training loop
as the per-video fine-tune (``pipeline.training.finetune``), on CPU, single process.

This is a demo/test-sized model, trained in minutes on a CPU; the full pretraining job
with Ray Train, validation and resume is ``jobs.pretrain`` (separate work).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import numpy as np
import torch
from PIL import Image

from pipeline.config import TrainConfig
from pipeline.inference import upscale_frames
from pipeline.metrics.fullref import psnr_y
from pipeline.metrics.resize import bicubic_resize_uint8
from pipeline.models import checkpoint
from pipeline.models.edsr import EDSR
from pipeline.training import finetune

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
IMAGE_EXT = (".png", ".bmp", ".jpg", ".jpeg")


def load_images(folder: str) -> list[np.ndarray]:
    """Every image under ``folder`` (recursive, sorted) as uint8 RGB (H, W, 3)."""
    paths = sorted(
        os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.lower().endswith(IMAGE_EXT)
    )
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXT)}) under {folder}")
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def evaluate(model: EDSR, images: list[np.ndarray], scale: int) -> tuple[float, float]:
    """Mean Y-PSNR (scale px cropped) of bicubic and of the model, LR made by our bicubic."""
    bic, sr = [], []
    for hr in images:
        h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
        hr = hr[:h, :w]
        lr = bicubic_resize_uint8(hr, (h // scale, w // scale))
        bic.append(psnr_y(bicubic_resize_uint8(lr, (h, w)), hr, crop=scale))
        sr.append(psnr_y(upscale_frames(model, lr[None], scale, device=torch.device("cpu"))[0], hr, crop=scale))
    return float(np.mean(bic)), float(np.mean(sr))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of high-resolution training images")
    ap.add_argument("--val", required=True, help="folder of validation images (Set5 HR)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--scales", default="2,3,4")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    train, val = load_images(args.data), load_images(args.val)
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
        bic, sr = evaluate(model, val, scale)
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
