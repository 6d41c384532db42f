"""The shipped-weights plan (pipeline/data/make_weights.py) on a tiny shape: stages in
order, a stage waiting for its init, resume from the committed state, and published
files carrying their benchmark scores."""

import os

import pytest

from pipeline.data import make_weights
from pipeline.models import checkpoint
from tests.conftest import DATA

SET5 = os.path.join(DATA, "set5", "HR")


def test_plan_runs_in_order_resumes_and_publishes(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(make_weights, "SHAPES", {"edsr_1x8": (1, 8)})
    monkeypatch.setattr(make_weights, "PLAN", {"x2-bicubic": (2, "bicubic", 4, 1e-3, None), "x4-archive": (4, "archive", 4, 1e-3, "x2-bicubic")})
    monkeypatch.setattr(make_weights, "STATE_DIR", str(tmp_path / "training"))
    monkeypatch.setattr(make_weights, "WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setattr(make_weights, "SLICE_SECONDS", 1e-3)  # every process stops at its first state save
    real = make_weights.config
    monkeypatch.setattr(make_weights, "config", lambda n, s, t: __import__("dataclasses").replace(
        real(n, s, t), patch_size=24 * make_weights.PLAN[s][0], val_every=2, checkpoint_every=2, batch_size=2))
    os.makedirs(tmp_path / "weights")
    val = {"Set5": SET5, "Set14": SET5}  # (Set5 stands in for Set14: the degraded scores are computed for it)
    make_weights.run("edsr_1x8", ["x4-archive"], [SET5], val, 0, 1)
    assert not os.listdir(tmp_path / "weights")  # x4 waits for its x2 init
    make_weights.run("edsr_1x8", ["x2-bicubic", "x4-archive"], [SET5], val, 0, 1)
    x2, x4 = tmp_path / "weights" / "edsr_1x8_bicubic_x2.pt", tmp_path / "weights" / "edsr_1x8_archive_x4.pt"
    assert x2.exists() and x4.exists()
    said = capfd.readouterr().out
    assert said.count("pretrain: stopping at step 2") == 2 and said.count("pretrain: resuming from step 2/") == 2  # x2, then x4: each in two processes
    assert said.count("pretrain: initialised with all but the upsampler") == 1  # the x4 init is not redone by its second process
    _, meta = checkpoint.load(str(x4))
    prov = meta["provenance"]
    assert prov["flavour"] == "archive" and prov["stage"] == "x4-archive" and prov["steps_done"] == 4
    assert set(prov["scores"]) == {"Set5_psnr_y", "Set14_psnr_y", "Set14_blur1.6_psnr_y", "Set14_noise5_psnr_y", "Set14_x264crf30_psnr_y"}
    assert all(5 < v < 40 for v in prov["scores"].values())
    assert prov["train_images"] == "HR" and prov["init"] == "edsr_1x8_x2.pt"  # no folders of the machine that trained it
    before = x2.read_bytes()
    make_weights.run("edsr_1x8", ["x2-bicubic"], [SET5], val, 0, 1)  # finished stages are not trained again
    assert x2.read_bytes() == before


def test_only_the_last_stage_of_a_scale_and_flavour_ships(tmp_path, monkeypatch):
    monkeypatch.setattr(make_weights, "WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(make_weights, "PLAN", {"x2-bicubic": (2, "bicubic", 4, 1e-3, None), "x4-archive": (4, "archive", 4, 1e-3, "x2-bicubic"),
                                               "x4-archive-more": (4, "archive", 4, 1e-3, "x4-archive")})
    assert make_weights.shipped("edsr_1x8", "x4-archive") is None
    assert make_weights.shipped("edsr_1x8", "x4-archive-more") == str(tmp_path / "edsr_1x8_archive_x4.pt")
    assert make_weights.shipped("edsr_1x8", "x2-bicubic") == str(tmp_path / "edsr_1x8_bicubic_x2.pt")


def test_a_later_stage_replaces_a_shipped_file_only_under_its_rule(tmp_path, monkeypatch, capsys):
    """A stage added to the plan after its scale and flavour shipped (a continuation)
    replaces the package file when it finishes only if its ship rule holds (clean Set5 up,
    degraded mean >= +0.5 dB over the bicubic file); without a rule, or when the rule
    fails, the shipped file stays; the same stage again leaves it alone."""
    from pipeline.models.edsr import EDSR

    monkeypatch.setattr(make_weights, "WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(make_weights, "PLAN", {"x2-archive": (2, "archive", 4, 1e-3, None), "x2-archive-more": (2, "archive", 4, 1e-3, "x2-archive")})
    monkeypatch.setattr(make_weights, "SHIP_RULES", {})
    degraded = {f"Set14_{d}_psnr_y": 27.0 for d in make_weights.DEGRADED}
    new = {"Set5_psnr_y": 31.0, **degraded}
    monkeypatch.setattr(make_weights, "scores", lambda *a: new)
    model = EDSR(scale=2, n_resblocks=1, n_feats=8)
    first, later = str(tmp_path / "first.pt"), str(tmp_path / "later.pt")
    checkpoint.save(model, first, {"steps_done": 4})
    checkpoint.save(model, later, {"steps_done": 8})
    dst = tmp_path / "edsr_1x8_archive_x2.pt"
    checkpoint.save(model, str(dst), {"stage": "x2-archive", "steps_done": 4, "scores": {"Set5_psnr_y": 30.0, **degraded}})
    checkpoint.save(model, str(tmp_path / "edsr_1x8_bicubic_x2.pt"), {"stage": "x2-bicubic", "scores": {"Set5_psnr_y": 31.5, **{k: 26.6 for k in degraded}}})
    make_weights.publish("edsr_1x8", "x2-archive-more", later, {})  # no rule: kept
    assert checkpoint.load(str(dst))[1]["provenance"]["stage"] == "x2-archive"
    assert "has no ship rule" in capsys.readouterr().out
    monkeypatch.setattr(make_weights, "SHIP_RULES", {"x2-archive-more": make_weights.clean_up_degraded_kept})
    make_weights.publish("edsr_1x8", "x2-archive-more", later, {})  # degraded mean +0.4 dB: kept
    assert checkpoint.load(str(dst))[1]["provenance"]["stage"] == "x2-archive"
    assert "+0.400 dB over the bicubic file" in capsys.readouterr().out
    new.update({"Set5_psnr_y": 29.9, **{k: 27.2 for k in degraded}})  # +0.6 dB, but clean down: kept
    make_weights.publish("edsr_1x8", "x2-archive-more", later, {})
    assert checkpoint.load(str(dst))[1]["provenance"]["stage"] == "x2-archive"
    new["Set5_psnr_y"] = 31.0  # +0.6 dB, clean up 1 dB: replaced
    make_weights.publish("edsr_1x8", "x2-archive-more", later, {})
    prov = checkpoint.load(str(dst))[1]["provenance"]
    assert prov["stage"] == "x2-archive-more" and prov["steps_done"] == 8 and prov["scores"] == new
    stamp = dst.read_bytes()
    make_weights.publish("edsr_1x8", "x2-archive-more", first, {})
    assert dst.read_bytes() == stamp


def test_the_x4_rule_asks_for_more_degraded_gain_within_the_clean_target():
    """x4-archive-more's rule, on the shipped x4 files' scores: the degraded mean gain
    over the bicubic file must rise above the shipped archive file's (+0.180) and clean
    Set5 stay within 0.5 dB of the bicubic file's (31.508)."""
    assert make_weights.SHIP_RULES["x4-archive-more"] is make_weights.degraded_up_clean_kept
    bicubic = {"Set5_psnr_y": 31.508, "Set14_blur1.6_psnr_y": 27.34, "Set14_noise5_psnr_y": 27.108, "Set14_x264crf30_psnr_y": 23.217}
    shipped = {"Set5_psnr_y": 31.106, "Set14_blur1.6_psnr_y": 27.336, "Set14_noise5_psnr_y": 27.189, "Set14_x264crf30_psnr_y": 23.681}
    rule = make_weights.degraded_up_clean_kept
    assert not rule(shipped, shipped, bicubic)[0]  # no gain: kept
    assert rule(dict(shipped, Set14_noise5_psnr_y=27.2), shipped, bicubic)[0]
    assert not rule(dict(shipped, Set14_noise5_psnr_y=27.2, Set5_psnr_y=31.0), shipped, bicubic)[0]  # clean -0.508
    assert rule(dict(shipped, Set14_noise5_psnr_y=27.2, Set5_psnr_y=31.01), shipped, bicubic)[0]


def test_a_rule_without_its_scores_or_for_another_family_keeps_the_file(tmp_path, monkeypatch):
    """Missing scores (no --val Set14) or a DUF stage sharing an EDSR stage's name: the
    shipped file stays, with the reason, and nothing raises after the scoring."""
    from pipeline.models.edsr import EDSR

    monkeypatch.setattr(make_weights, "WEIGHTS_DIR", str(tmp_path))
    model = EDSR(scale=4, n_resblocks=1, n_feats=8)
    checkpoint.save(model, str(tmp_path / "edsr_16x32_bicubic_x4.pt"), {"scores": {"Set5_psnr_y": 31.5}})
    ok, why = make_weights.replaces("edsr_16x32", "x4-archive-more", {"Set5_psnr_y": 31.2}, {"stage": "x4-archive-centred", "scores": {}})
    assert not ok and "missing" in why and "new: Set14_noise5_psnr_y" in why and "shipped: Set5_psnr_y" in why
    monkeypatch.setitem(make_weights.DUF_PLAN, "x4-archive-more", (4, "archive", 4, 1e-3, "x4-archive"))
    ok, why = make_weights.replaces("duf_6x32", "x4-archive-more", {"Set5_windows_psnr_y": 30.0}, {"stage": "x4-archive"})
    assert not ok and "has no ship rule" in why


def test_a_duf_plan_trains_windows_and_publishes_window_scores(tmp_path, monkeypatch):
    """A multi-frame name runs its own plan (windows), and its file carries Y-PSNR on
    validation windows, not on single images."""
    monkeypatch.setattr(make_weights, "DUF_SHAPES", {"duf_2x8": (2, 8, 4, 3)})
    monkeypatch.setattr(make_weights, "DUF_PLAN", {"x2-bicubic": (2, "bicubic", 2, 1e-3, None)})
    monkeypatch.setattr(make_weights, "STATE_DIR", str(tmp_path / "training"))
    monkeypatch.setattr(make_weights, "WEIGHTS_DIR", str(tmp_path / "weights"))
    real = make_weights.config
    monkeypatch.setattr(make_weights, "config", lambda n, s, t: __import__("dataclasses").replace(
        real(n, s, t), patch_size=48, val_every=2, checkpoint_every=2, batch_size=2))
    os.makedirs(tmp_path / "weights")
    assert make_weights.config("duf_2x8", "x2-bicubic", 1).model == "duf"
    assert make_weights.shipped("duf_2x8", "x2-bicubic") == str(tmp_path / "weights" / "duf_2x8_bicubic_x2.pt")
    make_weights.run("duf_2x8", ["x2-bicubic"], [SET5], {"Set5": SET5}, 0, 1)
    model, meta = checkpoint.load(str(tmp_path / "weights" / "duf_2x8_bicubic_x2.pt"))
    assert meta["arch"] == {"name": "duf", "n_layers": 2, "n_feats": 8, "growth": 4, "frames": 3, "scale": 2}
    scores = meta["provenance"]["scores"]
    assert set(scores) == {"Set5_windows_psnr_y"} and 20 < scores["Set5_windows_psnr_y"] < 40


def test_the_duf_stages_continue_each_other_and_the_last_ships(tmp_path, monkeypatch):
    """The decay stage starts from the finished constant-rate stage and falls on a cosine;
    the motion stage (faster windows) continues it, the real-windows stage (half of each
    batch from video files) continues that and is the one whose file ships; it will not
    start without the videos."""
    assert make_weights.DUF_PLAN["x4-bicubic-decay"][4] == "x4-bicubic"
    assert make_weights.config("duf_6x32", "x4-bicubic-decay", 1).lr_schedule == "cosine"
    assert make_weights.config("duf_6x32", "x4-bicubic", 1).lr_schedule == "step"
    assert make_weights.shipped("duf_6x32", "x4-bicubic") is None
    assert make_weights.shipped("duf_6x32", "x4-bicubic-motion") is None
    assert make_weights.shipped("duf_6x32", "x4-bicubic-real").endswith("duf_6x32_bicubic_x4.pt")
    motion = make_weights.config("duf_6x32", "x4-bicubic-motion", 1)
    assert motion.max_speed == 10.0 and motion.region == 96 + 2 * 36 and make_weights.config("duf_6x32", "x4-bicubic", 1).max_speed == 2.0
    real = make_weights.config("duf_6x32", "x4-bicubic-real", 1)
    assert make_weights.DUF_PLAN["x4-bicubic-real"][4] == "x4-bicubic-motion" and real.p_video == 0.5 and real.max_speed == 10.0
    assert motion.p_video == 0.0
    archive = make_weights.config("duf_6x32", "x4-archive", 1)  # the archive flavour continues the shipped bicubic file
    assert make_weights.DUF_PLAN["x4-archive"][4] == "x4-bicubic-real" and archive.flavour == "archive" and archive.p_video == 0.5
    assert make_weights.shipped("duf_6x32", "x4-archive").endswith("duf_6x32_archive_x4.pt")
    assert make_weights.shipped("duf_6x32", "x4-bicubic-real").endswith("duf_6x32_bicubic_x4.pt")  # still the bicubic file
    monkeypatch.setattr(make_weights, "STATE_DIR", str(tmp_path))  # nothing trained there
    with pytest.raises(SystemExit, match="give them with --video"):
        make_weights.run("duf_6x32", ["x4-bicubic-real"], ["unused"], {}, 0.0, 1)


def test_a_training_process_that_dies_is_an_error_not_a_wait(tmp_path):
    """The child fails before it can put a result (here: no such image folder); the
    parent raises instead of waiting for ever."""
    cfg = make_weights.config("edsr_16x32", "x2-bicubic", 1)
    with pytest.raises(RuntimeError, match="training process of .* failed \\(exit code 1\\)"):
        make_weights.in_child(cfg, [str(tmp_path / "no-images")], str(tmp_path / "out"), {})


@pytest.mark.slow
def test_stopping_make_weights_stops_its_training_process(tmp_path):
    """SIGTERM to make_weights (a `kill`, a scheduler's stop) ends the training child too."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    code = ("import dataclasses, sys; from pipeline.data import make_weights as m; "
            "m.signal.signal(m.signal.SIGTERM, m._stop); "
            "cfg = dataclasses.replace(m.config('edsr_16x32', 'x2-bicubic', 1), steps=10**6, checkpoint_every=10**6, val_every=10**6); "
            f"m.in_child(cfg, [{SET5!r}], {str(tmp_path / 'out')!r}, {{}})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("make_weights: training in process"), line
    child = int(line.split()[-1])
    time.sleep(3)
    os.kill(child, 0)  # it is training
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the training process {child} outlived make_weights")


def test_a_continuous_model_ships_under_key_0_with_scores_at_each_scale(tmp_path, monkeypatch, capsys):
    """The continuous model's one file serves every scale: its WEIGHTS line has key 0, and
    its provenance scores it at each of LIIF_SCALES."""
    from pipeline.models import build_model

    monkeypatch.setattr(make_weights, "WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(make_weights, "LIIF_SCALES", (2, 2.5))
    src = str(tmp_path / "trained.pt")
    checkpoint.save(build_model({"name": "liif", "n_resblocks": 1, "n_feats": 8, "hidden": 8, "layers": 1, "scale": 4.0}), src, {})
    make_weights.publish("liif_16x32", "any-bicubic", src, {"Set5": SET5})
    assert "\n    0: ('liif_16x32_bicubic.pt', '" in capsys.readouterr().out
    _, meta = checkpoint.load(str(tmp_path / "liif_16x32_bicubic.pt"))
    assert set(meta["provenance"]["scores"]) == {"Set5_x2_psnr_y", "Set5_x2.5_psnr_y"}
    assert all(10 < v < 50 for v in meta["provenance"]["scores"].values())
