"""Majority voting over equivalence classes, and the disagreement report (pure logic)."""

from mmos_ray.core.grading import Verdict, disagreements, fast_verdict, majority_vote


def numerically_same(a, b):
    verdict = fast_verdict(a, b, "strict")
    return bool(verdict and verdict.correct)


def test_equivalent_answers_vote_together():
    answers = ["0.5", "1/3", "0.50", "1/3", "1/3", "0.500"]  # 3 votes for 0.5 written three ways
    assert majority_vote(answers, numerically_same) == ("0.5", 3, [0, 2, 5])


def test_exact_string_voting_would_pick_otherwise():
    answers = ["0.5", "1/3", "0.50", "1/3", "1/3", "0.500"]
    assert majority_vote(answers, lambda a, b: False)[0] == "1/3"


def test_none_and_empty_do_not_vote():
    assert majority_vote([None, "", None, "7"], numerically_same) == ("7", 1, [3])
    assert majority_vote([None, None], numerically_same) == (None, 0, [])


def test_ties_go_to_the_class_seen_first():
    assert majority_vote(["2", "3", "3.0", "2"], numerically_same)[0] == "2"


def test_disagreement_report():
    pairs = [("50", "0.5"), ("7", "7"), ("{1,2}", "{2,1}")]
    compat = [Verdict(True, "numeric_percent"), Verdict(True, "numeric"), Verdict(False, "no_rule_matched")]
    strict = [Verdict(False, "decimal"), Verdict(True, "integer"), Verdict(True, "math_verify")]
    report = disagreements(pairs, compat, strict)
    assert report["pairs"] == 3 and report["disagree"] == 2
    assert report["only_compat_correct"] == 1 and report["only_strict_correct"] == 1
    assert report["rows"][0] == {"pred": "50", "gold": "0.5", "compat": {"correct": True, "decided_by": "numeric_percent"},
                                 "strict": {"correct": False, "decided_by": "decimal"}}
