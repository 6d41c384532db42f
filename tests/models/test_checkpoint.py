"""Self-describing checkpoints, the official EDSR-PyTorch format, errors."""

import pytest
import torch

from pipeline.models import checkpoint
from pipeline.models.edsr import EDSR


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_checkpoint_roundtrip_and_official_format(tmp_path, scale):
    torch.manual_seed(0)
    m = EDSR(3, 8, 1.0, scale).eval()
    x = torch.rand(1, 3, 9, 11)
    path = tmp_path / "m.pt"
    checkpoint.save(m, str(path), {"note": "test"})
    m2, meta = checkpoint.load(str(path))
    assert meta["format"] == checkpoint.FORMAT and meta["provenance"]["note"] == "test"
    assert meta["arch"] == {"name": "edsr", "n_resblocks": 3, "n_feats": 8, "res_scale": 1.0, "scale": scale}
    assert torch.equal(m(x), m2(x))
    # The official EDSR-PyTorch files are bare state dicts with the same module names.
    official = tmp_path / f"edsr_baseline_x{scale}.pt"
    torch.save(m.state_dict(), official)
    m3, meta3 = checkpoint.load(str(official))
    assert meta3["format"] == "edsr-pytorch" and meta3["arch"]["scale"] == scale and meta3["arch"]["n_resblocks"] == 3
    assert torch.equal(m(x), m3(x))


def test_checkpoint_loads_onto_the_requested_device(tmp_path):
    """load() must move the model to map_location (a GPU in real runs): "meta" stands in
    for a device other than the CPU here."""
    path = tmp_path / "m.pt"
    checkpoint.save(EDSR(1, 8, 1.0, 2), str(path), {})
    model, _ = checkpoint.load(str(path), map_location="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        checkpoint.load(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        checkpoint.load(str(bad))
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not an EDSR state dict"):
        checkpoint.load(str(other))
    extra = tmp_path / "extra.pt"
    torch.save({**EDSR(1, 8, 1.0, 2).state_dict(), "stray.weight": torch.zeros(1)}, extra)
    with pytest.raises(ValueError, match="weights do not fit"):
        checkpoint.load(str(extra))


def test_files_of_the_earlier_format_still_load(tmp_path):
    """reelsr.edsr/1 checkpoints (no architecture name) are EDSR."""
    import io

    m = EDSR(1, 8, 1.0, 2)
    buf = io.BytesIO()
    torch.save({"format": "reelsr.edsr/1", "arch": {"n_resblocks": 1, "n_feats": 8, "res_scale": 1.0, "scale": 2},
                "provenance": {}, "state_dict": m.state_dict()}, buf)
    m2, meta = checkpoint.load(buf.getvalue())
    assert meta["arch"]["name"] == "edsr" and meta["format"] == "reelsr.edsr/1"
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(m.eval()(x), m2(x))


def test_unknown_architecture_is_named(tmp_path):
    import io

    buf = io.BytesIO()
    torch.save({"format": checkpoint.FORMAT, "arch": {"name": "nope", "scale": 2}, "provenance": {}, "state_dict": {}}, buf)
    with pytest.raises(ValueError, match="unknown 'nope'"):
        checkpoint.load(buf.getvalue())
