"""Starting or attaching Ray the way a search needs it.

Two traps this avoids (see the project's Ray notes):
- Trial drivers (Tune function trainables) only wait on their TorchTrainer. Holding a CPU each,
  two trials on 2 CPUs deadlock, so a local Ray gets a custom `driver_slot` resource and trial
  drivers take a slot instead: DRIVER_SLOTS_PER_CPU per CPU, so that trials of a fraction of a
  CPU (`cpus_per_worker: 0.5`: two trials a core) are limited by their CPUs, not by the slots.
- Train starts a PreemptionWatcher actor per run, for spot nodes a cloud may take away; a
  local Ray runs without it (a cluster keeps it).
- Train's placement-group cleaner asks the state API whether a stopped trial's controller is
  dead, finding the cluster by auto-detection. With a second Ray instance on the same machine
  that detection fails, and a trial stopped by ASHA keeps its CPUs forever. Every process of
  our job is therefore told its cluster's address.
"""

from __future__ import annotations

import os
import socket

DRIVER_SLOT = "driver_slot"
DRIVER_SLOTS_PER_CPU = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_ray(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    import ray

    # ray.train.report() waits for the controller's poll (2 s by default): poll faster.
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")}
    os.environ.update(env)
    if address:
        if address != "auto":
            env["RAY_ADDRESS"] = address
        ray.init(address=address, log_to_driver=log_to_driver, runtime_env={"env_vars": env})
    else:
        n = num_cpus or os.cpu_count() or 1
        port = _free_port()
        env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        # One machine is never preempted: no PreemptionWatcher actor (a process, ~2 CPU-seconds) per trial.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"]
        # The dashboard must run: it serves the state API the placement-group cleaner needs.
        ray.init(address="local", num_cpus=n, resources={DRIVER_SLOT: DRIVER_SLOTS_PER_CPU * n}, include_dashboard=True,
                 dashboard_host="127.0.0.1", dashboard_port=port, log_to_driver=log_to_driver,
                 runtime_env={"env_vars": env})
    ray.data.DataContext.get_current().enable_progress_bars = False


def trial_driver_resources() -> dict:
    """A driver slot where the cluster has them (ours, cluster.yaml), else a sliver of CPU."""
    import ray

    return {DRIVER_SLOT: 1} if ray.cluster_resources().get(DRIVER_SLOT) else {"CPU": 0.01}
