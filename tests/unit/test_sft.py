"""SFT tokens: masking at token level, packing, batch arithmetic (with the tiny model's real tokenizer)."""

import pytest

from mmos_ray.core.sft import IGNORE, batch_plan, block_causal_allowed, collate, encode, output_spans, pack, unpacked

PROMPT = "<|user|>\nWhat is 2+3?\n<|assistant|>\n"
COMPLETION = "Add.\n```python\nprint(2+3)\n```\n```output\n5\n```\nThe answer is $\\boxed{5}$."


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from mmos_ray.models import build_tiny

    return AutoTokenizer.from_pretrained(build_tiny(tmp_path_factory.mktemp("m") / "tiny", pretrain_steps=0))


def spans_of(tokenizer, encoded):
    text = PROMPT + COMPLETION
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"] + [(len(text), len(text))]
    return [(text[s:e] if s != e else "<eos>", label != IGNORE) for (s, e), label in zip(offsets, encoded.labels)]


def test_prompt_is_masked_and_everything_else_is_trained(tokenizer):
    encoded = encode(tokenizer, PROMPT, COMPLETION, 512, tokenizer.eos_token_id)
    pieces = spans_of(tokenizer, encoded)
    assert "".join(p for p, trained in pieces if not trained) == PROMPT
    assert "".join(p for p, trained in pieces if trained) == COMPLETION + "<eos>"
    assert encoded.input_ids[-1] == tokenizer.eos_token_id


def test_interpreter_outputs_can_be_masked_too(tokenizer):
    encoded = encode(tokenizer, PROMPT, COMPLETION, 512, tokenizer.eos_token_id, mask_outputs=True)
    masked = "".join(p for p, trained in spans_of(tokenizer, encoded) if not trained)
    assert masked == PROMPT + "5\n```"  # the output and its closing fence; "```output" itself is trained
    assert output_spans(COMPLETION) == [(COMPLETION.index("5\n```"), COMPLETION.index("5\n```") + 5)]


def test_truncation_and_nothing_to_train(tokenizer):
    assert len(encode(tokenizer, PROMPT, COMPLETION, 20, tokenizer.eos_token_id).input_ids) == 20
    assert encode(tokenizer, PROMPT * 10, COMPLETION, 20, tokenizer.eos_token_id) is None


def test_packing_first_fit_decreasing_keeps_examples_apart(tokenizer):
    examples = [encode(tokenizer, PROMPT, COMPLETION * n, 256, tokenizer.eos_token_id) for n in (1, 3, 1, 2)]
    rows = pack(examples, 256)
    assert sum(len(r.input_ids) for r in rows) == sum(len(e.input_ids) for e in examples)
    assert all(len(r.input_ids) <= 256 for r in rows) and len(rows) < len(examples)
    for row in rows:
        starts = [i for i, p in enumerate(row.position_ids) if p == 0]
        assert len(starts) == len(row.segments)
    assert pack(examples, 256) == pack(examples, 256)
    assert len(unpacked(examples)) == 4


def test_collate_pads_and_counts():
    from mmos_ray.core.sft import Row

    batch = collate([Row([1, 2, 3], [1, 2, 3], [0, 1, 2], [3]), Row([4], [IGNORE], [0], [1])], pad_token_id=0)
    assert batch["input_ids"] == [[1, 2, 3], [4, 0, 0]] and batch["labels"][1] == [IGNORE] * 3
    assert batch["real_tokens"] == 4 and batch["computed_tokens"] == 6


def test_block_causal_mask():
    allowed = block_causal_allowed([2, 1])
    assert allowed == [[True, False, False], [True, True, False], [False, False, True]]


@pytest.mark.parametrize("global_batch, micro, world, expected", [(128, 8, 8, (8, 2)), (128, 8, 16, (8, 1)),
                                                                  (16, 4, 2, (4, 2)), (6, 4, 2, (3, 1))])
def test_batch_plan(global_batch, micro, world, expected):
    assert batch_plan(global_batch, micro, world) == expected


def test_batch_plan_rejects_too_many_workers():
    with pytest.raises(ValueError, match="smaller than the number of workers"):
        batch_plan(1, 1, 2)
