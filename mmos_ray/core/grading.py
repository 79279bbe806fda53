"""Grading an answer against a gold answer, with the rule that decided.

Two modes:
- `compat` reproduces the ToRA/MMOS `math_equal` (mmos-method.md §2.5) so our numbers compare with the
  paper's: both sides through `normalize_answer` (ToRA's `strip_string`); numbers equal within rel_tol 1e-4, also against gold×100
  and gold/100 (percentage leniency); bracket-insensitive string match; element-wise tuples; sympy
  `simplify(a - b) == 0` or `N(a) ≈ N(b)` (rel_tol 1e-3) after `parse_latex` / `parse_expr`.
- `strict` is exact where the paper's rules are lenient: plain numbers (as programs print them, with
  thousands separators or exponents) compare exactly as integers (1000001 is not 1000000) and to 6
  decimal places otherwise, with no percentage leniency; everything else goes to math-verify (sets,
  intervals, matrices, equations, inequalities, mixed numbers; gold first, as math-verify intends).

`fast_verdict` decides what needs no parser (numbers, equal strings, empty answers) in microseconds.
`symbolic_verdict` does the rest with sympy and math-verify. Both `parse_expr` and math-verify `eval`
text, and `simplify` can run forever, so model answers must reach `symbolic_verdict` only inside the
sandbox: `mmos_ray.sandbox.grader.Grader` does that, with a time limit per comparison. The functions
here never time out by themselves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import signal
import sys
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

from mmos_ray.core.answers import normalize_answer

GRADER_VERSION = "1"
MODES = ("compat", "strict")


@dataclasses.dataclass(frozen=True)
class Verdict:
    correct: bool
    decided_by: str  # the rule that decided: "numeric", "string", "math_verify", "timeout", ...

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fast_verdict(pred: str | None, gold: str | None, mode: str) -> Verdict | None:
    """The verdict when it needs no parser, else None (then `symbolic_verdict` decides)."""
    if mode == "compat":
        return _compat_fast(_compat_norm(pred), _compat_norm(gold))
    if mode == "strict":
        return _strict_fast(pred, gold)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def symbolic_verdict(pred: str | None, gold: str | None, mode: str) -> Verdict:
    """The full verdict, parsers included. Evaluates text: call it on model answers only in the sandbox."""
    decided = fast_verdict(pred, gold, mode)
    if decided is not None:
        return decided
    if mode == "compat":
        return _compat_full(_compat_norm(pred), _compat_norm(gold))
    return _math_verify(str(pred), str(gold))


# --- compat: ToRA's math_equal, rule for rule ---------------------------------------------------------

def _compat_norm(answer: str | None) -> str:
    return "" if answer is None else normalize_answer(answer)


def _as_float(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _compat_numeric(pred: str, gold: str) -> Verdict | None:
    p, g = _as_float(pred), _as_float(gold)
    if p is None or g is None:
        return None
    if _close(g, p):
        return Verdict(True, "numeric")
    if _close(g / 100, p) or _close(g * 100, p):
        return Verdict(True, "numeric_percent")
    return Verdict(False, "numeric")


def _close(a: float, b: float) -> bool:
    try:
        return math.isclose(a, b, rel_tol=1e-4)
    except (OverflowError, ValueError):
        return False


def _strip_brackets(pred: str, gold: str) -> tuple[str, str]:
    if (pred.startswith("[") and pred.endswith("]") and not gold.startswith("(")) or \
            (pred.startswith("(") and pred.endswith(")") and not gold.startswith("[")):
        pred, gold = pred.strip("[]()"), gold.strip("[]()")
    for ch in "{}()":
        pred, gold = pred.replace(ch, ""), gold.replace(ch, "")
    return pred, gold


def _tuple_parts(pred: str, gold: str) -> tuple[list[str], list[str]] | None:
    same_brackets = (pred[:1] + pred[-1:] == "[]" and gold[:1] + gold[-1:] == "[]") or \
                    (pred[:1] + pred[-1:] == "()" and gold[:1] + gold[-1:] == "()")
    if len(pred) < 2 or len(gold) < 2 or not same_brackets:
        return None
    pred_parts, gold_parts = pred[1:-1].split(","), gold[1:-1].split(",")
    return (pred_parts, gold_parts) if len(pred_parts) == len(gold_parts) else None


def _compat_fast(pred: str, gold: str) -> Verdict | None:
    numeric = _compat_numeric(pred, gold)
    if numeric is not None:
        return numeric
    if not pred:
        return Verdict(False, "empty")
    if not gold:
        return Verdict(False, "empty_gold")
    stripped_pred, stripped_gold = _strip_brackets(pred.strip(), gold.strip())
    if stripped_pred == stripped_gold:
        return Verdict(True, "string")
    parts = _tuple_parts(pred.strip(), gold.strip())
    if parts is not None:
        verdicts = [_compat_fast(p, g) for p, g in zip(*parts)]
        if all(v is not None and v.correct for v in verdicts):
            return Verdict(True, "tuple")
    return None


def _compat_full(pred: str, gold: str) -> Verdict:
    fast = _compat_fast(pred, gold)
    if fast is not None:
        return fast
    parts = _tuple_parts(pred.strip(), gold.strip())
    if parts is not None and all(_compat_full(p, g).correct for p, g in zip(*parts)):
        return Verdict(True, "tuple")
    return _sympy_equal(pred.strip(), gold.strip())


def _sympy_equal(pred: str, gold: str) -> Verdict:
    from sympy import N, simplify

    a, b = _sympy_parse(pred), _sympy_parse(gold)
    try:
        if simplify(a - b) == 0:
            return Verdict(True, "symbolic_simplify")
    except Exception:
        pass
    try:
        if math.isclose(N(a), N(b), rel_tol=1e-3):
            return Verdict(True, "symbolic_numeric")
    except Exception:
        pass
    return Verdict(False, "no_rule_matched")


def _sympy_parse(text: str):
    from sympy.parsing.latex import parse_latex
    from sympy.parsing.sympy_parser import parse_expr

    for parse in (parse_latex, parse_expr):
        try:
            return parse(text)
        except BaseException as exc:  # parse_latex raises odd types; a Timeout must still get through
            if isinstance(exc, _Timeout):
                raise
    return text


# --- strict ------------------------------------------------------------------------------------------

# A plain number as programs print them: sign, digits (thousands separators only where well-formed),
# decimals, exponent.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
_CURRENCY = re.compile(r"^(?:\\\$|\$)\s*(?=[-+]?[\d.])")
STRICT_DECIMALS = 6  # non-integers agree when equal to this many decimal places (as math-verify rounds)


def _strict_clean(answer: str | None) -> str:
    text = "" if answer is None else str(answer).strip()
    if len(text) >= 2 and text[0] == "$" and text[-1] == "$":
        text = text.strip("$").strip()
    if text.endswith(".") and not text.endswith(".."):  # a sentence's full stop, not part of the answer
        text = text[:-1].rstrip()
    return _CURRENCY.sub("", text)


def _plain_number(text: str) -> Fraction | None:
    if not _NUMBER.fullmatch(text) or not any(ch.isdigit() for ch in text):
        return None
    try:
        return Fraction(Decimal(text.replace(",", "")))
    except (ArithmeticError, ValueError):
        return None


def _strict_fast(pred: str | None, gold: str | None) -> Verdict | None:
    pred, gold = _strict_clean(pred), _strict_clean(gold)
    if not pred:
        return Verdict(False, "empty")
    if not gold:
        return Verdict(False, "empty_gold")
    if pred.replace(" ", "") == gold.replace(" ", ""):
        return Verdict(True, "exact")
    p, g = _plain_number(pred), _plain_number(gold)
    if p is None or g is None:
        return None
    if p.denominator == 1 and g.denominator == 1:
        return Verdict(p == g, "integer")
    return Verdict(round(p, STRICT_DECIMALS) == round(g, STRICT_DECIMALS), "decimal")


def _math_verify(pred: str, gold: str) -> Verdict:
    from math_verify import parse, verify

    gold_parsed = parse(_as_latex(gold), parsing_timeout=None)
    pred_parsed = parse(_as_latex(pred), parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        # Nothing math-like on one side (a word answer such as "shortage"): compare the words.
        same = _words(pred) == _words(gold)
        return Verdict(same, "text")
    return Verdict(bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), "math_verify")


def _as_latex(answer: str) -> str:
    return answer if "$" in answer or "\\boxed" in answer else f"${answer}$"


def _words(text: str) -> str:
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", _strict_clean(text))
    return " ".join(text.lower().strip(".").split())


# --- running comparisons in batches (inside the sandbox) ----------------------------------------------

class _Timeout(BaseException):
    """Raised by the per-comparison alarm; a BaseException so that library `except Exception` cannot eat it."""


def grade_batch_and_print(items: Sequence[tuple[str | None, str | None, str]], timeout_s: float) -> None:
    """Grade each (pred, gold, mode) with a per-item alarm, printing one JSON verdict per line as it ends.

    Runs as the program of a sandboxed child (the main thread of its own process, so alarms work).
    """
    def on_alarm(signum, frame):
        raise _Timeout()

    signal.signal(signal.SIGALRM, on_alarm)
    for pred, gold, mode in items:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            verdict = symbolic_verdict(pred, gold, mode)
        except _Timeout:
            verdict = Verdict(False, "timeout")
        except RecursionError:
            verdict = Verdict(False, "error:RecursionError")
        except Exception as exc:
            verdict = Verdict(False, f"error:{type(exc).__name__}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout.write(json.dumps(verdict.to_dict()) + "\n")
        sys.stdout.flush()


# --- voting and reports -------------------------------------------------------------------------------

def majority_vote(answers: Iterable[str | None],
                  same: Callable[[str, str], bool]) -> tuple[str | None, int, list[int]]:
    """The answer of the largest equivalence class (answers that `same` calls equal vote together).

    Returns (representative, votes, indices of its members). `None` and '' do not vote; ties go to the
    class seen first. With no votes at all: (None, 0, []).
    """
    classes: list[tuple[str, list[int]]] = []
    for index, answer in enumerate(answers):
        if answer is None or not str(answer).strip():
            continue
        for representative, members in classes:
            if answer == representative or same(answer, representative):
                members.append(index)
                break
        else:
            classes.append((answer, [index]))
    if not classes:
        return None, 0, []
    representative, members = max(classes, key=lambda c: len(c[1]))  # max keeps the first of equals
    return representative, len(members), members


def disagreements(pairs: Sequence[tuple[str | None, str | None]], first: Sequence[Verdict],
                  second: Sequence[Verdict], names: tuple[str, str] = ("compat", "strict")) -> dict[str, Any]:
    """Where two sets of verdicts on the same (pred, gold) pairs disagree, with counts per direction."""
    if not len(pairs) == len(first) == len(second):
        raise ValueError("pairs and both verdict lists must have the same length")
    rows = [{"pred": pred, "gold": gold, names[0]: a.to_dict(), names[1]: b.to_dict()}
            for (pred, gold), a, b in zip(pairs, first, second) if a.correct != b.correct]
    only_first = sum(row[names[0]]["correct"] for row in rows)
    return {"pairs": len(pairs), "disagree": len(rows), f"only_{names[0]}_correct": only_first,
            f"only_{names[1]}_correct": len(rows) - only_first, "rows": rows}
