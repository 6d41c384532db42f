"""Sizing of Ray requests: nothing is asked for that the cluster can never place."""

import pytest

from pipeline import resources
from pipeline.config import build_config


def nodes(monkeypatch, *specs):
    monkeypatch.setattr(resources, "node_resources", lambda: [dict(s) for s in specs])


def test_cpu_pool_fits_the_nodes(monkeypatch):
    nodes(monkeypatch, {"CPU": 2})
    cfg = build_config("tiny")
    assert resources.inference_pool(cfg, chunks=4, gpu=False) == resources.Pool(2, False, 1)  # one per CPU
    assert resources.inference_pool(cfg, chunks=1, gpu=False) == resources.Pool(1, False, 2)  # one chunk: its actor gets both
    # more actors asked for than CPUs: capped, one CPU each
    cfg3 = build_config("tiny", overrides=["infer.actors=3"])
    assert resources.inference_pool(cfg3, chunks=4, gpu=False) == resources.Pool(2, False, 1)
    # one chunk on two 8-CPU nodes: one actor, never more CPUs than a node has
    nodes(monkeypatch, {"CPU": 8}, {"CPU": 8})
    assert resources.inference_pool(cfg, chunks=1, gpu=False) == resources.Pool(1, False, 8)
    # a 0-CPU head is not counted
    nodes(monkeypatch, {"CPU": 0}, {"CPU": 4, "GPU": 1})
    assert resources.inference_pool(cfg, chunks=10, gpu=False) == resources.Pool(4, False, 1)


def test_gpu_pool(monkeypatch):
    nodes(monkeypatch, {"CPU": 0}, {"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1})
    cfg = build_config("tiny")
    assert resources.inference_pool(cfg, chunks=10, gpu=True) == resources.Pool(2, True, 1)
    assert resources.inference_pool(cfg, chunks=1, gpu=True).actors == 1
    # on an autoscaling cluster more GPU actors than GPUs present may be asked for
    cfg8 = build_config("tiny", overrides=["infer.actors=8"])
    assert resources.inference_pool(cfg8, chunks=10, gpu=True).actors == 8


def test_train_workers(monkeypatch):
    nodes(monkeypatch, {"CPU": 2})
    with pytest.raises(ValueError, match="train.workers=3 CPU workers cannot be placed on a cluster with 2 CPU"):
        resources.check_train_workers(build_config("tiny", overrides=["train.workers=3"]), gpu=False)
    assert resources.check_train_workers(build_config("tiny", overrides=["train.workers=2"]), gpu=False) is None
    nodes(monkeypatch, {"CPU": 4, "GPU": 1})
    note = resources.check_train_workers(build_config("tiny", overrides=["train.workers=2"]), gpu=True)
    assert "waiting for the autoscaler" in note


def test_no_cpu_at_all(monkeypatch):
    nodes(monkeypatch, {"CPU": 0})
    with pytest.raises(RuntimeError, match="no CPU"):
        resources.inference_pool(build_config("tiny"), chunks=2, gpu=False)


def test_inference_gives_up_only_when_every_video_in_flight_waits():
    from pipeline.orchestrate import Heartbeat

    hb = Heartbeat()
    hb.video(+1)
    hb.video(+1)
    hb.waiting(+1)
    hb._t -= 1000  # no progress for 1,000 s, but the other video is training or restoring
    assert hb.stuck_s() == 0.0
    hb.waiting(+1)  # now both wait for actors that never start
    assert hb.stuck_s() >= 1000
    hb.video(-1)  # a video finished: progress
    hb.waiting(-1)
    assert hb.stuck_s() < 1.0
