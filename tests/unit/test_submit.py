"""`mmos submit`'s pieces that need no cluster: the job's command, the token it sends, the errors it gives."""

import shlex
import socket
from pathlib import Path

import pytest

from mmos_ray import submit
from mmos_ray.submit import SubmitError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stage, script", [(None, "jobs/all.py"), ("prepare", "jobs/00_prepare.py"),
                                           ("sample", "jobs/01_sample.py"), ("eval", "jobs/06_eval.py"),
                                           ("serve", "jobs/07_serve.py")])
def test_each_stage_runs_its_job_script(stage, script):
    assert submit.job_script(stage) == script
    assert (ROOT / script).is_file()


def test_unknown_stage_lists_the_stages():
    with pytest.raises(SubmitError, match=r"unknown stage 'smaple'; stages: prepare, sample, .*eval, serve"):
        submit.job_script("smaple")


def test_entrypoint_is_one_shell_command_with_the_config_relative_to_the_project(monkeypatch):
    monkeypatch.chdir(ROOT / "configs")
    command = submit.entrypoint("sample", Path("quickstart.yaml"),
                                ["sample.sources=[{dataset: gsm8k, split: train, limit: 2}]", "sample.engine.model=tiny"])
    assert shlex.split(command) == ["python", "jobs/01_sample.py", "--config", "configs/quickstart.yaml",
                                    "--set", "sample.sources=[{dataset: gsm8k, split: train, limit: 2}]",
                                    "--set", "sample.engine.model=tiny"]
    assert submit.entrypoint(None, None, []) == "python jobs/all.py"


def test_a_config_outside_the_project_is_refused_with_the_fix(tmp_path):
    config = tmp_path / "mine.yaml"
    with pytest.raises(SubmitError, match=r"outside the project folder .* copy the config into .*configs"):
        submit.entrypoint(None, config, [])


def test_runtime_env_uploads_the_project_without_venv_and_runs():
    env = submit.runtime_env()
    assert env["working_dir"] == str(ROOT)
    assert {".venv/", "runs/", "models/"} <= set(env["excludes"])


@pytest.fixture
def no_token_sources(monkeypatch, tmp_path):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_token_comes_from_the_env_then_the_token_path_then_home(no_token_sources, monkeypatch):
    home = no_token_sources
    assert submit.auth_token() is None
    (home / ".ray").mkdir()
    (home / ".ray/auth_token").write_text("from-home\n")
    assert submit.auth_token() == "from-home"
    (home / "other").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(home / "other"))
    assert submit.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.auth_token() == "from-env"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert submit.auth_token() is None


def test_an_unreadable_token_path_is_an_error_not_a_silent_fallback(no_token_sources, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(no_token_sources / "missing"))
    with pytest.raises(SubmitError, match=r"RAY_AUTH_TOKEN_PATH=.*missing cannot be read"):
        submit.auth_token()


def test_address_comes_from_the_flag_then_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert submit.cluster_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert submit.cluster_address(None) == "http://head:8265"
    assert submit.cluster_address("http://other:8265") == "http://other:8265"


def test_an_unreachable_cluster_names_the_address_and_the_fix():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(SubmitError, match=rf"cannot reach a Ray cluster at {address} .*Fix: pass --address"):
        submit.status(address, "raysubmit_x")
