"""The KubeRay manifests parse and carry what KubeRay needs; their import paths resolve."""

import importlib
from pathlib import Path

import yaml

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
