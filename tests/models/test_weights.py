"""The table of shipped weights: every entry's files exist, match their SHA-256,
describe themselves, and restore a real image better than bicubic."""

import numpy as np
import pytest
import torch

from pipeline import inference
from pipeline.metrics.fullref import psnr_y
from pipeline.metrics.resize import bicubic_resize_uint8
from pipeline.models import checkpoint
from pipeline.models.weights import WEIGHTS, builtin, read_pretrained
from tests.conftest import bird


@pytest.mark.parametrize("name,scale", [(e.name, s) for e in WEIGHTS for s in sorted(e.item.files)])
def test_shipped_weights_describe_themselves_and_beat_bicubic(name, scale):
    """Set5 bird is not in their training data. A multi-frame model gets a still window
    (the frame repeated), as a static shot gives it."""
    w = builtin(name)
    model, meta = checkpoint.load(w.read(scale))
    if scale == 0:  # one file for every scale (the continuous model): measured at x3
        assert {k: v for k, v in meta["arch"].items() if k != "scale"} == w.arch and 1 <= meta["arch"]["scale"] <= 4
        scale = 3
    else:
        assert meta["arch"] == {**w.arch, "scale": scale}
    assert meta["provenance"] == w.describe(scale) and meta["provenance"]
    hr = bird()
    h, wd = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    hr = hr[:h, :wd]
    lr = bicubic_resize_uint8(hr, (h // scale, wd // scale))
    x = np.stack([lr] * inference.frames_in(model)) if inference.frames_in(model) > 1 else lr
    sr = inference.upscale_frames(model, x[None], scale, device=torch.device("cpu"))[0]
    bic = bicubic_resize_uint8(lr, (h, wd))
    assert psnr_y(sr, hr, crop=scale) > psnr_y(bic, hr, crop=scale) + 0.5


def test_a_damaged_file_is_refused(tmp_path, monkeypatch):
    import pipeline.models.weights as weights

    w = builtin("edsr_2x16")
    blob = bytearray(open(w.path(2), "rb").read())
    blob[-10] ^= 0xFF
    (tmp_path / w.files[2][0]).write_bytes(bytes(blob))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="does not match the shipped"):
        w.read(2)


def test_lookup_errors(tmp_path):
    assert read_pretrained(None, 2) is None
    with pytest.raises(ValueError, match="no shipped weights 'builtin:nope'"):
        read_pretrained("builtin:nope", 2)
    with pytest.raises(ValueError, match="no shipped file for x5"):
        builtin("edsr_2x16").path(5)
    with pytest.raises(FileNotFoundError, match="model.pretrained not found"):
        read_pretrained(str(tmp_path / "x.pt"), 2)
    assert read_pretrained("builtin:edsr_2x16", 3) == open(builtin("edsr_2x16").path(3), "rb").read()
    assert np.all([e.item.flavour in ("bicubic", "archive") for e in WEIGHTS])
