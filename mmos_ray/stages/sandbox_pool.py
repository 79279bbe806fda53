"""The sandbox on Ray: one actor per CPU slot, each owning a `Sandbox` with one worker (fork servers).
Shared by the stages that run model-written code (sample, verify, evaluate, generate).

    pool = SandboxPool(num_actors=4, limits=Limits(timeout_s=5))
    results = pool.execute_many(codes)   # ExecutionResults, in input order

Actors ask for one CPU each, plus one `sandbox` (the custom resource of the CPU worker group of
`ray_cluster.yaml`) as `custom_resources` says (`auto`: when the cluster offers it; `on`: always, so that
an autoscaler starts CPU workers; `off`: never; see `stages.cluster.custom_resource`). A crashed actor,
or one lost with its node, is restarted by Ray (on another node offering what it asks for) and its
in-flight calls retried; a crashed fork server inside an actor is restarted by the actor.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterable

import ray
from ray.util import ActorPool

from mmos_ray.sandbox import ExecutionResult, Limits, Sandbox
from mmos_ray.stages.cluster import custom_resource


# A call in flight when its node is lost fails at once ("temporarily unavailable") until Ray notices the
# node is gone and restarts the actor elsewhere: it is retried until then (a bounded count would be used up
# in that second and fail the batch).
@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)
class SandboxActor:
    def __init__(self, limits: dict, isolation: str):
        self.sandbox = Sandbox(workers=1, limits=Limits(**limits), isolation=isolation)

    def execute_many(self, codes: list[str], limits: dict | None = None) -> list[dict]:
        chosen = Limits(**limits) if limits else None
        return [result.to_dict() for result in self.sandbox.execute_many(codes, chosen)]

    def protections(self) -> dict:
        return self.sandbox.protections

    def pid(self) -> int:
        return os.getpid()


class SandboxPool:
    """`num_actors` sandbox actors (default: the cluster's CPU count, at least 1).

    `execute_many` blocks; `submit` / `collect` let a caller (the TIR loop) generate while programs run.
    Pass `actors` to wrap actors made elsewhere (e.g. handed to Ray Data workers).
    """

    def __init__(self, num_actors: int | None = None, limits: Limits | None = None, isolation: str = "auto",
                 chunk_size: int = 16, num_cpus: float = 1.0, actors: list | None = None,
                 custom_resources: str = "auto"):
        self.limits = limits or Limits()
        self.chunk_size = chunk_size
        self._turn = itertools.count()
        if actors is not None:
            self.actors = list(actors)
            return
        if num_actors is None:
            num_actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
        resources = custom_resource("sandbox", custom_resources) or None
        self.actors = [SandboxActor.options(resources=resources, num_cpus=num_cpus).remote(self.limits.to_dict(),
                                                                                          isolation)
                       for _ in range(num_actors)]

    def execute_many(self, codes: Iterable[str], limits: Limits | None = None) -> list[ExecutionResult]:
        codes = list(codes)
        chunks = [codes[i:i + self.chunk_size] for i in range(0, len(codes), self.chunk_size)]
        chosen = (limits or self.limits).to_dict()
        pool = ActorPool(self.actors)
        results = []
        for chunk_results in pool.map(lambda actor, chunk: actor.execute_many.remote(chunk, chosen), chunks):
            results.extend(ExecutionResult.from_dict(r) for r in chunk_results)
        return results

    def submit(self, codes: list[str]) -> list:
        """Start the programs (spread over the actors) and return at once; `collect` waits for them."""
        if not codes:
            return []
        per_actor = -(-len(codes) // len(self.actors))
        size = max(1, min(self.chunk_size, per_actor))
        chunks = [codes[i:i + size] for i in range(0, len(codes), size)]
        chosen = self.limits.to_dict()
        offset = next(self._turn)  # successive submissions start on different actors
        return [self.actors[(offset + i) % len(self.actors)].execute_many.remote(chunk, chosen)
                for i, chunk in enumerate(chunks)]

    def ready(self, refs: list) -> bool:
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        return len(done) == len(refs)

    def collect(self, refs: list) -> list[ExecutionResult]:
        return [ExecutionResult.from_dict(r) for chunk in ray.get(refs) for r in chunk]

    def protections(self) -> dict:
        return ray.get(self.actors[0].protections.remote())

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
