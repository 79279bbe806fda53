"""Stage 05 on local Ray: DeepSpeed ZeRO-2/3 on CPU over gloo, overfit-and-generate through vLLM, resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mmos_ray import storage
from mmos_ray.config import load_config
from mmos_ray.stages import train

QUESTIONS = [("Dev", 12, 30), ("Ann", 45, 7), ("Emma", 81, 16), ("Ben", 23, 9)]


def write_sft(path, n=None):
    rows = []
    for i, (who, a, b) in enumerate(QUESTIONS if n is None else [(f"P{i}", 10 + i, 3 + i % 5) for i in range(n)]):
        prompt = f"<|user|>\n{who} has {a} apples and gets {b}. How many apples does {who} have now?\n<|assistant|>\n"
        completion = (f"```python\napples = {a}\nresult = apples + {b}\nprint(result)\n```\n```output\n{a + b}\n```\n"
                      f"The answer is $\\boxed{{{a + b}}}$.")
        rows.append({"idx": i, "prompt": prompt, "completion": completion})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def config(tmp_path, models_dir, *overrides):
    return load_config(None, ["train.base_model=tiny", f"paths.models_dir={models_dir}",
                              f"train.data={tmp_path / 'sft.jsonl'}", "train.max_length=256",
                              "train.global_batch_size=4", "train.micro_batch_size=1", *overrides])


def run_train(tmp_path, cfg):
    stage = storage.RunLayout(tmp_path / "run").train
    stage.mkdir(parents=True)
    return train.run(cfg.train, cfg.paths, stage), stage


@pytest.mark.parametrize("strategy,zero,packing", [("deepspeed", 2, False), ("deepspeed", 3, True), ("ddp", 2, False)])
def test_loss_falls(tmp_path, models_dir, ray_local, strategy, zero, packing):
    write_sft(tmp_path / "sft.jsonl", n=64 if not packing else 256)
    cfg = config(tmp_path, models_dir, f"train.strategy={strategy}", f"train.zero_stage={zero}", "train.epochs=3",
                 "train.learning_rate=3e-3", f"train.packing={str(packing).lower()}")
    manifest, stage = run_train(tmp_path, cfg)
    steps = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert manifest["counts"]["steps"] == steps[-1]["step"] == steps[0]["total_steps"] > 5
    assert steps[-1]["loss"] < 0.7 * steps[0]["loss"]
    assert all(0 <= s["padding_share"] < 1 and s["tokens_per_s"] > 0 and "lr" in s for s in steps)
    assert (stage / "model" / "model.safetensors").exists() and (stage / "model" / "tokenizer.json").exists()


def test_overfit_then_vllm_reproduces_a_training_completion(tmp_path, models_dir, ray_local):
    rows = write_sft(tmp_path / "sft.jsonl")
    cfg = config(tmp_path, models_dir, "train.epochs=60", "train.learning_rate=3e-3", "train.warmup_ratio=0", "train.packing=false",
                 "train.mask_outputs=false", "train.zero_stage=3")
    manifest, stage = run_train(tmp_path, cfg)
    model = stage / "model"
    code = textwrap.dedent(f"""
        if __name__ == "__main__":
            import json
            from transformers import AutoModelForCausalLM
            AutoModelForCausalLM.from_pretrained({str(model)!r})
            from mmos_ray.engines.vllm_engine import VLLMEngine
            from mmos_ray.engines.base import SamplingParams
            engine = VLLMEngine({str(model)!r}, max_model_len=512)
            out = engine.generate([{rows[0]['prompt']!r}], [SamplingParams(max_tokens=80)])
            print("COMPLETION" + json.dumps(out[0].text))
    """)
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    completion = json.loads(result.stdout.split("COMPLETION", 1)[1].splitlines()[0])
    assert completion == rows[0]["completion"], (manifest["final_loss"], completion)


def test_an_interrupted_run_resumes_to_the_same_final_step(tmp_path, models_dir):
    write_sft(tmp_path / "sft.jsonl", n=40)
    overrides = ["train.base_model=tiny", f"paths.models_dir={models_dir}", f"train.data={tmp_path / 'sft.jsonl'}",
                 "train.max_length=128", "train.global_batch_size=2", "train.micro_batch_size=1",
                 "train.packing=false", "train.epochs=2", "train.checkpoint_every=4", "sample.engine.model=tiny"]
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from mmos_ray.config import load_config
        from mmos_ray.stages import train
        cfg = load_config(None, {overrides!r})
        stage = Path({str(storage.RunLayout(tmp_path / 'run').train)!r})
        stage.mkdir(parents=True, exist_ok=True)
        print("STEPS", train.run(cfg.train, cfg.paths, stage)["counts"]["steps"])
    """)
    metrics = storage.RunLayout(tmp_path / "run").train / "metrics.jsonl"
    process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()] if metrics.exists() else []
            if steps and steps[-1] >= 6:
                break
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the run we started: driver, Ray, train workers
        process.wait()
    first_run = [json.loads(line) for line in metrics.read_text().splitlines()]
    total = first_run[0]["total_steps"]
    assert 6 <= first_run[-1]["step"] < total, "the run was not interrupted part-way"
    rerun = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"STEPS {total}" in rerun.stdout
    second_run = [json.loads(line) for line in metrics.read_text().splitlines()][len(first_run):]
    # Resumed (not restarted at 1) and skipped no step. The step it resumes at depends on when the kill
    # lands relative to a checkpoint: 5 or 9 usually; one CI run resumed at 8 (to be understood, issue 7).
    assert 1 < second_run[0]["step"] <= first_run[-1]["step"] + 1
    assert second_run[-1]["step"] == total


