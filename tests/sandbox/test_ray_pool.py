"""The sandbox as Ray actors: ordered results, and a pool that survives a killed actor."""

import os
import signal

import pytest

ray = pytest.importorskip("ray")

from mmos_ray.sandbox import Limits  # noqa: E402
from mmos_ray.cluster.sandbox_pool import SandboxPool  # noqa: E402


@pytest.fixture(scope="module")
def pool(ray_local):
    pool = SandboxPool(num_actors=2, limits=Limits(timeout_s=2), chunk_size=4)
    yield pool
    pool.shutdown()


def test_results_come_back_in_order(pool):
    codes = [f"print({i} ** 2)" for i in range(40)] + ["1/0", "import sympy\nprint(sympy.sqrt(8))"]
    results = pool.execute_many(codes)
    assert [r.stdout for r in results[:40]] == [f"{i ** 2}\n" for i in range(40)]
    assert results[40].error == "ZeroDivisionError: division by zero"
    assert results[41].stdout == "2*sqrt(2)\n"


def test_pool_survives_a_killed_actor(pool):
    victim = ray.get(pool.actors[0].pid.remote())
    os.kill(victim, signal.SIGKILL)  # an actor process this test's pool started
    results = pool.execute_many([f"print({i})" for i in range(20)])
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
    assert ray.get(pool.actors[0].pid.remote()) != victim


def test_actors_report_their_protections(pool):
    assert pool.protections()["network"]
