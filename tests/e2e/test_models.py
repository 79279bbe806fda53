"""`mmos model tiny|smollm2` build Hugging Face folders that transformers and vLLM load offline."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.test_cli import mmos

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def python(code, timeout=300):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=OFFLINE, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    mmos("model", "tiny", "--out", str(out))
    return out


def test_tiny_is_cached(tiny_dir):
    weights = tiny_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    mmos("model", "tiny", "--out", str(tiny_dir))
    assert weights.stat().st_mtime_ns == before


def test_tiny_loads_and_generates_with_transformers(tiny_dir):
    out = python(f"""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(tiny_dir)!r})
        model = AutoModelForCausalLM.from_pretrained({str(tiny_dir)!r})
        cfg = model.config
        assert cfg.hidden_size // cfg.num_attention_heads >= 32, "vLLM's CPU attention needs head_dim >= 32"
        ids = tok("<|user|>\\nWhat is 2+3?\\n<|assistant|>\\n", return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        print(out.shape[1] - ids.input_ids.shape[1], sum(p.numel() for p in model.parameters()))
    """)
    new_tokens, params = map(int, out.split())
    assert new_tokens >= 1 and params < 1_000_000


def test_tiny_loads_in_vllm(tiny_dir):
    out = python(f"""
        if __name__ == "__main__":
            from vllm import LLM, SamplingParams
            llm = LLM({str(tiny_dir)!r}, enforce_eager=True, gpu_memory_utilization=0.1, max_model_len=512, seed=0)
            outs = llm.generate(["<|user|>\\n1+1?\\n<|assistant|>\\n"] * 2, SamplingParams(n=1, max_tokens=8, seed=0, ignore_eos=True))
            print("TOKENS", [len(o.outputs[0].token_ids) for o in outs])
    """)
    assert "TOKENS [8, 8]" in out


@pytest.mark.slow
def test_smollm2_converts_and_answers(tmp_path):
    out_dir = tmp_path / "smollm2"
    mmos("model", "smollm2", "--out", str(out_dir))
    assert (out_dir / "model.safetensors").stat().st_size > 200e6
    out = python(f"""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(out_dir)!r})
        model = AutoModelForCausalLM.from_pretrained({str(out_dir)!r})
        ids = tok("<|user|>\\nWhat is 2+2?\\n<|assistant|>\\n", return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        print(repr(tok.decode(out[0][ids.input_ids.shape[1]:], skip_special_tokens=True)))
        print(str(model.dtype), sum(p.numel() for p in model.parameters()))
    """)
    answer, meta = out.strip().splitlines()[-2:]
    assert "4" in answer
    assert meta.startswith("torch.bfloat16 134")
