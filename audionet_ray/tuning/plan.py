"""Planning a search before Ray runs it: how many trials at once and on what (CPUs, GPUs, who
trains them), and the time budget (what it holds, when no more trials start, the end it reserves).

Plain functions and a dataclass over the search space and the cluster's resources; no Ray calls,
so the plan is testable and the search's first line can say it before anything starts.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..training.config import ConfigError, TrainConfig
from .search_space import SearchSpec
from ..core.storage import is_uri


# ----------------------------------------------------------------------------- resources

def plan_resources(spec: SearchSpec, cluster: dict, streaming: bool = True) -> tuple[float, int, str]:
    """GPUs per worker, concurrent trials, and a sentence saying why; `cpus_per_worker: auto` in the
    spec is resolved here (in place), so that every core trains.

    The rule: CPUs are kept back for Ray Data only when the data streams (`streaming`); data that
    fits in memory is read by each worker once, so every CPU goes to training. With `auto`, a
    CPU-only machine runs trials of up to 4 CPUs per worker, at least two trials at once where the
    cores allow (one trial's start-up then overlaps another's training), and with fewer trials than
    slots each trial gets more CPUs; on GPUs the GPUs set the number of trials and the CPUs are
    shared out among them. Torch uses as many threads as its worker has CPUs (train._use_cpus).
    """
    r, t = spec.resources, spec.tune
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 1.0)
    if r.gpus_per_trial == "auto":
        per_trial = 0.0 if gpus == 0 else (0.5 * r.workers_per_trial if gpus < 2 else float(r.workers_per_trial))
    else:
        per_trial = float(r.gpus_per_trial)
    if per_trial > 0 and gpus == 0:
        raise ConfigError(f"--gpus-per-trial {per_trial}: Ray sees no GPU here; use --gpus-per-trial 0")
    gpus_per_worker = per_trial / r.workers_per_trial
    w = r.workers_per_trial
    data_cpus = (1.0 if cpus <= 8 else 0.25 * cpus) if streaming else 0.0  # Ray Data reads outside the workers
    avail = cpus - data_cpus
    if r.cpus_per_worker == "auto":
        if per_trial > 0:
            slots = math.floor(gpus / per_trial + 1e-9)
        else:
            slots = max(1, math.floor(avail / (w * min(4, max(1, math.floor(avail / (2 * w)))))))
        slots = max(1, min(slots, t.max_concurrent or slots, t.num_samples))
        share = avail / (slots * w)
        r.cpus_per_worker = float(math.floor(share)) if share >= 1 else share
    by_cpu = math.floor(avail / (w * r.cpus_per_worker) + 1e-9)
    limits = {"CPUs": by_cpu}
    if per_trial > 0:
        limits["GPUs"] = math.floor(gpus / per_trial + 1e-9)
    if cluster.get("driver_slot"):  # trial drivers hold one each (ray_setup)
        limits["driver slots"] = int(cluster["driver_slot"])
    if t.max_concurrent:
        limits["--max-concurrent"] = t.max_concurrent
    limits["trials"] = t.num_samples
    binding = min(limits, key=limits.get)
    n = max(1, limits[binding])
    if by_cpu < 1:
        raise ConfigError(f"a trial needs {w * r.cpus_per_worker:g} CPUs for its workers plus "
                          f"{data_cpus:g} for data, but Ray sees {cpus:g}: lower cpus_per_worker or workers_per_trial")
    device = f"{gpus_per_worker:g} GPU per worker" if per_trial else "CPU only"
    data = f"{data_cpus:g} CPU kept for Ray Data (the data streams)" if streaming else "data in memory: no CPU kept for Ray Data"
    threads = max(1, int(r.cpus_per_worker + 1e-9))
    why = (f"{n} trial(s) at once, limited by {binding} ({cpus:g} CPUs, {gpus:g} GPUs; each trial "
           f"{w} worker(s) x {r.cpus_per_worker:g} CPU ({threads} torch thread(s)), {device}; {data})")
    return gpus_per_worker, n, why


def choose_trainer(spec: SearchSpec, data: str | Path, exp_dir: str | Path, nodes: int) -> tuple[bool, str]:
    """Whether trials train in Tune's trial process (trial_process.py) rather than in a TorchTrainer,
    and why. The trial process serves a trial of one worker with its data in memory, on one machine
    with local storage; more workers (DDP), streamed data or a cluster keep Ray Train's TorchTrainer."""
    r = spec.resources
    if r.trainer == "torch":
        return False, "a TorchTrainer per trial (--trainer torch)"
    reasons = [why for bad, why in (
        (r.workers_per_trial > 1, f"{r.workers_per_trial} workers per trial"),
        (data_streams(data, 1), "the data streams through Ray Data"),
        (is_uri(exp_dir), "the experiment is on object storage"),
        (nodes > 1, f"a cluster of {nodes} nodes"),
    ) if bad]
    if not reasons:
        return True, "trials train in Tune's trial process, reused"
    if r.trainer == "trial":
        raise ConfigError(f"--trainer trial: {'; '.join(reasons)}: use --trainer torch or auto")
    return False, f"a TorchTrainer per trial ({'; '.join(reasons)})"


