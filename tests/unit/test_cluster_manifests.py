"""The KubeRay manifests parse and carry what KubeRay needs; their import paths, scripts and configs resolve."""

import importlib
import json
import shlex
from pathlib import Path

import yaml

from mmos_ray.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_rayservice_serves_our_app_builder_with_token_auth():
    manifest = yaml.safe_load((ROOT / "cluster/rayservice.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    module, name = app["import_path"].split(":")
    assert callable(getattr(importlib.import_module(module), name))
    assert (ROOT / "configs" / Path(app["args"]["config"]).name).exists()
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"} and cluster["rayVersion"] == "2.60.0"
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(e["name"] == "MMOS_SERVE_API_KEY" for e in container["env"])


def _manifest(name: str) -> dict:
    return yaml.safe_load((ROOT / "cluster" / name).read_text())


def _custom_resources(group: dict) -> dict:
    # KubeRay passes rayStartParams to `ray start` through a shell, so `resources` is a JSON string quoted
    # once more: '"{\"sandbox\": 32}"' in YAML, i.e. a JSON string whose value is the JSON object.
    return json.loads(json.loads(group["rayStartParams"]["resources"]))


def _assert_autoscaling_cluster_spec(spec: dict) -> None:
    """What KubeRay requires of a cluster spec, and the shape of ray_cluster.yaml (sandbox CPUs, engine GPUs)."""
    assert spec["rayVersion"] == "2.60.0" and spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["image"]
    groups = {group["groupName"]: group for group in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"][0]["image"]
    assert _custom_resources(groups["cpu-workers"]) == {"sandbox": 32}
    assert _custom_resources(groups["gpu-workers"]) == {"engine": 1}
    gpu_limits = groups["gpu-workers"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in groups["cpu-workers"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_raycluster_autoscales_a_cpu_and_a_gpu_group_with_token_auth():
    manifest = _manifest("raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    _assert_autoscaling_cluster_spec(manifest["spec"])


def test_rayjob_runs_the_pipeline_entry_point_and_cleans_up():
    manifest = _manifest("rayjob.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    _assert_autoscaling_cluster_spec(spec["rayClusterSpec"])
    yaml.safe_load(spec["runtimeEnvYAML"])
    # The image holds the project at /app: the script and the config the entrypoint names must exist here.
    command = shlex.split(spec["entrypoint"])
    assert command[0] == "python"
    script, config = command[1], command[command.index("--config") + 1]
    assert script == "/app/jobs/all.py"
    for path in (script, config):
        assert (ROOT / Path(path).relative_to("/app")).is_file(), path
    overrides = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    load_config(ROOT / Path(config).relative_to("/app"), overrides)  # the overrides are valid keys
