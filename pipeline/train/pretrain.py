"""Pretraining of the base models on folders of high-resolution images.

Random patches of the images are the targets; the inputs are their MATLAB-compatible
bicubic downscales (flavour ``bicubic``, the benchmark protocol) or their randomly
degraded downscales (flavour ``archive``: blur, resize, noise, JPEG / x264 / MPEG-4,
``pipeline.datasets.degrade.ArchiveDegradation``). Flips and 90° rotations, L1 loss,
Adam with the learning rate halved every ``lr_step`` steps (as in the EDSR paper) or
on a cosine over the run's steps.

The images are decoded once into a memory-mapped store (``OUTPUT/images/``) that every
worker reads patches from. The loop runs through ``pipeline.train.launch``: in this
process (one worker, no Ray needed), as one Ray task, or data-parallel on Ray Train.
Rank 0 validates on held-out folders every ``val_every`` steps and writes:

    OUTPUT/state.pt              model + optimiser + schedule + step (the resume point)
    OUTPUT/history.jsonl         one line per state save: step, loss, lr, seconds,
                                 training CPU seconds, validation Y-PSNR per folder
    OUTPUT/<arch>_<B>x<F>_x<S>.pt  the final self-describing checkpoint (with provenance)

A run that is killed (or stopped by ``max_seconds`` / ``max_cpu_seconds``, to train in
slices) continues from its last state when started again with the same output. A ×3/×4
model can start from a ×2 model (``init``): everything but the upsampler is copied.
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
from pipeline.datasets.degrade import ArchiveDegradation
from pipeline.datasets.images import ImageStore
from pipeline.datasets.patches import PatchSampler, bicubic_lr, sample_any_scale, sample_pairs, sample_queries
from pipeline.datasets.sequences import bicubic_window, margin, sample_mixed_windows, shot_store, shot_windows, synth_window
from pipeline.inference import training_autocast, upscale_frames
from pipeline.metrics.fullref import psnr_y
from pipeline.metrics.resize import bicubic_resize_uint8
from pipeline.models import build_model, checkpoint, describe
from pipeline.overlap import ahead
from pipeline.storage import Store
from pipeline.train.launch import Worker, launch, unwrap

FLAVOURS = {"bicubic": "clean bicubic inputs (the benchmark protocol)",
            "archive": "randomly degraded inputs: blur, resize, noise, JPEG / x264 / MPEG-4 (what archives carry)"}
STATE_FORMAT = "reelsr.pretrain-state/2"
MAX_SPEED, LOCAL = 2.0, 0.5
LIIF_MAX_SCALE = 4  # a liif model's patch_size is its target side at this scale; the input side is patch_size / 4  # DUF training windows: global motion up to 2 px/frame (HR), local up to 0.5


@dataclass(frozen=True)
class PretrainConfig:
    scale: int = _f(2, "Upscaling factor: 2, 3 or 4.")
    model: str = _f("edsr", 'Architecture: "edsr" (single frame, trained on patches), "duf" (a window of frames, trained on windows synthesised from the images with smooth motion: pipeline.datasets.sequences) or "liif" (EDSR features and a local implicit function: any scale in [1, 4], each batch at a random one; scale is then the validation scale).')
    n_resblocks: int = _f(16, "EDSR residual blocks (16: EDSR-baseline).")
    n_feats: int = _f(64, "Feature channels: EDSR's (64: EDSR-baseline), DUF's first 3D layer's.")
    res_scale: float = _f(1.0, "Residual scaling (0.1 for the 32x256 model).")
    n_layers: int = _f(6, "DUF dense layers ((frames - 1) / 2 of them shrink the window to its centre).")
    growth: int = _f(16, "DUF growth: feature maps each dense layer adds.")
    frames: int = _f(7, "DUF window length (odd).")
    max_speed: float = _f(MAX_SPEED, "DUF training windows: their global motion, up to this many HR px per frame (validation windows keep 2).")
    p_video: float = _f(0.0, "DUF: the share of each batch's windows cut from the training videos (pretrain's videos: real motion, occlusion, motion blur), the rest synthesised from the images.")
    video_downscale: int = _f(2, "DUF training videos: their frames are shrunk by this factor (block mean) before they serve as targets, so the files' own compression artefacts fall below a pixel.")
    hidden: int = _f(64, "LIIF: width of the implicit function's MLP.")
    mlp_layers: int = _f(3, "LIIF: the MLP's layers after its first.")
    flavour: str = _f("bicubic", "Input side of the pairs: " + "; ".join(f"{k}: {v}" for k, v in FLAVOURS.items()) + ".")
    p_clean: float = _f(0.2, "With flavour archive: the share of patches whose input stays the clean bicubic downscale.")
    steps: int = _f(300_000, "Total optimisation steps (the EDSR paper: 300k).")
    batch_size: int = _f(16, "Patches per step per worker.")
    patch_size: int = _f(96, "HR patch side in pixels (LR patch = patch_size / scale; the paper: 48 LR px).")
    lr: float = _f(1e-4, "Adam learning rate at the start.")
    lr_step: int = _f(200_000, "With lr_schedule step: halve the learning rate every this many steps.")
    lr_schedule: str = _f("step", 'How the learning rate falls: "step" (halved every lr_step steps, as in the EDSR paper) or "cosine" (from lr to lr/100 over steps, for a fixed budget).')
    val_every: int = _f(5000, "Validate (and log) every this many steps.")
    checkpoint_every: int = _f(5000, "Save the resumable state every this many steps.")
    workers: int = _f(1, "Data-parallel workers (Ray Train when > 1); one GPU each when the cluster has GPUs.")
    device: str = _f("auto", "auto (a GPU when there is one), gpu, or cpu.")
    threads: int = _f(0, "CPU threads per worker; 0: the node's CPUs shared by its workers.")
    precision: str = _f("fp32", 'Training arithmetic: "fp32", "bf16" (autocast; weights, optimiser and loss stay fp32; about 2.3x faster than fp32 on a CPU with AVX512-BF16, see bench/shapes.py, and several times slower than fp32 on one without, where bf16 is emulated), or "auto" (bf16 where it is native, else fp32). Validation is always fp32.')
    init: str | None = _f(None, "Start from this checkpoint: same scale (all weights) or x2 (all but the upsampler, for x3/x4).")
    max_seconds: float = _f(0.0, "Stop (saving the state) after this many seconds of this run; 0: no limit. Rerun to continue.")
    max_cpu_seconds: float = _f(0.0, "Stop (saving the state) once the run's training has used this many CPU seconds in all (across resumes); 0: no limit.")
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
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"lr_schedule must be step or cosine, got {self.lr_schedule!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be fp32, bf16 or auto, got {self.precision!r}")
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be {' or '.join(FLAVOURS)}, got {self.flavour!r}")
        if not 0.0 <= self.p_clean <= 1.0:
            raise ValueError(f"p_clean must be in 0..1, got {self.p_clean}")
        if not 0.0 <= self.p_video <= 1.0 or self.video_downscale < 1:
            raise ValueError(f"p_video must be in 0..1 and video_downscale >= 1, got {self.p_video}, {self.video_downscale}")
        if self.p_video and self.model != "duf":
            raise ValueError(f"p_video is for multi-frame models (model duf), got model {self.model!r}")
        if self.max_seconds < 0 or self.max_cpu_seconds < 0 or self.threads < 0:
            raise ValueError("max_seconds, max_cpu_seconds and threads must be >= 0")
        if self.model not in ("edsr", "duf", "liif"):
            raise ValueError(f"model must be edsr, duf or liif, got {self.model!r}")
        if self.model == "liif" and self.flavour != "bicubic":
            raise ValueError(f"a liif model trains on bicubic pairs only (so far), got flavour {self.flavour!r}")
        if self.model == "duf":
            from pipeline.models.duf import DUF

            DUF(**{k: v for k, v in self.arch.items() if k != "name"})  # its own checks: odd window, enough layers

    @property
    def arch(self) -> dict[str, Any]:
        """The model's ``arch`` dict (``pipeline.models.build_model``)."""
        if self.model == "duf":
            return {"name": "duf", "n_layers": self.n_layers, "n_feats": self.n_feats, "growth": self.growth, "frames": self.frames,
                    "scale": self.scale}
        if self.model == "liif":
            return {"name": "liif", "n_resblocks": self.n_resblocks, "n_feats": self.n_feats, "hidden": self.hidden,
                    "layers": self.mlp_layers, "scale": float(self.scale)}
        return {"name": "edsr", "n_resblocks": self.n_resblocks, "n_feats": self.n_feats, "res_scale": self.res_scale, "scale": self.scale}

    @property
    def region(self) -> int:
        """Side of the image regions a training sample is taken from: the patch, and for
        DUF the context its window's motion needs."""
        return self.patch_size + 2 * margin(self.frames, self.max_speed, LOCAL) if self.model == "duf" else self.patch_size

    #: fields that may change between the slices of one run (the rest must match the saved state)
    RESUMABLE = ("steps", "max_seconds", "max_cpu_seconds", "val_every", "checkpoint_every", "workers", "device", "threads", "init", "precision")


