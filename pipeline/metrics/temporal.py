"""Temporal consistency of restored video, measured on pairs of consecutive frames.

- ``temporal_error`` (with a reference): how far the output's change from one frame to
  the next is from the reference's change (RMSE on BT.601 Y, 0-255 levels), the tMSE
  family of video SR papers as a root: a method that restores each frame well but makes
  details swim or shimmer between frames scores worse than its PSNR says.
- ``flicker`` (no reference): the output's mean frame-to-frame change (|dY|, levels) over
  the parts of the picture that do not change in the source (static regions: every source
  pixel of a 3x3 neighbourhood changed by less than ``STATIC_LEVELS``). A still background
  should stay still; detail invented afresh in every frame flickers there. The bicubic
  upscale's flicker is the source's own (noise, compression) and is the baseline.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.metrics.fullref import rgb_to_y

STATIC_LEVELS = 2.0  # source Y change (0-255) under which a pixel is static
MIN_STATIC = 0.01  # the share of the picture that must be static for a flicker score


def y_change(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
    """Y (BT.601, levels) of ``frame1`` minus that of ``frame0`` (uint8 RGB, one size)."""
    return rgb_to_y(frame1) - rgb_to_y(frame0)


def temporal_error(out0: np.ndarray, out1: np.ndarray, ref0: np.ndarray, ref1: np.ndarray, crop: int) -> float:
    """RMSE (Y levels) between the output's frame difference ``out1 - out0`` and the
    reference's ``ref1 - ref0``, ``crop`` px cut from each border. uint8 RGB frames of
    one size."""
    if not (out0.shape == out1.shape == ref0.shape == ref1.shape):
        raise ValueError(f"frames differ in size: {out0.shape}, {out1.shape}, {ref0.shape}, {ref1.shape}")
    return change_error(out0, out1, y_change(ref0, ref1), crop)


def change_error(out0: np.ndarray, out1: np.ndarray, ref_change: np.ndarray, crop: int) -> float:
    """``temporal_error`` with the reference's ``y_change`` already computed (one per pair,
    shared by the methods measured on it)."""
    d = y_change(out0, out1) - ref_change
    if crop:
        d = d[crop:-crop, crop:-crop]
    return float(np.sqrt(np.mean(d * d)))


def static_mask(src0: np.ndarray, src1: np.ndarray, scale: float, shape: tuple[int, int]) -> np.ndarray:
    """Where the source did not change between its two frames, at output resolution
    (``shape``: the output's (H, W), at most ``scale`` x the source's; each output pixel
    takes the source pixel it falls in)."""
    from scipy.ndimage import maximum_filter  # here, not at the top, as in fullref

    still = maximum_filter(np.abs(y_change(src0, src1)), size=3) < STATIC_LEVELS
    rows = np.minimum((np.arange(shape[0]) / scale).astype(int), still.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) / scale).astype(int), still.shape[1] - 1)
    return still[rows][:, cols]


def flicker(out0: np.ndarray, out1: np.ndarray, src0: np.ndarray, src1: np.ndarray, scale: int) -> float:
    """Mean |Y change| (levels) of the output between two consecutive frames over the
    source's static regions; nan when less than ``MIN_STATIC`` of the picture is static
    (a pan, a cut: nothing to measure)."""
    return still_change(out0, out1, static_mask(src0, src1, scale, out0.shape[:2]))


def still_change(out0: np.ndarray, out1: np.ndarray, mask: np.ndarray) -> float:
    """``flicker`` with the source's ``static_mask`` already computed (one per pair)."""
    if mask.mean() < MIN_STATIC:
        return math.nan
    return float(np.abs(y_change(out0, out1))[mask].mean())
