"""Config: presets, YAML, --set overrides, validation, help, hashing."""

import subprocess
import sys

import pytest

from pipeline.config import RestoreConfig, build_config, describe_fields
from pipeline.presets import PRESETS


def test_presets_build_and_differ():
    tiny, base, full = (build_config(p) for p in ("tiny", "baseline", "full"))
    assert (tiny.model.n_resblocks, tiny.model.n_feats) == (2, 16)
    assert (base.model.n_resblocks, base.model.n_feats) == (16, 64)
    assert (full.model.n_resblocks, full.model.n_feats, full.model.res_scale) == (32, 256, 0.1)
    assert len({tiny.hash(), base.hash(), full.hash()}) == 3



def test_every_preset_builds_and_its_shipped_weights_exist_for_every_scale():
    from pipeline.models.weights import BUILTIN_PREFIX, builtin

    for entry in PRESETS:
        for scale in (2, 3, 4):
            cfg = build_config(entry.name, scale=scale)
            pretrained = cfg.model.pretrained or ""
            if pretrained.startswith(BUILTIN_PREFIX):
                w = builtin(pretrained)
                assert w.read(scale)  # present, and its SHA-256 matches the table
                assert w.arch == {k: v for k, v in cfg.model.arch_dict(scale).items() if k != "scale"}


