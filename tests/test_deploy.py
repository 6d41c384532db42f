"""What deploys reelsr, checked as far as this machine allows (no Docker registry, no
cloud, no Kubernetes here): cluster.yaml against Ray's own cluster-config validation, the
KubeRay manifests against schemas/kuberay.schema.json, and the three agreeing with the
Dockerfile and the project (one image, the pinned Ray, no install at boot, S3 access on
every node, an entrypoint jobs.restore accepts)."""

import copy
import json
import os
import re
import shlex
import tomllib

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import ROOT

MANIFESTS = ["deploy/kuberay/rayjob.yaml", "deploy/kuberay/raycronjob.yaml"]


def _yaml(rel: str) -> dict:
    with open(os.path.join(ROOT, rel)) as fh:
        return yaml.safe_load(fh)


def _schema() -> dict:
    with open(os.path.join(ROOT, "schemas", "kuberay.schema.json")) as fh:
        return json.load(fh)


def _job_spec(doc: dict) -> dict:
    return doc["spec"]["jobTemplate"] if doc["kind"] == "RayCronJob" else doc["spec"]


def _pods(spec: dict) -> list[dict]:
    cluster = spec["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster.get("workerGroupSpecs", [])]


def _dockerfile() -> str:
    with open(os.path.join(ROOT, "Dockerfile")) as fh:
        return fh.read()


def test_cluster_yaml_validates_against_rays_schema():
    cfg = _yaml("cluster.yaml")
    validate_config(prepare_config(cfg))  # defaults filled in, then checked against ray-schema.json
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert "--num-cpus=0" in " ".join(cfg["head_start_ray_commands"])
    workers = [v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]]
    assert workers and all(w["min_workers"] == 0 and w["max_workers"] >= 1 for w in workers)
    assert all(w["node_config"]["InstanceType"].startswith(("g", "p")) for w in workers)  # GPU families
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))
    # every node runs the image and gets S3 access from its instance profile; nothing installs at boot
    assert cfg["docker"]["image"] and not cfg.get("setup_commands") and not cfg.get("file_mounts")
    assert all(t["node_config"].get("IamInstanceProfile", {}).get("Name") for t in cfg["available_node_types"].values())
    commands = " ".join(cfg.get(k, []) and " ".join(cfg[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))
    assert "pip" not in commands


def test_cluster_validation_can_fail():
    cfg = _yaml("cluster.yaml")
    cfg["max_wrokers"] = 3
    with pytest.raises(Exception, match="max_wrokers"):
        validate_config(prepare_config(cfg))


@pytest.mark.parametrize("rel", MANIFESTS)
def test_kuberay_manifests_validate_against_the_schema(rel):
    doc = _yaml(rel)
    jsonschema.validate(doc, _schema())
    spec = _job_spec(doc)
    assert spec["shutdownAfterJobFinishes"] is True  # no cluster left running between nights
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__  # the Ray the project pins
    for pod in _pods(spec):
        assert pod["serviceAccountName"] == "reelsr"  # AWS: the IAM role of that account, on every pod
        for c in pod["containers"]:
            assert {"secretRef": {"name": "reelsr-s3", "optional": True}} in c["envFrom"]  # other stores: keys from a Secret
            assert "command" not in c and "args" not in c  # no install step: the image is complete


@pytest.mark.parametrize("typo", ["shutdownAfterJobFinish", "rayClusterSpec.headGroupSpec.template.spec.container", "rayClusterSpec.rayVersion"])
def test_the_manifest_schema_can_fail(typo):
    doc = copy.deepcopy(_yaml(MANIFESTS[0]))
    spec = doc["spec"]
    if typo == "rayClusterSpec.rayVersion":
        spec["rayClusterSpec"]["rayVersion"] = 2.6
    elif "." in typo:
        pod = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        pod["container"] = pod.pop("containers")
    else:
        spec[typo] = True
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, _schema())


def test_one_image_everywhere_built_from_the_dockerfile_with_the_pinned_ray_and_python():
    images = {_yaml("cluster.yaml")["docker"]["image"]}
    for rel in MANIFESTS:
        images |= {c["image"] for pod in _pods(_job_spec(_yaml(rel))) for c in pod["containers"]}
    assert images == {"REGISTRY/reelsr:VERSION"}
    docker = _dockerfile()
    base = re.search(r"^ARG RAY_IMAGE=(\S+)$", docker, re.M).group(1)
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    assert f"ray[default,data,train]=={ray.__version__}" in deps
    assert "['project']['dependencies']" in docker and "-r /tmp/requirements.txt" in docker  # the pinned list, baked in
    for folder in ("pipeline", "jobs", "schemas"):
        assert f"COPY --chown=ray:users {folder} ./{folder}" in docker


@pytest.mark.parametrize("rel", MANIFESTS)
def test_the_entrypoint_is_a_restore_the_job_accepts(rel):
    from jobs.restore import parser

    words = shlex.split(_job_spec(_yaml(rel))["entrypoint"])
    assert words[:3] == ["python", "-m", "jobs.restore"]
    args = parser().parse_args(words[3:])
    assert args.input.startswith("s3://") and args.output.startswith("s3://")
