"""`mmos generate` end to end on five GSM8K test problems with GSM-HARD's and the worked solutions'
programs: every program runs in the sandbox; the output is a benchmark file the loaders read."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from mmos_ray.loaders import load_problems

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_generate_writes_a_loadable_benchmark_with_provenance(data_dir, tmp_path):
    out = tmp_path / "large.jsonl"
    done = subprocess.run([sys.executable, "-m", "mmos_ray", "generate", "--source", "gsm-hard", "--mode", "large",
                           "--out", str(out), "--limit", "5", "--seed", "3", "--data-dir", str(data_dir)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["problems"] == 5 and summary["accepted"] == len(rows) >= 1
    assert summary["accepted"] + sum(summary["rejections"].values()) == 5
    for row in rows:
        assert row["source_id"].startswith("gsm8k/test/") and row["mode"] == "large" and row["seed"] == 3
        assert row["mapping"] and len(row["agreeing_programs"]) >= 2
        assert row["question"] != row["original_question"]
        for change in row["mapping"]:
            assert change["new"] in row["question"]
    # The file is in the GSM8K record format: the loaders read it from a data folder.
    (tmp_path / "data" / "gsm8k").mkdir(parents=True)
    shutil.copy(out, tmp_path / "data" / "gsm8k" / "test.jsonl")
    problems = load_problems("gsm8k", "test", data_dir=tmp_path / "data")
    assert [p.gold for p in problems] == [row["answer"].removeprefix("#### ") for row in rows]


def test_generate_reads_a_runs_verified_paths(tmp_path):
    from mmos_ray import pipeline, storage
    from mmos_ray.core.records import Problem

    question = "Janet's ducks lay 16 eggs a day. She eats 3 and sells the rest at $2 each. How much does she make?"
    problem = Problem("gsm8k/test/0", "gsm8k", "test", question, "26")
    storage.write_parquet(storage.RunLayout(tmp_path / "run").problems, [problem.to_row()])
    paths = ["```python\nprint((16 - 3) * 2)\n```\n```output\n26\n```\n\\boxed{26}",
             "```python\neggs = 16 - 3\nmoney = eggs * 2\nprint(money)\n```\n```output\n26\n```\n\\boxed{26}",
             "```python\nprint(26)\n```\n```output\n26\n```\n\\boxed{26}"]  # a wrong-structure path: not verified
    rows = [{"problem_id": problem.id, "sample_idx": i, "text": text, "correct": i < 2, "exec_ok": True}
            for i, text in enumerate(paths)]
    storage.write_parquet(storage.part_file(storage.RunLayout(tmp_path / "run").verify, "00000"), rows)
    summary = pipeline.generate(str(tmp_path / "run"), "similar", tmp_path / "out.jsonl", seed=1)
    assert (summary["problems"], summary["accepted"]) == (1, 1), summary
    row = json.loads((tmp_path / "out.jsonl").read_text())
    new = {m["old"]: int(m["new"]) for m in row["mapping"]}
    assert row["answer"] == f"#### {(new['16'] - new['3']) * new['2']}"
    assert len(row["agreeing_programs"]) == 2
