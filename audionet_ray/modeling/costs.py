"""What a model costs to run: parameters, multiply-accumulates per window (one second unless the
data was prepared with another --window), latency per window on this CPU. A search may minimise
one of them beside its accuracy metric (`tune.objectives`) and refuse models over a limit
(`tune.constraints`); every trial reports them.

Parameters and MACs follow from the model's settings alone, so a search knows them before it
trains anything and never starts a trial over a limit. Latency is measured: torch on one
thread, batch 1, the median of 30 runs after 5 warm-up runs (the bundle's deployment figures
measure the exported ONNX model the same way).
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only to measure: the search space and the experiment folder import this module
    import torch

    from .model import ModelConfig

OBJECTIVES = ("macs", "params", "latency_ms")  # each minimised
CONSTRAINTS = {"max_macs": "macs", "max_params": "params", "max_latency_ms": "latency_ms"}
LIMIT_OF = {cost: limit for limit, cost in CONSTRAINTS.items()}  # "macs" -> "max_macs"


def latency_ms(model: "torch.nn.Module", runs: int = 30, warmup: int = 5) -> float:
    """Median milliseconds of one forward pass of one clip, torch on one thread."""
    import torch

    model = model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(1, model.config.clip_samples)  # one window of the model's length
        times = []
        with torch.no_grad():
            for i in range(warmup + runs):
                t0 = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


def model_costs(cfg: "ModelConfig", latency: bool = False, model: "torch.nn.Module | None" = None,
                architecture: str | None = None) -> dict[str, float]:
    """{"params", "macs"} of the model these settings build (`architecture`: registry's name, None:
    its default), and "latency_ms" when asked. Give `model` (built from `cfg`) to measure it (a copy,
    on the CPU) instead of a new one: building one draws its initial weights from torch's global generator."""
    import copy

    from .model import count_parameters, flops_per_clip
    from .registry import build

    if model is None:
        model = build(architecture, cfg)
    else:
        model = copy.deepcopy(model).cpu() if latency else model
    out: dict[str, float] = {"params": count_parameters(model), "macs": int(flops_per_clip(cfg, training=False) / 2)}
    if latency:
        out["latency_ms"] = round(latency_ms(model), 4)
    return out


def over_limits(costs: dict[str, float], constraints: dict[str, float]) -> list[str]:
    """The limits these costs break, as 'params 1200 > max_params 1000' (empty: within all)."""
    return [f"{CONSTRAINTS[k]} {costs[CONSTRAINTS[k]]:g} > {k} {v:g}"
            for k, v in constraints.items() if CONSTRAINTS[k] in costs and costs[CONSTRAINTS[k]] > v]

