"""The presets, one table: each says what it is for, its model (architecture and
starting weights) and its settings for ``jobs.restore`` and ``jobs.pretrain``. Both jobs'
``--preset`` and ``--help`` read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.registry import Registry


@dataclass(frozen=True)
class Preset:
    model: dict[str, Any]  # model.* fields (arch, n_resblocks, n_feats, res_scale, pretrained)
    restore: dict[str, Any] = field(default_factory=dict)  # other sections of the restore config
    pretrain: dict[str, Any] = field(default_factory=dict)  # PretrainConfig fields

    @property
    def continuous(self) -> bool:
        """Whether its model restores at any scale (then a media.size decides the scale)."""
        return self.model.get("arch") == "liif"

    def restore_tree(self) -> dict[str, Any]:
        return {"model": dict(self.model), **self.restore}

    def pretrain_fields(self) -> dict[str, Any]:
        arch = {k: v for k, v in self.model.items() if k in ("n_resblocks", "n_feats", "res_scale")}
        return {**arch, **self.pretrain}


PRESETS: Registry[Preset] = Registry("preset")
DEFAULT = "small"  # what jobs.restore, jobs.experiment and jobs.pretrain use without --preset
CONTINUOUS = "any"  # what jobs.restore uses without --preset for a non-integer --scale or a --size
PRESETS.add(
    "tiny",
    Preset(
        model={"arch": "edsr", "n_resblocks": 2, "n_feats": 16, "pretrained": "builtin:edsr_2x16"},
        restore={"train": {"steps": 40, "patch_size": 48, "batch_size": 8, "lr": 1e-4, "max_frames": 32},
                 "media": {"preset": "veryfast", "chunk_frames": 24}, "metrics": {"sample_frames": 4}},
        pretrain={"steps": 200, "batch_size": 8, "val_every": 50, "checkpoint_every": 50, "lr_step": 10_000},
    ),
    help="EDSR 2x16 from the shipped builtin:edsr_2x16 weights, 40 steps: seconds on 2 CPU cores, for tests and trials",
)
PRESETS.add(
    "small",
    Preset(model={"arch": "edsr", "n_resblocks": 16, "n_feats": 32, "pretrained": "builtin:edsr_16x32_archive"},
           # its weights ended their training at lr 1e-6: fine-tuned at 1e-4 they lost 0.2-3.2 dB on every x4 tuning
           # clip, at 5e-6 -0.6..+0.07 (docs/RESULTS.md)
           restore={"train": {"lr": 5e-6}}),
    help="EDSR 16x32 from the shipped builtin:edsr_16x32_archive weights (trained for archive inputs: blur, noise, JPEG and "
         "video compression; builtin:edsr_16x32_bicubic for clean ones), fine-tuned at lr 5e-6: the default, minutes per short "
         "clip on a CPU",
)
PRESETS.add(
    "baseline",
    Preset(model={"arch": "edsr", "n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}),
    help="EDSR-baseline 16 blocks x 64 features; needs model.pretrained (e.g. the official EDSR-PyTorch file)",
)
PRESETS.add(
    "full",
    Preset(model={"arch": "edsr", "n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, restore={"train": {"steps": 2000}}),
    help="EDSR 32 blocks x 256 features, residual scaling 0.1",
)
PRESETS.add(
    CONTINUOUS,
    Preset(model={"arch": "liif", "n_resblocks": 16, "n_feats": 32, "hidden": 64, "mlp_layers": 3, "pretrained": "builtin:liif_16x32_bicubic"},
           # the small preset's fine-tune settings (its weights also end their training at a low rate); not tuned for this model
           restore={"train": {"lr": 5e-6}}),
    help="any scale in [1, 4] and any output size (--scale 2.5, --size 1920x1080): EDSR 16x32 features read by a local implicit "
         "function, from the shipped builtin:liif_16x32_bicubic weights (clean bicubic pairs at random scales)",
)
