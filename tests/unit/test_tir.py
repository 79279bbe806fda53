"""Observation formatting for the TIR loop: head + tail truncation, and the ToRA/MMOS compat view."""

import pytest

from mmos_ray.core.tir import format_observation, truncate_middle


@pytest.mark.parametrize("text, n, expected", [
    ("short", 10, "short"),
    ("0123456789", 10, "0123456789"),
    ("0123456789abcdef", 9, "012...def"),
    ("0123456789abcdef", 10, "012...cdef"),
])
def test_truncate_middle(text, n, expected):
    assert truncate_middle(text, n) == expected
    assert len(truncate_middle(text, n)) <= n


def test_observation_shows_output_and_error():
    assert format_observation("1\n2\n", "") == "1\n2"
    assert format_observation("partial\n", "ZeroDivisionError: division by zero") == \
        "partial\nZeroDivisionError: division by zero"
    assert format_observation("", "NameError: name 'x' is not defined") == "NameError: name 'x' is not defined"
    long = format_observation("x" * 5000, "", max_chars=100)
    assert len(long) == 100 and "..." in long


def test_compat_observation_is_tora_s():
    assert format_observation("1\n2\n\n", "", compat=True) == "2"
    assert format_observation("", "KeyError: 'a'", compat=True) == "KeyError: 'a'"
    assert format_observation("partial\n", "ValueError: bad", compat=True) == "partial"
    cut = format_observation("a" * 60 + "b" * 60, "", compat=True)
    assert cut == "a" * 50 + "..." + "b" * 50
