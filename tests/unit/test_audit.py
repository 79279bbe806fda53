"""The GSM-HARD audit's pure parts: counting flags with examples, and the side-by-side scores (no sandbox)."""

import json

from mmos_ray import storage
from mmos_ray.core.gsm_hard import AUDIT_LABELS
from mmos_ray.report import audit_markdown
from mmos_ray.tools.audit import side_by_side, summarize


def label_row(i, labels, paired=True):
    return {"id": f"gsm-hard/test/{i}", "labels": labels, "question": f"question {i}", "target": str(-i),
            "own_rerun": str(-i), "gsm8k_question": f"q{i}" if paired else None, "gsm8k_id": "x" if paired else None,
            "gsm8k_gold": "3" if paired else None, "restored_rerun": "3" if paired else "", "stale_numbers": []}


def test_summarize_counts_each_flag_and_keeps_the_first_examples():
    rows = [label_row(0, []), label_row(1, ["negative"]), label_row(2, ["negative", "inconsistent_with_gsm8k"]),
            label_row(3, ["non_integer"], paired=False), label_row(4, ["negative"])]
    audit = summarize(rows, examples=2)
    assert audit["counts"] == {"problems": 5, "paired_with_gsm8k": 4, "flagged": 4, "negative": 3, "non_integer": 1,
                               "disagrees_with_own_program": 0, "inconsistent_with_gsm8k": 1}
    assert audit["shares"]["flagged"] == 0.8
    assert [e["id"] for e in audit["examples"]["negative"]] == ["gsm-hard/test/1", "gsm-hard/test/2"]
    assert audit["labels"] == list(AUDIT_LABELS)
    text = audit_markdown(audit)
    assert "**4 labels flagged** (80.0%)" in text and "| negative | 3 | 60.0% |" in text
    assert "### negative" in text and "### disagrees_with_own_program" not in text


def test_side_by_side_splits_gsm_hard_by_flag_and_scores_three_ways(tmp_path):
    labels = tmp_path / "labels.jsonl"
    storage.write_text(labels, "".join(json.dumps(label_row(i, ["negative"] if i % 2 else [])) + "\n"
                                       for i in range(4)))

    def graded(benchmark, problem, correct, program_correct):
        return {"benchmark": benchmark, "problem_id": problem, "correct": correct, "program_correct": program_correct}

    rows = [graded("gsm-hard/test", "gsm-hard/test/0", True, True),      # unflagged
            graded("gsm-hard/test", "gsm-hard/test/1", False, True),     # flagged: the program reproduces the label
            graded("gsm-hard/test", "gsm-hard/test/2", False, False),    # unflagged
            graded("gsm-hard/test", "gsm-hard/test/3", False, True),     # flagged
            graded("generated/large", "generated/large/0", True, None),
            graded("generated/large", "generated/large/1", False, True)]
    table = {row["benchmark"]: row for row in side_by_side(labels, rows)}
    assert list(table) == ["gsm-hard/test", "gsm-hard/test (flagged labels)", "gsm-hard/test (unflagged labels)",
                           "generated/large"]
    assert (table["gsm-hard/test"]["answer_accuracy"], table["gsm-hard/test"]["program_output_accuracy"]) == (0.25, 0.75)
    flagged = table["gsm-hard/test (flagged labels)"]
    assert (flagged["problems"], flagged["answer_accuracy"], flagged["program_output_accuracy"]) == (2, 0.0, 1.0)
    assert table["gsm-hard/test (unflagged labels)"]["answer_or_program_accuracy"] == 0.5
    assert table["generated/large"]["answer_or_program_accuracy"] == 1.0
