"""Minimal-set selection throughput: our minimize stage against the original algorithm, same data, one run.

    .venv/bin/python benchmarks/minimize_throughput.py [--problems 1000] [--samples 100] [--k 3]

Data: `problems` x `samples` verified-correct trajectories; each problem's programs are drawn (with
repeats, some much likelier) from a pool of 60 written by a small grammar — term order, intermediate
variables, a helper function, a loop, random names — so that renamed copies collapse and real
structural variety remains, as in sampled data. Both sides get
the same canonical keys (what stage 02 computes) and pick main path + k most diverse per problem:
(a) our stage 03 (`stages.minimize.run`: Ray Data groupby, rapidfuzz Levenshtein, all cores);
(b) a straightforward single-process version of the original `nodup.py` algorithm: dedup by key in
    file order, most frequent key as main, greedy farthest-point with pure-Python Levenshtein.
The selected sets are compared (same sizes per problem). Last line: {"paths", "ours_paths_per_s",
"original_paths_per_s", "paths_per_s": ours, "speedup"}. Target (issue 6): speedup >= 10.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from mmos_ray import storage  # noqa: E402
from mmos_ray.config import MinimizeConfig, PathsConfig  # noqa: E402
from mmos_ray.core.canonical import canonical_key  # noqa: E402
from mmos_ray.stages import minimize  # noqa: E402
from mmos_ray.cluster.resources import ensure_ray  # noqa: E402

NAMES = ["a", "b", "total", "result", "x", "y", "count", "value", "n", "m", "s", "t", "price", "cost"]


def _program(rng: random.Random, numbers: list[int]) -> str:
    """One way of adding the problem's numbers: a structure drawn from a small grammar (term order,
    intermediate variables, a helper function, a loop), with random names."""
    terms = numbers[:]
    rng.shuffle(terms)
    names = rng.sample(NAMES, len(terms) + 1)
    style = rng.randrange(5)
    if style == 0:
        lines = [f"{n} = {v}" for n, v in zip(names, terms)] + [f"{names[-1]} = {' + '.join(names[:-1])}"]
        return "\n".join(lines + [f"print({names[-1]})"])
    if style == 1:
        return f"{names[0]} = {' + '.join(map(str, terms))}\nprint({names[0]})"
    if style == 2:
        body = "\n".join(f"    {n} = {v}" for n, v in zip(names, terms))
        return f"def solution():\n{body}\n    return {' + '.join(names[:-1])}\n\nprint(solution())"
    if style == 3:
        return (f"{names[0]} = 0\nfor {names[1]} in {terms}:\n    {names[0]} += {names[1]}\nprint({names[0]})")
    return f"{names[0]} = {terms}\nprint(sum({names[0]}))"


def make_rows(problems: int, samples: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    keys: dict[str, str] = {}
    rows = []
    for pid in range(problems):
        numbers = [rng.randint(1, 500) for _ in range(rng.randint(2, 4))]
        # A model repeats its favourite solutions: draw from a per-problem pool, some much likelier.
        pool = [_program(rng, numbers) for _ in range(60)]
        weights = [rng.random() ** 3 for _ in pool]
        for idx in range(samples):
            code = rng.choices(pool, weights)[0]
            answer = sum(numbers)
            text = f"We add.\n```python\n{code}\n```\n```output\n{answer}\n```\nThe answer is $\\boxed{{{answer}}}$."
            if code not in keys:
                keys[code] = canonical_key(text).key
            rows.append({"problem_id": f"synthetic/train/{pid}", "sample_idx": idx, "seed": idx, "model": "m",
                         "prompt_version": "v", "text": text, "pred": str(answer), "fingerprint": "",
                         "canonical_key": keys[code], "correct": True, "exec_ok": True})
    return rows


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def original(rows: list[dict], k: int) -> dict[str, int]:
    """nodup.py's steps, one process: dedup in file order, main = most frequent, greedy sum of distances."""
    by_problem: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_problem[row["problem_id"]].append(row["canonical_key"])
    sizes = {}
    for problem, keys in by_problem.items():
        main = Counter(keys).most_common(1)[0][0]
        remain = list(dict.fromkeys(key for key in keys if key != main))
        distance = {key: levenshtein(main, key) for key in remain}
        path = [main]
        while len(path) < k + 1 and distance:
            best = max(distance, key=distance.get)
            path.append(best)
            del distance[best]
            for key in distance:
                distance[key] += levenshtein(best, key)
        sizes[problem] = len(path)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    rows = make_rows(args.problems, args.samples)
    layout = storage.RunLayout(tempfile.mkdtemp(prefix="mmos-minimize-"))
    for start in range(0, len(rows), 10_000):
        storage.write_parquet(storage.part_file(layout.verify, f"{start:07d}"), rows[start:start + 10_000])
    layout.minimize.mkdir()
    ensure_ray()
    started = time.perf_counter()
    manifest = minimize.run(MinimizeConfig(k=args.k), PathsConfig(), layout.minimize)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    sizes = original(rows, args.k)
    original_s = time.perf_counter() - started
    assert manifest["counts"]["selected"] == sum(sizes.values()), (manifest["counts"], sum(sizes.values()))
    report = {"paths": len(rows), "problems": args.problems, "k": args.k, "selected": manifest["counts"]["selected"],
              "ours_seconds": round(ours_s, 2), "original_seconds": round(original_s, 2),
              "ours_paths_per_s": round(len(rows) / ours_s, 1), "original_paths_per_s": round(len(rows) / original_s, 1)}
    report["paths_per_s"] = report["ours_paths_per_s"]
    report["speedup"] = round(original_s / ours_s, 2)
    print(json.dumps({k: v for k, v in report.items() if k != "paths_per_s"}), file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
