"""The benchmark registry: which file holds each dataset split, and how its rows become `Problem`s.

Question text and gold answer follow the per-dataset rules of ToRA/MMOS (`../shared/reference/mmos-method.md`
§2.6), so that accuracies are comparable with the paper's, with two deliberate differences recorded here:
numbers lose their thousands separators (`1,080` -> `1080`, in predictions too), and MATH golds also
accept `\\fbox{}`.
Every Problem keeps the source's own answer text in `meta["gold_raw"]`.

This module reads no files; `mmos_ray.loaders` finds and reads them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from mmos_ray.core.answers import clean_answer_span, extract_boxed, format_number, normalize_answer
from mmos_ray.core.errors import DataError, did_you_mean
from mmos_ray.core.records import Problem


@dataclasses.dataclass(frozen=True)
class HubSpec:
    repo: str
    split: str  # may combine splits: "train+test"
    configs: tuple[str, ...] = ()  # concatenated in this order; () = the default config


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    path: str  # relative to the data dir, without extension: .jsonl, .json or .parquet is looked for
    expected: int  # record count of the reference release (checked by the loader tests)
    hub: HubSpec | None = None  # where real users can read the same split from the Hugging Face hub


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    splits: dict[str, SplitSpec]
    # row -> (question, answer before normalisation, meta); meta["gold_raw"] when the source wrote it otherwise
    parse: Callable[[dict[str, Any]], tuple[str, str, dict[str, Any]]]
    licence: str
    keep: Callable[[dict[str, Any]], bool] = lambda row: True  # rows the benchmark excludes (hub copies)

    @property
    def default_split(self) -> str:
        if not self.splits:
            raise DataError(f"dataset {self.name!r} is read from a file: give its path")
        return "test" if "test" in self.splits else next(iter(self.splits))

    @property
    def from_files(self) -> bool:
        """True for datasets that exist only as files the user names (`generated`)."""
        return not self.splits


def _field(row: dict[str, Any], name: str) -> Any:
    if name not in row or row[name] is None:
        raise KeyError(name)
    return row[name]


def _number(row: dict[str, Any], name: str) -> str:
    value = _field(row, name)
    if isinstance(value, str):
        return value.strip()
    return format_number(value)


def _parse_gsm8k(row):
    answer = _field(row, "answer")
    if "####" not in answer:
        raise DataError("its 'answer' has no final '#### <number>' line; GSM8K answers end with one")
    return _field(row, "question"), answer.split("####")[-1].strip(), {}


def _parse_generated(row):
    """`mmos generate` output: GSM8K's record format plus where the problem came from."""
    question, answer, _ = _parse_gsm8k(row)
    return question, answer, {"source_id": row.get("source_id"), "mode": row.get("mode"), "seed": row.get("seed")}


def _parse_math(row):
    solution = _field(row, "solution")
    boxed = extract_boxed(solution)
    if boxed is None:
        raise DataError("its 'solution' has no \\boxed{...} answer; MATH solutions box the final answer")
    meta = {"level": row.get("level"), "type": row.get("type")}
    if row.get("unique_id"):
        meta["unique_id"] = row["unique_id"]
    return _field(row, "problem"), clean_answer_span(boxed), meta


def _parse_math500(row):
    meta = {"level": f"Level {_field(row, 'level')}", "type": row.get("subject"), "unique_id": row.get("unique_id")}
    return _field(row, "problem"), str(_field(row, "answer")), meta


def _parse_svamp(row):
    body = str(_field(row, "Body")).strip()
    if not body.endswith("."):
        body += "."
    question = f"{body} {str(_field(row, 'Question')).strip()}"
    return question, _number(row, "Answer"), {"type": row.get("Type"), "source_id": row.get("ID")}


def _parse_asdiv(row):
    question = f"{str(_field(row, 'body')).strip()} {str(_field(row, 'question')).strip()}"
    gold = re.sub(r"\(.*?\)", "", str(_field(row, "answer"))).strip()  # "9 (apples)" -> "9"
    meta = {"type": row.get("solution_type")}
    for key in ("id", "grade"):
        if key in row:
            meta[key] = row[key]
    return question, gold, meta


def _parse_gsm_hard(row):
    return _field(row, "input"), _number(row, "target"), {"code": row.get("code")}


def _parse_mawps(row):
    return _field(row, "input"), _number(row, "target"), {"type": row.get("type")}


def _parse_tabmwp(row):
    title = row.get("table_title")
    about = f'regarding "{title}" ' if title else ""
    question = f"Read the following table {about}and answer a question:\n{_field(row, 'table')}\n{_field(row, 'question')}"
    choices = row.get("choices")
    if choices:
        question += f" Please select from the following options: {list(choices)}"
    answer = str(_field(row, "answer"))
    ans_type = _field(row, "ans_type")
    gold = answer
    if ans_type in ("integer_number", "decimal_number"):
        gold = format_number(_tabmwp_number(answer))
    meta = {"gold_raw": answer, "ans_type": ans_type, "ques_type": row.get("ques_type"), "unit": row.get("unit"),
            "grade": row.get("grade"), "choices": list(choices) if choices else None, "pid": row.get("_key")}
    return question, gold, meta


