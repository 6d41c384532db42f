"""How much of the cluster a video's work asks for, so that no request can wait forever.

Every request is sized from the nodes that are alive: a CPU actor never asks for more
CPUs than the largest node has, the pool never has more CPU actors than the cluster can
place, and a CPU fine-tune never asks for more workers than there are CPUs. GPU requests
beyond the GPUs present are allowed (an autoscaler may add GPU nodes); the inference
pool only hands work to actors that have started, and gives up with a clear error when
none starts in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray

from pipeline.config import RestoreConfig


def node_resources() -> list[dict[str, float]]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def use_gpu(cfg: RestoreConfig) -> bool:
    """device=auto: GPUs when the cluster has any now; gpu: always; cpu: never."""
    if cfg.device == "auto":
        return ray.cluster_resources().get("GPU", 0) >= 1
    return cfg.device == "gpu"


@dataclass(frozen=True)
class Pool:
    actors: int
    use_gpu: bool
    cpus_per_actor: int


def inference_pool(cfg: RestoreConfig, chunks: int, gpu: bool) -> Pool:
    """Actors for ``chunks`` chunks: one per GPU; on CPUs one per CPU, or fewer actors of
    several CPUs (threads) each when there are fewer chunks than CPUs.

    One single-threaded actor per CPU measured 8 % faster than one actor with a thread
    per CPU (EDSR 16x64, 2 cores: 4.96 against 4.58 frames/s; bench/README.md): no
    thread waits for another inside each convolution."""
    nodes = node_resources()
    if gpu:
        gpus = int(sum(n.get("GPU", 0) for n in nodes))
        return Pool(max(1, min(cfg.infer.actors or max(1, gpus), chunks)), True, 1)
    cpus = [int(n.get("CPU", 0)) for n in nodes if n.get("CPU", 0) >= 1]
    if not cpus:
        raise RuntimeError("the cluster has no CPU to run inference on (device=cpu)")
    total = sum(cpus)
    want = max(1, min(cfg.infer.actors or total, chunks, total))
    per = max(1, min(max(cpus), total // want))
    fits = sum(c // per for c in cpus)
    return Pool(max(1, min(want, fits)), False, per)


def check_train_workers(cfg: RestoreConfig, gpu: bool) -> str | None:
    """Raise when a CPU fine-tune can never be placed; return a note when a GPU one must
    wait for GPUs the cluster does not have yet."""
    nodes = node_resources()
    if gpu:
        gpus = int(sum(n.get("GPU", 0) for n in nodes))
        if cfg.train.workers > gpus:
            return f"train.workers={cfg.train.workers} GPU workers requested, the cluster has {gpus} GPU(s) now: waiting for the autoscaler"
        return None
    cpus = int(sum(n.get("CPU", 0) for n in nodes))
    if cfg.train.workers > cpus:
        raise ValueError(f"train.workers={cfg.train.workers} CPU workers cannot be placed on a cluster with {cpus} CPU(s)")
    return None
