"""Synthetic sampled trajectories for the data-construction stages: real GSM8K training problems, with
programs that are right, wrong, duplicated, alpha-renamed and structurally different. Their recorded
outputs are what the programs really print, so verification can check them."""

from __future__ import annotations

import random
from pathlib import Path

from mmos_ray import storage
from mmos_ray.core.records import Problem, Trajectory

NAMES = ["total", "result", "answer", "value", "amount", "count"]


def _program(kind: int, gold: int, name: str, rng: random.Random) -> str:
    part = rng.randint(0, abs(gold)) if gold else 0
    if kind == 0:
        return f"{name} = {gold}\nprint({name})"
    if kind == 1:
        return f"def solution():\n    {name} = {part} + {gold - part}\n    return {name}\n\nprint(solution())"
    if kind == 2:
        return f"{name} = {gold} * 2\n{name} = {name} // 2\nprint({name})"
    return f"parts = [{part}, {gold - part}]\nprint(sum(parts))"


def trajectory_text(code: str, output: str, answer: str, prose: str = "Let's compute it.") -> str:
    return f"{prose}\n```python\n{code}\n```\n```output\n{output}\n```\nThe answer is $\\boxed{{{answer}}}$."


def make_run(run_dir: Path, problems: list[Problem], samples: int, seed: int = 0) -> None:
    """Write `00_prepare/problems.parquet` and `01_sample/part-*.parquet` for these problems."""
    rng = random.Random(seed)
    layout = storage.RunLayout(run_dir)
    storage.write_parquet(layout.problems, [p.to_row() for p in problems])
    rows = []
    for problem in problems:
        gold = int(problem.gold)
        for i in range(samples):
            wrong = rng.random() < 0.25
            value = gold + 1 if wrong else gold
            code = _program(rng.randrange(4), value, rng.choice(NAMES), rng)
            rows.append(Trajectory(problem_id=problem.id, sample_idx=i, seed=i, model="synthetic",
                                   prompt_version="mmos-train-v1", text=trajectory_text(code, str(value), str(value)),
                                   rounds=2, finish_reason="boxed", num_tokens=50, num_prompt_tokens=20,
                                   executions=1).to_row())
    rng.shuffle(rows)  # parts hold rows in no particular order, as concurrent sampling writes them
    for start in range(0, len(rows), 500):
        storage.write_parquet(storage.part_file(layout.sample, f"{start // 500:05d}"), rows[start:start + 500])
