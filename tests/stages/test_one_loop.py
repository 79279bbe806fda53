"""One trajectory loop for every caller, end to end: the tiny model at temperature 0 on the same question
through `mmos sample`, `mmos eval` and the Serve `/v1/solve` route (vLLM, real sandbox, local Ray), with the
compat observation format set once (the shared `generation` section) gives the same text three times."""

import json
import socket

import pytest
import requests

from mmos_ray import pipeline, storage
from mmos_ray.config import load_config
from mmos_ray.stages.sample import read_trajectories

pytestmark = pytest.mark.slow

# A question of the tiny model's own domain: it answers with a program, then with the program's output.
QUESTION = "Ann has 23 apples and gets 5. How many apples does Ann have now?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sample_eval_and_solve_give_the_same_trajectory(tmp_path, models_dir, ray_local):
    from ray import serve

    from mmos_ray.stages import serve as serving

    data = tmp_path / "data" / "gsm8k"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text(json.dumps({"question": QUESTION, "answer": "#### 5"}) + "\n")
    cfg = load_config(None, [
        "generation.observation=compat", "generation.prompt=train", "generation.temperature=0",
        "generation.max_tokens=160", "generation.max_rounds=2",
        "sample.engine.model=tiny", "sample.engine.backend=vllm", "sample.engine.max_model_len=1024",
        "sample.num_samples=1", "sample.sources=[{dataset: gsm8k, split: test}]",
        "eval.engine.backend=vllm", "eval.engine.max_model_len=1024", "eval.num_samples=1",
        "serve.engine.backend=vllm", "serve.vllm_server=replica", "serve.engine.max_model_len=1024",
        f"serve.port={free_port()}", f"paths.data_dir={tmp_path / 'data'}", f"paths.models_dir={models_dir}",
        f"paths.runs_dir={tmp_path / 'runs'}"])
    pipeline.sample(cfg)
    sampled = read_trajectories(cfg.layout.sample)[0].text
    tiny = str(models_dir / "tiny")
    pipeline.evaluate(cfg, model=tiny, benchmarks=["gsm8k/test"])
    evaluated = read_trajectories(cfg.run_dir / "eval-tiny" / "model")[0].text
    url = serving.start(cfg.serve, cfg.sample, tiny)
    try:
        served = requests.post(f"{url}/v1/solve", json={"question": QUESTION}, timeout=300).json()["trajectory"]
    finally:
        serve.shutdown()
    assert "```output\n" in sampled, sampled  # the model wrote code and saw its output
    assert sampled == evaluated == served, (sampled, evaluated, served)
