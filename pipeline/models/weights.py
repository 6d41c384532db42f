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
    files: dict[int, tuple[str, str]] = field(default_factory=dict)  # scale -> (file name, sha256)
    made_by: str = ""  # the command that trained them

    def path(self, scale: int) -> str:
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
        if digest != self.files[scale][1]:
            raise ValueError(f"{path}: SHA-256 {digest[:16]}... does not match the shipped {self.files[scale][1][:16]}...: reinstall the package")
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


def builtin(name: str) -> Weights:
    """The entry behind ``builtin:NAME`` (ValueError naming the shipped ones)."""
    if name.startswith(BUILTIN_PREFIX):
        name = name[len(BUILTIN_PREFIX):]
    if name not in WEIGHTS:
        raise ValueError(f"no shipped weights {BUILTIN_PREFIX + name!r} (shipped: {', '.join(BUILTIN_PREFIX + n for n in WEIGHTS.names())})")
    return WEIGHTS.get(name)


def read_pretrained(pretrained: str | None, scale: int) -> bytes | None:
    """The bytes behind ``model.pretrained`` for a local file or ``builtin:NAME`` (None
    when unset). S3 locations are read through the run's store by the caller."""
    if not pretrained:
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
