"""Canonicalisation: alpha-equivalent programs share a key; a different constant or operation does not."""

import pytest

from mmos_ray.core.canonical import canonical_key, canonicalize_code, mmos_key, segments


def same(a, b):
    return canonicalize_code(a) == canonicalize_code(b)


@pytest.mark.parametrize("a, b", [
    ("x = 5\nprint(x)", "apples = 5\nprint(apples)"),
    ("x = 5  # the apples\nprint( x )", "x=5\n\n\nprint(x)"),
    ("m = 23\nm = m - 5\nprint(m)", "k = 23\nk = k - 5\nprint(k)"),  # re-assignment renamed too
    ("def f(a, b=2):\n    return a * b\nprint(f(3, b=4))", "def g(x, y=2):\n    return x * y\nprint(g(3, y=4))"),
    ("def f():\n    '''Doc.'''\n    return 1\nprint(f())", "def h():\n    return 1\nprint(h())"),
    ("for i in range(3):\n    print(i)", "for j in range(3):\n    print(j)"),
    ("print([i * i for i in range(4)])", "print([k * k for k in range(4)])"),
    ("import sympy as sp\nprint(sp.sqrt(8))", "import sympy\nprint(sympy.sqrt(8))"),
    ("from math import sqrt\nprint(sqrt(2))", "from math import sqrt as s\nprint(s(2))"),
    ("total = 0\nfor v in [1, 2]:\n    total += v\nprint(total)", "s = 0\nfor w in [1, 2]:\n    s += w\nprint(s)"),
    ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    print(e)", "try:\n    1 / 0\nexcept ZeroDivisionError as err:\n    print(err)"),
    ("f = lambda q: q + 1\nprint(f(1))", "g = lambda r: r + 1\nprint(g(1))"),
])
def test_alpha_equivalent_programs_share_a_key(a, b):
    assert same(a, b)


@pytest.mark.parametrize("a, b", [
    ("x = 5\nprint(x)", "x = 6\nprint(x)"),
    ("x = 5 + 2\nprint(x)", "x = 5 * 2\nprint(x)"),
    ("x = 5\ny = 2\nprint(x - y)", "x = 5\ny = 2\nprint(y - x)"),
    ("print(len([1, 2]))", "print(sum([1, 2]))"),
    ("import math\nprint(math.sqrt(4))", "import math\nprint(math.log(4))"),
])
def test_different_programs_do_not(a, b):
    assert not same(a, b)


def test_free_names_and_attributes_are_kept():
    assert canonicalize_code("import math\nx = math.pi\nprint(round(x, 2))") == \
        "import math as v0\nv1 = v0.pi\nprint(round(v1, 2))"


def test_key_covers_every_block_and_keeps_unparsable_code():
    one = "```python\nx = 1\nprint(x)\n```\n```output\n1\n```\n```python\ny = 2\nprint(y)\n```"
    other = "```python\na = 1\nprint(a)\n```\n```output\n1\n```\n```python\nb = 3\nprint(b)\n```"
    assert canonical_key(one).key != canonical_key(other).key  # they differ in the second block only
    assert mmos_key(one) == mmos_key(other)  # MMOS's key saw only the first block (mmos-method.md §8.3)
    broken = canonical_key("```python\ndef f(:\n    pass\n```")
    assert broken.unparsable == 1 and broken.key.startswith("#raw") and broken.blocks == 1


def test_mmos_key_keeps_mmos_quirks():
    key = mmos_key("Let us compute.\n```python\nm = 23\nm = m - 5\nprint(m)\n```\n```output\n18\n```\nDone")
    assert key.startswith("Let us compute.\n") and "A = 23\nm = A - 5" in key and key.endswith("18\n```")


def test_segments_pair_each_block_with_its_recorded_output():
    text = "Intro\n```python\nprint(1)\n```\n```output\n1\n```\nthen\n```python\nprint(2)\n```\nno output"
    assert segments(text) == [("print(1)\n", "1"), ("print(2)\n", None)]
