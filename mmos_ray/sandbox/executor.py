"""Run model-written Python: `execute(code)` for one program, `Sandbox(workers=N).execute_many(codes)`
for many at once (one fork server per worker, each on its own CPU slot).

    from mmos_ray.sandbox import Limits, Sandbox
    with Sandbox(workers=2) as sandbox:
        results = sandbox.execute_many(["print(2 + 2)", "import sympy; print(sympy.factor('x**2-1'))"])
    results[0].stdout, results[0].last_line, results[1].error

Failures of a program (exceptions, timeouts, limits, a crash of the server itself) come back as data
in `ExecutionResult`; only misuse of this API raises. A server that dies is restarted and the program
that was running gets an error result. Linux only. Which protections are active is in
`Sandbox.protections`; anything weaker than the full set is logged as a warning when the sandbox starts.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import selectors
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from mmos_ray.sandbox.isolation import ZygotePlan, plan_zygote
from mmos_ray.sandbox.protocol import ExecutionResult, Limits, read_frame, write_frame

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 120  # preloading sympy and numpy on a busy 2-core machine
_REPLY_GRACE_S = 10  # beyond the program's own time limit, before the server itself is declared hung
_warned: set[str] = set()
_NO_SECCOMP_FILTER = ("pyseccomp is installed but the seccomp filter could not be built (is libseccomp2 "
                      "installed?): programs may exec, ptrace, and signal the sandbox server")


class SandboxStartError(RuntimeError):
    """A fork server could not start; the message carries its stderr."""


class Sandbox:
    """A set of pre-warmed fork servers. Thread-safe; use as a context manager or call `close()`."""

    def __init__(self, workers: int = 1, limits: Limits | None = None, isolation: str = "auto"):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.limits = limits or Limits()
        self.plan = plan_zygote(isolation)
        for warning in self.plan.warnings:
            if warning not in _warned:
                _warned.add(warning)
                logger.warning("sandbox: %s", warning)
        self._workers = [_Worker(self.plan) for _ in range(workers)]
        try:
            for worker in self._workers:
                worker.wait_ready()
        except BaseException:
            self.close()
            raise
        if self.plan.options["seccomp"] and not self._workers[0].ready_report.get("seccomp"):
            logger.warning("sandbox: %s", _NO_SECCOMP_FILTER)
        self._free: queue.Queue[_Worker] = queue.Queue()
        for worker in self._workers:
            self._free.put(worker)

    @property
    def protections(self) -> dict[str, str]:
        """What isolates programs here, as planned and as the server observed it from inside."""
        seen = self._workers[0].ready_report
        protections = dict(self.plan.protections)
        if not seen.get("network_isolated") and protections["network"] == "network namespace":
            protections["network"] = "NOT isolated (namespace missing)"
        if not seen.get("seccomp"):
            protections["syscalls"] = "none"
        protections["preloaded"] = ", ".join(seen.get("preloaded", []))
        return protections

    @property
    def warnings(self) -> list[str]:
        """Each way the protections here fall short of the full set (empty when none does)."""
        warnings = list(self.plan.warnings)
        seen = self._workers[0].ready_report
        if self.plan.options["seccomp"] and not seen.get("seccomp"):
            warnings.append(_NO_SECCOMP_FILTER)
        if self.plan.protections["network"] == "network namespace" and not seen.get("network_isolated"):
            warnings.append("bubblewrap ran, but the server sees network interfaces besides loopback")
        return warnings

    def execute(self, code: str, limits: Limits | None = None, kind: str | None = None) -> ExecutionResult:
        """Run one program. `kind` picks the server ("light", "heavy", "grader"); None picks by the code."""
        worker = self._free.get()
        try:
            return worker.run(code, limits or self.limits, kind)
        finally:
            self._free.put(worker)

    def execute_many(self, codes: Iterable[str], limits: Limits | None = None,
                     on_result: Callable[[int, ExecutionResult], None] | None = None,
                     kind: str | None = None) -> list[ExecutionResult]:
        """Run every program, `workers` at a time; results in input order. `on_result` sees each as it ends."""
        codes = list(codes)

        def run(index: int) -> ExecutionResult:
            result = self.execute(codes[index], limits, kind)
            if on_result is not None:
                on_result(index, result)
            return result

        if len(self._workers) == 1:
            return [run(i) for i in range(len(codes))]
        with ThreadPoolExecutor(max_workers=len(self._workers)) as pool:
            return list(pool.map(run, range(len(codes))))

    def close(self) -> None:
        for worker in self._workers:
            worker.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Programs that mention these go to the worker's heavy server (sympy and numpy preloaded); the rest
# to its light one, which forks about five times faster. A false match only costs speed.
_HEAVY = re.compile(r"\b(?:sympy|numpy|mpmath|scipy)\b")


class _Worker:
    """One CPU slot: a light fork server, and the heavy and grader ones, started when first needed."""

    KINDS = ("light", "heavy", "grader")

    def __init__(self, plan: ZygotePlan):
        self.plan = plan
        self.servers = {"light": _Server(plan, "light")}

    @property
    def light(self) -> "_Server":
        return self.servers["light"]

    @property
    def ready_report(self) -> dict:
        return self.light.ready_report

    def wait_ready(self) -> None:
        self.light.wait_ready()

    def run(self, code: str, limits: Limits, kind: str | None = None) -> ExecutionResult:
        kind = kind or ("heavy" if _HEAVY.search(code) else "light")
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        if kind not in self.servers:
            server = _Server(self.plan, kind)
            server.wait_ready()
            self.servers[kind] = server
        return self.servers[kind].run(code, limits)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()


class _Server:
    """One fork server process and its pipes; used by one thread at a time."""

    def __init__(self, plan: ZygotePlan, kind: str):
        self.plan = plan
        self.kind = kind
        self.ready_report: dict = {}
        self._pids_max: int | None = None
        self._start()

    def _start(self) -> None:
        self._stopped = False
        self.cgroup = None
        options = dict(self.plan.options, kind=self.kind)
        self.scratch = None
        if options["scratch"] is None:  # no private tmpfs: a folder of this server's own on the host
            self.scratch = Path(tempfile.mkdtemp(prefix="mmos-sandbox-"))
            os.chmod(self.scratch, 0o755)
            options["scratch"] = str(self.scratch)
        argv = [*self.plan.command, json.dumps(options)]
        if self.plan.cgroup_root is not None:
            self.cgroup = self.plan.cgroup_root / f"w{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.cgroup.mkdir()
            self._pids_max = None
            # Join the cgroup first, then become the server: everything it forks is counted there.
            argv = ["/bin/sh", "-c", f'echo $$ > "{self.cgroup}/cgroup.procs" && exec "$@"', "sh", *argv]
        self._stderr = tempfile.TemporaryFile()
        self.process = _popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                              env=self.plan.env, bufsize=0, start_new_session=True)
        self.started = time.monotonic()

    def wait_ready(self) -> None:
        reply = self._read_reply(self.started + _START_TIMEOUT_S)
        if reply is None or not reply.get("ready"):
            self._stderr.seek(0)
            detail = self._stderr.read().decode(errors="replace").strip()[-4000:]
            self._stop()
            raise SandboxStartError(f"the sandbox server did not start: {detail or 'no output'}")
        self.ready_report = reply
        if self.cgroup is not None:
            # The server and bubblewrap's own tasks are already counted: the program gets the rest.
            self._baseline = int((self.cgroup / "pids.current").read_text())

    def run(self, code: str, limits: Limits) -> ExecutionResult:
        if self.cgroup is not None and self._pids_max != limits.max_processes:
            (self.cgroup / "pids.max").write_text(str(self._baseline + limits.max_processes))
            self._pids_max = limits.max_processes
        try:
            write_frame(self.process.stdin, {"code": code, "limits": limits.to_dict()})
            reply = self._read_reply(time.monotonic() + limits.timeout_s + _REPLY_GRACE_S)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            self._restart()
            return ExecutionResult(error="SandboxError: the sandbox server died or hung while running this "
                                         "program; it was restarted", killed=True)
        return ExecutionResult.from_dict(reply)

    def _read_reply(self, deadline: float) -> dict | None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(max(0.0, deadline - time.monotonic())):
                return None
        try:
            return read_frame(self.process.stdout)
        except (OSError, ValueError):
            return None

    def _restart(self) -> None:
        state = "hung" if self.process.poll() is None else f"exited with status {self.process.returncode}"
        self._stderr.seek(0)
        detail = self._stderr.read().decode(errors="replace").strip()[-2000:]
        logger.warning("sandbox: the %s server (pid %s) %s; restarting it. Its stderr: %s", self.kind,
                       self.process.pid, state, detail or "(empty)")
        self._stop()
        self._start()
        self.wait_ready()

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self._stderr.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self.cgroup is not None:
            for _ in range(50):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)  # the last processes of the server are still leaving

    def close(self) -> None:
        self._stop()


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _popen(*args, **kwargs) -> subprocess.Popen:
    """Start a server from one long-lived thread. bwrap's --die-with-parent is PR_SET_PDEATHSIG, which fires
    when the *thread* that started the process ends: servers started from short-lived threads (those of
    `execute_many`) would be killed with them."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmos-sandbox-spawner")
    return _spawner.submit(subprocess.Popen, *args, **kwargs).result()


_default: Sandbox | None = None
_default_lock = threading.Lock()


def execute(code: str, limits: Limits | None = None) -> ExecutionResult:
    """Run one program in a process-wide default sandbox (one worker, started on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Sandbox(workers=1)
            atexit.register(_default.close)
    return _default.execute(code, limits)
