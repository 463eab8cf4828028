"""What a Ray cluster can run: the resources it has now, or can grow to under an autoscaler.

A search sizes itself (GPUs per trial, trials at once) from the cluster it is attached to.
On a `ray up` cluster the GPU workers start at `min_workers` (often 0): sized from what is up
at that moment, a search would see no GPU, train on the head's CPUs and never ask the
autoscaler for a node. So the search plans with the larger of what is up and what the
autoscaler may launch, read from the autoscaler's own config: `ray up` leaves it on the head
as ~/ray_bootstrap_config.yaml, with each node type's resources filled in from its instance
type; `AUDIONET_AUTOSCALING_CONFIG` names another file (a driver that is not on the head).
"""

from __future__ import annotations

import os
from pathlib import Path

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts the config on the head


def autoscaler_max_resources(config_path: str | os.PathLike | None = None) -> dict[str, float]:
    """Resources of the head plus every worker type at its max count ({} without a config).

    An upper bound: the global `max_workers` may stop the autoscaler earlier, and then the
    trials it cannot place wait in the queue, as they would for any busy cluster.
    """
    import yaml

    path = Path(config_path or os.environ.get("AUDIONET_AUTOSCALING_CONFIG") or BOOTSTRAP_CONFIG).expanduser()
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
        types = cfg["available_node_types"]
        head = cfg["head_node_type"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    total: dict[str, float] = {}
    for name, node_type in types.items():
        count = 1 if name == head else int(node_type.get("max_workers", cfg.get("max_workers", 0)))
        for k, v in (node_type.get("resources") or {}).items():
            total[k] = total.get(k, 0.0) + float(v) * count
    return total


def cluster_capacity(config_path: str | os.PathLike | None = None) -> dict[str, float]:
    """Per resource, the larger of what the cluster has now and what it can grow to."""
    import ray

    now = ray.cluster_resources()
    most = autoscaler_max_resources(config_path)
    return {k: max(float(now.get(k, 0.0)), most.get(k, 0.0)) for k in set(now) | set(most)}


def cluster_nodes(capacity: dict[str, float] | None = None) -> int:
    """Nodes alive now, or at least 2 when an autoscaler can add some (`capacity` beyond what is up):
    a search on more than one machine keeps Ray Train placing its workers (plan.choose_trainer)."""
    import ray

    alive = sum(1 for n in ray.nodes() if n.get("Alive"))
    now = ray.cluster_resources()
    grows = any(v > float(now.get(k, 0.0)) + 1e-9 for k, v in (capacity or {}).items())
    return max(alive, 2) if grows else alive
