"""The tool-integrated-reasoning protocol, pure: what the model is shown after its code runs.

The sampling driver (stages) executes a code block in the sandbox and appends
"```output\\n{observation}\\n```" to the trajectory; this module decides what the observation says.
"""

from __future__ import annotations


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
