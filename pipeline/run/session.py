"""The Ray session of a run and how much of the cluster each kind of work asks for.

Every request is sized from the nodes that are alive, so that no request can wait
forever: a CPU actor never asks for more CPUs than the largest node has, the pool never
has more CPU actors than the cluster can place, and a CPU fine-tune never asks for more
workers than there are CPUs. GPU requests beyond the GPUs present are allowed (an
autoscaler may add GPU nodes); the inference pool only hands work to actors that have
started, and gives up with a clear error when none starts in time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from pipeline.config import RestoreConfig


def connect() -> None:
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``), or start a
    local Ray with this machine's CPUs and GPUs."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network but the user's storage
        ray.init(include_dashboard=True, log_to_driver=True, runtime_env={"env_vars": {"PYTHONPATH": path}})


def node_resources() -> list[dict[str, float]]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def use_gpu(cfg: RestoreConfig) -> bool:
    """device=auto: GPUs when the cluster has any now; gpu: always; cpu: never."""
    if cfg.device == "auto":
        return ray.cluster_resources().get("GPU", 0) >= 1
    return cfg.device == "gpu"


def videos_at_once(cfg: RestoreConfig) -> int:
    """``videos_at_once``, or from the cluster: max(GPUs, CPUs // 4), in 1..16."""
    if cfg.videos_at_once:
        return cfg.videos_at_once
    res = ray.cluster_resources()
    return max(1, min(16, max(int(res.get("GPU", 0)), int(res.get("CPU", 0)) // 4)))


@dataclass(frozen=True)
class PoolSize:
    actors: int
    use_gpu: bool
    cpus_per_actor: int


def inference_pool_size(cfg: RestoreConfig, gpu: bool, chunks: int | None = None) -> PoolSize:
    """Inference actors: one per GPU; on CPUs one per CPU, or (for a known number of
    ``chunks`` fewer than the CPUs) fewer actors of several CPUs (threads) each.

    One single-threaded actor per CPU measured faster than one actor with a thread per
    CPU (bench/README.md): no thread waits for another inside each convolution."""
    nodes = node_resources()
    want_chunks = chunks if chunks is not None else 1 << 30
    if gpu:
        gpus = int(sum(n.get("GPU", 0) for n in nodes))
        # each GPU actor gets its node's CPUs shared among the node's GPUs, for decoding and encoding
        # (2 CPUs of each node are left to the light stages and the other tasks)
        shares = [int(max(0, n.get("CPU", 0) - 2) // n["GPU"]) for n in nodes if n.get("GPU", 0) >= 1]
        return PoolSize(max(1, min(cfg.infer.actors or max(1, gpus), want_chunks)), True, max(1, min(shares, default=1)))
    cpus = [int(n.get("CPU", 0)) for n in nodes if n.get("CPU", 0) >= 1]
    if not cpus:
        raise RuntimeError("the cluster has no CPU to run inference on (device=cpu)")
    total = sum(cpus)
    want = max(1, min(cfg.infer.actors or total, want_chunks, total))
    per = max(1, min(max(cpus), total // want))
    fits = sum(c // per for c in cpus)
    return PoolSize(max(1, min(want, fits)), False, per)


def check_train_workers(cfg: RestoreConfig, gpu: bool) -> str | None:
    """Raise when a CPU fine-tune can never be placed; return a note when a GPU one must
    wait for GPUs the cluster does not have yet."""
    nodes = node_resources()
    if gpu:
        gpus = int(sum(n.get("GPU", 0) for n in nodes))
        if cfg.train.workers > gpus:
            return f"train.workers={cfg.train.workers} GPU workers requested, the cluster has {gpus} GPU(s) now: waiting for the autoscaler"
        return None
    per = train_cpus(cfg)
    fits = sum(int(n.get("CPU", 0)) // per for n in nodes)
    if cfg.train.workers > fits:
        raise ValueError(f"train.workers={cfg.train.workers} CPU workers of {per} CPU(s) each cannot be placed on this cluster "
                         f"(nodes of {', '.join(str(int(n.get('CPU', 0))) for n in nodes)} CPUs)")
    return None


def train_cpus(cfg: RestoreConfig) -> int:
    """CPUs (and threads) of each CPU fine-tune worker: train.cpus_per_worker, or half
    the largest node's CPUs (the other half stays with the inference actors of the videos
    in flight) shared by the workers (at most train.workers) that fit on it."""
    if cfg.train.cpus_per_worker:
        return cfg.train.cpus_per_worker
    half = max(1, max((int(n.get("CPU", 0)) for n in node_resources()), default=1) // 2)
    return max(1, half // max(1, min(cfg.train.workers, half)))
