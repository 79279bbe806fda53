"""The run report: `runs/<name>/report.md` with the data funnel, training, the evaluation table and plots.

    mmos report runs/quickstart          (mmos run writes it at the end)

Reads the stages' own outputs (manifests, `04_mix/data_card.json`, `06_eval/metrics.json`), so it can be
rebuilt at any time; stages that have not run are left out. The table follows the paper's main table:
one row per model, one column per benchmark (pass@1, in %), then the average. Plots (PNG, under
`plots/`): accuracy per benchmark and model; pass@k and maj@k against k when the evaluation drew several
samples per problem (the ability-boundary curve).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmos_ray import storage
from mmos_ray.core.errors import DataError
from mmos_ray.storage import RunLayout

# The paper's column order; other benchmarks follow in name order.
PAPER_ORDER = ("gsm8k", "math", "math500", "svamp", "asdiv", "asdiv-a", "gsm-hard", "mawps", "tabmwp")


def build(run_dir: Path, sweep: list[Path] | tuple[Path, ...] = ()) -> dict[str, Any]:
    """Write report.md (and plots) for a run folder; returns {"path", "funnel", "table"} (Markdown parts).

    `sweep`: other runs of the same experiment with another `minimize.k` (or mix rates); with them the
    report adds the ability-boundary table and plot: trained-model accuracy against k and SFT size.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"report: no run folder at {run_dir}; pass the folder a run wrote, e.g. runs/quickstart")
    layout = RunLayout(run_dir)
    manifests = {folder: storage.read_manifest(layout.stage(folder)) for folder in RunLayout.STAGES}
    card_path = layout.data_card
    card = json.loads(card_path.read_text()) if card_path.exists() else None
    metrics_path = layout.metrics
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None

    funnel = funnel_markdown(card) if card else ""
    table = table_markdown(metrics) if metrics else ""
    plots = _plots(metrics, run_dir / "plots") if metrics else []
    lines = [f"# Run `{run_dir.name}`", ""]
    lines += sandbox_warning(manifests)
    sample = manifests[RunLayout.SAMPLE]
    if sample:
        lines += [f"Sampling model: `{sample['model']}` · engine: {sample.get('engine')} · prompt: "
                  f"`{sample.get('prompt_version')}` · {sample['counts'].get('samples', 0)} samples", ""]
    if funnel:
        lines += ["## Data funnel", "", funnel, ""]
    train = manifests[RunLayout.TRAIN]
    if train:
        lines += ["## Training", "", _training_markdown(train), ""]
    if table:
        lines += ["## Evaluation", "", table, "", _eval_details(metrics), ""]
    for title, path in plots:
        lines += [f"![{title}]({path.relative_to(run_dir).as_posix()})", ""]
    for name, path in sorted((metrics or {}).get("files", {}).items()):
        if name.startswith("generated/") and Path(path).is_file():
            lines += [f"## Generated set `{name}`", "", generated_markdown(generated_set(Path(path))), ""]
    if sweep:
        points = [_sweep_point(Path(r)) for r in (run_dir, *sweep)]
        points = sorted((p for p in points if p), key=lambda p: (p["k"], p["examples"]))
        if points:
            path = _sweep_plot(points, run_dir / "plots")
            lines += ["## Ability boundary (k sweep)", "", _sweep_markdown(points), "",
                      f"![accuracy against k and SFT size]({path.relative_to(run_dir).as_posix()})", ""]
    times = [(f, m["seconds"]) for f, m in manifests.items() if m and "seconds" in m]
    if times:
        lines += ["## Stage times", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {folder} | {seconds:.1f} |" for folder, seconds in times]
        lines += [f"| total | {sum(s for _, s in times):.1f} |", ""]
    path = run_dir / "report.md"
    storage.write_text(path, "\n".join(lines))
    return {"path": str(path), "funnel": funnel, "table": table}


def sandbox_warning(manifests: dict[str, dict | None]) -> list[str]:
    """A warning block when a stage that ran model-written code had a degraded sandbox (any warning, or a
    protection that is "none" / "NOT …"): its results came from programs under weaker isolation."""
    lines = []
    for folder in (RunLayout.SAMPLE, RunLayout.VERIFY):
        sandbox = (manifests.get(folder) or {}).get("sandbox")
        if not sandbox:
            continue
        weak = [f"{name}: {value}" for name, value in sandbox.get("protections", {}).items()
                if name != "preloaded" and (value == "none" or str(value).startswith("NOT"))]
        for problem in [*sandbox.get("warnings", []), *weak]:
            lines.append(f"> - `{folder}`: {problem}")
    if not lines:
        return []
    return ["> **Warning: this run's sandbox was degraded.** Model-written programs ran with weaker isolation "
            "than the full sandbox (see `mmos sandbox check` and the README's sandbox section):", ">", *lines, ""]


def funnel_markdown(card: dict) -> str:
    columns = ("problems", "samples", "correct", "executable", "distinct", "selected", "mixed", "after_decontamination")
    lines = ["| source | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for source, row in card["funnel"].items():
        lines.append(f"| {source} | " + " | ".join(str(row.get(c, 0)) for c in columns) + " |")
    return "\n".join(lines)


def _training_markdown(train: dict) -> str:
    if not train.get("trained"):
        return "Nothing was trained (the mix stage produced no examples); the evaluation uses the base model."
    return (f"Base `{train['base_model']}` → `{train['model']}` · {train['counts']['examples']} examples, "
            f"{train['counts']['steps']} steps · loss {train['first_loss']} → {train['final_loss']} · "
            f"{train['tokens_per_s']} tokens/s on {train['device']}")


def _ordered(names: list[str]) -> list[str]:
    def key(name: str):
        dataset = name.split("/")[0]
        return (PAPER_ORDER.index(dataset) if dataset in PAPER_ORDER else len(PAPER_ORDER), name)

    return sorted(names, key=key)


def table_markdown(metrics: dict) -> str:
    """Models x benchmarks, pass@1 in %, and the average: the layout of the paper's main table."""
    names = _ordered(metrics["benchmarks"])
    lines = ["| model | prompt | " + " | ".join(names) + " | avg |", "|---|---" + "|---" * (len(names) + 1) + "|"]
    for label, result in metrics["models"].items():
        scores = [result["benchmarks"].get(name, {}).get("pass@1") for name in names]
        shown = [s for s in scores if s is not None]
        average = f"{100 * sum(shown) / len(shown):.1f}" if shown else "–"
        lines.append(f"| {label} | {result['prompt_version']} | "
                     + " | ".join("–" if s is None else f"{100 * s:.1f}" for s in scores) + f" | {average} |")
    return "\n".join(lines)


def _eval_details(metrics: dict) -> str:
    sampling = metrics["sampling"]
    lines = [f"pass@1 in %; {sampling['num_samples']} sample(s) per problem, temperature {sampling['temperature']}, "
             f"max {sampling['max_tokens']} tokens x {sampling['max_rounds']} rounds, seed {sampling['seed']}; "
             f"grader `{metrics['grader']['mode']}` v{metrics['grader']['version']}.", ""]
    for label, result in metrics["models"].items():
        lines.append(f"- **{label}** (`{result['model']}`):")
        for name in _ordered(list(result["benchmarks"])):
            values = result["benchmarks"][name]
            extra = [f"{key} {100 * values[key]:.1f}" for key in sorted(values)
                     if key.startswith(("pass@", "maj@")) and key not in ("pass@1", "pass@1_std")]
            if values.get("pass@1_std"):
                extra.insert(0, f"std {100 * values['pass@1_std']:.1f}")
            if "program_output_accuracy" in values:
                extra.append(f"program output {100 * values['program_output_accuracy']:.1f}")
            extra.append(f"{values['timeouts']} timeouts, {values['empty_answers']} empty answers, "
                         f"{values['problems']} problems")
            lines.append(f"  - {name}: pass@1 {100 * values['pass@1']:.1f} · " + " · ".join(extra))
    return "\n".join(lines)


def generated_set(path: Path, examples: int = 5) -> dict[str, Any]:
    """What `mmos generate` wrote to `path`: its summary (acceptance rate, rejection reasons) and the first
    `examples` problems beside the ones they were generated from."""
    from mmos_ray.tools.generate import summary_path

    summary_file = summary_path(path)
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    shown = []
    for _, row in storage.read_records(path):
        if len(shown) == examples:
            break
        shown.append({"source_id": row.get("source_id"), "original_question": row.get("original_question"),
                      "original_answer": row.get("original_answer"), "question": row.get("question"),
                      "answer": str(row.get("answer", "")).split("####")[-1].strip(),
                      "agreeing_programs": len(row.get("agreeing_programs") or [])})
    return {"file": str(path), "summary": summary, "examples": shown}


def generated_markdown(info: dict) -> str:
    summary = info["summary"]
    lines = []
    if summary:
        rejections = ", ".join(f"{reason} {count}" for reason, count in summary.get("rejections", {}).items())
        lines += [f"`{info['file']}`: mode `{summary.get('mode')}`, seed {summary.get('seed')}, at least "
                  f"{summary.get('min_agree')} structurally different programs agreeing. Accepted "
                  f"{summary.get('accepted')} of {summary.get('problems')} problems "
                  f"({100 * summary.get('acceptance_rate', 0):.1f}%); rejected: {rejections or 'none'}.", ""]
    for i, row in enumerate(info["examples"], 1):
        lines += [f"{i}. {row['question']} → **{row['answer']}** ({row['agreeing_programs']} programs agree)",
                  f"   - from `{row['source_id']}`: {row['original_question']} → {row['original_answer']}"]
    return "\n".join(lines)


def audit_markdown(audit: dict) -> str:
    """audit.md: the GSM-HARD label counts with examples, the side-by-side scores, the generated set."""
    counts, shares = audit["counts"], audit["shares"]
    lines = ["# GSM-HARD audit", "",
             f"{counts['problems']} GSM-HARD problems, {counts['paired_with_gsm8k']} paired with their GSM8K question; "
             f"**{counts['flagged']} labels flagged** ({100 * shares['flagged']:.1f}%). A label may carry several flags.",
             "", "| flag | problems | share |", "|---|---|---|"]
    lines += [f"| {label} | {counts[label]} | {100 * shares[label]:.1f}% |" for label in audit["labels"]]
    if audit.get("side_by_side"):
        evaluation = audit["evaluation"]
        sampling = evaluation["sampling"]
        lines += ["", "## Side by side", "",
                  f"Model `{evaluation['model']}`, prompt `{evaluation['prompt']}`, {sampling['num_samples']} "
                  f"sample(s), temperature {sampling['temperature']}, seed {sampling['seed']}, grader "
                  f"`{evaluation['grader']['mode']}` v{evaluation['grader']['version']}. Accuracy in % of samples, "
                  "scored on the final answer, on the last program output, and on either.", "",
                  "| benchmark | problems | answer | program output | either |", "|---|---|---|---|---|"]
        lines += [f"| {row['benchmark']} | {row['problems']} | {100 * row['answer_accuracy']:.1f} | "
                  f"{100 * row['program_output_accuracy']:.1f} | {100 * row['answer_or_program_accuracy']:.1f} |"
                  for row in audit["side_by_side"]]
    if audit.get("generated"):
        lines += ["", "## Generated set", "", generated_markdown(audit["generated"])]
    lines += ["", "## Examples", ""]
    for label in audit["labels"]:
        if not audit["examples"][label]:
            continue
        lines += [f"### {label}", ""]
        for row in audit["examples"][label]:
            lines += [f"- `{row['id']}` label **{row['target']}** (its program prints {row['own_rerun'] or 'nothing'}; "
                      f"GSM8K answer {row['gsm8k_gold']}, the program on GSM8K's numbers prints "
                      f"{row['restored_rerun'] or 'nothing'}): {row['question']}"]
        lines.append("")
    return "\n".join(lines) + "\n"


def _plots(metrics: dict, out: Path) -> list[tuple[str, Path]]:
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    names = _ordered(metrics["benchmarks"])
    labels = list(metrics["models"])
    plots = []
    figure, axes = plt.subplots(figsize=(max(5, 1.4 * len(names) + 2), 3.5))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        values = [100 * metrics["models"][label]["benchmarks"].get(n, {}).get("pass@1", 0) for n in names]
        axes.bar([x + i * width for x in range(len(names))], values, width, label=label)
    axes.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(names))], names, rotation=20)
    axes.set_ylabel("pass@1 (%)")
    axes.set_title("Accuracy per benchmark")
    axes.legend()
    figure.tight_layout()
    path = out / "accuracy.png"
    _save(figure, path)
    plots.append(("accuracy per benchmark", path))
    if metrics["sampling"]["num_samples"] > 1:
        figure, axes = plt.subplots(figsize=(6, 3.5))
        for label in labels:
            for name in names:
                values = metrics["models"][label]["benchmarks"].get(name, {})
                for kind, style in (("pass", "-o"), ("maj", "--s")):
                    ks = sorted(int(key.split("@")[1]) for key in values if key.startswith(f"{kind}@") and "_" not in key)
                    if ks:
                        axes.plot(ks, [100 * values[f"{kind}@{k}"] for k in ks], style, label=f"{label} {name} {kind}@k")
        axes.set_xscale("log", base=2)
        axes.set_xlabel("k (samples per problem)")
        axes.set_ylabel("accuracy (%)")
        axes.set_title("Ability boundary: accuracy against k")
        axes.legend(fontsize=7)
        figure.tight_layout()
        path = out / "accuracy_vs_k.png"
        _save(figure, path)
        plots.append(("accuracy against k", path))
    plt.close("all")
    return plots


