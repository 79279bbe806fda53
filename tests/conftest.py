"""Shared test setup: an offline, loopback-only environment, and the benchmark data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports transformers / vLLM / Ray: nothing in the tests may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--data-dir", default=None,
                     help="benchmark data directory (default: $MMOS_DATA_DIR or ../shared/data when present)")


@pytest.fixture(scope="session")
def data_dir(request) -> Path:
    """The real benchmark files; tests that need them are skipped, with the reason, when absent."""
    from mmos_ray.loaders import default_data_dir

    given = request.config.getoption("--data-dir")
    path = Path(given) if given else default_data_dir()
    if path is None or not path.is_dir():
        pytest.skip("benchmark data directory not found: pass --data-dir DIR or set MMOS_DATA_DIR "
                    "(expected ../shared/data beside the project)")
    return path



@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs on 127.0.0.1, shared by the tests that need Ray."""
    import ray

    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", configure_logging=False)
    yield ray
    ray.shutdown()
