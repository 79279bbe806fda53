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
    storage.write_manifest(tmp_path, {"stage": "00_prepare", "counts": {"problems": 3}})
    manifest = storage.read_manifest(tmp_path)
    assert manifest["counts"] == {"problems": 3} and "finished_at" in manifest
    (tmp_path / storage.MANIFEST).write_text("{truncated")
    assert storage.read_manifest(tmp_path) is None
