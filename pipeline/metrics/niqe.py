"""NIQE (Mittal et al. 2012), no-reference, computed by pyiqa with shipped parameters.

The pristine model (``mu_prisparam`` 1x36, ``cov_prisparam`` 36x36) ships in
``pipeline/data/niqe_pris_params.mat`` (made by ``pipeline/data/make_niqe_params.py``
from BasicSR's ``niqe_pris_params.npz``). It is handed to pyiqa as
``pretrained_model_path``, so pyiqa never calls its downloader
(``load_file_from_url``) and never touches the network or the torch-hub cache.
"""

import math
import time
from pathlib import Path

import numpy as np
import torch

NIQE_PARAMS_PATH = Path(__file__).resolve().parent.parent / "data" / "niqe_pris_params.mat"
NIQE_BLOCK = 96  # NIQE works on 96x96 blocks (48x48 at the second scale)


class NiqeScorer:
    """NIQE through pyiqa with the shipped parameters (lower is better). Loads once; reuse it.

    Usage::

        scorer = NiqeScorer()          # first one imports pyiqa: ~1.5-3 s on CPU
        score = scorer(rgb)            # rgb: uint8 (H, W, 3), H and W >= 96; ~0.02-0.1 s at 288x352

    Grey conversion: pyiqa's ``niqe`` metric (``test_y_channel=True``, default
    ``color_space='yiq'``) takes the Y of YIQ, Y = 0.299 R + 0.587 G + 0.114 B, scaled
    to [0, 255] and rounded to integers -- i.e. MATLAB ``rgb2gray`` on a uint8 image
    (MATLAB's NIQE reference code works on such a grey image). Note this is NOT the
    [16, 235] YCbCr Y used by :mod:`pipeline.metrics.fullref` (BasicSR's own
    ``calculate_niqe`` uses that one, giving slightly different numbers).
    Computation is in float64. The image is cut to whole 96x96 blocks from the
    top-left corner (the remainder at the right/bottom is ignored, as in MATLAB).

    Args:
        device: torch device string for the computation ("cpu", "cuda", ...).
    """

    def __init__(self, device: str = "cpu"):
        if not NIQE_PARAMS_PATH.is_file():
            raise FileNotFoundError(f"shipped NIQE parameters missing: {NIQE_PARAMS_PATH}")
        import pyiqa  # imported here: it is slow (~3 s) and only NIQE needs it

        self.device = torch.device(device)
        # pretrained_model_path goes to pyiqa.archs.niqe_arch.NIQE, which then
        # scipy.io.loadmat()s it instead of downloading its default parameters.
        self._metric = pyiqa.create_metric(
            "niqe", device=self.device, pretrained_model_path=str(NIQE_PARAMS_PATH)
        )
        self._metric.eval()

    def __call__(self, rgb: np.ndarray) -> float:
        """NIQE of one image.

        Args:
            rgb: uint8 array (H, W, 3), RGB order, with H >= 96 and W >= 96.

        Returns:
            NIQE score as a Python float (lower is better; typically ~2-15 for
            natural images). ``math.nan`` if NIQE is undefined because no 96x96
            block has any texture (e.g. an all-black or flat frame); aggregate
            with a nan-aware mean.

        Raises:
            ValueError: wrong dtype/shape, or the image is smaller than 96x96.
        """
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        if h < NIQE_BLOCK or w < NIQE_BLOCK:
            raise ValueError(
                f"NIQE needs an image of at least {NIQE_BLOCK}x{NIQE_BLOCK} pixels "
                f"(it works on {NIQE_BLOCK}x{NIQE_BLOCK} blocks); got {h}x{w} (HxW)"
            )
        x = torch.from_numpy(rgb.astype(np.float64) / 255.0).permute(2, 0, 1)[None]
        x = x.to(self.device)
        try:
            with torch.inference_mode():
                score = float(self._metric(x).item())
        except torch.linalg.LinAlgError:
            # every block's features are NaN (flat image): covariance is undefined
            return math.nan
        return score if math.isfinite(score) else math.nan


    # --- pooled over frames: one multivariate Gaussian over every block of a method's frames

    def features(self, rgb: np.ndarray) -> torch.Tensor:
        """The NIQE features of ``rgb``'s 96x96 blocks (float64, (blocks, 36): 18 per
        scale), computed as pyiqa's ``niqe`` does before it fits its Gaussian."""
        from pyiqa.archs.func_util import diff_round, normalize_img_with_gauss
        from pyiqa.archs.niqe_arch import compute_feature
        from pyiqa.matlab_utils import blockproc, imresize
        from pyiqa.utils.color_util import to_y_channel

        self._check(rgb)
        x = torch.from_numpy(rgb.astype(np.float64) / 255.0).permute(2, 0, 1)[None].to(self.device)
        with torch.inference_mode():
            img = diff_round(to_y_channel(x, 255, "yiq")).to(torch.float64)
            h, w = img.shape[-2:]
            img = img[..., : h // NIQE_BLOCK * NIQE_BLOCK, : w // NIQE_BLOCK * NIQE_BLOCK]
            out = []
            for scale in (1, 2):
                out.append(blockproc(normalize_img_with_gauss(img, padding="replicate"), [NIQE_BLOCK // scale] * 2, fun=compute_feature))
                if scale == 1:
                    img = imresize(img / 255.0, scale=0.5, antialiasing=True) * 255.0
            return torch.cat(out, -1)[0]

    def from_features(self, feats: torch.Tensor) -> float:
        """NIQE of the blocks ``feats`` (rows of ``features``, from one frame or many)."""
        from pyiqa.archs.niqe_arch import nancov, nanmean

        mu_p = self._metric.net.mu_pris_param.to(feats)
        cov_p = self._metric.net.cov_pris_param.to(feats)
        try:
            mu, cov = nanmean(feats[None], dim=1), nancov(feats[None])
            diff = (mu_p[None] - mu).unsqueeze(1)
            q = torch.bmm(torch.bmm(diff, torch.linalg.pinv((cov_p[None] + cov) / 2)), diff.transpose(1, 2)).squeeze()
            value = float(torch.sqrt(q))
        except (torch.linalg.LinAlgError, RuntimeError):
            return math.nan
        return value if math.isfinite(value) else math.nan

    def pooled(self, per_frame: list[torch.Tensor], boots: int = 200, seed: int = 0, level: float = 0.9) -> tuple[float, float, float]:
        """NIQE of a method over several frames (``features`` of each): one Gaussian fitted
        to all their blocks, so a few frames of a small video still give a stable score;
        and a bootstrap interval (frames drawn with replacement, ``level`` coverage).
        Returns (score, low, high); nan where no frame has a textured block."""
        feats = [f for f in per_frame if len(f)]
        if not feats:
            return math.nan, math.nan, math.nan
        score = self.from_features(torch.cat(feats))
        if len(feats) < 2:
            return score, math.nan, math.nan
        rng = np.random.default_rng(seed)
        draws = [self.from_features(torch.cat([feats[i] for i in rng.integers(0, len(feats), len(feats))])) for _ in range(boots)]
        draws = [d for d in draws if math.isfinite(d)]
        if not draws:
            return score, math.nan, math.nan
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
        return score, float(lo), float(hi)

    @staticmethod
    def _check(rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        if min(rgb.shape[:2]) < NIQE_BLOCK:
            raise ValueError(f"NIQE needs an image of at least {NIQE_BLOCK}x{NIQE_BLOCK} pixels "
                             f"(it works on {NIQE_BLOCK}x{NIQE_BLOCK} blocks); got {rgb.shape[0]}x{rgb.shape[1]} (HxW)")


if __name__ == "__main__":  # quick timing: python -m pipeline.metrics.niqe IMAGE...
    import sys

    from PIL import Image

    t0 = time.perf_counter()
    scorer = NiqeScorer()
    print(f"NiqeScorer() {time.perf_counter() - t0:.2f} s")
    for path in sys.argv[1:]:
        img = np.asarray(Image.open(path).convert("RGB"))
        t0 = time.perf_counter()
        s = scorer(img)
        print(f"{path} {img.shape[1]}x{img.shape[0]} NIQE {s:.4f} in {time.perf_counter() - t0:.3f} s")
