"""Stage 01, sample: tool-integrated reasoning paths for every prepared problem, k per problem.

    mmos sample --config configs/quickstart.yaml       (or pipeline.sample(cfg), jobs/01_sample.py)

Reads `00_prepare/` (problems and model), writes `01_sample/part-*.parquet` (`Trajectory` rows) and
`_manifest.json` last. Ray Data carries rows — one per (problem, sample), each with its own seed; the
repeated prompt is absorbed by vLLM's prefix cache — through engine actors (`TIRSamplerUDF`) that keep
their engine across rounds and run every row of their batches as one trajectory of the shared loop
(`engines.trajectory`): its programs run on the sandbox actor pool while the engine generates for the
other trajectories (continuous batching across rounds and batches). Every finished batch is written as its own part
(atomically), so an interrupted run loses at most the batches in flight, and a rerun samples only the
(problem, sample) pairs no part holds yet. A batch whose engine fails becomes error rows, not a crash.
Each (problem, sample) is written once: the driver drops rows whose key a part already holds (a batch
Ray redid after losing its actor or node), and readers keep the first row of a key.

On a cluster, engine actors ask for one `engine` and sandbox actors for one `sandbox` (the custom
resources of the node types of `ray_cluster.yaml`) as `sample.custom_resources` says (see
`cluster.resources`). Engine actors that die (with their node) are restarted by Ray Data and their batches
redone; sandbox actors are restarted by Ray and their calls retried.

Adaptive budget (`sample.adaptive.enabled`): waves of `wave_size` samples per problem, graded after
each wave; a problem stops when it has `target_distinct` distinct correct programs (canonical forms, as
stage 03 counts them) or `max_samples` samples. The
manifest records how many samples each problem took.

`Sampler` is the public driver that the eval stage uses too, with its own generation and engine settings.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import ray

from mmos_ray import storage
from mmos_ray.config import EngineConfig, GenerationConfig, PathsConfig, SampleConfig
from mmos_ray.core.canonical import canonical_key
from mmos_ray.core.prompts import PROMPT_VERSIONS, render_prompt
from mmos_ray.core.records import Problem, Trajectory
from mmos_ray.core.tir import TIRState
from mmos_ray.engines.base import create_engine
from mmos_ray.engines.stepper import BatchedEngine, SteppedEngine
from mmos_ray.engines.trajectory import EventLoopThread, Execute, Generate, run_all
from mmos_ray.sandbox.protocol import Limits
from mmos_ray.cluster.resources import custom_resource, ensure_ray
from mmos_ray.cluster.sandbox_pool import SandboxPool

logger = logging.getLogger(__name__)

ENGINE_BATCHES_IN_FLIGHT = 3


def run(sample: SampleConfig, paths: PathsConfig, stage_dir: Path) -> dict[str, Any]:
    layout = storage.RunLayout.of_stage(stage_dir)
    problems = [Problem.from_row(r) for r in storage.read_parquet(layout.problems)]
    model = storage.read_manifest(layout.prepare)["model"]["path"]
    ensure_ray()
    sampler = Sampler(sample, sample.generation, sample.engine, model, stage_dir)
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
            "model": model, "engine": sampler.engine_kind, "prompt_version": PROMPT_VERSIONS[sample.generation.prompt],
            "generation": sample.generation.model_dump(),
            "observation": {"mode": sample.generation.observation, "chars": sample.generation.observation_chars},
            "sandbox": sampler.pool.sandbox(),  # its protections and warnings: report.md warns when degraded
            "samples_per_problem": taken, "throughput": sampler.throughput()}


def read_trajectories(stage_dir: Path) -> list[Trajectory]:
    """Every (problem, sample) of the stage's parts once, as `Trajectory`s (`storage.read_parts`)."""
    return [Trajectory.from_row(row) for row in storage.read_parts(stage_dir)]


