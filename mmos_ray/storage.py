"""The run layout, and reading and writing record files: JSONL / JSON / Parquet in, atomic Parquet / JSON out,
manifests last.

`RunLayout` names every stage folder of a run (`runs/<name>/NN_<stage>/`), the part pattern of the
stages that write parts, and the files stages share, once; nothing else in the package spells them. Its
root is a local path or a `scheme://` URI (`paths.runs_dir: s3://bucket/runs`), kept intact and joined
with `/`; the stages still read and write local folders (`ExperimentConfig.run_dir`), so for now a URI
run stops with a clear error before any I/O. `read_parts` is the one reader of a stage's parts: one row
per key, the first part in name order holding a key wins (a batch redone after a lost actor may have
written a key twice).

Every write goes to a temporary file in the same folder and is renamed into place, so a crash never
leaves a half-written file that a later stage could take as complete. A stage folder is complete only
when its `_manifest.json` exists; it is written after everything else.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmos_ray.core.errors import DataError, did_you_mean

MANIFEST = "_manifest.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
READABLE_SUFFIXES = (".jsonl", ".json", ".parquet")

# A local folder as a Path, or a `scheme://…` URI as a string (Path would collapse `s3://b` into `s3:/b`).
Location = Path | str
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_uri(value: Any) -> bool:
    """Whether `value` is a `scheme://…` URI (not a local path)."""
    return isinstance(value, str) and bool(_URI.match(value))


def location(value: str | os.PathLike) -> Location:
    """A local path as a `Path`; a URI kept as it is, less trailing slashes."""
    if not is_uri(value):
        return Path(value)
    scheme, rest = value.split("://", 1)
    if not rest.strip("/"):
        raise ValueError(f"{value!r}: a URI needs a bucket or host after {scheme}://, e.g. {scheme}://bucket/runs")
    return value.rstrip("/")


def join(base: Location, *parts: str) -> Location:
    """`base / part / …` for a local path (a Path) or a URI (a string joined with single slashes)."""
    if not is_uri(base):
        return Path(base).joinpath(*parts)
    pieces = [piece for part in parts if (piece := str(part).strip("/"))]
    return "/".join([str(base).rstrip("/"), *pieces])


def parent(where: Location) -> Location:
    """The folder holding `where` (a path or a URI below its bucket)."""
    if not is_uri(where):
        return Path(where).parent
    scheme, rest = str(where).rstrip("/").split("://", 1)
    if "/" not in rest:
        raise ValueError(f"{where!r} is a bucket; it has no parent folder")
    return f"{scheme}://{rest.rsplit('/', 1)[0]}"


class RunLayout:
    """Where everything of one run lives: `<root>/NN_<stage>/…`, each name given once, here.

        layout = RunLayout("runs/quickstart")          # or cfg.layout; or RunLayout("s3://bucket/runs/quickstart")
        layout.sample                                  # runs/quickstart/01_sample
        layout.sft                                     # runs/quickstart/04_mix/sft.parquet
        RunLayout.of_stage(stage_dir).problems         # from inside a stage: the run its folder belongs to

    Locations are `Path`s under a local root and URI strings under a URI root. Stages that write parts
    name them with `part_file` and list them with `part_files` (`part-*.parquet`).
    """

    PREPARE = "00_prepare"
    SAMPLE = "01_sample"
    VERIFY = "02_verify"
    MINIMIZE = "03_minimize"
    MIX = "04_mix"
    TRAIN = "05_train"
    EVAL = "06_eval"
    SERVE = "07_serve"  # a stage without a folder: serving writes nothing to the run
    STAGES = (PREPARE, SAMPLE, VERIFY, MINIMIZE, MIX, TRAIN, EVAL)  # the folders a run writes, in pipeline order

    PART_PREFIX = "part-"
    PART_GLOB = f"{PART_PREFIX}*.parquet"
    # Files one stage writes and another reads.
    PROBLEMS = "problems.parquet"  # 00_prepare: the run's problems
    RANKED = "ranked.parquet"  # 03_minimize: every distinct correct path, ranked
    SFT = "sft.parquet"  # 04_mix: the SFT set
    DATA_CARD = "data_card.json"  # 04_mix: the data funnel
    MODEL = "model"  # 05_train: the trained model folder (Hugging Face format)
    METRICS = "metrics.json"  # 06_eval: the evaluation's numbers

    def __init__(self, root: str | os.PathLike):
        self.root: Location = location(root)

    @classmethod
    def of_run(cls, runs_dir: str | os.PathLike, name: str) -> RunLayout:
        """The layout of run `name` under `runs_dir` (`paths.runs_dir`)."""
        return cls(join(location(runs_dir), name))

    @classmethod
    def of_stage(cls, stage_dir: str | os.PathLike) -> RunLayout:
        """The layout of the run a stage folder belongs to."""
        return cls(parent(location(stage_dir)))

    @property
    def is_local(self) -> bool:
        return isinstance(self.root, Path)

    def stage(self, folder: str) -> Location:
        """The folder of a stage (one of STAGES)."""
        if folder not in self.STAGES:
            raise ValueError(f"{folder!r} is not a stage folder{did_you_mean(folder, self.STAGES)}; "
                             f"the stages are {', '.join(self.STAGES)}")
        return join(self.root, folder)

    prepare = property(lambda self: self.stage(self.PREPARE))
    sample = property(lambda self: self.stage(self.SAMPLE))
    verify = property(lambda self: self.stage(self.VERIFY))
    minimize = property(lambda self: self.stage(self.MINIMIZE))
    mix = property(lambda self: self.stage(self.MIX))
    train = property(lambda self: self.stage(self.TRAIN))
    eval = property(lambda self: self.stage(self.EVAL))
    problems = property(lambda self: join(self.prepare, self.PROBLEMS))
    ranked = property(lambda self: join(self.minimize, self.RANKED))
    sft = property(lambda self: join(self.mix, self.SFT))
    data_card = property(lambda self: join(self.mix, self.DATA_CARD))
    model = property(lambda self: join(self.train, self.MODEL))
    metrics = property(lambda self: join(self.eval, self.METRICS))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunLayout) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"RunLayout({str(self.root)!r})"


def part_file(stage_dir: Location, name: str) -> Location:
    """The location of the stage's part `name` (`part-<name>.parquet`)."""
    return join(stage_dir, f"{RunLayout.PART_PREFIX}{name}.parquet")


