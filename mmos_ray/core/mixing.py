"""Mixing minimal sets of several sources, and n-gram decontamination against evaluation sets.

Rates (mmos-method.md §2.10): per source, a fraction of its rows (`0.5`; `1` = all) or an absolute count
(`2000`, any value > 1, whole numbers only). Which rows are kept depends only on (seed, source, row id):
the same inputs give the same mix on any machine and in any order. Ids are dataset-qualified, so two
sources never collide.

Decontamination: a training question is dropped when it shares a word n-gram (default 13, lowercase,
punctuation removed) with any evaluation question; an evaluation question shorter than n words counts as
one gram of its own length. Each removal is reported with the evaluation problem and the shared words.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")
_WORD = re.compile(r"[a-z0-9]+")


def rate_count(rate: float, available: int, source: str) -> int:
    """How many rows a rate keeps out of `available`."""
    if rate < 0:
        raise ValueError(f"mix rate for {source!r} must be >= 0, got {rate}")
    if rate <= 1:
        return int(rate * available)
    if rate != int(rate):
        raise ValueError(f"mix rate for {source!r} is {rate}: above 1 it is a row count and must be whole")
    return min(int(rate), available)


def mix(rows_by_source: dict[str, Sequence[T]], rates: dict[str, float], seed: int,
        row_id: Callable[[T], str]) -> dict[str, list[T]]:
    """The kept rows of each source, in id order. Sources without a rate keep all their rows."""
    unknown = set(rates) - set(rows_by_source)
    if unknown:
        raise ValueError(f"mix rates name sources that are not in this run: {sorted(unknown)}; "
                         f"sources: {sorted(rows_by_source)}")
    kept = {}
    for source, rows in sorted(rows_by_source.items()):
        count = rate_count(rates.get(source, 1.0), len(rows), source)
        order = sorted(rows, key=lambda r: _draw(seed, source, row_id(r)))
        kept[source] = sorted(order[:count], key=row_id)
    return kept


def _draw(seed: int, source: str, row_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{source}:{row_id}".encode()).digest()


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Decontaminator:
    """An index of the evaluation questions' n-grams; `match` finds the first shared gram of a text."""

    def __init__(self, eval_texts: Iterable[tuple[str, str]], n: int = 13):
        self.n = n
        self.grams: dict[tuple[str, ...], str] = {}  # gram -> id of the evaluation problem
        self.short_lengths: set[int] = set()
        for eval_id, text in eval_texts:
            tokens = words(text)
            if not tokens:
                continue
            if len(tokens) < n:
                self.grams.setdefault(tuple(tokens), eval_id)
                self.short_lengths.add(len(tokens))
                continue
            for i in range(len(tokens) - n + 1):
                self.grams.setdefault(tuple(tokens[i:i + n]), eval_id)

    def match(self, text: str) -> tuple[str, str] | None:
        """(evaluation id, shared words) for the first gram the text shares, or None."""
        tokens = words(text)
        for size in (self.n, *sorted(self.short_lengths)):
            for i in range(len(tokens) - size + 1):
                gram = tuple(tokens[i:i + size])
                if gram in self.grams:
                    return self.grams[gram], " ".join(gram)
        return None


def decontaminate(rows: Sequence[T], text: Callable[[T], str], row_id: Callable[[T], str],
                  index: Decontaminator) -> tuple[list[T], list[dict]]:
    """(rows kept, one report entry per row removed)."""
    kept, removed = [], []
    cache: dict[str, tuple[str, str] | None] = {}
    for row in rows:
        question = text(row)
        if question not in cache:
            cache[question] = index.match(question)
        hit = cache[question]
        if hit is None:
            kept.append(row)
        else:
            removed.append({"id": row_id(row), "eval_id": hit[0], "shared": hit[1]})
    return kept, removed


def removal_summary(removed: Sequence[dict]) -> dict[str, int]:
    by_eval: dict[str, int] = defaultdict(int)
    for entry in removed:
        by_eval[entry["eval_id"].rsplit("/", 1)[0]] += 1
    return dict(sorted(by_eval.items()))
