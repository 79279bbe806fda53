"""Answer normalisation (the ToRA/MMOS `strip_string` rules) and boxed-answer extraction, by table."""

import pytest

from mmos_ray.core.answers import (
    clean_answer_span,
    extract_answer,
    extract_boxed,
    extract_program_output,
    format_number,
    remove_thousands_separators,
    strip_string,
)


@pytest.mark.parametrize("raw, expected", [
    ("18", "18"),
    (" 18.\n", "18"),
    ("5.00", "5"),
    ("5.00 cm", "5cm"),
    ("5.05", "5.05"),
    (".5", "0.5"),
    ("\\dfrac{9}{7}", "\\frac{9}{7}"),
    ("\\tfrac12", "\\frac{1}{2}"),
    ("\\frac1{72}", "\\frac{1}{72}"),
    ("3/4", "\\frac{3}{4}"),
    ("3.5/4", "3.5/4"),
    ("\\sqrt2/2", "\\frac{\\sqrt{2}}{2}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("10\\%", "10"),
    ("\\$18.90", "18.90"),
    ("90^\\circ", "90"),
    ("12 \\text{ inches}", "12"),
    ("\\text{(C)}", "{(C)}"),  # the unit rule would leave nothing, so only `\\text` goes
    ("x = 5", "5"),
    ("xy=5", "5"),
    ("xy = 5", "xy=5"),  # the left side is measured before spaces go: "xy " is 3 characters
    ("abc = 5", "abc=5"),
    ("infinity", "\\infty"),
    ("(-inf, 3)", "(-\\infty,3)"),
    ("3j", "3i"),
    ("2 and 3", "23"),
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "\\begin{pmatrix}1\\-2\\end{pmatrix}"),
    ("\\mbox{Saturday}", ""),
    (7.0, "7"),
])
def test_strip_string(raw, expected):
    assert strip_string(raw) == expected


@pytest.mark.parametrize("text, expected", [
    ("so $\\boxed{42}$.", "42"),
    ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("nested \\boxed{\\{1, 2\\} \\cup {3}}", "\\{1, 2\\} \\cup {3}"),
    ("old style \\fbox{7}", "7"),
    ("bare $\\boxed 5$ here", "5"),
    ("unclosed \\boxed{12", "12"),
    ("no box here", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("raw, expected", [(":5.", "5"), ("7/", "7"), ("3\nmore", "3"), ("1.5", "1.5")])
def test_clean_answer_span(raw, expected):
    assert clean_answer_span(raw) == expected


@pytest.mark.parametrize("value, expected", [
    (145.0, "145"), (-9867630.0, "-9867630"), (7.5, "7.5"), (2.0107e-06, "0.0000020107"), (12, "12"),
])
def test_format_number(value, expected):
    assert format_number(value) == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "12", True])
def test_format_number_rejects_non_numbers(bad):
    with pytest.raises((TypeError, ValueError)):
        format_number(bad)


@pytest.mark.parametrize("raw, expected", [("1,080", "1080"), ("-2,520,000", "-2520000"), ("1,522.81", "1522.81"),
                                           ("4,6,14,15", "4,6,14,15"), ("(1,2)", "(1,2)"), ("12", "12")])
def test_remove_thousands_separators(raw, expected):
    assert remove_thousands_separators(raw) == expected


@pytest.mark.parametrize("text, expected", [
    ("We compute ... so the total is $\\boxed{18}$.", "18"),
    ("First $\\boxed{1}$, then correcting: $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
    ("The answer is 42.", "42"),
    ("the answer is: 7", "7"),
    ("```python\nprint(3 + 4)\n```\n```output\n7\n```\nSo", "7"),
    ("```output\n1\n```\nthen\n```output\n2,500\n```", "2500"),
    ("I think 12 apples and 1,300 pears", "1300"),
    ("no number at all", ""),
    ("The answer is $\\boxed{1,080}$", "1080"),
    ("so x = \\boxed{\\dfrac{9}{7}}.", "\\frac{9}{7}"),
])
def test_extract_answer_follows_tora_order(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_can_keep_the_span_as_written():
    text = "Therefore $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$."
    assert extract_answer(text, normalize=False) == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert extract_answer(text) == "(3,\\frac{\\pi}{2})"
    assert extract_program_output("```output\n  x \n```") == "x"
    assert extract_program_output("no output block") == ""
