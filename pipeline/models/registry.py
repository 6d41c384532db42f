"""The table of model architectures: ``model.arch`` names an entry. An architecture is
an ``nn.Module`` class whose constructor takes its ``arch`` dict (the keyword arguments
that are saved in checkpoints) and that exposes that dict as ``self.arch`` with a
``"name"`` key. Adding one is a new module in ``pipeline/models`` that registers itself,
and an import in ``pipeline/models/__init__.py``."""

from __future__ import annotations

from pipeline.registry import Registry

ARCHS: Registry[type] = Registry("model.arch")
