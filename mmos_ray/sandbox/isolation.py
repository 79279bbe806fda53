"""How a fork server is started, given what this host allows: bubblewrap namespaces, a pids cgroup, a
uid switch, seccomp. Every protection that cannot be had is named in a warning, never dropped silently.

| protection        | preferred                                   | fallback                                    |
|-------------------|---------------------------------------------|---------------------------------------------|
| network           | own network namespace (bwrap)               | seccomp: no sockets but AF_UNIX             |
| filesystem        | read-only view of what programs need, private /tmp (bwrap) | none (the host's files) |
| process count     | pids cgroup (root) / RLIMIT_NPROC (non-root) | uid switch to nobody, then RLIMIT_NPROC     |
| user (as root)    | uid 65534 (nobody)                          | root, where nobody cannot read the interpreter |
| leftovers         | PID namespace + child subreaper             | child subreaper                             |
| syscalls          | seccomp (no exec, ptrace, signals to server) | none                                        |

Inside bubblewrap a program sees a root of its own, read-only, holding only (see `filesystem_view`): the
interpreter (its executable and prefix; a prefix under /root is bound alone, never /root), its standard
library and every site-packages / dist-packages folder on sys.path (the venv included), our package
folder `mmos_ray/` (not the checkout around it), the system libraries they load (/usr/lib, /lib64 …,
/usr/share/zoneinfo, `ldconfig` for ctypes) and from /etc only the loader's cache and configuration
and the time zone. No /etc/passwd, /etc/shadow, home folders, Ray's folders (~/.ray, /tmp/ray) or
project data: those paths do not exist in there, whichever uid a program runs as. /tmp is a private
tmpfs, /dev and /proc are bwrap's own.

Programs still switch to uid 65534 where it can read what is bound (inside bubblewrap the folders above
each bound one are bwrap's own, open to all): as root, even without capabilities, they would be the
host's root to the kernel. Without bubblewrap the view is the host's, so as root they would read its
secrets (/etc/shadow, Ray's cluster token, cloud credentials); where uid 65534 cannot read the
interpreter (a venv in a private folder) lazily imported modules would fail as nobody, so programs
stay root and a warning says so.
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
import sysconfig
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

NOBODY = 65534
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # mmos_ray/: the only part of the checkout bound
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# What programs' libraries load from the system, bound read-only where they exist (symlinks kept as
# symlinks: /lib -> usr/lib). ldconfig: ctypes.util.find_library runs it (pyseccomp finds libseccomp so).
# From /etc only the loader's cache and configuration and the time zone: no passwd, group or nsswitch
# (nothing of ours resolves users; HOME and TMPDIR are set), never shadow or credentials.
SYSTEM_PATHS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/lib", "/lib64", "/lib32", "/libx32",
                "/usr/local/lib", "/usr/share/zoneinfo", "/sbin/ldconfig", "/etc/ld.so.cache", "/etc/ld.so.conf",
                "/etc/ld.so.conf.d", "/etc/localtime", "/etc/timezone")
_SYSTEM_PREFIXES = ("/", "/usr", "/usr/local")  # a prefix here is bound by its parts, never whole
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
        readable = _readable_by_others(filesystem_view().binds if use_bwrap else None)
        if cgroup_root is None or readable:  # without a cgroup the uid switch is the process limit
            uid = NOBODY
        if cgroup_root is None and not readable:
            warnings.append(f"some of the interpreter's files are not readable by uid {NOBODY} (e.g. a Python "
                            "in a private folder): programs can import only the preloaded modules from there")
        elif uid is None and not use_bwrap:  # inside bubblewrap root sees only the bound view: nothing secret
            warnings.append(f"programs run as root without bubblewrap: uid {NOBODY} cannot read the interpreter's "
                            "files (e.g. a Python or venv under /root or a private temporary folder), so they "
                            "could read the host's files too; install bubblewrap, or chmod o+rX those folders "
                            "to run programs as nobody")
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
        protections = {"network": "network namespace", "filesystem": FILESYSTEM_VIEW,
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


FILESYSTEM_VIEW = "read-only view of the interpreter, its libraries and mmos_ray only; private /tmp"


@dataclasses.dataclass(frozen=True)
class FilesystemView:
    """What a program sees of the host inside bubblewrap: `binds` (real paths, bound read-only at the same
    path, none inside another) and `symlinks` ((target, where) pairs, as on the host)."""

    binds: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...]


def interpreter_paths() -> set[str]:
    """The interpreter's executable and prefixes, its standard library, every site-packages and
    dist-packages folder on sys.path, and our package folder (not the checkout around it)."""
    paths = {sys.executable, os.path.realpath(sys.executable), _PACKAGE_DIR}
    for prefix in {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}:
        if os.path.realpath(prefix) not in _SYSTEM_PREFIXES:  # a venv, /root/.pyenv/versions/3.11.7, /opt/conda
            paths.add(prefix)
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix, "installed_base": sys.base_prefix,
            "installed_platbase": sys.base_exec_prefix}
    for scheme in (sysconfig.get_paths(), sysconfig.get_paths(vars=base)):
        paths.update(scheme[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in scheme)
    paths.update(p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p))
    return {os.path.abspath(p) for p in paths}


@functools.lru_cache(maxsize=1)
def filesystem_view() -> FilesystemView:
    """The bind mounts and symlinks of the sandbox's root: `interpreter_paths()` and `SYSTEM_PATHS`."""
    symlinks: dict[str, str] = {}
    real: set[str] = set()
    for path in interpreter_paths() | set(SYSTEM_PATHS):
        resolved = _resolve(path, symlinks)
        if resolved is not None and resolved != "/":
            real.add(resolved)
    binds = _outermost(real)
    inside = lambda path: any(path == b or path.startswith(b.rstrip("/") + "/") for b in binds)  # noqa: E731
    kept = tuple(sorted((target, where) for where, target in symlinks.items() if not inside(where)))
    return FilesystemView(tuple(binds), kept)


