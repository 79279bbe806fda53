"""The minimal optimal set of one problem: distinct correct paths, the main one, then the most diverse.

    ranked = rank_paths(candidates)        # candidates: correct, executable paths of one problem
    selected = [c for c in ranked if c.rank <= k]

The method (mmos-method.md §2.9), with its nondeterminism removed:
1. exact dedup on the canonical key (`core.canonical`); each distinct form is represented by its lowest
   sample index;
2. main path = the most frequent canonical form over all candidates (ties: the form whose
   representative has the lowest sample index);
3. greedy farthest-point: repeatedly add the form with the largest sum of edit distances
   (character-level Levenshtein, rapidfuzz) to everything chosen so far (ties: lowest sample index).
Every distinct form gets a rank (0 = main, then the greedy order), so the set for any k is
`rank <= k` — one pass gives the ability-boundary sweep over k. `random_ranks` is the baseline: the
same distinct forms in a seeded random order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Candidate:
    sample_idx: int
    key: str  # canonical key (all code blocks)


@dataclasses.dataclass(frozen=True)
class Ranked:
    sample_idx: int  # the representative of its canonical form
    key: str
    rank: int
    count: int  # how many candidates share this form


def rank_paths(candidates: Sequence[Candidate], max_rank: int | None = None) -> list[Ranked]:
    """Distinct forms in rank order; with `max_rank`, only ranks 0..max_rank are computed."""
    from rapidfuzz.distance import Levenshtein

    forms = _distinct(candidates)
    if not forms:
        return []
    counts = Counter(c.key for c in candidates)
    main = min(forms, key=lambda f: (-counts[f.key], f.sample_idx))
    chosen = [main]
    remaining = [f for f in forms if f is not main]
    limit = len(forms) - 1 if max_rank is None else min(max_rank, len(forms) - 1)
    distance = {f.sample_idx: Levenshtein.distance(main.key, f.key) for f in remaining}
    while remaining and len(chosen) <= limit:
        best = max(remaining, key=lambda f: (distance[f.sample_idx], -f.sample_idx))
        chosen.append(best)
        remaining.remove(best)
        for f in remaining:
            distance[f.sample_idx] += Levenshtein.distance(best.key, f.key)
    return [Ranked(f.sample_idx, f.key, rank, counts[f.key]) for rank, f in enumerate(chosen)]


def random_ranks(candidates: Sequence[Candidate], seed: int, problem_id: str) -> list[Ranked]:
    """The random baseline: the distinct forms in an order drawn from (seed, problem id)."""
    forms = _distinct(candidates)
    counts = Counter(c.key for c in candidates)
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(forms)
    return [Ranked(f.sample_idx, f.key, rank, counts[f.key]) for rank, f in enumerate(forms)]


def _distinct(candidates: Sequence[Candidate]) -> list[Candidate]:
    first: dict[str, Candidate] = {}
    for candidate in sorted(candidates, key=lambda c: c.sample_idx):
        first.setdefault(candidate.key, candidate)
    return list(first.values())
