"""Self-transfer fine-tuning: a video's own frames are the high-resolution targets,
their bicubic downscales the inputs.

``sample_pairs`` and ``finetune`` are plain functions (tests call them without Ray);
``train_with_ray`` runs the same loop as a Ray Train ``TorchTrainer`` on GPU workers
when the cluster has GPUs and on CPU workers otherwise.
"""

from __future__ import annotations

import io
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import TrainConfig, parse_degrade
from pipeline.metrics.resize import bicubic_resize, bicubic_resize_uint8
from pipeline.models import checkpoint
from pipeline.models.edsr import EDSR
from pipeline.storage import Store


def reservoir(frames, k: int, seed: int) -> list[np.ndarray]:
    """A uniform sample of at most ``k`` items of an iterator, in stream order,
    holding at most ``k`` in memory."""
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, np.ndarray]] = []
    for i, f in enumerate(frames):
        if i < k:
            kept.append((i, f))
        else:
            j = int(rng.integers(0, i + 1))
            if j < k:
                kept[j] = (i, f)
    return [f for _, f in sorted(kept, key=lambda t: t[0])]


def drop_near_duplicates(frames: Iterable[np.ndarray], threshold: float) -> Iterator[np.ndarray]:
    """Frames whose mean absolute difference from the last kept frame (on a 1/4-size grey
    copy, 0-255 scale) is at least ``threshold``; the first frame is always kept."""
    last = None
    for f in frames:
        grey = f[::4, ::4].mean(axis=2, dtype=np.float32)
        if threshold <= 0 or last is None or grey.shape != last.shape or float(np.abs(grey - last).mean()) >= threshold:
            last = grey
            yield f


def effective_patch(frames: list[np.ndarray], patch: int, scale: int) -> int:
    """The HR patch side: ``patch``, or the largest multiple of ``scale`` that fits the
    smallest frame when frames are smaller than that."""
    fit = min(min(f.shape[0], f.shape[1]) for f in frames)
    p = min(patch, fit - fit % scale)
    if p < 2 * scale:
        raise ValueError(f"frames of {fit} px are too small to train x{scale} (need at least {2 * scale} px)")
    return p


