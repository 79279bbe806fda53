"""Stage 06, eval: the models on the benchmarks, with the sampling stage's tool-integrated loop.

    mmos eval --config configs/quickstart.yaml            (or pipeline.evaluate(cfg), jobs/06_eval.py)
    mmos eval --model DIR --benchmarks gsm8k,svamp        (any model folder, outside a run's stages)

For each model (`eval.models`: the run's base model, with `eval.base_prompt`, and the model stage 05
trained, with `eval.trained_prompt`; or `eval.engine.model` alone) and each benchmark in `eval.benchmarks`,
the problems go through the same Ray Data engine actors, trajectory loop and sandbox pool as stage 01
(`stages.sample.Sampler`) with `eval.generation` (the shared `generation` section and eval's own keys),
`eval.num_samples` per problem (1 with temperature 0 = greedy pass@1), written as resumable parts under
`06_eval/<model>/`. Answers are graded in the sandboxed grader (`eval.grader`); GSM-HARD and generated
sets (`mmos generate`), whose labels programs computed, are also scored on the last program output
(mmos-method.md §2.7). `metrics.json` holds, per model and benchmark, pass@1
(mean and std over sample columns), unbiased pass@k and maj@k (equivalence-class vote) when n > 1,
per-type and per-level accuracy for MATH, timeouts and empty answers — next to the model, prompt
version, sampling parameters and grader mode/version that produced them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from mmos_ray import storage
from mmos_ray.config import EvalConfig, GenerationConfig, PathsConfig, SampleConfig
from mmos_ray.core.answers import extract_answer, extract_program_output, normalize_answer
from mmos_ray.core.grading import GRADER_VERSION
from mmos_ray.core.metrics import breakdown, summarize
from mmos_ray.core.prompts import PROMPT_VERSIONS
from mmos_ray.core.records import Problem, Trajectory
from mmos_ray.loaders import load_problems
from mmos_ray.models import resolve_model

logger = logging.getLogger(__name__)

TIMEOUT_MARK = "TimeoutError:"
# Benchmarks whose labels came from running programs: also scored on the model's last program output.
PROGRAM_LABELLED = ("gsm-hard", "generated")


def run(eval: EvalConfig, sample: SampleConfig, paths: PathsConfig, stage_dir: Path) -> dict[str, Any]:  # noqa: A002
    models = _models(eval, paths, stage_dir.parent)
    return evaluate(eval, sample, paths, stage_dir, models)


def evaluate(eval: EvalConfig, sample: SampleConfig, paths: PathsConfig, stage_dir: Path,  # noqa: A002
             models: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Evaluate {label: (model path, prompt style)}; write metrics.json; return the manifest facts."""
    from mmos_ray.cluster.resources import ensure_ray

    problems = _problems(eval, paths)
    ensure_ray()
    results = {}
    for label, (model, prompt) in models.items():
        logger.info("eval: %s (%s, %s prompt) on %d problems x %d samples", label, model, prompt, len(problems),
                    eval.num_samples)
        trajectories = _sample(eval, sample, stage_dir / label, model, prompt, problems)
        graded = _grade(eval, problems, trajectories)
        storage.write_parquet(stage_dir / label / "graded.parquet", graded)
        results[label] = {"model": model, "prompt": prompt, "prompt_version": PROMPT_VERSIONS[prompt],
                          "benchmarks": _metrics(problems, graded, eval.num_samples)}
    metrics = {"models": results, "grader": {"mode": eval.grader, "version": GRADER_VERSION},
               "sampling": _sampling(eval), "benchmarks": sorted({_benchmark(p) for p in problems}),
               "files": {s.name: str(s.path) for s in eval.benchmarks if s.path is not None}}
    storage.write_json(stage_dir / "metrics.json", metrics)
    counts = {"problems": len(problems), "models": len(models)}
    for label, result in results.items():
        for name, values in result["benchmarks"].items():
            counts[f"{label}:{name}"] = round(values["pass@1"], 4)
    return {"counts": counts, "metrics": str(stage_dir / "metrics.json"), "grader": metrics["grader"],
            "sampling": metrics["sampling"]}


def _models(eval: EvalConfig, paths: PathsConfig, run_dir: Path) -> dict[str, tuple[str, str]]:
    if eval.engine.model:
        return {"model": (resolve(eval.engine.model, paths), eval.trained_prompt)}
    trained = storage.read_manifest(storage.RunLayout(run_dir).train)
    if trained is None:
        raise RuntimeError(f"eval: {storage.RunLayout(run_dir).train} has no manifest; run the train stage first")
    models = {}
    if "base" in eval.models:
        models["base"] = (trained["base_model"], eval.base_prompt or eval.generation.prompt)
    if "trained" in eval.models:
        if trained.get("trained"):
            models["trained"] = (trained["model"], eval.trained_prompt)
        else:
            logger.warning("eval: stage 05 trained nothing (no SFT examples), so there is no trained model to "
                           "evaluate; only the base model is")
    return models


def _problems(eval: EvalConfig, paths: PathsConfig) -> list[Problem]:
    problems = []
    for source in eval.benchmarks:
        problems.extend(load_problems(source.dataset, source.split, data_dir=paths.data_dir, limit=source.limit,
                                      hub=paths.hub_datasets, path=source.path))
    if not problems:
        raise ValueError("eval: the benchmarks hold no problems; check eval.benchmarks")
    return problems


def _sampling(eval: EvalConfig) -> dict[str, Any]:
    return {"num_samples": eval.num_samples, **eval.generation.model_dump(exclude={"prompt"})}


