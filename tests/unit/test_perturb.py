"""The problem generator's pure rules (core.perturb, core.gsm_hard): which numbers are inputs, consistent
rewriting, seeded draws, acceptance by agreement, and the GSM-HARD label audit. Nothing is executed here."""

from fractions import Fraction

import pytest

from mmos_ray.core.gsm_hard import (AUDIT_LABELS, audit_label, calc_program, number_changes, restore_program,
                                    stale_numbers)
from mmos_ray.core.perturb import (REJECTIONS, ProgramRun, decide, find_numbers, frozen_values, plan_perturbation,
                                   problem_rng, rewrite_program)


def kinds(text):
    return [(span.text, span.kind) for span in find_numbers(text)]


@pytest.mark.parametrize("text, expected", [
    ("It costs $1,200.50 today.", [("1,200.50", "money")]),
    ("He pays $5 and $2.25.", [("5", "money"), ("2.25", "money")]),
    ("A 15% tip, then 2.5 percent more.", [("15", "percent"), ("2.5", "percent")]),
    ("She ate 3/4 of the pie.", [("3/4", "fraction")]),
    ("There are 4,000 people and 12 dogs.", [("4,000", "integer"), ("12", "integer")]),
    ("It weighs 0.75 kg.", [("0.75", "decimal")]),
    ("On the 3rd day and the 21st lap.", [("3rd", "ordinal"), ("21st", "ordinal")]),
    ("A 2-liter bottle and a 10x12 room.", [("2", "unit_adjective"), ("10", "dimension")]),
    ("They met at 3:30 and left at 6pm.", [("3:30", "time"), ("6pm", "time")]),
    ("In 2020 she had 1.5 million fans.", [("2020", "year"), ("1.5", "scaled")]),
    ("The sentence ends with 16.", [("16", "integer")]),
])
def test_find_numbers_reads_inputs_and_leaves_the_rest_alone(text, expected):
    assert kinds(text) == expected


def test_frozen_values_cover_non_inputs_implied_words_zero_and_one():
    question = "Half of the 3/4 cups, on the 2nd day, every week."
    frozen = frozen_values(question, find_numbers(question))
    assert {Fraction(2), Fraction(3, 4), Fraction(3), Fraction(4), Fraction(7), Fraction(0), Fraction(1)} <= frozen


QUESTION = "Tom buys 12 apples at $1.50 each and pays a 10% tax. He gives away 3 apples. How much does he pay?"
PROGRAM = ("def solution():\n    apples = 12\n    price = 1.5\n    tax = 10 / 100\n    given = 3\n"
           "    return apples * price * (1 + tax)\n\nprint(solution())\n")
CALC = "v0 = 12 * 1.50\nv1 = v0 * 0.1\nprint(v0 + v1)\n"


def new_literals(plan, index):
    return {line.strip() for line in plan.programs[index].splitlines() if "=" in line}


def test_question_and_programs_are_rewritten_with_the_same_new_values():
    plan = plan_perturbation(QUESTION, [PROGRAM, CALC], "similar", problem_rng(0, "gsm8k/test/1"))
    new = {m["old"]: m["new"] for m in plan.mapping}
    assert set(new) == {"12", "1.50", "10", "3"}
    assert plan.question == (f"Tom buys {new['12']} apples at ${new['1.50']} each and pays a {new['10']}% tax. "
                             f"He gives away {new['3']} apples. How much does he pay?")
    assert {f"apples = {new['12']}", f"price = {float(new['1.50'])!r}", f"tax = {new['10']} / 100",
            f"given = {new['3']}"} <= new_literals(plan, 0)
    # The percentage is matched in its p/100 form too; the 100 of "/ 100" is a constant and stays.
    assert f"v1 = v0 * {float(new['10']) / 100!r}" in plan.programs[1]


