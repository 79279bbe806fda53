"""Connecting to Ray: the cluster a job was submitted to, or a local one on 127.0.0.1."""

from __future__ import annotations

import logging
import os

import ray


def ensure_ray() -> None:
    """Join the Ray cluster in $RAY_ADDRESS (a submitted job) or start a local one, once per process."""
    if ray.is_initialized():
        return
    # Without this Ray binds the machine's external address on Linux; local runs stay on loopback.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
