"""Self-transfer fine-tuning: a video's own frames are the high-resolution targets, their
downscales (degraded as ``train.degrade`` says) the inputs.

``finetune`` is the plain loop (tests and the study call it directly); ``finetune_loop``
is its worker for ``pipeline.train.launch`` (a Ray task for one worker, Ray Train for
several), whose rank 0 commits the checkpoint to the run's store.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import TrainConfig
from pipeline.datasets.degrade import SpecDegradation, VideoDegradation, self_pair_codec
from pipeline.datasets.patches import MakeLR, PatchSampler, effective_patch, sample_pairs
from pipeline.datasets.sequences import sample_video_windows
from pipeline.inference import frames_in, training_autocast
from pipeline.models import build_model, checkpoint
from pipeline.overlap import ahead
from pipeline.train.launch import Worker, unwrap


def build_start_model(arch: dict[str, Any], start: bytes | None, seed: int) -> torch.nn.Module:
    """The starting model: the pretrained checkpoint, or a fresh initialisation of ``arch``."""
    if start is not None:
        model, _ = checkpoint.load(start)
        model.train()
        return model
    torch.manual_seed(seed)
    return build_model(arch)


def too_small_for_self_pairs(width: int, height: int, scale: int, min_side: int) -> str | None:
    """Why frames of ``width`` x ``height`` should not be fine-tuned on at ``scale``
    (their self-pairs' inputs have a short side below ``min_side`` px), or None."""
    w, h = int(width / scale), int(height / scale)
    if min_side and min(w, h) < min_side:
        return (f"frames too small to fine-tune on: their self-pairs' inputs are {w}x{h} px, "
                f"below train.min_pair_side={min_side}")
    return None


def too_soft_for_self_pairs(detail: float | None, min_detail: float) -> str | None:
    """Why frames whose finest octave holds ``detail`` of the next octave's energy (the
    estimate's ``detail``) should not be fine-tuned on (below ``min_detail``: their
    self-pairs' targets are soft), or None."""
    if min_detail and detail is not None and detail < min_detail:
        return (f"frames too soft to fine-tune on: their finest octave holds {detail:.3f} of the next octave's energy, "
                f"below train.min_detail={min_detail:g}; self-pairs with them as targets teach soft output")
    return None


def model_reason(stats: dict[str, Any], keep_margin: float) -> str:
    """Why the fine-tune's ``stats["model_used"]`` restores the video, for the report."""
    if "val_first" not in stats:
        return "fine-tuned; no held-out frames (train.holdout=0 or a one-frame video): the fine-tuned weights are always used"
    first, best = stats["val_first"], stats["val_best"]
    change = f"held-out self-pair L1 {first:.4f} (start) -> {best:.4f} (best, {100 * (best / first - 1):+.1f} %)" if first else f"held-out self-pair L1 {first:.4f} -> {best:.4f}"
    if stats.get("model_used") == "pretrained":
        return f"{change}: not at least train.keep_margin={keep_margin:g} better, so the starting model (do no harm)"
    return f"{change}: better by more than train.keep_margin={keep_margin:g}"


def freeze_except_last(model: torch.nn.Module, k: int) -> int:
    """Train only the last ``k`` residual blocks, the body's closing conv and the
    upsampler (tail); returns the number of trainable parameters. ``k`` = 0: all
    (but the frozen mean shifts)."""
    if k <= 0:
        for p in model.parameters():
            p.requires_grad_(True)
        for shift in ("sub_mean", "add_mean"):  # EDSR's fixed mean shifts (other models have none)
            if hasattr(model, shift):
                getattr(model, shift).requires_grad_(False)
    else:
        model.requires_grad_(False)
        blocks = list(model.body.children())
        for m in blocks[-(k + 1):] + [model.tail]:
            m.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def finetune(
    model: torch.nn.Module,
    frames: list[np.ndarray],
    cfg: TrainConfig,
    scale: int,
    device: torch.device,
    seed: int,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    worker: Worker | None = None,
    make_lr: MakeLR | None = None,
    best: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on self-pairs from ``frames`` with ``cfg``'s choices
    (loss terms, patches, frozen layers, augmentation, degradations, multi-scale pairs),
    within ``cfg.steps`` and ``cfg.max_seconds``; with ``cfg.holdout`` frames held out,
    stops early when validation stops improving and keeps the best weights.

    ``worker``: the data-parallel worker running this (the model is then already
    wrapped); ranks skip a non-finite step and stop together. ``make_lr``: how a pair's
    input is made (default: ``cfg.degrade``'s named degradations, or the clean bicubic
    downscale for "auto" without an estimate).

    Do no harm: with ``cfg.holdout`` the starting model is scored on the held-out
    self-pairs first; the fine-tuned weights are kept only when their best score beats
    that by ``cfg.keep_margin``, else the starting weights are put back
    (``stats["model_used"]`` says which). ``best``: a dict that receives the best
    fine-tuned weights (``"state"``) whichever are kept (for measuring the choice).

    Returns {"loss_first", "loss_last", "steps", "seconds", "patch", "trainable",
    "val_first", "val_best", "best_step"} (losses averaged over the first / last 10% of
    steps; val_* is the L1 on the held-out self-pairs, absent without holdout).
    """
    from pipeline.losses import Objective

    worker = worker or Worker(device=device)
    rng = np.random.default_rng(seed)
    frames, held = _split_holdout(frames, cfg.holdout)
    inner = unwrap(model)
    if getattr(inner, "arch", {}).get("name") == "liif":
        inner.scale = float(scale)  # a continuous model trains at the video's scale (a pair's input is 1/scale of its target)
    multi = frames_in(inner) > 1  # a multi-frame model: ``frames`` are windows (T, H, W, 3) of consecutive frames
    if multi and cfg.not_for_windows():
        raise ValueError("a multi-frame model fine-tunes with the defaults only so far: train.loss=l1, uniform patches, no multiscale, "
                         f"no train.degrade, no train.train_last (set: {', '.join(cfg.not_for_windows())})")
    patch = effective_patch([w[len(w) // 2] for w in frames] if multi else frames, cfg.patch_size, scale)
    trainable = freeze_except_last(inner, cfg.train_last)
    model.train().to(device)
    objective = Objective.build(cfg.loss, device, cfg.vgg_weights, cfg.lr)
    sampler = None if multi else PatchSampler(frames, patch, cfg.patches, cfg.multiscale)  # (windows: sample_video_windows)
    if make_lr is None:
        make_lr = SpecDegradation("" if auto_parts(cfg.degrade) else cfg.degrade)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.999))
    val = None
    if held:  # the same pairs on every rank
        if multi:
            side = min(patch, effective_patch([w[len(w) // 2] for w in held], patch, scale))
            val = sample_video_windows(held, 16, side, scale, np.random.default_rng(cfg.seed + 7919), augment=False)
        else:
            val = _validation_pairs(held, patch, scale, cfg.seed, make_lr)
    stats: dict[str, Any] = {"patch": float(patch), "trainable": float(trainable)}
    best_state, bad = None, 0
    start_state = None
    if val is not None:  # step 0: the starting model's score, the bar the fine-tune must clear
        stats["val_first"] = stats["val_best"] = _val_loss(model, val, device)
        stats["best_step"] = 0.0
        start_state = {k: t.detach().clone() for k, t in inner.state_dict().items()}
    native: PatchSampler | None = None
    skipped = 0  # steps whose loss was not finite (skipped on every rank, not applied)
    losses: list[torch.Tensor] = []  # on the device: read once at the end (each read syncs a GPU)
    native_rng = np.random.default_rng(seed + 1)  # the pair thread owns rng

    def batches():
        while True:
            if multi:
                yield sample_video_windows(frames, cfg.batch_size, patch, scale, rng, augment=cfg.augment)
            else:
                yield sample_pairs(sampler, cfg.batch_size, patch, scale, rng, augment=cfg.augment, make_lr=make_lr)

    amp = training_autocast(cfg.precision, device)
    stats["precision"] = "bf16" if amp is not None else "fp32"
    pairs = ahead(batches(), 2) if objective.needs_pairs else None  # the next pairs are made while this step trains
    try:
        t0 = time.perf_counter()
        step = 0
        while step < cfg.steps:
            step += 1
            out = hr = out_native = None
            if pairs is not None:
                lr, hr = next(pairs)
                lr, hr = lr.to(device, non_blocking=True), hr.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    out = model(lr)
                out = out.float()  # the loss (and a discriminator) in fp32
                if objective.disc is not None:
                    objective.discriminator_step(out, hr)
            if objective.needs_native:
                if native is None:
                    side = min(-(-192 // scale), min(min(f.shape[:2]) for f in frames))  # NIQE: 96 px blocks, 4 per output
                    native = PatchSampler(frames, side, "texture")  # flat patches (letterbox, fades) break NIQE's statistics
                out_native = model(torch.from_numpy(np.stack([np.ascontiguousarray(native.sample(native_rng)) for _ in range(max(2, cfg.batch_size // 4))]))
                                   .permute(0, 3, 1, 2).float().div_(255).to(device))
            try:
                loss, _ = objective.generator_loss(out, hr, out_native)
            except (torch.linalg.LinAlgError, RuntimeError):  # NIQE on a degenerate patch
                loss = None
            if worker.agree(loss is None or not bool(torch.isfinite(loss))):
                skipped += 1
                if skipped > max(10, cfg.steps // 10):
                    raise RuntimeError(f"fine-tune: {skipped} steps without a usable loss (NIQE on degenerate patches, or diverged)")
                opt.zero_grad(set_to_none=True)
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            if on_step:
                on_step(step, losses[-1])  # a tensor: the callback reads it only when it prints
            stop = bool(cfg.max_seconds) and time.perf_counter() - t0 >= cfg.max_seconds
            if val is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                v = _val_loss(model, val, device)
                if v < stats["val_best"]:
                    stats.update(val_best=v, best_step=float(step))
                    best_state, bad = {k: t.detach().clone() for k, t in inner.state_dict().items()}, 0
                else:
                    bad += 1
                    stop = stop or bad >= cfg.patience
            if (cfg.max_seconds or val is not None) and worker.agree(stop):
                break
    finally:
        if pairs is not None:
            pairs.close()  # stops the pair thread
    stats["model_used"] = "finetuned"
    if best is not None:
        best["state"] = best_state if best_state is not None else {k: t.detach().clone() for k, t in inner.state_dict().items()}
    if val is not None:
        if best_state is not None and stats["val_best"] < stats["val_first"] * (1 - cfg.keep_margin):
            inner.load_state_dict(best_state)
        else:  # do no harm: the fine-tune did not clearly beat the starting model on the held-out pairs
            inner.load_state_dict(start_state)
            stats["model_used"] = "pretrained"
    stats["model_reason"] = model_reason(stats, cfg.keep_margin)
    if not losses:
        raise RuntimeError("fine-tune: no step had a finite loss")
    k = max(1, len(losses) // 10)
    stats.update(loss_first=float(torch.stack(losses[:k]).mean()), loss_last=float(torch.stack(losses[-k:]).mean()), steps=float(step),
                 seconds=time.perf_counter() - t0, skipped_steps=float(skipped), train_frames=float(len(frames)),
                 multiscale_used=float(sampler is not None and sampler.multiscale))
    return stats


def _split_holdout(frames: list[np.ndarray], n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training frames, ``n`` evenly spaced held-out frames); at least one frame trains,
    so a video of one frame holds none out."""
    if n <= 0 or len(frames) < 2:  # (a one-frame video trains on its frame: nothing to hold out)
        return frames, []
    n = min(n, len(frames) - 1)
    idx = set(np.linspace(0, len(frames) - 1, n).round().astype(int).tolist())
    return [f for i, f in enumerate(frames) if i not in idx], [f for i, f in enumerate(frames) if i in idx]


def _validation_pairs(held: list[np.ndarray], patch: int, scale: int, seed: int, make_lr: MakeLR, count: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-pairs of the held-out frames, made like the training pairs (same degradation), fixed by the seed."""
    rng = np.random.default_rng(seed + 7919)
    return sample_pairs(held, count, min(patch, effective_patch(held, patch, scale)), scale, rng, augment=False, make_lr=make_lr)


@torch.no_grad()
def _val_loss(model: torch.nn.Module, val: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> float:
    was = model.training
    model.eval()
    lr, hr = val
    v = float(F.l1_loss(model(lr.to(device)), hr.to(device)))
    model.train(was)
    return v


AUTO_PARTS = ("blur", "noise", "codec")


def auto_parts(degrade: str) -> tuple[str, ...] | None:
    """The parts of the estimate a ``train.degrade`` of "auto" or "auto:blur,codec" uses
    (None: not an auto setting)."""
    if degrade == "auto":
        return AUTO_PARTS
    if not degrade.startswith("auto:"):
        return None
    parts = tuple(p.strip() for p in degrade[5:].split(",") if p.strip())
    unknown = [p for p in parts if p not in AUTO_PARTS]
    if not parts or unknown:
        raise ValueError(f"train.degrade {degrade!r}: auto:<parts> takes some of {', '.join(AUTO_PARTS)}")
    return parts


def video_degradation(d: dict[str, Any] | None, parts: tuple[str, ...] = AUTO_PARTS) -> MakeLR | None:
    """The self-pair maker of a video's estimated degradation (``pipeline.estimate``),
    with only the estimate's ``parts`` (blur, noise, codec)."""
    if not d:
        return None
    codec, quality = self_pair_codec(d["codec"], d["qp"]) if "codec" in parts else (None, None)
    return VideoDegradation(blur_sigma=d["blur_sigma"] if "blur" in parts else 0.0,
                            noise_sigma=d["noise_sigma"] if "noise" in parts else 0.0, codec=codec, quality=quality)


def self_pairs(degrade: str, estimated: dict[str, Any] | None) -> MakeLR | None:
    """The self-pair maker ``finetune`` gets for a ``train.degrade`` setting: the video's
    estimated degradation (its parts) for "auto[:parts]", else None (``cfg.degrade``'s own)."""
    parts = auto_parts(degrade)
    return video_degradation(estimated, parts) if parts else None


def finetune_loop(worker: Worker, config: dict[str, Any]) -> dict[str, Any]:
    """Launcher worker of a video's fine-tune: fetch the frames, build the starting model,
    train; rank 0 commits the checkpoint (with the stats in its provenance) straight to
    the run's store, so nothing depends on a file system shared between nodes."""
    import ray

    cfg: TrainConfig = config["train"]
    frames = config["frames"]
    frames = ray.get(frames) if isinstance(frames, ray.ObjectRef) else frames
    model = build_start_model(config["arch"], config["start"], cfg.seed)
    freeze_except_last(model, cfg.train_last)  # before DDP wraps it: DDP records the trainable parameters once
    model = worker.wrap(model)
    label = config["label"]
    every = max(1, cfg.steps // 10)
    t0 = time.perf_counter()

    def on_step(step: int, loss: torch.Tensor) -> None:
        if worker.main and (step % every == 0 or step == cfg.steps):
            loss = float(loss)
            rate = step / (time.perf_counter() - t0)
            # sys.stdout.write, not print: Ray Train patches print() and would log each line twice.
            sys.stdout.write(f"[{label}] train: step {step}/{cfg.steps}  L1 {loss:.4f}  {rate:.1f} steps/s\n")
            sys.stdout.flush()

    stats = finetune(model, frames, cfg, config["scale"], worker.device, seed=cfg.seed + 1000 * worker.rank, on_step=on_step, worker=worker,
                     make_lr=self_pairs(cfg.degrade, config["provenance"].get("degradation")))
    if worker.main:
        prov = {**stats, **config["provenance"], "workers": worker.world, "device": str(worker.device)}  # train_frames: as extracted
        config["store"].write_bytes(config["checkpoint_uri"], checkpoint.to_bytes(unwrap(model), prov))
    return stats
