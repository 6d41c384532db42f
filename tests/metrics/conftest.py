"""Fixtures of the metrics tests: a real image and its degraded versions."""

import numpy as np
import pytest

from pipeline.metrics.resize import bicubic_resize_uint8
from tests.conftest import bird as load_bird


@pytest.fixture(scope="session")
def bird() -> np.ndarray:
    return load_bird()  # uint8 288x288x3


def blurred(rgb: np.ndarray, factor: int = 4) -> np.ndarray:
    """Bicubic down by ``factor`` and back up."""
    h, w = rgb.shape[:2]
    return bicubic_resize_uint8(bicubic_resize_uint8(rgb, (h // factor, w // factor)), (h, w))


def noisy(rgb: np.ndarray, sigma: float = 25.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rgb + rng.normal(0.0, sigma, rgb.shape), 0, 255).round().astype(np.uint8)
