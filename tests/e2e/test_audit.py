"""`mmos audit gsm-hard` as users run it: GSM-HARD's programs re-executed in the sandbox flag its labels;
with a model, the side-by-side evaluation on GSM-HARD and a generated large set (the tiny model, real data)."""

import json

import pytest

from mmos_ray import storage
from tests.e2e.test_cli import mmos


def test_audit_flags_the_labels_its_programs_contradict(tmp_path, data_dir):
    out = tmp_path / "audit"
    done = mmos("audit", "gsm-hard", "--limit", "12", "--out", str(out), "--data-dir", str(data_dir), cwd=tmp_path)
    audit = json.loads((out / "audit.json").read_text())
    rows = [row for _, row in storage.read_records(out / "labels.jsonl")]
    assert len(rows) == audit["counts"]["problems"] == 12
    assert audit["counts"]["flagged"] == sum(bool(row["labels"]) for row in rows)
    labels = {row["id"]: row["labels"] for row in rows}
    # test/0: 16 - 3 - 4933828 eggs (negative); test/2: the program still runs 3 sprints where the question
    # now says 1793815 (it answers a question nobody asked); test/1: 2 + 2/2 bolts, a sound label.
    assert labels["gsm-hard/test/0"] == ["negative"]
    assert "inconsistent_with_gsm8k" in labels["gsm-hard/test/2"]
    assert labels["gsm-hard/test/1"] == []
    assert all(row["own_rerun"] for row in rows)  # every program ran in the sandbox and printed
    assert f"{audit['counts']['flagged']} of 12 GSM-HARD labels flagged" in done.stdout
    assert "gsm-hard/test/0" in (out / "audit.md").read_text()
    assert "side_by_side" not in audit


def test_a_missing_generated_file_or_model_fails_before_the_audit_runs(tmp_path, data_dir):
    out = tmp_path / "audit"
    missing = mmos("audit", "gsm-hard", "--generated", str(tmp_path / "nope.jsonl"), "--out", str(out),
                   "--data-dir", str(data_dir), cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"--generated {tmp_path / 'nope.jsonl'}: no such file" in missing.stderr
    bad_model = mmos("audit", "gsm-hard", "--model", str(tmp_path / "no-model"), "--out", str(out),
                     "--data-dir", str(data_dir), cwd=tmp_path, check=False)
    assert bad_model.returncode == 2 and "--model: model" in bad_model.stderr and "Traceback" not in bad_model.stderr
    assert not out.exists()  # nothing ran, nothing was written


@pytest.mark.slow
def test_audit_with_a_model_scores_gsm_hard_and_a_generated_set_side_by_side(tmp_path, data_dir):
    out = tmp_path / "audit"
    mmos("audit", "gsm-hard", "--model", "tiny", "--limit", "4", "--out", str(out), "--data-dir", str(data_dir),
         "--set", "eval.num_samples=1", "--set", "eval.generation.temperature=0", "--set", "eval.generation.max_tokens=32",
         "--set", "eval.generation.max_rounds=1", cwd=tmp_path)
    audit = json.loads((out / "audit.json").read_text())
    table = {row["benchmark"]: row for row in audit["side_by_side"]}
    generated = next(name for name in table if name.startswith("generated/"))
    flagged, unflagged = table["gsm-hard/test (flagged labels)"], table["gsm-hard/test (unflagged labels)"]
    assert table["gsm-hard/test"]["problems"] == 4 == flagged["problems"] + unflagged["problems"]
    summary = audit["generated"]["summary"]
    assert table[generated]["problems"] == summary["accepted"] >= 1 and summary["mode"] == "large"
    assert audit["evaluation"]["sampling"]["temperature"] == 0 and audit["evaluation"]["grader"]["mode"] == "compat"
    # The eval stage read the generated file directly and scored it on program output too.
    metrics = json.loads((out / "eval-tiny" / "metrics.json").read_text())
    assert "program_output_accuracy" in metrics["models"]["model"]["benchmarks"][generated]
    assert metrics["files"][generated].endswith(".jsonl")
    text = (out / "audit.md").read_text()
    assert "## Side by side" in text and "## Generated set" in text and f"| {generated} |" in text
