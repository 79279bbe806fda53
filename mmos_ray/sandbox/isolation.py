"""How a fork server is started, given what this host allows: bubblewrap namespaces, a pids cgroup, a
uid switch, seccomp. Every protection that cannot be had is named in a warning, never dropped silently.

| protection        | preferred                                   | fallback                                    |
|-------------------|---------------------------------------------|---------------------------------------------|
| network           | own network namespace (bwrap)               | seccomp: no sockets but AF_UNIX             |
| filesystem        | read-only root, private /tmp (bwrap)        | none (programs can write where the uid can) |
| process count     | pids cgroup (root) / RLIMIT_NPROC (non-root) | uid switch to nobody, then RLIMIT_NPROC     |
| user (as root)    | uid 65534 (nobody)                          | root, where nobody cannot read the interpreter |
| leftovers         | PID namespace + child subreaper             | child subreaper                             |
| syscalls          | seccomp (no exec, ptrace, signals to server) | none                                        |

Programs do not run as root where uid 65534 can read the interpreter, its libraries and our package: a
read-only root still lets root read every secret of the host (/etc/shadow, Ray's cluster token, cloud
credentials), and a served model can be talked into printing them. Where it cannot (a venv in a private
folder), lazily imported modules would fail as nobody, so programs stay root and a warning says so.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

NOBODY = 65534
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# Not `python -I`: it would ignore PYTHONHASHSEED. The environment is ours alone anyway (see ZYGOTE_ENV).
_BOOT = (f"import sys; sys.path[:] = [{_PACKAGE_PARENT!r}] + [p for p in sys.path if p]; "
         "from mmos_ray.sandbox.zygote import main; main()")
# The server's environment: nothing of the host's. A fixed hash seed makes set/dict-of-str iteration,
# and so the printed output of many programs, the same on every run.
ZYGOTE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
              "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclasses.dataclass
class ZygotePlan:
    """The command that starts one fork server, and the protections it will have."""

    command: list[str]  # the server's options (JSON) are appended as the last argument
    env: dict[str, str]
    options: dict  # "scratch" is None when each server needs its own scratch folder on the host
    cgroup_root: Path | None  # per-server pids cgroups are made under it
    protections: dict[str, str]
    warnings: list[str]


def plan_zygote(isolation: str = "auto", scratch_mb: int = 256) -> ZygotePlan:
    """`isolation`: "auto" (the strongest this host allows), "bwrap" (fail without it) or "none"."""
    if isolation not in ("auto", "bwrap", "none"):
        raise ValueError(f"isolation must be 'auto', 'bwrap' or 'none', got {isolation!r}")
    use_bwrap = isolation != "none" and bwrap_works()
    if isolation == "bwrap" and not use_bwrap:
        raise RuntimeError("isolation='bwrap' but bubblewrap is missing or cannot create namespaces here; "
                           "install it (apt-get install bubblewrap) or use isolation='auto'")
    warnings = []
    is_root = os.geteuid() == 0
    cgroup_root = pids_cgroup_root() if is_root and isolation != "none" else None
    uid = None
    if is_root and isolation != "none":
        if cgroup_root is None or _readable_by_others():  # without a cgroup the uid switch is the process limit
            uid = NOBODY
        if cgroup_root is None and not _readable_by_others():
            warnings.append(f"some of the interpreter's files are not readable by uid {NOBODY} (e.g. a Python "
                            "under /root): programs can import only the preloaded modules from there")
        elif uid is None:
            warnings.append(f"programs run as root: uid {NOBODY} cannot read the interpreter's files (e.g. a Python "
                            "or venv under /root or a private temporary folder), so they could read the host's "
                            "files too; chmod o+rX those folders to run programs as nobody")
    if cgroup_root is not None:
        processes = "pids cgroup"
    elif not is_root:
        processes = "RLIMIT_NPROC"
    elif uid is not None:
        processes = f"RLIMIT_NPROC as uid {NOBODY}"
        warnings.append(f"no writable pids cgroup: RLIMIT_NPROC as uid {NOBODY} limits the processes")
    else:
        processes = "none"
    has_seccomp = isolation != "none" and importlib.util.find_spec("pyseccomp") is not None
    if isolation == "none":
        warnings.append("isolation='none': programs run with rlimits only (no namespaces, no seccomp"
                        f"{', no process limit' if is_root else ''}); use it only for trusted code")
    elif not has_seccomp:
        warnings.append("seccomp unavailable (pip install pyseccomp; needs libseccomp2): programs may exec, "
                        "ptrace, and signal the sandbox server")
    use_nproc = isolation != "none" and cgroup_root is None
    options = {"uid": uid, "use_nproc": use_nproc,
               "nproc_base": 0 if uid is not None else _processes_of_uid(os.getuid()), "seccomp": has_seccomp}
    user = f"uid {NOBODY}" if uid is not None else ("root" if is_root else f"uid {os.getuid()}")
    python = [sys.executable, "-s", "-c", _BOOT]
    if use_bwrap:
        options["scratch"] = "/tmp"  # a tmpfs of the server's own
        command = [*_bwrap_args(scratch_mb, setuid=uid is not None), *python]
        protections = {"network": "network namespace", "filesystem": "read-only root, private /tmp",
                       "processes": processes, "user": user, "leftovers": "PID namespace",
                       "syscalls": _sec(has_seccomp)}
    else:
        options["scratch"] = None
        command = python
        network = "seccomp (no sockets)" if has_seccomp else "none"
        protections = {"network": network, "filesystem": "none", "processes": processes, "user": user,
                       "leftovers": "child subreaper", "syscalls": _sec(has_seccomp)}
        if isolation == "auto":
            warnings.append("bubblewrap unavailable (apt-get install bubblewrap, and user namespaces enabled): "
                            f"no network or mount namespace; network: {network}; programs can write files "
                            "wherever their uid may")
    return ZygotePlan(command, dict(ZYGOTE_ENV), options, cgroup_root, protections, warnings)


def _readable_by_others() -> bool:
    """The interpreter, its libraries and our package can be read (and their folders entered) by any user."""
    for root in {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)), _PACKAGE_PARENT,
                 *(p for p in sys.path if p and "site-packages" in p)}:
        path = Path(os.path.realpath(root))
        if not path.exists():
            continue
        if not all(os.stat(folder).st_mode & 0o001 for folder in [path, *path.parents]):
            return False
        if not os.stat(path).st_mode & 0o004:
            return False
    return True


def _sec(has_seccomp: bool) -> str:
    return "seccomp" if has_seccomp else "none"


def _bwrap_args(scratch_mb: int, setuid: bool) -> list[str]:
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--size", str(scratch_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    for path in _needed_under_tmp():  # the private /tmp would hide them (a venv or checkout under /tmp)
        args += ["--ro-bind", path, path]
    # /dev and its /dev/shm are bwrap's own tmpfs: read-only, so that /tmp is the only writable place.
    args += ["--remount-ro", "/dev", "--chdir", "/tmp", "--clearenv"]
    for key, value in ZYGOTE_ENV.items():
        args += ["--setenv", key, value]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
        if setuid:
            # The server hands each program a folder of uid 65534's, empties it afterwards and kills what
            # overstays: without DAC_OVERRIDE/FOWNER root could not enter or clear the folder, without KILL
            # not signal another uid. The program drops every capability when it switches to uid 65534.
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_CHOWN",
                     "--cap-add", "CAP_DAC_OVERRIDE", "--cap-add", "CAP_FOWNER", "--cap-add", "CAP_KILL"]
    return args + ["--"]


def _needed_under_tmp() -> list[str]:
    """The interpreter, its libraries and our package, where they live under /tmp (outermost paths only)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
                  _PACKAGE_PARENT, *sys.path}
    under_tmp = sorted(os.path.realpath(p) for p in candidates
                       if p and os.path.realpath(p).startswith("/tmp/") and os.path.exists(p))
    outermost: list[str] = []
    for path in under_tmp:
        if not any(path == kept or path.startswith(kept + "/") for kept in outermost):
            outermost.append(path)
    return outermost


