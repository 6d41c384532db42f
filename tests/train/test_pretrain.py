"""Pretraining: config checks, x2 -> x3/x4 initialisation, and a real Ray Train run on
CPU that is killed mid-run and resumed from its last state."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline.inference import cpu_has_bf16
from pipeline.models import build_model, checkpoint
from pipeline.models.edsr import EDSR
from pipeline.train.pretrain import PretrainConfig, init_from, pretrain
from tests.conftest import ROOT

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
    with pytest.raises(ValueError, match="init checkpoint is EDSR 2x8, the model EDSR 3x8"):
        init_from(EDSR(3, 8, 1.0, 4), blob)


def test_duf_trains_on_synthesised_windows_and_starts_x4_from_x2(tmp_path):
    """The multi-frame model through the same loop: windows made from the images (moving),
    validated on windows of the validation images; x4 starts from x2 but for its
    scale-dependent layers; another architecture is refused as a start."""
    common = {"model": "duf", "n_layers": 2, "n_feats": 8, "growth": 4, "frames": 3, "batch_size": 2, "patch_size": 48,
              "threads": 1, "val_every": 2, "checkpoint_every": 2}
    x2 = pretrain(PretrainConfig(scale=2, steps=2, **common), [HR], str(tmp_path / "x2"), val={"Set5": HR})
    assert x2["checkpoint"].endswith("duf_2x8_x2.pt")
    model, meta = checkpoint.load(x2["checkpoint"])
    assert meta["arch"] == {"name": "duf", "n_layers": 2, "n_feats": 8, "growth": 4, "frames": 3, "scale": 2}
    val = history(str(tmp_path / "x2"))[-1]["val_Set5"]
    assert 20 < val < 60  # a real score: near bicubic at the start (the filters begin as its kernel)
    x4 = build_model({**meta["arch"], "scale": 4})
    before = {k: v.clone() for k, v in x4.state_dict().items()}
    note = init_from(x4, checkpoint.to_bytes(model, {}))
    assert "scale-dependent layers (4 tensors)" in note
    changed = [k for k, v in x4.state_dict().items() if not torch.equal(v, before[k])]
    kept = [k for k in before if k not in changed]
    assert sorted(kept) == ["filters.2.bias", "filters.2.weight", "residual.2.bias", "residual.2.weight"]
    with pytest.raises(ValueError, match="init checkpoint is DUF 2x8 growth 4, 3 frames, the model EDSR 2x8"):
        init_from(EDSR(2, 8, 1.0, 4), checkpoint.to_bytes(model, {}))
    with pytest.raises(ValueError, match="odd number of frames"):
        PretrainConfig(**{**common, "frames": 4})


def test_duf_takes_half_its_windows_from_a_real_video(tmp_path):
    """p_video: part of every batch is cut from the given video files' shots; the stage
    refuses to start without videos, and the weights name the videos they learned from."""
    from tests.media.conftest import BBB

    cfg = PretrainConfig(scale=2, model="duf", n_layers=2, n_feats=8, growth=4, frames=3, batch_size=2, patch_size=48, threads=1,
                         val_every=2, checkpoint_every=2, steps=2, p_video=0.5, video_downscale=2)
    with pytest.raises(ValueError, match="give the training videos"):
        pretrain(cfg, [HR], str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="training video"):
        pretrain(cfg, [HR], str(tmp_path / "none"), videos=[str(tmp_path / "missing.mp4")])
    with pytest.raises(ValueError, match="p_video is for multi-frame models"):
        PretrainConfig(p_video=0.5)
    out = pretrain(cfg, [HR], str(tmp_path / "x2"), val={"Set5": HR}, videos=[BBB])
    _, meta = checkpoint.load(out["checkpoint"])
    assert meta["provenance"]["train_videos"] == ["bbb_320x180.mp4"]
    assert 20 < history(str(tmp_path / "x2"))[-1]["val_Set5"] < 60
    # BBB's 320x180 frames shrink to 160x90: too small for 96 px patches, and the run says so
    with pytest.raises(ValueError, match="without any"):
        pretrain(dataclasses.replace(cfg, patch_size=96), [HR], str(tmp_path / "big"), videos=[BBB])


def history(out):
    try:
        with open(os.path.join(out, "history.jsonl")) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def test_one_worker_trains_in_this_process_without_ray(tmp_path):
    """The plain loop: no Ray imported, resumable, and the x4 archive flavour starts from it."""
    out = str(tmp_path / "x2")
    cfg = PretrainConfig(scale=2, n_resblocks=2, n_feats=8, steps=6, batch_size=4, patch_size=48, val_every=3, checkpoint_every=3, threads=1)
    code = ("import sys; from pipeline.train.pretrain import PretrainConfig, pretrain; "
            f"print(pretrain(PretrainConfig(**{{**{dataclasses.asdict(cfg)!r}, 'steps': 3}}), [{HR!r}], {out!r}, val={{'Set5': {HR!r}}})); "
            "print('ray imported:', 'ray' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("RAY_ADDRESS", None)
    first = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "ray imported: False" in first.stdout and "local" in first.stdout
    summary = pretrain(cfg, [HR], out, val={"Set5": HR})  # continues the same run to 6 steps
    assert summary["resumed"] and summary["checkpoint"]
    assert [h["step"] for h in history(out)] == [3, 6] and all(h["train_cpu_seconds"] >= 0 for h in history(out))
    assert "val_Set5" in history(out)[-1]
    x4 = PretrainConfig(scale=4, n_resblocks=2, n_feats=8, steps=2, batch_size=2, patch_size=48, val_every=2, checkpoint_every=2,
                        threads=1, flavour="archive", precision="auto", init=summary["checkpoint"])
    done = pretrain(x4, [HR], str(tmp_path / "x4"), val={"Set5": HR})
    _, meta = checkpoint.load(done["checkpoint"])
    assert meta["arch"]["scale"] == 4 and meta["provenance"]["flavour"] == "archive"
    # auto: bf16 only where the CPU computes it natively (emulated bf16 trains ~9x slower than fp32)
    used = "bf16" if cpu_has_bf16() else "fp32"
    assert meta["provenance"]["precision"] == f"auto ({used} in the last slice)"
    with pytest.raises(ValueError, match="was made with another config"):
        pretrain(PretrainConfig(**{**dataclasses.asdict(cfg), "lr": 3e-4}), [HR], out)


@pytest.mark.slow
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


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")  # loading values into "meta" is a no-op, by design
def test_resume_puts_the_optimiser_state_on_the_models_device(tmp_path):
    """On resume the model reaches its device before the saved Adam moments are loaded
    into the optimiser (which puts them on the parameters' device); the other order
    leaves them on the CPU and the first step on a GPU fails. "meta" stands in for the GPU."""
    from pipeline.train.launch import Worker
    from pipeline.train.pretrain import _state_bytes, training_state

    cfg = PretrainConfig(scale=2, n_resblocks=1, n_feats=8, steps=10)
    model, opt, sched, _ = training_state(build_model(cfg.arch), Worker(), cfg, None)
    model(torch.rand(1, 3, 8, 8)).mean().backward()
    opt.step()
    state = _state_bytes(model, opt, sched, 1, cfg, 1.0, 1.0)
    model2, opt2, _, st = training_state(build_model(cfg.arch), Worker(device=torch.device("meta")), cfg, state)
    assert st["step"] == 1
    moments = [t for s in opt2.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    assert moments and {t.device.type for t in moments} == {"meta"}
    assert {p.device.type for p in model2.parameters()} == {"meta"}


def test_pretraining_runs_where_only_torch_numpy_and_pillow_are(tmp_path):
    """A GPU machine with torch alone (and Pillow to read the images): PyAV, Ray, pyiqa,
    PyYAML, boto3, scipy, psutil and pyarrow refused at import; a bicubic pretraining runs."""
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {{"av", "ray", "pyiqa", "yaml", "boto3", "botocore", "scipy", "psutil", "pyarrow", "duckdb"}}:
            raise ImportError(name + " is not on this machine")
sys.meta_path.insert(0, Block())
from pipeline.train.pretrain import PretrainConfig, pretrain
cfg = PretrainConfig(scale=2, n_resblocks=1, n_feats=8, steps=2, batch_size=2, patch_size=48, val_every=2, checkpoint_every=2, threads=1)
print(pretrain(cfg, [{HR!r}], {str(tmp_path / "out")!r}, val={{"Set5": {HR!r}}})["checkpoint"])
"""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("edsr_1x8_x2.pt")


def test_a_continuous_model_trains_at_random_scales_from_an_edsr_encoder(tmp_path):
    """liif through the same loop: batches at random scales in [1, 4], loss on sampled
    target pixels, validated at its scale, the encoder started from an EDSR checkpoint."""
    edsr = EDSR(2, 8, 1.0, 2)
    start = tmp_path / "edsr.pt"
    checkpoint.save(edsr, str(start), {})
    cfg = PretrainConfig(scale=4, model="liif", n_resblocks=2, n_feats=8, hidden=16, mlp_layers=2, batch_size=2, patch_size=64,
                         steps=4, threads=1, val_every=2, checkpoint_every=2, init=str(start))
    out = pretrain(cfg, [HR], str(tmp_path / "liif"), val={"Set5": HR})
    assert out["checkpoint"].endswith("liif_2x8.pt")
    model, meta = checkpoint.load(out["checkpoint"])
    assert meta["arch"] == {"name": "liif", "n_resblocks": 2, "n_feats": 8, "hidden": 16, "layers": 2, "scale": 4.0}
    rows = history(str(tmp_path / "liif"))
    assert [r["step"] for r in rows] == [2, 4] and all(20 < r["val_Set5"] < 40 for r in rows)
    with pytest.raises(ValueError, match="bicubic pairs only"):
        PretrainConfig(model="liif", flavour="archive", scale=4, patch_size=64)
