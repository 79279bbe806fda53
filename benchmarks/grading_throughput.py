"""Grading throughput: our grader in each mode against math-verify called directly, same pairs, one run.

    .venv/bin/python benchmarks/grading_throughput.py [--pairs 5000] [--data-dir ../shared/data]

The pairs are drawn (seeded) from the benchmarks' golds — GSM8K, MATH, MATH500, SVAMP, ASDiv, GSM-HARD:
numbers, fractions, expressions — each paired with a prediction that is the gold itself, an equivalent
rewrite (thousands separators, `\\dfrac`, a decimal for a fraction, `x.0`), or a wrong answer.
Ours: `Grader(mode)` with one sandbox worker per core (fast paths here, parsers in the sandbox, a time
limit per comparison, cache). math-verify: `verify(parse(gold), parse(pred))` in this process, one pair
after another, with its own (main-thread, signal) timeouts. Each grader starts cold.
Last line: {"pairs", "cores", "graders": {name: {"pairs_per_s", "seconds", "correct"}},
"ratio_strict_vs_math_verify", "ratio_compat_vs_math_verify"}. Target (issue 4): strict >= math-verify.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from fractions import Fraction

from mmos_ray.loaders import load_problems
from mmos_ray.sandbox.grader import Grader

SOURCES = [("gsm8k", "test"), ("math", "test"), ("math500", "test"), ("svamp", "test"), ("asdiv", "test"),
           ("gsm-hard", "test")]


def make_pairs(n: int, data_dir: str | None, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    golds = [p.meta["gold_raw"] for dataset, split in SOURCES
             for p in load_problems(dataset, split, data_dir=data_dir) if p.gold]
    pairs = []
    for _ in range(n):
        gold = rng.choice(golds)
        pairs.append((_prediction(gold, rng), gold))
    return pairs


def _prediction(gold: str, rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return gold
    if kind < 0.7:
        return _equivalent(gold, rng)
    return _wrong(gold, rng)


def _equivalent(gold: str, rng: random.Random) -> str:
    try:
        value = Fraction(gold.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return gold.replace("\\frac", "\\dfrac") if "\\frac" in gold else f" {gold} "
    if value.denominator == 1:
        return rng.choice([f"{int(value):,}", f"{int(value)}.0", f"\\boxed{{{int(value)}}}"])
    return rng.choice([str(float(value)), f"\\frac{{{value.numerator}}}{{{value.denominator}}}"])


def _wrong(gold: str, rng: random.Random) -> str:
    try:
        return str(Fraction(gold.replace(",", "")) + rng.randint(1, 9))
    except (ValueError, ZeroDivisionError):
        return gold + "+1" if rng.random() < 0.5 else "2" + gold


def run_ours(mode: str, pairs, workers: int) -> dict:
    with Grader(mode, workers=workers) as grader:
        grader.grade("1", "1")  # start the sandbox; its grader servers start on first need, as in use
        started = time.perf_counter()
        verdicts = grader.grade_many(pairs)
        seconds = time.perf_counter() - started
    return _row(seconds, len(pairs), sum(v.correct for v in verdicts))


def run_math_verify(pairs) -> dict:
    from math_verify import parse, verify

    started = time.perf_counter()
    correct = 0
    for pred, gold in pairs:
        correct += bool(verify(parse(_latex(gold)), parse(_latex(pred))))
    seconds = time.perf_counter() - started
    return _row(seconds, len(pairs), correct)


def _latex(answer: str) -> str:
    return answer if "$" in answer or "\\boxed" in answer else f"${answer}$"


def _row(seconds: float, n: int, correct: int) -> dict:
    return {"pairs_per_s": round(n / seconds, 1), "seconds": round(seconds, 2), "correct": correct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    pairs = make_pairs(args.pairs, args.data_dir)
    graders = {"math_verify": run_math_verify(pairs)}
    for mode in ("strict", "compat"):
        graders[mode] = run_ours(mode, pairs, args.cores)
    for name, row in graders.items():
        print(f"{name}: {json.dumps(row)}", file=sys.stderr)
    base = graders["math_verify"]["pairs_per_s"]
    print(json.dumps({"pairs": len(pairs), "cores": args.cores, "graders": graders,
                      "ratio_strict_vs_math_verify": round(graders["strict"]["pairs_per_s"] / base, 2),
                      "ratio_compat_vs_math_verify": round(graders["compat"]["pairs_per_s"] / base, 2)}))


if __name__ == "__main__":
    main()
