"""`/v1/solve`: one question run to its end through the shared trajectory loop (`engines.trajectory`), the
model's code in the sandbox with the limits of data construction, under the generation settings of
`serve.generation` (the shared `generation` section, so the observation format the model was trained on),
which a request may override for sampling, tokens, rounds and prompt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from mmos_ray.config import GenerationConfig, ServeConfig
from mmos_ray.core.answers import extract_answer
from mmos_ray.core.prompts import PROMPT_VERSIONS, render_prompt
from mmos_ray.core.tir import TIRState
from mmos_ray.engines.trajectory import Generate, Round, run_trajectory
from mmos_ray.stages.serve.http import check_limits

# The request keys that override `serve.generation` (each defaults to it).
OVERRIDABLE = ("max_rounds", "max_tokens", "temperature", "top_p", "prompt")


class SolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=16000, description="the problem, in plain text or LaTeX")
    model: str | None = None
    max_rounds: int | None = Field(None, ge=1, le=16, description="tool-call rounds; default serve.generation")
    max_tokens: int | None = Field(None, ge=1, description="new tokens per round; default serve.generation")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    prompt: Literal["train", "fewshot"] | None = Field(None, description="default serve.generation.prompt")


class GenerationError(Exception):
    """The engine refused or failed a request; `status` is its HTTP status (400: e.g. past the context)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Solver:
    serve: ServeConfig
    model_id: str
    sandbox: Any  # mmos_ray.sandbox.Sandbox, limits as in data construction
    limits: Any  # mmos_ray.sandbox.Limits

    def generation_for(self, request: SolveRequest) -> GenerationConfig:
        asked = {key: getattr(request, key) for key in OVERRIDABLE if getattr(request, key) is not None}
        return GenerationConfig.model_validate({**self.serve.generation.model_dump(), **asked})

    async def solve(self, request: SolveRequest, generate: Generate) -> dict[str, Any]:
        generation = self.generation_for(request)
        check_limits(self.serve, generation.max_tokens, None)
        state = TIRState(prompt=render_prompt(request.question, generation.prompt), seed=request.seed)
        rounds: list[Round] = []
        started = time.perf_counter()
        try:
            await run_trajectory(state, generate, self._execute, generation, rounds=rounds, raise_first=True)
        except GenerationError as exc:  # the first round was refused: the client's error
            raise HTTPException(exc.status, str(exc)) from exc
        return {
            "object": "solve", "model": self.model_id, "answer": extract_answer(state.text) or None,
            "finish_reason": state.finish_reason, "error": state.error or None, "rounds": state.rounds,
            "executions": state.executions, "trajectory": state.text,
            "steps": [{k: v for k, v in dataclasses.asdict(r).items() if v is not None} for r in rounds],
            "prompt": generation.prompt, "prompt_version": PROMPT_VERSIONS[generation.prompt],
            "sampling": {"temperature": generation.temperature, "top_p": generation.top_p,
                         "max_tokens": generation.max_tokens, "seed": request.seed, "max_rounds": generation.max_rounds,
                         "observation": generation.observation},
            "usage": {"prompt_tokens": state.num_prompt_tokens, "completion_tokens": state.num_tokens},
            "timings": {"total_s": round(time.perf_counter() - started, 4),
                        "generate_s": round(sum(r.generate_s for r in rounds), 4),
                        "execute_s": round(sum(r.execute_s or 0.0 for r in rounds), 4)},
        }

    async def _execute(self, code: str):
        return await asyncio.to_thread(self.sandbox.execute, code, self.limits)
