"""The one launcher: a loop runs the same in this process and as a Ray task; a worker
given a GPU refuses to fall back to the CPU."""

import pytest
import torch

from pipeline.inference import cuda_or_raise
from pipeline.train.launch import Worker, launch


def loop(worker: Worker, config: dict) -> dict:
    torch.manual_seed(config["seed"])
    model = worker.wrap(torch.nn.Linear(3, 1))
    stop = worker.agree(False)
    return {"rank": worker.rank, "world": worker.world, "device": str(worker.device), "stop": stop,
            "threads": torch.get_num_threads(), "w": float(model.weight.detach().sum())}


def test_local_run_is_this_process():
    out = launch(loop, {"seed": 1}, where="local", threads=1)
    assert out["rank"] == 0 and out["world"] == 1 and out["device"] == "cpu" and out["threads"] == 1 and out["stop"] is False
    with pytest.raises(ValueError, match="one worker"):
        launch(loop, {"seed": 1}, where="local", workers=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_gpu_worker_without_cuda_fails_with_the_reason():
    with pytest.raises(RuntimeError, match="given a GPU but CUDA is unusable"):
        cuda_or_raise()
    with pytest.raises(RuntimeError, match="CUDA is unusable"):
        launch(loop, {"seed": 1}, where="local", gpu=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_an_inference_actor_given_a_gpu_never_runs_on_the_cpu():
    from pipeline.actors import ChunkRestorer
    from pipeline.config import InferConfig

    with pytest.raises(RuntimeError, match="CUDA is unusable"):
        ChunkRestorer(InferConfig(), True, {"name": "edsr", "n_resblocks": 1, "n_feats": 8, "res_scale": 1.0, "scale": 2}, None)


@pytest.mark.slow
def test_one_worker_on_ray_is_a_task_with_the_same_result():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = launch(loop, {"seed": 1}, where="ray", threads=2)
    finally:
        ray.shutdown()
    local = launch(loop, {"seed": 1}, where="local", threads=2)
    assert remote == local


def reserved(worker: Worker, config: dict) -> dict:
    import ray

    return {"threads": torch.get_num_threads(), "cpus": ray.get_runtime_context().get_assigned_resources().get("CPU")}


@pytest.mark.slow
def test_a_cpu_worker_runs_as_many_threads_as_cpus_it_reserved():
    """Its threads are the CPUs Ray gave it: given, or by default the node's (not the
    cluster's, and not 1 reserved with every core used)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert launch(reserved, {}, where="ray", threads=1) == {"threads": 1, "cpus": 1.0}
        assert launch(reserved, {}, where="ray") == {"threads": 2, "cpus": 2.0}
    finally:
        ray.shutdown()


def _rank_with_a_nan(rank: int, port: int, out: str) -> None:
    """One of two gloo workers fine-tuning one model; rank 1's loss is NaN at step 3."""
    import json

    import numpy as np
    import torch.distributed as dist

    from pipeline.config import TrainConfig
    from pipeline.losses import Objective
    from pipeline.models.edsr import EDSR
    from pipeline.train.finetune import finetune
    from tests.conftest import bird

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    real, calls = Objective.generator_loss, {"n": 0}

    def loss(self, *args):
        total, parts = real(self, *args)
        calls["n"] += 1
        return (total * float("nan") if rank == 1 and calls["n"] == 3 else total), parts

    Objective.generator_loss = loss
    torch.manual_seed(0)
    worker = Worker(rank, 2, torch.device("cpu"))
    model = worker.wrap(EDSR(1, 8, 1.0, 2))
    stats = finetune(model, [bird()], TrainConfig(steps=6, patch_size=32, batch_size=2), 2, worker.device, seed=rank, worker=worker)
    weights = float(sum(p.detach().double().sum() for p in model.parameters()))
    with open(f"{out}/{rank}.json", "w") as fh:
        json.dump({"steps": stats["steps"], "skipped": stats["skipped_steps"], "weights": weights, "nan": bool(np.isnan(weights))}, fh)
    dist.destroy_process_group()


def test_every_rank_skips_a_non_finite_step_together(tmp_path):
    """Two data-parallel CPU workers (gloo); one meets a NaN loss. Both skip that step (no
    rank waits in an all-reduce the other never joins), finish, and keep equal weights."""
    import json

    import torch.multiprocessing as mp

    from tests.s3server import free_port

    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_rank_with_a_nan, args=(r, port, str(tmp_path))) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    alive = [p.is_alive() for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not any(alive), "a worker hung waiting for the other"
    got = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert [g["skipped"] for g in got] == [1, 1] and [g["steps"] for g in got] == [6, 6]
    assert got[0]["weights"] == got[1]["weights"] and not got[0]["nan"]