def test_packed_examples_do_not_see_each_other(tmp_path, models_dir):
    """The logits of an example packed after others equal its logits alone: the mask and position ids
    the trainer builds keep packed examples apart."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmos_ray.core.sft import collate, encode, pack, unpacked
    from mmos_ray.models import resolve_model
    from mmos_ray.stages.train.loop import _tensors

    path = resolve_model("tiny", models_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    rows = write_sft(tmp_path / "sft.jsonl")
    examples = [encode(tokenizer, r["prompt"], r["completion"], 256, tokenizer.eos_token_id) for r in rows]
    (packed,) = pack(examples, 1024)
    assert len(packed.segments) == len(rows)
    cpu = torch.device("cpu")
    with torch.no_grad():
        together = model(**{k: v for k, v in _tensors(collate([packed], 0), cpu, "sdpa").items()
                            if k != "labels"}).logits[0]
        alone = torch.cat([model(**{k: v for k, v in _tensors(collate([row], 0), cpu, "sdpa").items()
                                    if k != "labels"}).logits[0]
                           for row in sorted(unpacked(examples), key=lambda r: -len(r.input_ids))])
    assert together.shape == alone.shape
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_an_sft_row_without_its_completion_is_named_before_ray_starts(tmp_path, models_dir):
    from mmos_ray.core.errors import DataError

    (tmp_path / "sft.jsonl").write_text('{"prompt": "p", "completion": "c"}\n{"prompt": "p2"}\n')
    cfg = config(tmp_path, models_dir)
    with pytest.raises(DataError, match=r"sft.jsonl:2: missing field 'completion'"):
        run_train(tmp_path, cfg)


def test_an_empty_sft_file_trains_nothing_and_says_so(tmp_path, models_dir, caplog):
    (tmp_path / "sft.jsonl").write_text("")
    manifest, _ = run_train(tmp_path, config(tmp_path, models_dir))
    assert manifest["trained"] is False and manifest["counts"] == {"examples": 0, "steps": 0}
    assert manifest["model"] == manifest["base_model"]
    assert "holds no examples" in caplog.text


def test_the_loop_config_is_validated_again_in_the_worker(tmp_path, models_dir):
    """The driver sends a plain dict through Ray Train; the worker gets back the same typed config, and a
    dict that does not fit (an unknown key, bf16 left at auto) is refused, naming the field."""
    from pydantic import ValidationError

    from mmos_ray.stages.train.loop import LoopConfig

    cfg = config(tmp_path, models_dir, "train.strategy=ddp", "train.max_steps=3")
    sent = LoopConfig(train=cfg.train, model=str(tmp_path / "model"), data=tmp_path / "sft.jsonl", bf16=False,
                      stage_dir=tmp_path / "05_train").model_dump(mode="json")
    assert json.loads(json.dumps(sent)) == sent
    received = LoopConfig.model_validate(sent)
    assert received.train == cfg.train and received.data == tmp_path / "sft.jsonl" and received.bf16 is False
    with pytest.raises(ValidationError, match="learning_rat"):
        LoopConfig.model_validate({**sent, "train": {**sent["train"], "learning_rat": 1.0}})
    with pytest.raises(ValidationError, match="bf16"):
        LoopConfig.model_validate({**sent, "bf16": "auto"})
