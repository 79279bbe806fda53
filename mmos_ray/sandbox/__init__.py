"""Running model-written Python safely and fast on one host (no Ray here; `mmos_ray.cluster.sandbox_pool`
puts it on Ray). See `executor` for the API and `isolation` for the protections.

The names below are loaded on first use, so that the fork server, which imports `protocol` and
`zygote` only, does not carry the executor's imports into every fork.
"""

import importlib

_EXPORTS = {"Sandbox": "executor", "SandboxStartError": "executor", "execute": "executor",
            "ExecutionResult": "protocol", "Limits": "protocol"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
