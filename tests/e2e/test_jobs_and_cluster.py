"""`jobs/` entry points run the pipeline; `ray_cluster.yaml` validates against Ray's launcher schema."""

import subprocess
import sys
from pathlib import Path

import yaml

from mmos_ray import storage
from tests.e2e.test_cli import SMALL_RUN

ROOT = Path(__file__).resolve().parents[2]


def test_jobs_all_runs_the_pipeline(tmp_path, data_dir):
    out = subprocess.run([sys.executable, str(ROOT / "jobs/all.py"), "--config", str(ROOT / "configs/quickstart.yaml"),
                          *SMALL_RUN, "--set", "sample.sources.0.limit=2", "--set", f"paths.data_dir={data_dir}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "00_prepare done {'problems': 2" in out.stdout and "01_sample done" in out.stdout
    assert storage.read_manifest(storage.RunLayout(tmp_path / "runs/quickstart").sample)["counts"]["samples"] == 2


def test_ray_cluster_yaml_is_valid_for_the_cluster_launcher():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "ray_cluster.yaml").read_text()))
    validate_config(config)
    node_types = config["available_node_types"]
    assert node_types["gpu_workers"]["resources"] == {"engine": 1}
    assert node_types["cpu_workers"]["resources"]["sandbox"] > 0
    assert all("RAY_AUTH_MODE=token" in " ".join(config[k]) for k in ("head_start_ray_commands",
                                                                      "worker_start_ray_commands"))
