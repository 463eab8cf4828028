"""The experiment folder of a search: the one module that knows its layout.

    search.json      the search's spec, its data and its Optuna storage (written when it starts)
    budget.json      the time budget and the time spent on it (rewritten while it runs)
    results.csv      one row per trial (written at the end)
    driver.lock      who runs the search now: host, pid, since when (`lock_experiment`)
    <trial folder>/  Tune's: params.json, result.json (one result per epoch), TensorBoard events
    experiment_state-*.json   Tune's: which trials exist and how they ended
    train_runs/<trial_id>/checkpoint_*   each trial's Train run: its checkpoints (checkpoint.py)
    bundle/          the exported best model (bundle.py) and evaluate's output

It finds the trials and their results, every whole checkpoint, the best one (checkpoint.best:
the best *checkpointed* epoch by the search's metric) and the Pareto front, all ranked by the one
definition of best (ranking.best, ranking.pareto_front, named here as `best`); on a local folder or
a URI alike (storage.location). The files it writes are written whole (storage.write_atomic),
and one driver at a time may run a search in it (`lock_experiment`).
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..training import checkpoint
from ..training.checkpoint import META_FILE, read_meta
from ..core.errors import ConfigError
from ..core.ranking import best, ranked, score  # noqa: F401 - `experiment.best`: the one definition, named here too
from ..core.ranking import pareto_front as front
from ..core.storage import UriPath, local_cache, location, pid_alive, redact, write_atomic
from ..core import log as logs

log = logs.get(__name__)

TRAIN_RUNS = "train_runs"
SPEC_FILE = "search.json"
LOCK_FILE = "driver.lock"
BUDGET_FILE = "budget.json"
RESULTS_FILE = "results.csv"


def checkpoints(exp_dir: str | Path) -> list[tuple[str, Path, dict]]:
    """(trial_id, checkpoint folder, meta) for every whole checkpoint kept in the experiment."""
    root = location(exp_dir) / TRAIN_RUNS  # a local folder or a URI (s3://...)
    out = []
    for meta_file in sorted(root.glob(f"*/checkpoint_*/{META_FILE}")):
        meta, _ = read_meta(meta_file.parent)
        if meta:  # a checkpoint cut short by a crash is not a candidate
            out.append((meta_file.parent.parent.name, meta_file.parent, meta))
    return out


def best_checkpoint(exp_dir: str | Path, metric: str = "val_accuracy", mode: str = "max") -> tuple[str, Path, dict]:
    """The best whole checkpoint of the search by its metric: (trial_id, folder, meta)."""
    found = checkpoint.best(checkpoints(exp_dir), metric, mode)
    if found is None:
        raise ConfigError(f"{exp_dir}: no checkpoint with metric '{metric}' (is this an experiment folder of a search that ran at least 2 epochs?)")
    return found


def pareto_front(exp_dir: str | Path, metric: str, mode: str, objective: str) -> tuple[list[tuple], list[tuple]]:
    """(every trial's best whole checkpoint, the ones on the front of `metric` against `objective`),
    each as (metric value, cost, trial_id, folder, meta); the front cheapest first."""
    by_trial: dict[str, list] = {}
    for c in checkpoints(exp_dir):
        by_trial.setdefault(c[0], []).append(c)
    points = []
    for found in by_trial.values():
        b = checkpoint.best(found, metric, mode)
        if b is not None and score(b[2]["metrics"].get(objective)) is not None:
            points.append((b[2]["metrics"][metric], b[2]["metrics"][objective], *b))
    return points, front(points, mode)


def has_spec(exp_dir: str | Path) -> bool:
    """Whether a search was started in this folder (its search.json exists)."""
    return (location(exp_dir) / SPEC_FILE).exists()


def save_spec(exp_dir: str | Path, saved: dict) -> None:
    """search.json: the search's spec, its data and its Optuna storage, as `load_spec_json` reads them.
    The storage URL's password is written as *** (the file is shared with the report)."""
    if saved.get("optuna_storage"):
        saved = {**saved, "optuna_storage": redact(saved["optuna_storage"])}
    write_atomic(location(exp_dir) / SPEC_FILE, json.dumps(saved, indent=1))


def load_spec_json(exp_dir: str | Path) -> dict:
    path = location(exp_dir) / SPEC_FILE
    if not path.exists():
        raise ConfigError(f"{exp_dir}: not an audionet-ray experiment folder (no {SPEC_FILE})")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        saved = None
    if not isinstance(saved, dict) or not isinstance(saved.get("spec"), dict):
        raise ConfigError(f"{path}: cut short or not a search's {SPEC_FILE} (a crash or a full disk while the "
                          f"search started?): start the search again")
    return saved


def _results(path) -> list[dict]:
    """One trial's result.json: every result Tune recorded, in order. A line cut short by a killed
    driver is skipped."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict):
            out.append(r)
    return out


def trial_results(exp_dir: str | Path) -> dict[str, list[dict]]:
    """Every result Tune recorded for each trial, in the order they came: what ASHA saw."""
    out: dict[str, list[dict]] = {}
    for f in sorted(location(exp_dir).glob("*/result.json")):
        for r in _results(f):
            if r.get("trial_id"):
                out.setdefault(r["trial_id"], []).append(r)
    return out


# ----------------------------------------------------------------------------- Tune's trials

@dataclass
class Trial:
    trial_id: str
    config: dict
    status: str  # Tune's: TERMINATED, ERROR, RUNNING, PENDING, PAUSED
    history: list[dict] = field(default_factory=list)  # one result per epoch, by epoch

    def ending(self, max_epochs: int) -> str:
        """finished | stopped (by the scheduler, before max_epochs) | failed | unfinished."""
        if self.status == "ERROR":
            return "failed"
        if self.status != "TERMINATED":
            return "unfinished"
        return "finished" if self.history and self.history[-1]["epoch"] >= max_epochs else "stopped"

    def best(self, metric: str, mode: str) -> float | None:
        """The trial's best value of `metric` over its epochs (None: it reported none)."""
        row = best(self.history, metric, mode)
        return None if row is None else row[metric]

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def _latest_state(exp_dir: Path) -> dict:
    states = sorted(exp_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        raise ConfigError(f"{exp_dir}: no Tune experiment state (experiment_state-*.json) yet: has the search started?")
    for state in reversed(states):  # the newest that is whole: a crash or a full disk can cut the last one short
        try:
            data = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("trial_data"), list):
            return data
    raise ConfigError(f"{states[-1]}: cut short or unreadable (a crash or a full disk?): "
                      f"resume the search (python -m audionet_ray.tune --resume {exp_dir}) to write it again")


def _history(trial_dir: Path) -> list[dict]:
    """A trial's results by epoch; after a resume an epoch may come twice: the last counts."""
    by_epoch = {r["epoch"]: r for r in _results(trial_dir / "result.json") if "epoch" in r}
    return [by_epoch[e] for e in sorted(by_epoch)]


def load_trials(exp_dir: Path) -> list[Trial]:
    """Every trial Tune knows, in the order it created them."""
    trials = []
    for entry in _latest_state(exp_dir)["trial_data"]:
        t = json.loads(entry[0] if isinstance(entry, list) else entry)
        trials.append(Trial(t["trial_id"], t.get("config") or {}, t.get("status", "?"),
                            _history(exp_dir / t.get("relative_logdir", ""))))
    return trials


def write_results(results, exp_dir: str | Path, metric: str, mode: str) -> list[dict]:
    """results.csv from a ResultGrid: one row per trial, its parameters, last and best metrics; the rows."""
    rows = []
    for r in results:
        hist = r.metrics_dataframe
        values = hist[metric].tolist() if hist is not None and metric in hist else []
        top = best(values, metric, mode, key=lambda v: v)  # the trial's best epoch (NaN never is)
        top = None if top is None else float(top)
        m = r.metrics or {}
        row = {"trial_id": m.get("trial_id") or Path(r.path).name, **{k: v for k, v in (r.config or {}).items()},
               "epochs_run": m.get("epoch"), f"last_{metric}": m.get(metric), f"best_{metric}": top,
               "val_loss": m.get("val_loss"), "train_loss": m.get("train_loss"),
               "clips_per_s": m.get("clips_per_s"), "status": "error" if r.error else "done"}
        rows.append(row)
    if rows:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        write_atomic(location(exp_dir) / RESULTS_FILE, text.getvalue())  # a folder or a URI
    return rows


def write_budget(exp_dir: str | Path, state: dict) -> None:
    """budget.json: the search's time budget and the seconds spent on it so far (rewritten every few
    seconds while it runs), so that `--resume` continues with what was left, even after a kill."""
    write_atomic(location(exp_dir) / BUDGET_FILE, json.dumps(state, indent=1))  # a kill must not lose the time spent


def read_budget(exp_dir: str | Path) -> dict:
    """What `write_budget` last wrote; {} for a search that has not run yet (or has no budget)."""
    path = location(exp_dir) / BUDGET_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        raise ConfigError(f"{path}: not valid JSON; delete it to resume with the whole time budget") from None


def local_experiment(exp_dir: "str | os.PathLike", metric: str = "val_accuracy", mode: str = "max") -> Path:
    """An experiment on a URI, reduced to what export needs, as a local folder.

    search.json, results.csv and the best checkpoint are copied into a local cache with the
    experiment's own layout (train_runs/<trial>/checkpoint_*); a local experiment is returned
    as it is.
    """
    exp = location(exp_dir)
    if not isinstance(exp, UriPath):
        return exp
    local = local_cache(exp, "experiments")
    for name in (SPEC_FILE, RESULTS_FILE):
        if (exp / name).exists():
            (exp / name).download(local / name)
    trial_id, ckpt, _ = best_checkpoint(exp, metric, mode)
    ckpt.download(local / TRAIN_RUNS / trial_id / ckpt.name)
    return local


# ----------------------------------------------------------------------------- one driver at a time

_HELD: dict[str, "DriverLock"] = {}  # the locks this process holds, by lock file


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _who(holder: dict) -> str:
    if not holder:
        return "one starting now"
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"


def _busy(path, holder: dict, hint: str = "") -> ConfigError:
    return ConfigError(f"{path.parent}: another search driver runs this experiment ({_who(holder)}): "
                       f"wait for it to end or stop it before --resume{hint}")


def _holder(text: str) -> dict:
    """The lock's content, or {} for a lock released (empty) or cut short."""
    try:
        holder = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _refuse_or_take_over(path, holder: dict, held_by_kernel: bool) -> None:
    """A lock that names a driver: refuse while that driver may still run, else say it is taken over.

    `held_by_kernel`: the file lock was granted, so no process holds it: the driver named is gone."""
    if not holder:
        return
    same_host = holder.get("host") == socket.gethostname()
    pid = holder.get("pid")
    if not held_by_kernel and not (same_host and isinstance(pid, int) and not pid_alive(pid)):
        raise _busy(path, holder, "" if same_host else f"; if it no longer runs (nothing here can check "
                                                       f"another host), delete {path}")
    log.warning(f"note: took over {path}: the driver that held it ({_who(holder)}) ended without releasing it "
                f"(killed?)")


class DriverLock:
    """This process's hold on an experiment folder, released by `release` or at exit.

    A local (or NFS) folder: driver.lock is held with flock, which the kernel releases when the
    process dies however it dies, so a lock left by a killed driver is taken over; the file names
    the holder (host, pid, since) for the message a second driver gets. Where flock is not
    supported, a holder on this host is judged alive by its pid. A URI (s3://...): an object store
    has neither locks nor an atomic create-if-absent here, so driver.lock is an object naming the
    holder, written after checking that none is there (two drivers starting in the same second can
    both pass), and a holder on another host cannot be checked: it is refused until deleted.
    """

    def __init__(self, path, fd: int | None):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if _HELD.get(str(self.path)) is not self:
            return
        del _HELD[str(self.path)]
        if self.fd is None:  # a URI: delete the object if it is still ours
            if _holder(self.path.read_text() if self.path.exists() else "").get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            return
        import fcntl

        os.ftruncate(self.fd, 0)  # empty: released, not left by a killed driver
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _lock_local(path: Path) -> DriverLock:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        granted = True
    except BlockingIOError:
        granted = False
    except OSError:  # a filesystem without flock: the holder's pid decides
        granted = None
    holder = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
    try:
        if granted is False:
            raise _busy(path, holder)
        _refuse_or_take_over(path, holder, held_by_kernel=bool(granted))
    except ConfigError:
        os.close(fd)
        raise
    data = json.dumps(_me()).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    return DriverLock(path, fd)


def _lock_uri(path: UriPath) -> DriverLock:
    _refuse_or_take_over(path, _holder(path.read_text()) if path.exists() else {}, held_by_kernel=False)
    path.write_text(json.dumps(_me()))
    return DriverLock(path, None)


def lock_experiment(exp_dir: str | Path) -> DriverLock:
    """Take the experiment folder for this search driver, or one line naming the driver that has it.

    Two drivers on one folder (the same --name twice, or --resume while the first still runs)
    would write the same Tune state, checkpoints and study at once."""
    path = location(exp_dir) / LOCK_FILE
    if str(path) in _HELD:  # an earlier search in this process (tests call main twice)
        _HELD[str(path)].release()
    lock = _lock_uri(path) if isinstance(path, UriPath) else _lock_local(path)
    _HELD[str(path)] = lock
    atexit.register(lock.release)
    return lock


# ----------------------------------------------------------------------------- the experiments of a storage folder

BUNDLE_DIR = "bundle"  # where a search exports its best model (tune.export_best), and evaluate's output with it


def search_metric(exp_dir: str | Path) -> tuple[str, str]:
    """(metric, mode) the search ranks, stops and exports by, as its search.json says."""
    tune = load_spec_json(exp_dir)["spec"].get("tune") or {}
    metric, mode = tune.get("metric"), tune.get("mode")
    if not isinstance(metric, str) or mode not in ("max", "min"):
        raise ConfigError(f"{exp_dir}: its {SPEC_FILE} names no metric and mode (tune.metric, tune.mode)")
    return metric, mode


def search_state(exp_dir: str | Path) -> str:
    """running (a live driver holds driver.lock, or one on another host that nothing here can check),
    interrupted (its driver was killed, stopped before results.csv, or left trials unended: `--resume`
    continues it) or finished (results.csv written, every trial ended, the lock released)."""
    exp = location(exp_dir)
    lock = exp / LOCK_FILE
    holder = _holder(lock.read_text()) if lock.exists() else {}
    if holder:
        pid = holder.get("pid")
        gone = holder.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid)
        return "interrupted" if gone else "running"
    if not (exp / RESULTS_FILE).exists():
        return "interrupted"
    try:
        statuses = {t.status for t in load_trials(exp)}
    except ConfigError:  # no Tune state: it never got to run a trial
        return "interrupted"
    return "finished" if statuses <= {"TERMINATED", "ERROR"} else "interrupted"


