"""Ray's own local autoscaling cluster (`ray.cluster_utils.AutoscalingCluster`, the fake multi-node
provider) with the node types of `ray_cluster.yaml`, scaled down to this machine: the stages' demand for
`sandbox` (the sandbox pool) and `engine` (an engine actor's options) starts one worker of each matching
type, and the autoscaler removes them once they are idle.

The head is started as `AutoscalingCluster.start` starts it, but on 127.0.0.1 with our own ports, temp
dir and token, and without its `ray stop --force` (which would end every Ray of the user on the machine);
its processes, and the worker nodes the autoscaler starts from them, are ended by PID (marker in their
environment). The workload runs in a separate driver process, so this test's process never joins a Ray.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from ray.cluster_utils import AutoscalingCluster

from tests.e2e.test_multinode import MARKER, ROOT, VENV_BIN, _end_processes_marked, _free_port

pytestmark = pytest.mark.slow

OBJECT_STORE_BYTES = 150 * 1024 * 1024
IDLE_TIMEOUT_MINUTES = 0.1  # ray_cluster.yaml: 10
SCALED_CUSTOM = {"sandbox": 2, "engine": 1}  # ray_cluster.yaml: sandbox 32 (one per CPU), engine 1


class LoopbackAutoscalingCluster(AutoscalingCluster):
    """`AutoscalingCluster`, started beside other Rays on this machine (see the module docstring)."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        # What ray/autoscaler/_private/fake_multi_node/example.yaml holds (the wheel does not ship the file,
        # which AutoscalingCluster reads); the node types and the rest are set as AutoscalingCluster sets them.
        config = {"cluster_name": "fake_multinode", "max_workers": 8, "head_node_type": "ray.head.default",
                  "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                               "disable_launch_config_check": True},
                  "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1, "docker": {},
                  "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
                  "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
                  "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
                  "rsync_exclude": [], "rsync_filter": []}
        config["available_node_types"] = {**worker_node_types, "ray.head.default": {
            "resources": head_resources, "node_config": {}, "max_workers": 0}}
        return {**config, **config_kwargs}

    def start_on_loopback(self, temp_dir: Path, env: dict[str, str]) -> int:
        """`ray start --head --autoscaling-config` with the fake provider; returns the GCS port."""
        port = _free_port()
        self._config["provider"]["gcs_address"] = f"127.0.0.1:{port}"  # the provider's default is :6379
        config_file = temp_dir / "autoscaling.json"
        config_file.write_text(json.dumps(self._config))
        resources = dict(self._head_resources)
        command = [str(VENV_BIN / "ray"), "start", "--head", f"--autoscaling-config={config_file}",
                   "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={resources.pop('CPU', 0)}",
                   f"--resources={json.dumps(resources)}", f"--temp-dir={temp_dir}",
                   f"--object-store-memory={OBJECT_STORE_BYTES}", "--include-dashboard=false",
                   f"--dashboard-agent-listen-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
                   "--disable-usage-stats"]
        out = subprocess.run(command, env={**env, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{' '.join(command)}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        return port


def scaled_node_types() -> tuple[dict, dict]:
    """The head's resources and the worker node types of ray_cluster.yaml, scaled down to this machine:
    one CPU per node, at most one node per type, the custom resources kept (with smaller counts)."""
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    types = config["available_node_types"]
    head = {"CPU": 1, **types[config["head_node_type"]]["resources"]}
    workers = {}
    for name, node_type in types.items():
        if name == config["head_node_type"]:
            continue
        custom = {key: SCALED_CUSTOM[key] for key in node_type["resources"]}
        workers[name] = {"resources": {"CPU": 1, **custom, "object_store_memory": OBJECT_STORE_BYTES},
                         "node_config": {}, "min_workers": node_type["min_workers"],
                         "max_workers": min(1, node_type["max_workers"])}
    return head, workers


@pytest.fixture(scope="module")
def autoscaling_cluster():
    head, workers = scaled_node_types()
    assert set(workers) == {"cpu_workers", "gpu_workers"} and head == {"CPU": 1}
    assert all(t["min_workers"] == 0 for t in workers.values())  # both groups scale from zero
    assert workers["cpu_workers"]["resources"]["sandbox"] and workers["gpu_workers"]["resources"]["engine"]
    cluster = LoopbackAutoscalingCluster(head_resources=head, worker_node_types=workers,
                                         idle_timeout_minutes=IDLE_TIMEOUT_MINUTES, max_workers=2)
    marker = uuid.uuid4().hex
    temp_dir = Path(tempfile.mkdtemp(prefix="mmos-as-", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", MARKER: marker}
    env.pop("RAY_ADDRESS", None)
    try:
        port = cluster.start_on_loopback(temp_dir, env)
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        _end_processes_marked(marker)
        shutil.rmtree(temp_dir, ignore_errors=True)


def drive() -> None:
    """The workload, run in its own driver process (RAY_ADDRESS): prints one JSON line of facts."""
    import ray
    from ray._private.state import state

    from mmos_ray.sandbox import Limits
    from mmos_ray.cluster.resources import custom_resource
    from mmos_ray.stages.sample import _engine_resources
    from mmos_ray.cluster.sandbox_pool import SandboxPool

    ray.init(logging_level="WARNING")
    facts = {"before": ray.cluster_resources(), "auto_before": custom_resource("sandbox", "auto")}

    @ray.remote
    class EngineProbe:  # asks for what the sample stage's engine actors ask for (HF on CPU)
        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    probe = EngineProbe.options(**_engine_resources("hf", "on")).remote()
    # The sample stage's sandbox pool, with `sample.custom_resources=on`: nothing offers `sandbox` yet.
    pool = SandboxPool(num_actors=1, limits=Limits(timeout_s=5), num_cpus=0.5, custom_resources="on")
    results = pool.execute_many([f"print({i} * {i})" for i in range(6)])
    facts["stdout"] = [r.stdout.strip() for r in results]
    facts["engine_node"] = ray.get(probe.node.remote(), timeout=120)
    actor_id = pool.actors[0]._actor_id.hex()
    facts["sandbox_node"] = state.actor_table(None)[actor_id]["Address"]["NodeID"]
    facts["nodes"] = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    facts["auto_while_up"] = custom_resource("sandbox", "auto")
    pool.shutdown()
    ray.kill(probe)
    print("FACTS " + json.dumps(facts), flush=True)


def _alive_nodes(env: dict[str, str]) -> list[dict]:
    code = ("import json, ray; ray.init(logging_level='ERROR'); "
            "print('NODES ' + json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("NODES "))[6:])


def test_custom_resource_demand_starts_the_right_workers_and_idle_ones_are_removed(autoscaling_cluster):
    env = autoscaling_cluster
    assert [sorted(k for k in n if not k.startswith("node:")) for n in _alive_nodes(env)] == \
        [["CPU", "memory", "object_store_memory"]]  # the head alone
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", "from tests.e2e.test_autoscaling import drive; drive()"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    facts = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("FACTS "))[6:])
    scaled_up_s = time.monotonic() - started

    assert "sandbox" not in facts["before"] and "engine" not in facts["before"]
    assert facts["auto_before"] == {}  # Ray's autoscaler does not say what its node types offer: `on` is needed
    assert facts["stdout"] == [str(i * i) for i in range(6)]
    nodes = facts["nodes"]
    assert len(nodes) == 3  # the head, one cpu_workers node, one gpu_workers node
    sandbox_node, engine_node = nodes[facts["sandbox_node"]], nodes[facts["engine_node"]]
    assert sandbox_node["sandbox"] == 2 and "engine" not in sandbox_node  # a cpu_workers node
    assert engine_node["engine"] == 1 and "sandbox" not in engine_node  # a gpu_workers node
    assert facts["auto_while_up"] == {"sandbox": 1.0}  # with a node up, `auto` asks for it too

    deadline = time.monotonic() + 120  # idle_timeout_minutes=0.1, the autoscaler looks every second
    while len(alive := _alive_nodes(env)) > 1 and time.monotonic() < deadline:
        time.sleep(2)
    assert len(alive) == 1 and "sandbox" not in alive[0] and "engine" not in alive[0], alive
    print(f"scaled up and ran in {scaled_up_s:.1f}s; idle workers removed "
          f"{time.monotonic() - started - scaled_up_s:.1f}s later")
