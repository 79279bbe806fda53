"""Problem perturbation: new numbers for a verified problem, written consistently into its question and
programs, and the rule that decides whether the relabelled problem is kept (mmos-method.md §6, fixing §8.10).

    numbers = find_numbers(question)
    plan = plan_perturbation(question, programs, mode="similar", rng=problem_rng(seed, problem_id))
    plan.question, plan.programs, plan.mapping        # executing the programs is the caller's job
    decide(runs, original_answers, min_agree=2)       # -> Decision(accepted, answer, agreeing, reason)

Which numbers are inputs. `find_numbers` reads money (`$1,200.50`), percentages (`15%`, `15 percent`),
decimals and integers (with or without thousands separators) as inputs. It also finds, and leaves
alone, fractions (`3/4`: almost always a part of a whole, and programs write them as `3/4`, `0.75` or
`Fraction(3, 4)`), ordinals (`3rd`), times (`3:30`, `6am`), unit adjectives (`2-liter`, `5-year-old`),
dimensions (`10x12`), numbers with a scale word (`1.5 million`: programs hard-code the product), and
years (1800-2100 without a separator). The values of those, 0 and 1, and the values the question
implies by a word (`half` 2, `dozen` 12, `hour` 60, `week` 7, `%` 100, number words ...) are *frozen*:
a program literal with a frozen value may play either role, so that value changes nowhere.

How numbers are matched. By value, never by position: every distinct input value gets one new value,
used for each occurrence in the question and for each program literal equal to it (for a percentage p
also the literal p/100). A literal whose value is not a question input (100 for percent, 60 for
minutes) is a constant and stays. An input value that no program contains as a literal stays too
(programs may use it converted, e.g. 2 hours as 120), so question and programs always move together.

How new values are drawn. One `random.Random` per problem, seeded from the global seed and the problem
id, and one independent draw per value (MMOS re-seeded per draw, giving every number the same offset).
`similar`: the same number of significant digits and trailing zeros (`40` -> `70`, `7` -> `3`);
`large`: 2-4 more significant digits (`40` -> `58340`). Integers stay integers; decimals keep their
number of places; percentages stay in 1-99 in both modes. New values differ from each other and from
every other number of the question, so a relabelled problem can itself be matched by value again.

Where it stops. Negative numbers and number words are never perturbed; a coincidence (an input equal to
an unrelated literal) can still pair a literal with the wrong role: `decide` catches it when the
structurally different programs then disagree.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import random
import re
from fractions import Fraction

MODES = ("similar", "large")
PERTURBABLE = ("money", "percent", "decimal", "integer")

# A number token not glued to a word, a decimal point, a slash or a colon on its left.
_NUMBER = re.compile(r"(?<![\w.,/:])(?P<money>\$ ?)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<dec>\.\d+)?")
_FOLLOWERS = (  # (kind, pattern on the text right after the number, does the match extend the span)
    ("fraction", re.compile(r"/\d+"), True),
    ("time", re.compile(r":\d\d|\s?(?:am|pm|a\.m\.|p\.m\.)\b", re.IGNORECASE), True),
    ("ordinal", re.compile(r"(?:st|nd|rd|th)\b"), True),
    ("dimension", re.compile(r"\s?[x×]\s?\d"), False),
    ("unit_adjective", re.compile(r"-[A-Za-z]"), False),
    ("percent", re.compile(r"\s?(?:%|percent\b)"), False),
    ("scaled", re.compile(r"\s(?:thousand|million|billion|trillion)\b", re.IGNORECASE), False),
    ("attached", re.compile(r"[A-Za-z]"), False),  # 5kg, 3D: not a plain quantity
)
_IMPLIED_VALUES = {  # words whose values a program may write as literals although no digit says them
    "one": (1,), "two": (2,), "three": (3,), "four": (4,), "five": (5,), "six": (6,), "seven": (7,),
    "eight": (8,), "nine": (9,), "ten": (10,), "eleven": (11,), "twelve": (12,), "fifteen": (15,),
    "twenty": (20,), "thirty": (30,), "forty": (40,), "fifty": (50,), "sixty": (60,), "hundred": (100,),
    "thousand": (1000,), "half": (2,), "halves": (2,), "twice": (2,), "double": (2,), "triple": (3,),
    "thrice": (3,), "third": (3,), "thirds": (3,), "quarter": (4,), "quarters": (4,), "fourth": (4,),
    "dozen": (12,), "dozens": (12,), "hour": (60,), "hours": (60,), "minute": (60,), "minutes": (60,),
    "week": (7,), "weeks": (7,), "day": (24,), "days": (24,), "month": (12, 30), "months": (12, 30),
    "year": (12, 52, 365), "years": (12, 52, 365), "percent": (100,), "%": (100,), "cent": (100,),
    "cents": (100,),
}
_ALWAYS_FROZEN = frozenset({Fraction(0), Fraction(1)})
_WORD = re.compile(r"[A-Za-z]+|%")


@dataclasses.dataclass(frozen=True)
class NumberSpan:
    """One number in a question. `start:end` covers the digits only (a `$` or `%` stays outside)."""

    start: int
    end: int
    text: str
    value: Fraction
    kind: str  # money, percent, decimal, integer; or a frozen kind: fraction, time, ordinal, ...
    places: int  # digits after the decimal point
    grouped: bool  # written with thousands separators

    @property
    def perturbable(self) -> bool:
        return self.kind in PERTURBABLE


@dataclasses.dataclass(frozen=True)
class Perturbation:
    question: str
    programs: list[str]
    mapping: list[dict[str, str]]  # per changed value: kind, old and new as written in the question


@dataclasses.dataclass(frozen=True)
class ProgramRun:
    """One distinct program, re-executed by the caller on the perturbed numbers."""

    structure: str  # fingerprint of the original program's canonical key (core.canonical)
    answer: str  # the last line it printed; "" when it failed
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Decision:
    accepted: bool
    answer: str  # the agreed answer ("" when rejected)
    agreeing: tuple[str, ...]  # structures that gave it
    reason: str  # "" when accepted, else one of REJECTIONS


REJECTIONS = ("no_input_numbers", "execution_failed", "too_few_programs", "programs_disagree", "not_numeric",
              "not_finite", "too_large", "negative", "non_integer")
MAX_EXACT = 1e15  # beyond it a float (most programs compute in floats) no longer holds every integer exactly


def problem_rng(seed: int, problem_id: str) -> random.Random:
    """The RNG of one problem: the same (seed, id) always draws the same numbers, whatever the order."""
    return random.Random(f"{seed}:{problem_id}")  # str seeds hash with SHA-512: stable across processes


def find_numbers(text: str) -> list[NumberSpan]:
    spans = []
    for match in _NUMBER.finditer(text):
        digits = match.group("int") + (match.group("dec") or "")
        start, end = match.start("int"), match.end()
        kind = None
        for name, pattern, extends in _FOLLOWERS:
            follower = pattern.match(text, end)
            if follower:
                kind = name
                end = follower.end() if extends else end
                break
        value = Fraction(digits.replace(",", ""))
        if kind == "fraction":
            numerator, denominator = text[start:end].replace(",", "").split("/")
            value = Fraction(int(numerator), int(denominator)) if int(denominator) else Fraction(0)
        elif kind is None:
            kind = _plain_kind(match, value)
        spans.append(NumberSpan(start, end, text[start:end], value, kind,
                                len(match.group("dec") or "") - 1 if match.group("dec") else 0,
                                "," in match.group("int")))
    return spans


def _plain_kind(match: re.Match, value: Fraction) -> str:
    if match.group("money"):
        return "money"
    if match.group("dec"):
        return "decimal"
    if len(match.group("int")) == 4 and 1800 <= value <= 2100:
        return "year"
    return "integer"


def frozen_values(question: str, numbers: list[NumberSpan]) -> set[Fraction]:
    """Values no literal may be changed from: see the module docstring."""
    frozen = set(_ALWAYS_FROZEN)
    for span in numbers:
        if not span.perturbable:
            frozen.add(span.value)
            if span.kind == "fraction":
                frozen.update(Fraction(int(part)) for part in span.text.replace(",", "").split("/"))
    for word in _WORD.findall(question):
        frozen.update(Fraction(v) for v in _IMPLIED_VALUES.get(word.lower(), ()))
    return frozen


def program_literals(code: str) -> list[tuple[int, int, int, Fraction, bool]]:
    """(line, start byte, end byte, value, is_int) of every int/float literal; [] when the code does not
    parse (that program then keeps its numbers and is left to disagree)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    literals = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.lineno == node.end_lineno:
            if isinstance(node.value, float) and not math.isfinite(node.value):
                continue
            literals.append((node.lineno, node.col_offset, node.end_col_offset, Fraction(repr(node.value)),
                             isinstance(node.value, int)))
    return literals


