"""Train the shipped base weights of a preset, in resumable slices: the plan below, one
stage at a time, each continuing from the state committed in ``training/<name>/<stage>/``.

    python -m pipeline.data.make_weights --name NAME --data TRAIN_IMAGES \\
        --val Set5=SET5_HR --val Set14=SET14_HR [--stages x2-bicubic,...] [--hours H] [--threads N]

NAME: an EDSR shape (``SHAPES``, plan ``PLAN``), a DUF one (``DUF_SHAPES``, plan
``DUF_PLAN``: windows of frames, scored on synthesised validation windows) or a
continuous-scale one (``LIIF_SHAPES``, plan ``LIIF_PLAN``: random scales in [1, 4], its
encoder from the shipped EDSR x2 file, scored at ``LIIF_SCALES``; it ships as
``<NAME>_<flavour>.pt``).
TRAIN_IMAGES: the T91 + BSD200 images (the 291-image set of VDSR; see
``pipeline/data/weights/MODEL_CARD.md``). A stage whose ``init`` is not trained yet waits
(it is skipped this time); a finished stage copies its checkpoint to
``pipeline/data/weights/<NAME>_<flavour>_x<S>.pt`` (the last stage of that scale and
flavour in the plan; an earlier one is only the next one's start; a file an earlier stage
shipped is replaced only under the stage's ``SHIP_RULES`` rule) and prints the line
for the ``WEIGHTS`` table. Stop it at any time (or give ``--hours``): the next run, on this
machine or another with this repository, continues from the last committed state.

Each stage runs in child processes of at most ``SLICE_SECONDS`` each, one after another,
every one continuing from the state the last one saved: bf16 training on the CPU grows
the process's memory by about 5 MB a step (the cause is not found; fp32 does not), and a
new process every few hundred steps keeps it bounded.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import multiprocessing
import os
import queue
import signal
import time

from pipeline.train.pretrain import PretrainConfig, final_name, pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS_DIR = os.path.join(ROOT, "pipeline", "data", "weights")
STATE_DIR = os.path.join(ROOT, "training")
#: the longest one training process of a stage runs (it stops at its next state save after this)
SLICE_SECONDS = 600.0

#: name -> (n_resblocks, n_feats)
SHAPES = {"edsr_16x32": (16, 32), "edsr_8x32": (8, 32), "edsr_16x48": (16, 48), "edsr_16x64": (16, 64)}
#: multi-frame models: name -> (n_layers, n_feats, growth, frames)
DUF_SHAPES = {"duf_6x32": (6, 32, 16, 7)}

#: stage -> (scale, flavour, steps, lr, init stage or None), in the order they run: bicubic
#: x2 first; x3/x4 start from x2 (as in the EDSR paper), each archive flavour from its
#: bicubic model. x4 comes right after x2: the hardest scale, where the base model matters most.
PLAN: dict[str, tuple[int, str, int, float, str | None]] = {
    "x2-bicubic": (2, "bicubic", 40_000, 4e-4, None),
    "x4-bicubic": (4, "bicubic", 6_000, 2e-4, "x2-bicubic"),
    "x4-archive": (4, "archive", 5_000, 1e-4, "x4-bicubic"),
    "x3-bicubic": (3, "bicubic", 6_000, 2e-4, "x2-bicubic"),
    "x2-archive": (2, "archive", 5_000, 1e-4, "x2-bicubic"),
    "x3-archive": (3, "archive", 5_000, 1e-4, "x3-bicubic"),
    "x4-archive-long": (4, "archive", 8_000, 1e-4, "x4-archive"),
    "x2-archive-long": (2, "archive", 8_000, 1e-4, "x2-archive"),
    "x3-archive-long": (3, "archive", 8_000, 1e-4, "x3-archive"),
    "x4-archive-centred": (4, "archive", 4_000, 5e-5, "x4-archive-long"),
    "x2-archive-balanced": (2, "archive", 6_000, 5e-5, "x2-archive-long"),
    "x3-archive-balanced": (3, "archive", 6_000, 5e-5, "x3-archive-long"),
    "x2-archive-clean": (2, "archive", 6_000, 5e-5, "x2-archive-balanced"),
    "x4-archive-more": (4, "archive", 6_000, 1e-4, "x4-archive-centred"),
}

#: the DUF plan. Its first stage continues a probe run (1,750 steps, Set5 windows 32.79 dB)
#: with that run's recipe: windows of 7 frames, HR patches of 96 px, batch 8, constant lr;
#: its validation still rose 0.4 dB over its last 2,250 steps, so x4-bicubic-decay continues
#: it with the learning rate falling on a cosine (to lr/100), and ships.
DUF_PLAN: dict[str, tuple[int, str, int, float, str | None]] = {
    "x4-bicubic": (4, "bicubic", 6_000, 1e-4, None),
    "x4-bicubic-decay": (4, "bicubic", 2_000, 1e-4, "x4-bicubic"),
    "x4-bicubic-motion": (4, "bicubic", 2_000, 1e-4, "x4-bicubic-decay"),
    "x4-bicubic-real": (4, "bicubic", 2_000, 1e-4, "x4-bicubic-motion"),
    "x4-archive": (4, "archive", 2_000, 1e-4, "x4-bicubic-real"),
}
#: DUF stage -> its learning-rate schedule (constant, the "step" schedule's first step, otherwise)
DUF_SCHEDULE = {"x4-bicubic-decay": "cosine", "x4-bicubic-motion": "cosine", "x4-bicubic-real": "cosine", "x4-archive": "cosine"}
#: DUF stage -> other PretrainConfig fields. x4-bicubic-motion: windows moving up to 10 HR px
#: a frame (2.5 input px at x4), where the earlier stages' moved up to 2; real pans move
#: 0.75-2.25 input px a frame, and the longer DUF trained on the slow windows the worse it
#: restored them (docs/RESULTS.md)
#: x4-bicubic-real: half of each batch cut from real videos (``--video``: real motion,
#: occlusion and motion blur, which the synthesised windows lack), the other half as before
#: x4-archive: the real-windows stage's recipe with the archive degradations (the EDSR
#: archive model's, one draw per window, every frame alike) on the inputs, 35 % of the
#: windows left clean as in the EDSR -long stages
DUF_EXTRA: dict[str, dict] = {"x4-bicubic-motion": {"max_speed": 10.0}, "x4-bicubic-real": {"max_speed": 10.0, "p_video": 0.5}}
DUF_EXTRA["x4-archive"] = {**DUF_EXTRA["x4-bicubic-real"], "p_clean": 0.35}

#: continuous-scale models: name -> (n_resblocks, n_feats, MLP width, MLP layers after the first)
LIIF_SHAPES = {"liif_16x32": (16, 32, 64, 3)}
#: the continuous plan: one stage at random scales in [1, 4] (its "scale" is the one it is
#: validated at), its encoder starting from the shipped EDSR 16x32 x2 bicubic model
LIIF_PLAN: dict[str, tuple[int, str, int, float, str | None]] = {
    "any-bicubic": (4, "bicubic", 4_000, 2e-4, None),
}
LIIF_SCALES = (2, 2.5, 3, 3.5, 4)  # the scales its file's scores are measured at
LIIF_INIT = {"any-bicubic": os.path.join(WEIGHTS_DIR, "edsr_16x32_bicubic_x2.pt")}


def plan_of(name: str) -> dict[str, tuple[int, str, int, float, str | None]]:
    return DUF_PLAN if name in DUF_SHAPES else LIIF_PLAN if name in LIIF_SHAPES else PLAN


#: stage -> other PretrainConfig fields. The -long stages continue an archive model with
#: more clean patches (35 % instead of 20 %): after 5k steps the archive models lost 0.8
#: (x4) to 1.4 dB (x2) to the bicubic ones on clean Set5 and were still improving.
#: x4-archive-centred continues x4-archive-long after decimation was made centre-aligned
#: (before, a fifth of its degraded patches were shifted 1.5 px against their targets).
EXTRA: dict[str, dict] = {stage: {"p_clean": 0.35} for stage in ("x2-archive-long", "x3-archive-long", "x4-archive-long", "x4-archive-centred")}
#: x2-archive-balanced continues x2-archive-long with half its patches clean: at x2 the
#: archive model still lost 1.0 dB to the bicubic one on clean Set5 with 35 % clean patches
EXTRA["x2-archive-balanced"] = {"p_clean": 0.5}
#: x3-archive-balanced does the same at x3, where x3-archive-long lost 0.59 dB on clean Set5
EXTRA["x3-archive-balanced"] = {"p_clean": 0.5}
#: x2-archive-clean goes on at x2 with 70 % clean patches: with half clean the x2 archive
#: model still lost 0.70 dB on clean Set5, with 0.38 dB to spare on the degraded gain
EXTRA["x2-archive-clean"] = {"p_clean": 0.7}
#: x4-archive-more continues the shipped x4 archive model (35 % clean patches, a new cosine
#: from 1e-4): at x4 it gains only +0.18 dB on the degraded sets, and each longer stage so
#: far raised both its clean and its degraded scores
EXTRA["x4-archive-more"] = {"p_clean": 0.35}


#: the degraded Set14 sets an archive file is judged on (fixed seeds, ``pipeline.benchmark``)
DEGRADED = ("blur1.6", "noise5", "x264crf30")
#: the scores the ship rules read
RULE_SCORES = ("Set5_psnr_y",) + tuple(f"Set14_{d}_psnr_y" for d in DEGRADED)


def degraded_gain(scores: dict, bicubic: dict) -> float:
    """Mean Y-PSNR gain over the bicubic flavour's file on the degraded Set14 sets."""
    return sum(scores[f"Set14_{d}_psnr_y"] - bicubic[f"Set14_{d}_psnr_y"] for d in DEGRADED) / len(DEGRADED)