def test_values_are_matched_by_value_not_position():
    question = "Ann has 5 pens and 7 pencils."
    program = "pencils = 7\npens = 5\nprint(pens + pencils)\n"
    plan = plan_perturbation(question, [program], "similar", problem_rng(1, "p"))
    new = {m["old"]: m["new"] for m in plan.mapping}
    assert plan.programs[0] == f"pencils = {new['7']}\npens = {new['5']}\nprint(pens + pencils)\n"


def test_literals_absent_from_the_question_are_constants():
    question = "A movie lasts 2 hours and 15 minutes. How many minutes is that?"
    program = "print(2 * 60 + 15)\n"
    plan = plan_perturbation(question, [program], "large", problem_rng(0, "m"))
    new = {m["old"]: m["new"] for m in plan.mapping}
    assert plan.programs[0] == f"print({new['2']} * 60 + {new['15']})\n"


def test_numbers_no_program_uses_stay_in_the_question():
    # 2 hours reach the program only as 120 minutes: changing 2 would make question and program disagree.
    question = "He ran for 2 hours at 8 km per hour."
    plan = plan_perturbation(question, ["print(120 / 60 * 8)\n"], "similar", problem_rng(0, "r"))
    assert [m["old"] for m in plan.mapping] == ["8"]
    assert "ran for 2 hours" in plan.question


def test_a_problem_without_changeable_inputs_gives_none():
    question = "A robe takes 2 bolts of blue fiber and half that much white fiber."  # 2 is also "half"
    assert plan_perturbation(question, ["print(2 + 2 / 2)\n"], "similar", problem_rng(0, "robe")) is None


@pytest.mark.parametrize("mode", ["similar", "large"])
def test_draws_are_deterministic_per_seed_and_problem(mode):
    def plan(seed, problem_id):
        return plan_perturbation(QUESTION, [PROGRAM], mode, problem_rng(seed, problem_id))

    assert plan(7, "gsm8k/test/1") == plan(7, "gsm8k/test/1")
    assert plan(7, "gsm8k/test/1").question != plan(8, "gsm8k/test/1").question
    assert plan(7, "gsm8k/test/1").question != plan(7, "gsm8k/test/2").question


def test_each_number_gets_its_own_draw_and_integers_stay_integers():
    question = "There are 11 red, 22 blue, 33 green and 44 white balls, 550 in all."
    program = "print(11 + 22 + 33 + 44 + 550)\n"
    for mode, digits in (("similar", (2, 2)), ("large", (4, 6))):
        for seed in range(20):
            plan = plan_perturbation(question, [program], mode, problem_rng(seed, "balls"))
            olds = [int(m["old"]) for m in plan.mapping]
            news = [int(m["new"]) for m in plan.mapping]  # int() fails on a decimal
            offsets = {new - old for old, new in zip(olds, news)}
            assert len(offsets) > 1 and len(set(news)) == len(news)
            assert all(digits[0] <= len(str(n)) <= digits[1] for n in news[:4])
            assert news[4] % 10 == 0  # trailing zeros kept: 550 -> 'x0' style


def test_decimals_keep_their_places_and_percentages_stay_below_100():
    question = "A shirt costs $19.99 with a 25% discount."
    for mode in ("similar", "large"):
        for seed in range(20):
            plan = plan_perturbation(question, ["print(19.99 * (1 - 25 / 100))\n"], mode, problem_rng(seed, "s"))
            new = {m["old"]: m["new"] for m in plan.mapping}
            assert len(new["19.99"].split(".")[1]) == 2 and 0 < int(new["25"]) < 100


def test_rewrite_program_keeps_non_ascii_text_intact():
    code = 'def f():\n    """Janet’s ducks"""\n    n = 16; m = 3\n    return n - m\n'
    assert rewrite_program(code, {Fraction(16): Fraction(40)}) == code.replace("16", "40")


def runs(*answers, structures=None):
    structures = structures or [f"s{i}" for i in range(len(answers))]
    return [ProgramRun(s, a, "" if a else "NameError: x") for s, a in zip(structures, answers)]


