"""The engines our own Serve deployment (`serve_local`) runs, behind one async interface:

    backend = HFBackend(model_dir, max_model_len)  or  VLLMBackend(model_dir, max_model_len, profile)
    completions = await backend.generate(prompts, params)       # one per prompt
    async for item in backend.stream(prompt, params): ...       # text pieces (str), then the final Completion
    backend.count_tokens(text), backend.chat_prompt(messages)

HF transformers runs one call at a time on its own thread (`generate` is not re-entrant). vLLM runs inside
the replica: the engine core in this process and one thread stepping it, so that concurrent requests share
batches (continuous batching) without the engine-core and worker processes of vLLM's async engine, which on
CPU busy-poll the same cores the model needs.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Sequence

from mmos_ray.engines.base import Completion, SamplingParams

# What the stepping thread hands back for one request: (completion so far, finished) or (an exception, True).
Sink = Callable[[Any, bool], None]


class HFBackend:
    name = "hf"

    def __init__(self, model_dir: str, max_model_len: int):
        from mmos_ray.engines.hf_engine import HFEngine

        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-engine")
        self.engine = self._thread.submit(HFEngine, model_dir, max_model_len=max_model_len).result()
        self.tokenizer = self.engine.tokenizer

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    async def generate(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> list[Completion]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self.engine.generate, list(prompts), list(params))

    async def stream(self, prompt: str, params: SamplingParams) -> AsyncIterator[str | Completion]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

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


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_dir: str, max_model_len: int, profile):
        from transformers import AutoTokenizer

        # The event loop's own tokenizer: a fast tokenizer used by two threads at once can fail ("Already borrowed").
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._sinks: dict[str, Sink] = {}  # touched by the stepping thread only
        started: Future = Future()
        threading.Thread(target=self._run, args=(model_dir, max_model_len, profile, started), name="vllm-steps",
                         daemon=True).start()
        self.engine = started.result()  # raises what the engine's constructor raised

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    async def generate(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> list[Completion]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in prompts]
        ids = [self._submit(prompt, p, False, _future_sink(loop, future))
               for prompt, p, future in zip(prompts, params, futures)]
        try:
            return list(await asyncio.gather(*futures))
        finally:
            self._abort(ids)  # the client went away, or one prompt failed: free the others' slots

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

    def _run(self, model_dir: str, max_model_len: int, profile, started: Future) -> None:
        # The engine is built and stepped on this one thread, and no other thread of the replica runs torch:
        # on CPU vLLM binds the OpenMP team of the thread that builds it to the cores, and torch ops from
        # another thread bring a second team that fights it for them (measured: 2x the latency).
        from mmos_ray.engines.vllm_engine import VLLMEngine

        try:
            self.engine = VLLMEngine(model_dir, max_model_len=max_model_len, profile=profile)
        except BaseException as error:  # noqa: BLE001 - the constructor re-raises it in the replica
            started.set_exception(error)
            return
        started.set_result(self.engine)
        while True:
            self._take_inbox()
            if not self._sinks:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step_outputs()
            except Exception as error:  # noqa: BLE001 - every waiting request gets the error, the thread lives on
                sinks, self._sinks = self._sinks, {}
                self.engine.abort(list(sinks))
                for sink in sinks.values():
                    sink(error, True)
                continue
            for request_id, completion, finished in outputs:
                sink = self._sinks.pop(request_id, None) if finished else self._sinks.get(request_id)
                if sink is not None:
                    sink(completion, finished)

    def _take_inbox(self) -> None:
        while True:
            try:
                kind, request_id, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "abort":
                if self._sinks.pop(request_id, None) is not None:
                    self.engine.abort([request_id])
                continue
            prompt, params, stream, sink = payload
            try:
                self.engine.add_request(request_id, prompt, params, stream=stream)
            except Exception as error:  # noqa: BLE001 - e.g. past the context: this request's error only
                sink(error, True)
                continue
            self._sinks[request_id] = sink


def _future_sink(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> Sink:
    def settle(item: Any) -> None:
        if future.done():  # cancelled: the client went away
            return
        if isinstance(item, BaseException):
            future.set_exception(item)
        else:
            future.set_result(item)

    return lambda item, finished: loop.call_soon_threadsafe(settle, item) if finished else None
