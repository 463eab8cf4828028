"""Every private or developer Ray API the search uses, in one place.

Ray is pinned in pyproject.toml to the range these were read against (2.60); tests/test_tune.py
(`test_ray_private_apis_are_still_there`) fails when an upgrade moves or changes one of them.
When it does, fix it here, not at the call sites.

- `Tuner._local_tuner`: the restored TuneConfig and RunConfig of a `Tuner.restore`d search. Tune
  offers no public way to change them, and a resumed search needs to: this run's progress output,
  the time budget that is left, and the scheduler (below).
- ASHA's rungs (`AsyncHyperBandScheduler._brackets[i]._rungs`): Tune saves the searcher and the
  callbacks with an experiment but not the scheduler (`TuneController.save_to_dir`,
  ray-project/ray#30838), so a resumed search refills them from the recorded results.
- `OptunaSearch._ot_trials` / `_completed_trials` / `_ot_study`: the Optuna trial behind a Tune
  trial, which trials Optuna has been told about, and the study (study.StudySearch, which
  also drops a sampled configuration that breaks a search's cost limits and asks again).
- `DataParallelTrainer._create_default_callbacks` and Train's `DatasetsCallback`: Train starts a
  DatasetManager actor (a process of its own, ~2 CPU-seconds to start) for every run, datasets
  or not; a run given no Ray Datasets (data read into memory) goes without it.
- `TBXLoggerCallback._trial_writer`: the tensorboardX writer of a trial (monitor.EpochTBXLogger
  marks where a restarted trial's curve starts again).
- `CLIReporter._print`: where the progress table is printed (monitor.ProgressTable drops a line),
  and `CLIReporter._metric` / `_sort_by_metric`: Tune sorts finished trials by the metric and
  raises a TypeError on two that never reported it (trials the time budget stopped in their
  first epoch), so sorting is off while such trials exist. `CLIReporter._current_best_trial`:
  Tune's "Current best trial" line raises a KeyError when the best trial did not sample a
  conditional parameter; the line gets None for it instead.

- `ray.train.v2.api.callback.UserCallback`: Train V2's callback API (not exported publicly);
  train.MetricsLog writes every epoch's metrics through it.
- `TrainContext.get_storage()` (a DeveloperAPI) and its StorageContext's `storage_filesystem` /
  `experiment_fs_path`: the Train run's folder, where train.resume_checkpoint looks for a whole
  checkpoint that Train itself never recorded.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ray.train.v2.api.callback import UserCallback  # noqa: F401 - re-exported: train.MetricsLog's base
from ray.tune import CLIReporter


def restored_configs(tuner) -> tuple[Any, Any]:
    """(TuneConfig, RunConfig) of a Tuner made by `Tuner.restore`: changes to them apply to its fit()."""
    local = tuner._local_tuner
    return local._tune_config, local.get_run_config()


def asha_rungs(scheduler) -> list[tuple[float, dict[str, float]]]:
    """ASHA's rungs, lowest milestone first: (epoch, {trial_id: sign * metric}) with sign +1 for
    mode max and -1 for min. The dicts are the scheduler's own: filling them restores its state."""
    rungs = [rung for bracket in scheduler._brackets for rung in bracket._rungs]
    return sorted(rungs, key=lambda r: r[0])


def optuna_trial(searcher, trial_id: str):
    """The Optuna trial OptunaSearch asked for a Tune trial, or None."""
    return searcher._ot_trials.get(trial_id)


def optuna_study(searcher):
    """The Optuna study OptunaSearch asks and tells."""
    return searcher._ot_study


def forget_optuna_trial(searcher, trial_id: str) -> None:
    """Drop the Optuna trial behind a Tune trial (after telling Optuna how it ended), so that the
    next `suggest` for the same Tune trial asks Optuna for a new one."""
    searcher._ot_trials.pop(trial_id, None)


def optuna_told(searcher, trial_id: str) -> bool:
    """Whether OptunaSearch has already told Optuna that a trial ended."""
    return trial_id in searcher._completed_trials


def mark_optuna_told(searcher, trial_id: str) -> None:
    """Record, as OptunaSearch does after telling Optuna, that a trial's end is in the study."""
    searcher._completed_trials.add(trial_id)


def optuna_trial_finished(ot_trial) -> bool:
    """Whether the study's storage holds this Optuna trial as ended (Optuna's Trial keeps its
    storage and id as attributes of its own; not Ray's, but a private API all the same)."""
    return ot_trial.storage.get_trial(ot_trial._trial_id).state.is_finished()


def train_run_folder(storage=None) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of a Train run's folder, where its checkpoint_* folders are.
    `storage`: a Train StorageContext; by default this worker's (inside train_loop_per_worker)."""
    if storage is None:
        import ray.train

        storage = ray.train.get_context().get_storage()
    return storage.storage_filesystem, storage.experiment_fs_path


def without_dataset_manager(trainer):
    """The trainer, not starting Train's DatasetManager actor when it has no Ray Datasets to shard."""
    if trainer.datasets:
        return trainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback

    default = trainer._create_default_callbacks
    trainer._create_default_callbacks = lambda: [c for c in default() if not isinstance(c, DatasetsCallback)]
    return trainer


def tbx_writer(callback, trial):
    """The tensorboardX SummaryWriter Tune's TBXLoggerCallback keeps for a trial, or None."""
    return callback._trial_writer.get(trial)


class FilteredCLIReporter(CLIReporter):
    """Tune's CLIReporter, printing its tables without the lines that start with `drop_prefixes`,
    and sorting by the metric only when every finished trial has one; a parameter that the best
    trial did not sample (a conditional one) shows as None in the best-trial line."""

    drop_prefixes: tuple[str, ...] = ()

    def report(self, trials, done: bool, *sys_info: str):
        if not hasattr(self, "_sort_wanted"):
            self._sort_wanted = self._sort_by_metric
        self._sort_by_metric = self._sort_wanted and all(
            (t.last_result or {}).get(self._metric) is not None for t in trials if t.status == "TERMINATED")
        super().report(trials, done, *sys_info)

    def _current_best_trial(self, trials):
        best, metric = super()._current_best_trial(trials)
        if best is None:
            return best, metric
        config = dict(best.last_result.get("config") or {})
        for name in self._parameter_columns or []:
            config.setdefault(name, None)
        # all Tune's best-trial line reads of a trial
        return SimpleNamespace(trial_id=best.trial_id, last_result={**best.last_result, "config": config}), metric

    def _print(self, msg: str):
        super()._print("\n".join(ln for ln in msg.splitlines() if not ln.startswith(self.drop_prefixes)))
