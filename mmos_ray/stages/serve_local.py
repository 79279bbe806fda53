"""Our own Serve deployment: one replica owns the engine (`serve_engines`: vLLM stepped in this process, or
HF transformers) and answers the same routes as the Ray Serve LLM app (`/v1/models`, `/v1/completions`,
`/v1/chat/completions` with streaming, `/v1/solve`, `/health`), behind the same guard. Used with HF
transformers, and for vLLM on CPU, where Ray Serve LLM's multi-process engine costs half again the
latency of the bare engine (benchmarks/serve_latency.py).
"""

from __future__ import annotations

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
from mmos_ray.stages.serve_http import GenerationError, SolveRequest, Solver, check_limits, make_app


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


def build(serve_cfg: ServeConfig, model_dir: str, model_id: str, limits: dict, engine: str,
          actor_options: dict, profile=None):
    """The app: `engine` "vllm" (with `profile`, the device's) or "hf"; `actor_options` for the replica."""
    app, _ = make_app(serve_cfg)
    replicas = serve_cfg.replicas

    @serve.deployment(name="MathServer", ray_actor_options=actor_options,
                      max_ongoing_requests=serve_cfg.max_concurrent + serve_cfg.max_queued + 16,
                      autoscaling_config={"min_replicas": max(1, replicas.min_replicas),
                                          "max_replicas": replicas.max_replicas,
                                          "target_ongoing_requests": replicas.target_ongoing_requests})
    @serve.ingress(app)
    class MathServer:
        def __init__(self):
            from mmos_ray.sandbox import Limits, Sandbox
            from mmos_ray.stages.serve_engines import HFBackend, VLLMBackend

            self.cfg = serve_cfg
            self.model_id = model_id
            self.created = int(time.time())
            self.backend = (VLLMBackend(model_dir, serve_cfg.max_model_len, profile) if engine == "vllm"
                            else HFBackend(model_dir, serve_cfg.max_model_len))
            self.sandbox = Sandbox(workers=serve_cfg.sandbox_workers, limits=Limits(**limits))
            self.solver = Solver(serve_cfg, model_id, self.sandbox, Limits(**limits))

        @app.get("/v1/models")
        async def models(self):
            return {"object": "list", "data": [self._card()]}

        @app.get("/v1/models/{model:path}")
        async def model_data(self, model: str):
            self._check_model(model)
            return self._card()

        @app.post("/v1/completions")
        async def completions(self, body: CompletionBody):
            prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
            return await self._answer(body, prompts, body.max_tokens, "text_completion")

        @app.post("/v1/chat/completions")
        async def chat(self, body: ChatBody):
            prompt = self.backend.chat_prompt([m.model_dump() for m in body.messages])
            return await self._answer(body, [prompt], body.max_completion_tokens or body.max_tokens,
                                      "chat.completion")

        @app.post("/v1/solve")
        async def solve(self, body: SolveRequest):
            if body.model is not None:
                self._check_model(body.model)
            return await self.solver.solve(body, self._generate_one)

        @app.get("/health")
        async def health(self, request: Request):
            stats = request.app.state.guard_stats
            return {"status": "ok", "engine": self.backend.name, "server": "replica", "model": self.model_id, "running": stats.active,
                    "waiting": stats.waiting, "rejected": stats.rejected, "sandbox": self.sandbox.protections}

        # --------------------------------------------------------------------------------------------

        def _card(self) -> dict[str, Any]:
            return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "mmos_ray",
                    "metadata": {"engine": self.backend.name, "max_model_len": self.cfg.max_model_len}}

        def _check_model(self, model: str | None) -> None:
            if model is not None and model != self.model_id:
                raise HTTPException(404, f"model {model!r} is not served here; this server has {self.model_id!r}")

        async def _answer(self, body: _Sampling, prompts: list[str], max_tokens: int | None, kind: str):
            self._check_model(body.model)
            max_tokens = max_tokens or self.cfg.max_tokens
            check_limits(self.cfg, max_tokens, body.n)
            for prompt in prompts:
                length = self.backend.count_tokens(prompt)
                if length + max_tokens > self.cfg.max_model_len:
                    raise HTTPException(400, f"the prompt has {length} tokens; with max_tokens={max_tokens} that is "
                                        f"over the context of {self.cfg.max_model_len} (serve.max_model_len)")
            params = [SamplingParams(temperature=body.temperature, top_p=body.top_p, max_tokens=max_tokens,
                                     stop=body.stops(), seed=None if body.seed is None else body.seed + i)
                      for i in range(body.n)]
            request_id = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}"
            if body.stream:
                if len(prompts) * body.n != 1:
                    raise HTTPException(400, "streaming takes one prompt and n=1 here")
                return StreamingResponse(self._stream(prompts[0], params[0], request_id, kind),
                                         media_type="text/event-stream")
            completions = await self.backend.generate([p for p in prompts for _ in params], params * len(prompts))
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
            async for item in self.backend.stream(prompt, params):
                if isinstance(item, str):
                    yield _sse(request_id, chunk_kind, self.model_id, _delta(kind, item))
                else:
                    final = _delta(kind, "") | {"finish_reason": item.finish_reason}
                    yield _sse(request_id, chunk_kind, self.model_id, final)
            yield "data: [DONE]\n\n"

        async def _generate_one(self, prompt: str, params: SamplingParams) -> Completion:
            # /v1/solve's later rounds grow the prompt: the last round gets what is left of the context.
            room = self.cfg.max_model_len - self.backend.count_tokens(prompt)
            if room < 1:
                raise GenerationError(400, f"the prompt fills the context of {self.cfg.max_model_len} tokens "
                                           "(serve.max_model_len)")
            if params.max_tokens > room:
                params = dataclasses.replace(params, max_tokens=room)
            return (await self.backend.generate([prompt], [params]))[0]

        def __del__(self):
            self.sandbox.close()

    return MathServer.bind()


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
