"""Reading and writing record files: JSONL / JSON / Parquet in, atomic Parquet / JSON out, manifests last.

Every write goes to a temporary file in the same folder and is renamed into place, so a crash never
leaves a half-written file that a later stage could take as complete. A stage folder is complete only
when its `_manifest.json` exists; it is written after everything else.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmos_ray.core.errors import DataError

MANIFEST = "_manifest.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
READABLE_SUFFIXES = (".jsonl", ".json", ".parquet")


def read_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, record) from a JSONL, JSON (list, or object keyed by id) or Parquet file.

    `location` is what an error message should cite: `file:line` for JSONL, `file[key]` otherwise.
    Malformed input raises DataError naming the file and line; an empty file is an error too.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        records = _read_parquet_records(path)
    elif path.suffix == ".json":
        records = _read_json_records(path)
    elif path.suffix == ".jsonl":
        records = _read_jsonl_records(path)
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(READABLE_SUFFIXES)}")
    empty = True
    for location, record in records:
        empty = False
        if not isinstance(record, dict):
            raise DataError(f"{location}: expected a JSON object per record, got {type(record).__name__}")
        yield location, record
    if empty:
        raise DataError(f"{path}: the file holds no records; an empty input would make an empty run. "
                        "Check that the file was written completely.")


def _read_jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                "fix or remove that line") from None
            yield f"{path}:{line_no}", record


def _read_json_records(path: Path) -> Iterator[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines under a .json name, as the MMOS/ToRA files are
            yield from _read_jsonl_records_from_text(path, text)
            return
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(data, list):
        for i, record in enumerate(data):
            yield f"{path}[{i}]", record
    elif isinstance(data, dict):
        for key, record in data.items():
            if isinstance(record, dict):
                record = {"_key": key, **record}
            yield f"{path}[{key!r}]", record
    else:
        raise DataError(f"{path}: expected a JSON list or object of records, got {type(data).__name__}")


def _read_jsonl_records_from_text(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{line_no}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno}); "
                            "fix or remove that line") from None


def _read_parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    for i, record in enumerate(table.to_pylist()):
        yield f"{path}[{i}]", record


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_parquet(path: Path, rows: list[dict[str, Any]], empty_columns: Sequence[str] = ()) -> None:
    """Write rows (dicts with the same keys) to one Parquet file atomically. With no rows, `empty_columns`
    names the (string) columns of the empty file; without them an empty write is refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows and not empty_columns:
        raise ValueError(f"refusing to write {path} with no rows")
    table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.string()) for c in empty_columns})
    write_table(path, table)


def write_table(path: Path, table) -> None:
    """Write a pyarrow Table to one Parquet file atomically."""
    import pyarrow.parquet as pq

    _atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """All rows of one of our own Parquet files (empty is fine here; user inputs go through read_records)."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def write_manifest(stage_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the stage's manifest; call it last, after every other file of the stage is in place."""
    manifest = {**manifest, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(Path(stage_dir) / MANIFEST, manifest)
    return manifest


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's manifest, or None when the stage never finished (or its manifest is damaged)."""
    path = Path(stage_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
