"""Grading by table, through the real (sandboxed) Grader, in both modes and both argument orders."""

import pytest

from mmos_ray.sandbox.grader import Grader
from tests.grading.cases import CASES


@pytest.fixture(scope="module")
def graders():
    with Grader("compat") as compat, Grader("strict", sandbox=compat.sandbox) as strict:
        yield {"compat": compat, "strict": strict}


def _rows():
    for pred, gold, compat, strict, symmetric in CASES:
        yield pred, gold, compat, strict
        if symmetric:
            yield gold, pred, compat, strict


ROWS = list(_rows())


def test_there_are_enough_cases():
    assert len(CASES) >= 150 and len(ROWS) >= 250


@pytest.mark.parametrize("mode", ["compat", "strict"])
def test_table(graders, mode):
    grader = graders[mode]
    verdicts = grader.grade_many([(pred, gold) for pred, gold, _, _ in ROWS])
    wrong = [(pred, gold, verdict) for (pred, gold, *expected), verdict in zip(ROWS, verdicts)
             if verdict.correct != expected[0 if mode == "compat" else 1]]
    assert not wrong, "\n".join(f"{pred!r} vs gold {gold!r}: got {v}" for pred, gold, v in wrong)
