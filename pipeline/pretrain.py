"""Pretraining of the base EDSR on a folder of high-resolution images.

Random patches of the images are the targets, their bicubic (MATLAB-compatible)
downscales the inputs; flips and 90° rotations; L1 loss; Adam with a step schedule
(the learning rate is halved every ``lr_step`` steps, as in the EDSR paper). It runs as
a Ray Train ``TorchTrainer``, data-parallel over ``workers`` workers (one GPU each when
the cluster has GPUs), validates on a held-out folder every ``val_every`` steps, and
saves a resumable state every ``checkpoint_every`` steps:

    OUTPUT/state.pt             model + optimiser + schedule + step (resume point)
    OUTPUT/history.jsonl        one line per validation: step, loss, PSNR, lr, seconds
    OUTPUT/edsr_<B>x<F>_x<S>.pt the final self-describing checkpoint (with provenance)

A run that is killed (or stopped by ``max_seconds``, to train in slices) continues from
its last state when started again with the same output. A ×3/×4 model can start from a
×2 model (``init``): everything but the upsampler is copied, as in the EDSR paper.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.benchmark import IMAGE_EXTENSIONS, load_rgb, modcrop
from pipeline.config import _f
from pipeline.inference import upscale_frames
from pipeline.metrics.fullref import psnr_y
from pipeline.metrics.resize import bicubic_resize_uint8
from pipeline.models import checkpoint
from pipeline.models.edsr import EDSR
from pipeline.storage import Store
from pipeline.training import sample_pairs


@dataclass(frozen=True)
class PretrainConfig:
    scale: int = _f(2, "Upscaling factor: 2, 3 or 4.")
    n_resblocks: int = _f(16, "EDSR residual blocks (16: EDSR-baseline).")
    n_feats: int = _f(64, "EDSR feature channels (64: EDSR-baseline).")
    res_scale: float = _f(1.0, "Residual scaling (0.1 for the 32x256 model).")
    steps: int = _f(300_000, "Total optimisation steps (the EDSR paper: 300k).")
    batch_size: int = _f(16, "Patches per step per worker.")
    patch_size: int = _f(96, "HR patch side in pixels (LR patch = patch_size / scale; the paper: 48 LR px).")
    lr: float = _f(1e-4, "Adam learning rate at the start.")
    lr_step: int = _f(200_000, "Halve the learning rate every this many steps.")
    val_every: int = _f(5000, "Validate (and log) every this many steps.")
    checkpoint_every: int = _f(5000, "Save the resumable state every this many steps.")
    workers: int = _f(1, "Ray Train workers (data parallel); one GPU each when the cluster has GPUs.")
    device: str = _f("auto", 'auto (GPUs if the cluster has some), gpu, or cpu.')
    init: str | None = _f(None, "Start from this checkpoint: same scale (all weights) or x2 (all but the upsampler, for x3/x4).")
    max_seconds: float = _f(0.0, "Stop (saving the state) after this many seconds of training; 0: no limit. Rerun to continue.")
    seed: int = _f(0, "Random seed.")

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {self.scale}")
        for name in ("steps", "batch_size", "lr_step", "val_every", "checkpoint_every", "workers", "n_resblocks", "n_feats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patch_size % self.scale or self.patch_size < 2 * self.scale:
            raise ValueError(f"patch_size must be a multiple of scale ({self.scale}) and >= {2 * self.scale}, got {self.patch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.device not in ("auto", "gpu", "cpu"):
            raise ValueError(f"device must be auto, gpu or cpu, got {self.device!r}")
        if self.max_seconds < 0:
            raise ValueError(f"max_seconds must be >= 0, got {self.max_seconds}")

    @property
    def arch(self) -> dict[str, Any]:
        return {"n_resblocks": self.n_resblocks, "n_feats": self.n_feats, "res_scale": self.res_scale, "scale": self.scale}


def list_images(folder: str) -> list[str]:
    """Absolute paths (Ray workers run in other directories) of the images under ``folder``."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return paths


def load_images(paths: list[str], min_side: int = 0) -> list[np.ndarray]:
    """uint8 RGB (H, W, 3) images (grey ones repeated to 3 channels), those with a side
    shorter than ``min_side`` left out."""
    out = []
    for p in paths:
        im = load_rgb(p)[0]
        if min(im.shape[:2]) >= min_side:
            out.append(im)
    return out


