"""GSM-HARD beside GSM8K: pair each GSM-HARD program with its GSM8K test question, write a second
program from the GSM8K worked solution, and classify GSM-HARD's labels. Pure: executing is the caller's.

GSM-HARD (reasoning-machines/pal `gsmhardv2.jsonl`) is GSM8K test with one number per question
replaced by a large one. Its PAL program keeps the *original* GSM8K question as docstring (in another
order than GSM8K's file), and usually carries the large number in place of the original one.

    docstring_question(code)                  # the GSM8K question the program was written for
    number_changes(hard_question, question)   # {large value: original value}, by aligning the texts
    restore_program(code, hard_question, question)   # the program on the GSM8K numbers
    calc_program(gsm8k_answer)                # a program from the <<a*b=c>> annotations, or None
    audit_label(...)                          # why a GSM-HARD label is suspect: [] when it is not
"""

from __future__ import annotations

import difflib
import math
import re
from fractions import Fraction

from mmos_ray.core.perturb import answer_class, find_numbers, frozen_values, program_literals, rewrite_program

_DOCSTRING = re.compile(r'"""(.*?)"""', re.DOTALL)
_CALC = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_CALC_EXPR = re.compile(r"[\d.+\-*/() ]+")
_CALC_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
                                                        "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100}

AUDIT_LABELS = ("negative", "non_integer", "disagrees_with_own_program", "inconsistent_with_gsm8k")


def normalize_text(text: str) -> str:
    return " ".join(text.split())


def docstring_question(code: str) -> str | None:
    match = _DOCSTRING.search(code)
    return normalize_text(match.group(1)) if match else None


def number_changes(changed: str, original: str) -> dict[Fraction, Fraction]:
    """{value in `changed`: value in `original`} for the numbers that differ between two texts that are
    otherwise the same. Tokens are aligned (difflib), so a reordered or reworded text gives no pairs;
    the original side may spell its number as a word (`four`)."""
    a, b = changed.split(), original.split()
    changes: dict[Fraction, Fraction] = {}
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op != "replace" or i2 - i1 != j2 - j1:
            continue
        for new_token, old_token in zip(a[i1:i2], b[j1:j2]):
            new, old = _token_value(new_token), _token_value(old_token)
            if new is not None and old is not None and new != old:
                changes.setdefault(new, old)
    return changes


def _token_value(token: str) -> Fraction | None:
    word = token.strip(".,;:!?()\"'").lower()
    if word in _NUMBER_WORDS:
        return Fraction(_NUMBER_WORDS[word])
    numbers = find_numbers(token)
    return numbers[0].value if len(numbers) == 1 and numbers[0].kind != "fraction" else None


def restore_program(code: str, hard_question: str, question: str) -> str:
    """The GSM-HARD program with its large numbers put back to the GSM8K question's."""
    return rewrite_program(code, number_changes(hard_question, question))


def stale_numbers(code: str, hard_question: str, question: str) -> list[Fraction]:
    """Original numbers that GSM-HARD replaced in the question but its program still uses (the program
    then answers a question that nobody asked). Values the question implies by a word (`half`: 2) are
    left out: the program may use them as constants."""
    replaced = set(number_changes(hard_question, question).values())
    numbers = find_numbers(hard_question)
    in_hard = {span.value for span in numbers} | frozen_values(hard_question, numbers)
    in_code = {value for *_, value, _ in program_literals(code)}
    return sorted((replaced & in_code) - in_hard)


def calc_program(answer: str, question: str) -> str | None:
    """A Python program from a GSM8K worked solution: one line per `<<expr=result>>` annotation, a number
    that equals an earlier result (and no number of the question) read as that result's variable, and
    the line whose result is the `#### answer` printed. None when an annotation is not plain arithmetic
    or no line gives the final answer."""
    if "####" not in answer:
        return None
    final = answer.split("####")[-1].strip().replace(",", "")
    inputs = {span.value for span in find_numbers(question)}
    lines, results = [], {}
    for i, (expr, result) in enumerate(_CALC.findall(answer)):
        expr, result = expr.replace(",", "").strip(), result.replace(",", "").strip()
        if not expr or not _CALC_EXPR.fullmatch(expr) or not _CALC_NUMBER.fullmatch(result.lstrip("-")):
            return None

        def name_or_literal(match: re.Match) -> str:
            value = Fraction(match.group())
            if value in results and value not in inputs:
                return results[value]
            return match.group() if "." in match.group() else str(int(match.group()))  # no leading zeros

        lines.append(f"v{i} = {_CALC_NUMBER.sub(name_or_literal, expr)}")
        results[Fraction(result)] = f"v{i}"
    try:
        last = results.get(Fraction(final))
    except ValueError:
        return None
    if last is None:
        return None
    return "# the GSM8K worked solution's calculator steps\n" + "\n".join(lines) + f"\nprint({last})\n"


def audit_label(target: float, own_rerun: str, gsm8k_gold: str | None, restored_rerun: str, stale: list) -> list[str]:
    """Why a GSM-HARD label is suspect (AUDIT_LABELS), given re-execution results from the caller:
    `own_rerun` is what its program prints now, `restored_rerun` what it prints on the GSM8K numbers
    ("" when it failed), `stale` the result of `stale_numbers`. The label and its program agree when they
    are equal within the grader's tolerance (relative 1e-4): GSM-HARD rounds its labels to 10 decimal
    places, which leaves tiny answers (`5.158e-07`) with few digits, and that alone is no disagreement.
    `gsm8k_gold` None: the question has no GSM8K counterpart, so only the label itself and its own
    program are judged (a non-integer label then counts as one)."""
    labels = []
    if target < 0:
        labels.append("negative")
    gold_is_integer = gsm8k_gold is None or float(gsm8k_gold.replace(",", "")).is_integer()
    if not float(target).is_integer() and gold_is_integer:
        labels.append("non_integer")
    if not _close(own_rerun, target):
        labels.append("disagrees_with_own_program")
    if gsm8k_gold is not None and (stale or not restored_rerun
                                   or answer_class(restored_rerun) != answer_class(gsm8k_gold)):
        labels.append("inconsistent_with_gsm8k")
    return labels


def _close(printed: str, target: float) -> bool:
    try:
        return math.isclose(float(printed.replace(",", "")), target, rel_tol=1e-4)
    except ValueError:
        return False
