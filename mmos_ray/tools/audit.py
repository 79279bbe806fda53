"""The GSM-HARD audit: how many of GSM-HARD's labels are suspect, and how a model scores on GSM-HARD
beside a generated large-number set whose labels different programs agree on.

    mmos audit gsm-hard                                              # the label audit alone (seconds)
    mmos audit gsm-hard --model runs/quickstart/05_train/model --limit 50   # + the side-by-side evaluation

Each GSM-HARD problem is paired with its GSM8K test question (GSM-HARD's program keeps that question as
its docstring). Its program runs in the sandbox twice: as shipped (does it print the label?) and with
the large number put back to GSM8K's (does it then print GSM8K's answer? if not, the program does not
answer the question it was written for). `core.gsm_hard.audit_label` turns the results into labels:
negative, non_integer (where GSM8K's answer is an integer), disagrees_with_own_program,
inconsistent_with_gsm8k. Outputs, written atomically into `--out` (default `runs/audit-gsm-hard/`):
`labels.jsonl` (one row per problem: its labels and the re-execution results), `audit.json` (counts and
examples per label, the side-by-side table when a model was evaluated) and `audit.md`.

The side-by-side table (`side_by_side`) scores the model's answers and its last program outputs on
GSM-HARD as a whole, on its unflagged and flagged labels separately, and on the generated set.
`audit_gsm_hard` (called by `pipeline.audit_gsm_hard`) does it all: `audit_labels`, then with a model
the generated set (`tools.generate`), the evaluation (the eval stage's, into `<out>/eval-<model>/`)
and the table, then audit.json and audit.md.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mmos_ray import storage
from mmos_ray.core.gsm_hard import AUDIT_LABELS, audit_label, docstring_question, normalize_text, restore_program, \
    stale_numbers
from mmos_ray.loaders import load_problems

if TYPE_CHECKING:
    from mmos_ray.config import ExperimentConfig

logger = logging.getLogger(__name__)

CALL = "\nprint(solution())\n"  # GSM-HARD's programs define solution() and print nothing


def audit_gsm_hard(cfg: ExperimentConfig, evaluate_model: Callable[[ExperimentConfig, str, str, Path], Any],
                   out: Path | None = None, model: str | None = None, generated: Path | None = None,
                   limit: int | None = None, seed: int = 0, workers: int = 2,
                   prompt: str | None = None) -> dict[str, Any]:
    """The audit as `pipeline.audit_gsm_hard` documents it; `evaluate_model(cfg, model path, prompt,
    folder)` evaluates one model on `cfg.eval.benchmarks` into `folder` (the pipeline's, with its manifest)."""
    from mmos_ray import report as reports
    from mmos_ray.config import SourceConfig
    from mmos_ray.core.errors import DataError
    from mmos_ray.stages import evaluate as evaluation
    from mmos_ray.tools.generate import generate, summary_path

    # What the caller named is checked before the audit's minutes of sandbox work, not after.
    if generated is not None and not Path(generated).is_file():
        raise DataError(f"--generated {generated}: no such file; make one with `mmos generate` or leave "
                        "--generated out (with --model, a large set is generated into the audit folder)")
    try:
        path = evaluation.resolve(model, cfg.paths) if model is not None else None
    except ValueError as exc:
        raise DataError(f"--model: {exc}") from None
    out = Path(out) if out is not None else cfg.paths.runs_dir / "audit-gsm-hard"
    audit = audit_labels(out, data_dir=cfg.paths.data_dir, limit=limit, workers=workers)
    audit["choices"] = {"limit": limit, "seed": seed}
    if path is not None:
        if generated is None:
            generated = out / f"gsm8k-large-seed{seed}-{limit or 'all'}.jsonl"
            if not summary_path(generated).exists():  # the summary is written last: the set is complete
                generate("gsm-hard", "large", generated, seed=seed, limit=limit, data_dir=cfg.paths.data_dir,
                         workers=workers)
        sources = [SourceConfig(dataset="gsm-hard", limit=limit),
                   SourceConfig(dataset="generated", path=Path(generated), limit=limit)]
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"benchmarks": sources})})
        eval_dir = out / f"eval-{Path(path).name}"
        prompt = prompt or cfg.eval.trained_prompt
        evaluate_model(cfg, path, prompt, eval_dir)
        graded = storage.read_parquet(eval_dir / "model" / "graded.parquet")
        audit["side_by_side"] = side_by_side(out / "labels.jsonl", graded)
        metrics = evaluation.read_metrics(eval_dir)
        audit["evaluation"] = {"model": path, "prompt": prompt, "grader": metrics["grader"],
                               "sampling": metrics["sampling"], "folder": str(eval_dir)}
    if generated is not None:
        audit["generated"] = reports.generated_set(Path(generated))
    storage.write_json(out / "audit.json", audit)
    storage.write_text(out / "audit.md", reports.audit_markdown(audit))
    return audit | {"out": str(out)}


