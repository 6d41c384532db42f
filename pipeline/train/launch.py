"""One launcher for every training loop (the per-video fine-tune and pretraining).

A loop is a plain module-level function ``fn(worker, config) -> dict``. ``launch`` runs it

* in this process (``where="local"``): no Ray at all, e.g. pretraining on a GPU machine
  that has only torch;
* as one Ray task (one worker): no Ray Train start-up (worker group, process group),
  which for a short per-video fine-tune costs more than the training itself;
* as ``workers`` data-parallel Ray Train workers (DDP), one GPU each when asked.

The loop sees a ``Worker``: its rank, the world size, its device, ``wrap`` (DDP when
the world is larger than one) and ``agree`` (every rank learns whether any rank said
yes: stop together, skip a step together), so the same loop code runs in all three.
The dict that rank 0 returns is what ``launch`` returns.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.inference import cuda_or_raise

Loop = Callable[["Worker", dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Worker:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the one worker that logs and writes."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on this worker's device; wrapped for data parallelism when the world
        is larger than one (freeze layers before: DDP records the trainable ones once)."""
        model = model.to(self.device)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return model

    def agree(self, flag: bool) -> bool:
        """True on every rank when any rank says so. Every rank must call it at the same
        point of the loop. The tensor lives on the device: NCCL reduces CUDA tensors only."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def node_cpus() -> int:
    """CPUs Ray declares for the node this process runs on (os.cpu_count() outside Ray)."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
        for n in ray.nodes():
            if n.get("NodeID") == node:
                return max(1, int(n["Resources"].get("CPU", 1)))
    except Exception:  # noqa: BLE001 - outside Ray
        pass
    return os.cpu_count() or 1


def _run(fn: Loop, config: dict[str, Any], gpu: bool, threads: int | None) -> dict[str, Any]:
    device = cuda_or_raise() if gpu else torch.device("cpu")
    if not gpu:
        torch.set_num_threads(max(1, threads or os.cpu_count() or 1))
    return fn(Worker(0, 1, device), config)


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker entry: build the Worker, run the loop, report its result."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    gpu = loop_config["gpu"]
    if gpu:
        cuda_or_raise()
    else:
        torch.set_num_threads(loop_config["threads"])  # the CPUs the worker reserved
    worker = Worker(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())
    result = loop_config["fn"](worker, loop_config["config"])
    ray.train.report(dict(result or {}))


def launch(
    fn: Loop,
    config: dict[str, Any],
    *,
    workers: int = 1,
    gpu: bool = False,
    threads: int | None = None,
    where: str = "ray",
    name: str = "train",
    retries: int = 2,
) -> dict[str, Any]:
    """Run ``fn`` and return rank 0's result.

    ``where``: "local" (this process; one worker) or "ray" (one worker: a Ray task; more:
    Ray Train). ``gpu``: one GPU per worker, else CPU workers that each reserve ``threads``
    CPUs from Ray and run that many threads (None: this node's CPUs, shared by the
    workers that fit on it). ``retries``: a worker lost to
    a node or process failure restarts the loop (which resumes from what it committed).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if where == "local":
        if workers != 1:
            raise ValueError(f"a local run has one worker, got workers={workers}: use Ray for data parallelism")
        return _run(fn, config, gpu, threads)
    if where != "ray":
        raise ValueError(f"where must be local or ray, got {where!r}")
    import ray

    # a CPU worker reserves the CPUs it runs threads on (by default this node's, shared by the workers that fit on it)
    cpus = 1 if gpu else max(1, threads or node_cpus() // min(workers, node_cpus()))
    if workers == 1:
        task = ray.remote(_run).options(num_gpus=1 if gpu else 0, num_cpus=cpus, max_retries=retries, name=name)
        return ray.get(task.remote(fn, config, gpu, cpus))

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    run_dir = tempfile.mkdtemp(prefix="reelsr-train-")  # Ray Train's run state only: loops commit their own outputs
    try:
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"fn": fn, "config": config, "gpu": gpu, "threads": cpus},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu, resources_per_worker=None if gpu else {"CPU": cpus}),
            run_config=RunConfig(name=name, storage_path=run_dir, failure_config=FailureConfig(max_failures=retries)),
        )
        result = trainer.fit()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if result.error:
        raise result.error
    return dict(result.metrics or {})
