"""Serving latency: the same requests through the Serve endpoint and through the bare engine, one run.

    .venv/bin/python benchmarks/serve_latency.py [--requests 40] [--max-tokens 32] [--model smollm2]
                                                 [--server auto|replica|ray_llm]

(a) the bare engine: `VLLMEngine.generate` in a child process, one request at a time; then, with that
    process gone, (b) the endpoint: `mmos`'s Serve app on vLLM (`serve.vllm_server`: auto is what `mmos serve`
    runs on this machine: our replica on CPU, Ray Serve LLM on GPU), with the guard and an API key, on
    127.0.0.1: the same prompts and parameters as HTTP POSTs to /v1/completions, one at a time, timed at
    the client (HTTP, proxy, guard, engine and back). Greedy, so both produce the same tokens;
    `same_tokens` counts the requests where they did. Three warm-up requests on each side are not timed.
(c) the engine's deployment alone, by handle (Ray Serve LLM's LLMServer, or our replica's completions
    method without HTTP), so that the endpoint's cost splits into the engine as served and the HTTP path.
Last line: {"engine_p50_s", "engine_p95_s", "endpoint_p50_s", "endpoint_p95_s", "overhead_ratio",
"replica_p50_s", "http_overhead_ratio", "server", ...}; overhead_ratio = endpoint p50 / engine p50,
http_overhead_ratio = endpoint p50 / replica p50. Target (issue 9): overhead_ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmos_ray.config import load_config  # noqa: E402
from mmos_ray.core.prompts import train_prompt  # noqa: E402
from mmos_ray.engines.base import SamplingParams  # noqa: E402

WARMUP = 3
KEY = "bench-key"


def questions(data_dir: str | None, n: int) -> list[str]:
    from mmos_ray.loaders import default_data_dir, load_problems

    folder = Path(data_dir) if data_dir else default_data_dir()
    if folder is not None and folder.is_dir():
        return [p.question for p in load_problems("gsm8k", "test", data_dir=folder, limit=n)]
    return [f"Ann has {10 + i} apples and buys {i % 7 + 2} more. How many apples does she have?" for i in range(n)]


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run_engine(model: str, prompts: list[str], params: SamplingParams, max_model_len: int):
    from mmos_ray.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(model, max_model_len=max_model_len)
    for prompt in prompts[:WARMUP]:
        engine.generate([prompt], [params])
    seconds, texts = [], []
    for prompt in prompts[WARMUP:]:
        started = time.perf_counter()
        texts.append(engine.generate([prompt], [params])[0].text)
        seconds.append(time.perf_counter() - started)
    return seconds, texts


def run_endpoint(cfg, model: str, prompts: list[str], params: SamplingParams):
    import ray
    import requests
    from ray import serve

    from mmos_ray.stages import serve as stage
    from mmos_ray.cluster.resources import ensure_ray

    ensure_ray(dashboard=cfg.serve.dashboard)  # the local Ray `mmos serve` starts
    try:
        url = stage.start(cfg.serve, cfg.sample, model)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {KEY}"
        body = {"model": "bench", "max_tokens": params.max_tokens, "temperature": params.temperature,
                "stop": list(params.stop)}

        def post(prompt: str) -> str:
            response = session.post(f"{url}/v1/completions", json={**body, "prompt": prompt}, timeout=300)
            response.raise_for_status()
            return response.json()["choices"][0]["text"]

        for prompt in prompts[:WARMUP]:
            post(prompt)
        seconds, texts = [], []
        for prompt in prompts[WARMUP:]:
            started = time.perf_counter()
            texts.append(post(prompt))
            seconds.append(time.perf_counter() - started)
        replica = time_replica(prompts, body)
        serve.shutdown()
        return seconds, texts, replica
    finally:
        ray.shutdown()


def time_replica(prompts: list[str], body: dict) -> list[float]:
    """The engine's deployment alone, called by handle from here: what the endpoint costs on top of it is
    the HTTP path (proxy, guard, and for Ray Serve LLM its ingress)."""
    import asyncio

    from ray import serve

    names = serve.status().applications["mmos"].deployments
    if "MathServer" in names:  # our replica: its route method, without HTTP
        from mmos_ray.stages.serve.replica import CompletionBody

        handle = serve.get_deployment_handle("MathServer", app_name="mmos")

        async def call(prompt: str) -> None:
            await handle.completions.remote(CompletionBody(**body, prompt=prompt))
    else:
        from ray.serve.llm.openai_api_models import CompletionRequest

        handle = serve.get_deployment_handle("LLMServer:bench", app_name="mmos").options(stream=True)

        async def call(prompt: str) -> None:
            async for _ in handle.completions.remote(CompletionRequest(**body, prompt=prompt), None):
                pass

    async def timed() -> list[float]:
        seconds = []
        for prompt in prompts[WARMUP:]:
            started = time.perf_counter()
            await call(prompt)
            seconds.append(time.perf_counter() - started)
        return seconds

    return asyncio.run(timed())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="tiny, smollm2 or a model folder")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--data-dir", default=None, help="benchmark data (default ../shared/data when present)")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--engine-cores", default=None, help="bind the engine's threads to these cores on both "
                        "sides (VLLM_CPU_OMP_THREADS_BIND, e.g. 0 or 0-2); default: all cores")
    parser.add_argument("--server", default="auto", choices=["auto", "replica", "ray_llm"],
                        help="who runs vLLM behind the endpoint (serve.vllm_server); auto: as `mmos serve` here")
    args = parser.parse_args()
    if args.engine_cores:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.engine_cores
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(None, [f"paths.models_dir={args.models_dir}", "serve.engine.backend=vllm", f"serve.port={port}",
                             f"serve.vllm_server={args.server}",
                             f"serve.api_key={KEY}", "serve.model_id=bench", "serve.engine.max_model_len=1024"])
    from mmos_ray.stages.evaluate import resolve

    model = resolve(args.model, cfg.paths)
    prompts = [train_prompt(q) for q in questions(args.data_dir, args.requests + WARMUP)]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, stop=("```output",))
    # The bare engine runs in a child that exits before Ray starts: an engine deleted in this process leaves
    # threads behind (torch.distributed's gloo loops poll, ~3% of a core), and they would tax the endpoint.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        engine_s, engine_texts = child.submit(run_engine, model, prompts, params, cfg.serve.engine.max_model_len).result()
    endpoint_s, endpoint_texts, replica_s = run_endpoint(cfg, model, prompts, params)
    engine_p50, engine_p95 = percentiles(engine_s)
    endpoint_p50, endpoint_p95 = percentiles(endpoint_s)
    replica_p50, _ = percentiles(replica_s)
    server = args.server if args.server != "auto" else ("ray_llm" if _has_gpu() else "replica")
    report = {"requests": len(engine_s), "max_tokens": args.max_tokens, "model": args.model, "cpus": os.cpu_count(),
              "server": server,
              "engine_cores": args.engine_cores or "all",
              "same_tokens": sum(a == b for a, b in zip(engine_texts, endpoint_texts)),
              "engine_p50_s": round(engine_p50, 4), "engine_p95_s": round(engine_p95, 4),
              "endpoint_p50_s": round(endpoint_p50, 4), "endpoint_p95_s": round(endpoint_p95, 4),
              "replica_p50_s": round(replica_p50, 4), "http_overhead_ratio": round(endpoint_p50 / replica_p50, 3),
              "overhead_ratio": round(endpoint_p50 / engine_p50, 3)}
    print(json.dumps({"engine_s": [round(s, 4) for s in engine_s], "endpoint_s": [round(s, 4) for s in endpoint_s]}),
          file=sys.stderr)
    print(json.dumps(report))


def _has_gpu() -> bool:
    from mmos_ray.engines.vllm_engine import detect_profile

    return detect_profile().device == "cuda"


if __name__ == "__main__":
    main()
