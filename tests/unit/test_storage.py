"""Record files: JSONL / JSON / Parquet reading with located errors; atomic writes; manifests."""

import json

import pytest

from mmos_ray import storage
from mmos_ray.core.errors import DataError


def test_reads_jsonl_json_list_json_object_and_parquet(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "x.json").write_text(json.dumps(rows))
    (tmp_path / "keyed.json").write_text(json.dumps({"k1": {"a": 1}, "k2": {"a": 2}}))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows))  # JSONL under a .json name
    storage.write_parquet(tmp_path / "x.parquet", rows)
    for name in ("x.jsonl", "x.json", "lines.json", "x.parquet"):
        assert [r for _, r in storage.read_records(tmp_path / name)] == rows, name
    keyed = [r for _, r in storage.read_records(tmp_path / "keyed.json")]
    assert keyed == [{"_key": "k1", "a": 1}, {"_key": "k2", "a": 2}]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2,}\n')
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON"):
        list(storage.read_records(path))


def test_non_object_record_is_an_error(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON object"):
        list(storage.read_records(path))


@pytest.mark.parametrize("content", ["", "\n\n", "[]"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / ("empty.json" if content == "[]" else "empty.jsonl")
    path.write_text(content)
    with pytest.raises(DataError, match="holds no records"):
        list(storage.read_records(path))


def test_damaged_parquet_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        list(storage.read_records(path))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.parquet"
    storage.write_parquet(path, [{"a": 1}])
    with pytest.raises(Exception):
        storage.write_parquet(path, [{"a": object()}])  # not serialisable: fails mid-write
    assert storage.read_parquet(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]  # no temporary file left behind


def test_manifest_is_absent_until_written_and_tolerates_damage(tmp_path):
    assert storage.read_manifest(tmp_path) is None
    storage.write_manifest(tmp_path, {"stage": storage.RunLayout.PREPARE, "counts": {"problems": 3}})
    manifest = storage.read_manifest(tmp_path)
    assert manifest["counts"] == {"problems": 3} and "finished_at" in manifest
    (tmp_path / storage.MANIFEST).write_text("{truncated")
    assert storage.read_manifest(tmp_path) is None


def test_the_layout_of_a_local_run_gives_paths(tmp_path):
    layout = storage.RunLayout(tmp_path / "run")
    assert layout.is_local and layout.root == tmp_path / "run"
    assert [layout.stage(f) for f in layout.STAGES][:2] == [tmp_path / "run/00_prepare", tmp_path / "run/01_sample"]
    assert layout.problems == tmp_path / "run/00_prepare/problems.parquet"
    assert layout.sft == tmp_path / "run/04_mix/sft.parquet" and layout.model == tmp_path / "run/05_train/model"
    assert layout.metrics == tmp_path / "run/06_eval/metrics.json"
    assert storage.RunLayout.of_stage(layout.verify) == layout
    assert storage.RunLayout.of_run(tmp_path, "run") == layout
    assert storage.part_file(layout.sample, "00001") == tmp_path / "run/01_sample/part-00001.parquet"
    with pytest.raises(ValueError, match="did you mean '01_sample'"):
        layout.stage("01_sampel")


@pytest.mark.parametrize("root", ["s3://bucket/prefix", "s3://bucket/prefix/", "gs://bucket/prefix"])
def test_the_layout_of_a_uri_run_keeps_the_uri(root):
    layout = storage.RunLayout(root)
    scheme = root.split("://")[0]
    assert not layout.is_local and layout.root == f"{scheme}://bucket/prefix"
    assert layout.sample == f"{scheme}://bucket/prefix/01_sample"
    assert layout.sft == f"{scheme}://bucket/prefix/04_mix/sft.parquet"
    assert storage.part_file(layout.verify, "a") == f"{scheme}://bucket/prefix/02_verify/part-a.parquet"
    assert storage.RunLayout.of_stage(layout.verify) == layout
    assert storage.RunLayout.of_run(f"{scheme}://bucket", "prefix") == layout  # a bucket alone is a runs_dir too
    assert storage.join(f"{scheme}://bucket/", "/a/", "b") == f"{scheme}://bucket/a/b"


def test_a_uri_without_a_bucket_and_a_bucket_without_a_parent_are_refused():
    with pytest.raises(ValueError, match="needs a bucket"):
        storage.RunLayout("s3://")
    with pytest.raises(ValueError, match="is a bucket"):
        storage.RunLayout.of_stage("s3://bucket")
    with pytest.raises(NotImplementedError, match="object storage"):
        storage.part_files("s3://bucket/run/01_sample")


def test_read_parts_keeps_one_row_per_key_the_first_part_in_name_order_wins(tmp_path):
    stage = tmp_path / "run" / storage.RunLayout.SAMPLE
    assert storage.read_parts(stage) == []  # a stage that has not written anything yet
    storage.write_parquet(storage.part_file(stage, "b"), [{"problem_id": "p", "sample_idx": 0, "v": "b"},
                                                         {"problem_id": "p", "sample_idx": 1, "v": "b"}])
    storage.write_parquet(storage.part_file(stage, "a"), [{"problem_id": "p", "sample_idx": 0, "v": "a"}])
    storage.write_parquet(stage / "other.parquet", [{"problem_id": "q", "sample_idx": 0, "v": "x"}])  # not a part
    assert [p.name for p in storage.part_files(stage)] == ["part-a.parquet", "part-b.parquet"]
    assert [(r["sample_idx"], r["v"]) for r in storage.read_parts(stage)] == [(0, "a"), (1, "b")]
    assert [r["v"] for r in storage.read_parts(stage, key=("problem_id",))] == ["a"]
