"""Which result is best: the one definition of "best" and of the Pareto front.

Every reader that ranks results comes here: the best checkpoint (checkpoint.best, which export,
the search and the report use), a trial's best epoch (experiment.Trial.best), results.csv's
best_<metric>, the report's trial table and its fallback, and the train command's last line.
A metric's direction (max or min) is given, never guessed here: config.metric_mode or the
search's own `tune.mode` says it.

A value ranks when it is a real number (NaN, None, a missing key, a bool or text do not): rows
without one come last and are never the best. On a tie `then` decides (the higher wins: the
later epoch of a checkpoint), and then the first row given.

This module imports nothing of the package but its errors, so that the checkpoint and
experiment modules below everything can use it without loading torch.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, TypeVar

from .errors import ConfigError

T = TypeVar("T")
MODES = ("max", "min")


def score(value: Any) -> float | None:
    """`value` as a number that can rank, or None (None, NaN, a bool, text, anything else)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    v = float(value)
    return None if math.isnan(v) else v


def sign(mode: str) -> float:
    """+1 where higher is better (max), -1 where lower is (min); ConfigError for another mode."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: must be max or min")
    return 1.0 if mode == "max" else -1.0


def _order(metric: str, mode: str, key: Callable[[Any], Any] | None,
           then: Callable[[Any], float] | None) -> Callable[[Any], tuple]:
    """The sort key of the one ranking: scored rows first, best first; ties by `then`, higher first."""
    s = sign(mode)
    value = key or (lambda row: row.get(metric))

    def order(row: Any) -> tuple:
        v = score(value(row))
        if v is None:
            return (1,)
        return (0, -s * v, -(then(row) if then else 0))

    return order


def ranked(rows: Iterable[T], metric: str, mode: str, key: Callable[[T], Any] | None = None,
           then: Callable[[T], float] | None = None) -> list[T]:
    """`rows` best first by `metric` in `mode`; rows without a value last, in the order given.

    key: a row's value of the metric (default: row.get(metric), for dict rows).
    then: the tie-breaker, higher first (e.g. a checkpoint's epoch); else the first row given."""
    return sorted(rows, key=_order(metric, mode, key, then))  # sorted is stable: first given first on a tie


def best(rows: Iterable[T], metric: str, mode: str, key: Callable[[T], Any] | None = None,
         then: Callable[[T], float] | None = None) -> T | None:
    """The best row by `metric` in `mode` (`ranked`'s first), or None when no row has a value."""
    order = _order(metric, mode, key, then)
    top = min(rows, key=order, default=None)  # min keeps the first of equals, as `ranked` does
    return None if top is None or order(top) == (1,) else top


def pareto_front(points: list[tuple], mode: str = "max") -> list[tuple]:
    """The points (metric, cost, ...) that no other point beats on both: the metric better (in
    `mode`) and the cost lower. Sorted by cost; points without a metric and a cost are left out."""
    s = sign(mode)
    scored = [p for p in points if score(p[0]) is not None and score(p[1]) is not None]
    front: list[tuple] = []
    for p in sorted(scored, key=lambda p: (p[1], -s * p[0])):
        if not front or s * p[0] > s * front[-1][0]:
            front.append(p)
    return front
