"""The experiment folder of a search: the one module that knows its layout.

    search.json      the search's spec, its data and its Optuna storage (written when it starts)
    budget.json      the time budget and the time spent on it (rewritten while it runs)
    results.csv      one row per trial (written at the end)
    <trial folder>/  Tune's: params.json, result.json (one result per epoch), TensorBoard events
    experiment_state-*.json   Tune's: which trials exist and how they ended
    train_runs/<trial_id>/checkpoint_*   each trial's Train run: its checkpoints (checkpoint.py)
    bundle/          the exported best model (bundle.py) and evaluate's output

It finds the trials and their results, every whole checkpoint, the best one (checkpoint.best:
the best *checkpointed* epoch by the search's metric) and the Pareto front; on a local folder or
a URI alike (storage.location).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import META_FILE, best, read_meta
from .costs import pareto_front as front
from .errors import ConfigError
from .storage import UriPath, local_cache, location

TRAIN_RUNS = "train_runs"
SPEC_FILE = "search.json"
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
    found = best(checkpoints(exp_dir), metric, mode)
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
        b = best(found, metric, mode)
        if b is not None and isinstance(b[2]["metrics"].get(objective), (int, float)):
            points.append((b[2]["metrics"][metric], b[2]["metrics"][objective], *b))
    return points, front(points, 1.0 if mode == "max" else -1.0)


def has_spec(exp_dir: str | Path) -> bool:
    """Whether a search was started in this folder (its search.json exists)."""
    return (location(exp_dir) / SPEC_FILE).exists()


def save_spec(exp_dir: str | Path, saved: dict) -> None:
    """search.json: the search's spec, its data and its Optuna storage, as `load_spec_json` reads them."""
    (location(exp_dir) / SPEC_FILE).write_text(json.dumps(saved, indent=1))


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
        values = [r[metric] for r in self.history if r.get(metric) is not None]
        if not values:
            return None
        return max(values) if mode == "max" else min(values)

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
        best = None
        if hist is not None and metric in hist:
            col = hist[metric]
            best = float(col.max() if mode == "max" else col.min())
        m = r.metrics or {}
        row = {"trial_id": m.get("trial_id") or Path(r.path).name, **{k: v for k, v in (r.config or {}).items()},
               "epochs_run": m.get("epoch"), f"last_{metric}": m.get(metric), f"best_{metric}": best,
               "val_loss": m.get("val_loss"), "train_loss": m.get("train_loss"),
               "clips_per_s": m.get("clips_per_s"), "status": "error" if r.error else "done"}
        rows.append(row)
    if rows:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with (location(exp_dir) / RESULTS_FILE).open("w", newline="") as f:  # a folder or a URI
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    return rows


def write_budget(exp_dir: str | Path, state: dict) -> None:
    """budget.json: the search's time budget and the seconds spent on it so far (rewritten every few
    seconds while it runs), so that `--resume` continues with what was left, even after a kill."""
    path = location(exp_dir) / BUDGET_FILE
    if isinstance(path, UriPath):  # an object store writes an object whole
        path.write_text(json.dumps(state, indent=1))
        return
    tmp = path.with_name(BUDGET_FILE + ".tmp")  # a kill mid-write must not lose the time spent
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


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
