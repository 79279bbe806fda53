"""Stage 07 on CPU: the Serve app for the tiny model, on vLLM (in our replica and in Ray Serve LLM) and on HF
transformers, queried with the official `openai` client and with plain HTTP, on 127.0.0.1 only."""

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from mmos_ray.config import load_config

pytestmark = pytest.mark.slow

KEY = "test-key-123"
QUESTION = "Ann has 23 apples and gets 5. How many apples does Ann have now?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, engine: str, runner: str, model_id: str):
        self.url, self.engine, self.runner, self.model_id = url, engine, runner, model_id
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)

    def post(self, path, body=None, key=KEY, **kwargs):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=120, **kwargs)


# (engine, who runs it): vLLM in our replica (the CPU default), vLLM in Ray Serve LLM, HF in our replica.
@pytest.fixture(scope="module", params=[("vllm", "replica"), ("vllm", "ray_llm"), ("hf", "replica")],
                ids=["vllm-replica", "vllm-ray_llm", "hf"])
def server(request, ray_local, models_dir):
    from ray import serve

    from mmos_ray.stages import serve as stage

    engine, runner = request.param
    cfg = load_config(None, [f"paths.models_dir={models_dir}", f"serve.engine.backend={engine}",
                             f"serve.vllm_server={runner}", f"serve.port={free_port()}", f"serve.api_key={KEY}", "serve.max_concurrent=4",
                             "serve.max_queued=4", "serve.engine.max_model_len=1024", "serve.max_request_tokens=256",
                             "serve.max_n=4", "serve.generation.max_rounds=2", "serve.max_request_bytes=8192",
                             "serve.model_id=tiny-math"])
    url = stage.start(cfg.serve, cfg.sample, str(models_dir / "tiny"))
    yield Server(url, engine, runner, "tiny-math")
    serve.shutdown()


def prompt(question=QUESTION):
    return f"<|user|>\n{question}\n<|assistant|>\n"


