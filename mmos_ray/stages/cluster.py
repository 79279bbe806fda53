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
    # The dashboard (http://127.0.0.1:8265) also serves the state API, which Ray Train uses to notice that
    # a run's controller has ended; without it Ray Train's clean-up actor warns forever.
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", logging_level=logging.WARNING,
             configure_logging=True)
