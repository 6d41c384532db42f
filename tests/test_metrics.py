"""Tests of pipeline.metrics: NIQE (offline, pyiqa), PSNR/SSIM on Y, bicubic resize."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from pipeline.metrics import (
    METRICS,
    NIQE_PARAMS_PATH,
    NiqeScorer,
    bicubic_resize,
    bicubic_resize_uint8,
    psnr_y,
    rgb_to_y,
    ssim_y,
)

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parent.parent
REFERENCE_NPZ = Path("/work/shared/reference/niqe_pris_params.npz")


@pytest.fixture(scope="module")
def bird() -> np.ndarray:
    return np.asarray(Image.open(DATA / "bird.png").convert("RGB"))  # uint8 288x288x3


@pytest.fixture(scope="module")
def niqe() -> NiqeScorer:
    return NiqeScorer()


def _blurred(rgb: np.ndarray, factor: int = 4) -> np.ndarray:
    h, w = rgb.shape[:2]
    return bicubic_resize_uint8(bicubic_resize_uint8(rgb, (h // factor, w // factor)), (h, w))


def _noisy(rgb: np.ndarray, sigma: float = 25.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rgb + rng.normal(0.0, sigma, rgb.shape), 0, 255).round().astype(np.uint8)


def _block_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- metric table


def test_metric_table():
    assert set(METRICS) == {"niqe", "psnr", "ssim"}
    assert METRICS["niqe"].lower_is_better and not METRICS["niqe"].needs_reference
    for name in ("psnr", "ssim"):
        assert not METRICS[name].lower_is_better and METRICS[name].needs_reference
    prefixes = [m.column_prefix for m in METRICS.values()]
    assert len(set(prefixes)) == len(prefixes)
    assert all(key == spec.name for key, spec in METRICS.items())


def test_importing_the_pipeline_is_cheap():
    # Every Ray worker imports pipeline.actors (and through pipeline.training this
    # package); scipy (~0.3 s) and pyiqa are imported only by the code that uses them.
    code = "import sys, pipeline.actors; print(sorted(m for m in ('scipy', 'pyiqa') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- NIQE


def test_shipped_mat_holds_npz_values():
    mat = scipy.io.loadmat(NIQE_PARAMS_PATH)
    assert np.ravel(mat["mu_prisparam"]).shape == (36,)
    assert mat["cov_prisparam"].shape == (36, 36)
    if not REFERENCE_NPZ.is_file():
        pytest.skip(f"{REFERENCE_NPZ} not available here")
    with np.load(REFERENCE_NPZ) as npz:
        assert np.array_equal(np.ravel(mat["mu_prisparam"]), np.ravel(npz["mu_pris_param"]))
        assert np.array_equal(mat["cov_prisparam"], npz["cov_pris_param"])


def test_niqe_uses_shipped_params(niqe):
    mat = scipy.io.loadmat(NIQE_PARAMS_PATH)
    net = niqe._metric.net
    assert type(net).__name__ == "NIQE"
    assert np.array_equal(net.mu_pris_param.numpy(), np.ravel(mat["mu_prisparam"]))
    assert np.array_equal(net.cov_pris_param.numpy(), mat["cov_prisparam"])


def test_niqe_offline_in_process(monkeypatch, tmp_path, bird):
    _block_network(monkeypatch)
    for var in ("HOME", "TORCH_HOME", "XDG_CACHE_HOME", "HF_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    scorer = NiqeScorer()
    value = scorer(bird)
    assert math.isfinite(value) and value > 0
    assert not any(tmp_path.iterdir())  # nothing cached or downloaded


def test_niqe_offline_fresh_interpreter(tmp_path):
    # Importing pyiqa and building the scorer from scratch, sockets refused,
    # empty HOME / caches: must not connect anywhere nor write any cache.
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise OSError('network access attempted')\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
        "socket.create_connection = refuse\n"
        "import numpy as np\n"
        "from PIL import Image\n"
        "from pipeline.metrics import NiqeScorer\n"
        f"img = np.asarray(Image.open({str(DATA / 'bird.png')!r}).convert('RGB'))\n"
        "print(repr(NiqeScorer()(img)))\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "TORCH_HOME": str(home / "torch"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert math.isfinite(float(out.stdout.strip().splitlines()[-1]))
    assert not any(home.iterdir())


def test_niqe_sharp_beats_blurred_and_noisy(niqe, bird):
    sharp = niqe(bird)
    blurred = niqe(_blurred(bird))
    noisy = niqe(_noisy(bird))
    assert all(math.isfinite(v) for v in (sharp, blurred, noisy))
    assert sharp < blurred
    assert sharp < noisy


def test_niqe_deterministic(niqe, bird):
    assert niqe(bird) == niqe(bird)
    crop = bird[:288, :192]  # non-square
    assert niqe(crop) == niqe(crop.copy())


def test_niqe_too_small_raises(niqe, bird):
    with pytest.raises(ValueError, match="95x288"):
        niqe(bird[:95])
    with pytest.raises(ValueError, match="288x40"):
        niqe(bird[:, :40])
    assert math.isfinite(niqe(bird[:96, :96]))  # one block is the minimum


def test_niqe_rejects_wrong_input(niqe, bird):
    with pytest.raises(ValueError):
        niqe(bird.astype(np.float32))
    with pytest.raises(ValueError):
        niqe(bird[..., 0])


def test_niqe_flat_image_is_nan(niqe):
    with pytest.warns(UserWarning):  # torch.cov complains about zero degrees of freedom
        assert math.isnan(niqe(np.zeros((192, 192, 3), np.uint8)))


# ---------------------------------------------------------------- Y, PSNR, SSIM


def test_rgb_to_y_matlab_values():
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = rgb_to_y(px)
    assert y.dtype == np.float64 and y.shape == (1, 5)
    np.testing.assert_allclose(y[0], [235.0, 16.0, 81.481, 144.553, 40.966], atol=1e-9)


def test_psnr_identical_is_inf(bird):
    assert psnr_y(bird, bird.copy(), 4) == math.inf


def test_psnr_known_offset():
    # +10 on R, G and B raises Y by exactly 10 * 219 / 255 everywhere.
    a = np.full((64, 48, 3), 100, np.uint8)
    b = a + 10
    dy = 10 * 219 / 255
    expected = 10 * math.log10(255**2 / dy**2)
    assert psnr_y(a, b, 0) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(b, a, 3) == pytest.approx(expected, abs=1e-9)


def test_psnr_crop_excludes_border(bird):
    b = bird.copy()
    b[:4] = 255 - b[:4]  # change only the top 4 rows
    b[:, -4:] = 0  # and the right 4 columns
    assert math.isfinite(psnr_y(bird, b, 0))
    assert math.isfinite(psnr_y(bird, b, 3))
    assert psnr_y(bird, b, 4) == math.inf
    assert ssim_y(bird, b, 0) < 0.99
    assert ssim_y(bird, b, 4) == pytest.approx(1.0, abs=1e-12)


def test_shape_and_crop_errors(bird):
    with pytest.raises(ValueError, match=r"\(288, 288, 3\).*\(288, 287, 3\)"):
        psnr_y(bird, bird[:, :287], 0)
    with pytest.raises(ValueError, match=r"\(288, 288, 3\).*\(287, 288, 3\)"):
        ssim_y(bird, bird[:287], 0)
    with pytest.raises(ValueError, match="crop"):
        psnr_y(bird, bird, 144)
    with pytest.raises(ValueError, match="crop"):
        ssim_y(bird, bird, 200)
    with pytest.raises(ValueError):
        psnr_y(bird, bird, -1)


def test_ssim_identical_is_one(bird):
    assert ssim_y(bird, bird.copy(), 4) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("degrade", [_blurred, _noisy])
def test_ssim_matches_skimage(bird, degrade):
    from skimage.metrics import structural_similarity

    other = degrade(bird)
    crop = 4
    y1 = rgb_to_y(bird)[crop:-crop, crop:-crop]
    y2 = rgb_to_y(other)[crop:-crop, crop:-crop]
    ref = structural_similarity(
        y1, y2, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim_y(bird, other, crop) == pytest.approx(ref, abs=1e-6)


def test_degraded_scores_lower(bird):
    blurred, noisy = _blurred(bird), _noisy(bird)
    assert ssim_y(bird, blurred, 4) < 0.95
    assert ssim_y(bird, noisy, 4) < ssim_y(bird, blurred, 4)  # sigma-25 noise is worse than x4 blur here
    assert 20 < psnr_y(bird, noisy, 4) < psnr_y(bird, blurred, 4) < 40


# ---------------------------------------------------------------- resize


def test_bicubic_resize_shape_range_dtype():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 50)
    for size in [(20, 25), (13, 7), (80, 100), (41, 50)]:
        y = bicubic_resize(x, size)
        assert y.shape == (2, 3, *size) and y.dtype == x.dtype
        assert y.min() >= 0 and y.max() <= 1
    assert bicubic_resize(x.double(), (20, 25)).dtype == torch.float64
    with pytest.raises(ValueError):
        bicubic_resize(x[0], (20, 25))
    with pytest.raises(ValueError):
        bicubic_resize(x, (0, 25))


def test_bicubic_resize_constant_stays_constant():
    x = torch.full((1, 3, 33, 47), 0.3)
    for size in [(11, 16), (99, 141), (33, 47)]:
        torch.testing.assert_close(bicubic_resize(x, size), torch.full((1, 3, *size), 0.3))
    rgb = np.full((33, 47, 3), 77, np.uint8)
    assert (bicubic_resize_uint8(rgb, (11, 16)) == 77).all()
    assert (bicubic_resize_uint8(rgb, (66, 94)) == 77).all()


def test_bicubic_resize_uint8_close_to_pil_bicubic_inside(bird):
    # The resize is MATLAB imresize (tests/test_resize.py checks it against MATLAB's own
    # output). PIL BICUBIC has the same Keys a=-0.5 kernel, antialiasing and pixel-centre
    # mapping, so away from the borders the two agree to within the rounding of their
    # one-axis-at-a-time passes (PIL: width first; MATLAB: height first on a tie). At the
    # borders they differ by design: PIL renormalises the in-image taps, MATLAB mirrors.
    for h, w in [(72, 72), (144, 100), (576, 576)]:
        ours = bicubic_resize_uint8(bird, (h, w))
        pil = np.asarray(Image.fromarray(bird).resize((w, h), Image.BICUBIC))
        assert ours.shape == (h, w, 3) and ours.dtype == np.uint8
        diff = np.abs(ours.astype(int) - pil.astype(int))
        assert diff[4:-4, 4:-4].max() <= 2
        assert diff.mean() < 0.25


def test_bicubic_down_up_psnr_sanity(bird):
    x2 = psnr_y(bird, _blurred(bird, 2), 2)
    x4 = psnr_y(bird, _blurred(bird, 4), 4)
    assert 25 < x4 < x2 < 45
