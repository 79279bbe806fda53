"""The HF transformers engine, for machines without vLLM. Batched `generate` with left padding; stop
strings are cut after decoding. Seeds apply per call (transformers samples a batch from one generator),
so a sample's text depends on its batch, unlike with vLLM's per-request seeds.
"""

from __future__ import annotations

from typing import Sequence

from mmos_ray.engines.base import Completion, SamplingParams


class HFEngine:
    name = "hf"
    OPTIONS = ("max_model_len", "seed", "batch_size")

    def __init__(self, model: str, max_model_len: int = 4096, seed: int = 0, batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.max_model_len = max_model_len
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        self._model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        self._model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self._torch = torch
        torch.manual_seed(seed)

    def generate(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> list[Completion]:
        # Rows that share sampling settings (all but the seed) are generated together.
        groups: dict[tuple, list[int]] = {}
        for index, p in enumerate(params):
            groups.setdefault((p.temperature, p.top_p, p.max_tokens, p.stop), []).append(index)
        completions: list[Completion | None] = [None] * len(prompts)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                outs = self._generate_batch([prompts[i] for i in chunk], params[chunk[0]])
                for index, completion in zip(chunk, outs):
                    completions[index] = completion
        return completions  # type: ignore[return-value]

    def generate_streaming(self, prompt: str, p: SamplingParams, streamer) -> Completion:
        """One completion, its text also pushed to `streamer` (a transformers `TextIteratorStreamer`) as it is
        generated; the caller reads the streamer on another thread and cuts stop strings itself."""
        return self._generate_batch([prompt], p, streamer=streamer)[0]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)

    def _generate_batch(self, prompts: list[str], p: SamplingParams, streamer=None) -> list[Completion]:
        torch = self._torch
        if p.seed is not None:
            torch.manual_seed(p.seed)
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self._model.device)
        max_new = max(1, min(p.max_tokens, self.max_model_len - encoded.input_ids.shape[1]))
        sampling = dict(do_sample=True, temperature=p.temperature, top_p=p.top_p) if p.temperature > 0 else \
            dict(do_sample=False)
        with torch.no_grad():
            output = self._model.generate(**encoded, max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id,
                                          stop_strings=list(p.stop) or None, tokenizer=self.tokenizer,
                                          streamer=streamer, **sampling)
        prompt_len = encoded.input_ids.shape[1]
        completions = []
        for row, ids in enumerate(output[:, prompt_len:]):
            ids = ids.tolist()
            eos = self.tokenizer.eos_token_id
            ended_by_eos = eos in ids
            if ended_by_eos:
                ids = ids[:ids.index(eos)]
            ids = [t for t in ids if t != self.tokenizer.pad_token_id]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            stop = next((s for s in p.stop if s in text), None)
            if stop is not None:
                text = text[:text.index(stop)]
            finish = "stop" if stop is not None or ended_by_eos else ("length" if len(ids) >= max_new else "stop")
            completions.append(Completion(text=text, num_tokens=len(ids),
                                          num_prompt_tokens=int(encoded.attention_mask[row].sum()),
                                          finish_reason=finish, stop=stop))
        return completions
