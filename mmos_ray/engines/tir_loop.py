"""The tool-integrated round loop: generate, run the code, append the output, generate again.

Shared by sampling, evaluation and serving. It needs an `Engine` and an `Executor` (anything with
`submit(codes) -> handle` and `collect(handle) -> [ExecutionResult]`: the Ray sandbox pool in stages,
a local sandbox in the Serve app). The rules of a round are `core.tir`'s.

Generation overlaps with execution. With an engine that takes requests one by one (vLLM:
`add_request` / `step`), every trajectory moves on its own: when its round finishes, its code goes to
the sandbox while the engine keeps stepping the others, and its next round joins the running batch as
soon as the output is back (continuous batching across rounds). With a batch-only engine (HF), the
states are split into groups: while group A's programs run, the engine generates for group B. Either
way the engine waits only when nothing is left to generate but programs are still running.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Protocol, Sequence

from mmos_ray.core.tir import TIRState, apply_generation, apply_observation
from mmos_ray.engines.base import Engine, SamplingParams


class Executor(Protocol):
    def submit(self, codes: list[str]) -> Any: ...

    def ready(self, handle: Any) -> bool: ...

    def collect(self, handle: Any) -> list: ...


@dataclasses.dataclass
class LoopStats:
    wall_s: float = 0.0
    generate_s: float = 0.0  # the engine was busy
    wait_s: float = 0.0  # the engine waited for programs to finish
    generate_calls: int = 0
    programs: int = 0

    @property
    def idle_share(self) -> float:
        return 0.0 if self.wall_s <= 0 else max(0.0, 1.0 - self.generate_s / self.wall_s)


def run_rounds(engine: Engine, executor: Executor, states: Sequence[TIRState],
               sampling: Callable[[TIRState], SamplingParams], max_rounds: int, observation_chars: int = 512,
               compat_observation: bool = False, groups: int = 2) -> LoopStats:
    """Run every state to the end. A state the engine fails on ends with finish_reason "error"."""
    if hasattr(engine, "add_request"):
        return _run_continuous(engine, executor, states, sampling, max_rounds, observation_chars,
                               compat_observation)
    stats = LoopStats()
    started = time.perf_counter()
    parts = [list(states[i::groups]) for i in range(groups) if states[i::groups]]
    in_flight: dict[int, tuple[list[TIRState], Any]] = {}
    while True:
        busy = False
        for g, part in enumerate(parts):
            if g in in_flight:
                waited = time.perf_counter()
                ran, handle = in_flight.pop(g)
                results = executor.collect(handle)
                stats.wait_s += time.perf_counter() - waited
                for state, result in zip(ran, results):
                    apply_observation(state, result.stdout, result.error, max_rounds, observation_chars,
                                      compat_observation)
            ready = [s for s in part if not s.finished and s.pending_code is None]
            if ready:
                busy = True
                _generate(engine, ready, sampling, stats)
            to_run = [s for s in part if s.pending_code is not None]
            if to_run:
                busy = True
                stats.programs += len(to_run)
                in_flight[g] = (to_run, executor.submit([s.pending_code for s in to_run]))
        if not busy and not in_flight:
            break
    stats.wall_s = time.perf_counter() - started
    return stats


def _run_continuous(engine, executor: Executor, states: Sequence[TIRState], sampling, max_rounds: int,
                    observation_chars: int, compat_observation: bool) -> LoopStats:
    stats = LoopStats()
    started = time.perf_counter()
    waiting: dict[str, TIRState] = {}  # request id -> state
    in_flight: list[tuple[list[TIRState], Any]] = []

    def request(state: TIRState) -> None:
        request_id = f"{id(state)}-{state.rounds}"
        try:
            engine.add_request(request_id, state.next_prompt(), sampling(state))
            waiting[request_id] = state
        except Exception as exc:
            _fail([state], exc)

    for state in states:
        request(state)
    while waiting or in_flight:
        if waiting:
            began = time.perf_counter()
            try:
                finished = engine.step()
            except Exception as exc:  # the engine failed mid-batch: end what it held, keep everything else
                _fail(list(waiting.values()), exc)
                engine.abort(list(waiting))
                waiting.clear()
                finished = []
            stats.generate_s += time.perf_counter() - began
            stats.generate_calls += 1
            to_run = []
            for request_id, completion in finished:
                state = waiting.pop(request_id)
                apply_generation(state, completion.text, completion.finish_reason, completion.num_tokens,
                                 completion.num_prompt_tokens)
                if state.pending_code is not None:
                    to_run.append(state)
            if to_run:
                stats.programs += len(to_run)
                in_flight.append((to_run, executor.submit([s.pending_code for s in to_run])))
        still_running = []
        for ran, handle in in_flight:
            if waiting and not executor.ready(handle):
                still_running.append((ran, handle))
                continue
            waited = time.perf_counter()
            results = executor.collect(handle)  # blocks only when the engine has nothing else to do
            if not waiting:
                stats.wait_s += time.perf_counter() - waited
            for state, result in zip(ran, results):
                apply_observation(state, result.stdout, result.error, max_rounds, observation_chars,
                                  compat_observation)
                if not state.finished:
                    request(state)
        in_flight = still_running
    stats.wall_s = time.perf_counter() - started
    return stats


def _generate(engine: Engine, ready: list[TIRState], sampling, stats: LoopStats) -> None:
    began = time.perf_counter()
    prompts = [s.next_prompt() for s in ready]
    params = [sampling(s) for s in ready]
    try:
        completions = engine.generate(prompts, params)
    except Exception:
        # One bad request (e.g. a prompt past the context length) fails the whole call: retry one by one,
        # so only the states that fail on their own end in an error.
        completions = []
        for prompt, p in zip(prompts, params):
            try:
                completions.append(engine.generate([prompt], [p])[0])
            except Exception as exc:
                completions.append(exc)
    stats.generate_s += time.perf_counter() - began
    stats.generate_calls += 1
    for state, completion in zip(ready, completions):
        if isinstance(completion, Exception):
            _fail([state], completion)
            continue
        apply_generation(state, completion.text, completion.finish_reason, completion.num_tokens,
                         completion.num_prompt_tokens)


def _fail(states: list[TIRState], exc: BaseException) -> None:
    for state in states:
        state.finish_reason = "error"
        state.error = f"{type(exc).__name__}: {exc}"[:500]


class LocalExecutor:
    """An Executor over a local `Sandbox` (the Serve app, tests): programs run in a background thread."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tir-exec")

    def submit(self, codes: list[str]) -> Future:
        return self._threads.submit(self.sandbox.execute_many, codes)

    def ready(self, handle: Future) -> bool:
        return handle.done()

    def collect(self, handle: Future) -> list:
        return handle.result()
