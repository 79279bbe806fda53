"""One attack per test: each is contained, and the next program on the same server still runs correctly."""

import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from mmos_ray.sandbox import Limits, Sandbox

LIMITS = Limits(timeout_s=2.0, memory_mb=1024, file_size_mb=8, max_processes=16)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=1, limits=LIMITS, isolation=os.environ.get("MMOS_TEST_ISOLATION", "auto")) as box:
        yield box


@pytest.fixture
def next_program_runs(sandbox):
    """After the attack: the same server answers a normal program correctly."""
    yield
    result = sandbox.execute("import math\nprint(6 * 7, math.pi)")
    assert result.ok, result
    assert result.stdout == "42 3.141592653589793\n"


def needs(sandbox, key, value):
    if sandbox.protections[key] != value:
        pytest.skip(f"this host gives the sandbox {key}={sandbox.protections[key]!r}, not {value!r}")


pytestmark = pytest.mark.usefixtures("next_program_runs")


def test_infinite_loop(sandbox):
    result = sandbox.execute("while True:\n    pass")
    assert result.timeout and result.killed and not result.ok
    assert result.duration_s < LIMITS.timeout_s + 1


def test_sleep_past_the_timeout(sandbox):
    result = sandbox.execute("import time\nprint('start', flush=True)\ntime.sleep(60)")
    assert result.timeout and result.stdout == "start\n"
    assert "wall-clock limit" in result.error and result.duration_s < LIMITS.timeout_s + 1


def test_4_gib_allocation(sandbox):
    result = sandbox.execute("x = bytearray(4 * 1024 ** 3)\nprint('allocated')")
    assert result.memory_exceeded and result.error == "MemoryError" and "allocated" not in result.stdout


def test_fork_bomb(sandbox):
    code = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n"
            "            os._exit(0)\n        n += 1\nexcept OSError as exc:\n    print('forks', n, type(exc).__name__)")
    before = len(os.listdir("/proc"))
    result = sandbox.execute(code)
    forks = int(result.stdout.split()[1])
    assert forks < LIMITS.max_processes and "BlockingIOError" in result.stdout
    assert len(os.listdir("/proc")) < before + 5  # the sleeping children were swept


def test_writing_a_100_mb_file(sandbox):
    result = sandbox.execute("with open('big', 'wb') as f:\n    f.write(b'0' * 100 * 1024 * 1024)")
    assert "File too large" in result.error or "No space left" in result.error, result.error


def test_writing_outside_the_working_directory(sandbox):
    needs(sandbox, "filesystem", "read-only root, private /tmp")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as host_dir:  # /tmp is the sandbox's own; /var/tmp is not
        target = Path(host_dir) / "escaped.txt"
        result = sandbox.execute(f"open({str(target)!r}, 'w').write('x')")
        assert "Read-only file system" in result.error and not target.exists()
    leak = sandbox.execute("open('/tmp/leak.txt', 'w').write('secret'); open('../up.txt', 'w').write('x')")
    after = sandbox.execute("import os\nprint(sorted(os.listdir('/tmp')), os.path.exists('/tmp/leak.txt'))")
    assert after.stdout.strip().endswith("False"), (leak, after)


def test_connecting_to_a_listener_on_loopback(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(1.5)
    port = listener.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(_accept(listener)))
    thread.start()
    result = sandbox.execute(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                             "s.sendall(b'stolen')\nprint('connected')")
    thread.join()
    listener.close()
    assert "connected" not in result.stdout and accepted == [None]
    assert "PermissionError" in result.error or "ConnectionRefusedError" in result.error


def _accept(listener):
    try:
        return listener.accept()
    except socket.timeout:
        return None


def test_starting_a_subprocess(sandbox):
    needs(sandbox, "syscalls", "seccomp")
    result = sandbox.execute("import subprocess\nprint(subprocess.run(['id'], capture_output=True).stdout)")
    assert result.error.startswith("PermissionError") and "uid=" not in result.stdout
    via_os = sandbox.execute("import os\nos.system('touch /tmp/ran')\nprint(os.path.exists('/tmp/ran'))")
    assert via_os.stdout.strip() == "False"


def test_killing_the_parent(sandbox):
    result = sandbox.execute("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('still here')")
    assert result.error.startswith("PermissionError") or result.stdout == "still here\n", result
    group = sandbox.execute("import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)")
    assert not group.ok


def test_reading_the_host_environment(sandbox, monkeypatch):
    monkeypatch.setenv("MMOS_TEST_SECRET", "hunter2")
    result = sandbox.execute("import os\nprint(dict(os.environ))\n"
                             "for pid in ('1', '2', str(os.getppid())):\n"
                             "    try:\n        print(open(f'/proc/{pid}/environ').read())\n"
                             "    except OSError as exc:\n        print(type(exc).__name__)")
    assert "hunter2" not in result.stdout and "MMOS_TEST_SECRET" not in result.stdout
    assert "'PATH': '/usr/bin:/bin'" in result.stdout


def test_a_thread_or_child_that_outlives_the_program(sandbox):
    code = ("import os, threading, time\n"
            "threading.Thread(target=lambda: (time.sleep(1), print('late thread', flush=True))).start()\n"
            "if os.fork() == 0:\n    os.setsid()\n    time.sleep(1)\n    open('/tmp/outlived', 'w').write('x')\n"
            "    os._exit(0)\nprint('main done')")
    result = sandbox.execute(code)
    assert result.stdout == "main done\n" and result.duration_s < 1
    time.sleep(1.5)
    later = sandbox.execute("import os\nprint(os.path.exists('/tmp/outlived'))")
    assert later.stdout == "False\n"


def test_segfault_via_ctypes(sandbox):
    result = sandbox.execute("import ctypes\nctypes.string_at(0)")
    assert result.killed and result.signal == "SIGSEGV" and result.error == "Killed by SIGSEGV"


def test_a_million_lines_of_output(sandbox):
    result = sandbox.execute("for i in range(1_000_000):\n    print(i)")
    assert result.output_truncated and not result.ok
    assert len(result.stdout) <= LIMITS.max_output_bytes and result.stdout.startswith("0\n1\n2\n")
    assert result.duration_s < LIMITS.timeout_s


def test_deep_recursion(sandbox):
    plain = sandbox.execute("def f(n):\n    return f(n + 1)\nf(0)")
    assert plain.error.startswith("RecursionError")
    unbounded = sandbox.execute("import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)")
    assert not unbounded.ok  # a C stack overflow kills the child, not the server


def test_reading_stdin(sandbox):
    result = sandbox.execute("x = input('number? ')\nprint('got', x)")
    assert result.error.startswith("EOFError") and result.duration_s < 1
    raw = sandbox.execute("import sys\nprint(repr(sys.stdin.read()))")
    assert raw.stdout == "''\n"


def test_changing_module_state_a_later_program_could_see(sandbox):
    sandbox.execute("import math, builtins, sys, json\nmath.pi = 3\nbuiltins.print = None\n"
                    "json.dumps = lambda *a, **k: 'poisoned'\nsys.modules['fractions'] = None\nLEAKED = 1")
    result = sandbox.execute("import json, fractions\nprint(json.dumps([1]), fractions.Fraction(1, 2))\n"
                             "print('LEAKED' in globals())")
    assert result.stdout == "[1] 1/2\nFalse\n"
