"""The core, the config and the CLI must import without Ray, torch, transformers, vLLM or DeepSpeed."""

import subprocess
import sys

import pytest

HEAVY = ("ray", "torch", "transformers", "vllm", "deepspeed")


@pytest.mark.parametrize("module", ["mmos_ray.core", "mmos_ray.core.problems", "mmos_ray.core.answers",
                                    "mmos_ray.config", "mmos_ray.cli", "mmos_ray.loaders", "mmos_ray.sandbox",
                                    "mmos_ray.submit"])
def test_module_imports_no_heavy_library(module):
    code = (f"import sys, pkgutil, importlib; import {module} as m\n"
            "if hasattr(m, '__path__'):\n"
            "    [importlib.import_module(i.name) for i in pkgutil.walk_packages(m.__path__, m.__name__ + '.')]\n"
            f"print(','.join(sorted(h for h in {HEAVY!r} if h in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imported: {out.stdout.strip()}"

