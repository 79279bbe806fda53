"""Training throughput: our stage 05 trainer against a plain PyTorch loop, and packed rows against padded ones.

    .venv/bin/python benchmarks/train_throughput.py [--examples 256] [--model tiny] [--max-length 1024]

Data: GSM-HARD questions with the programs that ship with them, written as tool-integrated completions
(code, output, boxed answer): real lengths, so padding and packing matter as they do on MMOS data.
Model and hyperparameters are the same everywhere (fp32 on CPU, AdamW, micro batch, gradient accumulation,
gradient clipping, linear schedule):

(a) ours: `stages.train.run` — Ray Train, 1 worker, DeepSpeed ZeRO-2 (on CPU over gloo), packed rows with
    the block-causal mask; tokens/s as the trainer reports it (from its first step to its last).
(b) plain: the same rows, the same mask, one process, `torch.optim.AdamW`, no Ray, no DeepSpeed.
(c) ours with `train.packing=false` (one example per row, padded to the longest in the micro batch).

Last line: {"tokens_per_s": {...}, "overhead_ratio", "packing_efficiency": {"packed", "padded"}, ...}.
`overhead_ratio` = ours / plain time per token (target <= 1.3); `packing_efficiency` = real tokens /
computed tokens over every micro batch of an epoch (target >= 0.95 packed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from mmos_ray.config import load_config  # noqa: E402
from mmos_ray.core.prompts import train_prompt  # noqa: E402
from mmos_ray.core.sft import batch_plan, collate, encode, pack, unpacked  # noqa: E402
from mmos_ray.loaders import load_problems  # noqa: E402
from mmos_ray.models import resolve_model  # noqa: E402
from mmos_ray.storage import RunLayout  # noqa: E402


def write_sft(path: Path, examples: int, data_dir: str | None) -> int:
    rows = []
    for problem in load_problems("gsm-hard", data_dir=data_dir, limit=examples):
        code = (problem.meta.get("code") or "").strip()
        if not code:
            continue
        completion = (f"```python\n{code}\nprint(solution())\n```\n```output\n{problem.gold}\n```\n"
                      f"The answer is $\\boxed{{{problem.gold}}}$.")
        rows.append({"idx": problem.id, "prompt": train_prompt(problem.question), "completion": completion})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def overrides(args, data: Path, runs: Path, packing: bool) -> list[str]:
    return [f"train.base_model={args.model}", f"paths.models_dir={args.models_dir}", f"paths.runs_dir={runs}",
            f"train.data={data}", f"train.max_length={args.max_length}", "train.num_workers=1",
            "train.strategy=deepspeed", "train.zero_stage=2", f"train.global_batch_size={args.global_batch}",
            f"train.micro_batch_size={args.micro_batch}", f"train.packing={str(packing).lower()}",
            f"train.max_steps={args.steps}", "train.epochs=100", "train.checkpoint_every=0",
            "train.gradient_checkpointing=false", "train.bf16=false"]


def run_ours(args, data: Path, work: Path, packing: bool) -> dict:
    from mmos_ray.stages import train

    cfg = load_config(None, overrides(args, data, work / "runs", packing))
    stage = RunLayout(work / f"ours_{'packed' if packing else 'padded'}").train
    stage.mkdir(parents=True)
    manifest = train.run(cfg.train, cfg.paths, stage)
    steps = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    return {"tokens_per_s": steps[-1]["tokens_per_s"], "steps": manifest["counts"]["steps"],
            "final_loss": steps[-1]["loss"]}


def plan_rows(tokenizer, data: Path, max_length: int, packing: bool) -> list:
    examples = [e for e in (encode(tokenizer, r["prompt"], r["completion"], max_length, tokenizer.eos_token_id)
                            for r in map(json.loads, data.read_text().splitlines())) if e]
    return pack(examples, max_length) if packing else unpacked(examples)


def efficiency(rows: list, micro: int, pad_id: int) -> float:
    batches = [collate(rows[i:i + micro], pad_id) for i in range(0, len(rows), micro)]
    return sum(b["real_tokens"] for b in batches) / sum(b["computed_tokens"] for b in batches)


def run_plain(args, model_path: str, rows: list, pad_id: int, threads: int) -> dict:
    """The baseline: what a user would write by hand for the same training, in this process."""
    import random

    import torch
    from transformers import AutoModelForCausalLM

    from mmos_ray.stages.train.loop import _tensors

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / args.steps))
    micro, accumulation = batch_plan(args.global_batch, args.micro_batch, 1)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    real, losses = 0, []
    started = time.perf_counter()
    for step in range(args.steps):
        step_rows = [rows[order[(step * micro * accumulation + i) % len(rows)]] for i in range(micro * accumulation)]
        for index in range(accumulation):
            batch = collate(step_rows[index * micro:(index + 1) * micro], pad_id)
            loss = model(**_tensors(batch, torch.device("cpu"), "sdpa")).loss
            (loss / accumulation).backward()
            real += batch["real_tokens"]
            losses.append(float(loss.detach()))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - started
    return {"tokens_per_s": real / elapsed, "steps": args.steps, "final_loss": losses[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=256, help="GSM-HARD problems turned into SFT examples")
    parser.add_argument("--model", default="tiny", help="tiny (built locally), smollm2, or a model folder")
    parser.add_argument("--models-dir", default=os.environ.get("MMOS_MODELS_DIR", str(Path.home() / ".cache/mmos_ray/models")))
    parser.add_argument("--data-dir", default=None, help="benchmark files (default ../shared/data when present)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--keep", help="write the runs (metrics.jsonl per step) here instead of a temporary folder")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    threads = os.cpu_count() or 1
    model_path = resolve_model(args.model, Path(args.models_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with tempfile.TemporaryDirectory(prefix="mmos-train-bench-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "sft.jsonl"
        count = write_sft(data, args.examples, args.data_dir)
        micro, _ = batch_plan(args.global_batch, args.micro_batch, 1)
        packed_rows = plan_rows(tokenizer, data, args.max_length, packing=True)
        padded_rows = plan_rows(tokenizer, data, args.max_length, packing=False)
        print(f"{count} examples -> {len(packed_rows)} packed rows / {len(padded_rows)} padded rows "
              f"(max length {args.max_length}); {args.steps} steps, global batch {args.global_batch}, "
              f"micro batch {micro}, {threads} threads", file=sys.stderr)
        # The plain loop runs first, alone on the machine; Ray starts afterwards.
        plain = run_plain(args, model_path, packed_rows, pad_id, threads)
        print(f"plain loop, packed: {plain['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
        ours = run_ours(args, data, work, packing=True)
        print(f"ours, packed: {ours['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
        padded = run_ours(args, data, work, packing=False)
        print(f"ours, padded: {padded['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    result = {
        "tokens_per_s": {"ours_packed": round(ours["tokens_per_s"], 1), "plain_packed": round(plain["tokens_per_s"], 1),
                         "ours_padded": round(padded["tokens_per_s"], 1)},
        "overhead_ratio": round(plain["tokens_per_s"] / ours["tokens_per_s"], 3),
        "packing_efficiency": {"packed": round(efficiency(packed_rows, micro, pad_id), 4),
                               "padded": round(efficiency(padded_rows, micro, pad_id), 4)},
        "packed_vs_padded_speedup": round(ours["tokens_per_s"] / padded["tokens_per_s"], 3),
        "model": args.model, "examples": count, "max_length": args.max_length, "steps": args.steps,
        "global_batch": args.global_batch, "micro_batch": micro, "threads": threads, "device": "cpu",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
