"""The report's figures, drawn with matplotlib's object API (no pyplot state, no display needed).

Each function draws one PNG from plain data and returns its path; report.py gathers the data.
A trial is a `report.Trial`: its id, sampled parameters, per-epoch history and how it ended.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter
from matplotlib.lines import Line2D

DPI = 100
END_MARKERS = {"finished": ("o", "ran every epoch"), "stopped": ("x", "stopped early by the scheduler"),
               "failed": ("X", "failed"), "unfinished": (">", "not finished (interrupted or running)")}
MATRIX_CLASSES = 40  # a confusion matrix draws at most this many classes (19 x 18 inches)
MAX_LABEL = 40  # characters of a class name on an axis


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i if n <= 10 else i / max(1, n - 1)) for i in range(n)]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", format="png")
    return path


def learning_curves(trials: list, metric: str, max_epochs: int, best_id: str | None, path: Path) -> Path:
    """val_accuracy and val_loss per epoch, one line per trial; the marker at its end says how it ended."""
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = [metric] + [m for m in ("val_accuracy", "val_loss") if m != metric][:1]
    for ax, name in zip(axes, panels):
        for trial, color in zip(trials, _colors(len(trials))):
            pts = [(r["epoch"], r[name]) for r in trial.history if name in r]
            if not pts:
                continue
            x, y = zip(*pts)
            best = trial.trial_id == best_id
            ax.plot(x, y, color=color, lw=2.8 if best else 1.3, alpha=1 if best else 0.8,
                    label=f"{trial.trial_id} (best)" if best else None)
            marker = END_MARKERS[trial.ending(max_epochs)][0]
            ax.plot(x[-1], y[-1], marker=marker, color=color, ms=10 if marker in "xX" else 6, mew=2.2, ls="none")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_xlim(0.8, max_epochs + 0.2)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    endings = {t.ending(max_epochs) for t in trials if t.history}
    handles = [Line2D([], [], color="0.3", marker=m, ls="none", ms=8, mew=2, label=label)
               for e, (m, label) in END_MARKERS.items() if e in endings]
    handles += axes[0].get_legend_handles_labels()[0]
    axes[0].legend(handles=handles, fontsize=8, loc="best")
    fig.suptitle(f"Learning curves of {len(trials)} trials")
    return _save(fig, path)


def params_vs_metric(trials: list, search: dict, metric: str, mode: str, max_epochs: int,
                     best_id: str | None, path: Path, log_scale: frozenset[str] = frozenset()) -> Path:
    """Each sampled hyperparameter against the trial's best metric (a log axis for the names in
    `log_scale`: those sampled on one, which the caller knows from the space's distributions)."""
    names = list(search)
    cols = min(3, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        dist = next(iter(search[name]))
        choices = [str(c) for c in search[name][dist]] if dist == "choice" else None
        for trial in trials:
            value = trial.best(metric, mode)
            if value is None or name not in trial.config:
                continue
            x = trial.config[name]
            if choices is not None:
                x = choices.index(str(x)) if str(x) in choices else len(choices)
            marker = END_MARKERS[trial.ending(max_epochs)][0]
            best = trial.trial_id == best_id
            ax.plot(x, value, marker="*" if best else marker, ms=16 if best else 8, mew=2, ls="none",
                    color="tab:red" if best else "tab:blue", alpha=0.9)
        if choices is not None:
            ax.set_xticks(range(len(choices)), choices)
            ax.set_xlim(-0.5, len(choices) - 0.5)
        elif name in log_scale:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))  # 1e-4, 3e-4, 1e-3: a range of one decade
            ax.xaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
            ax.xaxis.set_minor_formatter(NullFormatter())  # labels on minor ticks overlap within a decade
        ax.set_xlabel(f"{name} ({dist})")
        ax.set_ylabel(f"best {metric}")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"Hyperparameters against {metric} (red star: best trial; x: stopped early)")
    return _save(fig, path)


