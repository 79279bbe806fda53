"""The records that flow between stages, as explicit dataclasses.

Dicts appear only at the storage / Ray Data boundary, through `to_row` and `from_row`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark or training problem.

    `id` is dataset-qualified and stable across runs (`gsm8k/test/17`): the position of the record in its
    source file, so that ids of different datasets never collide and a rerun gives the same ids.
    `gold` is the normalised answer (`core.answers.strip_string` of the per-dataset answer field);
    `meta["gold_raw"]` keeps the answer as the source wrote it, for graders that want the exact form.
    """

    id: str
    dataset: str
    split: str
    question: str
    gold: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def gold_for(self, mode: str) -> str:
        """The gold a grader of `mode` compares with: compat the normalised `gold` (as ToRA/MMOS), strict the
        answer as the source wrote it."""
        return self.gold if mode == "compat" else self.meta.get("gold_raw", self.gold)

    def to_row(self) -> dict[str, Any]:
        # meta goes to JSON text: its keys differ between datasets, which a Parquet schema cannot hold.
        row = dataclasses.asdict(self)
        row["meta"] = json.dumps(self.meta, ensure_ascii=False, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Problem":
        meta = row.get("meta") or "{}"
        return cls(
            id=row["id"],
            dataset=row["dataset"],
            split=row["split"],
            question=row["question"],
            gold=row["gold"],
            meta=json.loads(meta) if isinstance(meta, str) else dict(meta),
        )


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """One sampled tool-integrated reasoning path, with its lineage.

    `text` is everything after the prompt: prose, ```python blocks, the ```output blocks we appended,
    and the final answer. `error` is set (and `text` may be empty) when sampling this row failed: the
    row is kept so the batch is not lost, and a rerun does not retry it.
    """

    problem_id: str
    sample_idx: int
    seed: int
    model: str
    prompt_version: str
    text: str
    rounds: int
    finish_reason: str  # boxed, no_code, length, max_rounds, error
    num_tokens: int  # generated, all rounds
    num_prompt_tokens: int  # of the first round's prompt
    executions: int
    error: str = ""

    @property
    def key(self) -> tuple[str, int]:
        return self.problem_id, self.sample_idx

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Trajectory":
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in row})


@dataclasses.dataclass(frozen=True)
class Verification:
    """What re-executing and grading one trajectory found (stage 02 writes it beside the trajectory)."""

    pred: str  # the extracted answer, as the grader saw it
    correct: bool
    decided_by: str  # the grading rule that decided
    exec_ok: bool  # it has code, and every block re-ran without error or time-out
    outputs_match: bool  # every recorded ```output block equals what re-running its block shows
    blocks: int
    exec_error: str  # the first block's error, if any
    fingerprint: str  # hash of the canonical key over all blocks
    canonical_key: str
    unparsable_blocks: int

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
