"""/v1/solve's loop when the model is talked into hostile code: a scripted model (the only fake here)
writes the attack, the real sandbox runs it with the limits of data construction, and the request still
ends with a normal answer. The loop's rules are `core.tir`'s."""

import asyncio
import socket
import time

import pytest

from mmos_ray.config import ServeConfig
from mmos_ray.engines.base import Completion
from mmos_ray.sandbox import Limits, Sandbox
from mmos_ray.stages.serve.solve import GenerationError, SolveRequest, Solver

ATTACKS = {
    "network": "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('ESCAPED')",
    "forever": "while True:\n    pass",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "secrets": "print(open('/etc/shadow').read()[:20])\nprint('ESCAPED')",
    "memory": "x = bytearray(8 * 1024 ** 3)\nprint('ESCAPED')",
}


class ScriptedModel:
    """Round 1: the given program; round 2: an answer. Records every prompt it was sent."""

    def __init__(self, code):
        self.code, self.prompts = code, []

    async def __call__(self, prompt, params):
        self.prompts.append(prompt)
        text = f"```python\n{self.code}\n```" if len(self.prompts) == 1 else "So the answer is $\\boxed{7}$."
        return Completion(text=text, num_tokens=10, num_prompt_tokens=len(prompt) // 4, finish_reason="stop",
                          stop="```output" if len(self.prompts) == 1 else None)


@pytest.fixture(scope="module")
def solver():
    limits = Limits(timeout_s=2.0)
    with Sandbox(workers=1, limits=limits) as sandbox:
        yield Solver(ServeConfig(generation={"max_rounds": 3}), "scripted", sandbox, limits)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_code_is_contained_and_the_request_still_ends(solver, attack):
    if attack == "secrets" and solver.sandbox.protections["user"] == "root":
        pytest.skip("programs run as root here (uid 65534 cannot read this interpreter): they can read host files")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    model = ScriptedModel(ATTACKS[attack].format(port=listener.getsockname()[1]))
    started = time.monotonic()
    with listener:
        out = asyncio.run(solver.solve(SolveRequest(question="What is 3 + 4?"), model))
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing connected to the host
    assert time.monotonic() - started < 30
    step = out["steps"][0]
    assert "ESCAPED" not in step["stdout"] and step["error"], step
    assert out["answer"] == "7" and out["finish_reason"] == "boxed" and out["rounds"] == 2
    assert f"```output\n" in model.prompts[1]  # the model saw the failure and went on


def test_a_request_cannot_loosen_the_limits(solver):
    with pytest.raises(Exception, match="over this server's limit"):
        asyncio.run(solver.solve(SolveRequest(question="q", max_tokens=100000), ScriptedModel("print(1)")))
    assert solver.limits.timeout_s == 2.0 and "timeout_s" not in SolveRequest.model_fields


def test_max_rounds_ends_with_the_limit_note(solver):
    class AlwaysCode:
        async def __call__(self, prompt, params):
            return Completion(text="```python\nprint(1)\n```", num_tokens=5, num_prompt_tokens=5, finish_reason="stop")

    out = asyncio.run(solver.solve(SolveRequest(question="q", max_rounds=2), AlwaysCode()))
    assert out["finish_reason"] == "max_rounds" and out["executions"] == 2
    assert out["trajectory"].endswith("Reach max function call limit.")


def test_engine_refusal_first_round_is_the_clients_error_later_ends_the_trajectory(solver):
    class Refuses:
        def __init__(self, after):
            self.after, self.calls = after, 0

        async def __call__(self, prompt, params):
            self.calls += 1
            if self.calls > self.after:
                raise GenerationError(400, "This model's maximum context length is 1024 tokens")
            return Completion(text="```python\nprint(2)\n```", num_tokens=5, num_prompt_tokens=5, finish_reason="stop")

    from starlette.exceptions import HTTPException

    with pytest.raises(HTTPException) as refused:
        asyncio.run(solver.solve(SolveRequest(question="q"), Refuses(after=0)))
    assert refused.value.status_code == 400
    out = asyncio.run(solver.solve(SolveRequest(question="q"), Refuses(after=1)))
    assert out["finish_reason"] == "error" and "context length" in out["error"] and out["executions"] == 1
