"""Stage 07: serve a model over HTTP with Ray Serve.

    app = build_app(cfg.serve, cfg.sample, model_dir)     # a Ray Serve application
    url = start(cfg.serve, cfg.sample, model_dir)         # deploy it on serve.host:serve.port

Routes: the OpenAI API (`/v1/models`, `/v1/completions`, `/v1/chat/completions`, streaming included) and
`/v1/solve` (question in; answer, trajectory, rounds and timings out, the model's code run in the sandbox
with the limits of data construction, through the same trajectory loop and `generation` settings as
sampling and evaluation: `solve`), `/health`. Two ways to run it, same routes, same guard (`http`), both on
127.0.0.1 unless `serve.host` says otherwise:
- Ray Serve LLM (`ray_llm`): Ray's LLMServer runs vLLM's async engine; the default on GPU.
- our deployment (`replica`): the replica runs the engine itself, vLLM stepped in its own process
  (the default on CPU, where vLLM's engine-core and worker processes cost 1.5x the latency) or HF
  transformers (where vLLM is not installed, or `serve.engine.backend: hf`).

For `serve run` / `serve deploy` / a KubeRay RayService, `app_builder` is the import path:
`mmos_ray.stages.serve:app_builder` with args `{config: FILE, model: DIR, set: [KEY=VALUE, ...]}`.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import ray
from ray import serve

from mmos_ray.config import SampleConfig, ServeConfig, load_config
from mmos_ray.engines.base import vllm_available
from mmos_ray.engines.vllm_engine import CPU_PROFILE, GPU_PROFILE
from mmos_ray.stages.serve.http import api_key

logger = logging.getLogger(__name__)

APP_NAME = "mmos"


def build_app(serve_cfg: ServeConfig, sample: SampleConfig, model_dir: str):
    """The Serve application for `model_dir` (call with Ray initialized: the device comes from the cluster)."""
    model_id = serve_cfg.model_id or Path(model_dir).name
    # The key is read here, where the user set it (a job's or a shell's environment), not on the replicas.
    serve_cfg = serve_cfg.model_copy(update={"api_key": api_key(serve_cfg)})
    # The sandbox of /v1/solve keeps the limits of data construction: a request cannot buy more.
    limits = {"timeout_s": sample.timeout_s}
    engine = serve_cfg.engine.resolved_backend()
    if engine == "vllm" and not vllm_available():
        raise RuntimeError("serve.engine.backend is 'vllm' but vLLM is not installed: install the project's `cpu` "
                           "or `gpu` extra, or set serve.engine.backend=hf")
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    profile = GPU_PROFILE if gpus else CPU_PROFILE
    use_ray_llm = serve_cfg.vllm_server == "ray_llm" or (serve_cfg.vllm_server == "auto" and gpus)
    if engine == "vllm" and use_ray_llm:
        from mmos_ray.stages.serve import ray_llm

        return ray_llm.build(serve_cfg, model_dir, model_id, profile, limits)
    from mmos_ray.stages.serve import replica

    # On CPU the replica takes the node's cores for its OpenMP threads (Ray would give a 1-CPU actor one).
    return replica.build(serve_cfg, model_dir, model_id, limits, engine, profile.actor_options, profile)


def start(serve_cfg: ServeConfig, sample: SampleConfig, model_dir: str) -> str:
    """Deploy the app and return its base URL once every replica is ready."""
    serve.start(http_options={"host": serve_cfg.host, "port": serve_cfg.port})
    serve.run(build_app(serve_cfg, sample, model_dir), name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if serve_cfg.host in ("0.0.0.0", "::") else serve_cfg.host
    return f"http://{host}:{serve_cfg.port}"


def stop_on_signals() -> threading.Event:
    """An event that Ctrl-C or SIGTERM sets. Installed before the app starts: the proxy answers as soon as the
    replicas are up, a little before `serve.run` returns, and a signal in between must not hit Ray's handler
    (which aborts the process)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_until_stopped(stop: threading.Event) -> None:
    """Block until `stop` is set (see `stop_on_signals`), then take the app down."""
    while not stop.wait(1.0):
        pass
    logger.info("serve: stopping")
    serve.delete(APP_NAME)


def app_builder(args: dict[str, Any]):
    """The builder for `serve run`, `serve deploy` and KubeRay's RayService (`import_path` in the manifest)."""
    cfg = load_config(args.get("config"), list(args.get("set", [])))
    model = args.get("model") or cfg.serve.engine.model
    if not model:
        raise ValueError("app_builder needs args.model (a model folder) or serve.engine.model in the config")
    from mmos_ray.stages.evaluate import resolve

    return build_app(cfg.serve, cfg.sample, resolve(model, cfg.paths))