def audit_labels(out_dir: Path, data_dir: Path | None = None, limit: int | None = None, workers: int = 2,
                 examples: int = 5, timeout_s: float = 5.0) -> dict[str, Any]:
    """Classify the labels of the first `limit` GSM-HARD problems (all by default); write labels.jsonl and
    audit.json into `out_dir`; return the audit (counts, examples)."""
    from mmos_ray.sandbox import Limits, Sandbox

    hard = load_problems("gsm-hard", "test", data_dir=data_dir, limit=limit)
    gsm8k = {normalize_text(p.question): p for p in load_problems("gsm8k", "test", data_dir=data_dir)}
    pairs = [(problem, gsm8k.get(docstring_question(problem.meta.get("code") or "") or "")) for problem in hard]
    programs = []
    for problem, original in pairs:
        code = problem.meta.get("code") or ""
        programs.append(code + CALL)
        programs.append(restore_program(code, problem.question, original.question) + CALL if original else "")
    with Sandbox(workers=workers, limits=Limits(timeout_s=timeout_s)) as sandbox:
        results = iter(sandbox.execute_many(programs))
    rows = []
    for problem, original in pairs:
        own, restored = next(results), next(results)
        stale = stale_numbers(problem.meta.get("code") or "", problem.question, original.question) if original else []
        row = {"id": problem.id, "target": problem.gold, "gsm8k_id": original.id if original else None,
               "gsm8k_gold": original.gold if original else None,
               "own_rerun": own.last_line if own.ok else "", "own_error": own.error or None,
               "restored_rerun": restored.last_line if original and restored.ok else "",
               "stale_numbers": [str(value) for value in stale]}
        row["labels"] = audit_label(_target(problem), row["own_rerun"], row["gsm8k_gold"], row["restored_rerun"], stale)
        rows.append(row | {"question": problem.question, "gsm8k_question": original.question if original else None})
    audit = summarize(rows, examples)
    out_dir = Path(out_dir)
    storage.write_text(out_dir / "labels.jsonl",
                       "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows))
    storage.write_json(out_dir / "audit.json", audit)
    logger.info("audit: %d of %d GSM-HARD labels flagged; wrote %s", audit["counts"]["flagged"], len(rows), out_dir)
    return audit


def _target(problem) -> float:
    return float(problem.gold.replace(",", ""))


def summarize(rows: list[dict], examples: int = 5) -> dict[str, Any]:
    """Counts per label (a problem may carry several) and the first `examples` problems of each."""
    per_label = Counter(label for row in rows for label in row["labels"])
    counts = {"problems": len(rows), "paired_with_gsm8k": sum(row["gsm8k_id"] is not None for row in rows),
              "flagged": sum(bool(row["labels"]) for row in rows)}
    counts |= {label: per_label.get(label, 0) for label in AUDIT_LABELS}
    keep = ("id", "question", "target", "own_rerun", "gsm8k_question", "gsm8k_gold", "restored_rerun",
            "stale_numbers")
    shown = {label: [{k: row[k] for k in keep} for row in rows if label in row["labels"]][:examples]
             for label in AUDIT_LABELS}
    return {"counts": counts, "shares": {k: round(v / max(1, len(rows)), 4) for k, v in counts.items()
                                         if k != "problems"},
            "examples": shown, "labels": list(AUDIT_LABELS)}


def side_by_side(labels_path: Path, graded: list[dict]) -> list[dict[str, Any]]:
    """The model's accuracy per scoring (final answer, last program output, either) on GSM-HARD, on its
    unflagged and its flagged labels, and on each other benchmark in `graded` (the eval stage's rows)."""
    flagged = {}
    for _, row in storage.read_records(labels_path):
        flagged[row["id"]] = bool(row["labels"])
    groups: dict[str, list[dict]] = {}
    for row in graded:
        name = row["benchmark"]
        groups.setdefault(name, []).append(row)
        if name.startswith("gsm-hard") and row["problem_id"] in flagged:
            part = "flagged labels" if flagged[row["problem_id"]] else "unflagged labels"
            groups.setdefault(f"{name} ({part})", []).append(row)
    table = []
    for name in sorted(groups, key=lambda n: (not n.startswith("gsm-hard"), n)):
        rows = groups[name]
        answer = sum(bool(r["correct"]) for r in rows)
        program = sum(bool(r["program_correct"]) for r in rows)
        either = sum(bool(r["correct"]) or bool(r["program_correct"]) for r in rows)
        table.append({"benchmark": name, "problems": len({r["problem_id"] for r in rows}), "samples": len(rows),
                      "answer_accuracy": round(answer / len(rows), 4),
                      "program_output_accuracy": round(program / len(rows), 4),
                      "answer_or_program_accuracy": round(either / len(rows), 4)})
    return table
