"""Pretraining: config checks, x2 -> x3/x4 initialisation, and a real Ray Train run on
CPU that is killed mid-run and resumed from its last state."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline.models import checkpoint
from pipeline.models.edsr import EDSR
from pipeline.pretrain import PretrainConfig, init_from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HR = os.path.join(ROOT, "tests", "data", "set5", "HR")


@pytest.mark.parametrize(
    "kw, message",
    [({"scale": 5}, "scale must be 2, 3 or 4"), ({"patch_size": 50, "scale": 4}, "multiple of scale"),
     ({"lr": float("nan")}, "lr must be a finite"), ({"steps": 0}, "steps must be >= 1")],
)
def test_config_checks(kw, message):
    with pytest.raises(ValueError, match=message):
        PretrainConfig(**kw)


def test_init_x4_from_x2_copies_all_but_the_upsampler(tmp_path):
    torch.manual_seed(0)
    x2 = EDSR(2, 8, 1.0, 2)
    blob = checkpoint.to_bytes(x2, {})
    x4 = EDSR(2, 8, 1.0, 4)
    before = {k: v.clone() for k, v in x4.state_dict().items()}
    assert "upsampler" in init_from(x4, blob)
    for k, v in x4.state_dict().items():
        if k.startswith("tail.0."):
            assert torch.equal(v, before[k]), k  # the x4 upsampler keeps its own initialisation
        else:
            assert torch.equal(v, x2.state_dict()[k]), k
    same = EDSR(2, 8, 1.0, 2)
    assert "all weights" in init_from(same, blob)
    with pytest.raises(ValueError, match="init checkpoint is EDSR 2x8, the model 3x8"):
        init_from(EDSR(3, 8, 1.0, 4), blob)


def history(out):
    try:
        with open(os.path.join(out, "history.jsonl")) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def test_killed_run_resumes_from_its_last_state(tmp_path):
    """Two data-parallel CPU workers; the run is SIGKILLed, resumed for a time slice
    (--max-seconds), then resumed to the end."""
    out = str(tmp_path / "pt")
    cmd = [sys.executable, "-m", "jobs.pretrain", "--data", HR, "--val", HR, "--output", out, "--scale", "2",
           "--preset", "tiny", "--set", "steps=300", "--set", "checkpoint_every=25", "--set", "val_every=75",
           "--set", "patch_size=48", "--set", "workers=2"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not any(h["step"] >= 50 for h in history(out)):
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    # Ray's workers notice their raylet is gone and exit, possibly a step later: wait.
    deadline = time.time() + 60
    while time.time() < deadline and subprocess.run(["pgrep", "-f", "RayTrainWorker|raylet|gcs_server"], capture_output=True).returncode == 0:
        time.sleep(0.5)
    state = torch.load(os.path.join(out, "state.pt"), weights_only=True)
    killed_at = state["step"]
    assert killed_at == max(h["step"] for h in history(out))
    assert 50 <= killed_at < 300, history(out)
    assert not os.path.exists(os.path.join(out, "edsr_2x16_x2.pt"))

    sliced = subprocess.run([*cmd, "--max-seconds", "0.5"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert sliced.returncode == 0, sliced.stdout[-3000:] + sliced.stderr[-3000:]
    assert f"resuming from step {killed_at}/300" in sliced.stdout and "stopping at step" in sliced.stdout
    sliced_at = max(h["step"] for h in history(out))
    assert killed_at < sliced_at < 300 and not os.path.exists(os.path.join(out, "edsr_2x16_x2.pt"))

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"resuming from step {sliced_at}/300" in rerun.stdout
    steps = [h["step"] for h in history(out)]
    assert steps[-1] == 300 and steps == sorted(steps)  # continued, not restarted
    assert steps.count(25) == 1  # the first 25 steps were not trained again
    model, meta = checkpoint.load(os.path.join(out, "edsr_2x16_x2.pt"))
    prov = meta["provenance"]
    assert prov["steps_done"] == 300 and prov["trained_by"] == "jobs.pretrain" and prov["workers"] == 2
    assert history(out)[-1]["val_psnr_y"] > 25
