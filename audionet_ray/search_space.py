"""Search spaces in YAML: what a search samples, what it fixes, how it schedules and runs.

A file in search_spaces/ reads like an Optuna example: the sampled parameters in one place. The
built-in ones live in the package (audionet_ray/search_spaces/, package data, so a wheel carries
them; `search_spaces/` at the top of a checkout is a link to that folder).

    search:      {lr: {loguniform: [1.0e-4, 3.0e-3]}, norm: {choice: [batch, group]},
                  norm_groups: {choice: [4, 8], when: {norm: group}}, ...}   # any TrainConfig setting
    fixed:       {epochs: 12, width: 32, dense: 128, augment: {...}}         # TrainConfig settings
                 # and where the data comes from (DataSource, not given to trials):
                 # {keywords: [hey computer], synthesize: true, synthesize_speakers: 120,
                 #  synthesize_engines: [espeak]}
    tune:        {num_samples: 8, max_concurrent: 2, searcher: optuna, scheduler: asha, time_budget: 30m, ...}
    resources:   {workers_per_trial: 1, gpus_per_trial: auto, cpus_per_worker: 1}

A parameter with `when: {other: value or [values]}` is sampled only in trials where an earlier
`choice` parameter took one of those values; elsewhere the trial gets its fixed (or default)
value. Both searchers sample the same way, through Optuna (`DefineByRun`): TPE, or Optuna's
random sampler.

With a time budget the budget is the search's length: trials keep starting until it is spent,
and the number of trials only has a cap (`trial_cap`): `--num-samples` where the command line
gives it, else MAX_TRIALS; a file's `num_samples` is the size of a search without a budget.

Every mistake is a `ConfigError` naming the file and the key, raised before Ray starts; among
them an ASHA rung that is not a checkpoint epoch (`check_rungs_on_checkpoints`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .augment import AugmentConfig
from .config import ConfigError, TrainConfig, check_types, shown

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

SEARCH_SPACES = resources.files("audionet_ray") / "search_spaces"  # package data: a checkout's or a wheel's
DISTRIBUTIONS = {"loguniform": 2, "uniform": 2, "randint": 2, "qloguniform": 3, "quniform": 3, "choice": None}
SEARCHABLE = {f.name for f in fields(TrainConfig)} - {"data", "augment"} | {f.name for f in fields(AugmentConfig)}
WHOLE = {f.name: f.type == "int" for f in (*fields(TrainConfig), *fields(AugmentConfig))}  # settings that take ints


@dataclass
class TuneSettings:
    num_samples: int = 8  # trials; with a time budget only a cap (trial_cap)
    max_concurrent: int = 0  # 0: as many as the resources allow
    searcher: str = "optuna"  # optuna (TPE) | random
    scheduler: str = "asha"  # asha | fifo
    grace_period: int = 2  # epochs before ASHA may stop a trial: every kept trial has a checkpoint
    reduction_factor: int = 2
    metric: str = "val_accuracy"
    mode: str = "max"
    seed: int = 0
    max_failures: int = 1  # retries of a failed trial (it resumes from its checkpoint)
    startup_trials: int = 0  # TPE's random trials before it models; 0: see `tpe_startup_trials`
    time_budget: str | float | None = None  # wall time of the whole search: 90s, 30m, 1.5h or seconds
    # A second objective, minimised beside `metric` (costs.OBJECTIVES: macs, params, latency_ms):
    # the search then keeps a Pareto front. Limits no trial may break (costs.CONSTRAINTS).
    objectives: list = field(default_factory=list)
    constraints: dict = field(default_factory=dict)

    @property
    def time_budget_s(self) -> float | None:
        return None if self.time_budget is None else parse_duration(self.time_budget, "tune.time_budget")


DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$")


def parse_duration(text: str | float, where: str) -> float:
    """Seconds from 90s, 30m, 1.5h or a plain number of seconds; one clear error otherwise."""
    m = DURATION.match(str(text)) if not isinstance(text, bool) else None
    seconds = float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]] if m else 0.0
    if seconds <= 0:
        raise ConfigError(f"{where} {text}: a duration above zero such as 90s, 30m, 1.5h or plain seconds")
    return seconds


MAX_TRIALS = 1000  # a time-budgeted search's cap on trials when none is given: the budget ends it


def trial_cap(num_samples: int, budgeted: bool, given: bool) -> int:
    """The `num_samples` a search runs with. Without a time budget it is the plan: that many
    trials. With one the budget is the search's length and num_samples only a cap: one given on
    the command line (`--num-samples`) is kept as a hard cap; a space's num_samples, which sizes
    a search without a budget, becomes MAX_TRIALS, so that the budget, not it, ends the search."""
    return num_samples if given or not budgeted else MAX_TRIALS


def tpe_startup_trials(t: TuneSettings) -> int:
    """A third of the trials, 2 to 10. Optuna's default of 10 would leave a search of 8 trials
    (the demo) entirely random; a search of 30 or more gets Optuna's 10, and so does a
    time-budgeted search capped at MAX_TRIALS (it is meant to hold dozens: how many is not known
    before the first trials have run)."""
    return t.startup_trials or max(2, min(10, t.num_samples // 3))


TRAINERS = ("auto", "trial", "torch")  # Resources.trainer's values, and tune --trainer's choices


@dataclass
class Resources:
    workers_per_trial: int = 1
    gpus_per_trial: float | str = "auto"  # "auto": 0 without GPUs, else 1 per worker (0.5 on one GPU)
    cpus_per_worker: float | str = "auto"  # "auto": every core trains (plan.plan_resources)
    # who trains a trial: "torch" a TorchTrainer (Ray Train's processes), "trial" Tune's trial process
    # itself (trial_process.py: starts in seconds), "auto" the trial process where it can (plan.choose_trainer)
    trainer: str = "auto"


@dataclass
class DataSource:
    """Keys of `fixed:` that say where the data comes from, not how a trial trains: taken out of
    `fixed` before TrainConfig (which refuses unknown keys) sees it. synthesize: the keywords are
    spoken by espeak-ng (keyword_source), with synthesize_speakers speakers (None: its default) of
    the synthesizers synthesize_engines (None: all; speech_data.ENGINES)."""

    synthesize: bool = False
    synthesize_speakers: int | None = None
    synthesize_engines: list[str] | None = None


DATA_KEYS = {"synthesize": "bool", "synthesize_speakers": "int", "synthesize_engines": "list"}


def split_data_keys(fixed: dict, where: str) -> tuple[dict, DataSource]:
    """`fixed` without the DataSource keys, and those keys checked (one line naming the key)."""
    rest = {k: v for k, v in fixed.items() if k not in DATA_KEYS}
    source = DataSource(**{k: v for k, v in fixed.items() if k in DATA_KEYS})
    if not isinstance(source.synthesize, bool):
        raise ConfigError(f"{where}: fixed.synthesize: expected true or false, got {source.synthesize!r}")
    n = source.synthesize_speakers
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 3):
        raise ConfigError(f"{where}: fixed.synthesize_speakers: a whole number of at least 3, got {n!r}")
    for key in ("synthesize_speakers", "synthesize_engines"):
        if getattr(source, key) is not None and not source.synthesize:
            raise ConfigError(f"{where}: fixed.{key} is set but synthesize is not: add synthesize: true")
    if source.synthesize_engines is not None:
        from .keyword_source import parse_engines

        value = source.synthesize_engines
        source.synthesize_engines = list(parse_engines(value if isinstance(value, (list, str)) else [value],
                                                       f"{where}: fixed.synthesize_engines"))
    return rest, source


@dataclass
class SearchSpec:
    search: dict[str, dict] = field(default_factory=dict)  # name -> {distribution: args}, one key each
    fixed: dict[str, Any] = field(default_factory=dict)
    tune: TuneSettings = field(default_factory=TuneSettings)
    resources: Resources = field(default_factory=Resources)
    source: str = ""
    when: dict[str, dict[str, list]] = field(default_factory=dict)  # name -> {earlier choice: values it needs}
    data: DataSource = field(default_factory=DataSource)  # fixed's keys about the data, not a trial's

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchSpec":
        return cls(d["search"], d["fixed"], TuneSettings(**d["tune"]), Resources(**d["resources"]), d.get("source", ""),
                   d.get("when", {}), DataSource(**d.get("data", {})))

    def value_range(self, name: str) -> tuple[Any, Any]:
        """The lowest and highest value any trial can get for a TrainConfig setting."""
        if name in self.search:
            (kind, args), = self.search[name].items()
            return (min(args), max(args)) if kind == "choice" else (args[0], args[1])
        value = self.fixed.get(name, getattr(TrainConfig(data=""), name))
        return value, value


def _dataclass_from(kind: type, raw: Any, where: str):
    if raw is None:
        return kind()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(raw) - names, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(shown, unknown))}; known: {', '.join(sorted(names))}")
    obj = kind(**raw)
    check_types(obj, f"{where}.")
    return obj


def _check_distribution(name: str, spec: Any, where: str) -> None:
    if name not in SEARCHABLE:
        raise ConfigError(f"{where}: search.{shown(name)} is not a setting; searchable: {', '.join(sorted(SEARCHABLE))}")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: search.{name} must be one of {{{', '.join(DISTRIBUTIONS)}: [...]}}"
                          " (and optionally when: {...})")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: search.{name}: unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: search.{name}.{kind} needs a list of values")
    if kind == "choice":
        odd = [a for a in args if not isinstance(a, (str, int, float, bool)) or a is None]
        if odd or len({repr(a) for a in args}) != len(args):
            raise ConfigError(f"{where}: search.{name}.choice needs distinct plain values (text, numbers, true/false), got {args}")
    n = DISTRIBUTIONS[kind]
    if n is not None:
        if len(args) != n or not all(isinstance(a, (int, float)) for a in args):
            raise ConfigError(f"{where}: search.{name}.{kind} needs {n} numbers, got {args}")
        if not args[0] < args[1]:
            raise ConfigError(f"{where}: search.{name}.{kind}: low {args[0]} must be below high {args[1]}")
        if kind.startswith(("log", "qlog")) and args[0] <= 0:
            raise ConfigError(f"{where}: search.{name}.{kind}: bounds must be > 0 on a log scale")
        if kind != "randint" and WHOLE.get(name):  # Optuna would hand the trial 32.0, which TrainConfig refuses
            raise ConfigError(f"{where}: search.{name}.{kind} samples fractions, but {name} is a whole number: "
                              f"use randint or choice")


def load_spec(path: str | Path) -> SearchSpec:
    """Read and check a search-space YAML; a name without a folder is a built-in one."""
    p = _locate(path)
    try:
        raw = yaml.safe_load(p.read_bytes().decode("utf-8"))
    except OSError as e:  # a folder, unreadable
        raise ConfigError(f"{p}: cannot read it ({e.strerror or e}): give a search-space YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}): give a search-space YAML file") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to be a search space") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = (str(getattr(e, "problem", None) or e).splitlines() or [""])[0]
        raise ConfigError(f"{p}: not valid YAML{at}: {problem}") from None
    where = str(p)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with search/fixed/tune/resources")
    unknown = sorted(set(raw) - {"search", "fixed", "tune", "resources"}, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(map(shown, unknown))}; sections: search, fixed, tune, resources")
    search = raw.get("search") or {}
    if not isinstance(search, dict):
        raise ConfigError(f"{where}: search must be a mapping of setting -> distribution")
    when = {}
    for name, spec in search.items():
        cond = None
        if isinstance(spec, dict) and "when" in spec:
            spec = dict(spec)
            cond = spec.pop("when")
            search[name] = spec
        _check_distribution(name, spec, where)
        if cond is not None:
            when[name] = _check_condition(name, cond, search, where)
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: fixed must be a mapping of setting -> value")
    fixed, source = split_data_keys(fixed, where)
    try:
        TrainConfig.from_dict({**fixed, "data": ""})
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{where}: fixed: {e}") from None
    spec = SearchSpec(search, fixed, _dataclass_from(TuneSettings, raw.get("tune"), f"{where}: tune"),
                      _dataclass_from(Resources, raw.get("resources"), f"{where}: resources"), str(p), when, source)
    _check_sampled_values(spec, where)
    check_settings(spec, where)
    return spec


def builtin_spaces() -> dict[str, Traversable]:
    """The search spaces shipped in the package, by name. Read through importlib.resources, so an
    installed wheel finds them where a checkout does."""
    if not SEARCH_SPACES.is_dir():
        return {}
    return {f.name.removesuffix(".yaml"): f for f in SEARCH_SPACES.iterdir() if f.name.endswith(".yaml")}


def _locate(path: str | Path) -> Path | Traversable:
    """A file that exists, else a built-in name (no folder, no suffix); one clear line otherwise."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    builtin = builtin_spaces()
    if not p.suffix and str(p) in builtin:
        return builtin[str(p)]
    raise ConfigError(f"--search-space {path}: no such file (built in: {', '.join(sorted(builtin))})")


