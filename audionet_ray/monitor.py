"""Watching a search while it runs: Tune's progress table, TensorBoard, the Optuna study.

Everything here plugs into the Tuner that tune.py builds:
- `progress_reporter`: Tune's own progress table, with the columns that matter (val_accuracy,
  val_loss, epoch, clips/s) instead of the ones Ray guesses. Ray 2.60's new output engine picks
  its columns itself (the first four metrics reported) and ignores a reporter, so the search
  asks for the classic engine (`RAY_AIR_NEW_OUTPUT=0`), whose `CLIReporter` takes columns.
- `EpochTBXLogger`: Tune's TensorBoard logger, stepped by epoch. Tune steps by
  `training_iteration`, which restarts at 1 when a search is resumed; epochs do not.
- `StudySearch`: OptunaSearch that stores the study in an RDB (SQLite in the experiment folder
  by default), so that optuna-dashboard shows the search live; each Optuna trial carries its
  Tune trial id, and intermediate values are stepped by epoch for the same reason as above.
  It also keeps the time budget: no new trial once the time left cannot fit a first rung.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ray.tune import CLIReporter
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from .config import ConfigError
from .ray_private import (FilteredCLIReporter, forget_optuna_trial, optuna_study, optuna_told, optuna_trial,
                          tbx_writer)
from .storage import is_uri

OPTUNA_DB = "optuna.db"
TRIAL_ID_ATTR = "tune_trial_id"  # user attribute of each Optuna trial: its Tune trial id
REJECTED_ATTR = "over_limits"  # user attribute of an Optuna trial never run: the limits it broke
MAX_REJECTED = 500  # samples in a row over the limits before the search gives up starting trials
METRIC_COLUMNS = {"epoch": "epoch", "val_accuracy": "val_acc", "val_loss": "val_loss", "clips_per_s": "clips/s"}
TABLE_EVERY_S = {1: 30, 2: 10}  # verbosity -> seconds between progress tables


# ----------------------------------------------------------------------------- terminal

class ProgressTable(FilteredCLIReporter):
    """CLIReporter without its "Result logdir" line: that is Tune's staging folder under /tmp/ray,
    not the experiment folder that TensorBoard and the report read."""

    drop_prefixes = ("Result logdir:",)


def progress_reporter(metric: str, params: list[str], verbosity: int) -> CLIReporter:
    """Tune's table: trial, status, sampled parameters, metrics; best trials first."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new engine ignores reporters (see above)
    columns = {metric: METRIC_COLUMNS.get(metric, metric), **{k: v for k, v in METRIC_COLUMNS.items() if k != metric}}
    return ProgressTable(metric_columns=columns, parameter_columns=params, sort_by_metric=True,  # metric: from Tune
                         print_intermediate_tables=True, max_report_frequency=TABLE_EVERY_S.get(verbosity, 30))


# ----------------------------------------------------------------------------- TensorBoard

class EpochTBXLogger(TBXLoggerCallback):
    """Scalars per epoch in each trial folder (events.out.tfevents.*), as Tune writes them.

    A trial that starts again (a resumed search, a retried trial) goes on from its checkpoint's
    epoch, or from 1 without one; the killed attempt may have logged epochs past that. Its first
    result is therefore preceded by TensorBoard's restart marker (SessionLog START) at its epoch,
    on which TensorBoard drops the older points from that step on: the curve never repeats a step.
    """

    def __init__(self):
        super().__init__()
        self._restarted: set = set()  # trials whose next result starts a new attempt

    def log_trial_start(self, trial):
        super().log_trial_start(trial)
        self._restarted.add(trial)

    def log_trial_result(self, iteration, trial, result):
        if "epoch" in result:
            result = {**result, TRAINING_ITERATION: result["epoch"]}  # Tune's step, not logged itself
            if tbx_writer(self, trial) is None:
                self.log_trial_start(trial)
            if trial in self._restarted:
                from tensorboardX.proto.event_pb2 import Event, SessionLog

                self._restarted.discard(trial)
                tbx_writer(self, trial).file_writer.add_event(
                    Event(step=int(result["epoch"]), wall_time=time.time(), session_log=SessionLog(status=SessionLog.START)))
        super().log_trial_result(iteration, trial, result)


# ----------------------------------------------------------------------------- Optuna