def clean_up_degraded_kept(new: dict, old: dict, bicubic: dict) -> tuple[bool, str]:
    """An archive continuation replaces the shipped file when clean Set5 rises above the
    shipped file's and the degraded Set14 mean stays >= 0.5 dB over the bicubic flavour's
    file of the same scale (the archive flavour's target)."""
    gain = degraded_gain(new, bicubic)
    ok = new["Set5_psnr_y"] > old["Set5_psnr_y"] and gain >= 0.5
    return ok, f"clean Set5 {new['Set5_psnr_y']:.3f} against the shipped {old['Set5_psnr_y']:.3f}; degraded Set14 mean {gain:+.3f} dB over the bicubic file (needs >= +0.5)"


def degraded_up_clean_kept(new: dict, old: dict, bicubic: dict) -> tuple[bool, str]:
    """An archive continuation replaces the shipped file when its degraded Set14 mean gain
    over the bicubic file rises above the shipped file's, and its clean Set5 stays within
    0.5 dB of the bicubic file (the archive flavour's clean target)."""
    gain, before = degraded_gain(new, bicubic), degraded_gain(old, bicubic)
    clean = new["Set5_psnr_y"] - bicubic["Set5_psnr_y"]
    ok = gain > before and clean >= -0.5
    return ok, (f"degraded Set14 mean {gain:+.3f} dB over the bicubic file against the shipped {before:+.3f}; "
                f"clean Set5 {clean:+.3f} dB against the bicubic file (needs >= -0.5)")


