"""Our own Serve deployment: one replica owns the engine (`engines.stepper`: vLLM stepped by one thread in
this process, or HF transformers) and answers the same routes as the Ray Serve LLM app (`/v1/models`,
`/v1/completions`, `/v1/chat/completions` with streaming, `/v1/solve`, `/health`), behind the same guard.
Used with HF transformers, and for vLLM on CPU, where Ray Serve LLM's multi-process engine costs half
again the latency of the bare engine (benchmarks/serve_latency.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from typing import Any, Literal

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from starlette.responses import StreamingResponse

from mmos_ray.config import ServeConfig
from mmos_ray.engines.base import Completion, SamplingParams
from mmos_ray.stages.serve.http import ROUTES, check_limits, make_app
from mmos_ray.stages.serve.solve import GenerationError, SolveRequest, Solver


class _Sampling(BaseModel):
    # OpenAI clients send fields this engine does not use (user, logprobs: null, ...): ignored, not refused.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionBody(_Sampling):
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(16, ge=1)  # the OpenAI default for completions


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatBody(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class MathServer:
    """One replica: the engine, the sandbox of /v1/solve, and the routes (`ROUTES` binds them to the app)."""

    def __init__(self, serve_cfg: dict, model_dir: str, model_id: str, limits: dict, engine: str, profile=None):
        from transformers import AutoTokenizer

        from mmos_ray.engines.base import create_engine
        from mmos_ray.engines.stepper import BatchedEngine, SteppedEngine
        from mmos_ray.sandbox import Limits, Sandbox

        self.cfg = ServeConfig.model_validate(serve_cfg)
        self.model_id = model_id
        self.created = int(time.time())
        max_model_len = self.cfg.engine.max_model_len
        options = {"profile": profile} if engine == "vllm" else {}
        make = lambda: create_engine(engine, model_dir, max_model_len=max_model_len, **options)  # noqa: E731
        self.engine = SteppedEngine(make) if engine == "vllm" else BatchedEngine(make)
        self.engine_name = engine
        # The event loop's own tokenizer: a fast tokenizer used by two threads at once can fail ("Already borrowed").
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.sandbox = Sandbox(workers=self.cfg.sandbox_workers, limits=Limits(**limits))
        self.solver = Solver(self.cfg, model_id, self.sandbox, Limits(**limits))

    async def models(self):
        return {"object": "list", "data": [self._card()]}

    async def model_data(self, model: str):
        self._check_model(model)
        return self._card()

    async def completions(self, body: CompletionBody):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        return await self._answer(body, prompts, body.max_tokens, "text_completion")

    async def chat(self, body: ChatBody):
        prompt = self.tokenizer.apply_chat_template([m.model_dump() for m in body.messages], tokenize=False,
                                                    add_generation_prompt=True)
        return await self._answer(body, [prompt], body.max_completion_tokens or body.max_tokens, "chat.completion")

    async def solve(self, body: SolveRequest):
        if body.model is not None:
            self._check_model(body.model)
        return await self.solver.solve(body, self._generate_one)

    async def health(self, request: Request):
        stats = request.app.state.guard_stats
        return {"status": "ok", "engine": self.engine_name, "server": "replica", "model": self.model_id,
                "running": stats.active, "waiting": stats.waiting, "rejected": stats.rejected,
                "sandbox": self.sandbox.protections}

    # ------------------------------------------------------------------------------------------------

    def _card(self) -> dict[str, Any]:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "mmos_ray",
                "metadata": {"engine": self.engine_name, "max_model_len": self.cfg.engine.max_model_len}}

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_id:
            raise HTTPException(404, f"model {model!r} is not served here; this server has {self.model_id!r}")

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)

    async def _answer(self, body: _Sampling, prompts: list[str], max_tokens: int | None, kind: str):
        self._check_model(body.model)
        max_tokens = max_tokens or self.cfg.max_request_tokens
        check_limits(self.cfg, max_tokens, body.n)
        context = self.cfg.engine.max_model_len
        for prompt in prompts:
            length = self._count_tokens(prompt)
            if length + max_tokens > context:
                raise HTTPException(400, f"the prompt has {length} tokens; with max_tokens={max_tokens} that is "
                                    f"over the context of {context} (serve.engine.max_model_len)")
        params = [SamplingParams(temperature=body.temperature, top_p=body.top_p, max_tokens=max_tokens,
                                 stop=body.stops(), seed=None if body.seed is None else body.seed + i)
                  for i in range(body.n)]
        request_id = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}"
        if body.stream:
            if len(prompts) * body.n != 1:
                raise HTTPException(400, "streaming takes one prompt and n=1 here")
            return StreamingResponse(self._stream(prompts[0], params[0], request_id, kind),
                                     media_type="text/event-stream")
        completions = await _all(self.engine.generate, [(p, s) for p in prompts for s in params])
        choices = [_choice(kind, i, c) for i, c in enumerate(completions)]
        usage = {"prompt_tokens": sum(c.num_prompt_tokens for c in completions[::body.n]),
                 "completion_tokens": sum(c.num_tokens for c in completions)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": request_id, "object": kind, "created": int(time.time()), "model": self.model_id,
                "choices": choices, "usage": usage}

    async def _stream(self, prompt: str, params: SamplingParams, request_id: str, kind: str):
        chunk_kind = kind + ".chunk" if kind == "chat.completion" else kind
        if kind == "chat.completion":
            yield _sse(request_id, chunk_kind, self.model_id, {"index": 0, "delta": {"role": "assistant"},
                                                                "finish_reason": None})
        async for item in self.engine.stream(prompt, params):
            if isinstance(item, str):
                yield _sse(request_id, chunk_kind, self.model_id, _delta(kind, item))
            else:
                final = _delta(kind, "") | {"finish_reason": item.finish_reason}
                yield _sse(request_id, chunk_kind, self.model_id, final)
        yield "data: [DONE]\n\n"

    async def _generate_one(self, prompt: str, params: SamplingParams) -> Completion:
        # /v1/solve's later rounds grow the prompt: the last round gets what is left of the context.
        context = self.cfg.engine.max_model_len
        room = context - self._count_tokens(prompt)
        if room < 1:
            raise GenerationError(400, f"the prompt fills the context of {context} tokens "
                                       "(serve.engine.max_model_len)")
        if params.max_tokens > room:
            params = dataclasses.replace(params, max_tokens=room)
        return await self.engine.generate(prompt, params)

    def __del__(self):
        self.sandbox.close()


def build(serve_cfg: ServeConfig, model_dir: str, model_id: str, limits: dict, engine: str,
          actor_options: dict, profile=None):
    """The app: `engine` "vllm" (with `profile`, the device's) or "hf"; `actor_options` for the replica."""
    app, _ = make_app(serve_cfg)
    routed = type("MathServer", (MathServer,),
                  {name: route(app)(getattr(MathServer, name)) for name, route in ROUTES.items()})
    replicas = serve_cfg.replicas
    deployment = serve.deployment(
        serve.ingress(app)(routed), name="MathServer", ray_actor_options=actor_options,
        max_ongoing_requests=serve_cfg.max_concurrent + serve_cfg.max_queued + 16,
        autoscaling_config={"min_replicas": max(1, replicas.min_replicas), "max_replicas": replicas.max_replicas,
                            "target_ongoing_requests": replicas.target_ongoing_requests})
    return deployment.bind(serve_cfg.model_dump(mode="json"), model_dir, model_id, limits, engine, profile)


async def _all(generate, requests: list[tuple[str, SamplingParams]]) -> list[Completion]:
    """Every request at once; when one fails (or the client goes away) the others are dropped too."""
    tasks = [asyncio.ensure_future(generate(prompt, params)) for prompt, params in requests]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


def _choice(kind: str, index: int, c: Completion) -> dict[str, Any]:
    if kind == "chat.completion":
        return {"index": index, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
    return {"index": index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}


def _delta(kind: str, text: str) -> dict[str, Any]:
    if kind == "chat.completion":
        return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": None}
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": None}


def _sse(request_id: str, kind: str, model: str, choice: dict[str, Any]) -> str:
    payload = {"id": request_id, "object": kind, "created": int(time.time()), "model": model, "choices": [choice]}
    return f"data: {json.dumps(payload)}\n\n"