def study_storage(url: str | None, exp_dir) -> str | None:
    """The URL a new search keeps its study at: `url`, or SQLite in a local experiment folder.

    Checked now, so a mistyped URL is one line before Ray starts; None (a study in memory) for
    an experiment on a URI such as s3://, where a SQLite file cannot live.
    """
    import optuna

    if url is None:
        if is_uri(exp_dir):
            return None
        url = f"sqlite:///{Path(exp_dir).resolve() / OPTUNA_DB}"
    storage = open_storage(url)
    name = Path(str(exp_dir)).name
    if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        raise ConfigError(f"--optuna-storage {url} already holds a study named {name!r}: pick another --name")
    return url


def open_storage(url: str):
    """An Optuna RDBStorage, or one clear line saying why the URL does not work."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as e:  # sqlalchemy: bad URL, missing driver, unreachable server, ...
        raise ConfigError(f"--optuna-storage {url}: cannot open it as an Optuna storage "
                          f"({type(e).__name__}: {str(e).splitlines()[0]})") from None


class StudySearch(OptunaSearch):
    """OptunaSearch whose Optuna trials name their Tune trial and count intermediate values by epoch.

    The study itself lives in the storage given to OptunaSearch; the searcher's own state
    (pickled by Tune with the experiment) points to the same storage and study, so a resumed
    search keeps adding to it.

    `budget` (a tune.TimeBudget, or None) is this run's clock: once the time left is shorter than
    a trial takes to reach ASHA's first rung, `suggest` says FINISHED and Tune starts no more
    trials. It is the driver's, not the experiment's: a restored searcher keeps the one it has.
    """

    budget = None
    limits = None  # a CostLimits, or None: no sampled configuration may break them

    def suggest(self, trial_id: str):
        if self.budget is not None:
            if not self.budget.can_start():
                return Searcher.FINISHED
        for _ in range(MAX_REJECTED):
            params = super().suggest(trial_id)
            ot_trial = optuna_trial(self, trial_id)
            if ot_trial is None or not isinstance(params, dict):
                return params
            ot_trial.set_user_attr(TRIAL_ID_ATTR, trial_id)
            broken = self.limits.broken(params) if self.limits else []
            if not broken:
                if self.budget is not None:
                    self.budget.trial_started(trial_id)
                return params
            # over a limit: never trained; Optuna records it as failed, with why
            ot_trial.set_user_attr(REJECTED_ATTR, "; ".join(broken))
            optuna_study(self).tell(ot_trial, state=optuna_state("FAIL"))
            forget_optuna_trial(self, trial_id)
        print(f"no configuration within the search's limits ({self.limits}) in {MAX_REJECTED} samples in a row: "
              f"no more trials start", flush=True)
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict):
        if "epoch" in result:
            result = {**result, TRAINING_ITERATION: result["epoch"]}
            if self.budget is not None:
                self.budget.trial_reached(trial_id, result["epoch"])
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        # Tune hands a trial's last result to on_trial_complete only: record it as an epoch too.
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if result and not error and all(m in result for m in metrics) and not optuna_told(self, trial_id):
            self.on_trial_result(trial_id, result)
        super().on_trial_complete(trial_id, result, error)

    def restore(self, checkpoint_path: str):
        budget = self.budget  # this run's clock, not the one pickled with the experiment
        super().restore(checkpoint_path)
        self.budget = budget


def optuna_state(name: str):
    import optuna

    return getattr(optuna.trial.TrialState, name)


class CostLimits:
    """A search's cost limits (tune.constraints) checked on a sampled configuration before it
    trains: parameters and MACs from the settings alone, latency measured. Plain data and a
    method, so that Tune can pickle it with the searcher."""

    def __init__(self, constraints: dict[str, float], fixed: dict, n_classes: int):
        self.constraints, self.fixed, self.n_classes = dict(constraints), dict(fixed), n_classes

    def costs(self, params: dict) -> dict[str, float]:
        from .config import TrainConfig
        from .costs import model_costs

        cfg = TrainConfig.from_dict({**self.fixed, **{k: v for k, v in params.items() if v is not None}, "data": ""})
        return model_costs(cfg.model_config(self.n_classes), latency="max_latency_ms" in self.constraints)

    def broken(self, params: dict) -> list[str]:
        from .costs import over_limits

        return over_limits(self.costs(params), self.constraints)

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in self.constraints.items())


def close_orphans(url: str, study_name: str) -> int:
    """After a finished search, mark the Optuna trials still RUNNING as FAIL; returns how many.

    A driver killed between asking Optuna for a trial and saving Tune's state leaves such a
    trial behind: the resumed search never runs it, and the dashboard would show it running
    forever. (Only once nothing is left to resume: an interrupted trial must stay RUNNING.)
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in orphans:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)