def _tabmwp_number(answer: str) -> float:
    """TabMWP numeric answers as ToRA reads them: `a/b` divided, `1,234` de-commaed, `5%` -> 0.05."""
    try:
        if "/" in answer:
            numerator, denominator = answer.split("/")
            return int(numerator) / int(denominator)
        if "," in answer:
            return float(answer.replace(",", ""))
        if "%" in answer:
            return float(answer.split("%")[0]) / 100
        return float(answer)
    except (ValueError, ZeroDivisionError) as exc:
        raise DataError(f"numeric 'answer' {answer!r} cannot be read as a number ({exc})") from None


_MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                  "prealgebra", "precalculus")
_NON_COMMERCIAL = "CC BY-NC 4.0 (non-commercial use only)"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("gsm8k", {
            "train": SplitSpec("gsm8k/train", 7473, HubSpec("openai/gsm8k", "train", ("main",))),
            "test": SplitSpec("gsm8k/test", 1319, HubSpec("openai/gsm8k", "test", ("main",))),
        }, _parse_gsm8k, "MIT"),
        DatasetSpec("math", {
            "train": SplitSpec("math/train", 7500, HubSpec("EleutherAI/hendrycks_math", "train", _MATH_SUBJECTS)),
            "test": SplitSpec("math/test", 5000, HubSpec("EleutherAI/hendrycks_math", "test", _MATH_SUBJECTS)),
        }, _parse_math, "MIT"),
        DatasetSpec("math500", {
            "test": SplitSpec("math500/test", 500, HubSpec("HuggingFaceH4/MATH-500", "test")),
        }, _parse_math500, "MIT"),
        DatasetSpec("svamp", {
            "test": SplitSpec("svamp/test", 1000, HubSpec("ChilleD/SVAMP", "train+test")),
        }, _parse_svamp, "MIT"),
        DatasetSpec("asdiv", {
            "test": SplitSpec("asdiv/test", 2215, HubSpec("EleutherAI/asdiv", "validation")),
        }, _parse_asdiv, _NON_COMMERCIAL, keep=lambda row: ";" not in str(row.get("answer", ""))),
        DatasetSpec("asdiv-a", {
            "test": SplitSpec("asdiv/asdiv-a", 1218),
        }, _parse_asdiv, _NON_COMMERCIAL),
        DatasetSpec("gsm-hard", {
            "test": SplitSpec("gsm-hard/test", 1319, HubSpec("reasoning-machines/gsm-hard", "train")),
        }, _parse_gsm_hard, "MIT / Apache-2.0"),
        DatasetSpec("mawps", {
            "test": SplitSpec("mawps/test", 2065),
            "singleeq": SplitSpec("mawps/singleeq", 508),
            "singleop": SplitSpec("mawps/singleop", 562),
            "addsub": SplitSpec("mawps/addsub", 395),
            "multiarith": SplitSpec("mawps/multiarith", 600),
        }, _parse_mawps, "MIT / Apache-2.0"),
        DatasetSpec("tabmwp", {
            "test1k": SplitSpec("tabmwp/problems_test1k", 1000),
        }, _parse_tabmwp, "CC BY-NC-SA 4.0 (non-commercial use only)"),
        # Problems `mmos generate` wrote: no split of its own, each file is one (named after the file).
        DatasetSpec("generated", {}, _parse_generated, "that of the benchmark it was generated from"),
    ]
}


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry for `name`, or a DataError that lists the known names and the closest one."""
    if name in DATASETS:
        return DATASETS[name]
    raise DataError(f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; known: {', '.join(DATASETS)}")


def get_split(dataset: DatasetSpec, split: str | None) -> tuple[str, SplitSpec]:
    split = split or dataset.default_split
    if split not in dataset.splits:
        raise DataError(f"dataset {dataset.name!r} has no split {split!r}{did_you_mean(split, dataset.splits)}; "
                        f"splits: {', '.join(dataset.splits)}")
    return split, dataset.splits[split]


def parse_problem(dataset: DatasetSpec, split: str, index: int, row: dict[str, Any]) -> Problem:
    """One source row -> Problem. Raises DataError naming the missing field or the bad value.

    A row whose answer normalises to nothing (MATH train has one `\\boxed{}`) is kept with `gold == ""`,
    so that counts and ids match the release; graders never count an empty gold as matched.
    """
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object with the {dataset.name} fields, got {type(row).__name__}")
    try:
        question, answer, meta = dataset.parse(row)
    except KeyError as exc:
        raise DataError(f"missing field {exc.args[0]!r}, which dataset {dataset.name!r} needs "
                        f"(fields present: {', '.join(map(str, row)) or 'none'})") from None
    gold = normalize_answer(answer)
    if not str(question).strip():
        raise DataError(f"empty question (dataset {dataset.name!r})")
    meta = {"gold_raw": answer} | {k: v for k, v in meta.items() if v is not None}
    return Problem(id=f"{dataset.name}/{split}/{index}", dataset=dataset.name, split=split,
                   question=str(question).strip(), gold=gold, meta=meta)
