"""The search from Python: `audionet_ray.search(...)` runs what `python -m audionet_ray.tune` runs.

    import audionet_ray

    result = audionet_ray.search("~/speech_commands", "smoke", budget="10m", keywords=["yes", "no"])
    print(result.metric, result.score, result.config["lr"])
    bundle = result.load_bundle()            # the exported best model (bundle.Bundle)
    print(bundle.predict_proba(clips).argmax(1))

`search` builds tune's command line from its arguments (each option of
`python -m audionet_ray.tune --help`, as a keyword: `epochs=4`, `searcher="random"`,
`no_export=True`) and runs it in this process; a mistake raises ConfigError with tune's one-line
message instead of returning an exit code. What it returns is read back from the experiment
folder (`result_of`), which also reads a search run earlier or by the command line.
"""

from __future__ import annotations

import difflib
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .core.errors import ConfigError


@dataclass
class SearchResult:
    """A search's outcome, read from its experiment folder."""

    experiment: Path  # the experiment folder (search.json, results.csv, train_runs/, bundle/)
    metric: str  # what the search ranked its trials by
    mode: str  # max or min
    score: float  # the best checkpoint's value of `metric`
    trial_id: str  # the trial of the best checkpoint
    epoch: int  # the epoch of the best checkpoint
    config: dict  # the best trial's training config (train.TrainConfig as a dict)
    checkpoint: Path  # the best checkpoint folder (model.pt + meta.json)
    bundle: Path | None  # the exported bundle of the best checkpoint (None: not exported)

    def load_bundle(self, backend: str = "torch"):
        """The exported best model, checked (bundle.load)."""
        if self.bundle is None:
            raise ConfigError(f"{self.experiment}: no exported bundle (searched with export=False?): "
                              f"audionet-ray export {self.experiment} OUT_DIR")
        from .detection.bundle import load

        return load(self.bundle, backend=backend)


def result_of(experiment: str | os.PathLike) -> SearchResult:
    """The result of the search in an experiment folder: its best checkpoint by the search's own
    metric (experiment.best_checkpoint) and its bundle; ConfigError if it has none yet."""
    from .tuning.experiment import best_checkpoint, bundle_of, search_metric
    from .core.storage import location

    exp = location(experiment).resolve()
    metric, mode = search_metric(exp)
    trial_id, ckpt, meta = best_checkpoint(exp, metric, mode)
    return SearchResult(exp, metric, mode, meta["metrics"][metric], trial_id, meta.get("epoch"),
                        dict(meta.get("train_config") or {}), ckpt, bundle_of(exp))


def _tune_options() -> dict:
    """tune's options by keyword: {dest: (its flag, whether it takes no value, its default)}."""
    from .tune import _parser

    return {a.dest: (a.option_strings[-1], a.nargs == 0, a.default) for a in _parser()._actions
            if a.option_strings and a.dest != "help"}


def search_argv(data=None, space="default", *, budget=None, keywords=None, storage=None, name=None,
                num_samples=None, export=True, **options) -> list[str]:
    """tune's command line for `search`'s arguments; ConfigError for an option tune does not have."""
    known = _tune_options()
    given = {"search_space": space, "data": data, "time_budget": budget, "storage": storage, "name": name,
             "num_samples": num_samples, "no_export": not export, **options}
    for key in ("data", "storage"):
        if isinstance(given[key], (str, os.PathLike)):
            given[key] = os.path.expanduser(given[key])  # as a shell would
    if isinstance(keywords, (list, tuple)):
        keywords = ",".join(map(str, keywords))
    given["keywords"] = keywords
    argv = []
    for key, value in given.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"search(): no option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                              + f"; the options are python -m audionet_ray.tune's: {', '.join(sorted(known))}")
        flag, is_switch, default = known[key]
        if is_switch:
            argv += [flag] if value else []
        elif value is not None and value != default:  # what tune does anyway is not said (--resume refuses it)
            argv += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return argv


