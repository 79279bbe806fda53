"""The serving guard (size, key, admission) and stream stop-cutting, on a bare ASGI app (no Ray, no model)."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from mmos_ray.config import ServeConfig
from mmos_ray.engines.stepper import StopCutter
from mmos_ray.stages.serve.http import make_app


def slow_app(**limits):
    app, stats = make_app(ServeConfig(**limits))

    @app.post("/v1/completions")
    async def completions():
        await asyncio.sleep(0.5)
        return {"ok": True}

    @app.get("/health")
    async def health():
        return {"running": stats.active, "waiting": stats.waiting}

    return app, stats


async def _send_many(app: FastAPI, n: int, **kwargs):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        async def one(i):
            await asyncio.sleep(0.01 * i)  # in this order
            return await client.post("/v1/completions", json={"prompt": "x"}, **kwargs)
        return await asyncio.gather(*(one(i) for i in range(n)))


def test_full_queue_is_429_and_a_long_wait_is_503_both_with_retry_after():
    app, stats = slow_app(max_concurrent=1, max_queued=1, queue_timeout_s=0.2, retry_after_s=3)
    first, second, third = asyncio.run(_send_many(app, 3))
    assert first.status_code == 200
    assert second.status_code == 503 and second.headers["retry-after"] == "3"  # waited 0.2 s for the slot
    assert third.status_code == 429 and third.headers["retry-after"] == "3"  # the one waiting place was taken
    assert "serve.queue_timeout_s" in second.json()["error"]["message"]
    assert third.json()["error"] == {"message": third.json()["error"]["message"], "type": "rate_limit_error",
                                     "param": None, "code": 429}
    assert stats.rejected["429"] == 1 and stats.rejected["503"] == 1 and stats.active == stats.waiting == 0


def test_queued_requests_run_when_a_slot_frees():
    app, stats = slow_app(max_concurrent=2, max_queued=4, queue_timeout_s=5)
    assert [r.status_code for r in asyncio.run(_send_many(app, 6))] == [200] * 6


def test_api_key_and_body_size():
    app, _ = slow_app(api_key="k", max_request_bytes=1024)
    no_key = asyncio.run(_send_many(app, 1))[0]
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
    assert asyncio.run(_send_many(app, 1, headers={"Authorization": "Bearer k"}))[0].status_code == 200
    assert asyncio.run(_send_many(app, 1, headers={"X-API-Key": "k"}))[0].status_code == 200
    assert asyncio.run(_send_many(app, 1, headers={"Authorization": "Bearer kk"}))[0].status_code == 401

    async def big(chunked: bool):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            body = b'{"prompt": "' + b"x" * 2000 + b'"}'
            if chunked:  # no Content-Length: the guard counts what it reads
                async def parts():
                    for i in range(0, len(body), 100):
                        yield body[i:i + 100]
                return await client.post("/v1/completions", content=parts(), headers={"X-API-Key": "k"})
            return await client.post("/v1/completions", content=body, headers={"X-API-Key": "k"})

    for chunked in (False, True):
        response = asyncio.run(big(chunked))
        assert response.status_code == 400 and "serve.max_request_bytes" in response.json()["error"]["message"]


def test_health_is_open(monkeypatch):
    monkeypatch.setenv("MMOS_SERVE_API_KEY", "from-env")
    app, _ = slow_app()

    async def get():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            return await c.get("/health"), await c.post("/v1/completions", json={})

    health, guarded = asyncio.run(get())
    assert health.status_code == 200 and guarded.status_code == 401  # the key came from the environment


@pytest.mark.parametrize("pieces, expected", [
    (["The ans", "wer ```out", "put\n5"], "The answer "),
    (["abc`", "``", "python"], "abc```python"),
    (["12", "3"], "123"),
    (["x```o", "k"], "x```ok"),
])
def test_stop_cutter_holds_back_only_what_may_start_a_stop(pieces, expected):
    cutter = StopCutter(("```output",))
    assert "".join(cutter.feed(p) for p in pieces) + cutter.flush() == expected
