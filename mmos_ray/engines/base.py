"""The engine protocols: `Engine.generate(prompts, params) -> completions`, one completion per prompt, and
`StepEngine` (vLLM), which takes requests one by one and is stepped (continuous batching; see
`engines.stepper`).

    engine = create_engine("auto", "models/tiny")
    outs = engine.generate(["<|user|>\\n1+1?\\n<|assistant|>\\n"], [SamplingParams(max_tokens=16, seed=1)])
    outs[0].text, outs[0].num_tokens, outs[0].finish_reason

Stop strings are not included in `text`; `stop` names the one that ended it. `n > 1` is not offered:
samples are rows (each with its own seed), which prefix caching makes as cheap as `n`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Protocol, Sequence


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int  # generated tokens
    num_prompt_tokens: int
    finish_reason: str  # "stop" (a stop string or end of sequence) or "length" (max_tokens)
    stop: str | None = None  # the stop string that ended it, if one did


class Engine(Protocol):
    name: str  # "vllm" or "hf"
    model: str

    def generate(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> list[Completion]: ...


class StepEngine(Engine, Protocol):
    def add_request(self, request_id: str, prompt: str, params: SamplingParams, stream: bool = False) -> None:
        """Queue one request; raises (e.g. a prompt past the context) without touching the others. `stream`:
        every step reports it (its text so far), not only the step it finished in."""

    def step_outputs(self) -> list[tuple[str, Completion, bool]]:
        """One engine step: (request id, completion so far, finished) for each request it reports."""

    def abort(self, request_ids: list[str]) -> None: ...


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def create_engine(kind: str, model: str, **options) -> Engine:
    """`kind`: "vllm", "hf", or "auto" (vLLM when installed). `options` go to the engine's constructor."""
    if kind == "auto":
        kind = "vllm" if vllm_available() else "hf"
    if kind == "vllm":
        from mmos_ray.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, **options)
    if kind == "hf":
        from mmos_ray.engines.hf_engine import HFEngine

        return HFEngine(model, **{k: v for k, v in options.items() if k in HFEngine.OPTIONS})
    raise ValueError(f"engine must be 'auto', 'vllm' or 'hf', got {kind!r}")