def list_images(folder: str) -> list[str]:
    """Absolute paths (workers run in other directories) of the images under ``folder``;
    of its ``HR`` subfolder when it has one (a benchmark set laid out as HR/ beside
    LR_bicubic/: the low-resolution copies are not targets)."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    if os.path.isdir(os.path.join(folder, "HR")):
        folder = os.path.join(folder, "HR")
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return paths


def load_images(paths: list[str], min_side: int = 0) -> list[np.ndarray]:
    """uint8 RGB (H, W, 3) images (grey ones repeated to 3 channels), those with a side
    shorter than ``min_side`` left out. For small sets (validation); training streams
    from an ``ImageStore``."""
    return [im for im in (load_rgb(p)[0] for p in paths) if min(im.shape[:2]) >= min_side]


@torch.no_grad()
def validate(model: torch.nn.Module, images: list[np.ndarray], scale: int, device: torch.device) -> float:
    """Mean Y-PSNR (``scale`` px cropped) on HR images, LR made by the MATLAB-compatible bicubic."""
    was = model.training
    model.eval()
    vals = []
    for hr in images:
        hr = modcrop(hr, scale)
        h, w = hr.shape[:2]
        lr = bicubic_resize_uint8(hr, (h // scale, w // scale))
        sr = upscale_frames(model, lr[None], scale, device=device)[0]
        vals.append(psnr_y(sr, hr, crop=scale))
    model.train(was)
    return float(np.mean(vals))


def validation_windows(images: list[np.ndarray], scale: int, frames: int, patch: int = 96) -> list[tuple[torch.Tensor, np.ndarray]]:
    """One window per image (those large enough), synthesised from its centre with the
    training motion (fixed seeds), made once per run: (its 8-bit bicubic inputs (T, 3,
    p, p) in [0, 1], the centre frame's uint8 target)."""
    side = patch - patch % scale
    need = side + 2 * margin(frames, MAX_SPEED, LOCAL)
    out = []
    for k, img in enumerate(im for im in images if min(im.shape[:2]) >= need):
        top, left = (img.shape[0] - need) // 2, (img.shape[1] - need) // 2
        w = synth_window(img[top:top + need, left:left + need], frames, side, np.random.default_rng(k), MAX_SPEED, LOCAL)
        lr = (bicubic_window(w, scale, np.random.default_rng(k)).clamp(0, 1) * 255).round().div(255)  # the 8-bit frames a video gives
        out.append((lr, w[frames // 2].mul(255).round().byte().permute(1, 2, 0).numpy()))
    if not out:
        raise ValueError(f"no validation image has a side of {need} px for a {frames}-frame window")
    return out


@torch.no_grad()
def validate_windows(model: torch.nn.Module, windows: list[tuple[torch.Tensor, np.ndarray]], scale: int, device: torch.device) -> float:
    """Mean Y-PSNR (``scale`` px cropped) of a multi-frame model on ``validation_windows``."""
    was = model.training
    model.eval()
    vals = []
    for lr, hr in windows:
        sr = model(lr[None].to(device)).clamp(0, 1)[0].mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        vals.append(psnr_y(sr, hr, crop=scale))
    model.train(was)
    return float(np.mean(vals))


def init_from(model: torch.nn.Module, blob: bytes) -> str:
    """Copy weights from a checkpoint of the same architecture: all of them at the same
    scale; from a x2 model, all but the scale-dependent layers (EDSR's upsampler, DUF's
    last filter and residual convs: the EDSR paper's x3/x4 initialisation). Returns what
    was done."""
    src, meta = checkpoint.load(blob)
    a, mine = {"name": "edsr", **meta["arch"]}, dict(model.arch)
    if mine["name"] == "liif" and a["name"] == "edsr":
        from pipeline.models.liif import load_encoder

        return f"the encoder ({load_encoder(model, src.state_dict())} tensors) from an EDSR x{a['scale']} model"
    if describe(a, scale=False) != describe(mine, scale=False):
        raise ValueError(f"init checkpoint is {describe(a, scale=False)}, the model {describe(mine, scale=False)}")
    if a["scale"] == mine["scale"]:
        model.load_state_dict(src.state_dict())
        return f"all weights from a x{a['scale']} model"
    if a["scale"] != 2:
        raise ValueError(f"init checkpoint must be x2 or x{mine['scale']}, got x{a['scale']}")
    target = model.state_dict()
    state = {k: v for k, v in src.state_dict().items() if k in target and target[k].shape == v.shape and not k.startswith("tail.0.")}
    model.load_state_dict(state, strict=False)
    if mine["name"] == "edsr":
        return "all but the upsampler from a x2 model"
    return f"all but the scale-dependent layers ({len(target) - len(state)} tensors) from a x2 model"


def final_name(cfg: PretrainConfig) -> str:
    if cfg.model == "duf":
        return f"duf_{cfg.n_layers}x{cfg.n_feats}_x{cfg.scale}.pt"
    if cfg.model == "liif":
        return f"liif_{cfg.n_resblocks}x{cfg.n_feats}.pt"
    return f"edsr_{cfg.n_resblocks}x{cfg.n_feats}_x{cfg.scale}.pt"


def _say(msg: str) -> None:
    sys.stdout.write(msg + "\n")  # not print(): Ray Train patches print and logs it twice
    sys.stdout.flush()


def _history(out: str) -> list[dict[str, Any]]:
    try:
        with open(os.path.join(out, "history.jsonl"), encoding="utf-8") as fh:
            return [json.loads(ln) for ln in fh if ln.strip()]
    except FileNotFoundError:
        return []


def _state_bytes(model, opt, sched, step: int, cfg: PretrainConfig, seconds: float, cpu_seconds: float) -> bytes:
    buf = io.BytesIO()
    torch.save({
        "format": STATE_FORMAT, "step": step, "seconds": seconds, "train_cpu_seconds": cpu_seconds,
        "config": dataclasses.asdict(cfg),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
    }, buf)
    return buf.getvalue()


def training_state(model: torch.nn.Module, worker: Worker, cfg: PretrainConfig, state: bytes | None):
    """(the model on the worker's device, wrapped for data parallelism; Adam; its
    schedule; the saved state dict or None), with the saved model, optimiser and schedule
    loaded when resuming. The model moves to its device first: Adam's load_state_dict
    puts the saved moments on the parameters' device, so loading them before the move
    would leave them on the CPU and fail the first step on a GPU."""
    if all(p.dim() <= 4 for p in model.parameters()):  # (channels_last is for 2D convolutions; DUF's are 3D)
        model = model.to(memory_format=torch.channels_last)
    model = worker.wrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    if cfg.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr / 100)
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=0.5)
    st = None
    if state is not None:
        st = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
        unwrap(model).load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if cfg.lr_schedule == "cosine":  # a resume with another step count: the cosine now ends at the new last step
            sched.T_max = cfg.steps
    return model, opt, sched, st


def pretrain_loop(worker: Worker, config: dict[str, Any]) -> dict[str, Any]:
    """One worker of a pretraining (see the module docstring); rank 0 validates and writes."""
    cfg: PretrainConfig = config["cfg"]
    out = config["output"]
    device = worker.device
    images = ImageStore.open(config["images"])
    val_sets = {name: load_images(paths) for name, paths in config["val"].items()} if worker.main else {}
    if cfg.model == "duf":  # its validation windows are synthesised once, not at every validation
        val_sets = {name: validation_windows(ims, cfg.scale, cfg.frames) for name, ims in val_sets.items()}
    duf = cfg.model == "duf"
    archive = ArchiveDegradation(p_clean=cfg.p_clean) if cfg.flavour == "archive" else None
    make_lr = archive or bicubic_lr
    make_window_lr = archive.window if archive else bicubic_window
    clips = shot_windows([np.load(f, mmap_mode="r") for f in config["shots"]], cfg.frames, cfg.patch_size)
    if cfg.p_video and not clips:
        raise ValueError(f"p_video={cfg.p_video} needs training videos with shots of at least {cfg.frames} frames of "
                         f"{cfg.patch_size * cfg.video_downscale} px: got {len(config['videos'])} video(s) without any")
    n_video = round(cfg.batch_size * cfg.p_video)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch)
    step, seconds_before, cpu_before = 0, 0.0, 0.0
    state = config["state"]
    latest = os.path.join(out, "state.pt")
    if worker.world == 1 and os.path.exists(latest):  # a retried worker continues from what was saved since the launch
        # (data-parallel workers on other nodes may not see this file: they all start from the launch's state)
        with open(latest, "rb") as fh:
            state = fh.read()
    if state is None and config["init"] is not None:
        note = init_from(model, config["init"])
        if worker.main:
            _say(f"pretrain: initialised with {note}")
    model, opt, sched, st = training_state(model, worker, cfg, state)
    if st is not None:
        step, seconds_before, cpu_before = int(st["step"]), float(st["seconds"]), float(st.get("train_cpu_seconds", 0.0))
    inner = unwrap(model)
    sampler = PatchSampler(images, cfg.region)
    amp = training_autocast(cfg.precision, device)
    rng = np.random.default_rng([cfg.seed, worker.rank, step])  # a resumed run does not replay its patches

    t0 = time.perf_counter()
    cpu_run = 0.0  # this run's training CPU seconds (validation and saving excluded)
    start_step = step
    losses: list[torch.Tensor] = []  # on the device: read at each state save, not every step (each read syncs a GPU)
    model.train()

    def batches():
        while True:
            if cfg.model == "liif":
                yield sample_any_scale(sampler, cfg.batch_size, cfg.patch_size // LIIF_MAX_SCALE, rng)
            elif duf:
                yield sample_mixed_windows(sampler, clips, cfg.batch_size, n_video, cfg.patch_size, cfg.frames, cfg.scale, rng,
                                           make_window_lr, cfg.max_speed, LOCAL)
            else:
                yield sample_pairs(sampler, cfg.batch_size, cfg.patch_size, cfg.scale, rng, make_lr=make_lr)

    pairs = ahead(batches(), 2)  # the next batches are made in a thread while this one trains
    try:
        while step < cfg.steps:
            c0 = time.process_time()
            lr_t, hr_t = next(pairs)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                lr_t = lr_t.to(device, non_blocking=True)
                if cfg.model == "liif":  # a random subset of the target's pixels, one per input pixel (as LIIF trains)
                    size = tuple(hr_t.shape[-2:])
                    coords, hr_t = sample_queries(hr_t, lr_t.shape[-2] * lr_t.shape[-1], rng)
                    sr = model(lr_t.contiguous(memory_format=torch.channels_last), size=size, coords=coords.to(device))
                else:
                    sr = model(lr_t if duf else lr_t.contiguous(memory_format=torch.channels_last))
            loss = F.l1_loss(sr.float(), hr_t.to(device, non_blocking=True))
            bad = worker.agree(not bool(torch.isfinite(loss)))  # all ranks skip together (no half-done all-reduce); the step's one sync
            opt.zero_grad(set_to_none=True)
            if not bad:
                loss.backward()
                opt.step()
                losses.append(loss.detach())
            sched.step()
            step += 1
            cpu_run += time.process_time() - c0
            last = step == cfg.steps
            if step % cfg.checkpoint_every and not last:
                continue
            elapsed = seconds_before + time.perf_counter() - t0
            cpu_total = cpu_before + cpu_run * worker.world  # the CPU time of all workers (each measures its own)
            stop = (cfg.max_seconds > 0 and time.perf_counter() - t0 >= cfg.max_seconds) or (
                cfg.max_cpu_seconds > 0 and cpu_total >= cfg.max_cpu_seconds)
            stop = worker.agree(stop)
            mean_loss = float(torch.stack(losses).mean()) if losses else None
            losses.clear()  # on every rank
            if worker.main:
                metrics: dict[str, Any] = {"step": step, "loss": mean_loss,
                                           "lr": sched.get_last_lr()[0], "seconds": round(elapsed, 1), "train_cpu_seconds": round(cpu_total, 1)}
                if val_sets and (step % cfg.val_every == 0 or last or stop):
                    for name, ims in val_sets.items():
                        score = validate_windows(inner, ims, cfg.scale, device) if duf else validate(inner, ims, cfg.scale, device)
                        metrics[f"val_{name}"] = round(score, 4)
                    metrics["val_psnr_y"] = metrics[f"val_{next(iter(val_sets))}"]
                with open(os.path.join(out, "history.jsonl"), "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(metrics) + "\n")
                Store().write_bytes(os.path.join(out, "state.pt"), _state_bytes(inner, opt, sched, step, cfg, elapsed, cpu_total))
                vals = "  ".join(f"{k[4:]} {v:.2f} dB" for k, v in metrics.items() if k.startswith("val_") and k != "val_psnr_y")
                _say(f"pretrain: step {step}/{cfg.steps}  L1 {metrics['loss'] or float('nan'):.4f}  lr {metrics['lr']:.2e}  "
                     f"{(step - start_step) / (time.perf_counter() - t0):.2f} steps/s  {cpu_total / 3600:.2f} CPU-h" + (f"  {vals}" if vals else ""))
            if stop and not last:
                if worker.main:
                    _say(f"pretrain: stopping at step {step} (time budget); run again to continue")
                return {"step": step, "finished": False}
    finally:
        pairs.close()  # stops the pair thread
    if worker.main:
        hist = _history(out)
        final = hist[-1] if hist else {}
        prov = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("max_seconds", "max_cpu_seconds", "threads", "device", "workers")}
        prov.update(trained_by="jobs.pretrain", steps_done=step, seconds=final.get("seconds"), train_cpu_seconds=final.get("train_cpu_seconds"),
                    workers=worker.world, device=str(device), final_loss=final.get("loss"), train_images=config["train_name"],
                    train_videos=[os.path.basename(v) for v in config["videos"]] if cfg.p_video else [],
                    train_image_count=len(images), precision=cfg.precision if cfg.precision != "auto" else f"auto ({'bf16' if amp else 'fp32'} in the last slice)",
                    val={k[4:]: v for k, v in final.items() if k.startswith("val_") and k != "val_psnr_y"})
        checkpoint.save(inner, os.path.join(out, final_name(cfg)), prov)
        _say(f"pretrain: done: {os.path.join(out, final_name(cfg))}")
    return {"step": step, "finished": True}


def pretrain(cfg: PretrainConfig, data: list[str] | str, output: str, val: dict[str, str] | str | None = None, where: str | None = None,
             videos: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) a pretraining into ``output``; returns a summary dict.

    ``data``: image folder(s); ``val``: {name: folder} (or one folder) of validation
    images; ``videos``: video files a DUF model's windows are also cut from
    (``p_video``). ``where``: "local" (this process) or "ray"; None: local for one
    worker when no cluster is named by RAY_ADDRESS, else Ray.
    """
    data = [data] if isinstance(data, str) else list(data)
    val = {os.path.basename(os.path.normpath(val.rstrip("/").removesuffix("/HR"))): val} if isinstance(val, str) else dict(val or {})
    train_paths = [p for d in data for p in list_images(d)]
    videos = [os.path.abspath(v) for v in videos or []]
    missing = [v for v in videos if not os.path.isfile(v)]
    if missing:
        raise FileNotFoundError(f"training video(s) not found: {', '.join(missing)}")
    if cfg.p_video and not videos:
        raise ValueError(f"p_video={cfg.p_video}: give the training videos (pretrain(..., videos=[...]), make_weights --video)")
    val_paths = {name: list_images(folder) for name, folder in val.items()}
    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    state_path = os.path.join(output, "state.pt")
    state = None
    if os.path.exists(state_path):
        with open(state_path, "rb") as fh:
            state = fh.read()
        st = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
        saved = {k: v for k, v in st["config"].items() if k not in PretrainConfig.RESUMABLE}
        now = {k: v for k, v in dataclasses.asdict(cfg).items() if k in saved}
        if saved != now:
            diff = {k: (saved[k], now[k]) for k in saved if saved[k] != now[k]}
            raise ValueError(f"{state_path} was made with another config {diff}: use another --output or the same settings")
        done = int(st["step"])
        if done >= cfg.steps and os.path.exists(os.path.join(output, final_name(cfg))):
            print(f"pretrain: already complete ({done} steps): {os.path.join(output, final_name(cfg))}", flush=True)
            return {"step": done, "checkpoint": os.path.join(output, final_name(cfg)), "resumed": True}
        if cfg.max_cpu_seconds and float(st.get("train_cpu_seconds", 0.0)) >= cfg.max_cpu_seconds:
            print(f"pretrain: the CPU budget ({cfg.max_cpu_seconds:g} s) is spent at step {done}: raise max_cpu_seconds to continue", flush=True)
            return {"step": done, "checkpoint": None, "resumed": True}
        print(f"pretrain: resuming from step {done}/{cfg.steps} ({state_path})", flush=True)
    init = None
    if state is None and cfg.init:
        with open(checkpoint.resolve(cfg.init, cfg.scale) if cfg.init.startswith("builtin:") else cfg.init, "rb") as fh:
            init = fh.read()
    images = ImageStore.build(train_paths, os.path.join(output, "images"), min_side=cfg.region)
    if where is None:
        where = "local" if cfg.workers == 1 and not os.environ.get("RAY_ADDRESS") else "ray"
    if where == "ray":
        import ray

        from pipeline.run.session import connect

        connect()
        gpu = cfg.device == "gpu" or (cfg.device == "auto" and ray.cluster_resources().get("GPU", 0) >= 1)
        cpus = ray.cluster_resources().get("CPU", 1)
        if not gpu and cfg.workers > cpus:
            raise ValueError(f"workers={cfg.workers} CPU workers cannot be placed on a cluster with {int(cpus)} CPU(s)")
    else:
        gpu = cfg.device == "gpu" or (cfg.device == "auto" and torch.cuda.is_available())
    print(f"pretrain: {describe(cfg.arch, scale=False)} x{cfg.scale} ({cfg.flavour}), {len(images)} training images "
          f"(of {len(train_paths)}; sides >= {cfg.region} px), validation: "
          f"{', '.join(f'{k} ({len(v)})' for k, v in val_paths.items()) or 'none'}, {cfg.workers} {'GPU' if gpu else 'CPU'} worker(s), {where}", flush=True)
    t0 = time.perf_counter()
    shots = shot_store(videos, os.path.join(output, "clips"), cfg.video_downscale) if cfg.p_video else []  # decoded once, not per process
    launch(pretrain_loop, {
        "cfg": cfg, "output": output, "state": state, "init": init, "images": images.folder, "val": val_paths, "videos": videos,
        "shots": shots,
        "train_name": ", ".join(os.path.abspath(d) for d in data),
    }, workers=cfg.workers, gpu=gpu, threads=cfg.threads or None, where=where, name="pretrain")
    hist = _history(output)
    last = hist[-1] if hist else {}
    final = os.path.join(output, final_name(cfg))
    done = last.get("step") == cfg.steps and os.path.exists(final)
    return {"step": last.get("step"), "val_psnr_y": last.get("val_psnr_y"), "seconds": time.perf_counter() - t0,
            "checkpoint": final if done else None, "resumed": state is not None}