def _pyplot():
    """matplotlib's pyplot on the file-only backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    tmp.replace(path)


def _sweep_point(run_dir: Path) -> dict[str, Any] | None:
    """(k, SFT examples, trained pass@1 per benchmark) of one run, or None when it lacks a trained evaluation."""
    layout = RunLayout(run_dir)
    minimize, mix = storage.read_manifest(layout.minimize), storage.read_manifest(layout.mix)
    metrics_path = layout.metrics
    if not (minimize and mix and metrics_path.exists()):
        raise DataError(f"report: {run_dir} has no finished minimize, mix and eval stages to put in the sweep")
    models = json.loads(metrics_path.read_text())["models"]
    trained = models.get("trained")
    if trained is None:
        return None
    scores = {name: values["pass@1"] for name, values in trained["benchmarks"].items()}
    return {"run": run_dir.name, "k": minimize["k"], "examples": mix["counts"]["examples"], "scores": scores}


def _sweep_markdown(points: list[dict]) -> str:
    names = _ordered(sorted({name for p in points for name in p["scores"]}))
    lines = ["| run | k | SFT examples | " + " | ".join(names) + " | avg |", "|---|---|---" + "|---" * (len(names) + 1) + "|"]
    for p in points:
        shown = [p["scores"][n] for n in names if n in p["scores"]]
        cells = ["–" if n not in p["scores"] else f"{100 * p['scores'][n]:.1f}" for n in names]
        lines.append(f"| {p['run']} | {p['k']} | {p['examples']} | " + " | ".join(cells)
                     + f" | {100 * sum(shown) / max(1, len(shown)):.1f} |")
    return "\n".join(lines)


def _sweep_plot(points: list[dict], out: Path) -> Path:
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    names = _ordered(sorted({name for p in points for name in p["scores"]}))
    figure, (by_k, by_size) = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for name in names:
        have = [p for p in points if name in p["scores"]]
        by_k.plot([p["k"] for p in have], [100 * p["scores"][name] for p in have], "-o", label=name)
        by_size.plot([p["examples"] for p in have], [100 * p["scores"][name] for p in have], "-o", label=name)
    by_k.set_xlabel("k (diverse paths per problem)")
    by_size.set_xlabel("SFT examples")
    by_k.set_ylabel("trained pass@1 (%)")
    by_k.set_title("accuracy against k")
    by_size.set_title("accuracy against data size")
    by_size.legend(fontsize=7)
    figure.tight_layout()
    path = out / "accuracy_vs_data.png"
    _save(figure, path)
    plt.close("all")
    return path
