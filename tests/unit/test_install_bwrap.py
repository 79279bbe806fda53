""".ci/install-bwrap, the step of .ci/install that installs bubblewrap: run with apt-get, dpkg, sudo and id
replaced by stubs (and nothing else on PATH), so nothing is really installed."""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "install-bwrap"
BASH = shutil.which("bash") or "/bin/bash"


def run_step(tmp_path, *, installed: bool, uid: int = 0, apt_ok: bool = True, sudo_ok: bool = False):
    """Run the step with stubs; returns (the completed process, the stubs' calls, one per line)."""
    stubs, log = tmp_path / "stubs", tmp_path / "calls.log"
    stubs.mkdir()
    log.touch()
    bodies = {
        "dpkg": f"exit {0 if installed else 1}",
        "id": f'[ "$1" = -u ] && echo {uid}',
        "apt-get": f"exit {0 if apt_ok else 100}",
        # sudo -n true: may we? Otherwise run the command (VAR=value arguments set its environment).
        "sudo": (f'[ "$1" = -n ] && shift\n[ "$1" = true ] && exit {0 if sudo_ok else 1}\n'
                 'while [[ "$1" == *=* ]]; do export "$1"; shift; done\n"$@"'),
    }
    for name, body in bodies.items():
        stub = stubs / name
        stub.write_text(f'#!{BASH}\necho "{name} $*" >> "$CALLS"\n{body}\n')
        stub.chmod(0o755)
    done = subprocess.run([BASH, str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(stubs), "CALLS": str(log)})
    return done, log.read_text().splitlines()


def test_already_installed_does_nothing(tmp_path):
    done, calls = run_step(tmp_path, installed=True)
    assert done.returncode == 0 and done.stdout == done.stderr == ""
    assert not any(call.startswith(("apt-get", "sudo")) for call in calls), calls


@pytest.mark.parametrize("uid, sudo_ok", [(0, False), (1000, True)], ids=["root", "passwordless sudo"])
def test_installable_is_installed_with_apt_get(tmp_path, uid, sudo_ok):
    done, calls = run_step(tmp_path, installed=False, uid=uid, sudo_ok=sudo_ok)
    assert done.returncode == 0, done.stderr
    apt = [call for call in calls if call.startswith("apt-get")]
    assert apt == ["apt-get update -qq", "apt-get install -y -qq bubblewrap"], calls
    assert any(call.startswith("sudo -n") for call in calls) == (uid != 0)
    assert "installed bubblewrap" in done.stdout and done.stderr == ""


@pytest.mark.parametrize("uid, apt_ok, sudo_ok", [(0, False, False), (1000, True, False)],
                         ids=["apt-get fails", "no root, no passwordless sudo"])
def test_not_installable_says_how_in_one_line_and_goes_on(tmp_path, uid, apt_ok, sudo_ok):
    done, calls = run_step(tmp_path, installed=False, uid=uid, apt_ok=apt_ok, sudo_ok=sudo_ok)
    assert done.returncode == 0
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) == 1, lines
    assert "apt-get install bubblewrap" in lines[0] and "without it" in lines[0]
    if uid != 0:
        assert not any(call.startswith("apt-get") for call in calls), calls  # nothing tried without the right


def test_the_readme_install_step_runs_it():
    install = (SCRIPT.parent / "install").read_text()
    assert "bash .ci/install-bwrap" in install
    assert "apt-get" not in (SCRIPT.parent / "run").read_text()  # one copy of the step, in .ci/install's path
