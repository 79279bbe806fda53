"""Stage 03, minimize: per problem, the distinct correct paths ranked — main path first, then the most
diverse (`core.selection`); the minimal optimal set for k is `rank <= k`.

    mmos minimize --config configs/quickstart.yaml     (or pipeline.minimize(cfg), jobs/03_minimize.py)

Reads `02_verify/`, keeps the paths that are correct and re-ran cleanly, groups them by problem id
(ids are dataset-qualified, so datasets never merge) into Ray Data blocks that each hold whole problems,
ranks each problem, and writes `03_minimize/ranked.parquet` — every distinct form with its rank, sorted by
(problem id, rank), `selected` marking rank <= `minimize.k` — and `_manifest.json` last, with the set
size for every k of `minimize.sweep` (the ability-boundary curve's x axis).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import zlib

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from mmos_ray import storage
from mmos_ray.config import MinimizeConfig, PathsConfig
from mmos_ray.core.canonical import mmos_key
from mmos_ray.core.selection import Candidate, random_ranks, rank_paths
from mmos_ray.cluster.resources import ensure_ray

logger = logging.getLogger(__name__)

_KEEP = ("problem_id", "sample_idx", "seed", "model", "prompt_version", "text", "pred", "fingerprint")
COLUMNS = (*_KEEP, "rank", "count", "selected")


def run(minimize: MinimizeConfig, paths: PathsConfig, stage_dir: Path) -> dict[str, Any]:
    usable = _usable_paths(storage.RunLayout.of_stage(stage_dir).verify)
    sizes_for = sorted({*minimize.sweep, minimize.k})
    if usable.empty:
        logger.warning("minimize: no path is both correct and executable: the minimal sets are empty "
                       "(sample more, use a stronger model, or check the grader and the sandbox)")
        storage.write_parquet(stage_dir / storage.RunLayout.RANKED, [], empty_columns=COLUMNS)
        return {"counts": {"usable_paths": 0, "problems": 0, "distinct": 0, "selected": 0}, "k": minimize.k,
                "selection": minimize.selection, "seed": minimize.seed,
                "set_size_by_k": [{"k": k, "size": 0} for k in sizes_for]}
    if minimize.key == "mmos":
        usable["canonical_key"] = usable["text"].map(mmos_key)
    ensure_ray()
    # Group by problem: each Ray Data block holds whole problems (bucketed by a hash of the id), and each
    # block is ranked problem by problem. Only the keys travel; the texts are joined back afterwards.
    keys = usable[["problem_id", "sample_idx", "canonical_key"]]
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    buckets = keys["problem_id"].map(lambda pid: zlib.crc32(pid.encode()) % (4 * cpus))
    blocks = [block for _, block in keys.groupby(buckets, sort=True)]
    ranks = (ray.data.from_pandas(blocks)
             .map_batches(_rank_block, batch_size=None, batch_format="pandas",
                          fn_kwargs={"selection": minimize.selection, "seed": minimize.seed})
             .to_pandas())
    ranked = ranks.merge(usable[list(_KEEP)], on=["problem_id", "sample_idx"], how="left")[list(COLUMNS[:-1])]
    ranked = ranked.sort_values(["problem_id", "rank"], kind="stable").reset_index(drop=True)
    ranked["selected"] = ranked["rank"] <= minimize.k
    storage.write_table(stage_dir / storage.RunLayout.RANKED, pa.Table.from_pandas(ranked, preserve_index=False))
    selected = int(ranked["selected"].sum())
    logger.info("minimize: %d problems, %d distinct correct paths, %d selected at k=%d",
                ranked["problem_id"].nunique(), len(ranked), selected, minimize.k)
    return {"counts": {"usable_paths": len(usable), "problems": int(ranked["problem_id"].nunique()),
                       "distinct": len(ranked), "selected": selected},
            "k": minimize.k, "selection": minimize.selection, "key": minimize.key, "seed": minimize.seed,
            "set_size_by_k": [{"k": k, "size": int((ranked["rank"] <= k).sum())} for k in sizes_for]}


def _usable_paths(verify_dir: Path) -> pd.DataFrame:
    """The correct, executable paths of stage 02 (only the columns stage 03 needs)."""
    parts = storage.part_files(verify_dir)
    columns = [*_KEEP, "canonical_key", "correct", "exec_ok"]
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pa.concat_tables([pq.read_table(part, columns=columns) for part in parts]).to_pandas()
    return frame[frame["correct"] & frame["exec_ok"]].reset_index(drop=True)


def _rank_block(block: pd.DataFrame, selection: str, seed: int) -> pd.DataFrame:
    return pd.concat([_rank_group(group, selection, seed) for _, group in block.groupby("problem_id", sort=True)],
                     ignore_index=True)


def _rank_group(group: pd.DataFrame, selection: str, seed: int) -> pd.DataFrame:
    """One problem's paths -> (problem id, representative sample, rank, count) of its distinct forms."""
    candidates = [Candidate(int(i), key) for i, key in zip(group["sample_idx"], group["canonical_key"])]
    problem_id = group["problem_id"].iloc[0]
    ranked = rank_paths(candidates) if selection == "diverse" else random_ranks(candidates, seed, problem_id)
    return pd.DataFrame({"problem_id": [problem_id] * len(ranked), "sample_idx": [r.sample_idx for r in ranked],
                         "rank": [r.rank for r in ranked], "count": [r.count for r in ranked]})