def _check_condition(name: str, cond: Any, search: dict, where: str) -> dict[str, list]:
    """`when: {norm: group}` or `{norm: [group, layer]}`: each key an earlier choice parameter."""
    earlier = list(search)[:list(search).index(name)]
    if not isinstance(cond, dict) or not cond:
        raise ConfigError(f"{where}: search.{name}.when must map an earlier choice parameter to its value(s), "
                          f"e.g. when: {{norm: group}}")
    out = {}
    for parent, values in cond.items():
        values = values if isinstance(values, list) else [values]
        choices = (search.get(parent) or {}).get("choice") if isinstance(search.get(parent), dict) else None
        if parent not in earlier or not isinstance(choices, list):
            raise ConfigError(f"{where}: search.{name}.when.{shown(parent)}: must name a choice parameter listed above {name}")
        missing = [v for v in values if v not in choices]
        if missing or not values:
            raise ConfigError(f"{where}: search.{name}.when.{parent}: {missing or values} not among its choices {choices}")
        out[parent] = values
    return out


def _check_sampled_values(spec: SearchSpec, where: str) -> None:
    """Every value a trial can get must make a valid TrainConfig, so that a typo (norm: btach) or a
    clash (norm_groups that does not divide a sampled width) is one line now, not a failed trial
    hours in: each bound alone, and every combination of the choices (up to a few thousand)."""
    choices = {n: d["choice"] for n, d in spec.search.items() if "choice" in d}
    for name, dist in spec.search.items():
        (kind, args), = dist.items()
        if kind == "choice":
            continue
        cond = {p: vs[0] for p, vs in spec.when.get(name, {}).items()}
        for value in ([args[0], args[1] - 1] if kind == "randint" else args[:2]):
            _check_values(spec, {**cond, name: value}, where, name)
    combos = [{}]
    for name, values in choices.items():
        combos = [{**c, name: v} if is_active(spec.when.get(name, {}), c) else c for c in combos for v in values]
        combos = list({repr(sorted(c.items())): c for c in combos}.values())
        if len(combos) > 5000:
            return
    for c in combos:
        _check_values(spec, c, where, next(reversed(c), ""))


