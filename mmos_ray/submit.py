"""Sending the pipeline to a running Ray cluster as a job: the logic behind `mmos submit`, `mmos status`
and `mmos logs`.

    mmos submit --address http://127.0.0.1:8265 --config configs/quickstart.yaml [--stage sample] [--set K=V]
    mmos status raysubmit_XXXX
    mmos logs raysubmit_XXXX --follow

`submit` uploads the project folder as the job's working_dir (with the excludes of cluster/runtime_env.yaml)
and runs `python jobs/<NN_stage>.py --config C --set ...` there (`jobs/all.py` without a stage): the same
entry points and command as a hand-written `ray job submit`. The config is validated here first, so a typo
fails before anything is uploaded.

The address is --address, else $RAY_ADDRESS, else http://127.0.0.1:8265 (the dashboard's port). The token
is read where Ray reads it: $RAY_AUTH_TOKEN, else the file named by $RAY_AUTH_TOKEN_PATH, else
~/.ray/auth_token; $RAY_AUTH_MODE=disabled sends none. Unlike `ray job submit`, no RAY_AUTH_MODE=token
is needed on the client: the token found is sent as a bearer header.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import yaml

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
RUNTIME_ENV_FILE = "cluster/runtime_env.yaml"
STATUS_POLL_S = 1.0


class SubmitError(Exception):
    """The cluster cannot be reached, rejects us, or the request cannot be built. The message names the fix."""


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    status: str
    entrypoint: str
    message: str


def cluster_address(address: str | None = None) -> str:
    return address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS


def auth_token() -> str | None:
    """The token Ray itself would use on this machine, in Ray's order of precedence; None when there is none."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            return Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path} cannot be read ({exc.strerror}); point it at the "
                              "cluster's token file or unset it") from None
    default = Path.home() / ".ray" / "auth_token"
    return default.read_text().strip() if default.is_file() else None


def job_script(stage: str | None) -> str:
    """`jobs/all.py`, or the stage's `jobs/NN_<stage>.py`, relative to the project folder."""
    if stage is None:
        return "jobs/all.py"
    scripts = {path.stem.split("_", 1)[1]: path for path in sorted((PROJECT_ROOT / "jobs").glob("[0-9][0-9]_*.py"))}
    if stage not in scripts:
        raise SubmitError(f"unknown stage {stage!r}; stages: {', '.join(scripts)} (or no --stage for all of them)")
    return scripts[stage].relative_to(PROJECT_ROOT).as_posix()


def entrypoint(stage: str | None, config: Path | None, overrides: list[str]) -> str:
    """The job's shell command; the config path is made relative to the project folder the job receives."""
    command = ["python", job_script(stage)]
    if config is not None:
        command += ["--config", _inside_project(config)]
    for override in overrides:
        command += ["--set", override]
    return shlex.join(command)


def runtime_env() -> dict:
    """cluster/runtime_env.yaml with its working_dir made absolute (it is relative to the project folder)."""
    env = yaml.safe_load((PROJECT_ROOT / RUNTIME_ENV_FILE).read_text())
    env["working_dir"] = str((PROJECT_ROOT / env.get("working_dir", ".")).resolve())
    return env


def submit(address: str | None, config: Path | None, overrides: list[str], stage: str | None = None) -> str:
    """Validate the config, upload the project and start the job; returns the job id at once."""
    from mmos_ray.config import load_config

    if not (PROJECT_ROOT / "jobs").is_dir():
        raise SubmitError(f"{PROJECT_ROOT} has no jobs/ folder: `mmos submit` uploads the project folder, so run "
                          "it from a source checkout installed with `pip install -e .`")
    load_config(config, overrides)  # raises ConfigError (file:line and the fix) before any upload
    command = entrypoint(stage, config, overrides)
    with _talking_to(cluster_address(address)) as client:
        return client.submit_job(entrypoint=command, runtime_env=runtime_env(),
                                 metadata={"mmos_stage": stage or "all"})


def status(address: str | None, job_id: str) -> JobInfo:
    with _talking_to(cluster_address(address)) as client:
        info = client.get_job_info(job_id)
    return JobInfo(job_id, str(info.status.value), info.entrypoint, info.message or "")


def logs(address: str | None, job_id: str) -> str:
    with _talking_to(cluster_address(address)) as client:
        return client.get_job_logs(job_id)


def follow(address: str | None, job_id: str, on_logs: Callable[[str], None]) -> str:
    """Hand the job's logs to `on_logs` as they come until it ends; returns its final status (SUCCEEDED,
    FAILED or STOPPED)."""
    async def tail(client: JobSubmissionClient) -> None:
        async for chunk in client.tail_job_logs(job_id):
            on_logs(chunk)

    with _talking_to(cluster_address(address)) as client:
        asyncio.run(tail(client))
        # The log stream closes as the driver exits; the job's status turns terminal a moment later.
        while not (state := client.get_job_status(job_id)).is_terminal():
            time.sleep(STATUS_POLL_S)
    return str(state.value)


@contextlib.contextmanager
def _talking_to(address: str) -> Iterator[JobSubmissionClient]:
    """A job client for `address`, turning Ray's connection and auth failures into SubmitErrors with the fix."""
    import aiohttp
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        yield JobSubmissionClient(address, headers=headers)
    except AuthenticationError as exc:
        where = "sent the token from " + _token_source() if token else "sent no token (none found)"
        raise SubmitError(f"the Ray cluster at {address} rejected the request ({_first_line(exc)}); this client "
                          f"{where}. Fix: set RAY_AUTH_TOKEN to the cluster's token (on the head node: "
                          "`ray get-auth-token`; on KubeRay: the auth_token key of the secret named after the "
                          "RayCluster), or write it to ~/.ray/auth_token") from None
    except (ConnectionError, requests.exceptions.ConnectionError, aiohttp.ClientConnectionError) as exc:
        raise SubmitError(f"cannot reach a Ray cluster at {address} ({_first_line(exc)}). Fix: pass --address (or "
                          "set RAY_ADDRESS) to the head's dashboard URL, e.g. http://127.0.0.1:8265 (start one with "
                          "`ray start --head`; for a remote head forward its port: `ray dashboard ray_cluster.yaml` "
                          "or `kubectl port-forward svc/<cluster>-head-svc 8265`)") from None
    except RuntimeError as exc:  # the job server's answer to a bad request, e.g. an unknown job id
        raise SubmitError(f"the Ray cluster at {address} answered: {_first_line(exc)} "
                          f"(list its jobs with `ray job list --address {address}`)") from None


def _inside_project(config: Path) -> str:
    resolved = Path(config).resolve()
    if not resolved.is_relative_to(PROJECT_ROOT):
        raise SubmitError(f"{config} is outside the project folder {PROJECT_ROOT}, and only that folder is uploaded "
                          f"to the cluster; copy the config into {PROJECT_ROOT / 'configs'} and pass that path")
    return resolved.relative_to(PROJECT_ROOT).as_posix()


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "$RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
