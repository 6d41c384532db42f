"""The run's inference pool: when a video waiting for actors gives up."""

import pytest

from pipeline.run.pool import Heartbeat


def test_inference_gives_up_only_when_every_video_in_flight_waits():
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


class FakePool:
    def __init__(self, *args):
        self.args, self.stopped = args, False

    def shutdown(self):
        self.stopped = True


def test_the_warm_pool_is_shared_kept_and_stopped_when_unused(monkeypatch):
    import time

    from pipeline.config import build_config
    from pipeline.run import driver

    monkeypatch.setattr(driver, "RestorerPool", FakePool)
    monkeypatch.setattr(driver.ray, "get_runtime_context", lambda: type("C", (), {"get_job_id": lambda self: "01"})())
    monkeypatch.setattr(driver, "POOL_IDLE_S", 0.2)
    warm = driver.WarmPool()
    cfg = build_config("tiny")
    a, b = warm.take(cfg, False, b"w"), warm.take(cfg, False, b"w")
    assert a is b and warm.users == 2  # two runs at once, one pool
    other = warm.take(build_config("tiny", overrides=["infer.precision=bf16"]), False, b"w")
    assert other is not a and not a.stopped  # the kept pool is in use: another config gets its own
    warm.give_back(other)
    assert other.stopped
    warm.give_back(a)
    time.sleep(0.4)
    assert not a.stopped  # still used by the other run
    warm.give_back(b)
    assert warm.take(cfg, False, b"w") is a  # taken again before the idle time is up: the pending stop is void
    time.sleep(0.4)
    assert not a.stopped
    warm.give_back(a)
    time.sleep(0.5)
    assert a.stopped and warm.pool is None


@pytest.fixture
def ray_2cpu():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _started(pool, n, timeout=120):
    import time

    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += pool.acquire(n - len(got))
        pool.wait(1.0)
    assert len(got) == n
    return got


@pytest.mark.slow
def test_a_task_of_another_stage_never_waits_on_the_pool(ray_2cpu, tmp_path):
    """Both actors of a 2-CPU pool are busy, so a probe must run as a task: the actors are
    stopped when they come back instead of idling on the CPUs the task waits for."""
    import threading

    from pipeline.actors import probe_task
    from pipeline.config import build_config
    from pipeline.models.weights import read_pretrained
    from pipeline.run.pool import RestorerPool
    from pipeline.storage import Store
    from tests.conftest import DATA

    cfg = build_config("tiny", overrides=["device=cpu"])
    pool = RestorerPool(cfg, False, read_pretrained("builtin:edsr_2x16", 2))
    actors = _started(pool, 2)
    result = {}
    probe = threading.Thread(target=lambda: result.update(
        info=ray_2cpu.get(pool.stage("probe", probe_task, Store(), f"{DATA}/carphone_gop10.mp4", "", 0))))
    probe.start()
    probe.join(3.0)
    assert probe.is_alive()  # no idle actor, no free CPU: the task waits
    for a in actors:
        pool.release(a)  # the chunks are done: stopped, not kept
    probe.join(60.0)
    assert not probe.is_alive() and result["info"].frames == 40
    assert pool.acquire(2, fill=False) == []  # the actors were stopped for the task
    assert len(_started(pool, 2)) == 2  # and start again for the next video's chunks
    pool.shutdown()


@pytest.mark.slow
def test_actors_that_cannot_start_fail_the_video_with_the_reason(ray_2cpu):
    import time

    from pipeline.config import build_config
    from pipeline.run.pool import RestorerPool

    pool = RestorerPool(build_config("tiny", overrides=["device=cpu"]), False, b"not a checkpoint")
    deadline = time.monotonic() + 120
    with pytest.raises(RuntimeError, match="no inference actor could start: .*cannot read checkpoint"):
        while time.monotonic() < deadline:
            pool.acquire(1)
            pool.wait(1.0)
    assert pool.started == pool.size.actors  # no endless restarts
