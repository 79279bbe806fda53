"""Stage 05, train: supervised fine-tuning on the mixed set with Ray Train and DeepSpeed.

    mmos train --config configs/quickstart.yaml        (or pipeline.train(cfg), jobs/05_train.py)

Reads `04_mix/sft.parquet` (or `train.data`, e.g. the released MMOS JSONL), runs `train.num_workers`
Ray Train workers (one GPU each; on CPU, gloo with `DS_ACCELERATOR=cpu`) through `loop.train_loop`, each
validating its `loop.LoopConfig` (the train section + the model, data file, bf16 and folder resolved
here) first: prompt + completion + eos, loss on the completion only (optionally not on interpreter
outputs either), packed rows without attention across examples, global batch = micro batch x gradient
accumulation x workers, linear warmup and decay, ZeRO-2/3. An empty SFT file trains nothing (the manifest
says so and later stages use the base model). Checkpoints every `train.checkpoint_every` steps and at
the end, from every worker (ZeRO shards), under `05_train/checkpoints/`; a rerun after an interruption
continues from the latest one. Writes `05_train/model/` (Hugging Face format, with the tokenizer),
`metrics.jsonl` (loss, learning rate, tokens/s, padding share per step) and `_manifest.json` last.

Multi-node: `paths.runs_dir` must be storage every node sees (NFS, or a mounted bucket): workers read
the data and rank 0 writes the model there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import ray

from mmos_ray.config import PathsConfig, TrainConfig
from mmos_ray.core.errors import DataError
from mmos_ray.models import resolve_model
from mmos_ray.cluster.resources import ensure_ray
from mmos_ray.stages.train.loop import LoopConfig, train_loop
from mmos_ray.storage import RunLayout, read_records

logger = logging.getLogger(__name__)


def run(train: TrainConfig, paths: PathsConfig, stage_dir: Path) -> dict[str, Any]:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    data = Path(train.data) if train.data else RunLayout.of_stage(stage_dir).sft
    examples = _count_examples(data)
    model = resolve_model(train.base_model, paths.models_dir, allow_hub=paths.hub_models)
    if examples == 0:
        logger.warning("train: %s holds no examples, so nothing was trained; later stages use the base model "
                       "(%s shows where the data funnel ran dry)", data,
                       RunLayout.of_stage(stage_dir).mix / "data_card.md")
        return {"counts": {"examples": 0, "steps": 0}, "trained": False, "model": model, "base_model": model}
    ensure_ray()
    use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    bf16 = train.bf16 if train.bf16 != "auto" else use_gpu
    cpus = int(ray.cluster_resources().get("CPU", 1))
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if not use_gpu:
        env |= {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": str(max(1, cpus // train.num_workers))}
    loop_config = LoopConfig(train=train, model=model, data=data.resolve(), bf16=bf16, stage_dir=stage_dir.resolve())
    trainer = TorchTrainer(
        train_loop, train_loop_config=loop_config.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name="train", storage_path=str((stage_dir / "checkpoints").resolve()),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), worker_runtime_env={"env_vars": env}))
    logger.info("train: %d examples, %d workers (%s), %s", examples, train.num_workers, "GPU" if use_gpu else "CPU",
                f"DeepSpeed ZeRO-{train.zero_stage}" if train.strategy == "deepspeed" else "DDP")
    trainer.fit()
    steps = _read_metrics(stage_dir / "metrics.jsonl")
    if not (stage_dir / "model" / "config.json").exists():
        raise RuntimeError(f"train: no model was exported to {stage_dir / 'model'}; see the workers' logs")
    last = steps[-1]
    return {"counts": {"examples": examples, "steps": last["step"]}, "trained": True,
            "model": str((stage_dir / "model").resolve()), "base_model": model, "final_loss": round(last["loss"], 4),
            "first_loss": round(steps[0]["loss"], 4), "tokens_per_s": round(last["tokens_per_s"], 1),
            "padding_share": round(last["padding_share"], 4), "global_batch": last["global_batch"],
            "rows": last["rows"], "bf16": bf16, "device": "GPU" if use_gpu else "CPU"}


def _count_examples(data: Path) -> int:
    """The SFT rows in `data`, each checked for its fields; 0 for an empty file (`run` then trains nothing)."""
    if not data.exists():
        raise DataError(f"train: no SFT file at {data}; run the mix stage first, or set train.data")
    count = 0
    for where, row in read_records(data, allow_empty=True):
        # Checked here, before any worker starts: a bad row would otherwise end in a KeyError inside Ray.
        missing = [f for f in ("prompt", "completion") if not isinstance(row, dict) or f not in row]
        if missing:
            raise DataError(f"train: {where}: missing field {', '.join(repr(f) for f in missing)}; every SFT "
                            "row needs 'prompt' and 'completion' (the MMOS JSONL shape)")
        count += 1
    return count


def _read_metrics(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if not rows:
        raise RuntimeError(f"train: the workers reported no step ({path} is empty)")
    return rows
