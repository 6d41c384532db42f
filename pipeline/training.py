"""Self-transfer fine-tuning: a video's own frames are the high-resolution targets,
their bicubic downscales the inputs.

``sample_pairs`` and ``finetune`` are plain functions (tests call them without Ray);
``train_with_ray`` runs the same loop as a Ray Train ``TorchTrainer`` on GPU workers
when the cluster has GPUs and on CPU workers otherwise.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import TrainConfig
from pipeline.metrics.resize import bicubic_resize
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


def effective_patch(frames: list[np.ndarray], patch: int, scale: int) -> int:
    """The HR patch side: ``patch``, or the largest multiple of ``scale`` that fits the
    smallest frame when frames are smaller than that."""
    fit = min(min(f.shape[0], f.shape[1]) for f in frames)
    p = min(patch, fit - fit % scale)
    if p < 2 * scale:
        raise ValueError(f"frames of {fit} px are too small to train x{scale} (need at least {2 * scale} px)")
    return p


def sample_pairs(
    frames: list[np.ndarray], batch: int, patch: int, scale: int, rng: np.random.Generator, augment: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training pairs from uint8 (H, W, 3) frames.

    Returns (lr, hr): float (batch, 3, patch/scale, patch/scale) and (batch, 3, patch, patch)
    in [0, 1]. The target is a random patch of a random frame, flipped and rotated by a
    random multiple of 90 degrees when ``augment``; the input is its bicubic downscale.
    """
    hrs = []
    for _ in range(batch):
        f = frames[int(rng.integers(len(frames)))]
        y = int(rng.integers(0, f.shape[0] - patch + 1))
        x = int(rng.integers(0, f.shape[1] - patch + 1))
        p = f[y:y + patch, x:x + patch]
        if augment:
            if rng.random() < 0.5:
                p = p[:, ::-1]
            if rng.random() < 0.5:
                p = p[::-1, :]
            p = np.rot90(p, int(rng.integers(4)))
        hrs.append(np.ascontiguousarray(p))
    hr = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).float().div_(255)
    lr = bicubic_resize(hr, (patch // scale, patch // scale))
    return lr, hr


def build_start_model(arch: dict[str, Any], start: bytes | None, seed: int) -> EDSR:
    """The starting model: the pretrained checkpoint, or a fresh initialisation."""
    if start is not None:
        model, _ = checkpoint.load(start)
        model.train()
        return model
    torch.manual_seed(seed)
    return EDSR(**arch)


def finetune(
    model: torch.nn.Module,
    frames: list[np.ndarray],
    cfg: TrainConfig,
    scale: int,
    device: torch.device,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Fine-tune ``model`` in place with L1 loss and Adam on pairs from ``frames``.

    Returns {"loss_first", "loss_last", "steps", "seconds"} (losses averaged over the
    first / last 10% of steps). ``on_step(step, loss)`` is called after every step.
    """
    rng = np.random.default_rng(seed)
    patch = effective_patch(frames, cfg.patch_size, scale)
    model.train().to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.999))
    losses = []
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        lr, hr = sample_pairs(frames, cfg.batch_size, patch, scale, rng)
        loss = F.l1_loss(model(lr.to(device)), hr.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step:
            on_step(step, losses[-1])
    k = max(1, len(losses) // 10)
    return {
        "loss_first": float(np.mean(losses[:k])),
        "loss_last": float(np.mean(losses[-k:])),
        "steps": float(cfg.steps),
        "seconds": time.perf_counter() - t0,
        "patch": float(patch),
    }


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
