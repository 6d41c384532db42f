"""Regenerate ``niqe_pris_params.mat`` (shipped with the package) from BasicSR's npz.

pyiqa's NIQE arch (``pyiqa/archs/niqe_arch.py``, pyiqa 0.1.16) loads its pristine
model with ``scipy.io.loadmat(pretrained_model_path)`` and reads exactly two keys:
``mu_prisparam`` (raveled to 36 values) and ``cov_prisparam`` (36x36). This script
writes those two keys (plus ``gaussian_window`` for completeness; pyiqa ignores it)
from the BasicSR ``niqe_pris_params.npz`` (keys ``mu_pris_param``, ``cov_pris_param``,
``gaussian_window``). Values are copied bit-for-bit as float64.

Usage (build time only; the package never reads the npz at run time):

    python pipeline/data/make_niqe_params.py [SRC_NPZ] [DST_MAT]
"""

import sys
from pathlib import Path

import numpy as np
import scipy.io

DEFAULT_SRC = Path(__file__).resolve().parent / "niqe_pris_params.npz"  # BasicSR's, copied unchanged (SOURCES.md)
DEFAULT_DST = Path(__file__).resolve().parent / "niqe_pris_params.mat"


def convert(src: Path, dst: Path) -> None:
    with np.load(src) as npz:
        mu = np.asarray(npz["mu_pris_param"], dtype=np.float64).reshape(1, 36)
        cov = np.asarray(npz["cov_pris_param"], dtype=np.float64)
        window = np.asarray(npz["gaussian_window"], dtype=np.float64)
    if cov.shape != (36, 36):
        raise ValueError(f"cov_pris_param must be 36x36, got {cov.shape}")
    scipy.io.savemat(
        dst,
        {"mu_prisparam": mu, "cov_prisparam": cov, "gaussian_window": window},
        do_compression=False,
        oned_as="row",
    )
    # savemat stamps the creation time into the 116-byte text header; replace it
    # with a fixed text so the output is byte-for-byte reproducible.
    header = b"MATLAB 5.0 MAT-file, NIQE pristine model (BasicSR niqe_pris_params.npz)"
    with open(dst, "r+b") as f:
        f.write(header.ljust(116, b" "))
    # Check the round trip the way pyiqa reads it.
    back = scipy.io.loadmat(dst)
    assert np.array_equal(np.ravel(back["mu_prisparam"]), mu.ravel())
    assert np.array_equal(back["cov_prisparam"], cov)


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SRC
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_DST
    convert(src, dst)
    print(f"wrote {dst}")
