"""The search's Optuna study: where it is stored, the searcher that asks and tells it, and a study
rebuilt from Tune's results when the stored one is gone.

- `StudySearch`: OptunaSearch that stores the study in an RDB (SQLite in the experiment folder
  by default) or a journal file (`open_storage`), so that optuna-dashboard shows the search live; each Optuna trial carries its
  Tune trial id, and intermediate values are stepped by epoch (Tune's `training_iteration`
  restarts at 1 when a search is resumed; epochs do not). It also keeps the time budget (no new
  trial once the time left cannot fit a first rung) and the cost limits (`CostLimits`).
- `load_study` / `study_from_trials`: the study for the report's importances.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ray.tune.result import TRAINING_ITERATION
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ..core import log
from ..core.errors import ConfigError
from ..core.ray_private import (forget_optuna_trial, mark_optuna_told, optuna_study, optuna_told, optuna_trial,
                          optuna_trial_finished)
from ..core.storage import hides_password, is_uri, redact, redact_text

if TYPE_CHECKING:
    from .experiment import Trial

logger = log.get(__name__)

OPTUNA_DB = "optuna.db"
TRIAL_ID_ATTR = "tune_trial_id"  # user attribute of each Optuna trial: its Tune trial id
REJECTED_ATTR = "over_limits"  # user attribute of an Optuna trial never run: the limits it broke
MAX_REJECTED = 500  # samples in a row over the limits before the search gives up starting trials


def study_storage(url: str | None, exp_dir) -> str | None:
    """The URL a new search keeps its study at: `url` (a journal file's path made absolute), or
    SQLite in a local experiment folder.

    Checked now, so a mistyped URL is one line before Ray starts; None (a study in memory) for
    an experiment on a URI such as s3://, where a SQLite file cannot live.
    """
    import optuna

    if url is None:
        if is_uri(exp_dir):
            return None
        url = f"sqlite:///{Path(exp_dir).resolve() / OPTUNA_DB}"
    elif is_journal(url):
        url = str(Path(url).expanduser().resolve())
    storage = open_storage(url)
    name = Path(str(exp_dir)).name
    if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        raise ConfigError(f"--optuna-storage {redact(url)} already holds a study named {name!r}: pick another --name")
    return url


def is_journal(url: str) -> bool:
    """A file path (no scheme://) names a journal file: Optuna's JournalStorage, made for NFS."""
    return "://" not in url


def sqlite_file(url: str) -> Path | None:
    """The file of a sqlite:/// URL, else None."""
    return Path(url.split("sqlite:///", 1)[1].split("?", 1)[0]) if url.startswith("sqlite:///") else None


def open_storage(url: str):
    """The Optuna storage of `url`, or one clear line saying why it does not work.

    A SQLAlchemy URL opens an RDBStorage (SQLite, PostgreSQL, MySQL); a file path opens a
    JournalStorage on that file. SQLite locks its file with fcntl, which many NFS servers break:
    Optuna's docs warn against SQLite on NFS, and its journal file (locked by symlinks) is meant
    for a folder many machines share. The password in a URL is never shown (storage.redact).
    """
    import optuna

    try:
        if is_journal(url):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url))
        return optuna.storages.RDBStorage(url)
    except Exception as e:  # sqlalchemy: bad URL, missing driver, unreachable server, ...
        why = redact_text(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", url)
        if sqlite_file(url) and sqlite_file(url).is_file() and "not a database" in why:
            raise ConfigError(f"{sqlite_file(url)}: the Optuna study file is corrupt ({why}): restore it from a "
                              f"backup, or start a new search with another --name (this folder's checkpoints "
                              f"still export); SQLite on NFS is a known cause: there, use --optuna-storage "
                              f"PATH.journal") from None
        raise ConfigError(f"--optuna-storage {redact(url)}: cannot open it as an Optuna storage ({why})") from None


def check_study(url: str, study_name: str) -> None:
    """Before a resume: the stored study opens and holds this search's study, or one line saying
    what to do (rather than a traceback from deep inside Tune's restore). A URL whose password
    search.json hides is not checked here: Tune's saved searcher holds its own connection."""
    import optuna

    if hides_password(url):
        return
    storage = open_storage(url)
    if study_name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        where = sqlite_file(url) or redact(url)
        raise ConfigError(f"{where}: holds no Optuna study named {study_name!r} (replaced or emptied?): restore "
                          f"it from a backup, or start a new search with another --name")


class StudySearch(OptunaSearch):
    """OptunaSearch whose Optuna trials name their Tune trial and count intermediate values by epoch.

    The study itself lives in the storage given to OptunaSearch; the searcher's own state
    (pickled by Tune with the experiment) points to the same storage and study, so a resumed
    search keeps adding to it.

    `budget` (a plan.TimeBudget, or None) is this run's clock: once the time left is shorter than
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
        logger.warning(f"no configuration within the search's limits ({self.limits}) in {MAX_REJECTED} samples in "
                       f"a row: no more trials start")
        return Searcher.FINISHED

    def finished_in_study(self, trial_id: str) -> bool:
        """Whether the study already holds this trial as ended: a driver killed in the seconds between
        Optuna's record (written at once) and Tune's saved state (every few seconds) resumes a trial
        that Optuna has closed; its further results go to Tune alone (Optuna refuses them)."""
        ot_trial = optuna_trial(self, trial_id)
        if ot_trial is None or optuna_told(self, trial_id):
            return False
        return optuna_trial_finished(ot_trial)

    def on_trial_result(self, trial_id: str, result: dict):
        if self.finished_in_study(trial_id):
            return
        if "epoch" in result:
            result = {**result, TRAINING_ITERATION: result["epoch"]}
            if self.budget is not None:
                self.budget.trial_reached(trial_id, result["epoch"])
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        # Tune hands a trial's last result to on_trial_complete only: record it as an epoch too.
        if self.finished_in_study(trial_id):
            mark_optuna_told(self, trial_id)
            return
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

    def __init__(self, constraints: dict[str, float], fixed: dict, n_classes: int, clip_samples: int | None = None):
        self.constraints, self.fixed, self.n_classes = dict(constraints), dict(fixed), n_classes
        self.clip_samples = clip_samples  # the data's window: a 1.5 s model costs 1.5x the MACs

    def costs(self, params: dict) -> dict[str, float]:
        from ..training.config import TrainConfig
        from ..modeling.costs import model_costs

        cfg = TrainConfig.from_dict({**self.fixed, **{k: v for k, v in params.items() if v is not None}, "data": ""})
        return model_costs(cfg.model_config(self.n_classes, self.clip_samples), latency="max_latency_ms" in self.constraints)

    def broken(self, params: dict) -> list[str]:
        from ..modeling.costs import over_limits

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

    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    except (ConfigError, KeyError) as e:  # e.g. a password search.json hides and the command line did not give
        logger.warning(f"warning: Optuna trials left running not closed: {e}")
        return 0
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in orphans:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


# ----------------------------------------------------------------------------- for the report

def load_study(exp_dir: Path, saved: dict):
    """The search's Optuna study from its storage, or None (random search, study in memory, gone)."""
    import optuna

    url = saved.get("optuna_storage")
    if not url:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=exp_dir.name, storage=open_storage(url))
    except Exception:  # noqa: BLE001 - a missing file or server: importances come from the trials instead
        return None


def study_from_trials(trials: list[Trial], spec: dict, metric: str, mode: str):
    """An in-memory study with each ended trial's last metric, as Tune told its searcher."""
    import optuna

    from .search_space import to_tune_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = OptunaSearch.convert_search_space(to_tune_space(spec["search"]))
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for t in trials:
        if t.status == "TERMINATED" and t.last.get(metric) is not None:
            sampled = [k for k in space if k in t.config]  # a conditional parameter only where sampled
            study.add_trial(optuna.trial.create_trial(params={k: t.config[k] for k in sampled},
                                                      distributions={k: space[k] for k in sampled}, value=t.last[metric]))
    return study
