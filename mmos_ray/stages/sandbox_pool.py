"""The sandbox on Ray: one actor per CPU slot, each owning a `Sandbox` with one worker (fork servers).
Shared by the stages that run model-written code (sample, verify, evaluate, generate).

    pool = SandboxPool(num_actors=4, limits=Limits(timeout_s=5))
    results = pool.execute_many(codes)   # ExecutionResults, in input order

Actors ask for one CPU each (plus the `sandbox` custom resource on clusters that advertise it, so they
land on the CPU worker group of `ray_cluster.yaml`). A crashed actor is restarted by Ray and its task
retried; a crashed fork server inside an actor is restarted by the actor.
"""

from __future__ import annotations

import os
from typing import Iterable

import ray
from ray.util import ActorPool

from mmos_ray.sandbox import ExecutionResult, Limits, Sandbox


@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=2)
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
    """`num_actors` sandbox actors (default: the cluster's CPU count, at least 1)."""

    def __init__(self, num_actors: int | None = None, limits: Limits | None = None, isolation: str = "auto",
                 chunk_size: int = 16):
        if num_actors is None:
            num_actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
        resources = {"sandbox": 1} if ray.cluster_resources().get("sandbox") else None
        self.limits = limits or Limits()
        self.chunk_size = chunk_size
        self.actors = [SandboxActor.options(resources=resources).remote(self.limits.to_dict(), isolation)
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

    def protections(self) -> dict:
        return ray.get(self.actors[0].protections.remote())

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
