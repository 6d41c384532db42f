"""Sizing of Ray requests: nothing is asked for that the cluster can never place."""

import pytest

from pipeline.config import build_config
from pipeline.run import session


def nodes(monkeypatch, *specs):
    monkeypatch.setattr(session, "node_resources", lambda: [dict(s) for s in specs])


def test_cpu_pool_fits_the_nodes(monkeypatch):
    nodes(monkeypatch, {"CPU": 2})
    cfg = build_config("tiny")
    assert session.inference_pool_size(cfg, chunks=4, gpu=False) == session.PoolSize(2, False, 1)  # one per CPU
    assert session.inference_pool_size(cfg, chunks=1, gpu=False) == session.PoolSize(1, False, 2)  # one chunk: its actor gets both
    # more actors asked for than CPUs: capped, one CPU each
    cfg3 = build_config("tiny", overrides=["infer.actors=3"])
    assert session.inference_pool_size(cfg3, chunks=4, gpu=False) == session.PoolSize(2, False, 1)
    # one chunk on two 8-CPU nodes: one actor, never more CPUs than a node has
    nodes(monkeypatch, {"CPU": 8}, {"CPU": 8})
    assert session.inference_pool_size(cfg, chunks=1, gpu=False) == session.PoolSize(1, False, 8)
    # a 0-CPU head is not counted
    nodes(monkeypatch, {"CPU": 0}, {"CPU": 4, "GPU": 1})
    assert session.inference_pool_size(cfg, chunks=10, gpu=False) == session.PoolSize(4, False, 1)


def test_gpu_pool(monkeypatch):
    nodes(monkeypatch, {"CPU": 0}, {"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1})
    cfg = build_config("tiny")
    assert session.inference_pool_size(cfg, chunks=10, gpu=True) == session.PoolSize(2, True, 6)  # a GPU actor: its node's CPUs per GPU, 2 left for the other stages
    assert session.inference_pool_size(cfg, chunks=1, gpu=True).actors == 1
    # on an autoscaling cluster more GPU actors than GPUs present may be asked for
    cfg8 = build_config("tiny", overrides=["infer.actors=8"])
    assert session.inference_pool_size(cfg8, chunks=10, gpu=True).actors == 8


def test_train_workers(monkeypatch):
    nodes(monkeypatch, {"CPU": 2})
    with pytest.raises(ValueError, match=r"train.workers=3 CPU workers of 1 CPU\(s\) each cannot be placed on this cluster \(nodes of 2 CPUs\)"):
        session.check_train_workers(build_config("tiny", overrides=["train.workers=3"]), gpu=False)
    assert session.check_train_workers(build_config("tiny", overrides=["train.workers=2"]), gpu=False) is None
    nodes(monkeypatch, {"CPU": 16}, {"CPU": 8})
    assert session.train_cpus(build_config("tiny")) == 8  # one worker: half the largest node's CPUs as its threads
    assert session.train_cpus(build_config("tiny", overrides=["train.workers=4"])) == 2
    assert session.train_cpus(build_config("tiny", overrides=["train.cpus_per_worker=6"])) == 6
    with pytest.raises(ValueError, match="train.workers=4 CPU workers of 6 CPU"):
        session.check_train_workers(build_config("tiny", overrides=["train.workers=4", "train.cpus_per_worker=6"]), gpu=False)
    nodes(monkeypatch, {"CPU": 4, "GPU": 1})
    note = session.check_train_workers(build_config("tiny", overrides=["train.workers=2"]), gpu=True)
    assert "waiting for the autoscaler" in note


def test_no_cpu_at_all(monkeypatch):
    nodes(monkeypatch, {"CPU": 0})
    with pytest.raises(RuntimeError, match="no CPU"):
        session.inference_pool_size(build_config("tiny"), chunks=2, gpu=False)