def texture_grid(f: np.ndarray, patch: int) -> tuple[np.ndarray, int, int]:
    """Gradient energy (sum of |dx|+|dy| of the grey frame) of every ``patch``-side
    window on a grid of stride patch/4, from an integral image: (energies, flattened
    row-major; the grid's column count; the stride)."""
    g = f.mean(axis=2, dtype=np.float32)
    energy = np.zeros_like(g)
    energy[:, 1:] += np.abs(np.diff(g, axis=1))
    energy[1:, :] += np.abs(np.diff(g, axis=0))
    ii = np.pad(energy.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, patch // 4)
    ys = np.arange(0, g.shape[0] - patch + 1, step)
    xs = np.arange(0, g.shape[1] - patch + 1, step)
    p = patch
    e = ii[ys[:, None] + p, xs[None, :] + p] - ii[ys[:, None], xs[None, :] + p] - ii[ys[:, None] + p, xs[None, :]] + ii[ys[:, None], xs[None, :]]
    return np.maximum(e.ravel(), 0.0), len(xs), step


class PatchSampler:
    """Random patches of frames: uniform positions, or positions weighted by the patch's
    gradient energy (``texture``), so flat sky and black borders rarely make a batch.
    With ``multiscale`` half of the patches come from the frames downscaled x2."""

    def __init__(self, frames: list[np.ndarray], patch: int, mode: str = "uniform", multiscale: bool = False) -> None:
        self.patch, self.mode = patch, mode
        self.sources = [frames]
        if multiscale:
            half = [bicubic_resize_uint8(f, (f.shape[0] // 2, f.shape[1] // 2)) for f in frames if min(f.shape[:2]) // 2 >= patch]
            if half:
                self.sources.append(half)
        self.multiscale = len(self.sources) > 1  # False when the frames are too small to halve
        self._weights = [[self._texture(f) for f in src] for src in self.sources] if mode == "texture" else None

    def _texture(self, f: np.ndarray) -> tuple[np.ndarray, int]:
        """Patch sampling probabilities on the texture grid, and the grid's column count."""
        energy, cols, _ = texture_grid(f, self.patch)
        w = energy + 1e-6 * self.patch * self.patch  # flat patches stay possible, just rare
        return w / w.sum(), cols

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        s = int(rng.integers(len(self.sources)))
        i = int(rng.integers(len(self.sources[s])))
        f = self.sources[s][i]
        if self._weights is None:
            y = int(rng.integers(0, f.shape[0] - self.patch + 1))
            x = int(rng.integers(0, f.shape[1] - self.patch + 1))
        else:
            w, cols = self._weights[s][i]
            k = int(rng.choice(len(w), p=w))
            step = max(1, self.patch // 4)
            y, x = (k // cols) * step, (k % cols) * step
        return f[y:y + self.patch, x:x + self.patch]


def degrade_lr(lr: torch.Tensor, spec: dict[str, float], rng: np.random.Generator) -> torch.Tensor:
    """Degrade input patches (each degradation with probability 0.5 per patch): Gaussian
    blur (sigma px), Gaussian noise (sigma on the 0-255 scale), JPEG (quality)."""
    if not spec:
        return lr
    out = []
    for img in lr:
        if "blur" in spec and rng.random() < 0.5:
            sigma = spec["blur"]
            r = max(1, min(int(math.ceil(3 * sigma)), min(img.shape[-2:]) - 1))  # reflect padding needs r < side
            k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma * sigma))
            k = (k / k.sum()).to(img)
            x = F.pad(img[None], (r, r, r, r), mode="reflect")
            x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
            img = F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]
        if "noise" in spec and rng.random() < 0.5:
            img = img + torch.from_numpy(rng.normal(0, spec["noise"] / 255, img.shape).astype(np.float32))
        if "jpeg" in spec and rng.random() < 0.5:
            from PIL import Image

            buf = io.BytesIO()
            arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            Image.fromarray(arr).save(buf, format="JPEG", quality=int(spec["jpeg"]))
            img = torch.from_numpy(np.asarray(Image.open(buf).convert("RGB"))).permute(2, 0, 1).float() / 255
        out.append(img.clamp(0, 1))
    return torch.stack(out)


def sample_pairs(
    frames: list[np.ndarray] | PatchSampler,
    batch: int,
    patch: int,
    scale: int,
    rng: np.random.Generator,
    augment: bool = True,
    degrade: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training pairs from uint8 (H, W, 3) frames (or a ``PatchSampler``).

    Returns (lr, hr): float (batch, 3, patch/scale, patch/scale) and (batch, 3, patch, patch)
    in [0, 1]. The target is a patch of a frame, flipped and rotated by a random multiple
    of 90 degrees when ``augment``; the input is its bicubic downscale, then degraded.
    """
    sampler = frames if isinstance(frames, PatchSampler) else PatchSampler(frames, patch)
    hrs = []
    for _ in range(batch):
        p = sampler.sample(rng)
        if augment:
            if rng.random() < 0.5:
                p = p[:, ::-1]
            if rng.random() < 0.5:
                p = p[::-1, :]
            p = np.rot90(p, int(rng.integers(4)))
        hrs.append(np.ascontiguousarray(p))
    hr = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).float().div_(255)
    lr = bicubic_resize(hr, (patch // scale, patch // scale))
    return degrade_lr(lr, degrade or {}, rng), hr


def build_start_model(arch: dict[str, Any], start: bytes | None, seed: int) -> EDSR:
    """The starting model: the pretrained checkpoint, or a fresh initialisation."""
    if start is not None:
        model, _ = checkpoint.load(start)
        model.train()
        return model
    torch.manual_seed(seed)
    return EDSR(**arch)


def freeze_except_last(model: EDSR, k: int) -> int:
    """Train only the last ``k`` residual blocks, the body's closing conv and the
    upsampler (tail); returns the number of trainable parameters. ``k`` = 0: all."""
    if k <= 0:
        for p in model.parameters():
            p.requires_grad_(True)
        model.sub_mean.requires_grad_(False)
        model.add_mean.requires_grad_(False)
    else:
        model.requires_grad_(False)
        blocks = list(model.body.children())
        for m in blocks[-(k + 1):] + [model.tail]:
            m.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _agree(flag: bool, device: torch.device) -> bool:
    """True on every rank when any rank says so (data-parallel workers stop together).
    The tensor lives on ``device``: NCCL reduces CUDA tensors only."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())
    return flag


def finetune(
    model: torch.nn.Module,
    frames: list[np.ndarray],
    cfg: TrainConfig,
    scale: int,
    device: torch.device,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Fine-tune ``model`` in place on self-pairs from ``frames`` with ``cfg``'s choices
    (loss terms, patches, frozen layers, augmentation, degradations, multi-scale pairs),
    within ``cfg.steps`` and ``cfg.max_seconds``; with ``cfg.holdout`` frames held out,
    stops early when validation stops improving and keeps the best weights.

    Returns {"loss_first", "loss_last", "steps", "seconds", "patch", "trainable",
    "val_first", "val_best", "best_step"} (losses averaged over the first / last 10% of
    steps; val_* is the L1 on the held-out self-pairs, absent without holdout).
    """
    from pipeline.losses import Objective

    rng = np.random.default_rng(seed)
    frames, held = _split_holdout(frames, cfg.holdout)
    patch = effective_patch(frames, cfg.patch_size, scale)
    inner = model.module if hasattr(model, "module") else model
    trainable = freeze_except_last(inner, cfg.train_last)
    model.train().to(device)
    objective = Objective.build(cfg.loss, device, cfg.vgg_weights, cfg.lr)
    sampler = PatchSampler(frames, patch, cfg.patches, cfg.multiscale)
    degrade = parse_degrade(cfg.degrade)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.999))
    val = _validation_pairs(held, patch, scale, cfg.seed) if held else None  # the same pairs on every rank
    stats: dict[str, float] = {"patch": float(patch), "trainable": float(trainable)}
    best_state, bad = None, 0
    native: PatchSampler | None = None
    skipped = 0  # steps whose loss was not finite (skipped, not applied)
    losses = []
    t0 = time.perf_counter()
    step = 0
    while step < cfg.steps:
        step += 1
        out = hr = out_native = None
        if objective.needs_pairs:
            lr, hr = sample_pairs(sampler, cfg.batch_size, patch, scale, rng, augment=cfg.augment, degrade=degrade)
            lr, hr = lr.to(device), hr.to(device)
            out = model(lr)
            if objective.disc is not None:
                objective.discriminator_step(out, hr)
        if "niqe" in objective.weights:
            if native is None:
                side = min(-(-192 // scale), min(min(f.shape[:2]) for f in frames))  # NIQE: 96 px blocks, 4 per output
                native = PatchSampler(frames, side, "texture")  # flat patches (letterbox, fades) break NIQE's statistics
            out_native = model(torch.from_numpy(np.stack([np.ascontiguousarray(native.sample(rng)) for _ in range(max(2, cfg.batch_size // 4))]))
                               .permute(0, 3, 1, 2).float().div_(255).to(device))
        try:
            loss, _ = objective.generator_loss(out, hr, out_native)
        except (torch.linalg.LinAlgError, RuntimeError) as e:  # NIQE on a degenerate patch
            loss, skipped = None, skipped + 1
            if skipped > max(10, cfg.steps // 10):
                raise RuntimeError(f"fine-tune: {skipped} steps without a usable loss, last: {e}") from e
        if loss is None or not torch.isfinite(loss):
            skipped += loss is not None
            opt.zero_grad(set_to_none=True)
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step:
            on_step(step, losses[-1])
        stop = bool(cfg.max_seconds) and time.perf_counter() - t0 >= cfg.max_seconds
        if val is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            v = _val_loss(model, val, device)
            stats.setdefault("val_first", v)
            if v < stats.get("val_best", float("inf")):
                stats.update(val_best=v, best_step=float(step))
                best_state, bad = {k: t.detach().clone() for k, t in inner.state_dict().items()}, 0
            else:
                bad += 1
                stop = stop or bad >= cfg.patience
        if (cfg.max_seconds or val is not None) and _agree(stop, device):
            break
    if best_state is not None:
        inner.load_state_dict(best_state)
    if not losses:
        raise RuntimeError("fine-tune: no step had a finite loss")
    k = max(1, len(losses) // 10)
    stats.update(loss_first=float(np.mean(losses[:k])), loss_last=float(np.mean(losses[-k:])), steps=float(step),
                 seconds=time.perf_counter() - t0, skipped_steps=float(skipped), train_frames=float(len(frames)),
                 multiscale_used=float(sampler.multiscale))
    return stats


def _split_holdout(frames: list[np.ndarray], n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training frames, ``n`` evenly spaced held-out frames); at least one frame trains."""
    if n <= 0:
        return frames, []
    if len(frames) < 2:
        raise ValueError(f"train.holdout={n} needs at least 2 training frames, the video gave {len(frames)}")
    n = min(n, len(frames) - 1)
    idx = set(np.linspace(0, len(frames) - 1, n).round().astype(int).tolist())
    return [f for i, f in enumerate(frames) if i not in idx], [f for i, f in enumerate(frames) if i in idx]


def _validation_pairs(held: list[np.ndarray], patch: int, scale: int, seed: int, count: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed + 7919)
    return sample_pairs(held, count, min(patch, effective_patch(held, patch, scale)), scale, rng, augment=False)


@torch.no_grad()
def _val_loss(model: torch.nn.Module, val: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> float:
    was = model.training
    model.eval()
    lr, hr = val
    v = float(F.l1_loss(model(lr.to(device)), hr.to(device)))
    model.train(was)
    return v


# ---------------------------------------------------------------------------
# Ray Train

def _train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop: data-parallel fine-tune; rank 0 writes the checkpoint."""
    import ray
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg: TrainConfig = config["train"]
    frames = ray.get(config["frames_ref"])
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    model = build_start_model(config["arch"], config["start"], cfg.seed)
    freeze_except_last(model, cfg.train_last)  # before DDP wraps it: DDP records the trainable parameters once
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    label = config["label"]
    every = max(1, cfg.steps // 10)
    t0 = time.perf_counter()

    def on_step(step: int, loss: float) -> None:
        if rank == 0 and (step % every == 0 or step == cfg.steps):
            rate = step / (time.perf_counter() - t0)
            # sys.stdout.write, not print: Ray Train patches print() and would log each line twice.
            sys.stdout.write(f"[{label}] train: step {step}/{cfg.steps}  L1 {loss:.4f}  {rate:.1f} steps/s\n")
            sys.stdout.flush()

    stats = finetune(model, frames, cfg, config["scale"], device, seed=cfg.seed + 1000 * rank, on_step=on_step)
    inner = model.module if hasattr(model, "module") else model
    if rank == 0:
        # Rank 0 commits the checkpoint straight to the run's store (atomic), so nothing
        # depends on Ray Train's storage being shared between nodes.
        prov = dict(config["provenance"], **stats, workers=world, device=str(device))
        config["store"].write_bytes(config["checkpoint_uri"], checkpoint.to_bytes(inner, prov))
    ray.train.report(stats)


def train_with_ray(
    frames_ref: Any,
    *,
    cfg: TrainConfig,
    arch: dict[str, Any],
    start: bytes | None,
    scale: int,
    use_gpu: bool,
    store: Store,
    checkpoint_uri: str,
    name: str,
    label: str,
    provenance: dict[str, Any],
) -> None:
    """Fine-tune with a Ray Train TorchTrainer; rank 0 writes the checkpoint, with the
    training stats in its provenance, to ``checkpoint_uri`` in ``store``.

    ``frames_ref``: a Ray ObjectRef to the list of uint8 (H, W, 3) training frames;
    each worker fetches it from the object store.

    ``use_gpu``: one GPU per worker (else one CPU per worker, threads split evenly).
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cpus = ray.cluster_resources().get("CPU", 1)
    threads = None if use_gpu else max(1, int(cpus // cfg.workers))
    run_dir = tempfile.mkdtemp(prefix="reelsr-train-")  # Ray Train's run state only: no checkpoints go there
    try:
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={
                "train": cfg,
                "arch": arch,
                "start": start,
                "scale": scale,
                "frames_ref": frames_ref,
                "label": label,
                "provenance": provenance,
                "threads": threads,
                "store": store,
                "checkpoint_uri": checkpoint_uri,
            },
            scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=None if use_gpu else {"CPU": 1}),
            run_config=RunConfig(name=name, storage_path=run_dir, failure_config=FailureConfig(max_failures=2)),  # a lost worker restarts the fine-tune
        )
        result = trainer.fit()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if result.error:
        raise result.error
