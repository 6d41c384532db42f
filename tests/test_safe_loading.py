"""User-supplied files run no code: a checkpoint carrying a pickled payload is refused by
torch.load(weights_only=True), a YAML config with a Python tag by yaml.safe_load, and the
job says so before any work."""

import os
import pickle

import pytest
import yaml

from pipeline.config import build_config
from pipeline.models import checkpoint
from tests.conftest import DATA, run_job


class Payload:
    """Unpickling this would create ``path``: the proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.slow
def test_checkpoint_with_a_pickled_payload_is_refused(tmp_path):
    proof = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"state_dict": Payload(str(proof))}, fh, protocol=2)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        checkpoint.load(str(bad))
    assert not proof.exists()
    # the job refuses it as model.pretrained, as a config error, before any video is touched
    proc = run_job("jobs.restore", "--input", os.path.join(DATA, "carphone_gop10.mp4"), "--output", str(tmp_path / "out"),
                   "--preset", "tiny", "--set", f"model.pretrained={bad}", check=False)
    assert proc.returncode == 2 and "cannot read checkpoint" in proc.stderr, proc.stderr[-2000:]
    assert not proof.exists() and not (tmp_path / "out").exists()
    with open(bad, "rb") as fh:  # control: a plain unpickler does run the payload
        pickle.load(fh)
    assert proof.exists()


def test_yaml_with_python_tags_is_refused(tmp_path):
    proof = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"train: !!python/object/apply:builtins.open [{str(proof)!r}, w]\n")
    with pytest.raises(yaml.constructor.ConstructorError):
        build_config("tiny", yaml_path=str(cfg))
    with pytest.raises(yaml.constructor.ConstructorError):
        build_config("tiny", overrides=[f"train.steps=!!python/object/apply:builtins.open [{str(proof)!r}, w]"])
    assert not proof.exists()
