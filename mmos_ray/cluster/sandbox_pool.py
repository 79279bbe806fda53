"""The sandbox on Ray: one actor per CPU slot, each owning a `Sandbox` with one worker (fork servers).
Shared by the stages that run model-written code (sample, verify, evaluate, generate).

    pool = SandboxPool(num_actors=4, limits=Limits(timeout_s=5))
    results = pool.execute_many(codes)   # ExecutionResults, in input order
    result = await pool.execute(code)    # one program, from the trajectory loop (engines.trajectory)

Actors ask for one CPU each, plus one `sandbox` (the custom resource of the CPU worker group of
`ray_cluster.yaml`) as `custom_resources` says (`auto`: when the cluster offers it; `on`: always, so that
an autoscaler starts CPU workers; `off`: never; see `cluster.resources.custom_resource`). A crashed actor,
or one lost with its node, is restarted by Ray (on another node offering what it asks for) and its
in-flight calls retried; a crashed fork server inside an actor is restarted by the actor.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Iterable

import ray
from ray.util import ActorPool

from mmos_ray.sandbox import ExecutionResult, Limits, Sandbox
from mmos_ray.cluster.resources import custom_resource, ensure_ray


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

    def warnings(self) -> list[str]:
        return self.sandbox.warnings

    def pid(self) -> int:
        return os.getpid()


class SandboxPool:
    """`num_actors` sandbox actors (default: the cluster's CPU count, at least 1).

    `execute_many` blocks; `await execute(code)` serves the trajectory loop: the programs that arrive in one
    turn of the event loop go out together, spread over the actors. Pass `actors` to wrap actors made
    elsewhere (e.g. handed to Ray Data workers).
    """

    def __init__(self, num_actors: int | None = None, limits: Limits | None = None, isolation: str = "auto",
                 chunk_size: int = 16, num_cpus: float = 1.0, actors: list | None = None,
                 custom_resources: str = "auto"):
        self.limits = limits or Limits()
        self.chunk_size = chunk_size
        self._turn = itertools.count()
        self._waiting: list[tuple[str, asyncio.Future]] = []
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

    async def execute(self, code: str) -> ExecutionResult:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((code, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._send)  # after the other programs of this turn
        return await future

    def _send(self) -> None:
        batch, self._waiting = self._waiting, []
        per_actor = -(-len(batch) // len(self.actors))
        size = max(1, min(self.chunk_size, per_actor))
        chosen = self.limits.to_dict()
        offset = next(self._turn)  # successive sends start on different actors
        for i, start in enumerate(range(0, len(batch), size)):
            chunk = batch[start:start + size]
            actor = self.actors[(offset + i) % len(self.actors)]
            ref = actor.execute_many.remote([code for code, _ in chunk], chosen)
            asyncio.wrap_future(ref.future()).add_done_callback(lambda done, chunk=chunk: _settle(chunk, done))

    def protections(self) -> dict:
        return ray.get(self.actors[0].protections.remote())

    def sandbox(self) -> dict:
        """{"protections", "warnings"} of the actors' sandbox, for a manifest: asked once, still known after
        `shutdown` (which asks first). Warnings say what is weaker than the full sandbox."""
        if getattr(self, "_described", None) is None:
            actor = self.actors[0]
            protections, warnings = ray.get([actor.protections.remote(), actor.warnings.remote()], timeout=60)
            self._described = {"protections": protections, "warnings": warnings}
        return self._described

    def shutdown(self) -> None:
        try:
            self.sandbox()
        except Exception as exc:  # noqa: BLE001 - a pool that cannot answer any more: the manifest says so
            self._described = {"protections": {}, "warnings": [f"the sandbox actors could not say what protects "
                                                                f"programs ({type(exc).__name__}: {exc})"]}
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


def _settle(chunk: list[tuple[str, asyncio.Future]], done: asyncio.Future) -> None:
    for i, (_, future) in enumerate(chunk):
        if future.done():
            continue
        if done.exception() is not None:
            future.set_exception(done.exception())
        else:
            future.set_result(ExecutionResult.from_dict(done.result()[i]))


def describe_sandbox(custom_resources: str = "auto", isolation: str = "auto") -> dict:
    """{"protections", "warnings"} of a sandbox started where the stages' sandbox actors run (one short-lived
    actor, asking for no CPU): what a stage whose own actors are gone records in its manifest."""
    ensure_ray()
    pool = SandboxPool(num_actors=1, isolation=isolation, num_cpus=0, custom_resources=custom_resources)
    try:
        return pool.sandbox()
    finally:
        pool.shutdown()
