"""The per-video fine-tune on real images (no Ray): frozen layers, every loss term, the time
budget and early stopping, multi-scale pairs."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import TrainConfig, build_config
from pipeline.losses import parse_loss
from pipeline.models.edsr import EDSR
from pipeline.train.finetune import finetune, freeze_except_last
from tests.conftest import DATA

BIRD = os.path.join(DATA, "bird.png")


CPU = torch.device("cpu")


def bird():
    return np.asarray(Image.open(BIRD).convert("RGB"))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return EDSR(2, 16, 1.0, 2)


def test_finetune_lowers_loss_on_a_real_image():
    img = np.asarray(Image.open(BIRD).convert("RGB"))
    torch.manual_seed(0)
    m = EDSR(2, 16, 1.0, 2)
    cfg = TrainConfig(steps=60, patch_size=48, batch_size=8, lr=5e-4)
    stats = finetune(m, [img], cfg, 2, torch.device("cpu"), seed=0)
    assert stats["loss_last"] < 0.5 * stats["loss_first"], stats


def test_bf16_training_steps_keep_fp32_weights_and_learn():
    """train.precision=bf16: the forward pass runs in bf16 autocast, the weights and their
    updates stay fp32, and the loss still falls as in fp32."""
    m = tiny_model()
    stats = finetune(m, [bird()], TrainConfig(steps=60, patch_size=48, batch_size=8, lr=5e-4, precision="bf16"), 2, CPU, seed=0)
    assert stats["precision"] == "bf16" and stats["loss_last"] < 0.5 * stats["loss_first"], stats
    assert all(p.dtype == torch.float32 for p in m.parameters())
    fp32 = finetune(tiny_model(), [bird()], TrainConfig(steps=2, patch_size=48, batch_size=2, precision="fp32"), 2, CPU, seed=0)
    assert fp32["precision"] == "fp32"
    with pytest.raises(ValueError, match="train.precision"):
        TrainConfig(precision="fp16")


def test_only_the_last_blocks_and_upsampler_train():
    m = tiny_model()
    total = sum(p.numel() for p in m.parameters() if p.requires_grad)
    n = freeze_except_last(m, 1)
    assert 0 < n < total
    before = {k: v.clone() for k, v in m.state_dict().items()}
    finetune(m, [bird()], TrainConfig(steps=3, patch_size=48, batch_size=4, lr=1e-3, train_last=1), 2, CPU, seed=0)
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("body.1.", "body.2.", "tail.")) for k in changed), changed
    assert not any(k.startswith(("head.", "body.0.")) for k in changed)


@pytest.mark.parametrize("loss", ["l1", "l2", "charbonnier", "ssim", "l1:1,ssim:0.5", "niqe", "l1:1,gan:0.01"])
def test_each_loss_term_trains(loss):
    m = tiny_model()
    before = [p.detach().clone() for p in m.parameters()]
    stats = finetune(m, [bird()], TrainConfig(steps=3, patch_size=48, batch_size=4, lr=1e-3, loss=loss), 2, CPU, seed=0)
    assert np.isfinite(stats["loss_first"]) and np.isfinite(stats["loss_last"]) and stats["steps"] == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_niqe_term_needs_no_target(monkeypatch):
    """Trained on the NIQE term alone, no self-pair (no high-resolution target) is made:
    the term scores the model's output on frame patches at their own resolution."""
    import pipeline.train.finetune as training
    from pipeline.losses import Objective

    assert not Objective.build("niqe", CPU).needs_pairs and Objective.build("niqe:1,l1:1", CPU).needs_pairs

    def no_pairs(*a, **k):
        raise AssertionError("a self-pair was sampled")

    monkeypatch.setattr(training, "sample_pairs", no_pairs)
    m = tiny_model()
    before = [p.detach().clone() for p in m.parameters()]
    stats = finetune(m, [bird()], TrainConfig(steps=2, patch_size=48, batch_size=8, lr=1e-4, loss="niqe"), 2, CPU, seed=0)
    assert np.isfinite(stats["loss_last"]) and any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_vgg_term_needs_a_local_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="set train.vgg_weights"):
        finetune(tiny_model(), [bird()], TrainConfig(steps=1, patch_size=48, batch_size=2, loss="l1,vgg:0.1"), 2, CPU, seed=0)
    with pytest.raises(FileNotFoundError, match="vgg_weights not found"):
        finetune(tiny_model(), [bird()], TrainConfig(steps=1, patch_size=48, batch_size=2, loss="vgg", vgg_weights=str(tmp_path / "x.pt")), 2, CPU, seed=0)
    from torchvision.models import vgg19

    path = tmp_path / "vgg19_features.pt"
    torch.manual_seed(0)
    torch.save({f"features.{k}": v for k, v in vgg19(weights=None).features.state_dict().items()}, path)
    stats = finetune(tiny_model(), [bird()], TrainConfig(steps=2, patch_size=48, batch_size=2, loss="l1,vgg:0.1", vgg_weights=str(path)), 2, CPU, seed=0)
    assert np.isfinite(stats["loss_last"])
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a torchvision VGG-19"):
        finetune(tiny_model(), [bird()], TrainConfig(steps=1, patch_size=48, batch_size=2, loss="vgg", vgg_weights=str(tmp_path / "bad.pt")), 2, CPU, seed=0)


