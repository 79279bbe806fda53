"""The executor around the attacks: results, routing, limits, determinism, degraded modes, restarts."""

import logging
import os
import signal

import pytest

from mmos_ray.sandbox import Limits, Sandbox
from mmos_ray.sandbox import isolation as isolation_module
from mmos_ray.sandbox.check import PROBES
from tests.e2e.test_cli import mmos


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, limits=Limits(timeout_s=3)) as box:
        yield box


def test_results_fields(sandbox):
    ok = sandbox.execute("print('a')\nprint('the answer', 42)\n")
    assert ok.ok and ok.stdout == "a\nthe answer 42\n" and ok.last_line == "the answer 42" and ok.exit_code == 0
    failed = sandbox.execute("x = 1\nprint('before')\nprint(undefined_name)")
    assert not failed.ok and failed.stdout == "before\n" and failed.exit_code == 1
    assert failed.error == "NameError: name 'undefined_name' is not defined"
    assert 'line 3, in <module>' in failed.stderr and "print(undefined_name)" in failed.stderr
    syntax = sandbox.execute("def f(:\n    pass")
    assert syntax.error.startswith("SyntaxError")
    exited = sandbox.execute("import sys\nprint('x')\nsys.exit(3)")
    assert exited.exit_code == 3 and exited.error == "exit status 3"


def test_execute_many_keeps_order_and_reports_each(sandbox):
    seen = []
    codes = [f"print({i})" if i % 7 else "import sympy\nprint(sympy.Rational(1, 3) * 3)" for i in range(30)]
    results = sandbox.execute_many(codes, on_result=lambda i, r: seen.append(i))
    assert [r.stdout for r in results] == [f"{i}\n" if i % 7 else "1\n" for i in range(30)]
    assert sorted(seen) == list(range(30))


def test_cpu_limit(sandbox):
    result = sandbox.execute("while True:\n    pass", Limits(timeout_s=10, cpu_s=1))
    assert result.timeout and "CPU time" in result.error and result.duration_s < 5


def test_output_is_deterministic_across_servers():
    code = "print({'apple', 'banana', 'cherry', 'date', 'elderberry'})"
    with Sandbox() as first, Sandbox() as second:
        assert first.execute(code).stdout == second.execute(code).stdout


def test_limits_are_validated():
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        Limits(timeout_s=0)


def test_a_killed_server_is_restarted(sandbox):
    worker = sandbox._workers[0]
    os.kill(worker.light.process.pid, signal.SIGKILL)  # a server process this test's sandbox started
    worker.light.process.wait()
    first = worker.run("print(1)", sandbox.limits)
    assert first.error.startswith("SandboxError") and first.killed
    assert worker.run("print(2)", sandbox.limits).stdout == "2\n"


def test_isolation_none_warns_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="mmos_ray.sandbox"):
        with Sandbox(isolation="none") as box:
            assert box.protections["network"] == "none" and box.protections["filesystem"] == "none"
            assert box.execute("print(1)").stdout == "1\n"
    assert "isolation='none'" in caplog.text


def test_without_bubblewrap_it_degrades_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(isolation_module, "bwrap_works", lambda: False)
    with pytest.raises(RuntimeError, match="bubblewrap is missing"):
        isolation_module.plan_zygote("bwrap")
    plan = isolation_module.plan_zygote("auto")
    assert any("bubblewrap unavailable" in w for w in plan.warnings)
    assert plan.protections["filesystem"] == "none"
    if plan.protections["network"].startswith("seccomp"):
        monkeypatch.setattr("mmos_ray.sandbox.executor.plan_zygote", lambda isolation: plan)
        with Sandbox() as box:
            result = box.execute("import socket\nsocket.socket()")
        assert result.error.startswith("PermissionError")


def test_mmos_sandbox_check():
    if not isolation_module.bwrap_works():
        pytest.skip("bubblewrap is not usable here: the check would rightly report escapes")
    out = mmos("sandbox", "check")
    assert "NOT CONTAINED" not in out.stdout and out.stdout.count("contained") == len(PROBES)


def test_a_starting_sandbox_keeps_the_cgroups_of_live_owners():
    """Regression: a sandbox starting beside another removed the other's cgroup in the moment between its
    creation and the server joining it ("cannot create …/cgroup.procs: Directory nonexistent")."""
    root = isolation_module.pids_cgroup_root()
    if root is None:
        pytest.skip("no writable pids cgroup on this host")
    live = root / f"w{os.getpid()}-livetest"
    dead_pid = _a_dead_pid()
    dead = root / f"w{dead_pid}-deadtest"
    live.mkdir(exist_ok=True)
    dead.mkdir(exist_ok=True)
    try:
        isolation_module.pids_cgroup_root.cache_clear()  # found once per process: find it again, as a new one does
        assert isolation_module.pids_cgroup_root() == root
        assert live.exists() and not dead.exists()
    finally:
        for path in (live, dead):
            if path.exists():
                path.rmdir()


def _a_dead_pid() -> int:
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