#: stage -> the rule (written before the stage ran) under which its finished model replaces a
#: package file that an earlier stage shipped: rule(new scores, shipped file's scores, the
#: bicubic flavour's scores at that scale) -> (replace?, why). A continuation without a rule
#: never replaces a shipped file on its own: its scores are printed, and the file stays.
SHIP_RULES = {stage: clean_up_degraded_kept for stage in ("x2-archive-balanced", "x3-archive-balanced", "x2-archive-clean")}
SHIP_RULES["x4-archive-more"] = degraded_up_clean_kept


def config(name: str, stage: str, threads: int) -> PretrainConfig:
    scale, flavour, steps, lr, _ = plan_of(name)[stage]
    if name in DUF_SHAPES:
        layers, feats, growth, frames = DUF_SHAPES[name]
        return PretrainConfig(scale=scale, model="duf", n_layers=layers, n_feats=feats, growth=growth, frames=frames, flavour=flavour,
                              steps=steps, batch_size=8, patch_size=96, lr=lr, lr_schedule=DUF_SCHEDULE.get(stage, "step"), lr_step=200_000, val_every=250,
                              checkpoint_every=250, threads=threads, precision="auto", seed=0, **DUF_EXTRA.get(stage, {}))
    if name in LIIF_SHAPES:
        blocks, feats, hidden, layers = LIIF_SHAPES[name]
        return PretrainConfig(scale=scale, model="liif", n_resblocks=blocks, n_feats=feats, hidden=hidden, mlp_layers=layers,
                              flavour=flavour, steps=steps, batch_size=16, patch_size=192, lr=lr, lr_schedule="cosine",
                              val_every=1000, checkpoint_every=250, threads=threads, precision="auto", seed=0)
    blocks, feats = SHAPES[name]
    return PretrainConfig(scale=scale, n_resblocks=blocks, n_feats=feats, flavour=flavour, steps=steps, batch_size=16,
                          patch_size=48 * scale, lr=lr, lr_schedule="cosine", val_every=2500, checkpoint_every=250,
                          threads=threads, precision="auto", seed=scale, **EXTRA.get(stage, {}))


