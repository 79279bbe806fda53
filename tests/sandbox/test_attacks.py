"""One attack per test: each is contained, and the next program on the same server still runs correctly."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from mmos_ray.sandbox import Limits, Sandbox
from mmos_ray.sandbox.isolation import FILESYSTEM_VIEW, NOBODY

PROJECT_ROOT = Path(__file__).resolve().parents[2]

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
    needs(sandbox, "filesystem", FILESYSTEM_VIEW)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as host_dir:  # /tmp is the sandbox's own; /var/tmp is not
        target = Path(host_dir) / "escaped.txt"
        result = sandbox.execute(f"open({str(target)!r}, 'w').write('x')")
        assert "No such file" in result.error and not target.exists()  # /var/tmp is not in the view
    for place in ("/escaped.txt", str(PROJECT_ROOT / "mmos_ray" / "escaped.txt")):  # the view is read-only
        result = sandbox.execute(f"open({place!r}, 'w').write('x')")
        assert "Read-only file system" in result.error and not Path(place).exists(), result
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


# Secrets of the host. Each test plants a bait (random name and content) where a secret would be, and the
# program tries to read it and to list its folder. As root (these machines run as root) the bait is
# readable by the caller, so only the sandbox's filesystem view keeps it out.
READ_AND_LIST = ("import os\nfor path in {paths!r}:\n    try:\n        print('READ', open(path).read())\n"
                 "    except OSError as exc:\n        print(type(exc).__name__, path)\n"
                 "for folder in {folders!r}:\n    try:\n        print('LIST', folder, sorted(os.listdir(folder)))\n"
                 "    except OSError as exc:\n        print(type(exc).__name__, folder)")


def bait(folder: Path, mode: int = 0o600) -> tuple[Path, str]:
    token = secrets.token_hex(8)
    path = folder / f".mmos-test-bait-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return path, token


def assert_unseen(stdout: str, path: Path, token: str):
    """Neither read (its content) nor listed (its name), and the read failed for want of the file or the right."""
    listings = [line for line in stdout.splitlines() if line.startswith("LIST ")]
    assert token not in stdout and "READ" not in stdout and not any(path.name in line for line in listings), stdout
    assert f"FileNotFoundError {path}" in stdout or f"PermissionError {path}" in stdout, stdout


def test_reading_a_0600_file_in_the_callers_home(sandbox):
    needs(sandbox, "filesystem", FILESYSTEM_VIEW)
    path, token = bait(Path.home())
    try:
        result = sandbox.execute(READ_AND_LIST.format(paths=[str(path)], folders=[str(Path.home())]))
    finally:
        path.unlink()
    assert_unseen(result.stdout, path, token)


def test_reading_etc_shadow(sandbox):
    needs(sandbox, "filesystem", FILESYSTEM_VIEW)
    result = sandbox.execute(READ_AND_LIST.format(paths=["/etc/shadow", "/etc/gshadow", "/etc/passwd"],
                                                  folders=["/etc"]))
    assert "READ" not in result.stdout and "root:" not in result.stdout, result
    assert not any("shadow" in line for line in result.stdout.splitlines() if line.startswith("LIST ")), result
    assert "FileNotFoundError /etc/shadow" in result.stdout or "PermissionError /etc/shadow" in result.stdout


def test_reading_a_file_in_the_projects_parent_folder(sandbox):
    needs(sandbox, "filesystem", FILESYSTEM_VIEW)
    if not os.access(PROJECT_ROOT.parent, os.W_OK):
        pytest.skip(f"cannot plant a file in {PROJECT_ROOT.parent}")
    path, token = bait(PROJECT_ROOT.parent, 0o644)  # readable by anyone on the host
    try:
        result = sandbox.execute(READ_AND_LIST.format(paths=[str(path)], folders=[str(PROJECT_ROOT.parent),
                                                                                   str(PROJECT_ROOT)]))
    finally:
        path.unlink()
    assert_unseen(result.stdout, path, token)
    checkout = [line for line in result.stdout.splitlines() if line.startswith(f"LIST {PROJECT_ROOT} ")]
    assert not any("'tests'" in line or "'README.md'" in line for line in checkout), result  # only mmos_ray/


def test_reading_rays_auth_token(sandbox):
    needs(sandbox, "filesystem", FILESYSTEM_VIEW)
    ray_dir = Path.home() / ".ray"
    made = not ray_dir.exists()
    ray_dir.mkdir(mode=0o700, exist_ok=True)
    path, token = bait(ray_dir)  # a name of our own beside any real token, which is left alone
    try:
        result = sandbox.execute(READ_AND_LIST.format(paths=[str(path)], folders=[str(ray_dir), "/tmp/ray"]))
    finally:
        path.unlink()
        if made:
            try:
                ray_dir.rmdir()
            except OSError:  # Ray wrote into it meanwhile: it is Ray's now
                pass
    assert_unseen(result.stdout, path, token)


def test_normal_programs_still_run_in_the_view(sandbox):
    heavy = sandbox.execute("import numpy as np, sympy as sp\nprint(sp.factor('x**2 - 1'), np.arange(3).sum())")
    assert heavy.stdout == "(x - 1)*(x + 1) 3\n", heavy
    lazy = sandbox.execute("import zoneinfo, xml.dom.minidom, sqlite3, lzma, email.mime.text\n"
                           "print(zoneinfo.ZoneInfo('Europe/Paris').key,\n"
                           "      xml.dom.minidom.parseString('<a/>').documentElement.tagName)")
    assert lazy.stdout == "Europe/Paris a\n", lazy
    graded = sandbox.execute("from mmos_ray.core.grading import grade_batch_and_print\n"
                             "grade_batch_and_print([['\\\\frac{1}{2}', '0.5', 'compat']], 3)", kind="grader")
    assert '"correct": true' in graded.stdout, graded


# Run as uid 65534 by the test below: a sandbox of that user's own, and the same baits.
AS_ANOTHER_USER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from mmos_ray.sandbox import Limits, Sandbox
baits = json.loads(sys.argv[2])
with Sandbox(workers=1, limits=Limits(timeout_s=10)) as box:
    folders = sorted({{os.path.dirname(b["path"]) for b in baits}})
    code = {code!r}.format(paths=[b["path"] for b in baits], folders=folders)
    result = box.execute(code)
    print(json.dumps({{"protections": box.protections, "stdout": result.stdout, "error": result.error}}))
"""


