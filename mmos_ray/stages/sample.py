"""Stage 01, sample: tool-integrated reasoning paths for every prepared problem, k per problem.

    mmos sample --config configs/quickstart.yaml       (or pipeline.sample(cfg), jobs/01_sample.py)

Reads `00_prepare/` (problems and model), writes `01_sample/part-*.parquet` (`Trajectory` rows) and
`_manifest.json` last. Ray Data carries rows — one per (problem, sample), each with its own seed; the
repeated prompt is absorbed by vLLM's prefix cache — through engine actors (`TIRSamplerUDF`) that keep
their engine across rounds; their programs run on the sandbox actor pool while the engine generates
for another group of rows (`engines.tir_loop`). Every finished batch is written as its own part
(atomically), so an interrupted run loses at most the batches in flight, and a rerun samples only the
(problem, sample) pairs no part holds yet. A batch whose engine fails becomes error rows, not a crash.
Each (problem, sample) is written once: the driver drops rows whose key a part already holds (a batch
Ray redid after losing its actor or node), and readers keep the first row of a key.

On a cluster, engine actors ask for one `engine` and sandbox actors for one `sandbox` (the custom
resources of the node types of `ray_cluster.yaml`) as `sample.custom_resources` says (see
`stages.cluster`). Engine actors that die (with their node) are restarted by Ray Data and their batches
redone; sandbox actors are restarted by Ray and their calls retried.

Adaptive budget (`sample.adaptive.enabled`): waves of `wave_size` samples per problem, graded after
each wave; a problem stops when it has `target_distinct` distinct correct programs (canonical forms, as
stage 03 counts them) or `max_samples` samples. The
manifest records how many samples each problem took.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray

from mmos_ray import storage
from mmos_ray.config import PathsConfig, SampleConfig
from mmos_ray.core.canonical import canonical_key
from mmos_ray.core.prompts import PROMPT_VERSIONS, render_prompt, stop_strings
from mmos_ray.core.records import Problem, Trajectory
from mmos_ray.core.tir import TIRState
from mmos_ray.engines.base import SamplingParams, create_engine, vllm_available
from mmos_ray.engines.tir_loop import ContinuousLoop, LoopStats, run_rounds
from mmos_ray.sandbox.protocol import Limits
from mmos_ray.stages.cluster import custom_resource, ensure_ray
from mmos_ray.stages.sandbox_pool import SandboxPool

logger = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
ENGINE_BATCHES_IN_FLIGHT = 3


def run(sample: SampleConfig, paths: PathsConfig, stage_dir: Path) -> dict[str, Any]:
    prepared = stage_dir.parent / "00_prepare"
    problems = [Problem.from_row(r) for r in storage.read_parquet(prepared / "problems.parquet")]
    model = storage.read_manifest(prepared)["model"]["path"]
    ensure_ray()
    sampler = _Sampler(sample, model, stage_dir, len(problems))
    try:
        if sample.adaptive.enabled:
            taken = _adaptive(sample, problems, sampler)
        else:
            sampler.sample([(p, i) for p in problems for i in range(sample.num_samples)])
            taken = {p.id: sample.num_samples for p in problems}
    finally:
        sampler.close()
    trajectories = read_trajectories(stage_dir)
    finish = Counter(t.finish_reason for t in trajectories)
    return {"counts": {"problems": len(problems), "samples": len(trajectories), "errors": finish.get("error", 0),
                       **{f"finish:{k}": v for k, v in sorted(finish.items())}},
            "model": model, "engine": sampler.engine_kind, "prompt_version": PROMPT_VERSIONS[sample.prompt],
            "observation": {"mode": sample.observation, "chars": sample.observation_chars},
            "samples_per_problem": taken, "throughput": sampler.throughput()}


def read_trajectories(stage_dir: Path) -> list[Trajectory]:
    """Every (problem, sample) of the stage's parts once (the first part, in name order, holding it wins)."""
    rows, seen = [], set()
    for part in sorted(Path(stage_dir).glob(PART_GLOB)):
        for trajectory in map(Trajectory.from_row, storage.read_parquet(part)):
            if trajectory.key not in seen:
                seen.add(trajectory.key)
                rows.append(trajectory)
    return rows


