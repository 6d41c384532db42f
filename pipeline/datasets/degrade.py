"""How the input side of a training pair is made: degradations, one table.

``DEGRADATIONS`` names each degradation with its parameter, its range and what it does;
``train.degrade`` ("noise:2,blur:0.8,jpeg:75") is parsed against it, and each named
degradation is applied with probability 0.5 per patch after the bicubic downscale
(``SpecDegradation``). ``ArchiveDegradation`` is the randomised model of what archives
carry (in the spirit of Real-ESRGAN's and RealBasicVSR's degradation models): blur
(isotropic or anisotropic Gaussian) on the high-resolution side, a resize by a random
kernel, then noise and compression (JPEG, or a real video codec through PyAV: x264 or
MPEG-4 Part 2) in random order and strength. ``EVAL_DEGRADATIONS`` are the fixed,
seeded degradations the benchmark measures models on.

Images are float tensors in [0, 1]: one image (3, h, w) or a batch (N, 3, h, w).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.metrics.resize import bicubic_resize
from pipeline.registry import Registry, spec_items

# ---------------------------------------------------------------------------
# primitives


def gaussian_kernel(sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, radius: int | None = None) -> torch.Tensor:
    """A normalised 2-D Gaussian kernel (2r+1, 2r+1): isotropic with ``sigma_x`` alone,
    anisotropic with ``sigma_y`` and the rotation ``theta`` (radians)."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    r = radius if radius is not None else max(1, int(math.ceil(3 * max(sigma_x, sigma_y))))
    ax = torch.arange(-r, r + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).float()


def blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``img`` (N, 3, h, w) or (3, h, w) convolved with ``kernel`` per channel, reflected
    at the borders (the kernel is cut to the image when the image is smaller)."""
    one = img.dim() == 3
    x = img[None] if one else img
    r = kernel.shape[-1] // 2
    cut = min(r, x.shape[-2] - 1, x.shape[-1] - 1)  # reflect padding needs r < side
    if cut < r:
        kernel = kernel[r - cut:r + cut + 1, r - cut:r + cut + 1]
        kernel = kernel / kernel.sum()
        r = cut
    if r == 0:
        return img
    k = kernel.to(x).expand(x.shape[1], 1, *kernel.shape)
    y = F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), k, groups=x.shape[1])
    return y[0] if one else y


def subsample(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Every ``scale``-th pixel of ``img`` (..., H, W), centre-aligned like a resize: the
    low-resolution pixel i sits at high-resolution position i*scale + (scale-1)/2, as with
    bicubic or area downscaling, cameras and video scalers. For an even ``scale`` that
    position falls between pixels, so the 2x2 pixels around it are averaged. (Taking
    pixels 0, scale, 2*scale, ... instead shifts the image by (scale-1)/2 px against every
    resize: 1.5 px at x4, which a model trained on both has to blur over.)"""
    h, w = img.shape[-2] // scale, img.shape[-1] // scale
    c = (scale - 1) // 2

    def at(dy: int, dx: int) -> torch.Tensor:
        return img[..., c + dy::scale, c + dx::scale][..., :h, :w]

    return at(0, 0) if scale % 2 else 0.25 * (at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1))


def add_noise(img: torch.Tensor, sigma: float, rng: np.random.Generator, grey: bool = False) -> torch.Tensor:
    """Gaussian noise of ``sigma`` (0-255 scale), per channel or the same on all three (``grey``)."""
    shape = (*img.shape[:-3], 1, *img.shape[-2:]) if grey else img.shape
    n = torch.from_numpy(rng.normal(0.0, sigma / 255.0, shape).astype(np.float32)).to(img)
    return (img + n).clamp(0, 1)


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, h, w) float [0, 1] -> uint8 (h, w, 3)."""
    return (img.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def _from_uint8(arr: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).to(like.device, like.dtype) / 255


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """One image (3, h, w) through a JPEG encode and decode at ``quality`` (PIL, 4:2:0)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_to_uint8(img)).save(buf, format="JPEG", quality=int(quality))
    return _from_uint8(np.asarray(Image.open(buf).convert("RGB")), img)


