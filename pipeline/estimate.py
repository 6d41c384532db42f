"""What a video's own degradation is, estimated from the video itself, so that its
self-pairs can be made the same way (``VideoDegradation``).

* **blur**: the width of the Gaussian that, followed by subsampling, made the frames.
  Natural images look alike across scales (their spectra fall off as a power of
  frequency), so downscaling a frame with the right kernel keeps its balance of fine
  to coarse detail: the estimate is the sigma whose blur-and-subsample of the frames has
  the same ratio of the top frequency octave's energy to the next one's as the frames
  themselves (a cross-scale criterion over a kernel family).
* **noise**: the standard deviation of Gaussian noise in the luma (0-255), from the
  quietest blocks of the frames (a low quantile of Immerkaer's Laplacian-difference
  operator per block), less its reading on noise-free frames (``NOISE_FLOOR``). (Colour noise of
  sigma s per channel is 0.67 s in the luma.)
* **detail**: how much of the frames' energy is in their finest octave, as a fraction of
  the next octave's (``band_ratio`` of the frames themselves). A self-pair's target is
  the frame: frames with little fine detail (a strong blur before a small downscale)
  make soft targets, and a fine-tune on them learns to restore soft output
  (``train.min_detail`` skips it).
* **compression**: the codec, the bits per pixel of the stream, and the mean quantiser
  of H.264 frames (FFmpeg's per-frame encoding parameters, where the decoder exports
  them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.datasets.degrade import blur, gaussian_kernel, subsample

#: the blur widths searched (HR px)
BLUR_SIGMAS = tuple(np.round(np.arange(0.0, 4.01, 0.1), 2))

#: scale -> (the criterion's sigma, the true sigma): the median of the raw estimate over 16
#: training images (BSD200, every 10th) blurred by a known Gaussian and subsampled, so the
#: estimate is mapped back onto the truth (the criterion under-reads at x2, over-reads at x4).
#: Re-checked with centre-aligned subsampling: the calibrated medians for sigma 0.8..2.4 are
#: within 0.05 of the truth at x2, 0.1 at x3, and 0.2 at x4 (0.8 reads 0.63)
BLUR_CALIBRATION = {
    2: ((0.15, 0.4), (0.45, 0.6), (0.6, 0.8), (0.7, 1.0), (0.9, 1.2), (1.1, 1.4), (1.3, 1.6), (1.5, 1.8), (1.7, 2.0), (2.0, 2.4),
        (2.3, 2.8), (2.5, 3.2)),
    3: ((0.5, 0.4), (0.65, 0.6), (0.75, 0.8), (0.95, 1.0), (1.15, 1.2), (1.35, 1.4), (1.5, 1.6), (1.7, 1.8), (1.9, 2.0), (2.3, 2.4),
        (2.7, 2.8), (3.1, 3.2), (3.45, 3.6)),
    4: ((0.95, 0.4), (1.2, 0.6), (1.35, 0.8), (1.55, 1.0), (1.65, 1.2), (1.85, 1.4), (2.05, 1.6), (2.25, 1.8), (2.4, 2.0), (2.85, 2.4),
        (3.35, 2.8), (3.8, 3.2), (4.0, 3.6)),
}

#: what the noise estimate reads on noise-free frames (texture and 8-bit rounding): the
#: median over 40 BSD200 training images downscaled x2 and x4 (0.55, 0.83); removed in
#: quadrature. (Those images with sigma 5 grey noise read 4.71 and 4.91.)
NOISE_FLOOR = 0.7


@dataclass(frozen=True)
class Degradation:
    """A video's estimated degradation (recorded in the report)."""

    blur_sigma: float  # Gaussian sigma in HR pixels before subsampling; 0: bicubic
    noise_sigma: float  # luma, 0-255 scale
    codec: str  # the stream's codec name (h264, mpeg4, ...)
    bits_per_pixel: float  # of the video stream
    qp: float | None  # mean quantiser of the frames, when the decoder exports it
    detail: float  # the frames' top-octave / next-octave energy (band_ratio)

    def to_dict(self) -> dict:
        return asdict(self)


