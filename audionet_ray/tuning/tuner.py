"""The Ray wiring of a search: the trial function Tune runs, the Tuner around it (Optuna's
searcher, ASHA, callbacks), and what a restored search needs back (ASHA's rungs).

Ray is imported inside the functions (and the callback classes are made by factories), so that
the CLI can refuse a bad option in a second without importing Ray.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..core import ranking
from ..training.config import RunSettings, TrainConfig
from .experiment import TRAIN_RUNS, trial_results, write_budget
from .plan import TimeBudget, trial_resources
from .search_space import DefineByRun, SearchSpec, tpe_startup_trials
from ..core import log as logs

log = logs.get(__name__)


# ----------------------------------------------------------------------------- one trial

def run_trial(config: dict, spec: dict, data: str, exp_dir: str, gpus_per_worker: float, in_trial: bool = False) -> None:
    """One trial: fit a TorchTrainer with the sampled config, or (`in_trial`, choose_trainer) run the
    same loop here in Tune's trial process; metrics go to Tune per epoch."""
    from ray import tune

    s = SearchSpec.from_dict(spec)
    cfg = TrainConfig.from_dict({**s.fixed, **config, "data": data})
    run = RunSettings(
        storage=f"{exp_dir}/{TRAIN_RUNS}",
        name=tune.get_context().get_trial_id(),  # stable: a retried or restored trial resumes
        workers=s.resources.workers_per_trial,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=s.resources.cpus_per_worker,
        max_failures=2,
        metric=s.tune.metric,  # Train keeps the checkpoints that are best by the search's own metric
        mode=s.tune.mode,
    )
    latency = "latency_ms" in s.tune.objectives or "max_latency_ms" in s.tune.constraints
    if in_trial:
        from ..training.trial_process import fit_in_trial

        fit_in_trial(cfg, run, measure_latency=latency)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..training.train import build_trainer

    result = build_trainer(cfg, run, callbacks=[TuneReportCallback()], measure_latency=latency).fit()
    if result.error:
        raise result.error


def _budget_recorder_class():
    from ray.tune import Callback

    class BudgetRecorderImpl(Callback):
        """Writes the time spent to budget.json every few seconds, so a killed search resumes with
        what was left (losing at most `every_s` of accounting)."""

        def __init__(self, budget: TimeBudget, exp_dir, every_s: float = 5.0):
            self.budget, self.exp_dir, self.every_s = budget, exp_dir, every_s
            self._last = 0.0

        def on_step_begin(self, iteration, trials, **info):
            if time.monotonic() - self._last >= self.every_s:
                self._last = time.monotonic()
                write_budget(self.exp_dir, self.budget.state())

        def on_experiment_end(self, trials, **info):
            write_budget(self.exp_dir, self.budget.state())

    return BudgetRecorderImpl


def BudgetRecorder(budget: TimeBudget, exp_dir):  # noqa: N802 - a factory so that importing this module needs no Ray
    return _budget_recorder_class()(budget, exp_dir)


# ----------------------------------------------------------------------------- ASHA after a resume

def refill_asha(scheduler, results: dict[str, list[dict]], metric: str, mode: str) -> dict[int, int]:
    """Put every recorded result back into ASHA's rungs, as ASHA would have recorded it: for each
    rung, a trial's first result at or past the rung's epoch. Tune does not save the scheduler, so
    without this a resumed ASHA stops nothing until its rungs refill. Returns {epoch: results}."""
    from ..core.ray_private import asha_rungs

    sign = ranking.sign(mode)  # ASHA records sign * value, higher better
    counts = {}
    for milestone, recorded in asha_rungs(scheduler):
        for trial_id, rows in results.items():
            first = next((r for r in rows if r.get("epoch", 0) >= milestone and r.get(metric) is not None), None)
            if first is not None and trial_id not in recorded:
                recorded[trial_id] = sign * float(first[metric])
        counts[int(milestone)] = len(recorded)
    return counts


def make_scheduler(spec: SearchSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    t = spec.tune
    if t.scheduler == "asha":
        max_t = int(spec.fixed.get("epochs", TrainConfig.epochs))
        return ASHAScheduler(time_attr="epoch", max_t=max_t,  # ASHA refuses a grace period past max_t (--epochs 1)
                             grace_period=min(t.grace_period, max_t), reduction_factor=t.reduction_factor)
    return FIFOScheduler()


# ----------------------------------------------------------------------------- the search

def _trainable(spec: SearchSpec, data: str, exp_dir: Path, gpus_per_worker: float, driver_resources: dict,
               in_trial: bool):
    """run_trial with this search's fixed arguments, asking Tune for what one trial's workers need."""
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(run_trial, spec=spec.to_dict(), data=data, exp_dir=str(exp_dir),
                             gpus_per_worker=gpus_per_worker, in_trial=in_trial),
        trial_resources(driver_resources, in_trial, float(spec.resources.cpus_per_worker), gpus_per_worker),
    )


def _output(spec: SearchSpec, exp_dir: Path, verbosity: int, budget: TimeBudget | None) -> dict:
    """RunConfig's callbacks and reporter: TensorBoard files always; the terminal as asked."""
    from ..training.monitor import EpochTBXLogger, progress_reporter

    t = spec.tune
    max_epochs = int(spec.fixed.get("epochs", TrainConfig.epochs))
    return dict(
        callbacks=[EpochTBXLogger()] + ([TrialLines(t.metric, max_epochs, budget)] if verbosity else [])
        + ([BudgetRecorder(budget, exp_dir)] if budget else []),
        progress_reporter=progress_reporter(t.metric, list(spec.search), verbosity),
        verbose=verbosity,
    )


