"""Finding things in an experiment folder: checkpoints of every trial, the best one, the table.

Tune keeps each trial's metrics; the weights live in each trial's Train run under
`train_runs/<trial_id>/checkpoint_*` (a checkpoint folder: see checkpoint.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import META_FILE, best, read_meta
from .costs import pareto_front as front
from .errors import ConfigError
from .storage import UriPath, local_cache, location

TRAIN_RUNS = "train_runs"
SPEC_FILE = "search.json"
BUDGET_FILE = "budget.json"


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


def trial_results(exp_dir: str | Path) -> dict[str, list[dict]]:
    """Every result Tune recorded for each trial (its result.json), in the order they came: what
    ASHA saw. A line cut short by a killed driver is skipped."""
    out: dict[str, list[dict]] = {}
    for f in sorted(location(exp_dir).glob("*/result.json")):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and r.get("trial_id"):
                out.setdefault(r["trial_id"], []).append(r)
    return out


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
    for name in (SPEC_FILE, "results.csv"):
        if (exp / name).exists():
            (exp / name).download(local / name)
    trial_id, ckpt, _ = best_checkpoint(exp, metric, mode)
    ckpt.download(local / TRAIN_RUNS / trial_id / ckpt.name)
    return local