@pytest.mark.parametrize("given, original, min_agree, answer, reason", [
    (runs("42", "42.0"), ["18"], 2, "42", ""),
    (runs("42", "43"), ["18"], 2, "", "programs_disagree"),
    (runs("42", "42", structures=["same", "same"]), ["18"], 2, "", "too_few_programs"),
    (runs("42"), ["18"], 1, "42", ""),
    (runs("42", ""), ["18"], 2, "", "execution_failed"),
    (runs("-4", "-4.0"), ["18"], 2, "", "negative"),
    (runs("2.5", "2.5"), ["18"], 2, "", "non_integer"),
    (runs("2.5", "2.5"), ["1.5"], 2, "2.5", ""),
    (runs("inf", "inf"), ["18"], 2, "", "not_finite"),
    (runs("1.2e17", "120000000000000000"), ["18"], 2, "", "too_large"),
    (runs("0.30000000000000004", "0.3"), ["0.5"], 2, "0.3", ""),
    (runs("[1, 2]", "[1, 2]"), ["18"], 2, "", "not_numeric"),
    (runs("42", "42", "42"), ["18"], 3, "42", ""),
    (runs("34657932237440.0", "34657932237440"), ["18"], 2, "34657932237440", ""),  # labels are exact
])
def test_decide(given, original, min_agree, answer, reason):
    decision = decide(given, original, min_agree)
    assert (decision.accepted, decision.answer, decision.reason) == (not reason, answer, reason)
    assert reason in REJECTIONS + ("",)


GSM8K_QUESTION = "James runs 3 sprints 3 times a week. He runs 60 meters each sprint. How many meters a week?"
HARD_QUESTION = GSM8K_QUESTION.replace("3 sprints 3 times", "1793815 sprints 1793815 times")
HARD_CODE = 'def solution():\n    """..."""\n    sprints = 1793815\n    times = 3\n    return sprints * times * 60\n'


def test_gsm_hard_numbers_are_put_back_and_stale_ones_found():
    assert number_changes(HARD_QUESTION, GSM8K_QUESTION) == {Fraction(1793815): Fraction(3)}
    assert "sprints = 3\n" in restore_program(HARD_CODE, HARD_QUESTION, GSM8K_QUESTION)
    assert stale_numbers(HARD_CODE, HARD_QUESTION, GSM8K_QUESTION) == [Fraction(3)]
    assert number_changes("She bakes with 4933828.", "She bakes with four.") == {Fraction(4933828): Fraction(4)}


def test_calc_program_reads_the_worked_solution():
    answer = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
    assert calc_program(answer, "16 eggs, eats three, bakes four, $2 each") == \
        "# the GSM8K worked solution's calculator steps\nv0 = 16-3-4\nv1 = v0*2\nprint(v1)\n"
    assert calc_program("It is <<2^3=8>>8.\n#### 8", "2") is None  # not plain arithmetic
    assert calc_program("It is <<2*3=6>>6.\n#### 7", "2 and 3") is None  # no step gives the answer


@pytest.mark.parametrize("target, own, gold, restored, stale, labels", [
    (3431580.0, "3431580.0", "3", "3.0", [], []),
    (-9867630.0, "-9867630", "18", "18", [], ["negative"]),
    (12.5, "12.5", "18", "18", [], ["non_integer"]),
    (12.5, "12.5", "1.5", "1.5", [], []),
    (100.0, "99.0", "18", "18", [], ["disagrees_with_own_program"]),
    (100.0, "", "18", "18", [], ["disagrees_with_own_program"]),
    (5.158e-07, "5.158232655378219e-07", "0.5", "0.5", [], []),  # GSM-HARD's rounding, within tolerance
    (100.0, "100", "18", "17", [], ["inconsistent_with_gsm8k"]),
    (100.0, "100", "18", "18", [Fraction(3)], ["inconsistent_with_gsm8k"]),
    (-12.5, "-12.5", None, "", [], ["negative", "non_integer"]),  # no GSM8K counterpart: nothing to compare
])
def test_audit_label(target, own, gold, restored, stale, labels):
    assert audit_label(target, own, gold, restored, stale) == labels
    assert set(labels) <= set(AUDIT_LABELS)