#: codec -> (encoder, decoder, quality option, quality range (best, worst))
CODECS = {"x264": ("libx264", "h264", "crf", (0, 51)), "mpeg4": ("mpeg4", "mpeg4", "q", (2, 31))}


def codec_roundtrip(frames: np.ndarray, codec: str, quality: int, previous: np.ndarray | None = None) -> np.ndarray:
    """uint8 frames (N, h, w, 3) encoded as one stream by a real video codec and decoded
    again (yuv420p, BT.601, no B-frames): ``x264`` at CRF ``quality``, or ``mpeg4``
    (MPEG-4 Part 2) at quantiser ``quality``. With ``previous`` (the same shape), each
    frame is preceded in the stream by its ``previous`` frame, so it is coded as a
    P-frame predicted from moving content, as most frames of a video are. Odd sides are
    padded (edge pixels repeated) for yuv420p and cropped back."""
    import av

    encoder, decoder, _, _ = CODECS[codec]
    n, h, w, _ = frames.shape
    ph, pw = h + h % 2, w + w % 2
    seq = frames if previous is None else np.stack([previous, frames], axis=1).reshape(2 * n, h, w, 3)
    if (ph, pw) != (h, w):
        seq = np.pad(seq, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    enc = av.CodecContext.create(encoder, "w")
    enc.width, enc.height, enc.pix_fmt = pw, ph, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 25), Fraction(25, 1)
    enc.max_b_frames = 0
    enc.gop_size = 1 << 20  # one keyframe: the rest are P-frames
    if codec == "x264":
        # asm=0: x264's SIMD code gave slightly different streams for the same patches now and
        # then under load (2-25 of 150 identical encodes), so two runs of a job fine-tuned to
        # different weights; its C code never did, and on patches this small it is no slower
        enc.options = {"crf": str(int(quality)), "preset": "veryfast", "bframes": "0", "threads": "1", "x264-params": "asm=0"}
    else:
        enc.bit_rate = 1 << 30  # no rate control: the fixed quantiser decides
        enc.options = {"qmin": str(int(quality)), "qmax": str(int(quality)), "threads": "1"}
    packets = []
    for i, f in enumerate(seq):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
        vf.pts = i
        packets += enc.encode(vf)
    packets += enc.encode(None)
    dec = av.CodecContext.create(decoder, "r")
    out = [f.to_ndarray(format="rgb24") for p in [*packets, None] for f in dec.decode(p)]
    if len(out) != len(seq):
        raise RuntimeError(f"{codec} round trip returned {len(out)} frames for {len(seq)}")
    dec_frames = np.stack(out)[:, :h, :w]
    return dec_frames if previous is None else dec_frames[1::2]


def codec_batch(lr: torch.Tensor, codec: str, quality: int, rng: np.random.Generator, motion: int = 2) -> torch.Tensor:
    """A batch (N, 3, h, w) through ``codec_roundtrip``, each image preceded by a copy
    shifted by up to ``motion`` pixels (content that moved), so it is P-frame coded."""
    frames = np.stack([_to_uint8(x) for x in lr])
    shifts = rng.integers(-motion, motion + 1, size=(len(frames), 2))
    previous = np.stack([np.roll(f, (int(dy), int(dx)), axis=(0, 1)) for f, (dy, dx) in zip(frames, shifts, strict=True)])
    out = codec_roundtrip(frames, codec, quality, previous)
    return torch.stack([_from_uint8(f, lr) for f in out])


def codec_sequence(frames: torch.Tensor, codec: str, quality: int) -> torch.Tensor:
    """Consecutive frames (T, 3, h, w) of one clip through ``codec_roundtrip`` as one
    stream: the first intra coded, the others predicted from the frames before."""
    out = codec_roundtrip(np.stack([_to_uint8(f) for f in frames]), codec, quality)
    return torch.stack([_from_uint8(f, frames) for f in out])