class _Tee(io.TextIOBase):
    """stderr as it was, with a copy of its lines kept: tune says what went wrong there."""

    def __init__(self, stream):
        self.stream, self.text = stream, io.StringIO()

    def write(self, s: str) -> int:
        self.text.write(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()


def _failure(text: str, code) -> ConfigError:
    lines = [line for line in text.splitlines() if line.strip()]
    said = [line for line in lines if "error:" in line]  # tune's "error: ..." and argparse's "PROG: error: ..."
    return ConfigError(said[-1].split("error:", 1)[1].strip() if said else
                       f"the search failed (python -m audionet_ray.tune exit status {code})"
                       + (f": {lines[-1]}" if lines else ""))


def _check_options(argv: list[str]) -> None:
    """The search's options and space file as tune checks them before it starts Ray (ConfigError)."""
    from .training.config import parse_keywords
    from .corpus.keyword_source import keyword_folders
    from .tuning.search_space import load_spec, parse_duration
    from .tune import _parser, apply_overrides

    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        raise ConfigError(f"search(): invalid options {argv}") from None
    if args.time_budget is not None:
        parse_duration(args.time_budget, "--time-budget")
    if args.resume:
        return
    spec = apply_overrides(load_spec(args.search_space), args)  # keywords, --synthesize's options, the trial cap
    if spec.data.synthesize:
        keyword_folders(parse_keywords(spec.fixed.get("keywords")))  # a phrase espeak-ng cannot speak


def search(data=None, space="default", *, budget=None, keywords=None, storage=None, name=None, num_samples=None,
           export=True, synthesize=False, synthesize_speakers=None, synthesize_engines=None, **options) -> SearchResult:
    """Run a search, as `python -m audionet_ray.tune` does, and return its best result.

    data: a dataset root (prepared on first use) or a prepared folder; None: the demo dataset.
    space: a search space YAML file, or a built-in one by name (default, smoke, large, pareto).
    budget: the search's wall time ("90s", "30m", "1.5h" or seconds); None: until num_samples.
    keywords: a keyword search for these words (a list or "yes,no,..."); None: the space's.
    synthesize: speak the keywords (words or phrases, "hey computer") with espeak-ng, joined with
    `data`'s clips when `data` is given (its other words become negatives); synthesize_speakers:
    how many speakers (default: tune's, keyword_source.DEFAULT_SPEAKERS); synthesize_engines: the
    espeak-ng synthesizers speaking ("espeak" or a list of speech_data.ENGINES; None: all).
    storage: where the experiment folder goes (default: tune's, ./runs); name: its name
    (default: search-<date>-<time>); num_samples: trials in all (default: the space's).
    export: export the best checkpoint as a bundle into EXPERIMENT/bundle (and judge it on the
    test split), as the command does.
    options: any other option of `python -m audionet_ray.tune`, by its name with underscores
    (epochs=4, searcher="random", scheduler="fifo", seed=1, address="auto", quiet=True,
    log_level="warning" for its warnings alone, ...).

    Raises ConfigError (one line, tune's) for a bad setting, bad data or a search that left no checkpoint.
    """
    from .core.storage import location
    from .tune import _parser, main

    if name is None and not options.get("resume"):
        name = time.strftime("search-%Y%m%d-%H%M%S")  # chosen here, so that the folder is known
    argv = search_argv(data, space, budget=budget, keywords=keywords, storage=storage, name=name,
                       num_samples=num_samples, export=export, synthesize=synthesize,
                       synthesize_speakers=synthesize_speakers, **options,
                       synthesize_engines=",".join(synthesize_engines) if isinstance(synthesize_engines, (list, tuple))
                       else synthesize_engines)
    if options.get("resume"):
        experiment = location(options["resume"]).resolve()
    else:
        experiment = location(storage or _parser().get_default("storage")).resolve() / name
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        _check_options(argv)  # a mistake in the options is named first, as the command names it
        raise ConfigError("search(): Ray is already initialised in this process, and the search starts or attaches "
                          "its own: call ray.shutdown() first (address='auto' or a cluster's address attaches to it)")
    tee = _Tee(sys.stderr)
    saved, sys.stderr = sys.stderr, tee
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: a bad value
        code = e.code
    finally:
        sys.stderr = saved
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()  # the search's own Ray (or its connection to a cluster), as when the command exits
    if code:
        raise _failure(tee.text.getvalue(), code)
    return result_of(experiment)