def test_binds_loopback_and_lists_the_model(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert [m.id for m in server.client.models.list().data] == ["tiny-math"]
    assert server.client.models.retrieve("tiny-math").id == "tiny-math"


def test_completions_with_n_and_seed(server):
    out = server.client.completions.create(model="tiny-math", prompt=prompt(), max_tokens=48, temperature=0.8,
                                           n=2, seed=3, stop=["```output"])
    assert len(out.choices) == 2 and all(c.finish_reason in ("stop", "length") for c in out.choices)
    assert all("```output" not in c.text for c in out.choices)
    assert out.usage.completion_tokens > 0 and out.usage.prompt_tokens > 5


def test_chat_completions(server):
    out = server.client.chat.completions.create(model="tiny-math", messages=[{"role": "user", "content": QUESTION}],
                                                max_tokens=32, temperature=0)
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content
    assert out.usage.completion_tokens > 0


def test_streaming_gives_the_same_text_as_one_response(server):
    common = dict(model="tiny-math", prompt=prompt(), max_tokens=64, temperature=0, stop=["```output"])
    whole = server.client.completions.create(**common).choices[0].text
    chunks = list(server.client.completions.create(**common, stream=True))
    assert len(chunks) > 2 and "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]

    messages = [{"role": "user", "content": QUESTION}]
    whole = server.client.chat.completions.create(model="tiny-math", messages=messages, max_tokens=24,
                                                  temperature=0).choices[0].message.content
    chunks = list(server.client.chat.completions.create(model="tiny-math", messages=messages, max_tokens=24,
                                                        temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_a_stream_the_client_drops_frees_its_slot(server):
    """A client that reads one chunk and hangs up: the slot is free again, the server goes on answering."""
    body = {"model": "tiny-math", "prompt": prompt(), "max_tokens": 256, "temperature": 0.9, "seed": 1,
            "stream": True}
    with server.post("/v1/completions", body, stream=True) as response:
        assert response.status_code == 200
        assert next(response.iter_lines(), b"").startswith(b"data: ")
    deadline = time.monotonic() + 60
    while requests.get(f"{server.url}/health", timeout=30).json()["running"] != 0:
        assert time.monotonic() < deadline, "the dropped stream still holds its slot"
        time.sleep(0.5)
    assert server.client.completions.create(model="tiny-math", prompt=prompt(), max_tokens=4).choices


def test_solve_runs_the_models_code_in_the_sandbox(server):
    response = server.post("/v1/solve", {"question": QUESTION, "max_tokens": 96})
    assert response.status_code == 200, response.text
    out = response.json()
    # The tiny model answers its own kind of question with a program: it ran, and its output was fed back.
    assert out["executions"] >= 1 and out["steps"][0]["code"].startswith("def solution")
    assert out["steps"][0]["stdout"].strip().isdigit() and out["steps"][0]["error"] == ""
    assert f"```output\n{out['steps'][0]['stdout'].strip()}\n```" in out["trajectory"]
    assert out["rounds"] == len(out["steps"]) <= 2 and out["finish_reason"] in ("boxed", "no_code", "max_rounds", "length")
    assert out["prompt_version"] == "mmos-train-v1" and out["sampling"]["max_rounds"] == 2
    assert out["timings"]["execute_s"] > 0 and out["timings"]["total_s"] >= out["timings"]["generate_s"]
    assert out["model"] == "tiny-math"


def test_health_needs_no_key_and_reports_the_sandbox(server):
    out = requests.get(f"{server.url}/health", timeout=30).json()
    assert out["status"] == "ok" and out["model"] == "tiny-math"
    assert (out["engine"], out["server"]) == (server.engine, server.runner)
    assert "network" in out["sandbox"]


def test_api_key_is_required(server):
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    response = server.post("/v1/solve", {"question": QUESTION}, key=None)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["error"]["message"]


@pytest.mark.parametrize("body, reason", [
    ({"max_tokens": 100000}, "max_tokens=100000 is over this server's limit of 256"),
    ({"n": 9}, "n=9 is over this server's limit of 4"),
    ({"max_tokens": "many"}, "max_tokens"),
    ({"temperature": -1}, "temperature"),
])
def test_bad_parameters_are_400_with_the_reason(server, body, reason):
    response = server.post("/v1/completions", {"model": "tiny-math", "prompt": "Hi", **body})
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]["message"]


def test_bad_requests_are_400_or_404(server):
    with pytest.raises(openai.BadRequestError, match="over this server's limit"):
        server.client.chat.completions.create(model="tiny-math", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=1000)
    too_big = server.post("/v1/solve", {"question": "x" * 9000})
    assert too_big.status_code == 400 and "serve.max_request_bytes" in too_big.json()["error"]["message"]
    empty = server.post("/v1/solve", {"question": ""})
    assert empty.status_code == 400 and "question" in empty.json()["error"]["message"]
    unknown = server.post("/v1/solve", {"question": QUESTION, "temprature": 0.5})
    assert unknown.status_code == 400 and "temprature" in unknown.json()["error"]["message"]
    long_prompt = server.post("/v1/completions", {"model": "tiny-math", "prompt": "9 " * 1500, "max_tokens": 8})
    assert long_prompt.status_code == 400, long_prompt.text
    assert server.post("/v1/solve", {"question": QUESTION, "model": "other"}).status_code == 404
    not_json = requests.post(f"{server.url}/v1/completions", data=b"{not json", timeout=30,
                             headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert not_json.status_code == 400


def test_bounded_load_is_answered_or_cleanly_rejected(server):
    """200 requests, 32 at a time, on 127.0.0.1: each is answered, or turned away with 429/503 + Retry-After."""
    def one(i):
        path, body = ("/v1/solve", {"question": QUESTION, "max_tokens": 48}) if i % 4 == 0 else \
            ("/v1/completions", {"model": "tiny-math", "prompt": prompt(), "max_tokens": 32, "temperature": 0.5,
                                 "seed": i})
        try:
            response = server.post(path, body)
        except requests.RequestException as exc:  # a dropped connection would be a crash of the server
            return ("exception", repr(exc))
        return (response.status_code, response.headers.get("retry-after"), response.text[:200])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(200)))
    assert time.monotonic() - started < 600
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 429, 503}, [r for r in results if r[0] not in (200, 429, 503)][:3]
    assert statuses.count(200) >= 8 and statuses.count(429) >= 1  # 32 at once against 4 running + 4 waiting
    for status, retry_after, text in results:
        if status != 200:
            assert retry_after == "1" and json.loads(text)["error"]["code"] == status
    # Still up and answering.
    assert requests.get(f"{server.url}/health", timeout=30).json()["running"] == 0
    assert server.client.completions.create(model="tiny-math", prompt=prompt(), max_tokens=4).choices


def test_app_builder_for_serve_deploy_and_rayservice(ray_local, models_dir):
    from ray.serve.deployment import Application

    from mmos_ray.stages.serve import app_builder

    app = app_builder({"model": str(models_dir / "tiny"), "set": ["serve.engine.backend=hf", "serve.replicas.max_replicas=3"]})
    assert isinstance(app, Application)
    with pytest.raises(ValueError, match="args.model"):
        app_builder({})
