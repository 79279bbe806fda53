"""Stage 04, mix: the selected paths of every source, mixed by rate, decontaminated, as the SFT file.

    mmos mix --config configs/quickstart.yaml          (or pipeline.mix(cfg), jobs/04_mix.py)

Reads `03_minimize/ranked.parquet` (rows with `selected`) and the run's earlier stages for the funnel.
A source is a dataset split of the run's problems (`gsm8k/train`); `mix.rates` keeps a fraction or a
count of each (`core.mixing`). Decontamination (on by default) drops paths whose question shares a word
13-gram with any evaluation set found in the data directory. Writes to `04_mix/`:
- `sft.parquet` (id, prompt, completion and lineage: source, problem id, sample index, rank, model,
  prompt version) and `sft.jsonl` in the `{idx, prompt, completion}` shape of the released MMOS data;
- `decontamination.json` (every removal, with the evaluation problem and the shared words);
- `data_card.json` / `data_card.md`: the funnel per source (problems, samples, correct, executable,
  distinct, selected, mixed, after decontamination), k, seeds, versions;
and `_manifest.json` last. Plain Python: nothing here needs a cluster.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from mmos_ray import storage
from mmos_ray.config import MixConfig, PathsConfig
from mmos_ray.core.errors import DataError
from mmos_ray.core.mixing import Decontaminator, decontaminate, mix, removal_summary
from mmos_ray.core.problems import DATASETS
from mmos_ray.core.prompts import train_prompt
from mmos_ray.core.records import Problem

logger = logging.getLogger(__name__)


def run(mix_cfg: MixConfig, paths: PathsConfig, stage_dir: Path) -> dict[str, Any]:
    run_dir = stage_dir.parent
    layout = storage.RunLayout(run_dir)
    problems = {p["id"]: Problem.from_row(p) for p in storage.read_parquet(layout.problems)}
    ranked = storage.read_parquet(layout.ranked)
    selected = [r for r in ranked if r["selected"]]
    by_source: dict[str, list[dict]] = {}
    for row in selected:
        by_source.setdefault(_source(row["problem_id"]), []).append(row)
    mixed = mix(by_source, mix_cfg.rates, mix_cfg.seed, row_id=_row_id)
    kept = {source: list(rows) for source, rows in mixed.items()}
    removed: list[dict] = []
    eval_sets: list[str] = []
    if mix_cfg.decontaminate:
        eval_texts, eval_sets = _evaluation_questions(paths, mix_cfg.decontaminate_against)
        index = Decontaminator(eval_texts, n=mix_cfg.ngram)
        for source, rows in mixed.items():
            kept[source], gone = decontaminate(rows, lambda r: problems[r["problem_id"]].question, _row_id, index)
            removed.extend(gone)
    sft = [_sft_row(row, problems[row["problem_id"]], source)
           for source in sorted(kept) for row in kept[source]]
    if not sft:
        logger.warning("mix: the SFT set is empty (%d selected paths, %d removed by decontamination); the data "
                       "card shows where the funnel ran dry", len(selected), len(removed))
    storage.write_parquet(stage_dir / layout.SFT, sft, empty_columns=SFT_COLUMNS)
    storage.write_text(stage_dir / "sft.jsonl", "".join(
        json.dumps({"idx": i, "prompt": r["prompt"], "completion": r["completion"]}, ensure_ascii=False) + "\n"
        for i, r in enumerate(sft)))
    storage.write_json(stage_dir / "decontamination.json", {"ngram": mix_cfg.ngram, "eval_sets": eval_sets,
                                                           "removed": removed, "by_eval_set": removal_summary(removed)})
    card = _data_card(run_dir, problems, ranked, by_source, mixed, kept, mix_cfg, eval_sets, len(removed))
    storage.write_json(stage_dir / layout.DATA_CARD, card)
    storage.write_text(stage_dir / "data_card.md", _card_markdown(card))
    logger.info("mix: %d SFT examples from %d sources (%d removed by decontamination)", len(sft), len(kept),
                len(removed))
    return {"counts": {"examples": len(sft), "decontaminated": len(removed),
                       **{f"examples:{s}": len(rows) for s, rows in sorted(kept.items())}},
            "rates": mix_cfg.rates, "seed": mix_cfg.seed}


SFT_COLUMNS = ("id", "prompt", "completion", "source", "problem_id", "sample_idx", "rank", "model", "prompt_version")


def _source(problem_id: str) -> str:
    return problem_id.rsplit("/", 1)[0]


def _row_id(row: dict) -> str:
    return f"{row['problem_id']}#{row['sample_idx']}"


def _sft_row(row: dict, problem: Problem, source: str) -> dict:
    return {"id": _row_id(row), "prompt": train_prompt(problem.question), "completion": row["text"],
            "source": source, "problem_id": row["problem_id"], "sample_idx": int(row["sample_idx"]),
            "rank": int(row["rank"]), "model": row["model"], "prompt_version": row["prompt_version"]}


def _evaluation_questions(paths: PathsConfig, only: list[str] | None) -> tuple[list[tuple[str, str]], list[str]]:
    """Every evaluation split (all but train) that the data directory holds, or the ones named in `only`."""
    from mmos_ray.loaders import load_problems

    known = {f"{name}/{split}" for name, spec in DATASETS.items() for split in spec.splits}
    unknown = sorted(set(only or ()) - known)
    if unknown:
        raise DataError(f"mix.decontaminate_against: unknown split(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(known))}")
    texts, found, missing = [], [], []
    for name, spec in DATASETS.items():
        for split in spec.splits:
            if split == "train" or (only is not None and f"{name}/{split}" not in only):
                continue
            try:
                loaded = load_problems(name, split, data_dir=paths.data_dir, hub=paths.hub_datasets)
            except DataError:
                missing.append(f"{name}/{split}")
                continue
            texts.extend((p.id, p.question) for p in loaded)
            found.append(f"{name}/{split}")
    if missing:
        logger.warning("mix: not checked for contamination (not in the data directory): %s", ", ".join(missing))
    return texts, found


def _data_card(run_dir: Path, problems, ranked, by_source, mixed, kept, mix_cfg, eval_sets, removed) -> dict:
    layout = storage.RunLayout(run_dir)
    funnel: dict[str, Counter] = {}

    def count(source: str, key: str, n: int = 1) -> None:
        funnel.setdefault(source, Counter())[key] += n

    for pid in problems:
        count(_source(pid), "problems")
    for r in storage.read_parts(layout.sample):
        count(_source(r["problem_id"]), "samples")
    for r in storage.read_parts(layout.verify):
        count(_source(r["problem_id"]), "correct", int(r["correct"]))
        count(_source(r["problem_id"]), "executable", int(r["correct"] and r["exec_ok"]))
    for r in ranked:
        count(_source(r["problem_id"]), "distinct")
    for source in funnel:
        count(source, "selected", len(by_source.get(source, [])))
        count(source, "mixed", len(mixed.get(source, [])))
        count(source, "after_decontamination", len(kept.get(source, [])))
    sampled, verified, minimized = (storage.read_manifest(stage) or {} for stage in
                                    (layout.sample, layout.verify, layout.minimize))
    order = ("problems", "samples", "correct", "executable", "distinct", "selected", "mixed", "after_decontamination")
    return {"funnel": {s: {k: funnel[s][k] for k in order} for s in sorted(funnel)},
            "k": minimized.get("k"), "selection": minimized.get("selection"),
            "set_size_by_k": minimized.get("set_size_by_k"),
            "seeds": {"sample": _sample_seed(run_dir),
                      "minimize": minimized.get("seed"), "mix": mix_cfg.seed},
            "rates": mix_cfg.rates, "decontamination": {"ngram": mix_cfg.ngram, "eval_sets": eval_sets,
                                                        "removed": removed} if mix_cfg.decontaminate else None,
            "model": sampled.get("model"), "prompt_version": sampled.get("prompt_version"),
            "grader": verified.get("grader"), "versions": sampled.get("versions"),
            "licence_note": "ASDiv and TabMWP are licensed for non-commercial use only."}


def _sample_seed(run_dir: Path):
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    return (config.get("sample") or {}).get("seed")


def _card_markdown(card: dict) -> str:
    columns = ("problems", "samples", "correct", "executable", "distinct", "selected", "mixed",
               "after_decontamination")
    lines = ["# Data card", "", f"Model: `{card['model']}` · prompt: `{card['prompt_version']}` · grader: "
             f"`{card['grader']}` · selection: `{card['selection']}`, k = {card['k']} · seeds: {card['seeds']}", "",
             "| source | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for source, row in card["funnel"].items():
        lines.append(f"| {source} | " + " | ".join(str(row[c]) for c in columns) + " |")
    if card.get("set_size_by_k"):
        lines += ["", "Set size by k: " + ", ".join(f"k={row['k']}: {row['size']}" for row in card["set_size_by_k"])]
    if card.get("decontamination"):
        d = card["decontamination"]
        lines += ["", f"Decontamination: word {d['ngram']}-grams against {', '.join(d['eval_sets']) or 'nothing'}; "
                      f"{d['removed']} paths removed (see decontamination.json)."]
    lines += ["", card["licence_note"], ""]
    return "\n".join(lines)
