"""The report from stage outputs alone (no Ray): sections, the paper-layout table, the k-sweep table and plots."""

import json

import pytest

from mmos_ray import storage
from mmos_ray.core.errors import DataError
from mmos_ray.report import build
from mmos_ray.storage import RunLayout


def fake_run(root, name, k, examples, gsm8k, svamp):
    run, layout = root / name, RunLayout(root / name)
    storage.write_manifest(layout.minimize, {"stage": layout.MINIMIZE, "k": k, "seconds": 1.0})
    storage.write_manifest(layout.mix, {"stage": layout.MIX, "counts": {"examples": examples}, "seconds": 0.5})
    benchmarks = lambda a, b: {"gsm8k/test": {"pass@1": a, "problems": 10, "timeouts": 0, "empty_answers": 1},  # noqa: E731
                               "svamp/test": {"pass@1": b, "problems": 10, "timeouts": 2, "empty_answers": 0}}
    metrics = {"models": {"base": {"model": "m", "prompt_version": "tir-fewshot-v1", "benchmarks": benchmarks(0.1, 0.2)},
                          "trained": {"model": "t", "prompt_version": "mmos-train-v1",
                                      "benchmarks": benchmarks(gsm8k, svamp)}},
               "benchmarks": ["svamp/test", "gsm8k/test"], "grader": {"mode": "compat", "version": "1"},
               "sampling": {"num_samples": 1, "temperature": 0.0, "max_tokens": 64, "max_rounds": 2, "seed": 0}}
    storage.write_json(layout.metrics, metrics)
    return run


def test_report_with_a_k_sweep(tmp_path):
    main = fake_run(tmp_path, "k3", 3, 40, 0.3, 0.5)
    others = [fake_run(tmp_path, "k1", 1, 15, 0.2, 0.4), fake_run(tmp_path, "k0", 0, 8, 0.1, 0.3)]
    result = build(main, others)
    report = (main / "report.md").read_text()
    # the paper's column order (GSM8K before SVAMP), pass@1 in %, and the average
    assert "| model | prompt | gsm8k/test | svamp/test | avg |" in result["table"]
    assert "| trained | mmos-train-v1 | 30.0 | 50.0 | 40.0 |" in result["table"]
    assert "## Evaluation" in report and "## Stage times" in report and "| total | 1.5 |" in report
    assert "## Ability boundary (k sweep)" in report
    rows = [line for line in report.splitlines() if line.startswith("| k")]
    assert rows == ["| k0 | 0 | 8 | 10.0 | 30.0 | 20.0 |", "| k1 | 1 | 15 | 20.0 | 40.0 | 30.0 |",
                    "| k3 | 3 | 40 | 30.0 | 50.0 | 40.0 |"]
    for plot in ("accuracy.png", "accuracy_vs_data.png"):
        assert (main / "plots" / plot).stat().st_size > 1000 and f"plots/{plot}" in report


def test_a_sweep_run_without_its_stages_is_named(tmp_path):
    main = fake_run(tmp_path, "k3", 3, 40, 0.3, 0.5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty has no finished minimize, mix and eval"):
        build(main, [tmp_path / "empty"])


GENERATED_ROW = {"question": "Tom has 812 apples and buys 95 more. How many apples?", "answer": "#### 907",
                 "source_id": "gsm8k/test/9", "mode": "large", "seed": 0,
                 "mapping": [{"old": "3", "new": "812"}, {"old": "4", "new": "95"}],
                 "original_question": "Tom has 3 apples and buys 4 more. How many apples?", "original_answer": "7",
                 "agreeing_programs": [{"structure": "a", "code": "print(812 + 95)"},
                                       {"structure": "b", "code": "x = 812\nprint(x + 95)"}]}


def test_a_generated_benchmark_gets_its_own_section(tmp_path):
    """The run's eval read a generated file: the report shows its acceptance rate, rejections and examples."""
    generated = tmp_path / "large.jsonl"
    storage.write_text(generated, json.dumps(GENERATED_ROW) + "\n")
    storage.write_json(tmp_path / "large.summary.json",
                       {"mode": "large", "seed": 0, "min_agree": 2, "problems": 4, "accepted": 1,
                        "acceptance_rate": 0.25, "rejections": {"programs_disagree": 2, "negative": 1}})
    run = fake_run(tmp_path, "run", 3, 40, 0.3, 0.5)
    metrics = json.loads(RunLayout(run).metrics.read_text())
    metrics["files"] = {"generated/large": str(generated)}
    storage.write_json(RunLayout(run).metrics, metrics)
    text = (tmp_path / "run/report.md").read_text() if build(run) else ""
    assert "## Generated set `generated/large`" in text
    assert "Accepted 1 of 4 problems (25.0%); rejected: negative 1, programs_disagree 2." in text
    assert "Tom has 812 apples and buys 95 more. How many apples? → **907** (2 programs agree)" in text
    assert "from `gsm8k/test/9`: Tom has 3 apples" in text


FULL_SANDBOX = {"protections": {"network": "network namespace", "filesystem": "read-only view …; private /tmp",
                                "processes": "pids cgroup", "user": "uid 65534", "syscalls": "seccomp"},
                "warnings": []}


@pytest.mark.parametrize("sample_sandbox, verify_sandbox, expected", [
    (FULL_SANDBOX, FULL_SANDBOX, []),
    ({"protections": {**FULL_SANDBOX["protections"], "filesystem": "none"},
      "warnings": ["bubblewrap unavailable (apt-get install bubblewrap …)"]}, FULL_SANDBOX,
     ["`01_sample`: bubblewrap unavailable (apt-get install bubblewrap …)", "`01_sample`: filesystem: none"]),
    (FULL_SANDBOX, {"protections": {**FULL_SANDBOX["protections"], "syscalls": "none"}, "warnings": []},
     ["`02_verify`: syscalls: none"]),
])
def test_a_degraded_sandbox_is_a_warning_in_the_report(tmp_path, sample_sandbox, verify_sandbox, expected):
    run = fake_run(tmp_path, "run", 3, 40, 0.3, 0.5)
    layout = RunLayout(run)
    storage.write_manifest(layout.sample, {"stage": layout.SAMPLE, "model": "m", "counts": {"samples": 4},
                                           "sandbox": sample_sandbox})
    storage.write_manifest(layout.verify, {"stage": layout.VERIFY, "counts": {}, "sandbox": verify_sandbox})
    build(run)
    text = (run / "report.md").read_text()
    assert ("this run's sandbox was degraded" in text) == bool(expected)
    for line in expected:
        assert f"> - {line}" in text
    if expected:  # right under the title, before any result
        assert text.index("sandbox was degraded") < text.index("Sampling model")
