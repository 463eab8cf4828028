"""Finding things in an experiment folder: checkpoints of every trial, the best one, the table.

Tune keeps each trial's metrics; the weights live in each trial's Train run under
`train_runs/<trial_id>/checkpoint_*`, each with a meta.json saying its epoch and metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .config import ConfigError
from .storage import UriPath, local_cache, location

TRAIN_RUNS = "train_runs"
SPEC_FILE = "search.json"
BUDGET_FILE = "budget.json"


def read_meta(ckpt: "Path | UriPath") -> tuple[dict | None, str]:
    """A checkpoint's meta.json if every file it lists is there in full, else (None, why not).

    A crash during an upload can leave a meta.json beside a cut-short model.pt: such a checkpoint
    must never be exported or picked as the best.
    """
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None, "meta.json is missing or cut short"
    for name, size in (meta.get("files") or {}).items():  # older checkpoints list no files
        try:
            got = (ckpt / name).size() if isinstance(ckpt, UriPath) else (ckpt / name).stat().st_size
        except OSError:
            return None, f"{name} is missing"
        if got != size:
            return None, f"{name} is cut short ({got} of {size} bytes)"
    return meta, ""


def checkpoints(exp_dir: str | Path) -> list[tuple[str, Path, dict]]:
    """(trial_id, checkpoint folder, meta) for every whole checkpoint kept in the experiment."""
    root = location(exp_dir) / TRAIN_RUNS  # a local folder or a URI (s3://...)
    out = []
    for meta_file in sorted(root.glob("*/checkpoint_*/meta.json")):
        meta, _ = read_meta(meta_file.parent)
        if meta:  # a checkpoint cut short by a crash is not a candidate
            out.append((meta_file.parent.parent.name, meta_file.parent, meta))
    return out


def best_checkpoint(exp_dir: str | Path, metric: str = "val_accuracy", mode: str = "max") -> tuple[str, Path, dict]:
    found = [c for c in checkpoints(exp_dir) if metric in c[2].get("metrics", {})]
    if not found:
        raise ConfigError(f"{exp_dir}: no checkpoint with metric '{metric}' (is this an experiment folder of a search that ran at least 2 epochs?)")
    sign = 1 if mode == "max" else -1
    return max(found, key=lambda c: (sign * c[2]["metrics"][metric], c[2]["epoch"]))


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
