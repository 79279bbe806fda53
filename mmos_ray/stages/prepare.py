"""Stage 00, prepare: the run's inputs, fixed once — the problems to sample and the model to sample with.

Reads the sources of the `sample` section (dataset splits from the data directory or the hub), writes
`00_prepare/problems.parquet` (one `Problem` row each, ids dataset-qualified), builds or locates the model
(`tiny` and `smollm2` are built under `paths.models_dir`), and writes `_manifest.json` last. Later stages
read the problems from here, so a rerun samples exactly the same problems even if the sources change.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mmos_ray import storage
from mmos_ray.config import PathsConfig, SampleConfig
from mmos_ray.core.errors import DataError
from mmos_ray.loaders import load_problems
from mmos_ray.models import resolve_model

logger = logging.getLogger(__name__)


def run(sample: SampleConfig, paths: PathsConfig, stage_dir: Path) -> dict[str, Any]:
    problems = []
    per_source = {}
    for source in sample.sources:
        split = source.resolved_split()
        loaded = load_problems(source.dataset, split, data_dir=paths.data_dir, limit=source.limit,
                               hub=paths.hub_datasets, path=source.path)
        per_source[f"{source.dataset}/{split}"] = len(loaded)
        problems.extend(loaded)
        logger.info("prepare: %d problems from %s/%s", len(loaded), source.dataset, split)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise DataError("sample.sources lists the same dataset split twice; give each split once "
                        "(use `limit` to take fewer problems)")
    storage.write_parquet(stage_dir / storage.RunLayout.PROBLEMS, [p.to_row() for p in problems])
    model = resolve_model(sample.engine.model, paths.models_dir, allow_hub=paths.hub_models)
    logger.info("prepare: model %s -> %s", sample.engine.model, model)
    return {"counts": {"problems": len(problems), **{f"problems:{k}": v for k, v in per_source.items()}},
            "model": {"name": sample.engine.model, "path": model}}
