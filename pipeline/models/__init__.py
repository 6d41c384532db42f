"""Super-resolution models: the architecture table (``ARCHS``), checkpoints that
describe themselves (``checkpoint``), and the weights shipped with the package
(``weights``)."""

from __future__ import annotations

from typing import Any

from pipeline.models import duf, edsr, liif  # noqa: F401 - registers "duf", "edsr", "liif"
from pipeline.models.registry import ARCHS


def build_model(arch: dict[str, Any]):
    """A freshly initialised model from its ``arch`` dict (``name`` picks the
    architecture; "edsr" when absent, as in checkpoints written before the table)."""
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    return ARCHS.get(arch.get("name", "edsr"))(**kwargs)


def describe(arch: dict[str, Any], scale: bool = True) -> str:
    """An architecture in words: "EDSR 16x32 x4", "DUF 6x32 growth 16, 7 frames x4"
    (``scale``: with the scale)."""
    if arch.get("name") == "duf":
        words = f"DUF {arch.get('n_layers')}x{arch.get('n_feats')} growth {arch.get('growth')}, {arch.get('frames')} frames"
    elif arch.get("name") == "liif":
        words = f"EDSR {arch.get('n_resblocks')}x{arch.get('n_feats')} + LIIF {arch.get('layers')}x{arch.get('hidden')}"
    else:
        res = arch.get("res_scale", 1.0)
        words = f"{str(arch.get('name', 'edsr')).upper()} {arch.get('n_resblocks')}x{arch.get('n_feats')}" + ("" if res in (None, 1.0) else f" res_scale {res}")
    return f"{words} x{arch.get('scale')}" if scale else words
