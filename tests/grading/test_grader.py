"""The sandboxed Grader: time limits that work from any thread or Ray actor, safety, cache, retries."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mmos_ray.core.grading import Verdict
from mmos_ray.sandbox.grader import Grader
from mmos_ray.sandbox.protocol import ExecutionResult

SLOW = ("9^{9^{9^{9}}}", "1")  # sympy tries to evaluate a tower of powers


@pytest.fixture(scope="module")
def grader():
    with Grader("compat", timeout_s=1.0) as g:
        yield g


def test_a_comparison_that_runs_too_long_is_a_timeout_not_a_hang(grader):
    started = time.monotonic()
    verdicts = grader.grade_many([SLOW, ("\\frac{1}{2}", "0.5")])
    assert verdicts == [Verdict(False, "timeout"), Verdict(True, "symbolic_simplify")]
    assert time.monotonic() - started < 5


def test_grading_from_threads(grader):
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(lambda pair: grader.grade(*pair), [("x+1", "1+x"), SLOW, ("2", "2.0")] * 2))
    assert [v.correct for v in verdicts] == [True, False, True] * 2
    assert threading.current_thread() is threading.main_thread()


def test_model_answers_cannot_run_code_on_the_host(grader, tmp_path):
    marker = Path("/var/tmp/mmos-grader-pwned")
    evil = f"__import__('os').system('touch {marker}') or open('{marker}', 'w')"
    grader.grade(evil, "1")
    assert not marker.exists()


def test_verdicts_are_cached(grader, monkeypatch):
    grader.grade("\\sqrt{8}", "2\\sqrt{2}")
    calls = []
    original = grader.sandbox.execute_many
    monkeypatch.setattr(grader.sandbox, "execute_many", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert grader.grade("\\sqrt{8}", "2\\sqrt{2}").correct and calls == []


def test_a_batch_that_dies_part_way_is_finished_one_by_one(grader, monkeypatch):
    # The partial-output path: the batch's child printed one verdict, then died.
    partial = ExecutionResult(stdout='{"correct": true, "decided_by": "symbolic_simplify"}\n{"corr',
                              error="Killed by SIGKILL", killed=True, signal="SIGKILL")
    monkeypatch.setattr(grader.sandbox, "execute_many", lambda codes, **kw: [partial] * len(codes))
    verdicts = grader.grade_many([("a+b", "b+a"), ("a*b", "b*a")])
    assert verdicts == [Verdict(True, "symbolic_simplify"), Verdict(True, "symbolic_simplify")]


def test_voting_uses_equivalence(grader):
    assert grader.majority_vote(["\\frac{1}{2}", "7", "0.5", None, "1/2"]) == ("\\frac{1}{2}", 3, [0, 2, 4])


def test_grading_inside_a_ray_actor(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=0)
    def grade_remotely(pairs):
        with Grader("strict", timeout_s=1.0) as g:
            return [v.to_dict() for v in g.grade_many(pairs)]

    verdicts = ray.get(grade_remotely.remote([SLOW, ("\\{1,2\\}", "\\{2,1\\}")]), timeout=120)
    assert verdicts == [{"correct": False, "decided_by": "timeout"}, {"correct": True, "decided_by": "math_verify"}]