def sample_seed(base: int, problem_id: str, sample_idx: int) -> int:
    """A seed per (problem, sample), stable across runs and machines."""
    digest = hashlib.sha256(f"{base}:{problem_id}:{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class _Sampler:
    """Runs rows through the engine actors and writes the parts; remembers what is already written."""

    def __init__(self, sample: SampleConfig, model: str, stage_dir: Path, total_problems: int):
        self.cfg = sample
        self.model = model
        self.stage_dir = stage_dir
        self.engine_kind = sample.engine if sample.engine != "auto" else ("vllm" if vllm_available() else "hf")
        self.done = {t.key for t in read_trajectories(stage_dir)}
        self.written = Counter()  # tokens and samples written in this run, for throughput
        self.engine_time: dict[str, tuple[float, float]] = {}  # actor -> cumulative (busy wall, generating)
        self.first_batch_started: float | None = None  # epoch seconds: steady-state time leaves start-up out
        self.last_written: float | None = None
        self.started = time.monotonic()
        self.total_problems = total_problems
        engine_cpus = 1.0 * sample.num_engines
        free = max(1.0, ray.cluster_resources().get("CPU", 1.0) - engine_cpus)
        num_actors = sample.sandbox_actors or max(1, int(free))
        # Fractional CPUs on small machines: sandbox actors idle while the engine generates.
        self.pool = SandboxPool(num_actors=num_actors, limits=Limits(timeout_s=sample.timeout_s),
                                num_cpus=min(1.0, free / num_actors) * 0.5,
                                custom_resources=sample.custom_resources)

    def sample(self, keys: list[tuple[Problem, int]]) -> list[Trajectory]:
        todo = [(p, i) for p, i in keys if (p.id, i) not in self.done]
        if not todo:
            return []
        rows = [{"problem_id": p.id, "sample_idx": i, "seed": sample_seed(self.cfg.seed, p.id, i),
                 "prompt": render_prompt(p.question, self.cfg.prompt)} for p, i in todo]
        logger.info("sample: %d samples to draw (%d already written)", len(rows), len(keys) - len(todo))
        resources = _engine_resources(self.engine_kind, self.cfg.custom_resources)
        dataset = ray.data.from_items(rows).map_batches(
            TIRSamplerUDF, batch_size=self.cfg.batch_size, concurrency=self.cfg.num_engines, batch_format="pyarrow",
            # Batches overlap inside an engine actor (vLLM: one continuous batch), so a batch's stragglers
            # do not leave the engine idle.
            max_concurrency=ENGINE_BATCHES_IN_FLIGHT if self.engine_kind == "vllm" else 1,
            fn_constructor_kwargs=dict(config=self.cfg.model_dump(), model=self.model, engine_kind=self.engine_kind,
                                       sandbox_actors=self.pool.actors), **resources)
        new = []
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            new.extend(self._write_part(batch.to_pylist()))
        return new

    def _write_part(self, rows: list[dict]) -> list[Trajectory]:
        for row in rows:
            seen = self.engine_time.get(row["_actor"], (0.0, 0.0))
            self.engine_time[row["_actor"]] = (max(seen[0], row["_wall_s"]), max(seen[1], row["_generate_s"]))
            self.first_batch_started = min(row["_started"], self.first_batch_started or row["_started"])
        trajectories = []
        for trajectory in map(Trajectory.from_row, rows):
            if trajectory.key not in self.done:  # a batch Ray redid (lost actor or node) is not written twice
                self.done.add(trajectory.key)
                trajectories.append(trajectory)
        if len(trajectories) < len(rows):
            logger.warning("sample: %d rows already written (a redone batch), dropped",
                           len(rows) - len(trajectories))
        if not trajectories:
            return []
        storage.write_parquet(self.stage_dir / f"part-{uuid.uuid4().hex[:12]}.parquet",
                              [t.to_row() for t in trajectories])
        self.last_written = time.time()
        self.written.update(samples=len(trajectories), tokens=sum(t.num_tokens for t in trajectories))
        elapsed = time.monotonic() - self.started
        logger.info("sample: %d samples written (%d problems), %.2f samples/s, %.0f tokens/s",
                    len(self.done), len({key[0] for key in self.done}), self.written["samples"] / elapsed,
                    self.written["tokens"] / elapsed)
        return trajectories

    def throughput(self) -> dict[str, float]:
        elapsed = max(1e-9, time.monotonic() - self.started)
        wall = sum(w for w, _ in self.engine_time.values())
        generate = sum(g for _, g in self.engine_time.values())
        steady = (self.last_written - self.first_batch_started) if self.last_written and self.first_batch_started \
            else None
        return {"seconds": round(elapsed, 2), "steady_seconds": round(steady, 3) if steady else None,
                "samples_per_s": round(self.written["samples"] / elapsed, 3),
                "tokens_per_s": round(self.written["tokens"] / elapsed, 1),
                "engine_idle_share": round(1 - generate / wall, 3) if wall else None}

    def close(self) -> None:
        self.pool.shutdown()


def _engine_resources(engine_kind: str, custom_resources: str = "auto") -> dict:
    """What an engine actor asks Ray for: the device profile's GPUs and CPUs, plus one `engine` when
    `custom_resources` says so (the marker resource of the GPU worker group of `ray_cluster.yaml`)."""
    marker = custom_resource("engine", custom_resources)
    if engine_kind == "vllm":
        from mmos_ray.engines.vllm_engine import detect_profile

        options = detect_profile().actor_options
    else:
        import torch

        cpu_only = {"num_gpus": 0.0, "num_cpus": 1.0,
                    "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}}}
        options = {"num_gpus": 1.0, "num_cpus": 1.0} if torch.cuda.is_available() else cpu_only
    return {**options, "resources": marker} if marker else options


def _adaptive(sample: SampleConfig, problems: list[Problem], sampler: _Sampler) -> dict[str, int]:
    from mmos_ray.sandbox.grader import Grader

    adaptive = sample.adaptive
    by_id = {p.id: p for p in problems}
    with Grader(adaptive.grader) as grader:
        def correct_counts() -> Counter:
            trajectories = [t for t in read_trajectories(sampler.stage_dir) if t.problem_id in by_id]
            verdicts = grader.grade_many([(_answer(t, adaptive.grader), _gold(by_id[t.problem_id], adaptive.grader))
                                          for t in trajectories])
            forms = {(t.problem_id, canonical_key(t.text).key) for t, v in zip(trajectories, verdicts)
                     if v.correct and t.executions}
            return Counter(problem_id for problem_id, _ in forms)

        taken = Counter()
        for key in sampler.done:
            taken[key[0]] += 1
        while True:
            correct = correct_counts()
            open_problems = [p for p in problems
                             if correct[p.id] < adaptive.target_distinct and taken[p.id] < adaptive.max_samples]
            if not open_problems:
                break
            wave = []
            for p in open_problems:
                start = taken[p.id]
                count = min(adaptive.wave_size, adaptive.max_samples - start)
                wave.extend((p, start + i) for i in range(count))
                taken[p.id] += count
            logger.info("sample: adaptive wave over %d open problems (%d samples)", len(open_problems), len(wave))
            sampler.sample(wave)
    return {p.id: taken[p.id] for p in problems}


def _answer(trajectory: Trajectory, mode: str) -> str:
    from mmos_ray.core.answers import extract_answer

    return extract_answer(trajectory.text, normalize=mode == "compat")


def _gold(problem: Problem, mode: str) -> str:
    return problem.gold if mode == "compat" else problem.meta.get("gold_raw", problem.gold)


class TIRSamplerUDF:
    """A Ray Data actor: owns an engine for its lifetime and runs whole batches of rows to the end.

    With vLLM, one `ContinuousLoop` serves every batch the actor holds at once; with HF, batches run one
    after another on one thread.
    """

    def __init__(self, config: dict, model: str, engine_kind: str, sandbox_actors: list):
        self.cfg = SampleConfig.model_validate(config)
        self.model_name = model
        self.actor_id = uuid.uuid4().hex
        self.stop = stop_strings(self.cfg.prompt)
        executor = SandboxPool(actors=sandbox_actors, limits=Limits(timeout_s=self.cfg.timeout_s))

        def make_engine():
            return create_engine(engine_kind, model, max_model_len=self.cfg.max_model_len, seed=self.cfg.seed)

        compat = self.cfg.observation == "compat"
        if engine_kind == "vllm":
            self.loop = ContinuousLoop(make_engine, executor, self.cfg.observation_chars, compat)
        else:
            # Built and driven on one thread of ours (Ray Data calls __init__ and __call__ on different ones).
            self.loop = None
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
            self.engine = self._thread.submit(make_engine).result()
            self.executor, self.compat, self.busy = executor, compat, LoopStats()

    def __call__(self, batch) -> dict[str, list]:
        rows = batch.to_pylist()
        if self.loop is not None:
            return self._process(rows)
        return self._thread.submit(self._process, rows).result()

    def _process(self, rows: list[dict]) -> dict[str, list]:
        started = time.time()
        states = [TIRState(prompt=row["prompt"], seed=int(row["seed"])) for row in rows]
        try:
            if self.loop is not None:
                self.loop.run(states, self._params, self.cfg.max_rounds)
            else:
                stats = run_rounds(self.engine, self.executor, states, self._params, self.cfg.max_rounds,
                                   observation_chars=self.cfg.observation_chars, compat_observation=self.compat)
                self.busy.wall_s += stats.wall_s
                self.busy.generate_s += stats.generate_s
        except Exception as exc:  # not the run: the unfinished rows of this batch are written as errors
            logger.exception("sample: a batch failed")
            for state in states:
                if not state.finished:
                    state.finish_reason, state.error = "error", f"{type(exc).__name__}: {exc}"[:500]
        busy = self.loop.stats if self.loop is not None else self.busy
        stats = {"_actor": self.actor_id, "_wall_s": busy.wall_s, "_generate_s": busy.generate_s, "_started": started}
        out = [self._trajectory(row, state).to_row() | stats for row, state in zip(rows, states)]
        return {key: [r[key] for r in out] for key in out[0]}
    def _params(self, state: TIRState) -> SamplingParams:
        return SamplingParams(temperature=self.cfg.temperature, top_p=self.cfg.top_p, max_tokens=self.cfg.max_tokens,
                              seed=state.seed + state.rounds, stop=self.stop)

    def _trajectory(self, row: dict, state: TIRState) -> Trajectory:
        return Trajectory(problem_id=row["problem_id"], sample_idx=int(row["sample_idx"]), seed=int(row["seed"]),
                          model=self.model_name, prompt_version=PROMPT_VERSIONS[self.cfg.prompt], text=state.text,
                          rounds=state.rounds, finish_reason=state.finish_reason or "error",
                          num_tokens=state.num_tokens, num_prompt_tokens=state.num_prompt_tokens,
                          executions=state.executions, error=state.error)
