"""Super-resolution models: the architecture table (``ARCHS``), checkpoints that
describe themselves (``checkpoint``), and the weights shipped with the package
(``weights``)."""

from __future__ import annotations

from typing import Any

from pipeline.models import duf, edsr  # noqa: F401 - registers "duf", "edsr"
from pipeline.models.registry import ARCHS


def build_model(arch: dict[str, Any]):
    """A freshly initialised model from its ``arch`` dict (``name`` picks the
    architecture; "edsr" when absent, as in checkpoints written before the table)."""
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    return ARCHS.get(arch.get("name", "edsr"))(**kwargs)
