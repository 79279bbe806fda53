"""Fixtures for the stage tests: the pretrained tiny model, and small benchmark files in its own domain
(the tiny model writes the tool-integrated format for questions shaped like its training text)."""

import json
import random

import pytest

from mmos_ray.config import load_config


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    from mmos_ray.models import build_tiny

    folder = tmp_path_factory.mktemp("models")
    build_tiny(folder / "tiny")
    return folder


def write_problems(data_dir, n, seed=5, long_question=False):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(2, 20)
        who, what = rng.choice(["Ann", "Ben", "Carla", "Dev", "Emma"]), rng.choice(["apples", "books", "marbles"])
        rows.append({"question": f"{who} has {a} {what} and gets {b}. How many {what} does {who} have now?",
                     "answer": f"{a} + {b} = {a + b}\n#### {a + b}"})
    if long_question:
        rows.append({"question": "How many? " + "apples and books " * 400, "answer": "#### 1"})
    (data_dir / "gsm8k").mkdir(parents=True, exist_ok=True)
    (data_dir / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data_dir


def tiny_config(tmp_path, models_dir, *overrides):
    return load_config(None, [
        "sample.engine.model=tiny", "sample.generation.prompt=train", "sample.generation.temperature=0.5", "sample.generation.max_tokens=96",
        "sample.generation.max_rounds=2", "sample.num_samples=2", "sample.batch_size=4",
        "sample.sources=[{dataset: gsm8k, split: test}]", f"paths.data_dir={tmp_path / 'data'}",
        f"paths.models_dir={models_dir}", f"paths.runs_dir={tmp_path / 'runs'}", *overrides])
