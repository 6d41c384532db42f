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
