"""What both serving backends share: the guard in front of every route (body size, API key, admission),
OpenAI-shaped errors, and `/v1/solve` (the tool-integrated loop with the model's code in the sandbox).

The guard is plain ASGI middleware, so it sees each request before FastAPI parses it and holds the
request's slot until the last byte of its response is sent (streams included). Per HTTP replica at most
`max_concurrent` requests run and `max_queued` wait; one more is answered 429, and one that waited
`queue_timeout_s` is answered 503, both with Retry-After. The server itself never falls over from load:
the engine only ever sees `max_concurrent` requests per replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import time
from typing import Any, Awaitable, Callable, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from mmos_ray.config import ServeConfig
from mmos_ray.core.answers import extract_answer
from mmos_ray.core.prompts import PROMPT_VERSIONS, render_prompt, stop_strings
from mmos_ray.core.tir import TIRState, apply_generation, apply_observation
from mmos_ray.engines.base import Completion, SamplingParams

logger = logging.getLogger(__name__)

API_KEY_ENV = "MMOS_SERVE_API_KEY"
OPEN_PATHS = ("/health", "/-/healthz")  # no key, no admission: load balancers and probes must get through
UNQUEUED_PATHS = ("/v1/models",)  # cheap: not counted against the engine's slots


def api_key(serve: ServeConfig) -> str | None:
    return serve.api_key or os.environ.get(API_KEY_ENV) or None


def error_body(status: int, message: str, kind: str | None = None, param: str | None = None) -> dict:
    """The error shape of the OpenAI API, which its clients parse into their exception types."""
    kind = kind or {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                    429: "rate_limit_error", 503: "service_unavailable"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class GuardStats:
    def __init__(self):
        self.active = 0
        self.waiting = 0
        self.rejected = {"400": 0, "401": 0, "429": 0, "503": 0}


class Guard:
    """ASGI middleware: request size, API key, then a slot (or a clean 429/503)."""

    def __init__(self, app, serve: ServeConfig, stats: GuardStats):
        self.app = app
        self.serve = serve
        self.key = api_key(serve)
        self.stats = stats
        self._slots: asyncio.Semaphore | None = None  # made on the server's event loop

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if self.key is not None and not self._authorized(headers):
            return await self._reject(send, 401, "a valid API key is required: send 'Authorization: Bearer KEY'",
                                      {"www-authenticate": "Bearer"})
        body = await self._read_body(headers, receive)
        if body is None:
            return await self._reject(send, 400, f"the request body is larger than {self.serve.max_request_bytes} "
                                      "bytes (serve.max_request_bytes); send a shorter prompt")
        receive = _replay(body, receive)
        if path in UNQUEUED_PATHS:
            return await self.app(scope, receive, send)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.serve.max_concurrent)
        retry = {"retry-after": str(self.serve.retry_after_s)}
        if self._slots.locked() and self.stats.waiting >= self.serve.max_queued:
            return await self._reject(send, 429, f"the server is at capacity ({self.serve.max_concurrent} running, "
                                      f"{self.serve.max_queued} waiting); retry after {self.serve.retry_after_s} s",
                                      retry)
        self.stats.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.serve.queue_timeout_s)
        except asyncio.TimeoutError:
            return await self._reject(send, 503, f"no slot became free within {self.serve.queue_timeout_s} s "
                                      f"(serve.queue_timeout_s); retry after {self.serve.retry_after_s} s", retry)
        finally:
            self.stats.waiting -= 1
        self.stats.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.stats.active -= 1
            self._slots.release()

    def _authorized(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "")
        given = given[7:].strip() if given.lower().startswith("bearer ") else headers.get("x-api-key", "")
        return hmac.compare_digest(given.encode(), self.key.encode())

    async def _read_body(self, headers: dict[str, str], receive) -> bytes | None:
        """The whole body, or None when it is over the limit (read no further than the limit)."""
        limit = self.serve.max_request_bytes
        if headers.get("content-length", "").isdigit() and int(headers["content-length"]) > limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return None
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _reject(self, send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.stats.rejected[str(status)] = self.stats.rejected.get(str(status), 0) + 1
        payload = json.dumps(error_body(status, message)).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the client's disconnect

    return replayed


def install_error_handlers(app: FastAPI) -> None:
    """Validation errors are 400 with the field and the reason (FastAPI's default is 422); every error is
    in the OpenAI shape; an unexpected one is a 500 that names its type, and is logged."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
        param = ".".join(str(p) for p in first if p != "body") or None
        return JSONResponse(error_body(400, "; ".join(problems), param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        status = getattr(exc, "status_code", None)  # Ray Serve LLM's OpenAIHTTPException (e.g. prompt too long)
        if isinstance(status, int) and 400 <= status < 600:
            return JSONResponse(error_body(status, str(getattr(exc, "message", exc))), status_code=status)
        logger.exception("serve: %s %s failed", request.method, request.url.path)
        return JSONResponse(error_body(500, f"internal error ({type(exc).__name__}); see the server log"),
                            status_code=500)


def make_app(serve: ServeConfig) -> tuple[FastAPI, GuardStats]:
    """A FastAPI app behind the guard; the stats object is what `/health` reports."""
    app = FastAPI(title="mmos_ray", description="OpenAI-compatible routes and /v1/solve")
    install_error_handlers(app)
    stats = GuardStats()
    app.add_middleware(Guard, serve=serve, stats=stats)
    app.state.guard_stats = stats  # the same object travels with the app to each replica
    return app, stats


def check_limits(serve: ServeConfig, max_tokens: int | None, n: int | None) -> None:
    """Parameters the engine would accept but this server does not (its own limits): 400 with the key."""
    if max_tokens is not None and max_tokens > serve.max_tokens:
        raise HTTPException(400, f"max_tokens={max_tokens} is over this server's limit of {serve.max_tokens} "
                            "(serve.max_tokens)")
    if n is not None and n > serve.max_n:
        raise HTTPException(400, f"n={n} is over this server's limit of {serve.max_n} (serve.max_n)")


# ---------------------------------------------------------------------------------------------- /v1/solve


class SolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=16000, description="the problem, in plain text or LaTeX")
    model: str | None = None
    max_rounds: int | None = Field(None, ge=1, le=16, description="tool-call rounds; default serve.max_rounds")
    max_tokens: int = Field(512, ge=1, description="new tokens per round")
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    prompt: Literal["train", "fewshot"] | None = Field(None, description="default serve.prompt")


class GenerationError(Exception):
    """The engine refused or failed a request; `status` is its HTTP status (400: e.g. past the context)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


Generate = Callable[[str, SamplingParams], Awaitable[Completion]]


@dataclasses.dataclass
class Solver:
    """Runs one question to its end: generate, run the last code block in the sandbox, append its output,
    repeat (the rules are `core.tir`'s, as in sampling and evaluation)."""

    serve: ServeConfig
    model_id: str
    sandbox: Any  # mmos_ray.sandbox.Sandbox, limits as in data construction
    limits: Any  # mmos_ray.sandbox.Limits
    observation_chars: int = 512

    async def solve(self, request: SolveRequest, generate: Generate) -> dict[str, Any]:
        check_limits(self.serve, request.max_tokens, None)
        style = request.prompt or self.serve.prompt
        max_rounds = request.max_rounds or self.serve.max_rounds
        state = TIRState(prompt=render_prompt(request.question, style), seed=request.seed or 0)
        steps, generate_s, execute_s, started = [], 0.0, 0.0, time.perf_counter()
        while not state.finished:
            params = SamplingParams(temperature=request.temperature, top_p=request.top_p,
                                    max_tokens=request.max_tokens, stop=stop_strings(style),
                                    seed=None if request.seed is None else request.seed + state.rounds)
            began = time.perf_counter()
            try:
                completion = await generate(state.next_prompt(), params)
            except GenerationError as exc:
                if state.rounds == 0:
                    raise HTTPException(exc.status, str(exc)) from exc
                state.finish_reason, state.error = "error", str(exc)[:500]  # e.g. the context is full
                break
            step: dict[str, Any] = {"generated": completion.text, "generate_s": round(time.perf_counter() - began, 4)}
            generate_s += time.perf_counter() - began
            apply_generation(state, completion.text, completion.finish_reason, completion.num_tokens,
                             completion.num_prompt_tokens)
            if state.pending_code is not None:
                code, began = state.pending_code, time.perf_counter()
                result = await asyncio.to_thread(self.sandbox.execute, code, self.limits)
                execute_s += time.perf_counter() - began
                apply_observation(state, result.stdout, result.error, max_rounds, self.observation_chars)
                step.update(code=code, stdout=result.stdout, error=result.error,
                            execute_s=round(time.perf_counter() - began, 4))
            steps.append(step)
        return {
            "object": "solve", "model": self.model_id, "answer": extract_answer(state.text) or None,
            "finish_reason": state.finish_reason, "error": state.error or None, "rounds": state.rounds,
            "executions": state.executions, "trajectory": state.text, "steps": steps,
            "prompt": style, "prompt_version": PROMPT_VERSIONS[style],
            "sampling": {"temperature": request.temperature, "top_p": request.top_p, "max_tokens": request.max_tokens,
                         "seed": request.seed, "max_rounds": max_rounds},
            "usage": {"prompt_tokens": state.num_prompt_tokens, "completion_tokens": state.num_tokens},
            "timings": {"total_s": round(time.perf_counter() - started, 4), "generate_s": round(generate_s, 4),
                        "execute_s": round(execute_s, 4)},
        }
