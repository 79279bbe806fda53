"""Serving on vLLM with Ray Serve LLM: Ray's `LLMServer` deployment runs the engine (continuous batching,
streaming, autoscaling), and Ray's OpenAI ingress, extended here with `/v1/solve` and `/health`, answers
HTTP on our own FastAPI app (the guard and the error shapes of `serve.http`).

This is what `ray.serve.llm.build_openai_app` builds, with our ingress class and app in place of its
defaults (its builder takes neither extra routes nor an app).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Request
from ray import serve
from ray.serve.llm import LLMConfig, build_llm_deployment
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest, ErrorResponse
# Ray's own builder makes the model cards with this helper; it has no public name.
from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata

from mmos_ray.config import ServeConfig
from mmos_ray.engines.base import Completion, SamplingParams
from mmos_ray.engines.vllm_engine import DeviceProfile
from mmos_ray.stages.serve.http import ROUTES, check_limits, make_app
from mmos_ray.stages.serve.solve import GenerationError, SolveRequest, Solver


def llm_config(serve_cfg: ServeConfig, model_dir: str, model_id: str, profile: DeviceProfile) -> LLMConfig:
    engine_kwargs: dict[str, Any] = dict(max_model_len=serve_cfg.engine.max_model_len, enforce_eager=profile.enforce_eager,
                                         dtype=profile.dtype, enable_chunked_prefill=profile.chunked_prefill,
                                         enable_prefix_caching=True)
    options: dict[str, Any] = {}
    if profile.device == "cpu":
        # An explicit KV cache size, as in sampling (vllm_engine.py); the replica takes the node's cores
        # for its OpenMP threads, or those of VLLM_CPU_OMP_THREADS_BIND when set (e.g. "0-2": leave a core
        # to the engine-core process, which polls its worker process while a step runs).
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": str(profile.cpu_kv_cache_gib),
               "OMP_NUM_THREADS": profile.actor_options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"]}
        if os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
            env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ["VLLM_CPU_OMP_THREADS_BIND"]
        options["placement_group_config"] = {"bundles": [{"CPU": 1}]}
        options["runtime_env"] = {"env_vars": env}
    else:
        engine_kwargs["gpu_memory_utilization"] = profile.gpu_memory_utilization
    replicas = serve_cfg.replicas
    return LLMConfig(model_loading_config={"model_id": model_id, "model_source": model_dir},
                     engine_kwargs=engine_kwargs,
                     deployment_config={"autoscaling_config": replicas.model_dump()}, **options)


class MathIngress(OpenAiIngress):
    """Ray's OpenAI ingress with this server's limits on every request, `/v1/solve` and `/health`."""

    def __init__(self, llm_deployments, model_cards, *, serve_cfg: dict, limits: dict, lora_paths=None):
        from mmos_ray.sandbox import Limits, Sandbox

        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths)
        self.serve_cfg = ServeConfig.model_validate(serve_cfg)
        self.model_id = next(iter(model_cards))
        self.sandbox = Sandbox(workers=self.serve_cfg.sandbox_workers, limits=Limits(**limits))
        self.solver = Solver(self.serve_cfg, self.model_id, self.sandbox, Limits(**limits))

    async def completions(self, body: CompletionRequest, request: Request):
        check_limits(self.serve_cfg, body.max_tokens, body.n)
        return await super().completions(body, request)

    async def chat(self, body: ChatCompletionRequest, request: Request):
        check_limits(self.serve_cfg, body.max_completion_tokens or body.max_tokens, body.n)
        return await super().chat(body, request)

    async def solve(self, body: SolveRequest):
        await self._get_model_id(body.model)  # 404 for another model's name
        return await self.solver.solve(body, self._generate)

    async def health(self, request: Request):
        stats = request.app.state.guard_stats
        return {"status": "ok", "engine": "vllm", "server": "ray_llm", "model": self.model_id, "running": stats.active,
                "waiting": stats.waiting, "rejected": stats.rejected, "sandbox": self.sandbox.protections}

    async def _generate(self, prompt: str, params: SamplingParams) -> Completion:
        request = CompletionRequest(model=self.model_id, prompt=prompt, max_tokens=params.max_tokens,
                                    temperature=params.temperature, top_p=params.top_p, seed=params.seed,
                                    stop=list(params.stop))
        async for response in self._get_response(body=request, call_method="completions"):
            response = response[0] if isinstance(response, list) else response
            if isinstance(response, ErrorResponse):
                raise GenerationError(response.error.code, response.error.message)
            choice = response.choices[0]
            return Completion(text=choice.text, num_tokens=response.usage.completion_tokens,
                              num_prompt_tokens=response.usage.prompt_tokens,
                              finish_reason="length" if choice.finish_reason == "length" else "stop",
                              stop=choice.stop_reason if isinstance(choice.stop_reason, str) else None)
        raise GenerationError(500, "the engine returned nothing")

    def __del__(self):
        self.sandbox.close()


def build(serve_cfg: ServeConfig, model_dir: str, model_id: str, profile: DeviceProfile, limits: dict):
    config = llm_config(serve_cfg, model_dir, model_id, profile)
    app, _ = make_app(serve_cfg)
    ingress = make_fastapi_ingress(MathIngress, endpoint_map=ROUTES, app=app)
    replicas = serve_cfg.replicas
    options = {
        # The ingress only forwards and waits: no CPU of its own (with one it never schedules beside the
        # engine on a 2-CPU machine). The guard, not Serve's queue, decides what waits and what is turned
        # away, so Serve lets every request through to it.
        "ray_actor_options": {"num_cpus": 0},
        "max_ongoing_requests": serve_cfg.max_concurrent + serve_cfg.max_queued + 16,
        "autoscaling_config": {"min_replicas": max(1, replicas.min_replicas), "max_replicas": replicas.max_replicas,
                               "target_ongoing_requests": replicas.target_ongoing_requests},
    }
    return serve.deployment(ingress, name="MathIngress", **options).bind(
        llm_deployments={model_id: build_llm_deployment(config)},
        model_cards={model_id: to_model_metadata(model_id, config)},
        serve_cfg=serve_cfg.model_dump(mode="json"), limits=limits)
