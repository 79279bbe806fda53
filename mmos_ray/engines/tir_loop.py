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
import queue
import threading
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
        loop = ContinuousLoop(lambda: engine, executor, observation_chars, compat_observation)
        try:
            loop.run(states, sampling, max_rounds)
        finally:
            loop.close()
        return loop.stats
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


class ContinuousLoop:
    """One engine that takes requests one by one (vLLM), driven by its own thread for any number of callers.

    `run(states, ...)` blocks until those states finish; meanwhile other callers' states share the
    engine's running batch, so the stragglers of one batch (a few long trajectories) overlap with the
    next batch instead of leaving the engine nearly idle. The engine is made on the loop's thread
    (`make_engine`): vLLM on CPU binds its OpenMP threads from the thread that starts it.
    """

    def __init__(self, make_engine: Callable[[], Any], executor: Executor, observation_chars: int = 512,
                 compat_observation: bool = False):
        self.executor = executor
        self.observation_chars = observation_chars
        self.compat_observation = compat_observation
        self.stats = LoopStats()  # cumulative; wall_s = time with work in hand
        self._inbox: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(make_engine,), name="tir-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def run(self, states: Sequence[TIRState], sampling: Callable[[TIRState], SamplingParams], max_rounds: int) -> None:
        job = _Job(list(states), sampling, max_rounds)
        self._inbox.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=30)

    def _main(self, make_engine) -> None:
        try:
            self.engine = make_engine()
        except BaseException as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        self._waiting: dict[str, tuple[TIRState, _Job]] = {}
        self._in_flight: list[tuple[list[tuple[TIRState, _Job]], Any]] = []
        self._jobs: list[_Job] = []
        try:
            while self._take_jobs():
                began = time.perf_counter()
                self._step()
                self._collect()
                self._finish_jobs()
                self.stats.wall_s += time.perf_counter() - began
        except BaseException as exc:  # a bug of ours: fail every caller rather than hang them
            for job in self._jobs:
                job.error = exc
                job.done.set()

    def _take_jobs(self) -> bool:
        """Admit new jobs; block for one when there is nothing else to do. False when closed."""
        while True:
            if self._waiting:
                timeout = 0.0
            elif self._in_flight:
                timeout = 0.005  # programs are running: look again soon
            else:
                timeout = None
            try:
                job = self._inbox.get(timeout=timeout) if timeout != 0.0 else self._inbox.get_nowait()
            except queue.Empty:
                return True
            if job is None:
                return False
            self._jobs.append(job)
            for state in job.states:
                self._request(state, job)
            if timeout is None and not self._waiting and not self._in_flight:
                self._finish_jobs()  # every state failed at once: answer the caller, wait for the next
                continue
            timeout = 0.0

    def _request(self, state: TIRState, job: "_Job") -> None:
        request_id = f"{id(state)}-{state.rounds}"
        try:
            self.engine.add_request(request_id, state.next_prompt(), job.sampling(state))
            self._waiting[request_id] = (state, job)
        except Exception as exc:
            _fail([state], exc)

    def _step(self) -> None:
        if not self._waiting:
            return
        began = time.perf_counter()
        try:
            finished = self.engine.step()
        except Exception as exc:  # the engine failed mid-batch: end what it held, keep everything else
            _fail([state for state, _ in self._waiting.values()], exc)
            self.engine.abort(list(self._waiting))
            self._waiting.clear()
            finished = []
        self.stats.generate_s += time.perf_counter() - began
        self.stats.generate_calls += 1
        to_run = []
        for request_id, completion in finished:
            state, job = self._waiting.pop(request_id)
            apply_generation(state, completion.text, completion.finish_reason, completion.num_tokens,
                             completion.num_prompt_tokens)
            if state.pending_code is not None:
                to_run.append((state, job))
        if to_run:
            self.stats.programs += len(to_run)
            self._in_flight.append((to_run, self.executor.submit([s.pending_code for s, _ in to_run])))

    def _collect(self) -> None:
        still_running = []
        for ran, handle in self._in_flight:
            if self._waiting and not self.executor.ready(handle):
                still_running.append((ran, handle))
                continue
            waited = time.perf_counter()
            results = self.executor.collect(handle)  # blocks only when the engine has nothing to generate
            if not self._waiting:
                self.stats.wait_s += time.perf_counter() - waited
            for (state, job), result in zip(ran, results):
                apply_observation(state, result.stdout, result.error, job.max_rounds, self.observation_chars,
                                  self.compat_observation)
                if not state.finished:
                    self._request(state, job)
        self._in_flight = still_running

    def _finish_jobs(self) -> None:
        for job in [j for j in self._jobs if all(s.finished for s in j.states)]:
            self._jobs.remove(job)
            job.done.set()


@dataclasses.dataclass
class _Job:
    states: list[TIRState]
    sampling: Callable[[TIRState], SamplingParams]
    max_rounds: int
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    error: BaseException | None = None


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
