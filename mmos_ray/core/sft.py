"""SFT examples as tokens: prompt + completion + eos, labels masked, then packed or padded into batches.

Pure: the tokenizer is passed in (anything callable like a Hugging Face fast tokenizer that returns
`input_ids` and `offset_mapping`), and batches are lists of ints — the trainer makes tensors of them.

Masking (mmos-method.md §3, "loss on the completion only"): a token is masked (label -100) when it
starts inside the prompt; with `mask_outputs`, also when it lies in an interpreter output — the text
between ```output\\n and its closing ``` (that fence included): the model learns to *ask* for output
(it writes ```output, where sampling stops) but is not trained to predict what the interpreter prints.

Packing: examples go into rows of at most `max_length` tokens, longest first, each into the first row
with room (first-fit decreasing; deterministic). Every example keeps its own position ids (0, 1, ...),
and `segments` tells the model where one ends, so that no token attends across examples.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

IGNORE = -100
_OUTPUT_SPAN = re.compile(r"```output\n(.*?```)", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclasses.dataclass
class Row:
    """One training row: one example (padded mode) or several (packed)."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    segments: list[int]  # lengths of the examples in this row, in order


def output_spans(completion: str, offset: int = 0) -> list[tuple[int, int]]:
    """Character spans of interpreter outputs (content and closing fence) in `completion`, shifted by `offset`."""
    return [(m.start(1) + offset, m.end(1) + offset) for m in _OUTPUT_SPAN.finditer(completion)]


def encode(tokenizer: Any, prompt: str, completion: str, max_length: int, eos_token_id: int,
           mask_outputs: bool = False) -> Encoded | None:
    """Tokens and labels for one example, truncated to `max_length`; None when nothing is left to train on."""
    text = prompt + completion
    encoded = tokenizer(text, return_offsets_mapping=True)
    ids = list(encoded["input_ids"]) + [eos_token_id]
    offsets = list(encoded["offset_mapping"]) + [(len(text), len(text))]
    masked_spans = output_spans(completion, offset=len(prompt)) if mask_outputs else []
    labels = []
    for token, (start, end) in zip(ids, offsets):
        special = start == end and token != eos_token_id  # BOS and other added tokens: not trained
        in_prompt = start < len(prompt)
        in_output = any(span_start <= start < span_end for span_start, span_end in masked_spans)
        labels.append(IGNORE if special or in_prompt or in_output else token)
    ids, labels = ids[:max_length], labels[:max_length]
    result = Encoded(ids, labels)
    return result if result.trained_tokens else None


def pack(examples: Sequence[Encoded], max_length: int) -> list[Row]:
    """First-fit decreasing into rows of at most `max_length` tokens; the rows in a stable order."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    rows: list[Row] = []
    free: list[int] = []
    for index in order:
        example = examples[index]
        size = len(example.input_ids)
        slot = next((r for r, room in enumerate(free) if room >= size), None)
        if slot is None:
            rows.append(Row([], [], [], []))
            free.append(max_length)
            slot = len(rows) - 1
        row = rows[slot]
        row.input_ids += example.input_ids
        row.labels += example.labels
        row.position_ids += list(range(size))
        row.segments.append(size)
        free[slot] -= size
    return rows


def unpacked(examples: Sequence[Encoded]) -> list[Row]:
    """One example per row (the padding-only mode, for comparison)."""
    return [Row(list(e.input_ids), list(e.labels), list(range(len(e.input_ids))), [len(e.input_ids)])
            for e in examples]


def collate(rows: Sequence[Row], pad_token_id: int) -> dict[str, Any]:
    """Pad rows to the longest one: lists ready for tensors, and the counts for the padding share."""
    width = max(len(r.input_ids) for r in rows)
    batch = {"input_ids": [], "labels": [], "position_ids": [], "segments": [], "real_tokens": 0,
             "computed_tokens": width * len(rows)}
    for row in rows:
        pad = width - len(row.input_ids)
        batch["input_ids"].append(row.input_ids + [pad_token_id] * pad)
        batch["labels"].append(row.labels + [IGNORE] * pad)
        batch["position_ids"].append(row.position_ids + list(range(pad)))
        batch["segments"].append(row.segments + ([pad] if pad else []))
        batch["real_tokens"] += len(row.input_ids)
    return batch


def block_causal_allowed(segments: Sequence[int]) -> list[list[bool]]:
    """Which key each query may attend to: causal, and only within its own example (pure reference;
    the trainer builds the same mask as a tensor)."""
    owner = [i for i, length in enumerate(segments) for _ in range(length)]
    return [[k <= q and owner[k] == owner[q] for k in range(len(owner))] for q in range(len(owner))]


def batch_plan(global_batch: int, micro_batch: int, world_size: int) -> tuple[int, int]:
    """(micro batch per worker, gradient accumulation steps) so that micro x accumulation x world = global.

    The micro batch shrinks if the global batch cannot hold one micro batch per worker.
    """
    if global_batch < world_size:
        raise ValueError(f"train.global_batch_size ({global_batch}) is smaller than the number of workers "
                         f"({world_size}); raise it or use fewer workers")
    micro = max(1, min(micro_batch, global_batch // world_size))
    while global_batch % (micro * world_size):
        micro -= 1
    return micro, global_batch // (micro * world_size)