def shipped(name: str, stage: str) -> str | None:
    """The package file a finished stage becomes: the last stage of its scale and flavour
    in the plan ships; an earlier one (continued by a later stage) does not."""
    scale, flavour, *_ = plan_of(name)[stage]
    last = [s for s, plan in plan_of(name).items() if plan[:2] == (scale, flavour)][-1]
    if stage != last:
        return None
    return os.path.join(WEIGHTS_DIR, f"{name}_{flavour}.pt" if name in LIIF_SHAPES else f"{name}_{flavour}_x{scale}.pt")


def run(name: str, stages: list[str], data: list[str], val: dict[str, str], hours: float, threads: int,
        start: dict[str, str] | None = None, videos: list[str] | None = None) -> None:
    t_end = time.monotonic() + hours * 3600 if hours else None
    for stage in stages:
        out = os.path.join(STATE_DIR, name, stage)
        cfg = config(name, stage, threads)
        if os.path.exists(os.path.join(out, final_name(cfg))):
            publish(name, stage, os.path.join(out, final_name(cfg)), val)
            continue
        if cfg.p_video and not videos:
            raise SystemExit(f"make_weights: stage {stage} cuts windows from videos: give them with --video FILE")
        init_stage = plan_of(name)[stage][4]
        init = (start or {}).get(stage) or (LIIF_INIT.get(stage) if name in LIIF_SHAPES else None)  # a warm start for a first stage
        if init_stage is not None:
            init = os.path.join(STATE_DIR, name, init_stage, final_name(config(name, init_stage, threads)))
            if not os.path.exists(init):
                print(f"make_weights: {stage} waits for {init_stage}", flush=True)
                continue
        print(f"make_weights: {name} {stage}: {cfg.steps} steps of {cfg.flavour} x{cfg.scale} pairs", flush=True)
        while True:
            left = t_end - time.monotonic() if t_end else SLICE_SECONDS
            if t_end and left < 60:
                print("make_weights: time is up", flush=True)
                return  # the state is in `out`: commit it
            done = in_child(dataclasses.replace(cfg, init=init, max_seconds=min(left, SLICE_SECONDS)), data, out, val,
                            videos if cfg.p_video else None)
            if done.get("checkpoint"):
                publish(name, stage, done["checkpoint"], val)
                break


