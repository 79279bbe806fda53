"""pass@k, maj@k and the summaries on hand-made cases with known values."""

import math

import pytest

from mmos_ray.core.metrics import breakdown, ks_for, majority_correct, pass_at_k, summarize


def test_pass_at_k_known_values():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # C(3,3)/C(5,3)
    assert pass_at_k(10, 3, 10) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_at_k_equals_enumeration_over_subsets():
    import itertools

    samples = [True, False, False, True, False]
    for k in range(1, 6):
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(5, 2, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_majority_vote_by_classes():
    # classes: answers 0 (wrong, twice), 1 (right, once), None (no answer, three times)
    correct, classes = [False, True, False, False, False, False], [0, 1, 0, None, None, None]
    assert majority_correct(correct, classes, 6) is False  # None does not vote: class 0 wins 2-1
    assert majority_correct(correct, classes, 2) is False  # a 1-1 tie goes to the class seen first: 0
    assert majority_correct([True, False], [1, 0], 2) is True
    assert majority_correct([False, False], [None, None], 2) is False


def test_tie_goes_to_the_class_seen_first():
    assert majority_correct([False, True], [0, 1], 2) is False
    assert majority_correct([True, False], [1, 0], 2) is True


def test_summarize_known_values():
    correct = [[True, True, False, False], [False, False, False, False], [True, False, True, True]]
    classes = [[0, 0, 1, 1], [0, 1, 2, 3], [0, 1, 0, 0]]
    result = summarize(correct, classes)
    columns = [2 / 3, 1 / 3, 1 / 3, 1 / 3]
    assert result["pass@1"] == pytest.approx(5 / 12)
    assert result["pass@1_std"] == pytest.approx(math.sqrt(sum((c - 5 / 12) ** 2 for c in columns) / 4))
    assert result["pass@2"] == pytest.approx((pass_at_k(4, 2, 2) + 0 + pass_at_k(4, 3, 2)) / 3)
    assert result["pass@4"] == pytest.approx(2 / 3)
    # maj@4: problem 1 tie 0-vs-1 -> class 0 (correct); problem 2 all different -> first (wrong);
    # problem 3 class 0 three times -> correct
    assert result["maj@4"] == pytest.approx(2 / 3)
    assert result["maj@2"] == pytest.approx(2 / 3)  # p1: class 0, right; p2: 0 of 0/1, wrong; p3: 0 of 0/1, right
    assert summarize([[True], [False]]) == {"problems": 2, "samples": 1, "pass@1": 0.5, "pass@1_std": 0.0}
    with pytest.raises(ValueError):
        summarize([[True], [True, False]])


def test_ks_and_breakdown():
    assert ks_for(1) == [1] and ks_for(4) == [1, 2, 4] and ks_for(6) == [1, 2, 4, 6]
    assert breakdown(["Algebra", "Geometry", "Algebra"], [True, False, False]) == {
        "Algebra": {"problems": 2, "accuracy": 0.5}, "Geometry": {"problems": 1, "accuracy": 0.0}}
