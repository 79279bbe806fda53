"""The problem generator: perturb verified problems, relabel them by re-executing their programs in the
sandbox, keep those that structurally different programs agree on (core.perturb has the rules).

    mmos generate --source gsm-hard --mode large --out runs/generated/gsm8k-large.jsonl --limit 300
    mmos generate --source runs/quickstart --mode similar --out runs/generated/quickstart-similar.jsonl

Sources:
- `gsm-hard`: the GSM8K test questions, each with two programs: GSM-HARD's PAL program (found by its
  docstring, which is the GSM8K question; its large number put back to the GSM8K one) and a program
  built from the GSM8K worked solution's `<<a*b=c>>` steps (core.gsm_hard). GSM-HARD's own questions are
  not used: their labels are what the audit questions.
- a run folder: the run's problems (`00_prepare`) with the last code block of every correct, executable
  path of `02_verify`, one per distinct canonical key.
Every program first runs on the original numbers; only those that print the gold answer (the program's
structure matches the question) are kept. Then each problem is perturbed (seeded per problem), every
kept program runs again, and `core.perturb.decide` accepts or rejects.

Output: `--out` (JSONL, one accepted problem per line, in the GSM8K record format, `question` and
`answer` ending in `#### <answer>`, which the eval stage reads as dataset `generated` with its path;
plus provenance: source id, mode, seed, mapping, agreeing programs) and
`<out>.summary.json` (acceptance rate, rejection reasons), both written atomically.
Programs run only in the sandbox, in a pool of fork servers on this host: they are a few thousand
short programs, which `workers` servers run in seconds, so this tool asks nothing of Ray.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from mmos_ray import storage
from mmos_ray.core.canonical import canonicalize_code, code_blocks, fingerprint
from mmos_ray.core.errors import DataError
from mmos_ray.core.gsm_hard import calc_program, docstring_question, normalize_text, restore_program
from mmos_ray.core.perturb import (Decision, Perturbation, ProgramRun, answer_class, decide, plan_perturbation,
                                   problem_rng)
from mmos_ray.core.records import Problem
from mmos_ray.loaders import load_problems

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Candidate:
    """A problem with the programs that may relabel it (each prints its answer on its last line)."""

    problem: Problem
    programs: list[str]
    structures: list[str] = dataclasses.field(default_factory=list)  # the programs' fingerprints, once kept


# Rejections that are the new numbers' fault, not the programs': another draw may pass.
RETRIED = ("negative", "non_integer", "not_finite", "too_large", "execution_failed")


def generate(source: str, mode: str, out: Path, seed: int = 0, min_agree: int = 2, limit: int | None = None,
             data_dir: Path | None = None, attempts: int = 3, workers: int = 2,
             timeout_s: float = 5.0) -> dict[str, Any]:
    """Write the accepted problems to `out` and the summary beside it; return the summary.

    A problem rejected for its new numbers (RETRIED) gets another draw from its own RNG, up to
    `attempts` draws; one whose programs disagree does not (another draw might agree by chance)."""
    from mmos_ray.sandbox import Limits, Sandbox

    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    candidates, pairing = _candidates(source, data_dir, limit)
    accepted, reasons = {}, {}
    with Sandbox(workers=workers, limits=Limits(timeout_s=timeout_s)) as sandbox:
        verified = _keep_reproducing(sandbox, candidates, pairing)
        pending = {c.problem.id: (c, problem_rng(seed, c.problem.id)) for c in verified}
        for _ in range(attempts):
            for problem_id, (row, reason) in _attempt(sandbox, pending, mode, min_agree).items():
                reasons[problem_id] = reason
                if row is not None:
                    accepted[problem_id] = row
                if row is not None or reason not in RETRIED:
                    del pending[problem_id]
    order = {c.problem.id: i for i, c in enumerate(candidates)}
    rows = [accepted[pid] | {"id": f"generated-{mode}/{i}", "seed": seed}
            for i, pid in enumerate(sorted(accepted, key=order.get))]
    counts = Counter(reason for pid, reason in reasons.items() if pid not in accepted)
    counts["too_few_programs"] += len(candidates) - len(verified)
    storage.write_text(out, "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows))
    summary = {"source": source, "mode": mode, "seed": seed, "min_agree": min_agree, "attempts": attempts,
               "problems": len(candidates), "accepted": len(rows),
               "acceptance_rate": round(len(rows) / len(candidates), 4) if candidates else 0.0,
               "rejections": dict(sorted((k, v) for k, v in counts.items() if v)),
               "pairing": dict(sorted(pairing.items())),
               "out": str(out)}
    storage.write_json(summary_path(out), summary)
    logger.info("generate: %d of %d problems accepted (%s); wrote %s", len(rows), len(candidates), mode, out)
    return summary


def _attempt(sandbox, pending: dict, mode: str, min_agree: int) -> dict[str, tuple[dict | None, str]]:
    """One draw for every pending problem: {problem id: (accepted row or None, rejection reason or "")}."""
    outcomes, plans = {}, []
    for problem_id, (candidate, rng) in pending.items():
        plan = plan_perturbation(candidate.problem.question, candidate.programs, mode, rng)
        if plan is None:
            outcomes[problem_id] = (None, "no_input_numbers")
        else:
            plans.append((candidate, plan))
    results = iter(sandbox.execute_many([code for _, plan in plans for code in plan.programs]))
    for candidate, plan in plans:
        runs = [ProgramRun(structure, result.last_line if result.ok else "", result.error)
                for structure, result in zip(candidate.structures, [next(results) for _ in plan.programs])]
        decision = decide(runs, [candidate.problem.gold], min_agree)
        row = _row(candidate, plan, decision, mode) if decision.accepted else None
        outcomes[candidate.problem.id] = (row, decision.reason)
    return outcomes


def summary_path(out: Path) -> Path:
    return Path(out).with_suffix(".summary.json")


def _row(candidate: Candidate, plan: Perturbation, decision: Decision, mode: str) -> dict[str, Any]:
    agreeing = set(decision.agreeing)
    return {"question": plan.question, "answer": f"#### {decision.answer}", "source_id": candidate.problem.id,
            "mode": mode, "mapping": plan.mapping,
            "agreeing_programs": [{"structure": structure, "code": code}
                                  for structure, code in zip(candidate.structures, plan.programs)
                                  if structure in agreeing],
            "original_question": candidate.problem.question, "original_answer": candidate.problem.gold}


def _structure(code: str) -> str:
    """The program's canonical fingerprint (names, comments and layout do not count)."""
    return fingerprint(canonicalize_code(code) or normalize_text(code))


