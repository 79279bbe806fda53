"""`mmos serve` as users run it: a subprocess that serves until SIGTERM, queried with the openai client."""

import os
import signal
import subprocess
import sys
import time

import openai
import pytest
import requests

from tests.stages.test_serve import free_port

pytestmark = pytest.mark.slow


def test_mmos_serve_until_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "MMOS_SERVE_API_KEY": "cli-key"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mmos_ray", "serve", "--model", "tiny", "--port", str(port),
         "--set", f"paths.models_dir={tmp_path / 'models'}", "--set", "serve.engine.backend=hf"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, process.stdout.read()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or the proxy has no app to answer with yet
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="cli-key", max_retries=0)
        assert client.completions.create(model="tiny", prompt="Hi", max_tokens=4).choices[0].finish_reason
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        process.send_signal(signal.SIGTERM)  # the process this test started
        out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out[-3000:]
    assert f"at http://127.0.0.1:{port} (OpenAI base URL" in out
