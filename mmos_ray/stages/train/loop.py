"""The per-worker training loop of stage 05 (Ray Train runs one copy per worker).

The driver (`stages.train.run`) sends a `LoopConfig` as a plain dict through Ray Train's
`train_loop_config`; `train_loop` validates it again first, as the other stages' actors do with their
config sections. Each worker encodes the SFT examples (`core.sft`), packs or pads them into rows, takes
its share of every global batch, and trains with DeepSpeed (ZeRO-2/3, bf16 where the device has it,
optional optimizer offload) or plain DDP. Checkpoints: every worker saves its own shards and reports them to Ray
Train; a restarted run loads the latest and continues at the same step. At the end the model is
gathered (ZeRO-3 shards included) and rank 0 writes a Hugging Face folder with the tokenizer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmos_ray.config import TrainConfig
from mmos_ray.core.sft import batch_plan, collate, encode, pack, unpacked
from mmos_ray.storage import read_records

logger = logging.getLogger(__name__)


class LoopConfig(BaseModel):
    """What every worker reads: the train section and the facts the driver resolved for this run.

    The worker reads `model`, `data` and `bf16` from here, never `train.base_model`, `train.data` or
    `train.bf16` (a name, an optional path, and possibly "auto", which the driver resolves on the cluster).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: TrainConfig
    model: str = Field(description="the base model's folder (resolved from train.base_model)")
    data: Path = Field(description="the SFT file, absolute (train.data, or the SFT file of the run's mix stage)")
    bf16: bool = Field(description="train.bf16 with auto decided: on when the cluster has GPUs")
    stage_dir: Path = Field(description="the stage folder on storage every worker sees: metrics, model")


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: `config` is a `LoopConfig` dumped to a dict."""
    import torch
    import ray.train
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loop = LoopConfig.model_validate(config)
    train = loop.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    seed = train.seed
    random.seed(seed)
    torch.manual_seed(seed)
    device = torch.device("cuda", context.get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")

    tokenizer = AutoTokenizer.from_pretrained(loop.model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples = [e for e in (encode(tokenizer, str(ex["prompt"]), str(ex["completion"]), train.max_length,
                                   tokenizer.eos_token_id, train.mask_outputs)
                            for _, ex in read_records(loop.data)) if e]
    rows = pack(examples, train.max_length) if train.packing else unpacked(examples)
    if len(rows) < world:
        raise ValueError(f"{len(rows)} training rows cannot feed {world} workers; use fewer workers "
                         "(train.num_workers), train.packing=false, or more data")
    global_batch = train.global_batch_size
    if len(rows) < global_batch:
        # A small SFT set (a quick local run) still trains: one step per epoch over every row.
        global_batch = len(rows) // world * world
        if rank == 0:
            logger.warning("train: %d rows are fewer than train.global_batch_size (%d); using %d",
                           len(rows), train.global_batch_size, global_batch)
    micro, accumulation = batch_plan(global_batch, train.micro_batch_size, world)
    rows_per_step = micro * accumulation * world
    steps_per_epoch = len(rows) // rows_per_step
    total_steps = steps_per_epoch * train.epochs
    if train.max_steps:
        total_steps = min(total_steps, train.max_steps)

    attention = "flash_attention_2" if device.type == "cuda" and _has_flash_attention() else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(loop.model, dtype=torch.float32, attn_implementation=attention)
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    warmup = math.ceil(total_steps * train.warmup_ratio)
    schedule = lambda step: min(1.0, (step + 1) / max(1, warmup)) if step < warmup else \
        max(0.0, (total_steps - step) / max(1, total_steps - warmup))  # noqa: E731 - linear warmup, linear decay
    distributed = _DistributedModel(train, loop.bf16, model, schedule, micro, accumulation, device)
    peak = _peak_flops(device, loop.bf16)
    flops_per_token = 6 * sum(p.numel() for p in model.parameters())  # forward + backward, attention left out

    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start_step = distributed.load(folder)
    metrics_path = loop.stage_dir / "metrics.jsonl"
    step = start_step
    started = time.perf_counter()
    tokens_since, computed_since, losses = 0, 0, []
    for epoch_step in range(start_step, total_steps):
        epoch, within = divmod(epoch_step, steps_per_epoch)
        order = list(range(len(rows)))
        random.Random(seed + epoch).shuffle(order)  # the same order on every worker and after a resume
        step_rows = [rows[i] for i in order[within * rows_per_step:(within + 1) * rows_per_step]]
        mine = step_rows[rank::world]
        for index in range(accumulation):
            batch = collate(mine[index * micro:(index + 1) * micro], pad_id)
            loss = distributed.forward_backward(_tensors(batch, device, attention))
            losses.append(loss)
            tokens_since += batch["real_tokens"]
            computed_since += batch["computed_tokens"]
        distributed.step()
        step = epoch_step + 1
        elapsed = time.perf_counter() - started
        metrics = {"step": step, "epoch": epoch, "loss": sum(losses) / len(losses), "lr": distributed.lr(),
                   "tokens_per_s": tokens_since * world / max(elapsed, 1e-9),
                   "padding_share": 1 - tokens_since / max(computed_since, 1), "total_steps": total_steps,
                   "elapsed_s": elapsed, "threads": torch.get_num_threads(),
                   "global_batch": rows_per_step, "rows": len(rows)}
        if peak:
            metrics["mfu"] = tokens_since * flops_per_token / max(elapsed, 1e-9) / peak
        losses = []
        save = step == total_steps or (train.checkpoint_every and step % train.checkpoint_every == 0)
        if rank == 0:
            with metrics_path.open("a") as f:
                f.write(json.dumps(metrics) + "\n")
        if save:
            # Only checkpoints go through ray.train.report: Ray Train collects one report per worker every
            # 2 s, so reporting every step would hold fast steps to that pace (metrics.jsonl has them all).
            with tempfile.TemporaryDirectory() as folder:
                distributed.save(folder, step)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
    distributed.export(loop.stage_dir / "model", tokenizer, rank)


# Dense bf16 / fp32 peak FLOP/s per GPU from the vendors' data sheets, for model FLOPs utilisation.
_PEAK_FLOPS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12),
               "L40S": (362e12, 91.6e12), "A10": (125e12, 31.2e12), "L4": (121e12, 30.3e12)}


def _peak_flops(device, bf16: bool) -> float | None:
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((bf16_peak if bf16 else fp32_peak for key, (bf16_peak, fp32_peak) in _PEAK_FLOPS.items()
                 if key in name), None)


def _has_flash_attention() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def _tensors(batch: dict, device, attention: str) -> dict:
    import torch

    out = {key: torch.tensor(batch[key], device=device) for key in ("input_ids", "labels", "position_ids")}
    if attention != "flash_attention_2":
        # sdpa on CPU: a block-diagonal causal mask (True = may attend) keeps packed examples from seeing
        # each other (flash-attention finds the example boundaries from the position ids instead).
        masks = []
        for segments in batch["segments"]:
            owner = torch.repeat_interleave(torch.arange(len(segments), device=device),
                                            torch.tensor(segments, device=device))
            allowed = (owner[:, None] == owner[None, :]) & torch.ones(len(owner), len(owner), dtype=torch.bool,
                                                                     device=device).tril()
            masks.append(allowed)
        out["attention_mask"] = torch.stack(masks)[:, None]
    return out


class _DistributedModel:
    """The model wrapped for data-parallel training, with its optimizer and schedule: a DeepSpeed engine
    (ZeRO) or a DDP module behind the same calls (forward_backward, step, lr, save, load, export)."""

    def __init__(self, train: TrainConfig, bf16: bool, model, schedule, micro: int, accumulation: int, device):
        import torch

        self.accumulation = accumulation
        self.deepspeed = train.strategy == "deepspeed"
        params = [p for p in model.parameters() if p.requires_grad]
        if self.deepspeed:
            import deepspeed

            optimizer_cls = torch.optim.AdamW
            if train.offload_optimizer:
                from deepspeed.ops.adam import DeepSpeedCPUAdam as optimizer_cls  # noqa: N813 - what offload needs
            optimizer = optimizer_cls(params, lr=train.learning_rate, weight_decay=train.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
            # Overlapping communication with backward pays on GPUs; over gloo on CPU it only adds threads.
            zero = {"stage": train.zero_stage, "overlap_comm": device.type == "cuda", "contiguous_gradients": True}
            if train.offload_optimizer:
                zero["offload_optimizer"] = {"device": "cpu"}
            if train.zero_stage == 3:
                zero["stage3_gather_16bit_weights_on_model_save"] = True
            ds_config = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accumulation,
                         "gradient_clipping": 1.0, "zero_optimization": zero, "steps_per_print": 10**9,
                         "bf16": {"enabled": bf16}, "wall_clock_breakdown": False}
            self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
        else:
            import ray.train.torch

            self.model = ray.train.torch.prepare_model(model)
            self.optimizer = torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def forward_backward(self, batch: dict) -> float:
        loss = self.model(**batch).loss
        if self.deepspeed:
            self.model.backward(loss)
            self.model.step()  # DeepSpeed applies the update only at the accumulation boundary
        else:
            (loss / self.accumulation).backward()
        return float(loss.detach())

    def step(self) -> None:
        if not self.deepspeed:
            import torch

            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, folder: str, step: int) -> None:
        if self.deepspeed:
            self.model.save_checkpoint(folder, tag="state", client_state={"step": step})
        else:
            import torch
            import ray.train

            if ray.train.get_context().get_world_rank() == 0:
                torch.save({"model": self.model.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(), "step": step}, Path(folder) / "ddp.pt")

    def load(self, folder: str) -> int:
        if self.deepspeed:
            _, client_state = self.model.load_checkpoint(folder, tag="state")
            return int(client_state["step"])
        import torch

        state = torch.load(Path(folder) / "ddp.pt", weights_only=False)
        self.model.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return int(state["step"])

    def export(self, out: Path, tokenizer, rank: int) -> None:
        """A Hugging Face folder (safetensors, config, tokenizer), written atomically by rank 0."""
        module = self.model.module if hasattr(self.model, "module") else self.model
        gather = _gathered(module) if self.deepspeed else nullcontext()
        with gather:
            if rank == 0:
                tmp = out.parent / f".{out.name}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                module.save_pretrained(tmp, state_dict=state)
                tokenizer.save_pretrained(tmp)
                shutil.rmtree(out, ignore_errors=True)
                os.replace(tmp, out)


def _gathered(module):
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)

