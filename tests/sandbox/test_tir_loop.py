"""The one trajectory loop (`engines.trajectory`) with a scripted engine (a fake is fine here: the loop, not
the model, is under test) and the real sandbox: code that raises, times out, or never closes its block;
limits; overlap; and the same trajectory from each caller (sampling, evaluation, serving)."""

import asyncio

import pytest

from mmos_ray.config import GenerationConfig, load_config
from mmos_ray.core.records import Problem
from mmos_ray.core.tir import LIMIT_NOTE, TIRState
from mmos_ray.engines.base import Completion
from mmos_ray.engines.stepper import BatchedEngine
from mmos_ray.engines.trajectory import run_all
from mmos_ray.sandbox import Limits, Sandbox


class ScriptedEngine:
    """Replies from a script keyed by the prompt's first line; logs every batch it is given."""

    name, model = "scripted", "script"

    def __init__(self, script):
        self.script = {key: list(replies) for key, replies in script.items()}
        self.calls = []

    def generate(self, prompts, params):
        keys = [p.splitlines()[0] for p in prompts]
        self.calls.append(keys)
        for key in keys:  # like a real engine, a bad request fails the call before anything is produced
            if isinstance(self.script[key][0], Exception):
                raise self.script[key].pop(0)
        out = []
        for key in keys:
            reply = self.script[key].pop(0)
            text, finish = reply if isinstance(reply, tuple) else (reply, "stop")
            out.append(Completion(text=text, num_tokens=len(text.split()), num_prompt_tokens=5, finish_reason=finish))
        return out


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, limits=Limits(timeout_s=1.0)) as sandbox:
        yield sandbox


def executor(sandbox):
    return lambda code: asyncio.to_thread(sandbox.execute, code)


def run(script, sandbox, max_rounds=3, observation="full"):
    engine = BatchedEngine(lambda: ScriptedEngine(script))
    states = [TIRState(prompt=f"{key}\n") for key in script]
    generation = GenerationConfig(max_rounds=max_rounds, observation=observation)
    asyncio.run(run_all(states, engine.generate, executor(sandbox), generation))
    engine.close()
    return {s.prompt.strip(): s for s in states}, engine.engine


def test_code_that_raises_times_out_or_never_closes(sandbox):
    states, _ = run({
        "raises": ["```python\nprint(1 / 0)\n```\n", "It failed, so $\\boxed{0}$."],
        "loops": ["```python\nwhile True:\n    pass\n```", "Too slow: $\\boxed{?}$"],
        "unclosed": [("```python\nprint('never closed')", "length")],
        "eos": ["I will not write code."],
    }, sandbox)
    assert "```output\nZeroDivisionError: division by zero\n```" in states["raises"].text
    assert states["raises"].finish_reason == "boxed" and states["raises"].rounds == 2
    assert "TimeoutError" in states["loops"].text and states["loops"].executions == 1
    assert states["unclosed"].finish_reason == "length" and states["unclosed"].executions == 0
    assert states["eos"].finish_reason == "no_code"


def test_last_round_ends_with_the_limit_note(sandbox):
    states, _ = run({"again": ["```python\nprint(1)\n```"] * 2}, sandbox, max_rounds=2)
    state = states["again"]
    assert state.finish_reason == "max_rounds" and state.text.endswith(LIMIT_NOTE) and state.executions == 2
    assert state.text.count("```output\n1\n```") == 2


def test_only_the_last_block_runs_and_output_is_appended(sandbox):
    states, _ = run({"two": ["```python\nprint('first')\n```\nthen\n```python\nprint('second')\n```",
                             "$\\boxed{2}$"]}, sandbox)
    assert "```output\nsecond\n```" in states["two"].text and "```output\nfirst" not in states["two"].text


def test_the_observation_format_comes_from_the_generation_config(sandbox):
    script = {"lines": ["```python\nfor i in range(3):\n    print(i)\n```", "$\\boxed{2}$"]}
    full, _ = run(script, sandbox)
    compat, _ = run(script, sandbox, observation="compat")
    assert "```output\n0\n1\n2\n```" in full["lines"].text
    assert "```output\n2\n```" in compat["lines"].text


def test_an_engine_failure_ends_only_that_trajectory(sandbox):
    engine_error = ValueError("prompt too long")
    states, _ = run({"good": ["$\\boxed{1}$"], "bad": [engine_error, engine_error]}, sandbox)
    assert states["good"].finish_reason == "boxed"
    assert states["bad"].finish_reason == "error" and "prompt too long" in states["bad"].error


def test_next_rounds_join_while_others_generate(sandbox):
    # Four trajectories start in one batch; their second rounds are batched again once their code ran.
    script = {f"p{i}": ["```python\nprint(1)\n```", "$\\boxed{1}$"] for i in range(4)}
    states, engine = run(script, sandbox)
    assert all(s.finish_reason == "boxed" and s.executions == 1 for s in states.values())
    assert engine.calls[0] == ["p0", "p1", "p2", "p3"]
    assert sorted(key for call in engine.calls[1:] for key in call) == ["p0", "p1", "p2", "p3"]


def test_one_engine_serves_several_callers_at_once(sandbox):
    import threading

    from mmos_ray.engines.trajectory import EventLoopThread

    script = {f"a{i}": ["```python\nprint(1)\n```", "$\\boxed{1}$"] for i in range(3)}
    script.update({f"b{i}": ["$\\boxed{2}$"] for i in range(3)})
    events = EventLoopThread()
    engine = BatchedEngine(lambda: ScriptedEngine(script))
    batches = {name: [TIRState(prompt=f"{name}{i}\n") for i in range(3)] for name in "ab"}
    generation = GenerationConfig(max_rounds=3)
    threads = [threading.Thread(target=events.run, args=(run_all(states, engine.generate, executor(sandbox),
                                                                 generation),))
               for states in batches.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    events.close()
    assert all(s.finish_reason == "boxed" for states in batches.values() for s in states)
    assert [s.executions for s in batches["a"]] == [1, 1, 1]


def test_sampling_evaluation_and_serving_run_the_same_trajectory(sandbox):
    """The loop as each caller drives it: stage 01's rows, the eval stage's generation for a model, and
    /v1/solve, with the compat observation format set once (the shared `generation` section)."""
    from mmos_ray.stages.evaluate import generation_for
    from mmos_ray.stages.sample import sample_row, sample_rows
    from mmos_ray.stages.serve.solve import SolveRequest, Solver

    cfg = load_config(None, ["generation.observation=compat", "generation.prompt=train", "generation.max_rounds=3"])
    problem = Problem(id="t/test/0", dataset="t", split="test", question="What is 3 + 4?", gold="7")
    replies = ["```python\nfor i in range(8):\n    print(i)\n```", "So the answer is $\\boxed{7}$."]

    def scripted():
        answers = iter(replies)

        async def generate(prompt, params):
            text = next(answers)
            return Completion(text=text, num_tokens=len(text.split()), num_prompt_tokens=5, finish_reason="stop")
        return generate

    async def as_sampling(generation):
        states = await sample_rows([sample_row(problem, 0, generation)], scripted(), executor(sandbox), generation)
        return states[0].text

    sampled = asyncio.run(as_sampling(cfg.sample.generation))
    evaluated = asyncio.run(as_sampling(generation_for(cfg.eval, cfg.eval.trained_prompt)))
    solver = Solver(cfg.serve, "scripted", sandbox, Limits(timeout_s=1.0))
    served = asyncio.run(solver.solve(SolveRequest(question=problem.question), scripted()))["trajectory"]
    assert "```output\n7\n```" in sampled  # compat: the last line only
    assert sampled == evaluated == served
