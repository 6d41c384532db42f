"""Fine-tuning objectives, combinable with weights: ``train.loss = "l1:1,ssim:0.2"``.

Full-reference terms compare the model's output on a self-pair's input with its target
(the frame patch): ``l1``, ``l2``, ``charbonnier``, ``ssim`` (1 - SSIM on Y, pyiqa's),
``vgg`` (L1 between VGG-19 features up to relu5_4, as in ESRGAN's perceptual loss; the
weights come from ``train.vgg_weights``, never downloaded).

No-reference and adversarial terms: ``niqe`` scores the model's output on patches of the
frames *at their own resolution* (no high-resolution target exists for those) with
pyiqa's differentiable NIQE and the shipped pristine parameters; ``gan`` is an LSGAN
term against a small patch discriminator trained alongside on the frame patches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.registry import Registry, spec_items


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((x - y) ** 2 + eps * eps).mean()


class PatchDiscriminator(nn.Module):
    """A small PatchGAN discriminator: one realness score per receptive field."""

    def __init__(self, feats: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, feats, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = feats
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VGGFeatures(nn.Module):
    """VGG-19 features up to relu5_4 (torchvision layer 35), frozen, from a local file."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, weights_path: str) -> None:
        super().__init__()
        if not weights_path:
            raise ValueError("train.loss has a vgg term: set train.vgg_weights to a VGG-19 checkpoint file (torchvision's vgg19 state dict); reelsr downloads nothing")
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"train.vgg_weights not found: {weights_path}")
        from torchvision.models import vgg19

        features = vgg19(weights=None).features
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        # a whole torchvision VGG-19 state dict, or only its "features.*" part
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} if any(
            k.startswith("features.") for k in state) else state
        try:
            features.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"train.vgg_weights {weights_path} is not a torchvision VGG-19 state dict: {str(e)[:200]}") from None
        self.features = features[:36].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


@dataclass(frozen=True)
class Term:
    """One loss term: what it compares (``pair``: the output on a self-pair's input with
    its target; ``native``: the output on frame patches at their own size), and how.
    ``compute(objective, out, hr, out_native)`` returns a scalar tensor."""

    kind: str
    compute: Callable[[Objective, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


TERMS: Registry[Term] = Registry("train.loss")
TERMS.add("l1", Term("pair", lambda o, out, hr, nat: F.l1_loss(out, hr)), help="mean absolute error")
TERMS.add("l2", Term("pair", lambda o, out, hr, nat: F.mse_loss(out, hr)), help="mean squared error")
TERMS.add("charbonnier", Term("pair", lambda o, out, hr, nat: charbonnier(out, hr)), help="Charbonnier (smooth L1)")
TERMS.add("ssim", Term("pair", lambda o, out, hr, nat: 1 - o.ssim(out.clamp(0, 1), hr).float()), help="1 - SSIM on Y (pyiqa)")
TERMS.add("vgg", Term("pair", lambda o, out, hr, nat: F.l1_loss(o.vgg(out), o.vgg(hr))), help="perceptual: L1 of VGG-19 features (needs train.vgg_weights)")
TERMS.add("gan", Term("pair", lambda o, out, hr, nat: 0.5 * ((o.disc(out) - 1) ** 2).mean()), help="LSGAN against a patch discriminator")
# NIQE scores of natural images lie around 3-10; scaled so its gradients are of the order of the pixel losses'.
TERMS.add("niqe", Term("native", lambda o, out, hr, nat: o.niqe(nat.clamp(0, 1)).float() / 100.0),
          help="no-reference NIQE of the output on the frames at their own resolution")

def parse_loss(spec: str) -> dict[str, float]:
    """``"l1:1,ssim:0.2"`` -> {"l1": 1.0, "ssim": 0.2}; a bare name has weight 1."""
    terms: dict[str, float] = {}
    for name, w in spec_items(spec, TERMS, "term"):
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"train.loss: weight of {name!r} must be a number, got {w!r}") from None
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"train.loss: weight of {name!r} must be > 0, got {weight}")
        terms[name] = weight
    if not terms:
        raise ValueError("train.loss: give at least one term, e.g. l1")
    return terms


@dataclass
class Objective:
    """The weighted terms, with what they need (metric modules, discriminator)."""

    weights: dict[str, float]
    ssim: nn.Module | None = None
    niqe: nn.Module | None = None
    vgg: nn.Module | None = None
    disc: nn.Module | None = None
    disc_opt: torch.optim.Optimizer | None = None
    terms: dict[str, Term] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: str, device: torch.device, vgg_weights: str = "", lr: float = 1e-4) -> Objective:
        w = parse_loss(spec)
        obj = cls(w, terms={name: TERMS.get(name) for name in w})
        if "ssim" in w or "niqe" in w:
            import pyiqa

            if "ssim" in w:
                obj.ssim = pyiqa.create_metric("ssim", device=device, as_loss=True)
            if "niqe" in w:
                from pipeline.metrics.niqe import NIQE_PARAMS_PATH

                obj.niqe = pyiqa.create_metric("niqe", device=device, as_loss=True, pretrained_model_path=str(NIQE_PARAMS_PATH))
        if "vgg" in w:
            obj.vgg = VGGFeatures(vgg_weights).to(device)
        if "gan" in w:
            obj.disc = PatchDiscriminator().to(device)
            obj.disc_opt = torch.optim.Adam(obj.disc.parameters(), lr=lr, betas=(0.9, 0.999))
        return obj

    @property
    def needs_pairs(self) -> bool:
        return any(t.kind == "pair" for t in self.terms.values())

    @property
    def needs_native(self) -> bool:
        return any(t.kind == "native" for t in self.terms.values())

    def generator_loss(self, out: torch.Tensor | None, hr: torch.Tensor | None, out_native: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted sum and each term's value. ``out``/``hr``: output on a self-pair
        and its target; ``out_native``: output on frame patches at their own resolution
        (for native terms)."""
        parts = {name: term.compute(self, out, hr, out_native) for name, term in self.terms.items()}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def discriminator_step(self, out: torch.Tensor, hr: torch.Tensor) -> float:
        """One LSGAN discriminator update: real frame patches -> 1, outputs -> 0."""
        assert self.disc is not None and self.disc_opt is not None
        loss = 0.5 * (((self.disc(hr) - 1) ** 2).mean() + (self.disc(out.detach()) ** 2).mean())
        self.disc_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_opt.step()
        return float(loss.detach())