def bundle_of(exp_dir: str | Path) -> "Path | UriPath | None":
    """The experiment's exported bundle folder, or None where there is none (or it is broken)."""
    from ..detection.bundle import CONFIG_FILE, BundleError, read_config

    folder = location(exp_dir) / BUNDLE_DIR
    if isinstance(folder, UriPath):  # copied there by the search: its config.json is the last file written
        return folder if (folder / CONFIG_FILE).exists() else None
    try:
        read_config(folder)
    except BundleError:
        return None
    return folder


def experiments(storage: str | Path) -> list:
    """The experiment folders (those with a search.json) directly under a storage folder, by name."""
    root = location(storage)
    return sorted(p.parent for p in root.glob(f"*/{SPEC_FILE}")) if root.is_dir() else []


@dataclass
class Summary:
    """One experiment at a glance (`audionet-ray runs`)."""

    name: str
    path: "Path | UriPath"
    state: str  # search_state's
    trials: int  # the trials Tune created
    metric: str | None = None
    mode: str | None = None
    best: float | None = None  # the best checkpoint's value of `metric` (best_checkpoint)
    best_trial: str | None = None
    bundle: "Path | UriPath | None" = None
    problem: str | None = None  # why part of it could not be read, in one line


def summarize(exp_dir: str | Path) -> Summary:
    """What `runs` shows of an experiment; a folder it cannot read says why in `problem`, never raises."""
    exp = location(exp_dir)
    s = Summary(exp.name, exp, search_state(exp), 0, bundle=bundle_of(exp))
    try:
        s.trials = len(trial_results(exp)) if isinstance(exp, UriPath) else len(load_trials(exp))
    except ConfigError:  # no Tune state yet
        s.trials = len(trial_results(exp))
    try:
        s.metric, s.mode = search_metric(exp)
        s.best_trial, _, meta = best_checkpoint(exp, s.metric, s.mode)
        s.best = meta["metrics"][s.metric]
    except ConfigError as e:
        s.problem = str(e) if s.metric is None else None  # no checkpoint yet is no problem, only no score
    return s
