"""Watching a search while it runs: Tune's progress table and TensorBoard.

Everything here plugs into the Tuner that tune.py builds:
- `progress_reporter`: Tune's own progress table, with the columns that matter (val_accuracy,
  val_loss, epoch, clips/s) instead of the ones Ray guesses. Ray 2.60's new output engine picks
  its columns itself (the first four metrics reported) and ignores a reporter, so the search
  asks for the classic engine (`RAY_AIR_NEW_OUTPUT=0`), whose `CLIReporter` takes columns.
- `EpochTBXLogger`: Tune's TensorBoard logger, stepped by epoch. Tune steps by
  `training_iteration`, which restarts at 1 when a search is resumed; epochs do not.

The Optuna study (the searcher, its storage, optuna-dashboard) is study.py's.
"""

from __future__ import annotations

import os
import time

from ray.tune import CLIReporter
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from ..core.ray_private import FilteredCLIReporter, tbx_writer

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