def test_time_budget_and_early_stopping():
    img = bird()
    frames = [img, np.roll(img, 40, 1), np.roll(img, 80, 0), np.roll(img, 120, 1)]
    stats = finetune(tiny_model(), frames, TrainConfig(steps=10_000, patch_size=48, batch_size=4, max_seconds=1.0), 2, CPU, seed=0)
    assert stats["steps"] < 10_000 and stats["seconds"] < 10
    # a learning rate far too high makes validation worse: it stops early and keeps the best weights
    m = tiny_model()
    cfg = TrainConfig(steps=200, patch_size=48, batch_size=4, lr=0.05, holdout=1, eval_every=2, patience=2)
    start = {k: v.clone() for k, v in m.state_dict().items()}
    stats = finetune(m, frames, cfg, 2, CPU, seed=0)
    assert stats["steps"] < 200 and stats["best_step"] <= stats["steps"] and stats["val_best"] <= stats["val_first"]
    # do no harm: the diverging fine-tune never beat the starting model, whose weights are put back
    assert stats["model_used"] == "pretrained" and all(torch.equal(v, m.state_dict()[k]) for k, v in start.items())
    assert "(do no harm)" in stats["model_reason"] and f"{stats['val_first']:.4f} (start)" in stats["model_reason"]
    one = finetune(tiny_model(), [img], TrainConfig(steps=2, patch_size=48, batch_size=2, holdout=1), 2, CPU, seed=0)
    assert "val_first" not in one and one["model_used"] == "finetuned"  # one frame: nothing to hold out
    assert "no held-out frames" in one["model_reason"]


def test_a_fine_tune_that_helps_is_kept():
    """Frames blurred the way the self-pairs are made: the fine-tune learns the deblur and
    beats the starting model on the held-out pairs, so its weights are used."""
    from pipeline.datasets.degrade import VideoDegradation

    img = bird()
    frames = [img, np.roll(img, 40, 1), np.roll(img, 80, 0), np.roll(img, 120, 1)]
    cfg = TrainConfig(steps=60, patch_size=48, batch_size=8, lr=5e-4, holdout=1, eval_every=20, patience=3)
    stats = finetune(tiny_model(), frames, cfg, 2, CPU, seed=0, make_lr=VideoDegradation(blur_sigma=1.6))
    assert stats["model_used"] == "finetuned" and stats["val_best"] < stats["val_first"] * 0.995
    assert "better by more than train.keep_margin=0.005" in stats["model_reason"]


def test_choices_are_validated_config_fields():
    cfg = build_config("tiny", overrides=["train.loss=l1:1,ssim:0.2", "train.patches=texture", "train.train_last=1",
                                          "train.degrade=noise:2", "train.multiscale=true", "train.dedup=1.5", "train.holdout=2"])
    assert parse_loss(cfg.train.loss) == {"l1": 1.0, "ssim": 0.2}
    assert cfg.hash() != build_config("tiny").hash()  # they change the result, so the output folder
    for bad, msg in (("train.loss=l3", "unknown term"), ("train.loss=l1:-1", "> 0"), ("train.loss=l1,l1", "twice"),
                     ("train.patches=random", "uniform or texture"), ("train.dedup=300", "0..255"), ("train.train_last=-1", ">= 0")):
        with pytest.raises(ValueError, match=msg):
            build_config("tiny", overrides=[bad])


def test_niqe_term_survives_letterboxed_frames():
    img = bird().copy()
    img[:80] = 0  # black bars
    img[-80:] = 0
    stats = finetune(tiny_model(), [img], TrainConfig(steps=6, patch_size=48, batch_size=8, lr=1e-4, loss="l1:1,niqe:0.05"), 2, CPU, seed=1)
    assert np.isfinite(stats["loss_last"]) and stats["steps"] == 6


def test_multiscale_says_when_frames_are_too_small():
    small = np.asarray(Image.fromarray(bird()).resize((88, 72)))
    stats = finetune(tiny_model(), [small], TrainConfig(steps=2, patch_size=48, batch_size=2, multiscale=True), 2, CPU, seed=0)
    assert stats["multiscale_used"] == 0.0
    stats = finetune(tiny_model(), [bird()], TrainConfig(steps=2, patch_size=48, batch_size=2, multiscale=True), 2, CPU, seed=0)
    assert stats["multiscale_used"] == 1.0


