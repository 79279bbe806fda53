"""The `mmos` command as users run it (a subprocess), on the real data and the tiny model."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmos_ray import storage

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def mmos(*args, cwd=PROJECT_ROOT, check=True):
    out = subprocess.run([sys.executable, "-m", "mmos_ray", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"mmos {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def test_help_lists_the_commands():
    script = Path(sys.executable).parent / "mmos"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    for command in ("run", "config", "data", "model"):
        assert command in out.stdout


def test_data_show(data_dir):
    out = mmos("data", "show", "gsm8k", "--split", "test", "-n", "2", "--data-dir", str(data_dir))
    assert "gsm8k/test/0   gold: 18" in out.stdout and "gsm8k/test/1   gold: 3" in out.stdout
    assert "gsm8k/test/2" not in out.stdout


def test_data_list_flags_non_commercial_sets(data_dir):
    out = mmos("data", "list", "--data-dir", str(data_dir))
    assert "asdiv" in out.stdout and "non-commercial" in out.stdout
    assert "missing" not in out.stdout


def test_data_show_unknown_dataset_exits_cleanly():
    out = mmos("data", "show", "gsm8", check=False)
    assert out.returncode == 2
    assert "error: unknown dataset 'gsm8' (did you mean 'gsm8k'?)" in out.stderr
    assert "Traceback" not in out.stderr


def test_config_show_prints_the_resolved_config():
    out = mmos("config", "show", "--config", "configs/quickstart.yaml", "--set", "sample.num_samples=7")
    assert "name: quickstart" in out.stdout and "num_samples: 7" in out.stdout


def test_config_typo_fails_with_the_key_path(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("sample:\n  engine:\n    modle: tiny\n")
    out = mmos("config", "show", "--config", str(bad), check=False)
    assert out.returncode == 2
    assert f"{bad}:3: sample.engine.modle: unknown key (did you mean 'model'?)" in out.stderr


SMALL_RUN = ["--set", "sample.sources=[{dataset: gsm8k, split: train, limit: 16}]",
             "--set", "eval.benchmarks=[{dataset: svamp, limit: 2}]",
             "--set", "sample.engine.model=tiny", "--set", "sample.generation.prompt=train", "--set", "sample.num_samples=1",
             "--set", "sample.generation.max_tokens=32", "--set", "sample.generation.max_rounds=1",
             "--set", "train.base_model=tiny"]


def test_prepare_fixes_problems_skips_and_redoes(tmp_path, data_dir):
    args = ["prepare", "--set", "sample.engine.model=tiny", "--set", "sample.sources=[{dataset: gsm8k, split: test, limit: 5}, "
            "{dataset: math, split: test, limit: 3}]", "--set", f"paths.data_dir={data_dir}"]
    first = mmos(*args, cwd=tmp_path)
    assert "00_prepare: done" in first.stdout
    stage = storage.RunLayout(tmp_path / "runs/quickstart").prepare
    manifest = storage.read_manifest(stage)
    assert manifest["counts"] == {"problems": 8, "problems:gsm8k/test": 5, "problems:math/test": 3}
    assert Path(manifest["model"]["path"]) == tmp_path / "models/tiny"
    ids = pq.read_table(stage / "problems.parquet").column("id").to_pylist()
    assert ids == [f"gsm8k/test/{i}" for i in range(5)] + [f"math/test/{i}" for i in range(3)]
    assert "00_prepare: skipped" in mmos(*args, cwd=tmp_path).stdout
    storage.part_file(stage, "stale").write_text("written under the old config")
    assert "00_prepare: done" in mmos(*args, "--set", "sample.generation.seed=1", cwd=tmp_path).stdout
    assert not storage.part_file(stage, "stale").exists()  # a changed config never reuses old outputs


def test_run_runs_the_stages_and_fresh_starts_over(tmp_path, data_dir):
    args = ["run", *SMALL_RUN, "--set", "sample.sources.0.limit=2", "--set", f"paths.data_dir={data_dir}"]
    first = mmos(*args, cwd=tmp_path)
    assert "00_prepare: done" in first.stdout and "01_sample: done" in first.stdout
    assert storage.read_manifest(storage.RunLayout(tmp_path / "runs/quickstart").sample)["counts"]["samples"] == 2
    second = mmos(*args, cwd=tmp_path)
    assert "00_prepare: skipped" in second.stdout and "01_sample: skipped" in second.stdout
    marker = tmp_path / "runs/quickstart/marker"
    marker.write_text("x")
    assert "01_sample: done" in mmos(*args, "--fresh", cwd=tmp_path).stdout
    assert not marker.exists()


def test_run_with_a_bad_source_fails_cleanly_and_writes_no_manifest(tmp_path):
    (tmp_path / "data/gsm8k").mkdir(parents=True)
    (tmp_path / "data/gsm8k/train.jsonl").write_text('{"question": "q", "answer": "#### 3"}\n{"question": "q2"}\n')
    out = mmos("prepare", "--set", "sample.engine.model=tiny", "--set", f"paths.data_dir={tmp_path / 'data'}",
               "--set", "sample.sources=[{dataset: gsm8k, split: train}]", cwd=tmp_path, check=False)
    assert out.returncode == 2
    assert "train.jsonl:2: missing field 'answer', which dataset 'gsm8k' needs" in out.stderr
    assert storage.read_manifest(storage.RunLayout(tmp_path / "runs/quickstart").prepare) is None


def test_grade_shows_both_modes_and_the_disagreement(tmp_path):
    out = mmos("grade", "50", "0.5")
    assert '"compat": {"correct": true, "decided_by": "numeric_percent"}' in out.stdout
    assert '"strict": {"correct": false, "decided_by": "decimal"}' in out.stdout
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"pred": "1000001", "gold": "1000000"}\n{"pred": "7", "gold": "7"}\n')
    report = tmp_path / "report.json"
    out = mmos("grade", "--file", str(pairs), "--report", str(report))
    assert "2 pairs, modes disagree on 1" in out.stdout and report.exists()