def part_files(stage_dir: Location) -> list[Path]:
    """The stage's parts, in name order (none when the folder does not exist)."""
    if is_uri(stage_dir):
        raise NotImplementedError(f"{stage_dir}: listing parts on object storage is not supported yet; "
                                  "use a local or mounted paths.runs_dir")
    return sorted(Path(stage_dir).glob(RunLayout.PART_GLOB))


def read_parts(stage_dir: Location, key: Sequence[str] = ("problem_id", "sample_idx")) -> list[dict[str, Any]]:
    """Every row of the stage's parts, one per `key` (columns): the first part, in name order, holding a
    key wins (a batch Ray redid after losing its actor may have written its keys a second time)."""
    rows, seen = [], set()
    for part in part_files(stage_dir):
        for row in read_parquet(part):
            row_key = tuple(row[column] for column in key)
            if row_key not in seen:
                seen.add(row_key)
                rows.append(row)
    return rows


def read_records(path: Path, allow_empty: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, record) from a JSONL, JSON (list, or object keyed by id) or Parquet file.

    `location` is what an error message should cite: `file:line` for JSONL, `file[key]` otherwise.
    Malformed input raises DataError naming the file and line; an empty file is an error too, unless
    `allow_empty` (for callers that handle no data themselves).
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
    if empty and not allow_empty:
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
