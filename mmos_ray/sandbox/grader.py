"""Grading model answers safely and fast: `core.grading`'s rules, with every comparison that needs a
parser run inside the sandbox under a time limit.

    from mmos_ray.sandbox.grader import Grader
    with Grader(mode="strict") as grader:
        grader.grade("\\\\frac{1}{2}", "0.5")            # Verdict(correct=True, decided_by='math_verify')
        grader.grade_many([("1000001", "1000000")])   # [Verdict(correct=False, decided_by='integer')]

Plain numbers and equal strings are decided in this process in microseconds; the rest goes to the
sandbox's grader server (sympy, math-verify and our rules preloaded) in batches, one program per batch,
with an alarm per comparison. A comparison that runs out of time is `Verdict(False, "timeout")`, never a
hang, and this works from any thread, Ray actor or Serve replica (no signals in the caller). Verdicts
are cached per (mode, pred, gold).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Iterable, Sequence

from mmos_ray.core.grading import MODES, Verdict, disagreements, fast_verdict, majority_vote
from mmos_ray.sandbox.executor import Sandbox
from mmos_ray.sandbox.protocol import ExecutionResult, Limits

_PROGRAM = "from mmos_ray.core.grading import grade_batch_and_print\ngrade_batch_and_print({items!r}, {timeout!r})"


class Grader:
    """One grading mode, a sandbox to run parsers in, and a cache. Thread-safe like the Sandbox."""

    def __init__(self, mode: str = "compat", timeout_s: float = 3.0, sandbox: Sandbox | None = None,
                 workers: int = 1, batch_size: int = 64, cache_size: int = 200_000):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self._own_sandbox = sandbox is None
        self.sandbox = sandbox or Sandbox(workers=workers)
        self._cache: OrderedDict[tuple[str, str], Verdict] = OrderedDict()
        self._cache_size = cache_size

    def grade(self, pred: str | None, gold: str | None) -> Verdict:
        return self.grade_many([(pred, gold)])[0]

    def grade_many(self, pairs: Iterable[tuple[str | None, str | None]]) -> list[Verdict]:
        pairs = [(_text(p), _text(g)) for p, g in pairs]
        verdicts: list[Verdict | None] = [None] * len(pairs)
        pending: dict[tuple[str, str], list[int]] = {}
        for index, key in enumerate(pairs):
            found = self._cache.get(key) or fast_verdict(key[0], key[1], self.mode)
            if found is not None:
                verdicts[index] = found
            else:
                pending.setdefault(key, []).append(index)
        for key, verdict in zip(pending, self._run_in_sandbox(list(pending))):
            for index in pending[key]:
                verdicts[index] = verdict
        for key, verdict in zip(pairs, verdicts):
            self._remember(key, verdict)
        return verdicts  # type: ignore[return-value]

    def same(self, a: str, b: str) -> bool:
        """Equivalence for voting: either direction grades correct (math-verify is gold-first)."""
        return self.grade(a, b).correct or self.grade(b, a).correct

    def majority_vote(self, answers: Iterable[str | None]) -> tuple[str | None, int, list[int]]:
        return majority_vote(answers, self.same)

    def _run_in_sandbox(self, keys: Sequence[tuple[str, str]]) -> list[Verdict]:
        if not keys:
            return []
        batches = [list(keys[i:i + self.batch_size]) for i in range(0, len(keys), self.batch_size)]
        results = self.sandbox.execute_many([self._program(batch) for batch in batches], kind="grader",
                                            limits=self._limits(self.batch_size))
        verdicts: list[Verdict] = []
        for batch, result in zip(batches, results):
            got = _parse_lines(result)
            for key in batch[len(got):]:  # the batch died part-way: grade the rest one by one
                got.append(self._run_alone(key))
            verdicts.extend(got)
        return verdicts

    def _run_alone(self, key: tuple[str, str]) -> Verdict:
        result = self.sandbox.execute(self._program([key]), kind="grader", limits=self._limits(1))
        got = _parse_lines(result)
        if got:
            return got[0]
        if result.timeout:
            return Verdict(False, "timeout")
        return Verdict(False, f"error:{result.error.split(':')[0] or 'no output'}")

    def _program(self, batch: Sequence[tuple[str, str]]) -> str:
        return _PROGRAM.format(items=[(pred, gold, self.mode) for pred, gold in batch], timeout=self.timeout_s)

    def _limits(self, items: int) -> Limits:
        # Each comparison has its own alarm; the wall clock is only the backstop for a stuck child.
        return Limits(timeout_s=self.timeout_s * items + 5, memory_mb=2048)

    def _remember(self, key: tuple[str, str], verdict: Verdict) -> None:
        self._cache[key] = verdict
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        if self._own_sandbox:
            self.sandbox.close()

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def compare_modes(pairs: Sequence[tuple[str | None, str | None]], workers: int = 1,
                  timeout_s: float = 3.0) -> dict:
    """Grade the pairs in both modes: the disagreement report, plus every verdict under "all"."""
    pairs = list(pairs)
    with Grader("compat", timeout_s=timeout_s, workers=workers) as compat, \
            Grader("strict", timeout_s=timeout_s, sandbox=compat.sandbox) as strict:
        first, second = compat.grade_many(pairs), strict.grade_many(pairs)
    report = disagreements(pairs, first, second)
    report["all"] = [{"pred": p, "gold": g, "compat": a.to_dict(), "strict": b.to_dict()}
                     for (p, g), a, b in zip(pairs, first, second)]
    return report


def _text(answer: str | None) -> str:
    return "" if answer is None else str(answer)


def _parse_lines(result: ExecutionResult) -> list[Verdict]:
    verdicts = []
    for line in result.stdout.splitlines():
        try:
            data = json.loads(line)
            verdicts.append(Verdict(bool(data["correct"]), str(data["decided_by"])))
        except (ValueError, KeyError, TypeError):
            break  # a partial last line from a child that was killed mid-write
    return verdicts
