"""The weights shipped with the package, as a table (torchvision's ``Weights`` habit):
each entry says its architecture, flavour, files per scale with their SHA-256, and
where its training record is. ``model.pretrained = "builtin:NAME"`` picks an entry;
the files themselves (``pipeline/data/weights/``) are self-describing checkpoints whose
provenance holds the training data, steps and measured scores (``describe``), and
``pipeline/data/weights/MODEL_CARD.md`` lists them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from pipeline.registry import Registry

BUILTIN_PREFIX = "builtin:"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "weights")


@dataclass(frozen=True)
class Weights:
    """Shipped weights of one model at several scales."""

    arch: dict[str, Any]  # the architecture without its scale, e.g. {"name": "edsr", "n_resblocks": 2, ...}
    flavour: str  # "bicubic" (clean bicubic pairs) or "archive" (randomly degraded inputs)
    files: dict[int, tuple[str, str]] = field(default_factory=dict)  # scale -> (file name, sha256); scale 0: one file for every scale (continuous)
    made_by: str = ""  # the command that trained them

    def path(self, scale: float) -> str:
        if 0 in self.files:
            scale = 0
        if scale not in self.files:
            raise ValueError(f"no shipped file for x{scale} (scales: {', '.join(f'x{s}' for s in sorted(self.files))})")
        return os.path.join(WEIGHTS_DIR, self.files[scale][0])

    def read(self, scale: int) -> bytes:
        """The checkpoint's bytes, checked against the table's SHA-256 (a damaged or
        replaced file is refused)."""
        path = self.path(scale)
        with open(path, "rb") as fh:
            blob = fh.read()
        digest = hashlib.sha256(blob).hexdigest()
        want = self.files[0 if 0 in self.files else scale][1]
        if digest != want:
            raise ValueError(f"{path}: SHA-256 {digest[:16]}... does not match the shipped {want[:16]}...: reinstall the package")
        return blob

    def describe(self, scale: int) -> dict[str, Any]:
        """The provenance recorded in the checkpoint (training data, steps, scores)."""
        from pipeline.models import checkpoint

        return checkpoint.load(self.read(scale))[1]["provenance"]


WEIGHTS: Registry[Weights] = Registry("builtin weights")
WEIGHTS.add(
    "edsr_2x16",
    Weights(
        arch={"name": "edsr", "n_resblocks": 2, "n_feats": 16, "res_scale": 1.0},
        flavour="bicubic",
        files={
            2: ("edsr_2x16_x2.pt", "a046fb24f4a936c4003f3abbe4fa4ba3a08e624dee92848de5a89bda2661b855"),
            3: ("edsr_2x16_x3.pt", "27d820eaef734b5b0d5e328d1269c4356f67957ddce6bf6380ce554cfb9d3503"),
            4: ("edsr_2x16_x4.pt", "d00abcf82df1a51fe165c6c2523e3517a5666be511084b3fcdaf330bf9cd4717"),
        },
        made_by="python -m pipeline.data.make_tiny_weights --steps 15000",
    ),
    help="test-sized EDSR 2x16 (the tiny preset): seconds per fine-tune on 2 CPU cores",
)

EDSR_16X32 = {"name": "edsr", "n_resblocks": 16, "n_feats": 32, "res_scale": 1.0}  # both flavours of the `small` preset's model
WEIGHTS.add(
    "edsr_16x32_bicubic",
    Weights(
        arch=EDSR_16X32,
        flavour="bicubic",
        files={
            2: ("edsr_16x32_bicubic_x2.pt", "b5c9a279f3f20f01b251f624745577788fcd2e02891082ddd028edd95108774c"),
            3: ("edsr_16x32_bicubic_x3.pt", "091e8f5d892fdecfef0737742c3ed50ff42101f1f81df52f8902dc41ab28e5c4"),
            4: ("edsr_16x32_bicubic_x4.pt", "aaaf3ae36526bf9aac5a2898dae88b61e00e09812dd9fdac9b5d8de15435318b"),
        },
        made_by="python -m pipeline.data.make_weights --name edsr_16x32 (stages x2-bicubic, x3-bicubic, x4-bicubic)",
    ),
    help="EDSR 16x32 on clean bicubic pairs (the benchmark protocol), the shape measured best per CPU-hour",
)
WEIGHTS.add(
    "edsr_16x32_archive",
    Weights(
        arch=EDSR_16X32,
        flavour="archive",
        files={
            2: ("edsr_16x32_archive_x2.pt", "0286b4376af0318fb5950f208fd880827ba0f8f8edbd8f7a77819a7c7f5f92d9"),
            3: ("edsr_16x32_archive_x3.pt", "406a8f4f424e60c73c3d8287bde0cf4c4324ff67379e621f0d6c81937a99b3f0"),
            4: ("edsr_16x32_archive_x4.pt", "bb9ce69eed36582351c9df03447fbcd61f42765bd28bba4160cca71b7304f118"),
        },
        made_by="python -m pipeline.data.make_weights --name edsr_16x32 (stages x2-archive then x2-archive-long then x2-archive-balanced then x2-archive-clean, x3-archive then x3-archive-long then x3-archive-balanced, x4-archive then x4-archive-long then x4-archive-centred then x4-archive-more)",
    ),
    help="EDSR 16x32 fine-tuned from the bicubic model on randomly degraded inputs (blur, noise, JPEG, x264, MPEG-4)",
)


WEIGHTS.add(
    "liif_16x32_bicubic",
    Weights(
        arch={"name": "liif", "n_resblocks": 16, "n_feats": 32, "hidden": 64, "layers": 3},
        flavour="bicubic",
        files={0: ("liif_16x32_bicubic.pt", "d29f1d76dc432a5e8d65d3292e33f0ac84c1614c2192d11664ac61d168c7cc4f")},
        made_by="python -m pipeline.data.make_weights --name liif_16x32 (stage any-bicubic)",
    ),
    help="the continuous-scale model (preset any): EDSR 16x32 features read by a local implicit function, any scale in [1, 4] "
         "from one file; behind the integer models with resizing on Set5/Set14 (docs/RESULTS.md)",
)


DUF_6X32 = {"name": "duf", "n_layers": 6, "n_feats": 32, "growth": 16, "frames": 7}  # both flavours of the DUF model
WEIGHTS.add(
    "duf_6x32_bicubic",
    Weights(
        arch=DUF_6X32,
        flavour="bicubic",
        files={4: ("duf_6x32_bicubic_x4.pt", "b9f6e929852ed5aa925c3d59f2af9fa22c5b9043a169a0c88bf09054821d6391")},
        made_by="python -m pipeline.data.make_weights --name duf_6x32 (stages x4-bicubic, x4-bicubic-decay, x4-bicubic-motion, x4-bicubic-real)",
    ),
    help="DUF 6 layers x 32 features, 7-frame windows, x4 on clean bicubic windows (12,000 steps: the last 4,000 on windows "
         "moving up to 2.5 input px a frame, the last 2,000 half cut from real videos), 0.6 dB behind EDSR 16x32 on the held-out "
         "pans (docs/RESULTS.md)",
)

WEIGHTS.add(
    "duf_6x32_archive",
    Weights(
        arch=DUF_6X32,
        flavour="archive",
        files={4: ("duf_6x32_archive_x4.pt", "e7ed0d89acaae0498690a0ee5819695850d54544514c40a23b70e33fa28b6179")},
        made_by="python -m pipeline.data.make_weights --name duf_6x32 (the bicubic stages, then x4-archive)",
    ),
    help="DUF 6x32, x4, the bicubic file continued for 2,000 steps on windows degraded as archives are (blur, resize, noise, "
         "JPEG / x264 / MPEG-4 over the window as one stream); still behind EDSR 16x32 archive on the held-out pans (docs/RESULTS.md)",
)


def builtin(name: str) -> Weights:
    """The entry behind ``builtin:NAME`` (ValueError naming the shipped ones)."""
    if name.startswith(BUILTIN_PREFIX):
        name = name[len(BUILTIN_PREFIX):]
    if name not in WEIGHTS:
        raise ValueError(f"no shipped weights {BUILTIN_PREFIX + name!r} (shipped: {', '.join(BUILTIN_PREFIX + n for n in WEIGHTS.names())})")
    return WEIGHTS.get(name)


#: The official EDSR-PyTorch files (sanghyun-son/EDSR-PyTorch), which model.pretrained loads as they are.
OFFICIAL_EDSR = {
    (16, 64, 2): "https://cv.snu.ac.kr/research/EDSR/models/edsr_baseline_x2-1bc95232.pt",
    (16, 64, 3): "https://cv.snu.ac.kr/research/EDSR/models/edsr_baseline_x3-abf2a44e.pt",
    (16, 64, 4): "https://cv.snu.ac.kr/research/EDSR/models/edsr_baseline_x4-6b446fab.pt",
    (32, 256, 2): "https://cv.snu.ac.kr/research/EDSR/models/edsr_x2-0edfb8a3.pt",
    (32, 256, 3): "https://cv.snu.ac.kr/research/EDSR/models/edsr_x3-ea3ef2c6.pt",
    (32, 256, 4): "https://cv.snu.ac.kr/research/EDSR/models/edsr_x4-4f62e9ef.pt",
}


def no_weights_error(arch: dict[str, Any], scale: int) -> ValueError:
    """Why a run without model.pretrained is refused, and where weights come from."""
    key = (arch.get("n_resblocks"), arch.get("n_feats"), scale)
    shipped = [f"builtin:{e.name}" for e in WEIGHTS
               if {k: v for k, v in e.item.arch.items()} == {k: arch.get(k) for k in e.item.arch} and scale in e.item.files]
    hints = []
    if shipped:
        hints.append(f"use the shipped weights: --set model.pretrained={shipped[0]}")
    if key in OFFICIAL_EDSR:
        hints.append(f"download the official EDSR file {OFFICIAL_EDSR[key]} and pass it: --set model.pretrained=PATH")
    hints.append("train your own with python -m jobs.pretrain")
    hints.append(f"or pick a preset whose weights ship ({', '.join(_presets_with_weights())})")
    hints.append("--set model.pretrained=scratch fine-tunes from a fresh initialisation (poor results)")
    from pipeline.models import describe

    return ValueError(f"no starting weights for {describe({**arch, 'scale': scale})} (model.pretrained is unset): "
                      + "; ".join(hints))


def _presets_with_weights() -> list[str]:
    from pipeline.presets import PRESETS

    return [e.name for e in PRESETS if str(e.item.model.get("pretrained") or "").startswith(BUILTIN_PREFIX)]


def read_pretrained(pretrained: str | None, scale: int) -> bytes | None:
    """The bytes behind ``model.pretrained`` for a local file or ``builtin:NAME`` (None
    for "scratch"; the caller refuses an unset one). S3 locations are read through the
    run's store by the caller."""
    from pipeline.config import SCRATCH

    if not pretrained or pretrained == SCRATCH:
        return None
    if pretrained.startswith(BUILTIN_PREFIX):
        w = builtin(pretrained)
        try:
            return w.read(scale)
        except ValueError as e:
            raise ValueError(f"{pretrained}: {e}") from None
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(f"model.pretrained not found: {pretrained}")
    with open(pretrained, "rb") as fh:
        return fh.read()
