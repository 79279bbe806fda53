"""The tool-integrated-reasoning protocol, pure: when a round ends the trajectory, which code runs, and
what the model is shown after it runs.

The one trajectory loop (`engines.trajectory.run_trajectory`) generates, executes the code in the
sandbox, and calls `apply_generation` / `apply_observation` on a `TIRState` under one `RoundRules`; the
rules live here so that sampling, evaluation and serving share them.
"""

from __future__ import annotations

import dataclasses
import re


def truncate_middle(text: str, max_chars: int) -> str:
    """Keep the head and the tail of a long text, joined by '...': the end of an output (the answer, the
    error) matters most, and its start says what it is."""
    if max_chars <= 0:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if len(text) <= max_chars:
        return text
    keep = max(max_chars - 3, 2)
    head = keep // 2
    return text[:head] + "..." + text[len(text) - (keep - head):]


def format_observation(stdout: str, error: str, max_chars: int = 512, compat: bool = False) -> str:
    """The observation for one execution.

    Default: the whole stdout, then the error line if the program failed (a partial output and the
    reason it stopped are both worth showing), truncated in the middle to `max_chars`.
    `compat=True` reproduces ToRA/MMOS (mmos-method.md §2.1-2.2): the last stdout line if there is one,
    else the error, each cut to 50 + '...' + 50 characters when longer than 100.
    """
    if compat:
        lines = [line for line in stdout.splitlines() if line.strip()]
        observation = lines[-1].strip() if lines else error.strip()
        return observation if len(observation) <= 100 else observation[:50] + "..." + observation[-50:]
    parts = [stdout.strip("\n")] if stdout.strip() else []
    if error:
        parts.append(error.strip())
    return truncate_middle("\n".join(parts), max_chars)


@dataclasses.dataclass(frozen=True)
class RoundRules:
    """When a trajectory stops and what the model is shown of a program's output (`GenerationConfig.rules()`)."""

    max_rounds: int = 2
    observation: str = "full"  # "full" or "compat" (see format_observation)
    observation_chars: int = 512

    def observe(self, stdout: str, error: str) -> str:
        return format_observation(stdout, error, max_chars=self.observation_chars,
                                  compat=self.observation == "compat")


LIMIT_NOTE = "\nReach max function call limit."
_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def last_python_block(text: str) -> str | None:
    """The code of the last closed ```python block, or None."""
    blocks = _PYTHON_BLOCK.findall(text)
    return blocks[-1] if blocks else None


@dataclasses.dataclass
class TIRState:
    """One trajectory in progress: the prompt, everything after it, and what happens next."""

    prompt: str
    text: str = ""
    rounds: int = 0
    num_tokens: int = 0
    num_prompt_tokens: int = 0
    executions: int = 0
    pending_code: str | None = None
    finish_reason: str | None = None  # "boxed", "no_code", "length", "max_rounds", "error"; None while running
    error: str = ""
    seed: int | None = 0  # the sampling seed of round 0 (round r uses seed + r); None: unseeded

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def next_prompt(self) -> str:
        return self.prompt + self.text


def apply_generation(state: TIRState, text: str, engine_finish: str, num_tokens: int,
                     num_prompt_tokens: int = 0) -> None:
    """Append one round of model output, then decide: finished, or a program to run first.

    ToRA's rule (mmos-method.md §2.1): an output that has a boxed answer, or does not end with a closed
    code block, ends the trajectory; otherwise its last ```python block runs.
    """
    output = text.rstrip()
    state.text += output
    state.rounds += 1
    state.num_tokens += num_tokens
    if state.rounds == 1:
        state.num_prompt_tokens = num_prompt_tokens
    code = last_python_block(output) if output.endswith("```") else None
    if "\\boxed" in output:
        state.finish_reason = "boxed"
    elif code is not None:
        state.pending_code = code
    elif engine_finish == "length":
        state.finish_reason = "length"
    else:
        state.finish_reason = "no_code"


def apply_observation(state: TIRState, stdout: str, error: str, rules: RoundRules) -> None:
    """Append the program's observation; after the last allowed round, the limit note ends it."""
    state.text += f"\n```output\n{rules.observe(stdout, error)}\n```\n"
    state.pending_code = None
    state.executions += 1
    if state.rounds >= rules.max_rounds:
        state.text += LIMIT_NOTE
        state.finish_reason = "max_rounds"