def rewrite_program(code: str, values: dict[Fraction, Fraction]) -> str:
    """`code` with every literal whose value is a key of `values` replaced by the new value."""
    lines = code.split("\n")
    edits = sorted(((line, start, end, values[value], is_int) for line, start, end, value, is_int
                    in program_literals(code) if value in values), reverse=True)
    for line, start, end, new, is_int in edits:
        raw = lines[line - 1].encode("utf-8")  # ast offsets are UTF-8 byte offsets
        lines[line - 1] = (raw[:start] + render_literal(new, is_int).encode() + raw[end:]).decode("utf-8")
    return "\n".join(lines)


def render_literal(value: Fraction, was_int: bool) -> str:
    if value.denominator == 1 and was_int:
        return str(value.numerator)
    return repr(float(value))


def render_number(value: Fraction, span: NumberSpan) -> str:
    """`value` written as the question wrote `span`: same decimal places, separators if it had them."""
    if span.places == 0:
        return f"{int(value):,}" if span.grouped else str(int(value))
    return f"{float(value):,.{span.places}f}" if span.grouped else f"{float(value):.{span.places}f}"


def plan_perturbation(question: str, programs: list[str], mode: str, rng: random.Random) -> Perturbation | None:
    """New numbers for one problem, or None when no input number can change (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown perturbation mode {mode!r}; use one of {', '.join(MODES)}")
    numbers = find_numbers(question)
    frozen = frozen_values(question, numbers)
    in_programs = {value for code in programs for *_, value, _ in program_literals(code)}
    taken = {span.value for span in numbers} | frozen | in_programs
    places = {}  # a value written once as $5.00 and once as 5 cannot get one new value that fits both
    for span in numbers:
        places.setdefault(span.value, set()).add(span.places)
    first_span: dict[Fraction, NumberSpan] = {}
    for span in numbers:
        forms = _program_forms(span)
        if span.perturbable and span.value not in frozen and not forms.keys() & frozen \
                and forms.keys() & in_programs and len(places[span.value]) == 1:
            first_span.setdefault(span.value, span)
    new_values, literal_values = {}, {}
    for value, span in list(first_span.items()):
        new = draw_value(span, mode, rng, taken)
        if new is None:  # every value of its size is taken (many 1-digit numbers): this one stays
            del first_span[value]
            continue
        taken.add(new)
        new_values[value] = new
        for old_form, scale in _program_forms(span).items():
            literal_values[old_form] = new * scale
    if not new_values:
        return None
    spans = [s for s in numbers if s.value in new_values and s.perturbable]
    rewritten = question
    for span in sorted(spans, key=lambda s: s.start, reverse=True):
        rewritten = rewritten[:span.start] + render_number(new_values[span.value], span) + rewritten[span.end:]
    mapping = [{"kind": span.kind, "old": span.text, "new": render_number(new_values[value], span)}
               for value, span in first_span.items()]
    return Perturbation(rewritten, [rewrite_program(code, literal_values) for code in programs], mapping)


def _program_forms(span: NumberSpan) -> dict[Fraction, Fraction]:
    """The literal values a program may use for `span`, with the factor from the question's value."""
    if span.kind == "percent":
        return {span.value: Fraction(1), span.value / 100: Fraction(1, 100)}
    return {span.value: Fraction(1)}


