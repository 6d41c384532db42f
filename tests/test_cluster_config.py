"""cluster.yaml is a valid Ray cluster-launcher config with a CPU head and GPU workers."""

import os

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import ROOT


def test_cluster_yaml_validates_against_rays_schema():
    with open(os.path.join(ROOT, "cluster.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    validate_config(prepare_config(cfg))  # defaults filled in, then checked against ray-schema.json
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert "--num-cpus=0" in " ".join(cfg["head_start_ray_commands"])
    workers = [v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]]
    assert workers and all(w["min_workers"] == 0 and w["max_workers"] >= 1 for w in workers)
    assert all(w["node_config"]["InstanceType"].startswith(("g", "p")) for w in workers)  # GPU families
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))
    assert any("pip install -e ~/reelsr" in c for c in cfg["setup_commands"])


def test_validation_can_fail():
    import pytest

    with open(os.path.join(ROOT, "cluster.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    cfg["max_wrokers"] = 3
    with pytest.raises(Exception, match="max_wrokers"):
        validate_config(prepare_config(cfg))