def _keep_reproducing(sandbox, candidates: list[Candidate], counts: dict[str, int]) -> list[Candidate]:
    """The candidates with their programs that print the gold answer on the original numbers, one per
    structure; a candidate left with no program is dropped (counted as too_few_programs). `counts` gets
    how many programs did and did not reproduce their gold."""
    results = iter(sandbox.execute_many([code for c in candidates for code in c.programs]))
    kept = []
    for candidate in candidates:
        programs, structures = [], []
        for code in candidate.programs:
            result = next(results)
            structure = _structure(code)
            reproduces = result.ok and answer_class(result.last_line) == answer_class(candidate.problem.gold)
            counts["programs_reproducing_gold" if reproduces else "programs_not_reproducing_gold"] += 1
            if reproduces and structure not in structures:
                structures.append(structure)
                programs.append(code)
        if programs:
            candidate.programs, candidate.structures = programs, structures
            kept.append(candidate)
    return kept


def _candidates(source: str, data_dir: Path | None, limit: int | None) -> tuple[list[Candidate], Counter]:
    if source == "gsm-hard":
        return _gsm_hard_candidates(data_dir, limit)
    run_dir = Path(source)
    if not storage.RunLayout(run_dir).verify.is_dir():
        raise DataError(f"--source {source}: neither 'gsm-hard' nor a run folder with {storage.RunLayout.VERIFY}/; "
                        "pass --source gsm-hard, or a run folder after `mmos verify`")
    return _run_candidates(run_dir, limit)


def _gsm_hard_candidates(data_dir: Path | None, limit: int | None) -> tuple[list[Candidate], Counter]:
    """GSM8K test problems, each with GSM-HARD's program (restored) and the worked solution's program."""
    questions = load_problems("gsm8k", "test", data_dir=data_dir, limit=limit)
    hard = {docstring_question(p.meta["code"]): p for p in load_problems("gsm-hard", "test", data_dir=data_dir)}
    from mmos_ray.loaders import find_split_file, resolve_data_dir
    from mmos_ray.storage import read_records

    answers = [row["answer"] for _, row in read_records(find_split_file(resolve_data_dir(data_dir), "gsm8k/test"))]
    candidates, counts = [], Counter()
    for problem in questions:
        programs = []
        pal = hard.get(normalize_text(problem.question))
        if pal is not None:
            counts["with_gsm_hard_program"] += 1
            programs.append(restore_program(pal.meta["code"], pal.question, problem.question) + "\nprint(solution())\n")
        index = int(problem.id.rsplit("/", 1)[1])
        calc = calc_program(answers[index], problem.question)
        if calc is not None:
            counts["with_worked_solution_program"] += 1
            programs.append(calc)
        candidates.append(Candidate(problem, programs))
    return candidates, counts


def _run_candidates(run_dir: Path, limit: int | None) -> tuple[list[Candidate], Counter]:
    layout = storage.RunLayout(run_dir)
    problems = [Problem.from_row(row) for row in storage.read_parquet(layout.problems)]
    programs: dict[str, list[str]] = {}
    for row in sorted(storage.read_parts(layout.verify), key=lambda r: (r["problem_id"], r["sample_idx"])):
        blocks = code_blocks(row["text"])
        if row["correct"] and row["exec_ok"] and blocks:
            programs.setdefault(row["problem_id"], []).append(blocks[-1])
    candidates = [Candidate(p, programs[p.id]) for p in problems if p.id in programs][:limit]
    return candidates, Counter(problems_with_verified_programs=len(candidates))
