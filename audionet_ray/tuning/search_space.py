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

A file's mistakes are one `ConfigError` naming the file and listing every key that is wrong (with
the nearest name for a misspelt one: schema.py derives the checks from the config dataclasses),
raised before Ray starts; among them an ASHA rung that is not a checkpoint epoch
(`check_rungs_on_checkpoints`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..training import schema
from .distributions import DISTRIBUTIONS, tune_domain
from ..training.config import ConfigError, TrainConfig, setting, shown

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

SEARCH_SPACES = resources.files("audionet_ray") / "search_spaces"  # package data: a checkout's or a wheel's
SEARCHABLE = set(schema.settings(TrainConfig)) - {"data"}  # TrainConfig's, the model's and the augmentation's, flat
DEFAULTS = schema.flat_defaults(TrainConfig)
WHOLE = {name: hint is int for name, hint in schema.flat_hints(TrainConfig).items()}  # settings that take ints


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
        from ..corpus.keyword_source import parse_engines

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
            return DISTRIBUTIONS[kind].bounds(args)
        value = setting(self.fixed, name)
        value = DEFAULTS[name] if value is None else value
        return value, value


def _section(kind: type, raw: Any, name: str) -> tuple[Any, list[str]]:
    """A `tune:` or `resources:` section as its dataclass, and its mistakes (all of them)."""
    if raw is None:
        return kind(), []
    if not isinstance(raw, dict):
        return None, [f"{name}: expected a mapping, got {type(raw).__name__}"]
    typed = {k: v for k, v in raw.items() if k not in OWN_CHECKS}
    found = schema.mistakes(kind, typed, name, unknown="unknown key(s) {key}")
    return (None if found else kind(**raw)), found


OWN_CHECKS = ("objectives", "constraints")  # checked by _objective_mistakes, which says what they may hold


def _distribution_mistake(name: str, spec: Any) -> str | None:
    """What is wrong with one `search:` entry, if anything (the first thing: the rest depends on it)."""
    if name not in SEARCHABLE:
        return schema.unknown_name(name, sorted(SEARCHABLE), f"search.{shown(name)} is not a setting", "searchable")
    if not isinstance(spec, dict) or len(spec) != 1:
        return f"search.{name} must be one of {{{', '.join(DISTRIBUTIONS)}: [...]}} (and optionally when: {{...}})"
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        return f"search.{name}: unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}"
    if not isinstance(args, list) or not args:
        return f"search.{name}.{kind} needs a list of values"
    if kind == "choice":
        odd = [a for a in args if not isinstance(a, (str, int, float, bool)) or a is None]
        if odd or len({repr(a) for a in args}) != len(args):
            return f"search.{name}.choice needs distinct plain values (text, numbers, true/false), got {args}"
        return None
    n = DISTRIBUTIONS[kind].arity
    if len(args) != n or not all(isinstance(a, (int, float)) for a in args):
        return f"search.{name}.{kind} needs {n} numbers, got {args}"
    if not args[0] < args[1]:
        return f"search.{name}.{kind}: low {args[0]} must be below high {args[1]}"
    if DISTRIBUTIONS[kind].log and args[0] <= 0:
        return f"search.{name}.{kind}: bounds must be > 0 on a log scale"
    if not DISTRIBUTIONS[kind].whole and WHOLE.get(name):  # Optuna would hand the trial 32.0, which TrainConfig refuses
        return f"search.{name}.{kind} samples fractions, but {name} is a whole number: use randint or choice"
    return None


def _read_search(raw: Any) -> tuple[dict, dict, list[str]]:
    """The `search:` section: each parameter's distribution and its `when`, and every mistake."""
    search = raw or {}
    if not isinstance(search, dict):
        return {}, {}, ["search must be a mapping of setting -> distribution"]
    when, found = {}, []
    for name, spec in search.items():
        cond = None
        if isinstance(spec, dict) and "when" in spec:
            spec = dict(spec)
            cond = spec.pop("when")
            search[name] = spec
        mistake = _distribution_mistake(name, spec)
        if mistake:
            found.append(mistake)
        elif cond is not None:
            when[name], more = _check_condition(name, cond, search)
            found += more
    return search, when, found


def _read_yaml(p: Path | Traversable) -> Any:
    """The file's YAML, or one line saying why it cannot be read."""
    try:
        return yaml.safe_load(p.read_bytes().decode("utf-8"))
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


def load_spec(path: str | Path) -> SearchSpec:
    """Read and check a search-space YAML; a name without a folder is a built-in one. Every mistake
    of the file in one ConfigError naming it: first those of keys and types, then (once those are
    right) those of values, and then of the values the trials can sample."""
    p = _locate(path)
    raw, where = _read_yaml(p), str(p)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with search/fixed/tune/resources")
    found = [f"unknown section(s) {', '.join(map(shown, sorted(set(raw) - SECTIONS, key=str)))}; "
             f"sections: search, fixed, tune, resources"] if set(raw) - SECTIONS else []
    search, when, more = _read_search(raw.get("search"))
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        more.append("fixed must be a mapping of setting -> value")
        fixed = {}
    fixed, source = split_data_keys(fixed, where)
    fixed_found = TrainConfig.mistakes_in({**fixed, "data": ""}, "fixed", known=list(DATA_KEYS))
    tune, tune_found = _section(TuneSettings, raw.get("tune"), "tune")
    resources, resources_found = _section(Resources, raw.get("resources"), "resources")
    found += more + fixed_found + tune_found + resources_found
    spec = SearchSpec(search, fixed, tune, resources, str(p), when, source)
    found += (_tune_mistakes(spec, rungs=False) if tune else []) + (_resources_mistakes(resources) if resources else [])
    if not found:  # the values trials sample, and then ASHA's rungs, which need them right
        found = _sampled_mistakes(spec) or [m for m in [_rung_mistake(spec)] if m]
    if found:
        raise schema.error(found, where)
    return spec


SECTIONS = {"search", "fixed", "tune", "resources"}


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


def _check_condition(name: str, cond: Any, search: dict) -> tuple[dict[str, list], list[str]]:
    """`when: {norm: group}` or `{norm: [group, layer]}`: each key an earlier choice parameter."""
    earlier = list(search)[:list(search).index(name)]
    if not isinstance(cond, dict) or not cond:
        return {}, [f"search.{name}.when must map an earlier choice parameter to its value(s), e.g. when: {{norm: group}}"]
    out, found = {}, []
    for parent, values in cond.items():
        values = values if isinstance(values, list) else [values]
        choices = (search.get(parent) or {}).get("choice") if isinstance(search.get(parent), dict) else None
        if parent not in earlier or not isinstance(choices, list):
            found.append(f"search.{name}.when.{shown(parent)}: must name a choice parameter listed above {name}")
            continue
        missing = [v for v in values if v not in choices]
        if missing or not values:
            found.append(f"search.{name}.when.{parent}: {missing or values} not among its choices {choices}")
            continue
        out[parent] = values
    return out, found


def _sampled_mistakes(spec: SearchSpec) -> list[str]:
    """Every value a trial can get must make a valid TrainConfig, so that a typo (norm: btach) or a
    clash (norm_groups that does not divide a sampled width) is one line now, not a failed trial
    hours in: each bound alone, and every combination of the choices (up to a few thousand). The
    first bad combination of each parameter is reported."""
    found: dict[str, str] = {}
    for name, dist in spec.search.items():
        (kind, args), = dist.items()
        if kind == "choice":
            continue
        cond = {p: vs[0] for p, vs in spec.when.get(name, {}).items()}
        for value in ([args[0], args[1] - 1] if kind == "randint" else args[:2]):
            _check_values(spec, {**cond, name: value}, name, found)
    combos = [{}]
    for name, values in {n: d["choice"] for n, d in spec.search.items() if "choice" in d}.items():
        combos = [{**c, name: v} if is_active(spec.when.get(name, {}), c) else c for c in combos for v in values]
        combos = list({repr(sorted(c.items())): c for c in combos}.values())
        if len(combos) > 5000:
            return list(found.values())
    for c in combos:
        _check_values(spec, c, next(reversed(c), ""), found)
    return list(found.values())


def _check_values(spec: SearchSpec, values: dict, name: str, found: dict[str, str]) -> None:
    """The mistake of a trial that samples `values` under `name` (unless `name` has one already)."""
    if name in found:
        return
    try:
        TrainConfig.from_dict({**spec.fixed, **values, "data": ""})
    except (ConfigError, TypeError) as e:
        shown = ", ".join(f"{k} {v}" for k, v in values.items())
        found[name] = f"search.{name} ({shown}): {e}"


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
            values[name] = DISTRIBUTIONS[kind].suggest(trial, name, args)
        return None


def check_settings(spec: SearchSpec, where: str) -> None:
    """Raise one ConfigError naming `where` with every mistake of the space's tune and resources settings."""
    found = settings_mistakes(spec)
    if found:
        raise schema.error(found, where)


def settings_mistakes(spec: SearchSpec, rungs: bool = True) -> list[str]:
    """The bad values of `tune:` and `resources:` (their types are right), every one; `rungs`:
    ASHA's rungs against the checkpoint epochs too (that needs a right `fixed`)."""
    return _tune_mistakes(spec, rungs) + _resources_mistakes(spec.resources)


def _tune_mistakes(spec: SearchSpec, rungs: bool) -> list[str]:
    t = spec.tune
    checks = [
        (t.searcher in ("optuna", "random"), f"searcher {t.searcher!r} unknown; use optuna or random"),
        (t.scheduler in ("asha", "fifo"), f"scheduler {t.scheduler!r} unknown; use asha or fifo"),
        (t.num_samples >= 1 and t.max_concurrent >= 0, "num_samples must be >= 1 and max_concurrent >= 0"),
        (t.startup_trials >= 0, "startup_trials must be >= 0 (0: a third of num_samples, 2 to 10)"),
        (t.grace_period >= 2, "grace_period must be >= 2 epochs, so that every kept trial has a checkpoint"),
        (t.reduction_factor >= 2,
         "reduction_factor must be >= 2 (ASHA keeps 1 in reduction_factor trials at each rung)"),
    ]
    found = [msg for ok, msg in checks if not ok]
    if rungs and t.grace_period >= 2 and t.reduction_factor >= 2:  # else rung_epochs would not end
        found += [m for m in [_rung_mistake(spec)] if m]
    if t.time_budget is not None:
        try:
            parse_duration(t.time_budget, "tune.time_budget")
        except ConfigError as e:
            found.append(str(e))
    return found + _objective_mistakes(t)


def _objective_mistakes(t: TuneSettings) -> list[str]:
    from ..modeling.costs import CONSTRAINTS, OBJECTIVES

    found = []
    if not isinstance(t.objectives, list) or len(t.objectives) > 1 or any(o not in OBJECTIVES for o in t.objectives):
        found.append(f"tune.objectives must be a list of at most one of {', '.join(OBJECTIVES)} "
                     f"(minimised beside {t.metric}), got {shown(t.objectives)}")
    if not isinstance(t.constraints, dict):
        return found + [f"tune.constraints must map limits ({', '.join(CONSTRAINTS)}) to numbers"]
    for k, v in t.constraints.items():
        if k not in CONSTRAINTS:
            found.append(schema.unknown_name(k, list(CONSTRAINTS), f"tune.constraints: unknown limit {shown(k)}", "known"))
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            found.append(f"tune.constraints.{k} must be a number above 0, got {shown(v)}")
    return found


def _resources_mistakes(r: Resources) -> list[str]:
    checks = [
        (r.workers_per_trial >= 1, "workers_per_trial must be >= 1"),
        (r.gpus_per_trial == "auto" or (isinstance(r.gpus_per_trial, (int, float)) and r.gpus_per_trial >= 0),
         "gpus_per_trial must be 'auto' or a number >= 0"),
        (r.cpus_per_worker == "auto" or (isinstance(r.cpus_per_worker, (int, float))
                                         and not isinstance(r.cpus_per_worker, bool) and r.cpus_per_worker > 0),
         "cpus_per_worker must be 'auto' or a number > 0"),
        (r.trainer in TRAINERS, f"trainer must be auto, trial (Tune's trial process trains) or torch "
                                f"(a TorchTrainer per trial), got {shown(r.trainer)}"),
    ]
    return [msg for ok, msg in checks if not ok]


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
        return DISTRIBUTIONS[kind].whole_values(args)
    return [spec.fixed.get(name, getattr(TrainConfig, name))]


def check_rungs_on_checkpoints(spec: SearchSpec, where: str) -> None:
    """Raise `_rung_mistake`'s line, naming `where`, if there is one."""
    mistake = _rung_mistake(spec)
    if mistake:
        raise ConfigError(f"{where}: {mistake}")


def _rung_mistake(spec: SearchSpec) -> str | None:
    """With ASHA every rung before the last epoch must be a checkpoint epoch (train.py saves at
    multiples of checkpoint_every, and at the end), so that every trial ASHA stops keeps the
    checkpoint of the epoch it was ranked at instead of one up to checkpoint_every - 1 epochs older.
    A rung is grace_period * reduction_factor**k, so it is enough that checkpoint_every divides
    grace_period; checked for every checkpoint_every the space can sample."""
    t = spec.tune
    if t.scheduler != "asha":
        return None
    epochs = int(spec.fixed.get("epochs", TrainConfig.epochs))  # ASHA's max_t (tune.make_scheduler)
    rungs = rung_epochs(t.grace_period, t.reduction_factor, epochs)
    if not rungs:
        return None
    key = ("search." if "checkpoint_every" in spec.search else "fixed.") + "checkpoint_every"
    for every in _whole_values(spec, "checkpoint_every"):  # sorted: a bad value comes within grace_period + 1
        off = [r for r in rungs if r % every]
        if off:
            return (
                f"tune.grace_period {t.grace_period} and reduction_factor {t.reduction_factor} put ASHA's "
                f"rungs at epochs {', '.join(map(str, rungs))} (of {epochs}), but {key} {every} checkpoints at "
                f"multiples of {every}: a trial ASHA stops at epoch {off[0]} would lose the epochs since its last "
                f"checkpoint; make grace_period a multiple of checkpoint_every (e.g. checkpoint_every 2 with "
                f"grace_period 2 or 4)")
    return None


def to_tune_space(search: dict[str, dict]) -> dict:
    """YAML distributions -> Ray Tune domains, every parameter, conditions aside (for the report's
    view of the space; the search itself samples through `DefineByRun`)."""
    return {name: tune_domain(*next(iter(spec.items()))) for name, spec in search.items()}
