"""Self-describing checkpoints, and loading of official EDSR-PyTorch weight files.

A reelsr checkpoint is one ``torch.save``'d dict of plain data::

    {"format": "reelsr.edsr/1", "arch": {n_resblocks, n_feats, res_scale, scale},
     "provenance": {...}, "state_dict": {name: tensor}}

so an inference actor needs nothing but the file. Files are always read with
``torch.load(weights_only=True)``: no pickled code runs from a checkpoint.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

import torch

from pipeline.models.edsr import EDSR

FORMAT = "reelsr.edsr/1"
BUILTIN_PREFIX = "builtin:"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "weights")


def resolve(pretrained: str | None, scale: int) -> str | None:
    """The file behind ``model.pretrained``: a path as given, or ``builtin:NAME`` for the
    weights shipped in ``pipeline/data/weights/NAME_x{scale}.pt``."""
    if not pretrained:
        return None
    if pretrained.startswith(BUILTIN_PREFIX):
        name = pretrained[len(BUILTIN_PREFIX):]
        path = os.path.join(WEIGHTS_DIR, f"{name}_x{scale}.pt")
        if not os.path.isfile(path):
            have = sorted(f for f in os.listdir(WEIGHTS_DIR) if f.endswith(".pt")) if os.path.isdir(WEIGHTS_DIR) else []
            raise ValueError(f"no shipped weights {pretrained!r} for x{scale} (shipped: {', '.join(have) or 'none'})")
        return path
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(f"model.pretrained not found: {pretrained}")
    return pretrained


def to_bytes(model: EDSR, provenance: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "arch": dict(model.arch), "provenance": dict(provenance), "state_dict": state}, buf)
    return buf.getvalue()


def save(model: EDSR, path: str, provenance: dict[str, Any]) -> None:
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
    return {"n_resblocks": len(blocks), "n_feats": n_feats, "res_scale": 0.1 if n_feats >= 256 else 1.0, "scale": scale}


def load(path_or_bytes: str | bytes, map_location: str | torch.device = "cpu") -> tuple[EDSR, dict[str, Any]]:
    """Load a reelsr checkpoint or an official EDSR-PyTorch ``.pt`` state dict.

    Returns (model in eval mode, on ``map_location``; meta) where meta has ``arch``, ``provenance`` and
    ``format`` ("reelsr.edsr/1" or "edsr-pytorch").
    """
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    name = "<bytes>" if isinstance(path_or_bytes, bytes) else path_or_bytes
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)  # moved to map_location below
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {name}") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"cannot read checkpoint {name}: {e}") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        arch, state, prov, fmt = obj["arch"], obj["state_dict"], obj.get("provenance", {}), FORMAT
    elif isinstance(obj, dict):
        state = obj.get("state_dict") or obj.get("model") or obj
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{name}: neither a reelsr checkpoint nor an EDSR state dict")
        arch, prov, fmt = _official_arch(state), {"source": os.path.basename(str(name))}, "edsr-pytorch"
    else:
        raise ValueError(f"{name}: expected a dict, got {type(obj).__name__}")
    model = EDSR(**arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{name}: weights do not fit EDSR{arch}: {str(e)[:300]}") from None
    model.to(map_location).eval()  # load_state_dict copied into the (CPU) parameters
    return model, {"arch": arch, "provenance": prov, "format": fmt}
