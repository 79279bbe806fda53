"""Stage 02, verify: re-run every code block of every sampled path, grade its answer, fingerprint it.

    mmos verify --config configs/quickstart.yaml       (or pipeline.verify(cfg), jobs/02_verify.py)

Reads `01_sample/part-*.parquet` and the golds of `00_prepare/`, writes `02_verify/part-*.parquet` (one
per input part: the trajectory's columns plus a `Verification`) and `_manifest.json` last. On CPU
actors, one per CPU slot, each with its own sandbox and grader, `verify.batch_size` trajectories per call
(a big part spreads over every actor; it is written once all its calls are back):
- every ```python block runs again, each in a fresh sandboxed process (never sharing state), prose
  before or between blocks allowed; `exec_ok` = there is code and every block ran without error or
  time-out; `outputs_match` = every recorded ```output block equals what the re-run shows (formatted
  as the sample stage formatted it);
- the answer is extracted (ToRA's order) and graded against the gold (`verify.grader`);
- the canonical key over all blocks gives the fingerprint that stage 03 deduplicates on.
A rerun skips input parts already verified. Each output part is named after its input part and written
by the driver alone, so a call retried after its actor (or the actor's node) was lost rewrites the same
file: no (problem, sample) is lost or written twice. On a cluster the actors ask for one `sandbox` each
(the CPU worker group of `ray_cluster.yaml`) as `verify.custom_resources` says (see `cluster.resources`);
Ray restarts a lost actor (up to 3 times) where that resource is, and retries its call.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import ray
from ray.util import ActorPool

from mmos_ray import storage
from mmos_ray.config import PathsConfig, VerifyConfig
from mmos_ray.core.answers import extract_answer
from mmos_ray.core.canonical import canonical_key, segments
from mmos_ray.core.records import Problem, Trajectory, Verification
from mmos_ray.core.tir import RoundRules
from mmos_ray.cluster.resources import custom_resource, ensure_ray, nodes_offering
from mmos_ray.cluster.sandbox_pool import describe_sandbox

logger = logging.getLogger(__name__)


def run(verify: VerifyConfig, paths: PathsConfig, stage_dir: Path) -> dict[str, Any]:
    layout = storage.RunLayout.of_stage(stage_dir)
    problems = {p["id"]: Problem.from_row(p) for p in storage.read_parquet(layout.problems)}
    golds = {pid: p.gold_for(verify.grader) for pid, p in problems.items()}
    observation = (storage.read_manifest(layout.sample) or {}).get("observation",
                                                                          {"mode": "full", "chars": 512})
    inputs = storage.part_files(layout.sample)
    todo = [part for part in inputs if not (stage_dir / part.name).exists()]
    logger.info("verify: %d parts to verify (%d done before)", len(todo), len(inputs) - len(todo))
    if todo:
        ensure_ray()
        resources = custom_resource("sandbox", verify.custom_resources)
        workers = verify.num_workers or _default_workers(resources)
        actors = [VerifyActor.options(resources=resources or None).remote(verify.model_dump(), observation)
                  for _ in range(workers)]
        pool = ActorPool(actors)
        started, done_rows = time.monotonic(), 0
        waiting: dict[str, list] = {}  # part name -> its calls' rows, None until that call returns
        for (name, index, calls), rows in pool.map_unordered(
                lambda actor, call: actor.verify.remote(call[0], call[1], _golds_for(call[1], golds)),
                _calls(todo, verify.batch_size)):
            chunks = waiting.setdefault(name, [None] * calls)
            chunks[index] = rows
            if all(chunk is not None for chunk in chunks):  # the part is whole: written at once, resumable
                storage.write_parquet(stage_dir / name, [row for chunk in waiting.pop(name) for row in chunk])
            done_rows += len(rows)
            logger.info("verify: %d trajectories verified, %.1f/s", done_rows, done_rows / (time.monotonic() - started))
        for actor in actors:
            ray.kill(actor)
    rows = storage.read_parts(stage_dir)
    usable = [r for r in rows if r["correct"] and r["exec_ok"]]
    return {"counts": {"trajectories": len(rows), "correct": sum(r["correct"] for r in rows),
                       "exec_ok": sum(r["exec_ok"] for r in rows), "correct_and_exec_ok": len(usable),
                       "outputs_match": sum(r["outputs_match"] for r in rows),
                       "unparsable_blocks": sum(r["unparsable_blocks"] for r in rows),
                       "distinct_correct": len({(r["problem_id"], r["fingerprint"]) for r in usable})},
            "sandbox": describe_sandbox(verify.custom_resources),  # report.md warns when degraded
            "grader": verify.grader, "observation": observation}


def _default_workers(resources: dict) -> int:
    """One actor per CPU; asking for `sandbox`, as many as the nodes offering it hold now (each actor takes
    ACTOR_CPUS and one `sandbox`), or, with none up yet (an autoscaler will start them), one per CPU."""
    nodes = nodes_offering("sandbox") if resources else []
    if not nodes:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, sum(min(int(node["sandbox"]), int(node.get("CPU", 0) / ACTOR_CPUS)) for node in nodes))


def _calls(parts: list[Path], batch_size: int):
    """((part name, call index, calls for that part), rows) for each actor call: a part's trajectories, in key
    order, `batch_size` at a time, so that one big part still spreads over every actor. Parts are read as
    actors free up."""
    for part in parts:
        rows = sorted(storage.read_parquet(part), key=lambda r: (r["problem_id"], r["sample_idx"]))
        chunks = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)] or [[]]
        for index, chunk in enumerate(chunks):
            yield (part.name, index, len(chunks)), chunk


def _golds_for(rows: list[dict], golds: dict[str, str]) -> dict[str, str]:
    return {r["problem_id"]: golds[r["problem_id"]] for r in rows if r["problem_id"] in golds}


ACTOR_CPUS = 0.75


# A call in flight when its node is lost fails at once ("temporarily unavailable") until Ray notices the
# node is gone and restarts the actor elsewhere: it is retried for as long as the actor can be restarted.
@ray.remote(num_cpus=ACTOR_CPUS, max_restarts=3, max_task_retries=-1)
class VerifyActor:
    def __init__(self, config: dict, observation: dict):
        from mmos_ray.sandbox import Limits, Sandbox
        from mmos_ray.sandbox.grader import Grader

        self.cfg = VerifyConfig.model_validate(config)
        self.rules = RoundRules(observation=observation["mode"], observation_chars=observation["chars"])
        self.sandbox = Sandbox(workers=1, limits=Limits(timeout_s=self.cfg.timeout_s))
        self.grader = Grader(self.cfg.grader, sandbox=self.sandbox)

    def verify(self, key: Any, rows: list[dict], golds: dict[str, str]) -> tuple[Any, list[dict]]:
        """The rows verified, in key order, returned with the caller's `key`."""
        trajectories = sorted((Trajectory.from_row(r) for r in rows), key=lambda t: t.key)
        per_path = [segments(t.text) for t in trajectories]
        results = iter(self.sandbox.execute_many([code for pairs in per_path for code, _ in pairs]))
        compat = self.cfg.grader == "compat"
        preds = [extract_answer(t.text, normalize=compat) for t in trajectories]
        gold = [golds.get(t.problem_id, "") for t in trajectories]
        verdicts = self.grader.grade_many(list(zip(preds, gold)))
        out = []
        for trajectory, pairs, pred, verdict in zip(trajectories, per_path, preds, verdicts):
            ran = [next(results) for _ in pairs]
            canonical = canonical_key(trajectory.text)
            errors = [r.error for r in ran if not r.ok]
            verification = Verification(
                pred=pred, correct=verdict.correct and trajectory.finish_reason != "error",
                decided_by=verdict.decided_by, exec_ok=bool(pairs) and not errors,
                outputs_match=all(recorded is None or recorded == self._observed(result)
                                  for (_, recorded), result in zip(pairs, ran)),
                blocks=len(pairs), exec_error=errors[0] if errors else "", fingerprint=canonical.fingerprint,
                canonical_key=canonical.key, unparsable_blocks=canonical.unparsable)
            out.append(trajectory.to_row() | verification.to_row())
        return key, out

    def _observed(self, result) -> str:
        return self.rules.observe(result.stdout, result.error)