def _slice(cfg: PretrainConfig, data: list[str], out: str, val: dict[str, str], videos: list[str] | None, results) -> None:
    results.put(pretrain(cfg, data, out, val=val, where="local", videos=videos))


def in_child(cfg: PretrainConfig, data: list[str], out: str, val: dict[str, str], videos: list[str] | None = None) -> dict:
    """One slice of a stage's training, in a fresh process (see the module docstring).
    A child that dies without a result (an error, the kernel's OOM killer) is an error
    here, not a wait for ever; when this process is stopped (Ctrl-C, SIGTERM) the child is
    stopped too, so no training goes on unseen (its state is the last one saved)."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_slice, args=(cfg, data, out, val, videos, results))
    proc.start()
    print(f"make_weights: training in process {proc.pid}", flush=True)
    done = None
    try:
        while done is None and (proc.is_alive() or not results.empty()):  # the result before join(): a child
            try:  # with a queued result waits for it to be read
                done = results.get(timeout=2.0)
            except queue.Empty:
                pass
        proc.join()
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if proc.exitcode or done is None:
        raise RuntimeError(f"make_weights: the training process of {out} failed (exit code {proc.exitcode})")
    return done


def scores(path: str, scale: int, val: dict[str, str]) -> dict[str, float]:
    """The benchmark protocol's Y-PSNR on each validation set, and on the degraded Set14
    (fixed seeds) when it is one of them; for a multi-frame model, its Y-PSNR on windows
    synthesised from each set's images (``pretrain.validation_windows``, fixed seeds); for a
    continuous-scale model, its Y-PSNR at each of ``LIIF_SCALES``."""
    from pipeline.benchmark import benchmark
    from pipeline.models import checkpoint
    from pipeline.train.pretrain import list_images, load_images, validate_windows, validation_windows

    model, meta = checkpoint.load(path)
    if meta["arch"].get("name") == "duf":
        import torch

        return {f"{name}_windows_psnr_y": round(validate_windows(model, validation_windows(load_images(list_images(folder)), scale,
                                                                                                    meta["arch"]["frames"]), scale,
                                                                 torch.device("cpu")), 3) for name, folder in val.items()}
    if meta["arch"].get("name") == "liif":  # one model, every scale it is compared at
        return {f"{name}_x{s:g}_psnr_y": round(benchmark(path, folder, s)["mean"]["psnr_y"], 3)
                for name, folder in val.items() for s in LIIF_SCALES}
    out = {}
    for name, folder in val.items():
        out[f"{name}_psnr_y"] = round(benchmark(path, folder, scale)["mean"]["psnr_y"], 3)
        if name.lower() == "set14":
            for degrade in DEGRADED:
                out[f"{name}_{degrade}_psnr_y"] = round(benchmark(path, folder, scale, degrade=degrade)["mean"]["psnr_y"], 3)
    return out


def portable(prov: dict) -> dict:
    """Provenance without this machine's folders: the starting checkpoint relative to the
    repository (its file name when outside it), the training data by folder name."""
    prov = dict(prov)
    init = prov.get("init")
    if init and os.path.isabs(init):
        rel = os.path.relpath(init, ROOT)
        prov["init"] = rel if not rel.startswith("..") else os.path.basename(init)
    if prov.get("train_images"):
        prov["train_images"] = ", ".join(os.path.basename(p.rstrip("/")) for p in prov["train_images"].split(", "))
    return prov


def publish(name: str, stage: str, checkpoint_path: str, val: dict[str, str]) -> None:
    """Copy a finished stage's checkpoint into the package, with its benchmark scores in
    its provenance, and print its table line. A file an earlier stage shipped is replaced
    only under the stage's ``SHIP_RULES`` rule, when it holds."""
    from pipeline.models import checkpoint

    dst = shipped(name, stage)
    if dst is None:
        print(f"make_weights: {stage} is done; a later stage of the plan continues it and ships", flush=True)
        return
    current = checkpoint.load(dst)[1]["provenance"] if os.path.exists(dst) else None
    if current is None or current.get("stage") != stage:
        model, meta = checkpoint.load(checkpoint_path)
        prov = dict(portable(meta["provenance"]), scores=scores(checkpoint_path, plan_of(name)[stage][0], val), stage=stage,
                    made_by=f"python -m pipeline.data.make_weights --name {name}")
        if current is not None:
            ok, why = replaces(name, stage, prov["scores"], current)
            print(f"make_weights: {stage} {prov['scores']}\nmake_weights: {why}", flush=True)
            if not ok:
                print(f"make_weights: {dst} stays the one {current.get('stage')} shipped", flush=True)
                return
        checkpoint.save(model, dst, prov)
    digest = hashlib.sha256(open(dst, "rb").read()).hexdigest()
    key = 0 if name in LIIF_SHAPES else plan_of(name)[stage][0]  # the WEIGHTS table keys a continuous model's one file by 0 (any scale)
    print(f"make_weights: {stage} -> {dst}\n    {key}: ({os.path.basename(dst)!r}, {digest!r}),", flush=True)