def test_auto_takes_the_parts_of_the_estimate_it_names():
    from pipeline.train.finetune import auto_parts, video_degradation

    est = {"blur_sigma": 1.4, "noise_sigma": 3.0, "codec": "h264", "qp": 30.0, "bits_per_pixel": 0.2}
    assert auto_parts("") is None and auto_parts("noise:2") is None
    assert auto_parts("auto") == ("blur", "noise", "codec")
    full, blur_codec = video_degradation(est), video_degradation(est, auto_parts("auto:blur,codec"))
    assert (full.blur_sigma, full.noise_sigma, full.codec, full.quality) == (1.4, 3.0, "x264", 26)
    assert (blur_codec.blur_sigma, blur_codec.noise_sigma, blur_codec.codec) == (1.4, 0.0, "x264")
    assert video_degradation(est, ("noise",)).codec is None and video_degradation(est, ("noise",)).blur_sigma == 0.0
    with pytest.raises(ValueError, match="auto:<parts>"):
        auto_parts("auto:sharpen")


def test_a_multi_frame_model_fine_tunes_on_windows_of_real_frames():
    """DUF's self-transfer: windows of a real clip's consecutive frames; each sample is the
    same region of every frame (the clip's own motion), the target the centre frame's;
    training lowers the held-out loss, and the do-no-harm choice applies as for EDSR."""
    from pipeline.datasets.sequences import sample_video_windows
    from pipeline.media.probe import probe
    from pipeline.media.windows import windows
    from pipeline.models import build_model
    from tests.media.conftest import CARPHONE, sequential_decode

    frames = [rgb for _, rgb in sequential_decode(CARPHONE, probe(CARPHONE).colorspace)]
    wins = [w for _, w in windows(((0, f, i % 4 == 0) for i, f in enumerate(frames)), 1)]
    assert len(wins) == 10 and wins[3].shape == (3, 144, 176, 3) and np.array_equal(wins[3][1], frames[12])
    lr, hr = sample_video_windows(wins, 4, 48, 2, np.random.default_rng(0), augment=False)
    assert lr.shape == (4, 3, 3, 24, 24) and hr.shape == (4, 3, 48, 48)
    # the target is a region of a centre frame, and the input's middle frame is that region downscaled
    centres = torch.stack([torch.from_numpy(w[1]).permute(2, 0, 1).float() / 255 for w in wins])
    found = [(c[:, y:y + 48, x:x + 48] - hr[0]).abs().max() < 1e-6 for c in centres for y in range(0, 97) for x in range(0, 129)
             if (c[:, y, x] - hr[0][:, 0, 0]).abs().max() < 1e-6]
    assert any(found)
    torch.manual_seed(0)
    model = build_model({"name": "duf", "n_layers": 2, "n_feats": 8, "growth": 4, "frames": 3, "scale": 2})
    cfg = TrainConfig(steps=60, patch_size=48, batch_size=4, lr=1e-3, holdout=2, eval_every=20, patience=3)
    stats = finetune(model, wins, cfg, 2, CPU, seed=0)
    assert stats["train_frames"] == 8 and stats["val_best"] < stats["val_first"], stats
    assert stats["model_used"] in ("finetuned", "pretrained") and stats["model_reason"]
    with pytest.raises(ValueError, match="a multi-frame model fine-tunes with the defaults only so far"):
        finetune(model, wins, TrainConfig(steps=2, patch_size=48, multiscale=True), 2, CPU, seed=0)


def test_a_continuous_model_fine_tunes_at_a_fractional_scale():
    """Self-pairs at x2.5: targets a multiple of 5 px, inputs 2/5 of them; the model
    learns at that scale (its held-out loss falls), as EDSR does at an integer one."""
    from pipeline.datasets.patches import effective_patch, lr_side
    from pipeline.models.liif import LIIF

    frames = [np.asarray(Image.open(os.path.join(DATA, "bird.png")).convert("RGB"))] * 4
    assert effective_patch(frames, 96, 2.5) == 95 and lr_side(95, 2.5) == 38
    assert effective_patch(frames, 96, 1.875) == 90 and lr_side(90, 1.875) == 48  # 15/8
    torch.manual_seed(0)
    model = LIIF(n_resblocks=1, n_feats=8, hidden=16, layers=2, scale=4.0)
    with torch.no_grad():  # away from its bicubic start, which a few steps of a random encoder do not beat
        model.mlp[-1].weight.normal_(0, 0.05)
    cfg = TrainConfig(steps=40, patch_size=96, batch_size=4, lr=1e-3, holdout=1, eval_every=10, patience=4)
    stats = finetune(model, frames, cfg, 2.5, CPU, seed=0)
    assert stats["patch"] == 95 and model.scale == 2.5
    assert stats["val_best"] < stats["val_first"], stats