def _check_values(spec: SearchSpec, values: dict, where: str, name: str) -> None:
    try:
        TrainConfig.from_dict({**spec.fixed, **values, "data": ""})
    except (ConfigError, TypeError) as e:
        shown = ", ".join(f"{k} {v}" for k, v in values.items())
        raise ConfigError(f"{where}: search.{name} ({shown}): {e}") from None


def is_active(when: dict[str, list], values: dict[str, Any]) -> bool:
    """Whether a conditional parameter is sampled, given what the trial sampled before it."""
    return all(values.get(parent) in allowed for parent, allowed in when.items())


class DefineByRun:
    """The space as an Optuna define-by-run function (what OptunaSearch takes for conditional
    spaces): parameters in file order, each only when its condition holds. A class, not a
    closure, because Tune pickles the searcher with the experiment."""

    def __init__(self, search: dict[str, dict], when: dict[str, dict[str, list]]):
        self.search, self.when = search, when

    def __call__(self, trial) -> None:
        values: dict[str, Any] = {}
        for name, dist in self.search.items():
            if not is_active(self.when.get(name, {}), values):
                continue
            (kind, args), = dist.items()
            if kind == "choice":
                values[name] = trial.suggest_categorical(name, args)
            elif kind == "randint":  # Tune's randint excludes the upper bound; Optuna's includes it
                values[name] = trial.suggest_int(name, int(args[0]), int(args[1]) - 1)
            elif kind == "quniform":
                values[name] = trial.suggest_float(name, args[0], args[1], step=args[2])
            else:  # loguniform, uniform; qloguniform loses its step as in Ray's OptunaSearch
                values[name] = trial.suggest_float(name, args[0], args[1], log=kind != "uniform")
        return None