def test_the_same_reads_as_an_ordinary_user(sandbox):
    if os.geteuid() != 0:
        pytest.skip("the tests already run as an ordinary user here")
    switch = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    # Through a shell of that user's: setpriv's own exec may succeed where the user's would not.
    probe = subprocess.run([*switch, "/bin/sh", "-c", 'exec "$0" -c "$1"', sys.executable,
                            f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r}); import mmos_ray.sandbox.executor"],
                           capture_output=True, text=True, env=env, cwd="/")
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"uid {NOBODY} cannot run {sys.executable} with mmos_ray: {reason}")
        pytest.skip(f"uid {NOBODY} cannot run this interpreter ({sys.executable}): {reason}")
    home = Path(tempfile.mkdtemp(prefix="mmos-nobody-home-", dir="/var/tmp"))  # not hidden by the private /tmp
    baits = []
    try:
        os.chown(home, NOBODY, NOBODY)
        (home / ".ray").mkdir(mode=0o700)
        os.chown(home / ".ray", NOBODY, NOBODY)
        baits += [bait(home), bait(home / ".ray")]
        for path, _ in baits:
            os.chown(path, NOBODY, NOBODY)
        if os.access(PROJECT_ROOT.parent, os.W_OK):
            baits.append(bait(PROJECT_ROOT.parent, 0o644))
        paths = [{"path": str(path)} for path, _ in baits] + [{"path": "/etc/shadow"}]
        out = subprocess.run([*switch, sys.executable, "-c", AS_ANOTHER_USER.format(code=READ_AND_LIST),
                              str(PROJECT_ROOT), json.dumps(paths)], capture_output=True, text=True, timeout=120,
                             env={**env, "HOME": str(home)}, cwd="/")
    finally:
        for path, _ in baits:
            path.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if report["protections"]["filesystem"] != FILESYSTEM_VIEW:
        pytest.skip(f"bubblewrap does not run for uid {NOBODY} here: {report['protections']['filesystem']}")
    for path, token in baits:
        assert_unseen(report["stdout"], path, token)