def draw_value(span: NumberSpan, mode: str, rng: random.Random, taken: set[Fraction]) -> Fraction | None:
    """A new value for `span` (see the module docstring for the modes), never one of `taken`; None when
    100 draws found only taken values."""
    scaled = int(span.value * 10 ** span.places)  # digits without the decimal point
    trailing_zeros = 0
    while span.places == 0 and scaled and scaled % 10 ** (trailing_zeros + 1) == 0:
        trailing_zeros += 1
    significant = max(1, len(str(scaled)) - trailing_zeros)
    if mode == "large" and span.kind != "percent":
        significant += rng.randint(2, 4)
    for _ in range(100):
        low = 10 ** (significant - 1) if significant > 1 else 2
        mantissa = rng.randint(low, 10 ** significant - 1)
        new = Fraction(mantissa * 10 ** trailing_zeros, 10 ** span.places)
        if span.kind == "percent" and span.value < 100 and not 0 < new < 100:
            continue
        if new not in taken:
            return new
    return None


def decide(runs: list[ProgramRun], original_answers: list[str], min_agree: int = 2) -> Decision:
    """Accept the relabelled problem when at least `min_agree` structurally different programs give one
    answer, none gives another, and the answer is plausible: a finite number, non-negative, and an
    integer when every original answer was one."""
    if min_agree < 1:
        raise ValueError(f"min_agree must be >= 1, got {min_agree}")
    by_answer: dict[str, dict[str, str]] = {}  # answer class -> {structure: what it printed}
    for run in runs:
        if not run.error and run.answer.strip():
            by_answer.setdefault(answer_class(run.answer), {})[run.structure] = run.answer
    structures = {run.structure for run in runs}
    if len(structures) < min_agree:
        return Decision(False, "", (), "too_few_programs")
    if len(by_answer) > 1:
        return Decision(False, "", (), "programs_disagree")
    if not by_answer or len(next(iter(by_answer.values()))) < min_agree:
        return Decision(False, "", (), "execution_failed")
    printed = next(iter(by_answer.values()))
    agreeing = tuple(sorted(printed))
    answer = answer_label(printed[agreeing[0]])
    reason = _implausible(answer, original_answers)
    return Decision(not reason, "" if reason else answer, agreeing, reason)


