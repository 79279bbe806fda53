"""`mmos sandbox check`: start a sandbox, say which protections it has here, and try one attack per
protection. No Ray here.

    from mmos_ray.sandbox.check import check
    report = check()   # {"protections": {...}, "warnings": [...], "probes": {name: {"contained", "detail"}}}

Each probe is a program whose success prints "ESCAPED". The network probe connects only to a listener of
our own on 127.0.0.1. The secret probes plant their bait first and remove it afterwards: a 0600 file in
the caller's HOME and a file in the folder above the checkout (random names and content); two more try
/etc/shadow and list /root. A bait probe that cannot run (the folder is not writable, or is itself part
of the sandbox's view, as for a package installed into site-packages) says why and counts as contained.
`planned()` gives the protections without starting anything.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Iterator

from mmos_ray.sandbox.executor import Sandbox
from mmos_ray.sandbox.isolation import filesystem_view, plan_zygote
from mmos_ray.sandbox.protocol import Limits

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding mmos_ray/

# {name}: filled in by `check` (doubled braces are the program's own).
PROBES = {
    "network": "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
               "    print('ESCAPED: connected to a listener on the host loopback')\nexcept OSError as exc:\n"
               "    print(type(exc).__name__)",
    "filesystem": "import os\nopen('/var/tmp/.mmos-sandbox-probe', 'w').write('x')\n"
                  "os.remove('/var/tmp/.mmos-sandbox-probe')\nprint('ESCAPED: wrote /var/tmp')",
    "processes": "import os, time\nn = 0\ntry:\n    while n < 1000:\n        if os.fork() == 0:\n"
                 "            time.sleep(5)\n            os._exit(0)\n        n += 1\n    print('ESCAPED: 1000 forks')\n"
                 "except OSError:\n    print(f'stopped after {{n}} forks')",
    # The interpreter itself: it is the one program sure to exist inside the sandbox's view.
    "exec": "import subprocess, sys\nsubprocess.run([sys.executable, '-S', '-c', ''], check=True)\n"
            "print('ESCAPED: started', sys.executable)",
    "environment": "import os\nextra = set(os.environ) - {{'PATH', 'HOME', 'TMPDIR', 'LANG'}}\n"
                   "print(f'ESCAPED: {{sorted(extra)}}' if extra else 'scrubbed')",
    "home secret": "print('ESCAPED: read', {path!r}, open({path!r}).read() == {token!r})",
    "/etc/shadow": "print('ESCAPED: read /etc/shadow,', len(open('/etc/shadow').read()), 'characters')",
    "/root": "import os\nseen = set(os.listdir('/root')) - {allowed!r}\n"
             "print(f'ESCAPED: /root lists {{sorted(seen)}}' if seen else 'only the way to the interpreter')",
    "project parent": "import os\ntry:\n    print('ESCAPED: read', {path!r}, open({path!r}).read() == {token!r})\n"
                      "except OSError as exc:\n    print(type(exc).__name__)\n"
                      "seen = set(os.listdir({parent!r})) - {allowed_parent!r}\n"
                      "print(f'ESCAPED: {parent} lists {{sorted(seen)}}' if seen else 'nothing else there')",
}


def check(isolation: str = "auto") -> dict[str, Any]:
    """Start a sandbox, report its protections and warnings, and run every probe (one attack each)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    token = secrets.token_hex(8)
    with contextlib.ExitStack() as stack:
        stack.enter_context(listener)
        home = stack.enter_context(_bait(Path.home(), token, 0o600))
        parent = stack.enter_context(_bait(PROJECT_ROOT.parent, token, 0o644))
        sandbox = stack.enter_context(Sandbox(workers=1, isolation=isolation, limits=Limits(timeout_s=5)))
        fill = {"port": listener.getsockname()[1], "token": token, "allowed": _allowed_under("/root"),
                "parent": str(PROJECT_ROOT.parent),
                "allowed_parent": _allowed_under(str(PROJECT_ROOT.parent)) | {PROJECT_ROOT.name}}
        baits = {"home secret": (home, Path.home()), "project parent": (parent, PROJECT_ROOT.parent)}
        probes = {}
        for name, code in PROBES.items():
            bait, folder = baits.get(name, (None, None))
            if name in baits and (bait is None or _in_view(folder)):
                why = "it is part of the sandbox's view" if bait is not None else "cannot write a bait file there"
                probes[name] = {"contained": True, "detail": f"not run on {folder}: {why}"}
                continue
            result = sandbox.execute(code.format(**fill, path=str(bait)))
            probes[name] = {"contained": "ESCAPED" not in result.stdout,
                            "detail": (result.stdout.strip().replace("\n", "; ") or result.error)[:200]}
        return {"protections": sandbox.protections, "warnings": sandbox.warnings, "probes": probes}


def planned(isolation: str = "auto") -> dict[str, Any]:
    """The protections and warnings a sandbox would have here, without starting one."""
    plan = plan_zygote(isolation)
    return {"protections": dict(plan.protections), "warnings": list(plan.warnings)}


@contextlib.contextmanager
def _bait(folder: Path, token: str, mode: int) -> Iterator[Path | None]:
    """A file of `mode` holding `token` in `folder` for the duration (None when it cannot be written)."""
    path = folder / f".mmos-sandbox-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError:
        yield None
        return
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token)
        os.chmod(path, mode)  # whatever the umask
        yield path
    finally:
        path.unlink(missing_ok=True)


def _allowed_under(folder: str) -> set[str]:
    """Names in `folder` that the sandbox's view itself puts there (the way to a bound interpreter)."""
    prefix = folder.rstrip("/") + "/"
    view = filesystem_view()
    places = [*view.binds, *(where for _, where in view.symlinks), "/tmp", "/dev", "/proc"]
    return {place[len(prefix):].split("/")[0] for place in places if place.startswith(prefix)}


def _in_view(folder: Path) -> bool:
    """`folder` is inside a folder bound into the sandbox (e.g. a package installed into site-packages)."""
    real = os.path.realpath(folder)
    return any(real == bind or real.startswith(bind.rstrip("/") + "/") for bind in filesystem_view().binds)