def _grey(frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) frames -> float (N, 1, H, W) luma in [0, 1] (cropped to a common size)."""
    h = min(f.shape[0] for f in frames)
    w = min(f.shape[1] for f in frames)
    x = torch.from_numpy(np.stack([f[:h, :w] for f in frames]).astype(np.float32) / 255)
    return (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[:, None]


def band_ratio(x: torch.Tensor) -> float:
    """Energy of the top frequency octave over the next one's (radially, in the 2-D power
    spectrum of each frame, Hann-windowed), summed over the frames."""
    n, _, h, w = x.shape
    win = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))
    p = torch.fft.fftshift(torch.fft.fft2((x[:, 0] - x[:, 0].mean(dim=(1, 2), keepdim=True)) * win), dim=(-2, -1)).abs() ** 2
    fy = torch.fft.fftshift(torch.fft.fftfreq(h))[:, None]
    fx = torch.fft.fftshift(torch.fft.fftfreq(w))[None, :]
    r = torch.sqrt(fy**2 + fx**2)  # cycles per pixel, Nyquist 0.5
    top = p[:, (r >= 0.25) & (r < 0.5)].sum()
    next_ = p[:, (r >= 0.125) & (r < 0.25)].sum()
    return float(top / next_.clamp_min(1e-12))


def estimate_blur(frames: list[np.ndarray], scale: int, sigmas=BLUR_SIGMAS, calibrated: bool = True) -> float:
    """The Gaussian sigma (HR px) that, followed by subsampling by ``scale``, made the
    frames: the candidate whose blur-and-subsample keeps the frames' top-octave /
    next-octave energy ratio (see the module docstring), mapped through
    ``BLUR_CALIBRATION`` (``calibrated``)."""
    x = _grey(frames)
    return _blur_of(x, band_ratio(x), scale, sigmas, calibrated)


def _blur_of(x: torch.Tensor, ratio: float, scale: int, sigmas=BLUR_SIGMAS, calibrated: bool = True) -> float:
    """``estimate_blur`` of the luma ``x`` (N, 1, H, W), whose ``band_ratio`` is ``ratio``."""
    target = math.log(ratio)
    best, best_err = 0.0, float("inf")
    for s in sigmas:
        y = subsample(blur(x, gaussian_kernel(s)) if s > 0 else x, scale)
        err = abs(math.log(band_ratio(y)) - target)
        if err < best_err:
            best, best_err = float(s), err
    if not calibrated or scale not in BLUR_CALIBRATION:
        return best
    raw, true = zip(*BLUR_CALIBRATION[scale], strict=True)
    return round(float(np.interp(best, raw, true)), 2)


def estimate_noise(frames: list[np.ndarray], block: int = 16, quantile: float = 0.05) -> float:
    """Gaussian noise sigma (0-255) of the luma: Immerkaer's operator (a difference of
    Laplacians that cancels smooth content), its mean absolute response per ``block``-px
    block scaled to a sigma, and the ``quantile`` of the blocks' readings: noise is in every
    block, texture only adds to some, so the quietest blocks read the noise. Nearly black
    or white blocks, where clipping hides noise, are left out; ``NOISE_FLOOR`` is removed in
    quadrature. (Ranking blocks by a smoothed copy's gradient instead, the first version,
    read fine stripes as noise: 9.5 and 9.9 on two noise-free clips.)"""
    x = _grey(frames) * 255
    k = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])[None, None]
    resp = F.conv2d(x, k).abs()  # (N, 1, H-2, W-2)
    n, _, h, w = resp.shape
    hb, wb = h // block, w // block
    if hb == 0 or wb == 0:
        return 0.0

    def per_block(t: torch.Tensor) -> torch.Tensor:
        return t[:, 0, :hb * block, :wb * block].reshape(n, hb, block, wb, block).mean(dim=(2, 4)).flatten()

    noise, level = per_block(resp), per_block(x[..., 1:, 1:])
    noise = noise[(level > 16) & (level < 239)]
    if not len(noise):
        return 0.0
    read = float(torch.quantile(noise, quantile)) * math.sqrt(math.pi / 2) / 6
    return math.sqrt(max(0.0, read**2 - NOISE_FLOOR**2))


def estimate_compression(path: str, max_frames: int = 48) -> tuple[str, float, float | None]:
    """(codec name, bits per pixel of the video stream, mean frame quantiser or None)."""
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        codec = s.codec_context.name
        w, h = s.codec_context.width, s.codec_context.height
        nbytes = frames = 0
        for packet in c.demux(s):
            if packet.size:
                nbytes += packet.size
                frames += 1
    bpp = 8 * nbytes / max(1, frames * w * h)
    qps = []
    with av.open(path) as c:
        s = c.streams.video[0]
        s.codec_context.options = {"export_side_data": "venc_params"}
        for i, f in enumerate(c.decode(s)):
            for sd in f.side_data:
                if getattr(sd, "type", None) is not None and sd.type.name == "VIDEO_ENC_PARAMS":
                    qps.append(float(np.mean(sd.qp_map())) if sd.nb_blocks else float(sd.qp))
            if i + 1 >= max_frames:
                break
    return codec, round(bpp, 4), (round(float(np.mean(qps)), 2) if qps else None)


def estimate(path: str, frames: list[np.ndarray], scale: int, most: int = 16) -> Degradation:
    """All of it, for the local video ``path`` and its decoded (training) frames, of which
    about ``most`` evenly spaced ones are read."""
    frames = frames[:: max(1, len(frames) // most)]
    codec, bpp, qp = estimate_compression(path)
    x = _grey(frames)
    ratio = band_ratio(x)  # the blur search's target, and the frames' detail
    return Degradation(_blur_of(x, ratio, scale), round(estimate_noise(frames), 2), codec, bpp, qp, round(ratio, 3))