def _resolve(path: str, symlinks: dict[str, str]) -> str | None:
    """`path`'s real path, or None when it does not exist; every symlink met on the way is added to
    `symlinks` (where -> target, as written), so that the same path resolves the same way inside."""
    current = "/"
    parts = [part for part in path.split("/") if part]
    for _ in range(40):
        if not parts:
            return current if os.path.exists(current) else None
        nxt = os.path.join(current, parts.pop(0))
        if os.path.islink(nxt):
            target = os.readlink(nxt)
            symlinks[nxt] = target
            base = "/" if target.startswith("/") else current
            parts = [part for part in os.path.normpath(os.path.join(base, target)).split("/") if part] + parts
            current = "/"
        elif os.path.exists(nxt):
            current = nxt
        else:
            return None
    return None  # a symlink loop


def _outermost(paths: set[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted(paths):
        if not any(path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _readable_by_others(binds: tuple[str, ...] | None) -> bool:
    """The interpreter, its libraries and our package can be read (and their folders entered) by any user.
    `binds`: the bound folders inside bubblewrap, whose parents there are bwrap's own (open to all), so only
    the folders from each bound one down count; None: the host's view, every parent counts."""
    for root in {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)), _PACKAGE_DIR,
                 *(p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p))}:
        path = Path(os.path.realpath(root))
        if not path.exists():
            continue
        folders = [path, *path.parents]
        if binds is not None:
            top = next((Path(b) for b in binds if path == Path(b) or Path(b) in path.parents), None)
            folders = folders if top is None else [path, *(p for p in path.parents if p == top or top in p.parents)]
        if not all(os.stat(folder).st_mode & 0o001 for folder in folders):
            return False
        if not os.stat(path).st_mode & 0o004:
            return False
    return True


def _sec(has_seccomp: bool) -> str:
    return "seccomp" if has_seccomp else "none"


def _bwrap_args(scratch_mb: int, setuid: bool) -> list[str]:
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try"]
    view = filesystem_view()
    under_tmp = lambda path: path == "/tmp" or path.startswith("/tmp/")  # noqa: E731
    args += _view_args(view, lambda path: not under_tmp(path))
    args += ["--dev", "/dev", "--proc", "/proc", "--size", str(scratch_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    args += _view_args(view, under_tmp)  # after the private /tmp, which would hide them (a venv under /tmp)
    # The root (bwrap's own tmpfs), /dev and its /dev/shm read-only, so that /tmp is the only writable place.
    args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/tmp", "--clearenv"]
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


def _view_args(view: FilesystemView, chosen) -> list[str]:
    """bwrap options making the `chosen` part of the view: the folders above each bind or symlink (mode
    0755, so that uid 65534 can pass: bwrap would make them 0700), then the symlinks and the binds."""
    places = [b for b in view.binds if chosen(b)]
    links = [(target, where) for target, where in view.symlinks if chosen(where)]
    parents = sorted({str(p) for place in [*places, *(where for _, where in links)] for p in Path(place).parents
                      if str(p) not in ("/", "/tmp") and chosen(str(p))})
    perms = ["--perms", "0755"] if _bwrap_has_perms() else []
    args = [arg for parent in parents for arg in (*perms, "--dir", parent)]
    for target, where in links:
        args += ["--symlink", target, where]
    for place in places:
        args += ["--ro-bind", place, place]
    return args


@functools.lru_cache(maxsize=1)
def _bwrap_has_perms() -> bool:
    """bubblewrap >= 0.5 knows --perms; older ones make folders with 0755 less the umask."""
    try:
        helptext = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--perms" in helptext


@functools.lru_cache(maxsize=1)
def bwrap_works() -> bool:
    """bubblewrap is installed and can create the namespaces we use on this host."""
    if shutil.which("bwrap") is None:
        return False
    try:
        probe = subprocess.run([*_bwrap_args(1, setuid=False), sys.executable, "-S", "-c", ""],
                               capture_output=True, timeout=20)
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