def check_settings(spec: SearchSpec, where: str) -> None:
    t, r = spec.tune, spec.resources
    if t.searcher not in ("optuna", "random"):
        raise ConfigError(f"{where}: searcher {t.searcher!r} unknown; use optuna or random")
    if t.scheduler not in ("asha", "fifo"):
        raise ConfigError(f"{where}: scheduler {t.scheduler!r} unknown; use asha or fifo")
    if t.num_samples < 1 or t.max_concurrent < 0:
        raise ConfigError(f"{where}: num_samples must be >= 1 and max_concurrent >= 0")
    if t.startup_trials < 0:
        raise ConfigError(f"{where}: startup_trials must be >= 0 (0: a third of num_samples, 2 to 10)")
    if t.grace_period < 2:
        raise ConfigError(f"{where}: grace_period must be >= 2 epochs, so that every kept trial has a checkpoint")
    if t.reduction_factor < 2:
        raise ConfigError(f"{where}: reduction_factor must be >= 2 (ASHA keeps 1 in reduction_factor trials at each rung)")
    check_rungs_on_checkpoints(spec, where)
    if t.time_budget is not None:
        parse_duration(t.time_budget, f"{where}: tune.time_budget")
    from .costs import CONSTRAINTS, OBJECTIVES

    if not isinstance(t.objectives, list) or len(t.objectives) > 1 or any(o not in OBJECTIVES for o in t.objectives):
        raise ConfigError(f"{where}: tune.objectives must be a list of at most one of {', '.join(OBJECTIVES)} "
                          f"(minimised beside {t.metric}), got {shown(t.objectives)}")
    if not isinstance(t.constraints, dict):
        raise ConfigError(f"{where}: tune.constraints must map limits ({', '.join(CONSTRAINTS)}) to numbers")
    for k, v in t.constraints.items():
        if k not in CONSTRAINTS:
            raise ConfigError(f"{where}: tune.constraints: unknown limit {shown(k)}; known: {', '.join(CONSTRAINTS)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"{where}: tune.constraints.{k} must be a number above 0, got {shown(v)}")
    if r.workers_per_trial < 1:
        raise ConfigError(f"{where}: workers_per_trial must be >= 1")
    if r.gpus_per_trial != "auto" and not (isinstance(r.gpus_per_trial, (int, float)) and r.gpus_per_trial >= 0):
        raise ConfigError(f"{where}: gpus_per_trial must be 'auto' or a number >= 0")
    if r.cpus_per_worker != "auto" and not (isinstance(r.cpus_per_worker, (int, float))
                                            and not isinstance(r.cpus_per_worker, bool) and r.cpus_per_worker > 0):
        raise ConfigError(f"{where}: cpus_per_worker must be 'auto' or a number > 0")
    if r.trainer not in TRAINERS:
        raise ConfigError(f"{where}: trainer must be auto, trial (Tune's trial process trains) or torch "
                          f"(a TorchTrainer per trial), got {shown(r.trainer)}")


def rung_epochs(grace_period: int, reduction_factor: int, epochs: int) -> list[int]:
    """The epochs before the last at which ASHA ranks trials and stops the weak ones: grace_period
    * reduction_factor**k, as the one-bracket ASHAScheduler of `tune.make_scheduler` places them
    (max_t = epochs; a rung at the last epoch stops nothing that would have gone on)."""
    rungs, r = [], grace_period
    while r < epochs:
        rungs.append(r)
        r *= reduction_factor
    return rungs


def _whole_values(spec: SearchSpec, name: str) -> Iterable[int]:
    """Every value of a whole-number setting that a trial can get, lowest first: a choice's, a
    randint's range, or the fixed (or default) one."""
    if name in spec.search:
        (kind, args), = spec.search[name].items()
        return sorted(args) if kind == "choice" else range(int(args[0]), int(args[1]))
    return [spec.fixed.get(name, getattr(TrainConfig, name))]


def check_rungs_on_checkpoints(spec: SearchSpec, where: str) -> None:
    """With ASHA every rung before the last epoch must be a checkpoint epoch (train.py saves at
    multiples of checkpoint_every, and at the end), so that every trial ASHA stops keeps the
    checkpoint of the epoch it was ranked at instead of one up to checkpoint_every - 1 epochs older.
    A rung is grace_period * reduction_factor**k, so it is enough that checkpoint_every divides
    grace_period; checked for every checkpoint_every the space can sample."""
    t = spec.tune
    if t.scheduler != "asha":
        return
    epochs = int(spec.fixed.get("epochs", TrainConfig.epochs))  # ASHA's max_t (tune.make_scheduler)
    rungs = rung_epochs(t.grace_period, t.reduction_factor, epochs)
    if not rungs:
        return
    key = ("search." if "checkpoint_every" in spec.search else "fixed.") + "checkpoint_every"
    for every in _whole_values(spec, "checkpoint_every"):  # sorted: a bad value comes within grace_period + 1
        off = [r for r in rungs if r % every]
        if off:
            raise ConfigError(
                f"{where}: tune.grace_period {t.grace_period} and reduction_factor {t.reduction_factor} put ASHA's "
                f"rungs at epochs {', '.join(map(str, rungs))} (of {epochs}), but {key} {every} checkpoints at "
                f"multiples of {every}: a trial ASHA stops at epoch {off[0]} would lose the epochs since its last "
                f"checkpoint; make grace_period a multiple of checkpoint_every (e.g. checkpoint_every 2 with "
                f"grace_period 2 or 4)")


def to_tune_space(search: dict[str, dict]) -> dict:
    """YAML distributions -> Ray Tune domains, every parameter, conditions aside (for the report's
    view of the space; the search itself samples through `DefineByRun`)."""
    from ray import tune

    make = {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint,
            "qloguniform": tune.qloguniform, "quniform": tune.quniform}
    space = {}
    for name, spec in search.items():
        (kind, args), = spec.items()
        space[name] = tune.choice(args) if kind == "choice" else make[kind](*args)
    return space
