"""Evaluation metrics over graded samples: pass@1, unbiased pass@k, maj@k, and their breakdowns.

Pure. Inputs are per problem: the correctness of each of its n samples in sample order, and (for
maj@k) the equivalence class of each sample's answer (`None` for no answer), as the grader's
equivalence-class vote assigns them. Every accuracy is a fraction in [0, 1].

- pass@1 over n samples: the mean over sample columns j of the accuracy when every problem uses its
  j-th sample (with greedy decoding and n = 1: plain accuracy); `pass@1_std` is the standard deviation
  of those n column accuracies (the run-to-run spread of a single-sample evaluation).
- pass@k: the unbiased estimator 1 - C(n-c, k)/C(n, k) (Chen et al. 2021), averaged over problems.
- maj@k: the answer of the largest equivalence class among the first k samples (ties: the class seen
  first; samples without an answer do not vote) is correct. MMOS voted on exact strings with empty
  answers voting; classes are the stricter reading of "the same answer".
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(correct: Sequence[bool], classes: Sequence[int | None], k: int) -> bool:
    """Whether the largest answer class among the first k samples is a correct one."""
    votes = Counter(c for c in classes[:k] if c is not None)
    if not votes:
        return False
    best = max(votes.values())
    winner = next(c for c in classes[:k] if c is not None and votes[c] == best)
    return any(ok for ok, cls in zip(correct[:k], classes[:k]) if cls == winner)


def ks_for(n: int) -> list[int]:
    """The k values reported for n samples: powers of two up to n, and n itself."""
    ks = [k for k in (2 ** i for i in range(int(math.log2(n)) + 1)) if k <= n] if n >= 1 else []
    return ks + ([n] if n not in ks else [])


def summarize(correct: Sequence[Sequence[bool]], classes: Sequence[Sequence[int | None]] | None = None) -> dict:
    """Metrics over problems (each a list of per-sample correctness, all of the same length n)."""
    if not correct:
        return {"problems": 0}
    n = len(correct[0])
    if any(len(row) != n for row in correct):
        raise ValueError("every problem needs the same number of samples to compare pass@k across problems")
    columns = [sum(row[j] for row in correct) / len(correct) for j in range(n)]
    mean = sum(columns) / n
    result = {"problems": len(correct), "samples": n, "pass@1": mean,
              "pass@1_std": math.sqrt(sum((c - mean) ** 2 for c in columns) / n) if n > 1 else 0.0}
    for k in ks_for(n):
        if k > 1:
            result[f"pass@{k}"] = sum(pass_at_k(n, sum(row), k) for row in correct) / len(correct)
    if classes is not None and n > 1:
        for k in ks_for(n):
            if k > 1:
                result[f"maj@{k}"] = sum(majority_correct(row, cls, k) for row, cls in zip(correct, classes)) \
                    / len(correct)
    return result


def breakdown(keys: Sequence[str], correct: Sequence[bool]) -> dict[str, dict]:
    """Accuracy per key (e.g. MATH type or level): {key: {"problems": n, "accuracy": a}}, sorted by key."""
    totals: dict[str, list[int]] = {}
    for key, ok in zip(keys, correct):
        total = totals.setdefault(str(key), [0, 0])
        total[0] += 1
        total[1] += bool(ok)
    return {key: {"problems": n, "accuracy": c / n} for key, (n, c) in sorted(totals.items())}
