"""`mmos run` through every stage on the tiny model, then `mmos eval --model` and `mmos report`.

The tiny model solves nothing on its own, so stage 05 trains on a fixed SFT file (`train.data`): the run
has a trained model to compare with the base one, and every file of the report exists.
"""

import json

from mmos_ray import storage

from tests.e2e.test_cli import SMALL_RUN, mmos


def write_sft(path, n=8):
    rows = []
    for i in range(n):
        a, b = 10 + i, 3 + i
        completion = (f"```python\nprint({a} + {b})\n```\n```output\n{a + b}\n```\nThe answer is $\\boxed{{{a + b}}}$.")
        rows.append({"idx": i, "prompt": f"<|user|>\nWhat is {a} plus {b}?\n<|assistant|>\n", "completion": completion})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_run_goes_through_train_and_eval_and_writes_the_report(tmp_path, data_dir):
    write_sft(tmp_path / "sft.jsonl")
    args = ["run", *SMALL_RUN, "--set", "sample.sources.0.limit=2", "--set", f"paths.data_dir={data_dir}",
            "--set", f"train.data={tmp_path / 'sft.jsonl'}", "--set", "train.max_length=128",
            "--set", "train.global_batch_size=4", "--set", "train.micro_batch_size=1", "--set", "train.epochs=2",
            "--set", "eval.benchmarks=[{dataset: gsm8k, limit: 3}, {dataset: gsm-hard, limit: 2}]",
            "--set", "eval.generation.max_tokens=32", "--set", "eval.generation.max_rounds=2", "--set", "eval.num_samples=2",
            "--set", "eval.generation.temperature=0.7"]
    out = mmos(*args, cwd=tmp_path)
    run = tmp_path / "runs/quickstart"
    layout = storage.RunLayout(run)
    for stage in layout.STAGES:
        assert f"{stage}: done" in out.stdout
        assert storage.read_manifest(layout.stage(stage)) is not None
    train = storage.read_manifest(layout.train)
    assert train["trained"] and train["counts"] == {"examples": 8, "steps": 4}
    assert (layout.model / "model.safetensors").exists()

    metrics = json.loads(layout.metrics.read_text())
    assert set(metrics["models"]) == {"base", "trained"}
    assert metrics["models"]["base"]["prompt_version"] != metrics["models"]["trained"]["prompt_version"]
    assert metrics["grader"] == {"mode": "compat", "version": "1"}
    assert metrics["sampling"]["num_samples"] == 2 and metrics["sampling"]["temperature"] == 0.7
    for label in ("base", "trained"):
        benchmarks = metrics["models"][label]["benchmarks"]
        assert set(benchmarks) == {"gsm8k/test", "gsm-hard/test"}
        assert benchmarks["gsm8k/test"]["problems"] == 3 and benchmarks["gsm8k/test"]["samples"] == 2
        for values in benchmarks.values():
            assert {"pass@1", "pass@1_std", "pass@2", "maj@2", "timeouts", "empty_answers"} <= set(values)
        assert "program_output_accuracy" in benchmarks["gsm-hard/test"]
        graded = storage.read_parquet(layout.eval / label / "graded.parquet")
        assert len(graded) == 10 and {r["benchmark"] for r in graded} == {"gsm8k/test", "gsm-hard/test"}

    report = (run / "report.md").read_text()
    for section in ("## Data funnel", "## Training", "## Evaluation", "## Stage times", "plots/accuracy.png",
                    "plots/accuracy_vs_k.png", "| base |", "| trained |"):
        assert section in report
    assert (run / "plots/accuracy.png").stat().st_size > 1000 and (run / "plots/accuracy_vs_k.png").exists()
    assert "evaluation (pass@1, %)" in out.stdout and "| gsm8k/test | gsm-hard/test | avg |" in out.stdout

    again = mmos(*args, cwd=tmp_path)
    assert "06_eval: skipped" in again.stdout and "05_train: skipped" in again.stdout

    trained = layout.model
    alone = mmos("eval", *SMALL_RUN, "--set", f"paths.data_dir={data_dir}", "--model", str(trained),
                 "--benchmarks", "svamp", "--set", "eval.generation.max_tokens=16",
                 cwd=tmp_path)
    assert "| model | prompt | svamp/test | avg |" in alone.stdout and "| model | mmos-train-v1 |" in alone.stdout
    assert json.loads((run / "eval-model/metrics.json").read_text())["models"]["model"]["benchmarks"][
        "svamp/test"]["problems"] == 2

    (run / "report.md").unlink()
    assert "report:" in mmos("report", str(run), cwd=tmp_path).stdout and (run / "report.md").exists()
    missing = mmos("report", str(tmp_path / "nowhere"), cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "no run folder" in missing.stderr