def sample_seed(base: int, problem_id: str, sample_idx: int) -> int:
    """A seed per (problem, sample), stable across runs and machines."""
    digest = hashlib.sha256(f"{base}:{problem_id}:{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def sample_row(problem: Problem, sample_idx: int, generation: GenerationConfig) -> dict[str, Any]:
    """The Ray Data row of one (problem, sample): its key, seed and rendered prompt."""
    return {"problem_id": problem.id, "sample_idx": sample_idx,
            "seed": sample_seed(generation.seed, problem.id, sample_idx),
            "prompt": render_prompt(problem.question, generation.prompt)}


async def sample_rows(rows: list[dict], generate: Generate, execute: Execute,
                      generation: GenerationConfig) -> list[TIRState]:
    """The trajectories of a batch of rows through the one loop: what an engine actor runs per batch."""
    states = [TIRState(prompt=row["prompt"], seed=int(row["seed"])) for row in rows]
    return await run_all(states, generate, execute, generation)


class Sampler:
    """Runs (problem, sample index) rows through the engine actors and writes the parts to `stage_dir`;
    remembers what is already written. `sample` gives the scale (engines, batch size, sandbox actors and
    limits, custom resources); `generation` and `engine` what is sampled, and how (stage 01 passes its own,
    the eval stage its own)."""

    def __init__(self, sample: SampleConfig, generation: GenerationConfig, engine: EngineConfig, model: str,
                 stage_dir: Path, batch_size: int | None = None):
        self.cfg = sample
        self.generation = generation
        self.engine = engine
        self.batch_size = batch_size or sample.batch_size
        self.model = model
        self.stage_dir = stage_dir
        self.engine_kind = engine.resolved_backend()
        self.done = {t.key for t in read_trajectories(stage_dir)}
        self.written = Counter()  # tokens and samples written in this run, for throughput
        self.engine_time: dict[str, tuple[float, float]] = {}  # actor -> cumulative (busy wall, generating)
        self.first_batch_started: float | None = None  # epoch seconds: steady-state time leaves start-up out
        self.last_written: float | None = None
        self.started = time.monotonic()
        engine_cpus = 1.0 * sample.num_engines
        free = max(1.0, ray.cluster_resources().get("CPU", 1.0) - engine_cpus)
        num_actors = sample.sandbox_actors or max(1, int(free))
        # Fractional CPUs on small machines: sandbox actors idle while the engine generates.
        self.pool = SandboxPool(num_actors=num_actors, limits=Limits(timeout_s=sample.timeout_s),
                                num_cpus=min(1.0, free / num_actors) * 0.5,
                                custom_resources=sample.custom_resources)

    def sample(self, keys: list[tuple[Problem, int]]) -> int:
        """Sample every (problem, index) not written yet; returns how many were written now."""
        todo = [(p, i) for p, i in keys if (p.id, i) not in self.done]
        if not todo:
            return 0
        rows = [sample_row(p, i, self.generation) for p, i in todo]
        logger.info("sample: %d samples to draw (%d already written)", len(rows), len(keys) - len(todo))
        resources = _engine_resources(self.engine_kind, self.cfg.custom_resources)
        dataset = ray.data.from_items(rows).map_batches(
            TIRSamplerUDF, batch_size=self.batch_size, concurrency=self.cfg.num_engines, batch_format="pyarrow",
            # Batches overlap inside an engine actor (vLLM: one continuous batch), so a batch's stragglers
            # do not leave the engine idle.
            max_concurrency=ENGINE_BATCHES_IN_FLIGHT if self.engine_kind == "vllm" else 1,
            fn_constructor_kwargs=dict(generation=self.generation.model_dump(), engine=self.engine.model_dump(),
                                       model=self.model, engine_kind=self.engine_kind, timeout_s=self.cfg.timeout_s,
                                       sandbox_actors=self.pool.actors), **resources)
        written = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            written += self._write_part(batch.to_pylist())
        return written

    def _write_part(self, rows: list[dict]) -> int:
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
            return 0
        storage.write_parquet(storage.part_file(self.stage_dir, uuid.uuid4().hex[:12]),
                              [t.to_row() for t in trajectories])
        self.last_written = time.time()
        self.written.update(samples=len(trajectories), tokens=sum(t.num_tokens for t in trajectories))
        elapsed = time.monotonic() - self.started
        logger.info("sample: %d samples written (%d problems), %.2f samples/s, %.0f tokens/s",
                    len(self.done), len({key[0] for key in self.done}), self.written["samples"] / elapsed,
                    self.written["tokens"] / elapsed)
        return len(trajectories)

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


def _adaptive(sample: SampleConfig, problems: list[Problem], sampler: Sampler) -> dict[str, int]:
    from mmos_ray.sandbox.grader import Grader

    adaptive = sample.adaptive
    by_id = {p.id: p for p in problems}
    with Grader(adaptive.grader) as grader:
        def correct_counts() -> Counter:
            trajectories = [t for t in read_trajectories(sampler.stage_dir) if t.problem_id in by_id]
            verdicts = grader.grade_many([(_answer(t, adaptive.grader), by_id[t.problem_id].gold_for(adaptive.grader))
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


class TIRSamplerUDF:
    """A Ray Data actor: owns an engine for its lifetime and runs whole batches of rows to the end.

    Every row is a trajectory of the shared loop (`engines.trajectory`) on one event loop of the actor, so
    the batches the actor holds at once (`max_concurrency`) share the engine's batches (vLLM: one
    continuous batch; HF: whatever waits when a batch ends).
    """

    def __init__(self, generation: dict, engine: dict, model: str, engine_kind: str, timeout_s: float,
                 sandbox_actors: list):
        self.generation = GenerationConfig.model_validate(generation)
        engine_cfg = EngineConfig.model_validate(engine)
        self.model_name = model
        self.actor_id = uuid.uuid4().hex
        self.execute = SandboxPool(actors=sandbox_actors, limits=Limits(timeout_s=timeout_s)).execute

        def make_engine():
            return create_engine(engine_kind, model, max_model_len=engine_cfg.max_model_len, seed=self.generation.seed)

        self.engine = SteppedEngine(make_engine) if engine_kind == "vllm" else BatchedEngine(make_engine)
        self.events = EventLoopThread()
        self._lock = threading.Lock()
        self._active, self._since, self.busy_s = 0, 0.0, 0.0  # wall time with a batch in hand

    def __call__(self, batch) -> dict[str, list]:
        rows = batch.to_pylist()
        started = time.time()
        self._busy(+1)
        try:
            states = self.events.run(sample_rows(rows, self.engine.generate, self.execute, self.generation))
        finally:
            self._busy(-1)
        stats = {"_actor": self.actor_id, "_wall_s": self.busy_s, "_generate_s": self.engine.stats.generate_s,
                 "_started": started}
        out = [self._trajectory(row, state).to_row() | stats for row, state in zip(rows, states)]
        return {key: [r[key] for r in out] for key in out[0]}

    def _busy(self, change: int) -> None:
        with self._lock:
            now = time.perf_counter()
            if self._active:
                self.busy_s += now - self._since
            self._active, self._since = self._active + change, now

    def _trajectory(self, row: dict, state: TIRState) -> Trajectory:
        return Trajectory(problem_id=row["problem_id"], sample_idx=int(row["sample_idx"]), seed=int(row["seed"]),
                          model=self.model_name, prompt_version=PROMPT_VERSIONS[self.generation.prompt],
                          text=state.text, rounds=state.rounds, finish_reason=state.finish_reason or "error",
                          num_tokens=state.num_tokens, num_prompt_tokens=state.num_prompt_tokens,
                          executions=state.executions, error=state.error)
