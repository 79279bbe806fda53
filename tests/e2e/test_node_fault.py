"""A node lost in the middle of a stage: a head and a second node (the only one offering `sandbox`, so the
verify actors run there) started with `ray start` on 127.0.0.1 (token auth on), stage 02 submitted as a
job, and the second node's processes killed (SIGKILL, by their PIDs) once the stage has written its first
part. A replacement node joins; Ray restarts the verify actor there and retries its call; the job
succeeds, and the stage's output holds every (problem, sample) of stage 01 exactly once.

Stage 01 is written by a stand-in for the sampler (no model): a few trajectories per problem whose one
program sleeps for a second, so that verifying them takes long enough (about a second per trajectory)
for the kill to land in the middle of the stage. Stages 00-01 run here, through `pipeline.sample`, so
their manifests are the ones the job's pipeline expects (the job then runs stage 02 alone); the model
is an empty folder, which nothing loads.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from mmos_ray import pipeline, storage
from mmos_ray.config import load_config
from mmos_ray.core.records import Trajectory
from mmos_ray.stages import sample as sample_stage
from tests.e2e.test_multinode import (MARKER, VENV_BIN, LocalCluster, _end_processes_marked, _free_port, _mmos,
                                      _ray_list, _ray_start, _run_settings)

pytestmark = pytest.mark.slow

PROBLEMS, SAMPLES, PER_PART = 4, 3, 3  # 12 trajectories in 4 parts: about 3 s of verifying per part
SLOW_PATH = ("Let me compute it.\n```python\nimport time\ntime.sleep(1.0)\nprint({answer})\n```\n"
             "```output\n{answer}\n```\nThe answer is \\boxed{{{answer}}}.")


class Nodes:
    """A head (no `sandbox`) and nodes offering `sandbox`, each with its own marker, so each can be ended alone."""

    def __init__(self):
        self.token = secrets.token_hex(16)
        self.markers: list[str] = []
        self.temp_dirs: list[Path] = []
        self.client_env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.client_env.pop("RAY_ADDRESS", None)
        self.gcs_port, self.dashboard_port = _free_port(), _free_port()

    def start(self, *args: str) -> str:
        marker = uuid.uuid4().hex
        # One temp dir per node, as on separate machines (see test_multinode); short, for Ray's socket paths.
        temp_dir = Path(tempfile.mkdtemp(prefix="mmos-nf-", dir="/tmp"))
        self.markers.append(marker)
        self.temp_dirs.append(temp_dir)
        env = {**self.client_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", MARKER: marker,
               "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        _ray_start(env, temp_dir, *args)
        return marker

    def start_head(self) -> str:
        return self.start("--head", f"--port={self.gcs_port}", "--resources={}", "--dashboard-host=127.0.0.1",
                          f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={_free_port()}")

    def start_sandbox_node(self) -> str:
        return self.start(f"--address=127.0.0.1:{self.gcs_port}", '--resources={"sandbox": 2}')

    def end(self) -> None:
        for marker in reversed(self.markers):
            _end_processes_marked(marker)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _stand_in_sampler(sample, paths, stage_dir: Path) -> dict:
    """Stage 01 without a model: SAMPLES slow trajectories per problem, PER_PART to a part."""
    problems = storage.read_parquet(storage.RunLayout.of_stage(stage_dir).problems)
    rows = [Trajectory(problem_id=p["id"], sample_idx=i, seed=i, model="stand-in", prompt_version="train",
                       text=SLOW_PATH.format(answer=p["gold"]), rounds=1, finish_reason="boxed", num_tokens=1,
                       num_prompt_tokens=1, executions=1).to_row() for p in problems for i in range(SAMPLES)]
    for start in range(0, len(rows), PER_PART):
        storage.write_parquet(storage.part_file(stage_dir, f"{start // PER_PART:04d}"), rows[start:start + PER_PART])
    return {"counts": {"problems": len(problems), "samples": len(rows)}, "observation": {"mode": "full", "chars": 512}}


def _job_log(text: str) -> str:
    """The job's own lines: without the raylet's state dumps and log lines that a lost node streams."""
    return "\n".join(line for line in text.splitlines() if "[state-dump]" not in line and " (raylet) " not in line)


def _keys(stage_dir: Path) -> list[tuple[str, int]]:
    """Every row's (problem, sample) in the stage's parts, duplicates included (read raw, not deduplicated)."""
    return [(row["problem_id"], row["sample_idx"]) for part in storage.part_files(stage_dir)
            for row in storage.read_parquet(part)]


def test_a_node_killed_during_verify_loses_and_duplicates_nothing(tmp_path, data_dir, monkeypatch):
    no_model = tmp_path / "no-model"  # an existing folder is taken as the model: nothing is built or loaded
    no_model.mkdir()
    settings = [*_run_settings(tmp_path, data_dir), "--set", f"sample.sources.0.limit={PROBLEMS}",
                "--set", f"sample.engine.model={no_model}"]
    cfg = load_config("configs/quickstart.yaml", settings[1::2])
    monkeypatch.setattr(sample_stage, "run", _stand_in_sampler)
    pipeline.sample(cfg)  # stages 00-01, here
    sampled = _keys(cfg.layout.sample)
    assert len(sampled) == len(set(sampled)) == PROBLEMS * SAMPLES
    parts = len(storage.part_files(cfg.layout.sample))

    nodes = Nodes()
    try:
        nodes.start_head()
        second = nodes.start_sandbox_node()
        cluster = LocalCluster(f"http://127.0.0.1:{nodes.dashboard_port}", nodes.client_env)
        out = _mmos(cluster, "submit", "--config", "configs/quickstart.yaml", "--stage", "verify", "--no-wait",
                    *settings, timeout=120)
        assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-2000:]}"
        job_id = next(word for word in out.stdout.split() if word.startswith("raysubmit_"))

        verified = cfg.layout.verify
        deadline = time.monotonic() + 180
        while not storage.part_files(verified) and time.monotonic() < deadline:
            time.sleep(0.2)
        done_at_kill = len(storage.part_files(verified))
        assert 1 <= done_at_kill < parts, f"verify wrote {done_at_kill} of {parts} parts before the kill"
        assert _end_processes_marked(second, crash=True) > 0  # a crash: SIGKILL, by PID
        nodes.start_sandbox_node()  # the replacement: the lost actor restarts there

        followed = _mmos(cluster, "logs", job_id, "--follow", timeout=300)
        assert followed.returncode == 0, f"{_job_log(followed.stdout)[-4000:]}\n{followed.stderr[-2000:]}"
        assert followed.stdout.rstrip().endswith(f"job {job_id}: SUCCEEDED")
        assert "01_sample: done before (manifest matches), skipped" in followed.stdout
        actors = _ray_list(cluster, "actors", "--filter", "class_name=VerifyActor")
        assert any(actor["num_restarts"] >= 1 for actor in actors), actors  # the kill hit a working actor
    finally:
        nodes.end()

    keys = Counter(_keys(verified))
    assert set(keys) == set(sampled) and set(keys.values()) == {1}  # each (problem, sample) exactly once
    assert storage.read_manifest(verified)["counts"]["trajectories"] == len(sampled)