@functools.lru_cache(maxsize=1)
def bwrap_works() -> bool:
    """bubblewrap is installed and can create the namespaces we use on this host."""
    if shutil.which("bwrap") is None:
        return False
    try:
        probe = subprocess.run([*_bwrap_args(1, setuid=False), "/bin/true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if probe.returncode != 0:
        logger.debug("bwrap probe failed: %s", probe.stderr.decode(errors="replace").strip())
    return probe.returncode == 0


@functools.lru_cache(maxsize=1)
def pids_cgroup_root() -> Path | None:
    """A folder where we may create pids cgroups (cgroup v1 `pids` hierarchy, or v2), or None."""
    candidates = []
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists():
        candidates.append(v1)
    v2 = Path("/sys/fs/cgroup")
    if "pids" in _read(v2 / "cgroup.controllers").split():
        candidates.append(v2)
    for base in candidates:
        root = base / "mmos_ray"
        try:
            root.mkdir(exist_ok=True)
            if base == v2:
                (v2 / "cgroup.subtree_control").write_text("+pids")
                (root / "cgroup.subtree_control").write_text("+pids")
            probe = root / f"probe-{uuid.uuid4().hex[:8]}"
            probe.mkdir()
            (probe / "pids.max").write_text("8")
            probe.rmdir()
        except OSError:
            continue
        _remove_stale_cgroups(root)
        return root
    return None


def _remove_stale_cgroups(root: Path) -> None:
    """Remove the cgroups of owners that died. A live owner's cgroup is empty for a moment (made, not yet
    joined), so only a dead owner's is touched: `w<pid>-…` of a gone pid, or a probe older than a minute."""
    for child in root.iterdir():
        if not child.is_dir() or _owner_alive(child):
            continue
        try:
            child.rmdir()  # only succeeds for empty cgroups
        except OSError:
            pass


def _owner_alive(cgroup: Path) -> bool:
    name = cgroup.name
    if name.startswith("w") and name[1:].split("-", 1)[0].isdigit():
        try:
            os.kill(int(name[1:].split("-", 1)[0]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        return time.time() - cgroup.stat().st_mtime < 60
    except OSError:
        return True


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _processes_of_uid(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count
