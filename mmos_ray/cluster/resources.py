"""Connecting to Ray (the cluster a job was submitted to, or a local one on 127.0.0.1), and which custom
resources of the cluster's node types a stage's actors ask for.

The node types of `ray_cluster.yaml` and `cluster/raycluster.yaml` advertise `sandbox` (CPU workers) and
`engine` (GPU workers). Actors that run model-written code ask for one `sandbox`, engine actors for one
`engine`, as `custom_resource(name, mode)` says (`sample.custom_resources`, `verify.custom_resources`):
- `on`: always ask. On an autoscaling cluster that demand is what starts a worker of that type, so use
  it where that group scales to zero (Ray's own autoscaler, `ray up` or KubeRay, does not tell the
  cluster what its node types offer). With no node type offering the resource, the actors wait forever.
- `off`: never ask (the actors go wherever there are CPUs).
- `auto` (the default): ask when a live node advertises the resource now, or when the node types reported
  to the GCS (`ray._private.state.state.get_cluster_config()`, where Ray Data and Ray Train look too; Ray
  2.60's own autoscalers leave it empty) offer it. A local Ray, or a cluster without such nodes, asks for
  nothing extra.
"""

from __future__ import annotations

import logging
import os

import ray

logger = logging.getLogger(__name__)


def ensure_ray(dashboard: bool = True) -> None:
    """Join the Ray cluster in $RAY_ADDRESS (a submitted job) or start a local one, once per process;
    `dashboard`: whether a local one runs Ray's dashboard."""
    if ray.is_initialized():
        return
    # Without this Ray binds the machine's external address on Linux; local runs stay on loopback.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # The dashboard (http://127.0.0.1:8265) also serves the state API, which Ray Train uses to notice that
    # a run's controller has ended; without it Ray Train's clean-up actor warns forever.
    ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1", logging_level=logging.WARNING,
             configure_logging=True)


def custom_resource(name: str, mode: str = "auto") -> dict[str, float]:
    """`{name: 1.0}` when actors should ask for the custom resource `name` (mode `auto`, `on` or `off`, see
    the module docstring), else `{}`."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"custom_resources={mode!r}: use auto, on or off")
    if mode == "off":
        return {}
    if mode == "on" or ray.cluster_resources().get(name, 0) > 0 or _node_types_offer(name):
        return {name: 1.0}
    return {}


def _node_types_offer(name: str) -> bool:
    """Whether a node type of the cluster config reported to the GCS (if any) can add nodes offering `name`."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # an internal API: a Ray without it (or a failed read) just means "not known"
        return False
    return bool(config) and any(group.resources.get(name, 0) > 0 and group.max_count != 0
                                for group in config.node_group_configs)


def nodes_offering(name: str) -> list[dict[str, float]]:
    """The total resources of each live node that advertises `name`."""
    return [node["Resources"] for node in ray.nodes() if node.get("Alive") and node["Resources"].get(name, 0) > 0]
