"""Engines behind one async call, `await engine.generate(prompt, params)`, so that any number of concurrent
trajectories (`engines.trajectory`) share the engine's batches:

    engine = SteppedEngine(lambda: create_engine("vllm", model))   # vLLM: one thread steps it
    engine = BatchedEngine(lambda: create_engine("hf", model))     # HF: waiting calls go in one batch
    completion = await engine.generate(prompt, params)
    async for item in engine.stream(prompt, params): ...           # text pieces, then the final Completion

`SteppedEngine` is the one thread that steps vLLM, for sampling, evaluation and serving alike: requests
go in one by one and come out as each finishes, so a trajectory's next round joins the running batch as
soon as its program ran (continuous batching across rounds and across callers). The engine is built and
stepped on that thread: vLLM on CPU binds the OpenMP team of the thread that builds it to the cores, and
torch ops from another thread bring a second team that fights it for them (measured: 2x the latency).

`BatchedEngine` is for engines that only take whole batches (HF transformers, not re-entrant): calls that
arrive while a batch runs form the next batch; a stream runs alone, on the same thread.

Both count `stats.generate_s`, the time the engine computed; against the time its callers had work in
hand it gives the engine's idle share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable

from mmos_ray.engines.base import Completion, Engine, SamplingParams, StepEngine

# What the stepping thread hands back for one request: (completion so far, finished) or (an exception, True).
Sink = Callable[[Any, bool], None]


@dataclasses.dataclass
class EngineStats:
    generate_s: float = 0.0  # time inside the engine's step / generate


class SteppedEngine:
    """A `StepEngine` (vLLM) owned and stepped by one thread of its own."""

    def __init__(self, make_engine: Callable[[], StepEngine]):
        self.stats = EngineStats()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._sinks: dict[str, Sink] = {}  # touched by the stepping thread only
        started: Future = Future()
        threading.Thread(target=self._run, args=(make_engine, started), name="engine-steps", daemon=True).start()
        self.engine = started.result()  # raises what the engine's constructor raised

    async def generate(self, prompt: str, params: SamplingParams) -> Completion:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        request_id = self._submit(prompt, params, False, _future_sink(loop, future))
        try:
            return await future
        finally:
            if future.cancelled() or not future.done():  # the caller went away: free the request's slot
                self._abort([request_id])

    async def stream(self, prompt: str, params: SamplingParams) -> AsyncIterator[str | Completion]:
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue = asyncio.Queue()
        request_id = self._submit(prompt, params, True,
                                  lambda item, finished: loop.call_soon_threadsafe(updates.put_nowait, (item, finished)))
        sent, finished = 0, False
        try:
            while not finished:
                item, finished = await updates.get()
                if isinstance(item, BaseException):
                    raise item
                if len(item.text) > sent:  # vLLM's text so far only grows: stop strings are held back
                    yield item.text[sent:]
                    sent = len(item.text)
            yield item
        finally:
            if not finished:
                self._abort([request_id])

    def close(self) -> None:
        self._inbox.put(("close", "", None))
        self._wake.set()

    # -- the stepping thread ---------------------------------------------------------------------

    def _submit(self, prompt: str, params: SamplingParams, stream: bool, sink: Sink) -> str:
        request_id = uuid.uuid4().hex
        self._inbox.put(("add", request_id, (prompt, params, stream, sink)))
        self._wake.set()
        return request_id

    def _abort(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self._inbox.put(("abort", request_id, None))
        self._wake.set()

    def _run(self, make_engine: Callable[[], StepEngine], started: Future) -> None:
        try:
            engine = make_engine()
        except BaseException as error:  # noqa: BLE001 - the constructor re-raises it in the caller
            started.set_exception(error)
            return
        started.set_result(engine)
        while self._take_inbox(engine):
            if not self._sinks:
                self._wake.wait()
                self._wake.clear()
                continue
            began = time.perf_counter()
            try:
                outputs = engine.step_outputs()
            except Exception as error:  # noqa: BLE001 - every waiting request gets the error, the thread lives on
                sinks, self._sinks = self._sinks, {}
                engine.abort(list(sinks))
                for sink in sinks.values():
                    sink(error, True)
                continue
            finally:
                self.stats.generate_s += time.perf_counter() - began
            for request_id, completion, finished in outputs:
                sink = self._sinks.pop(request_id, None) if finished else self._sinks.get(request_id)
                if sink is not None:
                    sink(completion, finished)

    def _take_inbox(self, engine: StepEngine) -> bool:
        """Admit new requests and aborts; False once closed."""
        while True:
            try:
                kind, request_id, payload = self._inbox.get_nowait()
            except queue.Empty:
                return True
            if kind == "close":
                return False
            if kind == "abort":
                if self._sinks.pop(request_id, None) is not None:
                    engine.abort([request_id])
                continue
            prompt, params, stream, sink = payload
            try:
                engine.add_request(request_id, prompt, params, stream=stream)
            except Exception as error:  # noqa: BLE001 - e.g. past the context: this request's error only
                sink(error, True)
                continue
            self._sinks[request_id] = sink


class BatchedEngine:
    """An `Engine` that takes whole batches (HF), on one thread of its own; concurrent calls share batches."""

    def __init__(self, make_engine: Callable[[], Engine]):
        self.stats = EngineStats()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.engine = self._thread.submit(make_engine).result()
        self._waiting: list[tuple[str, SamplingParams, asyncio.Future]] = []
        self._running = False

    async def generate(self, prompt: str, params: SamplingParams) -> Completion:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((prompt, params, future))
        if not self._running:
            asyncio.get_running_loop().call_soon(self._start_batch)  # after the other callers of this tick
        return await future

    def _start_batch(self) -> None:
        if self._running or not self._waiting:
            return
        batch, self._waiting, self._running = self._waiting, [], True
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._thread, self._generate, [p for p, _, _ in batch], [s for _, s, _ in batch])
        done.add_done_callback(lambda result: self._settle(batch, result))

    def _settle(self, batch: list, result: asyncio.Future) -> None:
        self._running = False
        for (_, _, future), completion in zip(batch, result.result()):
            if future.done():
                continue
            if isinstance(completion, BaseException):
                future.set_exception(completion)
            else:
                future.set_result(completion)
        self._start_batch()

    def _generate(self, prompts: list[str], params: list[SamplingParams]) -> list:
        began = time.perf_counter()
        try:
            return self.engine.generate(prompts, params)
        except Exception:  # noqa: BLE001
            # One bad request (e.g. a prompt past the context) fails the whole call: retry one by one, so
            # only the requests that fail on their own get the error.
            return [_one(self.engine, prompt, p) for prompt, p in zip(prompts, params)]
        finally:
            self.stats.generate_s += time.perf_counter() - began

    async def stream(self, prompt: str, params: SamplingParams) -> AsyncIterator[str | Completion]:
        """Text pieces as the engine makes them (its `generate_streaming`), then the final Completion."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.engine.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run() -> Completion:
            try:
                return self.engine.generate_streaming(prompt, params, streamer)
            finally:
                streamer.end()  # the reader stops even when generation failed

        future = asyncio.get_running_loop().run_in_executor(self._thread, run)
        cutter, pieces = StopCutter(params.stop), iter(streamer)
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            if text := cutter.feed(piece):
                yield text
        completion = await future
        if rest := cutter.flush():
            yield rest
        yield completion

    def close(self) -> None:
        self._thread.shutdown(wait=False)


class StopCutter:
    """Cuts a streamed text at the first stop string: emits what can no longer be the start of one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.held += piece
        hits = [self.held.index(s) for s in self.stops if s in self.held]
        if hits:
            self.stopped = True
            out, self.held = self.held[:min(hits)], ""
            return out
        keep = max((n for s in self.stops for n in range(1, len(s)) if self.held.endswith(s[:n])), default=0)
        out, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return out

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out


def _one(engine: Engine, prompt: str, params: SamplingParams) -> Completion | Exception:
    try:
        return engine.generate([prompt], [params])[0]
    except Exception as error:  # noqa: BLE001 - this request's error only
        return error


def _future_sink(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> Sink:
    def settle(item: Any) -> None:
        if future.done():  # cancelled: the caller went away
            return
        if isinstance(item, BaseException):
            future.set_exception(item)
        else:
            future.set_result(item)

    return lambda item, finished: loop.call_soon_threadsafe(settle, item) if finished else None