def validate(model: torch.nn.Module, images: list[np.ndarray], scale: int, device: torch.device) -> float:
    """Mean Y-PSNR (``scale`` px cropped) on HR images, LR made by the MATLAB-compatible bicubic."""
    vals = []
    for hr in images:
        hr = modcrop(hr, scale)
        h, w = hr.shape[:2]
        lr = bicubic_resize_uint8(hr, (h // scale, w // scale))
        sr = upscale_frames(model, lr[None], scale, device=device)[0]
        vals.append(psnr_y(sr, hr, crop=scale))
    return float(np.mean(vals))


def init_from(model: EDSR, blob: bytes) -> str:
    """Copy weights from a checkpoint: all of them at the same scale, all but the
    upsampler from a x2 model (EDSR paper's x3/x4 initialisation). Returns what was done."""
    src, meta = checkpoint.load(blob)
    a = meta["arch"]
    if (a["n_resblocks"], a["n_feats"]) != (model.arch["n_resblocks"], model.arch["n_feats"]):
        raise ValueError(f"init checkpoint is EDSR {a['n_resblocks']}x{a['n_feats']}, the model {model.arch['n_resblocks']}x{model.arch['n_feats']}")
    if a["scale"] == model.scale:
        model.load_state_dict(src.state_dict())
        return f"all weights from a x{a['scale']} model"
    if a["scale"] != 2:
        raise ValueError(f"init checkpoint must be x2 or x{model.scale}, got x{a['scale']}")
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("tail.0.")}
    missing, _ = model.load_state_dict(state, strict=False)
    assert all(k.startswith("tail.0.") for k in missing), missing
    return "all but the upsampler from a x2 model"


def _state_bytes(model, opt, sched, step: int, cfg: PretrainConfig, seconds: float) -> bytes:
    buf = io.BytesIO()
    torch.save({
        "format": "reelsr.pretrain-state/1", "step": step, "seconds": seconds,
        "config": dataclasses.asdict(cfg),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
    }, buf)
    return buf.getvalue()


def _loop(config: dict[str, Any]) -> None:
    """Ray Train worker: data-parallel pretraining; rank 0 validates and writes."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    cfg: PretrainConfig = config["cfg"]
    out = config["output"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    train_images = load_images(config["train_paths"], min_side=cfg.patch_size)
    if not train_images:
        raise ValueError(f"no training image has both sides >= patch_size {cfg.patch_size}")
    val_images = load_images(config["val_paths"]) if rank == 0 and config["val_paths"] else []

    torch.manual_seed(cfg.seed)
    model = EDSR(**cfg.arch)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=0.5)
    step, seconds_before = 0, 0.0
    state = config["state"]
    if state is not None:
        st = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        step, seconds_before = int(st["step"]), float(st["seconds"])
    elif config["init"] is not None:
        note = init_from(model, config["init"])
        if rank == 0:
            _say(f"pretrain: initialised with {note}")
    model = ray.train.torch.prepare_model(model)
    inner = model.module if hasattr(model, "module") else model
    rng = np.random.default_rng([cfg.seed, rank, step])  # a resumed run does not replay its patches

    t0 = time.perf_counter()
    losses: list[float] = []
    while step < cfg.steps:
        model.train()
        lr_t, hr_t = sample_pairs(train_images, cfg.batch_size, cfg.patch_size, cfg.scale, rng)
        loss = F.l1_loss(model(lr_t.to(device)), hr_t.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        losses.append(loss.item())
        last = step == cfg.steps
        if step % cfg.checkpoint_every == 0 or last:
            elapsed = seconds_before + time.perf_counter() - t0
            stop = cfg.max_seconds > 0 and time.perf_counter() - t0 >= cfg.max_seconds
            if world > 1:  # every worker must agree to stop at the same step
                flag = torch.tensor([1.0 if stop else 0.0], device=device)
                dist.broadcast(flag, src=0)
                stop = bool(flag.item())
            metrics: dict[str, Any] = {"step": step, "loss": float(np.mean(losses[-cfg.checkpoint_every:])), "lr": sched.get_last_lr()[0], "seconds": elapsed}
            if rank == 0:
                if val_images and (step % cfg.val_every == 0 or last or stop):
                    metrics["val_psnr_y"] = validate(inner.eval(), val_images, cfg.scale, device)
                with open(os.path.join(out, "history.jsonl"), "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(metrics) + "\n")
                Store().write_bytes(os.path.join(out, "state.pt"), _state_bytes(inner, opt, sched, step, cfg, elapsed))
                _say(f"pretrain: step {step}/{cfg.steps}  L1 {metrics['loss']:.4f}  lr {metrics['lr']:.2e}"
                     + (f"  val Y-PSNR {metrics['val_psnr_y']:.2f} dB" if "val_psnr_y" in metrics else "")
                     + f"  {(step - (config['start_step'])) / (time.perf_counter() - t0):.1f} steps/s")
            ray.train.report(metrics)
            if stop and not last:
                if rank == 0:
                    _say(f"pretrain: stopping at step {step} after max_seconds={cfg.max_seconds:g}; run again to continue")
                return
    # Reached the last step (in this run or, if killed right after the last state was
    # written, in the previous one): rank 0 writes the final self-describing checkpoint.
    if rank == 0:
        hist = _last_history(out)
        prov = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "max_seconds"}
        prov.update(trained_by="jobs.pretrain", steps_done=step, seconds=round(hist.get("seconds", 0.0), 1), workers=world,
                    device=str(device), final_loss=hist.get("loss"), val_psnr_y=hist.get("val_psnr_y"),
                    train_images=config["train_name"], val_images=config["val_name"])
        checkpoint.save(inner, os.path.join(out, final_name(cfg)), prov)
        _say(f"pretrain: done: {os.path.join(out, final_name(cfg))}")


def _last_history(out: str) -> dict[str, Any]:
    try:
        with open(os.path.join(out, "history.jsonl"), encoding="utf-8") as fh:
            lines = [ln for ln in fh if ln.strip()]
        return json.loads(lines[-1]) if lines else {}
    except FileNotFoundError:
        return {}


def _say(msg: str) -> None:
    sys.stdout.write(msg + "\n")  # not print(): Ray Train patches print and logs it twice
    sys.stdout.flush()


def final_name(cfg: PretrainConfig) -> str:
    return f"edsr_{cfg.n_resblocks}x{cfg.n_feats}_x{cfg.scale}.pt"


def pretrain(cfg: PretrainConfig, data: str, output: str, val: str | None = None) -> dict[str, Any]:
    """Run (or continue) a pretraining into ``output``; returns a summary dict."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.orchestrate import connect

    train_paths = list_images(data)
    val_paths = list_images(val) if val else []
    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    state_path = os.path.join(output, "state.pt")
    state = None
    start_step = 0
    if os.path.exists(state_path):
        with open(state_path, "rb") as fh:
            state = fh.read()
        st = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
        saved = {k: v for k, v in st["config"].items() if k not in ("steps", "max_seconds", "val_every", "checkpoint_every", "workers", "device")}
        now = {k: v for k, v in dataclasses.asdict(cfg).items() if k in saved}
        if saved != now:
            diff = {k: (saved[k], now[k]) for k in saved if saved[k] != now[k]}
            raise ValueError(f"{state_path} was made with another config {diff}: use another --output or the same settings")
        start_step = int(st["step"])
        if start_step >= cfg.steps and os.path.exists(os.path.join(output, final_name(cfg))):
            print(f"pretrain: already complete ({start_step} steps): {os.path.join(output, final_name(cfg))}", flush=True)
            return {"step": start_step, "checkpoint": os.path.join(output, final_name(cfg)), "resumed": True}
        print(f"pretrain: resuming from step {start_step}/{cfg.steps} ({state_path})", flush=True)
    init = None
    if state is None and cfg.init:
        with open(checkpoint.resolve(cfg.init, cfg.scale) if cfg.init.startswith("builtin:") else cfg.init, "rb") as fh:
            init = fh.read()
    connect()
    gpu = cfg.device == "gpu" or (cfg.device == "auto" and ray.cluster_resources().get("GPU", 0) >= 1)
    cpus = ray.cluster_resources().get("CPU", 1)
    if not gpu and cfg.workers > cpus:
        raise ValueError(f"workers={cfg.workers} CPU workers cannot be placed on a cluster with {int(cpus)} CPU(s)")
    print(f"pretrain: EDSR {cfg.n_resblocks}x{cfg.n_feats} x{cfg.scale}, {len(train_paths)} training images, "
          f"{len(val_paths)} validation images, {cfg.workers} {'GPU' if gpu else 'CPU'} worker(s)", flush=True)
    t0 = time.perf_counter()
    trainer = TorchTrainer(
        _loop,
        train_loop_config={
            "cfg": cfg, "output": output, "state": state, "init": init, "start_step": start_step,
            "train_paths": train_paths, "val_paths": val_paths, "threads": None if gpu else max(1, int(cpus // cfg.workers)),
            "train_name": os.path.abspath(data), "val_name": os.path.abspath(val) if val else None,
        },
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=gpu),
        run_config=RunConfig(name="pretrain", storage_path=os.path.join(output, ".ray_train")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    last = _last_history(output)  # written by rank 0 at every state save
    final = os.path.join(output, final_name(cfg))
    done = last.get("step") == cfg.steps and os.path.exists(final)
    return {"step": last.get("step"), "val_psnr_y": last.get("val_psnr_y"), "seconds": time.perf_counter() - t0,
            "checkpoint": final if done else None, "resumed": state is not None}