# ---------------------------------------------------------------------------
# the table of named degradations (train.degrade)


@dataclass(frozen=True)
class Degradation:
    """One named degradation of the input patch: ``apply(batch, value, rng)``."""

    param: str
    low: float
    high: float
    example: float
    apply: Callable[[torch.Tensor, float, np.random.Generator], torch.Tensor]


DEGRADATIONS: Registry[Degradation] = Registry("train.degrade")
DEGRADATIONS.add("blur", Degradation("sigma (px)", 0.0, 5.0, 0.8, lambda x, v, rng: blur(x, gaussian_kernel(v))),
                 help="Gaussian blur of the input, sigma in input pixels")
DEGRADATIONS.add("noise", Degradation("sigma (0-255)", 0.0, 50.0, 2.0, lambda x, v, rng: add_noise(x, v, rng)),
                 help="Gaussian noise, sigma on the 0-255 scale")
DEGRADATIONS.add("jpeg", Degradation("quality", 5.0, 100.0, 75.0, lambda x, v, rng: torch.stack([jpeg(i, int(v)) for i in x])),
                 help="JPEG at this quality")
DEGRADATIONS.add("x264", Degradation("CRF", 0.0, 51.0, 28.0, lambda x, v, rng: codec_batch(x, "x264", int(v), rng)),
                 help="H.264 (libx264) at this CRF, P-frame coded")
DEGRADATIONS.add("mpeg4", Degradation("quantiser", 2.0, 31.0, 8.0, lambda x, v, rng: codec_batch(x, "mpeg4", int(v), rng)),
                 help="MPEG-4 Part 2 at this fixed quantiser, P-frame coded")

def parse_degrade(spec: str) -> dict[str, float]:
    """``"noise:2,blur:0.8,jpeg:75"`` -> {"noise": 2.0, "blur": 0.8, "jpeg": 75.0}, checked
    against ``DEGRADATIONS`` (each value in its range)."""
    out: dict[str, float] = {}
    for name, v in spec_items(spec, DEGRADATIONS, "degradation"):
        d = DEGRADATIONS.get(name)
        try:
            value = float(v)
        except ValueError:
            raise ValueError(f"train.degrade: {name} needs a number, e.g. {name}:{d.example:g}, got {v!r}") from None
        lo_open = d.low == 0.0  # a zero sigma is no degradation at all
        if not math.isfinite(value) or value > d.high or value < d.low or (lo_open and value <= 0):
            raise ValueError(f"train.degrade: {name} {d.param} must be in {'(' if lo_open else '['}{d.low:g}, {d.high:g}], got {value:g}")
        out[name] = value
    return out


class SpecDegradation:
    """``MakeLR`` for ``train.degrade``: bicubic downscale, then each named degradation
    with probability 0.5 per patch, in the order given."""

    def __init__(self, spec: str | dict[str, float]) -> None:
        self.spec = parse_degrade(spec) if isinstance(spec, str) else dict(spec)

    def __call__(self, hr: torch.Tensor, scale: int, rng: np.random.Generator) -> torch.Tensor:
        from pipeline.datasets.patches import lr_side

        lr = bicubic_resize(hr, (lr_side(hr.shape[-2], scale), lr_side(hr.shape[-1], scale)))
        for name, value in self.spec.items():
            pick = rng.random(len(lr)) < 0.5
            if pick.any():
                idx = torch.from_numpy(np.flatnonzero(pick))
                lr[idx] = DEGRADATIONS.get(name).apply(lr[idx], value, rng).clamp(0, 1)
        return lr


# ---------------------------------------------------------------------------
# the randomised archive degradation model (pretraining's "archive" flavour)


