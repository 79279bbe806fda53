"""Minimal-set ranking and mixing: deterministic, tie-broken by sample id, per the method."""

import pytest

from mmos_ray.core.mixing import Decontaminator, decontaminate, mix, rate_count
from mmos_ray.core.selection import Candidate, random_ranks, rank_paths


def test_main_path_is_the_most_frequent_form_then_farthest_first():
    candidates = [Candidate(0, "print(1)"), Candidate(1, "x = 1; print(x)"), Candidate(2, "x = 1; print(x)"),
                  Candidate(3, "print(1)"), Candidate(4, "x = 1; print(x)"),
                  Candidate(5, "y = [1]; z = sum(y); print(z)"), Candidate(6, "print(0 + 1)")]
    ranked = rank_paths(candidates)
    assert [(r.sample_idx, r.rank, r.count) for r in ranked][:2] == [(1, 0, 3), (5, 1, 1)]
    assert sorted(r.sample_idx for r in ranked) == [0, 1, 5, 6]  # one per distinct form, lowest sample id
    assert [r.sample_idx for r in rank_paths(candidates, max_rank=1)] == [1, 5]


def test_ranking_ignores_input_order_and_breaks_ties_by_sample_id():
    candidates = [Candidate(i, key) for i, key in enumerate(["aaaa", "bbbb", "aaaa", "bbbb", "cccc", "dddd"])]
    ranked = rank_paths(candidates)
    assert ranked == rank_paths(list(reversed(candidates)))
    assert ranked[0].sample_idx == 0  # "aaaa" and "bbbb" both appear twice: the lower sample id wins


def test_random_baseline_is_seeded():
    candidates = [Candidate(i, f"form{i}") for i in range(10)]
    assert random_ranks(candidates, 1, "p") == random_ranks(candidates, 1, "p")
    assert random_ranks(candidates, 1, "p") != random_ranks(candidates, 2, "p")


@pytest.mark.parametrize("rate, available, expected", [(1, 10, 10), (0.5, 10, 5), (0, 10, 0), (3, 10, 3), (30, 10, 10)])
def test_rate_is_a_fraction_or_a_count(rate, available, expected):
    assert rate_count(rate, available, "s") == expected


def test_bad_rates_are_clear_errors():
    with pytest.raises(ValueError, match="must be whole"):
        rate_count(2.5, 10, "gsm8k/train")
    with pytest.raises(ValueError, match="not in this run"):
        mix({"gsm8k/train": []}, {"math/train": 1}, 0, str)


def test_mix_is_deterministic_and_keeps_sources_apart():
    rows = {"gsm8k/train": [f"gsm8k/train/{i}#0" for i in range(20)], "math/train": [f"math/train/{i}#0" for i in range(20)]}
    first = mix(rows, {"gsm8k/train": 0.5, "math/train": 3}, seed=7, row_id=str)
    assert first == mix({k: list(reversed(v)) for k, v in rows.items()}, {"gsm8k/train": 0.5, "math/train": 3}, 7, str)
    assert len(first["gsm8k/train"]) == 10 and len(first["math/train"]) == 3
    assert first != mix(rows, {"gsm8k/train": 0.5, "math/train": 3}, seed=8, row_id=str)


def test_decontamination_finds_shared_ngrams_and_short_questions():
    index = Decontaminator([("gsm8k/test/0", "Janet's ducks lay 16 eggs per day. She eats three for breakfast every "
                                             "morning and bakes muffins for her friends every day with four."),
                            ("svamp/test/3", "How many apples are left?")], n=13)
    rows = ["Janet’s ducks lay 16 eggs per day! She eats three for breakfast every morning, and sells the rest.",
            "Tom has 5 apples. How many apples are left?", "A completely different question about trains."]
    kept, removed = decontaminate(rows, str, str, index)
    assert kept == [rows[2]]
    assert [r["eval_id"] for r in removed] == ["gsm8k/test/0", "svamp/test/3"]
