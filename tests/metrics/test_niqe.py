"""NIQE: offline (the shipped parameters, no network), deterministic, ordered as expected."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pipeline.metrics import (
    NIQE_PARAMS_PATH,
    NiqeScorer,
)
from tests.conftest import DATA as CONF_DATA
from tests.conftest import ROOT
from tests.metrics.conftest import blurred, noisy

DATA = Path(CONF_DATA)


REPO = Path(ROOT)


REFERENCE_NPZ = Path(NIQE_PARAMS_PATH).with_suffix(".npz")  # BasicSR's original, shipped beside the .mat


@pytest.fixture(scope="module")
def niqe() -> NiqeScorer:
    return NiqeScorer()


def _block_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_shipped_mat_holds_npz_values():
    mat = scipy.io.loadmat(NIQE_PARAMS_PATH)
    assert np.ravel(mat["mu_prisparam"]).shape == (36,)
    assert mat["cov_prisparam"].shape == (36, 36)
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
    soft = niqe(blurred(bird))
    grainy = niqe(noisy(bird))
    assert all(math.isfinite(v) for v in (sharp, soft, grainy))
    assert sharp < soft
    assert sharp < grainy


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


def test_features_give_pyiqas_score_and_pooling_steadies_a_small_video(niqe):
    """``features`` + ``from_features`` is pyiqa's NIQE exactly; pooled over a small
    video's frames (352x288: 6 blocks each) the score moves less with a one-pixel shift
    of the crop than the per-frame mean does, and its bootstrap interval holds it."""
    from pipeline.metrics.resize import bicubic_resize_uint8
    from tests.conftest import DATA, frames_of

    frames = [bicubic_resize_uint8(f, (288, 352)) for f in frames_of(os.path.join(DATA, "carphone_gop10.mp4"))[::5]]
    assert niqe.from_features(niqe.features(frames[0])) == pytest.approx(niqe(frames[0]), abs=1e-9)

    def per_frame_mean(fs):
        return float(np.mean([niqe(f) for f in fs]))

    def pooled(fs):
        return niqe.pooled([niqe.features(f) for f in fs])

    crops = {d: [f[d:d + 288 - 2, d:d + 352 - 2] for f in frames] for d in (0, 1, 2)}
    mean_moves = np.ptp([per_frame_mean(c) for c in crops.values()])
    pooled_scores = [pooled(c) for c in crops.values()]
    pooled_moves = np.ptp([p[0] for p in pooled_scores])
    score, lo, hi = pooled_scores[0]
    assert lo <= score <= hi and hi - lo > 0
    assert pooled_moves < mean_moves, (pooled_moves, mean_moves)
    assert np.isnan(niqe.pooled([])[0]) and np.isnan(niqe.pooled([niqe.features(frames[0])])[1])