def _resize_to(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if mode == "bicubic":
        return bicubic_resize(x, size)
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


@dataclass(frozen=True)
class ArchiveDegradation:
    """``MakeLR`` drawing a random degradation per patch (a share ``p_clean`` of the
    patches stays the clean bicubic downscale, so the model does not unlearn clean
    inputs):

    1. blur of the high-resolution patch (p ``p_blur``): isotropic or anisotropic
       Gaussian, sigmas in [0.2, 3] x scale/4 (at least 0.2..1), random rotation;
    2. downscale to exactly 1/scale by bicubic, bilinear, area, or decimation (every
       scale-th pixel, centre-aligned like the resizes, as classic blur-and-subsample
       degradation models have it);
    3. noise (p ``p_noise``): Gaussian, sigma 1..``noise_max`` (0-255), colour or grey;
       and compression (p ``p_compress``): JPEG q 30..95, x264 CRF 18..38 or MPEG-4
       Part 2 quantiser 2..14 (P-frame coded) -- these two in random order.
    """

    p_clean: float = 0.2
    p_blur: float = 0.6
    p_noise: float = 0.5
    noise_max: float = 12.0
    p_compress: float = 0.7

    def one(self, hr: torch.Tensor, scale: int, rng: np.random.Generator) -> torch.Tensor:
        """One (3, H, W) patch -> its (3, H/scale, W/scale) degraded input."""
        return self._degrade(hr[None], scale, rng)[0]

    def window(self, frames: torch.Tensor, scale: int, rng: np.random.Generator) -> torch.Tensor:
        """The frames (T, 3, H, W) of one clip -> their (T, 3, H/scale, W/scale) inputs, all
        degraded the same way, as a video's frames are: one blur kernel, resize and noise
        level (an independent noise draw per frame), and a video codec run over the frames
        as one stream (each coded from the one before)."""
        return self._degrade(frames, scale, rng)

    def _degrade(self, x: torch.Tensor, scale: int, rng: np.random.Generator) -> torch.Tensor:
        size = (x.shape[-2] // scale, x.shape[-1] // scale)
        if rng.random() < self.p_clean:
            return bicubic_resize(x, size)
        if rng.random() < self.p_blur:
            top = max(1.0, 3.0 * scale / 4)
            sx = float(rng.uniform(0.2, top))
            sy = sx if rng.random() < 0.5 else float(rng.uniform(0.2, top))
            x = blur(x, gaussian_kernel(sx, sy, float(rng.uniform(0, math.pi)), radius=min(10, int(math.ceil(3 * max(sx, sy))))))
        mode = str(rng.choice(["bicubic", "bilinear", "area", "decimate"]))
        x = subsample(x, scale) if mode == "decimate" else _resize_to(x, size, mode)
        steps = ["noise", "compress"]
        rng.shuffle(steps)
        for step in steps:
            if step == "noise" and rng.random() < self.p_noise:
                x = add_noise(x, float(rng.uniform(1.0, self.noise_max)), rng, grey=bool(rng.random() < 0.4))
            elif step == "compress" and rng.random() < self.p_compress:
                kind = str(rng.choice(["jpeg", "x264", "mpeg4"]))
                if kind == "jpeg":
                    q = int(rng.integers(30, 96))
                    x = torch.stack([jpeg(f, q) for f in x])
                else:
                    q = int(rng.integers(18, 39)) if kind == "x264" else int(rng.integers(2, 15))
                    # one patch: preceded by a moved copy of itself (P-frame coded); a clip's frames: one stream
                    x = codec_batch(x, kind, q, rng) if len(x) == 1 else codec_sequence(x, kind, q)
        return x.clamp(0, 1)

    def __call__(self, hr: torch.Tensor, scale: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.stack([self.one(p, scale, rng) for p in hr])


# ---------------------------------------------------------------------------
# fixed degradations for measuring models (seeded, so every model sees the same inputs)


def _bicubic_down(hr: torch.Tensor, scale: int) -> torch.Tensor:
    return bicubic_resize(hr, (hr.shape[-2] // scale, hr.shape[-1] // scale))


def blur_decimate(hr: torch.Tensor, scale: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of the HR image, then every ``scale``-th pixel, centre-aligned (the "BD" model)."""
    return subsample(blur(hr, gaussian_kernel(sigma, radius=max(3, int(math.ceil(3 * sigma))))), scale)


#: name -> (description, fn(hr (1, 3, H, W) float, scale, rng) -> lr float). HR sides are multiples of scale.
EVAL_DEGRADATIONS: dict[str, tuple[str, Callable[[torch.Tensor, int, np.random.Generator], torch.Tensor]]] = {
    "bicubic": ("MATLAB bicubic downscale (the benchmark protocol)", lambda hr, s, rng: _bicubic_down(hr, s)),
    "blur1.6": ("Gaussian blur sigma 1.6 (HR px), then every scale-th pixel (centre-aligned)", lambda hr, s, rng: blur_decimate(hr, s, 1.6)),
    "noise5": ("bicubic downscale, then Gaussian noise sigma 5 (0-255)", lambda hr, s, rng: add_noise(_bicubic_down(hr, s), 5.0, rng)),
    "x264crf30": ("bicubic downscale, then x264 CRF 30 (intra, yuv420p)",
                  lambda hr, s, rng: torch.stack([_from_uint8(codec_roundtrip(_to_uint8(x)[None], "x264", 30)[0], x) for x in _bicubic_down(hr, s)])),
}


# ---------------------------------------------------------------------------
# a video's own degradation (self-pairs made the way the video was made)


@dataclass(frozen=True)
class VideoDegradation:
    """``MakeLR`` for a video's self-pairs, from its estimated degradation
    (``pipeline.estimate``): Gaussian blur of ``blur_sigma`` (HR px) and subsampling
    (the bicubic downscale below 0.3), grey noise of ``noise_sigma`` (luma, 0-255), and a
    re-encode with the video's own ``codec`` ("x264" or "mpeg4") at ``quality`` (CRF or
    quantiser; None: no re-encode), each patch preceded in the stream by a moved copy of
    itself so it is coded as a P-frame, as most of a video's frames are."""

    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    codec: str | None = None
    quality: int | None = None

    def __call__(self, hr: torch.Tensor, scale: int, rng: np.random.Generator) -> torch.Tensor:
        size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
        if self.blur_sigma >= 0.3:
            k = gaussian_kernel(self.blur_sigma, radius=max(2, int(math.ceil(3 * self.blur_sigma))))
            x = subsample(blur(hr, k), scale)
        else:
            x = bicubic_resize(hr, size)
        if self.noise_sigma >= 0.5:
            x = add_noise(x, self.noise_sigma, rng, grey=True)
        if self.codec is not None and self.quality is not None:
            x = codec_batch(x, self.codec, int(self.quality), rng)
        return x.clamp(0, 1)


#: stream codec name -> the encoder self-pairs are re-encoded with (the same family)
SELF_PAIR_CODECS = {"h264": "x264", "hevc": "x264", "mpeg4": "mpeg4", "msmpeg4": "mpeg4", "msmpeg4v2": "mpeg4",
                    "msmpeg4v3": "mpeg4", "mpeg2video": "mpeg4", "mpeg1video": "mpeg4", "h263": "mpeg4"}


def self_pair_codec(codec: str, qp: float | None) -> tuple[str | None, int | None]:
    """(encoder, its quality setting) that reproduce a stream's compression in self-pairs,
    from the stream's codec name and its frames' mean quantiser (FFmpeg's exported QP):
    x264 at CRF = QP - 4 for H.264-like streams (x264's CRF n gives frame QPs of about
    n + 4 at this size: 20 -> 23.9, 30 -> 33.9, 38 -> 41.9 measured), MPEG-4 Part 2 at
    quantiser QP / 2 for MPEG-4-like ones (FFmpeg exports twice the quantiser); (None,
    None) for other codecs, or when the QP is unknown."""
    family = SELF_PAIR_CODECS.get(codec)
    if family is None or qp is None or qp < 1:  # (QP 0: a lossless stream, nothing to reproduce)
        return None, None
    if family == "x264":
        return "x264", int(min(51, max(0, round(qp - 4))))
    return "mpeg4", int(min(31, max(2, round(qp / 2))))
