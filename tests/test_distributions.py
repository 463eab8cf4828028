"""The search space's distributions come from one table: a new row is checked, sampled by Optuna,
given a Ray Tune domain and drawn, with no other file touched."""

from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray.training.config import ConfigError
from audionet_ray.tuning.distributions import DISTRIBUTIONS, Distribution
from audionet_ray.tuning.search_space import DefineByRun, load_spec, to_tune_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(tmp_path, body: str):
    f = tmp_path / "space.yaml"
    f.write_text("search:\n" + body + "fixed: {epochs: 4}\n")
    return load_spec(f)


def _sample(search: dict, n: int = 40, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        DefineByRun(search, {})(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


@settings(max_examples=25, deadline=None)
@given(low=st.floats(1e-6, 1e-2), span=st.floats(1.5, 1e3), seed=st.integers(0, 2**16))
def test_every_sampled_value_lies_in_the_range_the_table_gives(low, span, seed):
    search = {"lr": {"loguniform": [low, low * span]}, "batch_size": {"randint": [8, 65]},
              "dropout": {"uniform": [0.0, 0.5]}, "optimizer": {"choice": ["nadam", "adamw"]}}
    for params in _sample(search, n=10, seed=seed):
        for name, dist in search.items():
            (kind, args), = dist.items()
            lo, hi = DISTRIBUTIONS[kind].bounds(args)
            value = params[name]
            if kind == "choice":
                assert value in args
            else:
                assert lo <= value <= hi, (name, value, lo, hi)
        assert isinstance(params["batch_size"], int) and params["batch_size"] <= 64  # randint excludes its high


def test_a_new_distribution_is_one_row_of_the_table(tmp_path, monkeypatch):
    """A log-scale integer distribution added as a row: the YAML accepts it, Optuna samples it on
    its bounds, Ray Tune gets a domain, and the range reads from the same row."""
    row = Distribution(2, lambda t, n, a: t.suggest_int(n, int(a[0]), int(a[1]), log=True), "lograndint",
                       log=True, whole=True)
    monkeypatch.setitem(DISTRIBUTIONS, "lograndint", row)
    spec = _space(tmp_path, "  batch_size: {lograndint: [16, 256]}\n")
    assert spec.value_range("batch_size") == (16, 256)
    values = [p["batch_size"] for p in _sample(spec.search)]
    assert all(isinstance(v, int) and 16 <= v <= 256 for v in values)
    assert math.log(max(values) / min(values)) > 1  # spread over the range
    domain = to_tune_space(spec.search)["batch_size"]
    assert domain.lower == 16 and domain.upper == 256


def test_a_fractional_distribution_on_a_whole_setting_is_refused_by_its_row(tmp_path):
    with pytest.raises(ConfigError, match="whole number"):
        _space(tmp_path, "  batch_size: {uniform: [16, 256]}\n")
    with pytest.raises(ConfigError, match="> 0 on a log scale"):
        _space(tmp_path, "  lr: {loguniform: [0, 0.1]}\n")
