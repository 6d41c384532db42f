"""Self-describing checkpoints, and loading of official EDSR-PyTorch weight files.

A reelsr checkpoint is one ``torch.save``'d dict of plain data::

    {"format": "reelsr.model/2", "arch": {"name": "edsr", n_resblocks, n_feats, res_scale, scale},
     "provenance": {...}, "state_dict": {name: tensor}}

so an inference actor needs nothing but the file (``arch["name"]`` picks the entry of
``pipeline.models.ARCHS``; files of the earlier format ``reelsr.edsr/1`` have no name and
are EDSR). Files are always read with ``torch.load(weights_only=True)``: no pickled code
runs from a checkpoint.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

import torch

from pipeline.models import build_model

FORMAT = "reelsr.model/2"
FORMATS = (FORMAT, "reelsr.edsr/1")


def to_bytes(model: torch.nn.Module, provenance: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "arch": dict(model.arch), "provenance": dict(provenance), "state_dict": state}, buf)
    return buf.getvalue()


def save(model: torch.nn.Module, path: str, provenance: dict[str, Any]) -> None:
    """Write atomically (local path or s3://): a reader never sees a half-written checkpoint at ``path``."""
    from pipeline.storage import Store

    Store().write_bytes(path, to_bytes(model, provenance))


def _official_arch(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infer the architecture of an official EDSR-PyTorch state dict from its shapes."""
    try:
        n_feats = state["head.0.weight"].shape[0]
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.body\.0\.weight$", k))}
        up = state["tail.0.0.weight"].shape[0] // n_feats
    except KeyError as e:
        raise ValueError(f"not an EDSR state dict: missing {e.args[0]!r}") from None
    if up == 9:
        scale = 3
    elif up == 4:
        scale = 4 if "tail.0.2.weight" in state else 2
    else:
        raise ValueError(f"not an EDSR state dict: upsampler has {up}x{n_feats} channels")
    # The official full model (256 features) was trained with res_scale 0.1, the baseline with 1.
    return {"name": "edsr", "n_resblocks": len(blocks), "n_feats": n_feats, "res_scale": 0.1 if n_feats >= 256 else 1.0, "scale": scale}


def load(path_or_bytes: str | bytes, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a reelsr checkpoint or an official EDSR-PyTorch ``.pt`` state dict.

    Returns (model in eval mode, on ``map_location``; meta) where meta has ``arch`` (with
    its ``name``), ``provenance`` and ``format`` ("reelsr.model/2", "reelsr.edsr/1" or
    "edsr-pytorch").
    """
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    name = "<bytes>" if isinstance(path_or_bytes, bytes) else path_or_bytes
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)  # moved to map_location below
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {name}") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"cannot read checkpoint {name}: {e}") from None
    if isinstance(obj, dict) and obj.get("format") in FORMATS:
        arch, state, prov, fmt = {"name": "edsr", **obj["arch"]}, obj["state_dict"], obj.get("provenance", {}), obj["format"]
    elif isinstance(obj, dict):
        state = obj.get("state_dict") or obj.get("model") or obj
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{name}: neither a reelsr checkpoint nor an EDSR state dict")
        arch, prov, fmt = _official_arch(state), {"source": os.path.basename(str(name))}, "edsr-pytorch"
    else:
        raise ValueError(f"{name}: expected a dict, got {type(obj).__name__}")
    try:
        model = build_model(arch)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name}: cannot build its architecture {arch}: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{name}: weights do not fit {arch}: {str(e)[:300]}") from None
    model.to(map_location).eval()  # load_state_dict copied into the (CPU) parameters
    return model, {"arch": arch, "provenance": prov, "format": fmt}
