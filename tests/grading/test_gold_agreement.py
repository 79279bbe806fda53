"""Gold parsing agrees with the loaders on every record of every benchmark (needs the data directory).

A model that writes the source's own answer in a box must be graded correct, in both modes; and the
answer extractor run over MATH solutions must give exactly the loaders' golds.
"""

import json

import pytest

from mmos_ray.core.answers import extract_answer
from mmos_ray.core.problems import DATASETS
from mmos_ray.loaders import load_problems
from mmos_ray.sandbox.grader import Grader


@pytest.fixture(scope="module")
def problems(data_dir):
    return [p for name, spec in DATASETS.items() for split in spec.splits
            for p in load_problems(name, split, data_dir=data_dir) if p.gold]


def _boxed(problem):
    return f"So the answer is $\\boxed{{{problem.meta['gold_raw']}}}$."


def test_every_record_s_own_answer_grades_correct(problems):
    assert len(problems) > 32_000
    with Grader("compat", workers=2) as compat, Grader("strict", sandbox=compat.sandbox) as strict:
        compat_verdicts = compat.grade_many([(extract_answer(_boxed(p)), p.gold) for p in problems])
        strict_verdicts = strict.grade_many([(extract_answer(_boxed(p), normalize=False), p.meta["gold_raw"])
                                             for p in problems])
    for mode, verdicts in (("compat", compat_verdicts), ("strict", strict_verdicts)):
        failures = [(p.id, p.meta["gold_raw"], v) for p, v in zip(problems, verdicts) if not v.correct]
        assert not failures, f"{mode}: {len(failures)} records, e.g. {failures[:5]}"


@pytest.mark.parametrize("dataset, split, folder", [("math", "train", "math"), ("math", "test", "math"),
                                                    ("math500", "test", "math500")])
def test_extracting_from_math_solutions_gives_the_loader_s_gold(data_dir, dataset, split, folder):
    rows = [json.loads(line) for line in (data_dir / folder / f"{split}.jsonl").read_text().splitlines()]
    problems = load_problems(dataset, split, data_dir=data_dir)
    mismatches = [(p.id, p.gold, extract_answer(row["solution"])) for p, row in zip(problems, rows)
                  if extract_answer(row["solution"]) != p.gold]
    assert not mismatches