def replaces(name: str, stage: str, new: dict, current: dict) -> tuple[bool, str]:
    """Whether ``stage``'s scores replace the shipped file whose provenance is ``current``."""
    from pipeline.models import checkpoint

    rule = SHIP_RULES.get(stage) if plan_of(name) is PLAN else None  # (the rules read EDSR's image scores)
    if rule is None:
        return False, f"{name} {stage} has no ship rule (SHIP_RULES): compare it with {current.get('stage')}'s file by hand"
    scale = plan_of(name)[stage][0]
    bicubic = os.path.join(WEIGHTS_DIR, f"{name}_bicubic_x{scale}.pt")
    if not os.path.exists(bicubic):
        return False, f"the rule compares with the bicubic file {bicubic}, which is not there"
    old, base = current.get("scores", {}), checkpoint.load(bicubic)[1]["provenance"].get("scores", {})
    missing = sorted({f"{which}: {k}" for which, scores in (("new", new), ("shipped", old), ("bicubic", base)) for k in RULE_SCORES if k not in scores})
    if missing:
        return False, f"the rule needs scores that are missing ({', '.join(missing)}; --val Set5=... --val Set14=...): compare by hand"
    return rule(new, old, base)


def _stop(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through in_child, which stops the training process


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _stop)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, choices=sorted(SHAPES) + sorted(DUF_SHAPES) + sorted(LIIF_SHAPES))
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--val", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--stages", default="", help="stages to run, in order (default: the name's whole plan)")
    ap.add_argument("--hours", type=float, default=0.0, help="stop (saving the state) after this many hours; 0: no limit")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of this process")
    ap.add_argument("--video", action="append", default=[], metavar="FILE",
                    help="a video file the stages with real windows (DUF x4-bicubic-real) cut training windows from")
    ap.add_argument("--init", action="append", default=[], metavar="STAGE=CHECKPOINT",
                    help="start a stage without an init stage from this checkpoint (same scale), e.g. a shape-study run")
    args = ap.parse_args(argv)
    plan = plan_of(args.name)
    stages = args.stages.split(",") if args.stages else list(plan)
    unknown = [s for s in stages if s not in plan]
    if unknown:
        ap.error(f"unknown stages {unknown} (the plan of {args.name}: {', '.join(plan)})")
    run(args.name, stages, args.data, dict(v.split("=", 1) for v in args.val), args.hours, args.threads,
        dict(v.split("=", 1) for v in args.init), args.video)


if __name__ == "__main__":
    main()
