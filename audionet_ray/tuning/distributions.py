"""The distributions a search space's `search:` entries sample from: one row each, so that adding
one (its YAML name, how Optuna samples it, its Ray Tune domain, its range) touches this file only.

`search_space` checks entries and samples trials through this table (`DefineByRun`), the report
draws a log axis where `log` says so, and `to_tune_space` gives Ray Tune's view of a space.
Imports nothing of the package: plots and the search space both read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class Distribution:
    arity: int | None  # numbers the YAML list holds; None: any number of values (choice)
    suggest: Callable[[Any, str, list], Any]  # (optuna trial, name, args) -> the sampled value
    tune: str  # the ray.tune function that builds the same domain from args
    log: bool = False  # sampled on a log scale (bounds > 0; the report's axis is logarithmic)
    whole: bool = False  # samples whole numbers (an int setting may use it)

    def bounds(self, args: list) -> tuple[Any, Any]:
        """The lowest and highest value a trial can get."""
        return (min(args), max(args)) if self.arity is None else (args[0], args[1])

    def whole_values(self, args: list) -> Iterable[int]:
        """Every value a whole-number setting can get from it, lowest first."""
        return sorted(args) if self.arity is None else range(int(args[0]), int(args[1]))


DISTRIBUTIONS: dict[str, Distribution] = {
    "loguniform": Distribution(2, lambda t, n, a: t.suggest_float(n, a[0], a[1], log=True), "loguniform", log=True),
    "uniform": Distribution(2, lambda t, n, a: t.suggest_float(n, a[0], a[1]), "uniform"),
    # Tune's randint excludes the upper bound; Optuna's includes it
    "randint": Distribution(2, lambda t, n, a: t.suggest_int(n, int(a[0]), int(a[1]) - 1), "randint", whole=True),
    # qloguniform loses its step in Optuna, as in Ray's OptunaSearch
    "qloguniform": Distribution(3, lambda t, n, a: t.suggest_float(n, a[0], a[1], log=True), "qloguniform", log=True),
    "quniform": Distribution(3, lambda t, n, a: t.suggest_float(n, a[0], a[1], step=a[2]), "quniform"),
    "choice": Distribution(None, lambda t, n, a: t.suggest_categorical(n, a), "choice", whole=True),
}


def tune_domain(kind: str, args: list):
    """The Ray Tune domain of one entry (`tune.loguniform(1e-4, 3e-3)`, `tune.choice([...])`)."""
    from ray import tune

    make = getattr(tune, DISTRIBUTIONS[kind].tune)
    return make(args) if DISTRIBUTIONS[kind].arity is None else make(*args)
