"""MATLAB-compatible bicubic resize (pipeline.metrics.resize) against MATLAB's own output.

The references are the Set5 LR_bicubic images made by MATLAB ``imresize`` (see
tests/data/set5/SOURCES.md); for x3 MATLAB's scripts first crop HR to a multiple of 3.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.metrics.fullref import psnr_y
from pipeline.metrics.resize import (
    bicubic_resize,
    bicubic_resize_uint8,
    imresize_scale,
    resize_matrix,
    scaled_size,
)
from tests.conftest import DATA as CONF_DATA
from tests.metrics.conftest import blurred

SET5 = Path(CONF_DATA) / "set5"
NAMES = ["baby", "bird", "butterfly", "head", "woman"]


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _hr_lr(name: str, scale: int) -> tuple[np.ndarray, np.ndarray]:
    hr = _rgb(SET5 / "HR" / f"{name}.png")
    hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]  # modcrop
    return hr, _rgb(SET5 / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_matlab_imresize_set5(scale):
    for name in NAMES:
        hr, ref = _hr_lr(name, scale)
        assert ref.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3)
        ours = bicubic_resize_uint8(hr, ref.shape[:2])
        diff = np.abs(ours.astype(int) - ref.astype(int))
        mad = diff.mean()
        print(f"x{scale} {name}: MAD {mad:.4f} grey levels, max {diff.max()}, exact {np.mean(diff == 0):.2%}")
        assert mad < 0.5
        assert mad < 0.01  # in fact bit-exact here (MATLAB's per-axis uint8 rounding is reproduced)
        # Called with a factor, as MATLAB imresize(hr, 1/scale): the same image.
        assert np.array_equal(imresize_scale(hr, 1 / scale), ours)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_float_path_close_to_matlab_and_uint8_path(scale):
    for name in NAMES:
        hr, ref = _hr_lr(name, scale)
        x = torch.from_numpy(hr.copy()).permute(2, 0, 1)[None].float() / 255
        y = bicubic_resize(x, ref.shape[:2])
        ours = (y[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        d_ref = np.abs(ours.astype(int) - ref.astype(int))
        d_u8 = np.abs(ours.astype(int) - bicubic_resize_uint8(hr, ref.shape[:2]).astype(int))
        print(f"x{scale} {name}: float path MAD vs MATLAB {d_ref.mean():.4f}")
        # Only the intermediate uint8 rounding of the uint8 path differs.
        assert d_ref.mean() < 0.5 and d_u8.max() <= 2 and d_u8.mean() < 0.25


def test_float_path_is_the_two_matrices():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 37, 50, dtype=torch.float64) * 0.5 + 0.25  # no clamping involved
    for size in [(19, 25), (74, 100), (37, 61), (12, 50)]:
        expected = np.einsum("oh,nchw,pw->ncop", resize_matrix(37, size[0]), x.numpy(), resize_matrix(50, size[1]))
        np.testing.assert_allclose(bicubic_resize(x, size).numpy(), np.clip(expected, 0, 1), atol=1e-12)
        np.testing.assert_allclose(bicubic_resize(x.float(), size).double().numpy(), np.clip(expected, 0, 1), atol=1e-5)


def test_weights_by_hand():
    # x2 upscale of 4 px, first output pixel: u = 1/2 + 0.25 = 0.75 (1-based); taps at
    # input positions -1, 0, 1, 2 with Keys a=-0.5 weights -0.0234375, 0.2265625,
    # 0.8671875, -0.0703125; positions -1 and 0 mirror to 2 and 1 (1-based).
    m = resize_matrix(4, 8)
    np.testing.assert_allclose(m[0], [0.2265625 + 0.8671875, -0.0234375 - 0.0703125, 0, 0], atol=1e-15)
    np.testing.assert_allclose(m[7], m[0][::-1], atol=1e-15)  # symmetric
    for n_in, n_out in [(4, 8), (10, 3), (7, 7), (100, 33), (5, 1)]:
        m = resize_matrix(n_in, n_out)
        assert m.shape == (n_out, n_in) and m.dtype == np.float64
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(resize_matrix(9, 9), np.eye(9))
    # x1/2 with antialiasing: 8 taps of the kernel stretched by 2.
    assert np.count_nonzero(resize_matrix(64, 32)[16]) == 8
    assert resize_matrix(64, 32) is resize_matrix(64, 32)  # cached


def test_shape_rules():
    x = torch.rand(2, 3, 40, 50)
    for size in [(20, 25), (13, 7), (80, 100), (41, 50), (1, 1)]:
        y = bicubic_resize(x, size)
        assert y.shape == (2, 3, *size) and y.dtype == x.dtype and y.device == x.device
        assert y.min() >= 0 and y.max() <= 1
    assert bicubic_resize(x.double(), (20, 25)).dtype == torch.float64
    assert bicubic_resize(x.bfloat16(), (20, 25)).dtype == torch.bfloat16
    rgb = np.zeros((40, 50, 3), np.uint8)
    assert bicubic_resize_uint8(rgb, (13, 7)).shape == (13, 7, 3)
    # MATLAB's size for a factor: ceil(in * scale), float noise ignored.
    assert [scaled_size(n, s) for n, s in [(10, 0.3), (7, 0.5), (510, 1 / 3), (512, 1 / 3), (5, 2.5), (9, 1.0)]] == [3, 4, 170, 171, 13, 9]
    assert imresize_scale(x, 0.5).shape == (2, 3, 20, 25)
    assert imresize_scale(rgb, 1 / 3).shape == (14, 17, 3)
    for bad in [(0, 5), (5,), (2.5, 3), (-1, 4)]:
        with pytest.raises(ValueError):
            bicubic_resize(x, bad)
    with pytest.raises(ValueError):
        bicubic_resize(x[0], (20, 25))
    with pytest.raises(ValueError):
        bicubic_resize(x.to(torch.uint8), (20, 25))
    with pytest.raises(ValueError):
        bicubic_resize_uint8(rgb[..., 0], (20, 25))
    with pytest.raises(ValueError):
        bicubic_resize_uint8(rgb.astype(np.float32), (20, 25))
    with pytest.raises(ValueError):
        imresize_scale(x, 0)


def test_constant_stays_constant():
    x = torch.full((1, 3, 33, 47), 0.3)
    for size in [(11, 16), (99, 141), (33, 47), (10, 13), (50, 70)]:
        torch.testing.assert_close(bicubic_resize(x, size), torch.full((1, 3, *size), 0.3))
    rgb = np.full((33, 47, 3), 77, np.uint8)
    for size in [(11, 16), (66, 94), (10, 13), (50, 70)]:
        assert (bicubic_resize_uint8(rgb, size) == 77).all()
    for value in (0, 255):
        assert (bicubic_resize_uint8(np.full((20, 20, 3), value, np.uint8), (7, 9)) == value).all()



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
    x2 = psnr_y(bird, blurred(bird, 2), 2)
    x4 = psnr_y(bird, blurred(bird, 4), 4)
    assert 25 < x4 < x2 < 45
