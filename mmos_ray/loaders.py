"""Benchmark loaders: find a dataset split in the data directory (or on the Hugging Face hub), read it,
and turn its rows into `Problem`s with stable ids (`gsm8k/test/17`).

    from mmos_ray.loaders import load_problems
    problems = load_problems("gsm8k", "test", data_dir="../shared/data", limit=8)

The data directory holds one folder per dataset (see `core.problems.DATASETS` for the file names); each
split may be JSONL, JSON or Parquet. Its default is `$MMOS_DATA_DIR`, else `../shared/data` (from the
working directory, then from the project root) when present. The hub path (`hub=True`) needs the
`datasets` package and network access; tests never take it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

from mmos_ray.core.errors import DataError
from mmos_ray.core.problems import DatasetSpec, HubSpec, get_dataset, get_split, parse_problem
from mmos_ray.core.records import Problem
from mmos_ray.storage import READABLE_SUFFIXES, read_records

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path | None:
    """`$MMOS_DATA_DIR`, else the first existing `../shared/data` (cwd, then project root), else None."""
    if os.environ.get("MMOS_DATA_DIR"):
        return Path(os.environ["MMOS_DATA_DIR"])
    for base in (Path.cwd(), PROJECT_ROOT):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return None


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    path = Path(data_dir) if data_dir else default_data_dir()
    if path is None:
        raise DataError("no benchmark data directory: pass --data-dir DIR (or set paths.data_dir in the config, "
                        "or $MMOS_DATA_DIR); it must hold e.g. gsm8k/test.jsonl. "
                        "To read from the Hugging Face hub instead, set paths.hub_datasets=true.")
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist; pass --data-dir DIR or set paths.data_dir")
    return path


def find_split_file(data_dir: Path, relative_stem: str) -> Path | None:
    for suffix in READABLE_SUFFIXES:
        candidate = data_dir / f"{relative_stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load_problems(dataset: str, split: str | None = None, *, data_dir: str | Path | None = None,
                  limit: int | None = None, hub: bool = False, path: str | Path | None = None) -> list[Problem]:
    """The problems of one dataset split, in source order; `limit` keeps the first N.

    With `path`, the problems of that file, read in `dataset`'s record format (`generated`: what
    `mmos generate` wrote) and named `dataset/<split or the file's stem>/<index>`."""
    spec = get_dataset(dataset)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{dataset}: no file at {path}; give the path of a JSONL/JSON/Parquet file "
                            f"(e.g. what `mmos generate --out` wrote)")
        return _parse_rows(spec, split or path.stem, read_records(path), limit)
    split, split_spec = get_split(spec, split)
    if hub:
        if split_spec.hub is None:
            raise DataError(f"{dataset}/{split} has no Hugging Face hub source; put its file in the data directory")
        rows = ((f"hub:{split_spec.hub.repo}[{i}]", row) for i, row in enumerate(_hub_rows(split_spec.hub)))
    else:
        root = resolve_data_dir(data_dir)
        path = find_split_file(root, split_spec.path)
        if path is None:
            tried = ", ".join(f"{split_spec.path}{s}" for s in READABLE_SUFFIXES)
            raise DataError(f"{dataset}/{split}: no file in {root} (looked for {tried}); "
                            f"add it, or pass --data-dir pointing at a folder that has it")
        rows = read_records(path)
    problems = _parse_rows(spec, split, rows, limit)
    if limit is None and len(problems) != split_spec.expected:
        logger.warning("%s/%s: %d problems, the reference release has %d", dataset, split, len(problems),
                       split_spec.expected)
    return problems


def _parse_rows(spec: DatasetSpec, split: str, rows: Iterable[tuple[str, dict[str, Any]]],
                limit: int | None) -> list[Problem]:
    problems = []
    index = 0
    for location, row in rows:
        if limit is not None and index >= limit:
            break
        if not spec.keep(row):
            continue
        try:
            problem = parse_problem(spec, split, index, row)
        except DataError as exc:
            raise DataError(f"{location}: {exc}") from None
        if not problem.gold:
            logger.warning("%s: %s has no usable gold answer (source answer %r); kept with an empty gold",
                           location, problem.id, problem.meta["gold_raw"])
        problems.append(problem)
        index += 1
    return problems


def _hub_rows(hub: HubSpec) -> Iterable[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise DataError("reading benchmarks from the Hugging Face hub needs the `datasets` package: "
                        "pip install datasets") from None
    for config in hub.configs or (None,):
        yield from datasets.load_dataset(hub.repo, config, split=hub.split)


def dataset_overview(data_dir: str | Path | None) -> list[dict[str, Any]]:
    """One row per dataset split: where its file is (if found), the reference count and the licence."""
    from mmos_ray.core.problems import DATASETS

    try:
        root = resolve_data_dir(data_dir)
    except DataError:
        root = None
    rows = []
    for spec in DATASETS.values():
        for split, split_spec in spec.splits.items():
            path = find_split_file(root, split_spec.path) if root else None
            rows.append({"dataset": spec.name, "split": split, "expected": split_spec.expected,
                         "file": str(path) if path else None, "hub": split_spec.hub.repo if split_spec.hub else None,
                         "licence": spec.licence})
    return rows