def trial_resources(driver: dict, in_trial: bool, cpus_per_worker: float, gpus_per_worker: float) -> dict:
    """What a trial's Tune process holds: its driver slot, and when it trains itself its worker's share."""
    if not in_trial:
        return dict(driver)
    held = {k: v for k, v in driver.items() if k != "CPU"}  # the sliver of CPU is part of the worker's now
    held["CPU"] = cpus_per_worker
    if gpus_per_worker > 0:
        held["GPU"] = gpus_per_worker
    return held


# ----------------------------------------------------------------------------- the time budget

@dataclass
class TimeBudget:
    """The search's wall-time budget as this driver counts it; what was spent before a resume
    comes from budget.json.

    With a budget the budget is the search's length: Tune's `num_samples` is only a cap
    (search_space.trial_cap, 1000 unless --num-samples gives one), and the searcher keeps
    proposing trials for as long as `can_start()` says yes. How the end is planned:

    - No trial starts that cannot reach its first rung (ASHA's grace period; FIFO's too, the
      first epochs with a checkpoint) in the time left: `can_start()` is false once `left()` is
      shorter than `rung_estimate()`, the upper quartile of the times trials took from being
      proposed (Train's start-up included) to that epoch. Trials differ in cost (width, batch
      size), so the median would let about half of the configurations proposed last be stopped
      before their rung, with nothing to rank or keep; the quartile lets three in four make it.
      Before any trial has reached its rung there is no estimate and trials start.
    - The first refusal ends the sampling for good (Tune's SearchGenerator records that the
      searcher finished, with the experiment); `closed` keeps when and why, for the summary.
    - The trials still running go on: ASHA stops or promotes them at their rungs as usual, and
      Tune's `time_budget_s` (= `left()` when the search starts) stops what is left of them when
      the budget runs out. Rungs are checkpoint epochs (search_space.check_rungs_on_checkpoints)
      and checkpoints come every checkpoint_every epochs, so a trial stopped by the budget keeps
      all but its last < checkpoint_every epochs, and the export picks among every checkpoint.
    - `reserve_s` is kept back from the trials for stopping them, writing the results and
      exporting, so that the whole command ends inside the budget; `end_s` adds what a keyword
      bundle's end costs on top (end_reserve_s: its threshold calibrated on validation streams,
      then judged on test streams, hours of audio each).
    - The budget counts from the command's launch (`t0`): synthesizing, preparing the data and
      starting Ray come out of it, and `split_line` says so when the search starts.

    Pure Python: the searcher holding it is pickled with the experiment.
    """

    budget_s: float
    spent_before: float = 0.0
    first_rung: int = 2  # epochs
    rung_s: list[float] = field(default_factory=list)  # seconds from a trial's start to its first rung
    started: dict[str, float] = field(default_factory=dict)  # trial id -> spent() when it started
    t0: float = field(default_factory=time.monotonic)
    closed: tuple | None = None  # (spent, left, needed) when it first refused a trial
    end_s: float = 0.0  # kept back for a keyword bundle's stream calibration and evaluation (end_reserve_s)

    @property
    def reserve_s(self) -> float:
        """Kept back for stopping the trials (~10 s on 2 busy cores), writing results and exporting:
        10% of the budget, 10 s to 60 s; and `end_s` for a keyword bundle's streams."""
        return min(60.0, max(10.0, 0.1 * self.budget_s)) + self.end_s

    def spent(self) -> float:
        return self.spent_before + time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds left for trials to run."""
        return self.budget_s - self.reserve_s - self.spent()

    def rung_estimate(self) -> float | None:
        """Seconds a new trial needs to reach its first rung: the upper quartile of what trials took."""
        if len(self.rung_s) < 2:
            return self.rung_s[0] if self.rung_s else None
        return statistics.quantiles(self.rung_s, n=4, method="inclusive")[2]

    def can_start(self) -> bool:
        need = self.rung_estimate()
        ok = self.left() > 0 and (need is None or self.left() >= need)
        if not ok and self.closed is None:
            self.closed = (self.spent(), self.left(), need)
        return ok

    def over(self) -> bool:
        """Whether the budget has ended the search: spent, or closed to new trials."""
        return self.closed is not None or self.left() <= 0

    def trial_started(self, trial_id: str) -> None:
        self.started[trial_id] = self.spent()

    def trial_reached(self, trial_id: str, epoch: int) -> None:
        if epoch >= self.first_rung and trial_id in self.started:
            self.rung_s.append(round(self.spent() - self.started.pop(trial_id), 1))

    def state(self) -> dict:
        return {"budget_s": self.budget_s, "spent_s": round(self.spent(), 1), "rung_s": self.rung_s,
                "closed": list(self.closed) if self.closed else None}

    def split_line(self) -> str:
        """How the budget is shared out as the search starts: what went before it (this run's
        synthesis, preparation and Ray, and an earlier run's time on a resume), the reserve, the trials."""
        before = "earlier runs, preparation" if self.spent_before else "synthesis, preparation"
        return (f"time budget {fmt_duration(self.budget_s)}"
                + (f" ({fmt_duration(self.budget_s - self.spent())} left)" if self.spent_before else "")
                + f": {fmt_duration(self.spent())} spent before the search ({before}, starting Ray), "
                f"{fmt_duration(self.reserve_s)} reserved for export and evaluation, "
                f"{fmt_duration(max(0.0, self.left()))} for trials")

    def check_fits(self, option: str = "--time-budget") -> None:
        """One line when what the budget must hold leaves trials less than MIN_TRIALS_S."""
        if self.left() >= MIN_TRIALS_S:
            return
        need = self.spent() + self.reserve_s + MIN_TRIALS_S
        raise ConfigError(f"{option} {fmt_duration(self.budget_s)}: {fmt_duration(self.spent())} went to synthesis, "
                          f"preparation and starting Ray and {fmt_duration(self.reserve_s)} is reserved for export and "
                          f"evaluation, which leaves {fmt_duration(max(0.0, self.left()))} for trials: give at least "
                          f"{fmt_duration(math.ceil(need / 60) * 60)}")

    @classmethod
    def resume(cls, budget_s: float, state: dict, first_rung: int, t0: float, end_s: float = 0.0) -> "TimeBudget":
        """The budget of a search, continued from what budget.json says was spent (0 if nothing);
        one that had closed to new trials stays closed (Tune saved its searcher as finished)."""
        closed = state.get("closed")
        return cls(budget_s, float(state.get("spent_s", 0.0)), first_rung, list(state.get("rung_s", [])), t0=t0,
                   closed=tuple(closed) if closed else None, end_s=end_s)


MIN_TRIALS_S = 30.0  # less for trials is no search: the smoke space's trial reaches its first rung in ~20 s
# A keyword bundle's end, with 3 h of keyword-free audio per pass (calibration, evaluation): on 2 busy cores
# the smoke space's model (3.7 M MACs per window) took 48 s from the last trial to the report, the default
# space's width 64 (6.3 M MACs) ~105 s (~2.5 s per M MACs and keyword-free hour per pass); on 2 quiet cores
# (make demo, 2026-12-07 17:40) width 64 took 37 s (~0.8 s). 2.5 reserved 3m06s of the demo's 6 minutes
# for an end of 37 s; 1.2 keeps half again the quiet figure, plus ~20 s for ONNX, int8, the test clips
# and the report.
STREAM_S_PER_HOUR_MMAC = 1.2
END_FIXED_S = 20.0


def largest_macs(spec: SearchSpec, n_classes: int, clip_samples: int) -> float:
    """Millions of multiply-adds per window of the costliest model the space can sample (each searched
    size at its top, each front end and pooling tried), so that the reserve holds whichever trial wins."""
    from itertools import product

    from ..modeling.model import flops_per_clip

    sizes = {k: spec.value_range(k)[1] for k in ("width", "dense", "dense_layers", "filters")}
    kinds = [sorted(set(spec.search[k]["choice"])) if "choice" in spec.search.get(k, {}) else [spec.value_range(k)[0]]
             for k in ("frontend", "pool")]
    macs = 0.0
    for frontend, pool in product(*kinds):
        try:
            cfg = TrainConfig.from_dict({**spec.fixed, **sizes, "frontend": frontend, "pool": pool, "data": ""})
        except (ConfigError, TypeError, ValueError):
            continue
        macs = max(macs, flops_per_clip(cfg.model_config(n_classes, clip_samples), training=False) / 2e6)
    return macs


def end_reserve_s(spec: SearchSpec, data: str | Path, export: bool = True) -> float:
    """Seconds a keyword bundle's end needs beyond a plain export: its threshold calibrated on
    validation streams and its test-stream evaluation, each over hours of keyword-free audio
    (streaming.DEFAULT_KEYWORD_FREE_HOURS), scaled by the costliest model's MACs and this machine's
    cores (measured on 2). 0 for a classifier, or without an export."""
    from ..training.config import parse_keywords
    from ..pipeline.dataset import PreparedDataset
    from ..detection.streaming import DEFAULT_KEYWORD_FREE_HOURS

    if not export or not parse_keywords(spec.fixed.get("keywords")):
        return 0.0
    dataset = PreparedDataset.open(data)
    macs = largest_macs(spec, len(dataset.classes), dataset.clip_samples)
    speed = min(8, max(2, os.cpu_count() or 2)) / 2
    return END_FIXED_S + 2 * DEFAULT_KEYWORD_FREE_HOURS * macs * STREAM_S_PER_HOUR_MMAC / speed


def planned_trials(num_samples: int, budget: TimeBudget | None) -> str:
    """How many trials the search runs, as its first line says it."""
    if budget is None:
        return f"{num_samples} trials"
    return f"trials until the time budget is spent (at most {num_samples})"


def search_over(trials: int, ended: int, num_samples: int, budget: TimeBudget | None) -> bool:
    """Whether a --resume would have nothing left to run: every trial has ended (finished, stopped
    by ASHA or by the time budget, or failed; `ended` counts Tune's TERMINATED and ERROR trials)
    and no more will start, because num_samples trials ran or the budget ended the search. An
    interrupted search (a trial still RUNNING or PENDING) is not over."""
    return trials == ended and (trials >= num_samples or (budget is not None and budget.over()))


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"



def data_streams(data: str | Path, workers: int) -> bool:
    """Whether trials stream this data through Ray Data (and need CPUs for it) or hold it in memory."""
    from ..pipeline.dataset import PreparedDataset

    return not PreparedDataset.open(data).fits_in_memory(workers)


