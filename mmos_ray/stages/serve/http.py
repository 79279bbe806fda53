"""What both serving backends share: the guard in front of every route (body size, API key, admission),
OpenAI-shaped errors and the server's own limits (`/v1/solve` is in `solve`).

The guard is plain ASGI middleware, so it sees each request before FastAPI parses it and holds the
request's slot until the last byte of its response is sent (streams included). Per HTTP replica at most
`max_concurrent` requests run and `max_queued` wait; one more is answered 429, and one that waited
`queue_timeout_s` is answered 503, both with Retry-After. The server itself never falls over from load:
the engine only ever sees `max_concurrent` requests per replica.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from mmos_ray.config import ServeConfig

logger = logging.getLogger(__name__)

API_KEY_ENV = "MMOS_SERVE_API_KEY"
# The routes both deployments answer, by the method that answers each (Ray's OpenAI ingress keeps its own
# for models, completions and chat; no embeddings, transcriptions or scoring for a math reasoner).
ROUTES: dict[str, Callable[[FastAPI], Callable]] = {
    "models": lambda app: app.get("/v1/models"),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "completions": lambda app: app.post("/v1/completions"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "solve": lambda app: app.post("/v1/solve"),
    "health": lambda app: app.get("/health"),
}
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
    if max_tokens is not None and max_tokens > serve.max_request_tokens:
        raise HTTPException(400, f"max_tokens={max_tokens} is over this server's limit of {serve.max_request_tokens} "
                            "(serve.max_request_tokens)")
    if n is not None and n > serve.max_n:
        raise HTTPException(400, f"n={n} is over this server's limit of {serve.max_n} (serve.max_n)")