def importances(values: dict[str, float], evaluator: str, n_complete: int, path: Path) -> Path:
    """Horizontal bars, most important on top."""
    names = list(values)[::-1]
    fig = Figure(figsize=(7, 0.55 * len(names) + 1.6), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlim(0, max(1.0, max(values.values()) * 1.15))
    ax.set_xlabel("importance (sums to 1)")
    ax.set_title(f"Hyperparameter importances ({evaluator}, {n_complete} completed trials)")
    return _save(fig, path)


def pareto_front(points: list[tuple], front: list[tuple], metric: str, objective: str, path: Path) -> Path:
    """Each trial's best checkpoint as (cost, metric); the front as a step line, its points named."""
    fig = Figure(figsize=(7, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.scatter([p[1] for p in points], [p[0] for p in points], color="tab:gray", alpha=0.6, label="a trial's best checkpoint")
    ax.step([p[1] for p in front], [p[0] for p in front], where="post", color="tab:blue", lw=2)
    ax.scatter([p[1] for p in front], [p[0] for p in front], color="tab:blue", zorder=3, label="Pareto front")
    for p in front:
        ax.annotate(str(p[2])[:8], (p[1], p[0]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    if min(p[1] for p in points) > 0 and max(p[1] for p in points) > 10 * min(p[1] for p in points):
        ax.set_xscale("log")
    ax.set_xlabel(f"{objective} (lower is cheaper)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"{metric} against {objective}: {len(front)} of {len(points)} trials on the front")
    return _save(fig, path)


def plain(text: str) -> str:
    """`text` drawn as it is: matplotlib reads a pair of `$` as mathtext (and raises on what does
    not parse, e.g. a class named `$x_$`), so each `$` is escaped; nothing else is special outside
    mathtext (`_`, `\\`, `^` stay literal)."""
    return str(text).replace("$", r"\$")


def most_confused(cm: np.ndarray, k: int) -> np.ndarray:
    """The indices (in class order) of the k classes with the most confusions, as the true class
    or as the prediction; the most clips where nothing is confused."""
    off = cm.sum(axis=0) + cm.sum(axis=1) - 2 * np.diag(cm)
    order = np.lexsort((-cm.sum(axis=1), -off))  # most confused first, then most clips; stable
    return np.sort(order[:k])


def confusion_matrix(cm: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """Counts per (true, predicted) class; colour is the share of the true class's clips.

    At most MATRIX_CLASSES classes are drawn (a figure of a thousand rows is neither readable nor
    small): beyond that, the ones most confused, and the title says so; every count stays in the
    caller's JSON.
    """
    n = len(classes)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    if n > MATRIX_CLASSES:
        keep = most_confused(cm, MATRIX_CLASSES)
        cm, share, classes = cm[np.ix_(keep, keep)], share[np.ix_(keep, keep)], [classes[i] for i in keep]
        title = f"{title}\nthe {len(keep)} of {n} classes most confused (every count is in the JSON)"
    shown = len(classes)
    size = max(4.5, 0.45 * shown + 2)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    names = [plain(c)[:MAX_LABEL] for c in classes]
    ax.set_xticks(range(shown), names, rotation=60, ha="right", fontsize=8 if shown > 12 else 10)
    ax.set_yticks(range(shown), names, fontsize=8 if shown > 12 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, j in zip(*np.nonzero(cm)):
        ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7 if shown > 12 else 9,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_title(plain(title))  # a trial or checkpoint folder's name may hold a `$`
    return _save(fig, path)


def det_curve(result: dict, path: Path) -> Path:
    """False-reject rate against false accepts per hour as the threshold moves (a DET curve): one
    thin line per keyword, the thick one all keywords together; the operating point is marked.

    Zero false accepts cannot sit on a log axis: the x axis is linear below one false accept in
    the whole keyword-free audio (1/H per hour) and logarithmic above.
    """
    curve, hours = result["curve"], result["keyword_free_hours"]
    resolution = 1.0 / hours if hours > 0 else 1.0
    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    ax = fig.subplots()
    curve = sorted(curve, key=lambda c: (c["fa_per_hour"] or 0.0, -c["threshold"]))  # left to right
    xs = [c["fa_per_hour"] or 0.0 for c in curve]
    keywords = result["keywords"]
    for kw, color in zip(keywords, _colors(len(keywords))):
        ys = [c["frr_per_keyword"].get(kw) for c in curve]
        if any(v is not None for v in ys):
            ax.plot(xs, [np.nan if v is None else 100 * v for v in ys], color=color, lw=1, alpha=0.8,
                    label=f"{plain(kw)[:MAX_LABEL]} ({result['spoken'].get(kw, 0)} spoken)")
    ax.plot(xs, [np.nan if c["frr"] is None else 100 * c["frr"] for c in curve], color="black",
            lw=2.5, label="all keywords")
    op = result.get("operating_point")
    if op:
        ax.plot([op["fa_per_hour"]], [100 * (op["frr"] or 0)], "o", ms=9, mfc="none", mec="red", mew=2,
                label=f"threshold {op['threshold']:g}: {op['fa_per_hour']:.2g} FA/h, FRR {100 * (op['frr'] or 0):.1f} %")
    ax.axvline(result["target_fa_per_hour"], color="red", ls=":", lw=1)
    ax.set_xscale("symlog", linthresh=resolution, linscale=0.5)
    ax.set_xlim(left=0)
    ax.set_ylim(-2, 102)
    ax.set_xlabel(f"false accepts per hour (keyword-free audio: {hours * 60:.1f} min)")
    ax.set_ylabel("false-reject rate (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"DET curve, {result['split']} split streams" + ("" if result["enough_audio"] else " (too little audio: rough)"))
    return _save(fig, path)