def test_yaml_then_set_then_explicit(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("scale: 3\ntrain:\n  steps: 7\n  frames: 'fps:2'\nmedia:\n  crf: 20\n")
    cfg = build_config("tiny", str(y), ["train.steps=9", "model.pretrained=/x.pt"], scale=4)
    assert cfg.scale == 4 and cfg.train.steps == 9 and cfg.train.frames == "fps:2" and cfg.media.crf == 20
    assert cfg.model.pretrained == "/x.pt"
    assert cfg.model.n_feats == 16  # from the preset, untouched


@pytest.mark.parametrize(
    "override, message",
    [
        ("scale=5", "scale must be a number in [1, 4] (2, 3, 4, or e.g. 2.5), got 5"),
        ("train.frames=every", "train.frames must be"),
        ("train.frames=fps:0", "train.frames must be"),
        ("train.steps=0", "train.steps must be >= 1"),
        ("train.stepz=3", "unknown config field 'stepz'"),
        ("nosection.x=1", "unknown config key"),
        ("media.crf=80", "media.crf must be in 0..51"),
        ("train.steps=abc", "train.steps must be"),
        ("infer.precision=int8", "infer.precision must be"),
        ("train.finetune=false", "needs a starting model"),
        ("train.patch_size=50", "must be a multiple of scale"),
        ("train.lr=.nan", "train.lr must be a finite number > 0"),
        ("model.res_scale=.inf", "model.res_scale must be a finite number > 0"),
        ("train.frames=fps:inf", "train.frames must be"),
        ("train.seed=-1", "train.seed must be >= 0, got -1"),
        ("device=tpu", "device must be auto, gpu or cpu"),
        ("media.codec=ffv1", "media.codec=ffv1 is written in Matroska only: set media.container=mkv (got mp4)"),
        ("media.codec=vp9", "media.codec must be libx264, libx265 or ffv1"),
        ("media.damaged=skip", "media.damaged must be conceal or fail"),
        ("media.max_damaged=2", "media.max_damaged must be in 0..1"),
        ("train.min_pair_side=-1", "train.min_pair_side must be >= 0, got -1"),
        ("train.min_detail=-0.1", "train.min_detail must be a number >= 0, got -0.1"),
        ("model.arch=vdsr", "model.arch: unknown 'vdsr' (known: duf, edsr, liif)"),
    ],
)
def test_bad_values_are_named(override, message):
    kw = {"scale": 4} if "patch_size" in override else {}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        build_config("baseline", None, [override], **kw)


@pytest.mark.parametrize("override, message", [("model.frames=4", "DUF needs an odd number of frames"),
                                               ("model.n_layers=2", "DUF with 7 frames needs at least 3 dense layers")])
def test_duf_fields_are_checked_for_duf(override, message):
    duf = ["model.arch=duf", "train.finetune=false", "model.pretrained=/x.pt"]
    assert build_config("baseline", None, [*duf[1:], override]).model.arch == "edsr"  # EDSR does not read them
    with pytest.raises(ValueError, match=message):
        build_config("baseline", None, [*duf, override])
    with pytest.raises(ValueError, match="model.arch=duf fine-tunes on clean bicubic self-pair windows with the L1 loss only so far"):
        build_config("baseline", None, ["model.arch=duf", "train.multiscale=true"])
    cfg = build_config("baseline", None, duf)
    assert cfg.model.arch_dict(4) == {"name": "duf", "n_layers": 6, "n_feats": 64, "growth": 16, "frames": 7, "scale": 4}
    # the DUF fields stay out of an EDSR config's hash at their defaults (earlier outputs keep their folders)
    edsr = build_config("baseline", None, duf[1:])
    assert edsr.hash() != build_config("baseline", None, [*duf[1:], "model.growth=8"]).hash()


def test_hash_is_stable_and_tracks_results():
    a = build_config("tiny")
    assert a.hash() == build_config("tiny").hash()
    assert a.hash() != build_config("tiny", overrides=["train.steps=41"]).hash()
    assert a.hash() == build_config("tiny", overrides=["infer.batch_size=2"]).hash()  # speed only


def test_help_documents_every_field():
    text = describe_fields()
    import dataclasses

    for f in dataclasses.fields(RestoreConfig):
        section = getattr(RestoreConfig(), f.name)
        if dataclasses.is_dataclass(section):
            for g in dataclasses.fields(section):
                assert f"{f.name}.{g.name} =" in text
                assert g.metadata.get("help"), f"{f.name}.{g.name} has no help"
    out = subprocess.run([sys.executable, "-m", "jobs.restore", "--help"], capture_output=True, text=True, check=True).stdout
    assert "train.frames" in out and "--no-finetune" in out and "tiny" in out


def test_storage_settings_are_checked_and_do_not_change_results():
    cfg = build_config("tiny", overrides=["storage.endpoint_url=http://minio:9000", "storage.addressing_style=path", "videos_at_once=3"])
    assert cfg.storage.endpoint_url == "http://minio:9000" and cfg.videos_at_once == 3
    assert cfg.hash() == build_config("tiny").hash()  # where results are stored is not what they are
    for bad, msg in (("storage.addressing_style=sideways", "addressing_style"), ("storage.endpoint_url=minio:9000", "http://"),
                     ("storage.scratch_gb=0", "scratch_gb"), ("videos_at_once=-1", "videos_at_once")):
        with pytest.raises(ValueError, match=msg):
            build_config("tiny", overrides=[bad])


def test_fields_added_later_keep_earlier_outputs_hash_while_at_their_default():
    """media.codec/damaged/max_damaged came after outputs were hashed: at their defaults
    the tiny preset's hash is the one earlier versions wrote (so a scheduled run does not
    restore the archive again); set otherwise, they change it."""
    assert build_config("tiny").hash() == "0258f4ba7c57"
    assert build_config("tiny", None, ["media.codec=libx265"]).hash() != "0258f4ba7c57"
    assert build_config("tiny", None, ["media.damaged=fail"]).hash() != "0258f4ba7c57"
    assert build_config("tiny", None, ["train.min_pair_side=8"]).hash() != "0258f4ba7c57"


def test_frame_rate_specs_are_checked_when_the_config_is_built():
    assert build_config("tiny", overrides=["media.fps=2x"]).hash() != build_config("tiny").hash()
    for bad, says in (("fast", "expected a multiple like 2x"), ("1x", "a multiple must be above 1"), ("0", "a rate must be above 0")):
        with pytest.raises(ValueError, match=f"media.fps: fps '{bad}'.*{says}"):
            build_config("tiny", overrides=[f"media.fps={bad}"])


def test_any_scale_and_size_for_the_continuous_model_and_the_integer_ones():
    liif = ["model.arch=liif", "model.pretrained=builtin:liif_16x32_bicubic"]
    cfg = build_config("tiny", overrides=liif, scale=2.5)
    assert cfg.scale == cfg.model_scale == 2.5  # the continuous model restores at the scale itself
    assert build_config("tiny", scale=2.0).scale == 2 and isinstance(build_config("tiny", scale=2.0).scale, int)
    assert build_config("tiny", scale=2.0).hash() == build_config("tiny", scale=2).hash()  # 2.0 is 2: the same outputs
    # an integer model restores at the next integer scale (at least 2), then is resized down
    assert [build_config("tiny", scale=s).model_scale for s in (1.5, 2, 2.5, 3.2, 4)] == [2, 2, 3, 4, 4]
    assert build_config("tiny", scale=2.5).hash() != build_config("tiny", scale=3).hash()
    for bad in (4.5, 1):
        with pytest.raises(ValueError, match="scale must be"):
            build_config("tiny", scale=bad)
    with pytest.raises(ValueError, match=r"scale must be a number in \[1, 4\]"):
        build_config("tiny", overrides=liif, scale=4.5)
    assert build_config("tiny", overrides=["media.size=1920x1080"], scale=4).media.size == "1920x1080"  # (x4, then resized)
    with pytest.raises(ValueError, match="even sides"):
        build_config("tiny", overrides=[*liif, "media.size=1921x1080"])
    with pytest.raises(ValueError, match="media.fit must be keep, pad or crop"):
        build_config("tiny", overrides=[*liif, "media.size=1920x1080", "media.fit=stretch"])
    with pytest.raises(ValueError, match="fine-tunes on clean bicubic self-pairs"):
        build_config("tiny", overrides=[*liif, "train.degrade=noise:5"])
    # the new fields at their defaults leave the hash of an integer run as it was
    base = build_config("tiny")
    assert base.hash() == build_config("tiny", overrides=["media.fit=keep", "model.hidden=64"]).hash()
