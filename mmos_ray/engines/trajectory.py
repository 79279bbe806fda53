"""The one tool-integrated trajectory loop: generate, run the last code block in the sandbox, append its
output, generate again. Sampling, evaluation and serving all run trajectories through `run_trajectory`,
with the rules of one `GenerationConfig` (sampling parameters, stop strings, rounds, observation format).

    state = TIRState(prompt=render_prompt(question, generation.prompt), seed=7)
    await run_trajectory(state, engine.generate, execute, generation)

`generate(prompt, params)` and `execute(code)` are awaitables: an engine front from `engines.stepper`
(continuous batching over every trajectory in flight), the sandbox actor pool (`cluster.sandbox_pool`) or
a local sandbox. Many trajectories run at once on one event loop, so generation of some overlaps with
the programs of others. The round rules themselves are `core.tir`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine

from mmos_ray.core.tir import TIRState, apply_generation, apply_observation
from mmos_ray.engines.base import Completion, SamplingParams

if TYPE_CHECKING:
    from mmos_ray.config import GenerationConfig

Generate = Callable[[str, SamplingParams], Awaitable[Completion]]
Execute = Callable[[str], Awaitable[Any]]  # a result with `stdout` and `error` (sandbox.ExecutionResult)


@dataclasses.dataclass
class Round:
    """What one round did (serving returns these as `steps`)."""

    generated: str
    generate_s: float
    code: str | None = None
    stdout: str | None = None
    error: str | None = None
    execute_s: float | None = None


async def run_trajectory(state: TIRState, generate: Generate, execute: Execute, generation: GenerationConfig,
                         rounds: list[Round] | None = None, raise_first: bool = False) -> TIRState:
    """Run `state` to its end. A failed generation ends it with finish_reason "error" (`raise_first`: a
    failure of the first round is raised instead, e.g. serving's refusal of a prompt past the context).
    Each round's sampling seed is the state's seed plus the round (no seed: unseeded)."""
    rules = generation.rules()
    while not state.finished:
        params = generation.sampling(None if state.seed is None else state.seed + state.rounds)
        began = time.perf_counter()
        try:
            completion = await generate(state.next_prompt(), params)
        except Exception as exc:  # noqa: BLE001 - this trajectory's failure only
            if raise_first and state.rounds == 0:
                raise
            state.finish_reason, state.error = "error", f"{type(exc).__name__}: {exc}"[:500]
            break
        step = Round(generated=completion.text, generate_s=round(time.perf_counter() - began, 4))
        apply_generation(state, completion.text, completion.finish_reason, completion.num_tokens,
                         completion.num_prompt_tokens)
        if state.pending_code is not None:
            code, began = state.pending_code, time.perf_counter()
            result = await execute(code)
            apply_observation(state, result.stdout, result.error, rules)
            step.code, step.stdout, step.error = code, result.stdout, result.error
            step.execute_s = round(time.perf_counter() - began, 4)
        if rounds is not None:
            rounds.append(step)
    return state


async def run_all(states: list[TIRState], generate: Generate, execute: Execute,
                  generation: GenerationConfig) -> list[TIRState]:
    """Every state at once (their requests share the engine's batches). A state whose loop failed (its
    program could not be run, say) ends with finish_reason "error"; the others go on."""
    outcomes = await asyncio.gather(*(run_trajectory(s, generate, execute, generation) for s in states),
                                    return_exceptions=True)
    for state, outcome in zip(states, outcomes):
        if isinstance(outcome, BaseException):
            state.finish_reason, state.error = "error", f"{type(outcome).__name__}: {outcome}"[:500]
    return states


class EventLoopThread:
    """An asyncio event loop on a thread of its own, for synchronous callers (Ray Data's batch calls):
    `run(coroutine)` blocks the calling thread until it is done; coroutines of several callers share the
    loop, and so the engine's batches."""

    def __init__(self, name: str = "trajectories"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