def answer_label(answer: str) -> str:
    """The answer as a benchmark label: an integral number exactly (`420.0` -> `420`), another number
    to 12 significant digits (`0.30000000000000004` -> `0.3`), anything else as printed."""
    try:
        number = float(answer.strip().replace(",", ""))
    except ValueError:
        return answer.strip()
    if math.isfinite(number) and not number.is_integer():
        number = float(f"{number:.12g}")
    return str(int(number)) if math.isfinite(number) and number.is_integer() else repr(number)


def answer_class(answer: str, digits: int = 9) -> str:
    """Numbers compare by value (`18`, `18.0`), rounded to `digits` significant digits against float noise
    (`0.1 + 0.2`); anything else by its text."""
    text = answer.strip()
    try:
        number = float(text.replace(",", ""))
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    rounded = float(f"{number:.{digits}g}")
    return str(int(rounded)) if rounded.is_integer() else repr(rounded)


def _implausible(answer: str, original_answers: list[str]) -> str:
    try:
        number = float(answer)
    except ValueError:
        return "not_numeric"
    if not math.isfinite(number):
        return "not_finite"
    if abs(number) >= MAX_EXACT:
        return "too_large"
    if number < 0:
        return "negative"
    if original_answers and all(_is_integer(a) for a in original_answers) and not number.is_integer():
        return "non_integer"
    return ""


def _is_integer(answer: str) -> bool:
    try:
        return float(str(answer).replace(",", "")).is_integer()
    except ValueError:
        return False
