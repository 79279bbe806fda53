"""A two-node Ray cluster on this machine, on 127.0.0.1 with token auth on, driven as users drive a real one:
`ray start --head`, `ray start --address` for a second node that alone advertises the `sandbox` resource,
then `mmos submit` (stages 00-02) and `ray job submit` (stage 03, continuing the run) for the jobs,
`mmos logs --follow` and `mmos status` to watch them, and the run's outputs checked.

The nodes are ended by the PIDs of the processes this test started (they carry a marker in their
environment), never with `ray stop`, which ends every Ray of the user on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from mmos_ray import storage
from tests.e2e.test_cli import SMALL_RUN

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MARKER = "MMOS_TEST_CLUSTER"
OBJECT_STORE_BYTES = 300 * 1024 * 1024  # two nodes on one small machine: keep /dev/shm use small


@dataclass(frozen=True)
class LocalCluster:
    address: str  # the dashboard URL, where jobs are submitted
    client_env: dict[str, str]  # what a client on this machine needs: the cluster's token


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Every Ray listener stays on 127.0.0.1 only with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with it `ray start
# --address` refuses to add a node (a guard meant for macOS and Windows); with it =1, Ray swaps 127.0.0.1 for
# the machine's external address and listens on every interface. So the second node runs Ray's own `ray
# start` with that one guard lifted: the CLI reads the flag through its own module reference.
RAY_START_SECOND_NODE = (
    "import sys, types\n"
    "import ray._private.ray_constants as constants, ray.scripts.scripts as cli\n"
    "cli.ray_constants = types.SimpleNamespace(**{**vars(constants), 'ENABLE_RAY_CLUSTER': True})\n"
    "sys.argv[0] = 'ray'\n"
    "sys.exit(cli.main())\n")


def _ray_start(env: dict[str, str], temp_dir: Path, *args: str) -> None:
    head = "--head" in args
    ray = [str(VENV_BIN / "ray")] if head else [sys.executable, "-c", RAY_START_SECOND_NODE]
    # Every port a second node on the same machine would otherwise share with the head is chosen here.
    command = [*ray, "start", "--node-ip-address=127.0.0.1", "--num-cpus=1",
               f"--temp-dir={temp_dir}", f"--object-store-memory={OBJECT_STORE_BYTES}",
               f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats", *args]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{' '.join(command)}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


def processes_marked(marker: str) -> list[psutil.Process]:
    """The processes whose environment carries `marker`: those of the nodes a test started."""
    ours = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == marker:
                ours.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return ours


def _end_processes_marked(marker: str, crash: bool = False) -> int:
    """SIGTERM, then SIGKILL, every process whose environment carries `marker` (the nodes this test
    started); `crash`: SIGKILL at once, as a lost machine. Returns how many there were."""
    ours = processes_marked(marker)
    alive = ours
    if not crash:
        _signal(ours, psutil.Process.terminate)
        _, alive = psutil.wait_procs(ours, timeout=5)  # the GCS server may ignore SIGTERM
    _signal(alive, psutil.Process.kill)
    psutil.wait_procs(alive, timeout=10)
    return len(ours)


def _signal(processes: list[psutil.Process], send) -> None:
    for process in processes:
        try:
            send(process)
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def cluster():
    token = secrets.token_hex(16)
    marker = uuid.uuid4().hex
    # Our own temp dirs: `ray start` records the cluster's address there, not in /tmp/ray where another
    # test's `ray.init()` would find it and join our cluster. One per node, as on separate machines: nodes
    # sharing one would unpack and garbage-collect the job's working_dir in the same folder. Short: Ray's
    # socket paths live under them.
    head_dir, worker_dir = (Path(tempfile.mkdtemp(prefix="mmos-ray-", dir="/tmp")) for _ in range(2))
    client_env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    client_env.pop("RAY_ADDRESS", None)
    # The job's `python` is the first on the nodes' PATH, as on a real cluster's nodes.
    node_env = {**client_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", MARKER: marker,
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    gcs_port, dashboard_port = _free_port(), _free_port()
    try:
        _ray_start(node_env, head_dir, "--head", f"--port={gcs_port}", "--resources={}",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                   f"--ray-client-server-port={_free_port()}")
        _ray_start(node_env, worker_dir, f"--address=127.0.0.1:{gcs_port}", '--resources={"sandbox": 2}')
        yield LocalCluster(f"http://127.0.0.1:{dashboard_port}", client_env)
    finally:
        _end_processes_marked(marker)
        for temp_dir in (head_dir, worker_dir):
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    return tmp_path_factory.mktemp("multinode")


def _run_settings(run_root: Path, data_dir: Path) -> list[str]:
    # Absolute paths: the job runs in its own copy of the project, and its outputs must land where we look.
    return [*SMALL_RUN, "--set", "sample.sources.0.limit=2", "--set", f"paths.data_dir={data_dir}",
            "--set", f"paths.runs_dir={run_root / 'runs'}", "--set", f"paths.models_dir={run_root / 'models'}"]


def _ray_list(cluster: LocalCluster, kind: str, *args: str) -> list[dict]:
    out = subprocess.run([str(VENV_BIN / "ray"), "list", kind, "--address", cluster.address, "--detail",
                          "--format", "json", "--limit", "1000", *args],
                         env=cluster.client_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _mmos(cluster: LocalCluster, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "mmos_ray", *args, "--address", cluster.address], cwd=ROOT,
                          env=env or cluster.client_env, capture_output=True, text=True, timeout=timeout)


def test_mmos_submit_runs_the_pipeline_with_the_sandbox_on_the_second_node(cluster, run_root, data_dir):
    # Through stage 02: both stages that use the sandbox, in a few minutes on 2 cores (jobs/all.py itself
    # runs in test_jobs_and_cluster.py; the stages after 02 use no custom resource).
    out = _mmos(cluster, "submit", "--config", "configs/quickstart.yaml", "--stage", "verify",
                *_run_settings(run_root, data_dir), timeout=420)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-2000:]}"
    assert "submitted job raysubmit_" in out.stdout and out.stdout.rstrip().endswith("SUCCEEDED")
    assert "02_verify done {'trajectories': 2" in out.stdout  # the job's logs, streamed
    run = run_root / "runs/quickstart"
    assert storage.read_manifest(storage.RunLayout(run).sample)["counts"]["samples"] == 2
    assert storage.read_manifest(storage.RunLayout(run).verify)["counts"]["trajectories"] == 2
    sandbox_actors = _ray_list(cluster, "actors", "--filter", "class_name=SandboxActor")
    sandbox_nodes = {node["node_id"] for node in _ray_list(cluster, "nodes")
                     if "sandbox" in node["resources_total"]}
    assert len(sandbox_nodes) == 1 and sandbox_actors
    assert {actor["node_id"] for actor in sandbox_actors} == sandbox_nodes  # `sandbox` routed them there


def test_ray_job_submit_continues_the_run_and_mmos_follows_it(cluster, run_root, data_dir):
    # The command of jobs/03_minimize.py's docstring, with Ray's CLI and its token handling (RAY_AUTH_MODE=token).
    submitted = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.address, "--working-dir", ".",
         "--runtime-env", "cluster/runtime_env.yaml", "--no-wait", "--", "python", "jobs/03_minimize.py",
         "--config", "configs/quickstart.yaml", *_run_settings(run_root, data_dir)],
        cwd=ROOT, env=cluster.client_env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = next(word.strip("'") for word in submitted.stdout.split() if word.strip("'").startswith("raysubmit_"))
    followed = _mmos(cluster, "logs", job_id, "--follow", timeout=300)
    assert followed.returncode == 0, f"{followed.stdout[-3000:]}\n{followed.stderr[-2000:]}"
    assert followed.stdout.rstrip().endswith(f"job {job_id}: SUCCEEDED")
    # The first job's stages are done (manifests on the shared run folder); this one only adds stage 03.
    assert "02_verify: done before (manifest matches), skipped" in followed.stdout
    assert "03_minimize done" in followed.stdout
    status = _mmos(cluster, "status", job_id)
    assert f"{job_id}: SUCCEEDED" in status.stdout and "jobs/03_minimize.py" in status.stdout
    assert "03_minimize done" in _mmos(cluster, "logs", job_id).stdout
    assert storage.read_manifest(storage.RunLayout(run_root / "runs/quickstart").minimize) is not None


def test_a_missing_or_wrong_token_is_refused_with_the_fix(cluster, tmp_path):
    without = {k: v for k, v in cluster.client_env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    for env, says in (({**without, "HOME": str(tmp_path)}, "sent no token (none found)"),
                      ({**without, "RAY_AUTH_TOKEN": "not-the-token"}, "sent the token from $RAY_AUTH_TOKEN")):
        out = _mmos(cluster, "status", "raysubmit_none", env=env)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"error: the Ray cluster at {cluster.address} rejected the request" in out.stderr
        assert says in out.stderr and "Fix: set RAY_AUTH_TOKEN" in out.stderr
