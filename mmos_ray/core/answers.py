"""Answer extraction and normalisation: the one copy in the project.

`extract_answer` takes the answer out of a trajectory by the ToRA/MMOS rules, in their order
(`../shared/reference/mmos-method.md` §2.3): the last `\\boxed{}` (braces balanced), else the text after the
last "the answer is", else the last ```output block, else the last number. `strip_string` is the
ToRA/MMOS normalisation (§2.4), rule for rule, so that golds and predictions compare as in the paper.
The MMOS code carries two drifting copies of it; this is the only one here.
"""

from __future__ import annotations

import math
import re

_TRAILING_TEXT_UNIT = re.compile(r"\\text{.*?}$")
_MBOX = re.compile(r"\\mbox{.*?}")
_SQRT_BARE_ARG = re.compile(r"\\sqrt(\w+)")
_ZERO_DECIMALS_BEFORE_NON_DIGIT = re.compile(r"(\d+)\.0+([^\d])")
_ZERO_DECIMALS_AT_END = re.compile(r"(\d+)\.0+$")
_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d+)?")


def normalize_answer(answer: object) -> str:
    """THE normalisation of answers (golds in the loaders, predictions in `extract_answer`):
    `strip_string`, after dropping the thousands separators of a number written with them (`1,080`)."""
    return strip_string(remove_thousands_separators(str(answer)))


def strip_string(answer: object) -> str:
    """Normalise an answer string as ToRA/MMOS do (rule order matters; see the module docstring)."""
    s = str(answer).strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "").replace("\\ ", "")
    s = s.replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    without_unit = _TRAILING_TEXT_UNIT.sub("", s).strip()
    if without_unit:
        s = without_unit
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\text", "").replace("x\\in", "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = s.replace("\\cdot", "")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("and", "").replace("\\mathbf", "")
    s = _MBOX.sub("", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = _ZERO_DECIMALS_BEFORE_NON_DIGIT.sub(r"\1\2", s)
    s = _ZERO_DECIMALS_AT_END.sub(r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _SQRT_BARE_ARG.sub(r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _brace_bare_fracs(s)
    return _int_slash_int_to_frac(s)


def _brace_bare_fracs(s: str) -> str:
    r"""`\frac12` -> `\frac{1}{2}`, `\frac1{72}` -> `\frac{1}{72}`; anything shorter is left as it was."""
    head, *tails = s.split("\\frac")
    out = [head]
    for tail in tails:
        out.append("\\frac")
        if tail.startswith("{"):
            out.append(tail)
            continue
        if len(tail) < 2:
            return s
        numerator, rest = tail[0], tail[1:]
        if rest[0] == "{":
            out.append("{" + numerator + "}" + rest)
        else:
            out.append("{" + numerator + "}{" + rest[0] + "}" + rest[1:])
    return "".join(out)


def _int_slash_int_to_frac(s: str) -> str:
    r"""`3/4` -> `\frac{3}{4}` when both sides are plain integers (or contain a sqrt)."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    sides = []
    for part in parts:
        if "sqrt" in part:
            sides.append(part)
            continue
        try:
            sides.append(str(int(part)))
        except ValueError:
            return s
    if "/".join(sides) != s:
        return s
    return "\\frac{" + sides[0] + "}{" + sides[1] + "}"


def extract_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, braces balanced; None if absent.

    `\boxed 5$` (no brace) gives the text up to the next `$`, as ToRA reads it. An unclosed brace gives
    everything after it.
    """
    starts = [m for m in re.finditer(r"\\boxed|\\fbox", text)]
    if not starts:
        return None
    rest = text[starts[-1].end():]
    if not rest.startswith("{"):
        return rest.split("$")[0].strip()
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return rest[1:]


_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")


def extract_answer(text: str, normalize: bool = True) -> str:
    """The answer of a trajectory ('' if none). `normalize=False` keeps the span as written (for the
    strict grader, which parses LaTeX itself and would lose information to `strip_string`)."""
    boxed = extract_boxed(text)
    if boxed is not None:
        answer = boxed
    elif "he answer is" in text:
        answer = text.split("he answer is")[-1].strip()
    elif (output := extract_program_output(text)):
        answer = output
    else:
        numbers = _LAST_NUMBER.findall(text.replace(",", ""))
        answer = numbers[-1] if numbers else ""
    answer = clean_answer_span(answer)
    return normalize_answer(answer) if normalize else answer.strip()


def extract_program_output(text: str) -> str:
    """The content of the last ```output block ('' if none)."""
    if "```output" not in text:
        return ""
    tail = text.split("```output")[-1]
    return tail.split("```")[0].strip()


def clean_answer_span(answer: str) -> str:
    """The post-processing ToRA applies to an extracted answer: first line, no leading ':', no trailing '.' or '/'."""
    answer = answer.split("\n")[0]
    if answer.startswith(":"):
        answer = answer[1:]
    if answer.endswith("."):
        answer = answer[:-1]
    if answer.endswith("/"):
        answer = answer[:-1]
    return answer


def format_number(value: float | int) -> str:
    """A number as plain decimal text: integral floats without `.0`, never scientific notation."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        if value.is_integer():
            return str(int(value))
        text = repr(value)
        if "e" in text or "E" in text:
            text = f"{value:.20f}".rstrip("0").rstrip(".")
        return text
    return str(value)


def remove_thousands_separators(text: str) -> str:
    """`1,080` -> `1080` where the whole answer is one number written with thousands separators."""
    stripped = text.strip()
    if _THOUSANDS_NUMBER.fullmatch(stripped):
        return stripped.replace(",", "")
    return text
