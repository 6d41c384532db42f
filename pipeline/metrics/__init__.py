"""Quality metrics of reelsr: NIQE (no-reference) and PSNR / SSIM on Y (full-reference).

``METRICS`` is the one table of metric metadata: the report row's metric columns
(``<column_prefix>_<method>``) and the run summary's legend (direction, unit) are read
from it.
Importing this package is cheap: pyiqa is imported only when a ``NiqeScorer`` is built.
"""

from dataclasses import dataclass

from .fullref import psnr_y, rgb_to_y, ssim_y
from .niqe import NIQE_PARAMS_PATH, NiqeScorer
from .resize import bicubic_resize, bicubic_resize_uint8


@dataclass(frozen=True)
class MetricSpec:
    """Metadata of one quality metric.

    name: key in ``METRICS``.
    column_prefix: prefix of this metric's report columns (``psnr`` -> ``psnr_bicubic`` ...).
    lower_is_better: True when a smaller value means better quality.
    needs_reference: True for full-reference metrics (need the ground-truth image).
    unit: unit of the value ("" when unitless).
    description: one line for reports.
    """

    name: str
    column_prefix: str
    lower_is_better: bool
    needs_reference: bool
    unit: str
    description: str


METRICS: dict[str, MetricSpec] = {
    "niqe": MetricSpec(
        name="niqe",
        column_prefix="niqe",
        lower_is_better=True,
        needs_reference=False,
        unit="",
        description="NIQE (pyiqa, BasicSR pristine model), grey = YIQ luma",
    ),
    "psnr": MetricSpec(
        name="psnr",
        column_prefix="psnr",
        lower_is_better=False,
        needs_reference=True,
        unit="dB",
        description="PSNR on BT.601 Y (MATLAB rgb2ycbcr), border crop",
    ),
    "ssim": MetricSpec(
        name="ssim",
        column_prefix="ssim",
        lower_is_better=False,
        needs_reference=True,
        unit="",
        description="SSIM (Wang 2004, 11x11 Gaussian sigma 1.5) on BT.601 Y, border crop",
    ),
    "flicker": MetricSpec(
        name="flicker",
        column_prefix="flicker",
        lower_is_better=True,
        needs_reference=False,
        unit="levels",
        description="mean |Y change| between consecutive frames where the source is still (0-255)",
    ),
    "terr": MetricSpec(
        name="terr",
        column_prefix="terr",
        lower_is_better=True,
        needs_reference=True,
        unit="levels",
        description="RMSE of the frame-to-frame Y change against the reference's (0-255)",
    ),
}

__all__ = [
    "METRICS",
    "MetricSpec",
    "NIQE_PARAMS_PATH",
    "NiqeScorer",
    "bicubic_resize",
    "bicubic_resize_uint8",
    "psnr_y",
    "rgb_to_y",
    "ssim_y",
]