def generation_for(eval: EvalConfig, prompt: str) -> GenerationConfig:  # noqa: A002
    """`eval.generation` with the prompt of the model being evaluated."""
    return GenerationConfig.model_validate({**eval.generation.model_dump(), "prompt": prompt})


def _sample(eval: EvalConfig, sample: SampleConfig, out: Path, model: str, prompt: str,
            problems: list[Problem]) -> list[Trajectory]:
    from mmos_ray.stages.sample import Sampler, read_trajectories

    out.mkdir(parents=True, exist_ok=True)
    sampler = Sampler(sample, generation_for(eval, prompt), eval.engine, model, out, batch_size=eval.batch_size)
    try:
        sampler.sample([(p, i) for p in problems for i in range(eval.num_samples)])
    finally:
        sampler.close()
    wanted = {p.id for p in problems}
    return [t for t in read_trajectories(out) if t.problem_id in wanted and t.sample_idx < eval.num_samples]


def _grade(eval: EvalConfig, problems: list[Problem], trajectories: list[Trajectory]) -> list[dict]:
    from mmos_ray.sandbox.grader import Grader

    by_id = {p.id: p for p in problems}
    compat = eval.grader == "compat"
    rows = []
    for t in sorted(trajectories, key=lambda t: (t.problem_id, t.sample_idx)):
        problem = by_id[t.problem_id]
        output = extract_program_output(t.text)
        rows.append({"problem_id": t.problem_id, "benchmark": _benchmark(problem), "sample_idx": t.sample_idx,
                     "answer": extract_answer(t.text, normalize=compat), "gold": problem.gold_for(eval.grader),
                     "program_output": normalize_answer(output.splitlines()[-1]) if output.strip() else "",
                     "finish_reason": t.finish_reason, "num_tokens": t.num_tokens, "rounds": t.rounds,
                     "timeout": TIMEOUT_MARK in t.text, "error": t.error, "prompt_version": t.prompt_version,
                     "model": t.model, "program_correct": None})
    with Grader(eval.grader) as grader:
        verdicts = grader.grade_many([(r["answer"], r["gold"]) for r in rows])
        hard = [i for i, r in enumerate(rows) if r["benchmark"].startswith(PROGRAM_LABELLED)]
        program = grader.grade_many([(rows[i]["program_output"], rows[i]["gold"]) for i in hard])
        classes = _answer_classes(rows, grader) if eval.num_samples > 1 else [None] * len(rows)
    for row, verdict, cls in zip(rows, verdicts, classes):
        row.update(correct=verdict.correct, decided_by=verdict.decided_by, answer_class=cls)
    for i, verdict in zip(hard, program):
        rows[i]["program_correct"] = verdict.correct
    return rows


def _answer_classes(rows: list[dict], grader) -> list[int | None]:
    """Per row, the index of its answer's equivalence class within its problem (None: no answer)."""
    classes: list[int | None] = []
    representatives: dict[str, list[str]] = {}
    for row in rows:
        answer = row["answer"]
        if not answer:
            classes.append(None)
            continue
        seen = representatives.setdefault(row["problem_id"], [])
        match = next((i for i, rep in enumerate(seen) if rep == answer or grader.same(answer, rep)), None)
        if match is None:
            seen.append(answer)
            match = len(seen) - 1
        classes.append(match)
    return classes


def _metrics(problems: list[Problem], graded: list[dict], n: int) -> dict[str, dict]:
    by_problem: dict[str, list[dict]] = {}
    for row in graded:
        by_problem.setdefault(row["problem_id"], []).append(row)
    out = {}
    for name in sorted({_benchmark(p) for p in problems}):
        members = [p for p in problems if _benchmark(p) == name and len(by_problem.get(p.id, [])) == n]
        rows = [r for p in members for r in by_problem[p.id]]
        correct = [[r["correct"] for r in by_problem[p.id]] for p in members]
        classes = [[r["answer_class"] for r in by_problem[p.id]] for p in members]
        result = summarize(correct, classes)
        finish = Counter(r["finish_reason"] for r in rows)
        result |= {"timeouts": sum(r["timeout"] for r in rows), "empty_answers": sum(not r["answer"] for r in rows),
                   "errors": finish.get("error", 0), "finish_reasons": dict(sorted(finish.items())),
                   "mean_tokens": sum(r["num_tokens"] for r in rows) / max(1, len(rows))}
        if name.startswith(PROGRAM_LABELLED):
            result["program_output_accuracy"] = sum(bool(r["program_correct"]) for r in rows) / max(1, len(rows))
            result["answer_or_program_accuracy"] = sum(r["correct"] or bool(r["program_correct"])
                                                       for r in rows) / max(1, len(rows))
        if name.startswith("math"):
            first = [by_problem[p.id][0]["correct"] for p in members]
            result["by_type"] = breakdown([p.meta.get("type") or "?" for p in members], first)
            result["by_level"] = breakdown([p.meta.get("level") or "?" for p in members], first)
        missing = sum(1 for p in problems if _benchmark(p) == name) - len(members)
        if missing:
            result["missing_problems"] = missing
        out[name] = result
    return out


def _benchmark(problem: Problem) -> str:
    return f"{problem.dataset}/{problem.split}"


def read_metrics(stage_dir: Path) -> dict[str, Any]:
    return json.loads((Path(stage_dir) / "metrics.json").read_text())


def resolve(spec: str, paths: PathsConfig) -> str:
    """A model name or folder as the engines need it (for `mmos eval --model`)."""
    return resolve_model(spec, paths.models_dir, allow_hub=paths.hub_models)