def _restored_tuner(spec: SearchSpec, exp_dir: Path, trainable, output: dict, budget: TimeBudget | None,
                    in_trial: bool, verbosity: int):
    """The interrupted search at `exp_dir`, continued with this run's output, clock and refilled ASHA rungs."""
    from ray.tune import Tuner

    from ..core.ray_private import restored_configs
    from .study import StudySearch

    t = spec.tune
    tuner = Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, resume_errored=True)
    # The restored configs are the first run's: this run's output, clock and ASHA's rungs apply.
    tune_config, run_config = restored_configs(tuner)
    tune_config.reuse_actors = in_trial  # as this run trains, whichever way the first run did
    for k, v in output.items():
        setattr(run_config, k, v)
    if budget:
        tune_config.time_budget_s = max(budget.left(), 1.0)
        if isinstance(tune_config.search_alg, StudySearch):
            tune_config.search_alg.budget = budget
    if t.scheduler == "asha":
        counts = refill_asha(tune_config.scheduler, trial_results(exp_dir), t.metric, t.mode)
        if verbosity:
            log.info("ASHA's rungs refilled from the recorded results: "
                     + ", ".join(f"epoch {e}: {n} trial(s)" for e, n in counts.items()))
    return tuner


def _searcher(spec: SearchSpec, data: str, exp_dir: Path, optuna_storage: str | None, budget: TimeBudget | None):
    """Optuna's TPE or random sampler over one define-by-run space, so conditional parameters work alike.

    The study lives in an RDB for TPE (optuna-dashboard reads it live); Tune pickles this searcher,
    storage URL included, with the experiment, so a resumed search adds to the same study.
    """
    import optuna

    from .study import StudySearch, open_storage

    t = spec.tune
    if t.searcher == "optuna":
        sampler = optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=tpe_startup_trials(t))
    else:
        sampler = optuna.samplers.RandomSampler(seed=t.seed)
    # With a second objective the study is multi-objective (TPE handles both); Tune's own metric,
    # which ASHA ranks by and the export picks by, stays the accuracy metric.
    metrics, modes = [t.metric, *t.objectives], [t.mode, *["min"] * len(t.objectives)]
    searcher = StudySearch(space=DefineByRun(spec.search, spec.when), sampler=sampler,
                           metric=metrics if t.objectives else t.metric, mode=modes if t.objectives else t.mode,
                           storage=open_storage(optuna_storage) if optuna_storage else None,
                           study_name=exp_dir.name)
    searcher.budget = budget
    if t.constraints:
        from .study import CostLimits
        from ..pipeline.dataset import PreparedDataset

        m = PreparedDataset.open(data).manifest
        searcher.limits = CostLimits(t.constraints, spec.fixed, len(m["classes"]), m.get("clip_samples"))
    return searcher


def build_tuner(spec: SearchSpec, data: str, exp_dir: Path, gpus_per_worker: float, concurrent: int,
                driver_resources: dict, resume: bool = False, verbosity: int = 1, optuna_storage: str | None = None,
                budget: TimeBudget | None = None, in_trial: bool = False):
    """verbosity: 0 final table only, 1 progress table and a line per trial, 2 also every result."""
    from ray import tune

    t = spec.tune
    trainable = _trainable(spec, data, exp_dir, gpus_per_worker, driver_resources, in_trial)
    output = _output(spec, exp_dir, verbosity, budget)
    if resume:
        return _restored_tuner(spec, exp_dir, trainable, output, budget, in_trial, verbosity)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode,
                                    search_alg=_searcher(spec, data, exp_dir, optuna_storage, budget),
                                    scheduler=make_scheduler(spec),
                                    num_samples=t.num_samples, max_concurrent_trials=concurrent,
                                    time_budget_s=budget.left() if budget else None,
                                    reuse_actors=in_trial),  # a trial process, imports done, takes the next trial
        run_config=tune.RunConfig(
            name=exp_dir.name,
            storage_path=str(exp_dir.parent),
            failure_config=tune.FailureConfig(max_failures=t.max_failures),
            **output,
        ),
    )


def _trial_lines_class():
    from ray.tune import Callback

    class TrialLinesImpl(Callback):
        """One line per finished or failed trial, so a long search reads as a log."""

        def __init__(self, metric: str, max_epochs: int, budget: TimeBudget | None = None):
            self.metric = metric
            self.max_epochs = max_epochs
            self.budget = budget

        def _print(self, trial, verb: str, extra: str = "") -> None:
            r = trial.last_result or {}
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((trial.config or {}).items()))
            log.info(f"trial {trial.trial_id} {verb} at epoch {r.get('epoch', 0)}/{self.max_epochs}: "
                     f"{self.metric} {_fmt(r.get(self.metric))}, val_loss {_fmt(r.get('val_loss'))} ({params}){extra}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            done = (trial.last_result or {}).get("epoch", 0) >= self.max_epochs
            by_budget = self.budget is not None and self.budget.left() <= 0  # Tune's time_budget_s stops them all
            self._print(trial, "finished" if done else "stopped by the time budget" if by_budget else "stopped early")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._print(trial, "failed", f"; see {trial.error_file}")

    return TrialLinesImpl


def TrialLines(metric: str, max_epochs: int, budget: TimeBudget | None = None):  # noqa: N802 - a factory so that importing this module needs no Ray
    return _trial_lines_class()(metric, max_epochs, budget)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


