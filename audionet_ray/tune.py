"""The search: `python -m audionet_ray.tune`, Ray Tune + Optuna TPE + ASHA over the training loop.

Each trial is a Tune function trainable. A trial of one worker on one machine runs the loop in
that process (trial_process.py; Tune reuses the process for the next trial); otherwise it builds
and fits one TorchTrainer (the shape Ray 2.60 documents for Tune driving Train V2), whose
`TuneReportCallback` forwards each epoch's metrics to Tune. ASHA stops weak trials and Optuna
proposes the next ones. Every trial's run folder is named after the trial id, so a restarted
trial (or a restored search) resumes from its last checkpoint instead of epoch 0. What runs
where and for how long is planned in plan.py; the Ray wiring is tuner.py; this module is the
command. A restored search also gets back what Tune does not save:
ASHA's rungs (`refill_asha`) and the time budget that was left (`TimeBudget`, budget.json).

With no arguments it makes the demo dataset, prepares it (cached) and runs the default search.
With `--keywords "hey computer" --synthesize` the keywords are spoken by espeak-ng instead
(keyword_source; joined with --data's clips when given; `--synthesize-engines espeak` keeps the
voices to one synthesizer) and the search is a keyword search. `--time-budget` holds the whole
command, typed phrase to exported bundle: the time before the search comes out of it and the
export's end is reserved (TimeBudget, end_reserve_s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from .core import log
from .core.cluster import cluster_capacity, cluster_nodes
from .training.config import DEFAULT_STORAGE, METRIC_MODES, ConfigError, TrainConfig, setting
from .corpus.discover import DatasetError
from .tuning.experiment import (SPEC_FILE, best_checkpoint, has_spec, load_spec_json, local_experiment,
                         lock_experiment, pareto_front, read_budget, save_spec, write_budget,
                         write_results)
from .corpus.keyword_source import DEFAULT_SPEAKERS, DEFAULT_TAKES, parse_engines
from .tuning.plan import (END_FIXED_S, MIN_TRIALS_S, STREAM_S_PER_HOUR_MMAC, TimeBudget,  # noqa: F401 - tune's names too
                   choose_trainer, data_streams, end_reserve_s, fmt_duration, largest_macs, plan_resources,
                   planned_trials, search_over, trial_resources)
from .core.ranking import ranked
from .tuning.search_space import TRAINERS, SearchSpec, check_settings, load_spec, parse_duration, trial_cap
from .corpus.speech_data import ENGINES
from .core.storage import hides_password, is_uri, location, redact
from .tuning.tuner import (BudgetRecorder, TrialLines, _fmt, build_tuner, make_scheduler,  # noqa: F401 - tune's names too
                    refill_asha, run_trial)

logger = log.get(__name__)

# ----------------------------------------------------------------------------- results

def print_table(rows: list[dict], metric: str, mode: str = "max") -> None:
    """One line per trial, the best by `metric` (in `mode`) first; trials without it last."""
    if not rows:
        return
    cols = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("val_loss", "train_loss")]
    table = [[_fmt(r.get(c)) for c in cols] for r in ranked(rows, f"best_{metric}", mode)]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    logger.info("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        logger.info("  ".join(v.ljust(w) for v, w in zip(t, widths)))


# ----------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.tune", description=__doc__.splitlines()[0],
                                 formatter_class=log.HelpFormatter)
    ap.add_argument("--search-space", default="default", help="YAML file, or a name in search_spaces/: default, smoke, large, pareto, robust")
    ap.add_argument("--data", help="dataset root (prepared on first use) or prepared folder; default: the demo dataset")
    ap.add_argument("--keywords", help="a keyword search: these words (comma-separated) are detected, every other "
                                       "word is _unknown_, noise is _silence_; trials rank by frr_at_target")
    ap.add_argument("--synthesize", action="store_true",
                    help="speak the keywords (words or phrases: --keywords \"hey computer\") with espeak-ng, cached in "
                         "$AUDIONET_CACHE (~/.cache/audionet_ray); with --data its clips join them and its other "
                         "words are negatives; without, the synthesized set alone")
    ap.add_argument("--synthesize-speakers", type=int, metavar="N",
                    help=f"speakers of --synthesize (default {DEFAULT_SPEAKERS}, {DEFAULT_TAKES} takes each)")
    ap.add_argument("--synthesize-engines", metavar="ENGINE[,ENGINE]",
                    help=f"espeak-ng synthesizers whose voices --synthesize speaks with ({', '.join(ENGINES)}; "
                         "default: all), e.g. to keep one out of training and test on it")
    ap.add_argument("--window", type=float, metavar="SECONDS",
                    help="clip window of the prepared data (default: the data's: wakeword.json's for --synthesize, else 1 s)")
    ap.add_argument("--metric", choices=sorted(METRIC_MODES),
                    help="what trials are ranked, stopped and exported by (default: the space's; frr_at_target "
                         "for a keyword search)")
    ap.add_argument("--num-samples", type=int, help="trials in total; with a time budget, a cap (default: trials "
                                                    "keep starting until the budget is spent, at most 1000)")
    ap.add_argument("--max-concurrent", type=int, help="trials at once (default: what the resources fit)")
    ap.add_argument("--epochs", type=int, help="epochs per trial (ASHA's max_t; default: the space's)")
    ap.add_argument("--gpus-per-trial", help="GPUs per trial; fractions share a GPU (0.5, 0.25); 'auto' "
                                             "(default: the space's)")
    ap.add_argument("--workers-per-trial", type=int, help="Ray Train workers per trial (DDP; one per GPU; "
                                                          "default: the space's)")
    ap.add_argument("--cpus-per-worker", help="CPUs per Ray Train worker, or 'auto' (every core trains; "
                                              "default: the space's)")
    ap.add_argument("--trainer", choices=TRAINERS,
                    help="who trains a trial: torch, a Ray Train TorchTrainer (its own processes); trial, Tune's trial "
                         "process (one worker, data in memory, one machine: starts in seconds); auto (default): trial "
                         "where it can")
    ap.add_argument("--searcher", choices=["optuna", "random"], help="who proposes trials (default: the space's)")
    ap.add_argument("--scheduler", choices=["asha", "fifo"], help="asha stops weak trials early (default: the space's)")
    ap.add_argument("--seed", type=int, help="seed of the searcher (default: the space's)")
    ap.add_argument("--time-budget", metavar="DURATION",
                    help="wall time of the whole command from launch (90s, 30m, 1.5h or seconds): synthesis and "
                         "preparation come out of it and the export and its evaluation are reserved; trials keep starting "
                         "until the rest is spent (--num-samples caps them), but none that cannot reach its first rung "
                         "in the time left; --resume continues with what was left")
    ap.add_argument("--storage", default=DEFAULT_STORAGE, help="where experiments go: a local folder, NFS or s3:// (default: ./runs)")
    ap.add_argument("--name", help="experiment name (default: search-<date>-<time>)")
    ap.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted search")
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                    help="attach to a running Ray cluster ('auto'; default: $RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    ap.add_argument("--no-export", action="store_true", help="do not export the best trial at the end")
    ap.add_argument("--optuna-storage", metavar="URL",
                    help="SQLAlchemy URL of the Optuna study (default: sqlite:///EXPERIMENT_DIR/optuna.db); "
                         "watch it with optuna-dashboard URL")
    out = ap.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="no progress display, only the final table "
                                                          "(--log-level warning: not even that)")
    out.add_argument("--verbose", action="store_true", help="also every epoch of every trial and the workers' logs")
    log.add_option(ap)
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """tune's options, --log-level applied: warning and error also quiet Tune's progress (as --quiet)."""
    args = _parser().parse_args(argv)
    log.setup(args.log_level)
    args.quiet = args.quiet or log.quiet()
    logger.debug("tune's options: " + ", ".join(f"{k}={redact(v) if k == 'optuna_storage' else v}"
                                                for k, v in sorted(vars(args).items())))
    return args


def apply_keywords(spec: SearchSpec, args: argparse.Namespace) -> None:
    """--keywords (or the space's `keywords`) makes a keyword search: the detector's metric unless
    --metric or a space that names another keyword metric says otherwise."""
    from .training.config import keywords_option, parse_keywords, with_keyword_defaults

    if args.keywords is not None:
        spec.fixed["keywords"] = ",".join(keywords_option(args.keywords))
    keywords = parse_keywords(spec.fixed.get("keywords"))
    if keywords:
        spec.fixed = with_keyword_defaults(spec.fixed)
    if args.metric:
        spec.tune.metric, spec.tune.mode = args.metric, METRIC_MODES[args.metric]
    elif keywords and spec.tune.metric == "val_accuracy":
        spec.tune.metric, spec.tune.mode = "frr_at_target", "min"
    if spec.tune.metric in METRIC_MODES:  # a known metric is ranked its own way, whatever a space's mode says
        spec.tune.mode = METRIC_MODES[spec.tune.metric]
    if spec.tune.metric == "frr_at_target":
        if not keywords:
            raise ConfigError("metric frr_at_target: only a keyword search reports it; add --keywords yes,no,...")
        if spec.fixed.get("detector_minutes", TrainConfig.detector_minutes) <= 0:
            raise ConfigError("metric frr_at_target: detector_minutes is 0, so no trial measures it")


def apply_synthesize(spec: SearchSpec, args: argparse.Namespace) -> None:
    """--synthesize, --synthesize-speakers and --synthesize-engines (or the space's `fixed: {synthesize:
    true}`): the data comes from the keywords' text, so they must be given."""
    from .training.config import parse_keywords

    if args.synthesize:
        spec.data.synthesize = True
    if args.synthesize_speakers is not None:
        if not spec.data.synthesize:
            raise ConfigError("--synthesize-speakers: only with --synthesize")
        if args.synthesize_speakers < 3:
            raise ConfigError(f"--synthesize-speakers {args.synthesize_speakers}: at least 3 "
                              "(train, validation and test each need one)")
        spec.data.synthesize_speakers = args.synthesize_speakers
    if args.synthesize_engines is not None:
        if not spec.data.synthesize:
            raise ConfigError("--synthesize-engines: only with --synthesize")
        spec.data.synthesize_engines = list(parse_engines(args.synthesize_engines))
    if spec.data.synthesize and not parse_keywords(spec.fixed.get("keywords")):
        raise ConfigError("--synthesize: no keyword to speak: add --keywords \"hey computer\" (commas separate keywords)")
    if spec.data.synthesize and "class_balance" not in spec.fixed and "class_balance" not in spec.search:
        # 240 clips of the phrase against 2 880 negatives: balanced, the phrase's FRR at 1 FA/h on
        # held-out voices fell from 52.9 % to 29.4 % (bench_wakeword, docs/performance.md)
        spec.fixed["class_balance"] = True


def source_data(spec: SearchSpec, data: str | None) -> tuple[str | Path, list[str] | None]:
    """The dataset to prepare and its keywords: the synthesized keywords (joined with `data` when
    given; the space's keywords become their folder names), `data`, or the demo dataset."""
    from .training.config import parse_keywords
    from .corpus.keyword_source import source_for

    keywords = parse_keywords(spec.fixed.get("keywords")) or None
    if not spec.data.synthesize:
        return data or demo_dataset(), keywords
    source, folders = source_for(keywords, data, speakers=spec.data.synthesize_speakers or DEFAULT_SPEAKERS,
                                 engines=spec.data.synthesize_engines)
    spec.fixed["keywords"] = ",".join(folders)
    return source, folders


def apply_overrides(spec: SearchSpec, args: argparse.Namespace) -> SearchSpec:
    """The space with the command line's options; with a time budget num_samples becomes its cap
    (search_space.trial_cap: --num-samples if given, else MAX_TRIALS)."""
    apply_keywords(spec, args)
    apply_synthesize(spec, args)
    t, r = spec.tune, spec.resources
    for name in ("num_samples", "max_concurrent", "searcher", "scheduler", "seed"):
        if getattr(args, name) is not None:
            setattr(t, name, getattr(args, name))
    if args.time_budget is not None:
        parse_duration(args.time_budget, "--time-budget")
        t.time_budget = args.time_budget
    t.num_samples = trial_cap(t.num_samples, budgeted=t.time_budget is not None, given=args.num_samples is not None)
    if args.epochs is not None:
        spec.fixed["epochs"] = args.epochs
    if args.workers_per_trial is not None:
        r.workers_per_trial = args.workers_per_trial
    if args.trainer is not None:
        r.trainer = args.trainer
    if args.cpus_per_worker is not None:
        try:
            r.cpus_per_worker = args.cpus_per_worker if args.cpus_per_worker == "auto" else float(args.cpus_per_worker)
        except ValueError:
            raise ConfigError(f"--cpus-per-worker {args.cpus_per_worker}: a number (0.5, 1, 4, ...) or 'auto'") from None
    if args.gpus_per_trial is not None:
        try:
            r.gpus_per_trial = args.gpus_per_trial if args.gpus_per_trial == "auto" else float(args.gpus_per_trial)
        except ValueError:
            raise ConfigError(f"--gpus-per-trial {args.gpus_per_trial}: a number (0, 0.25, 1, ...) or 'auto'") from None
    check_settings(spec, f"{spec.source} with the command line's options" if spec.source else "command line")
    TrainConfig.from_dict({**spec.fixed, "data": ""})
    return spec


def demo_dataset() -> Path:
    """The demo data, generated once into the cache: speech spoken by espeak-ng (speech_data's
    demo preset), or the formant synthesizer's clips where espeak-ng cannot be loaded."""
    from .corpus import speech_data

    cache = Path(os.environ.get("AUDIONET_CACHE", "~/.cache/audionet_ray")).expanduser()
    root, cfg = cache / "speech_demo", speech_data.DEMO
    if speech_data.generated_with(root) == cfg.to_dict():
        return root
    try:
        logger.info(f"generating the demo dataset (espeak-ng speech: {len(cfg.words)} words x {cfg.speakers} "
                    f"speakers x {cfg.takes} takes) into {root} ...")
        return speech_data.generate(root, cfg)
    except speech_data.SpeechUnavailable as e:
        logger.warning(f"espeak-ng cannot be used ({e}): the demo uses the formant synthesizer (demo_data) instead")
    from .corpus.demo_data import generate

    root = cache / "demo_data"
    if not (root / "testing_list.txt").exists():
        logger.info(f"generating the demo dataset (formant synthesizer) into {root} ...")
        generate(root)
    return root


def prepare_search(args: argparse.Namespace) -> tuple[SearchSpec, str, Path]:
    """Spec, prepared data and experiment folder, from the command line or a search to resume."""
    from .pipeline.data import ensure_prepared

    if args.resume:
        exp_dir = location(args.resume).resolve()  # a local folder or a URI (s3://...)
        saved = load_spec_json(exp_dir)
        lock_experiment(exp_dir)  # one driver per experiment; released at exit, or by the kernel if killed
        return SearchSpec.from_dict(saved["spec"]), saved["data"], exp_dir
    spec = apply_overrides(load_spec(args.search_space), args)
    source, keywords = source_data(spec, args.data)
    data = ensure_prepared(source, keywords=keywords, window=args.window)
    check_space_fits_data(spec, data)
    name = args.name or time.strftime("search-%Y%m%d-%H%M%S")
    exp_dir = location(args.storage).resolve() / name
    if has_spec(exp_dir):
        raise ConfigError(f"{exp_dir} already holds a search: --resume {exp_dir} to continue it, or pick another --name")
    exp_dir.mkdir(parents=True, exist_ok=True)
    lock_experiment(exp_dir)  # before search.json: a second driver with the same --name writes nothing
    if has_spec(exp_dir):  # one that got there first
        raise ConfigError(f"{exp_dir} already holds a search: --resume {exp_dir} to continue it, or pick another --name")
    saved = {"spec": spec.to_dict(), "data": str(data), "data_given": str(args.data) if args.data else None,
             "window": args.window}
    if spec.tune.searcher == "optuna":
        from .tuning.study import study_storage

        saved["optuna_storage"] = study_storage(args.optuna_storage, exp_dir)  # checked before Ray starts
    elif args.optuna_storage:
        raise ConfigError(f"--optuna-storage: only --searcher optuna keeps an Optuna study; this search uses {spec.tune.searcher}")
    save_spec(exp_dir, saved)
    return spec, str(data), exp_dir


def check_space_fits_data(spec: SearchSpec, data: str | Path) -> None:
    """Every train_ratio the space can sample must leave speakers to train and validate on;
    otherwise some trials would fail, or rank by an empty validation set, hours in."""
    from .pipeline.dataset import PreparedDataset

    dataset = PreparedDataset.open(data)
    where = f"{spec.source or 'search space'}: " + ("search." if "train_ratio" in spec.search else "")
    for ratio in sorted(set(spec.value_range("train_ratio"))):
        try:
            dataset.check_train_ratio(ratio, data)
        except DatasetError as e:
            raise ConfigError(f"{where}{e}") from None


def start_ray(args: argparse.Namespace) -> dict:
    """Attach to a cluster or start a local Ray; returns what each trial driver holds."""
    from .core.ray_setup import init_ray, trial_driver_resources

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")  # search state on disk at most 5 s old
    init_ray(args.address, args.num_cpus, log_to_driver=args.verbose)  # workers' logs drown the table
    return trial_driver_resources()


# ----------------------------------------------------------------------------- --resume's options

RESUME_RUN_OPTIONS = {"resume", "address", "num_cpus", "quiet", "verbose", "no_export", "log_level"}  # how this run runs


def _given_options(argv: list[str] | None) -> dict:
    """The options the command line names (not their defaults)."""
    ap = _parser()
    for action in ap._actions:
        action.default = argparse.SUPPRESS
    return vars(ap.parse_args(argv))


def _saved_value(option: str, spec: SearchSpec, saved: dict, exp_dir: Path):
    t, r = spec.tune, spec.resources
    return {"search_space": spec.source, "data": saved.get("data"), "num_samples": t.num_samples,
            "max_concurrent": t.max_concurrent, "epochs": spec.fixed.get("epochs", TrainConfig.epochs),
            "gpus_per_trial": r.gpus_per_trial, "workers_per_trial": r.workers_per_trial,
            "cpus_per_worker": r.cpus_per_worker, "searcher": t.searcher, "scheduler": t.scheduler, "seed": t.seed,
            "metric": t.metric, "keywords": spec.fixed.get("keywords"), "storage": exp_dir.parent,
            "name": exp_dir.name, "optuna_storage": saved.get("optuna_storage"), "synthesize": spec.data.synthesize,
            "synthesize_speakers": spec.data.synthesize_speakers, "synthesize_engines": spec.data.synthesize_engines,
            "window": saved.get("window")}.get(option, "(not recorded)")


def _as_folder(keyword: str) -> str:
    """A keyword as --synthesize names its folder ("Hey Computer" -> hey_computer), else as given."""
    from .corpus.wakeword import folder_of

    try:
        return folder_of(keyword)
    except ValueError:  # not a phrase espeak-ng can say: a data folder's own name
        return keyword


def _same(option: str, given, saved, record: dict) -> bool:
    """Whether an option repeats what the search saved, compared as the search resolved it: a space's
    name and its file, a dataset root and its prepared folder, keywords in any order, relative paths."""
    from .training.config import parse_keywords
    from .tuning.search_space import _locate

    if option == "keywords":  # "hey computer" was saved as its folder, hey_computer
        return sorted(map(_as_folder, parse_keywords(str(given)))) == sorted(map(_as_folder, parse_keywords(saved)))
    if option == "synthesize_engines":  # in any order; none saved: every engine
        try:
            return sorted(parse_engines(given)) == sorted(saved or ENGINES)
        except ConfigError:
            return False
    if option == "search_space":
        try:
            return str(_locate(given)) == str(saved)
        except ConfigError:
            return False
    if option == "data":
        return any(str(location(given).resolve()) == str(location(v).resolve())
                   for v in (saved, record.get("data_given")) if v)
    if option == "storage":
        return str(location(given).resolve()) == str(saved)
    try:
        return float(given) == float(saved)
    except (TypeError, ValueError):
        return str(given) == str(saved)


def study_url_of(saved: str | None, given: str | None) -> str | None:
    """The study's URL: search.json's, or the command line's where search.json hides its password."""
    return given if hides_password(saved) and given else saved


def check_resume_options(args: argparse.Namespace, argv: list[str] | None, spec: SearchSpec, exp_dir: Path) -> None:
    """--resume continues the search search.json describes: an option that would change it is
    refused in one line, never ignored. A new --time-budget is applied (and saved): the budget is
    this driver's clock, counted on from budget.json. The number of trials stays as saved (Tune
    restores it with the experiment): a budgeted search's cap, or a plain search's num_samples. A
    search the budget ended (spent, or closed to new trials) starts no new trial even with more
    time: Tune saved its searcher as finished. --optuna-storage may repeat the saved URL, to give
    the password search.json hides."""
    from .tuning.study import check_study

    saved = load_spec_json(exp_dir)
    for option, value in sorted(_given_options(argv).items()):
        was = _saved_value(option, spec, saved, exp_dir)
        if option in RESUME_RUN_OPTIONS or option == "time_budget" or _same(option, value, was, saved) or (
                option == "optuna_storage" and redact(value) == was):
            continue
        flag = "--" + option.replace("_", "-")
        shown = redact(value) if option == "optuna_storage" else value
        raise ConfigError(f"{flag} {shown}: --resume continues the search as {exp_dir / SPEC_FILE} saved it "
                          f"({option} {was}), which it cannot change: drop {flag}, or start a new search")
    if args.time_budget is not None:
        parse_duration(args.time_budget, "--time-budget")
        spec.tune.time_budget = args.time_budget
        save_spec(exp_dir, {**saved, "spec": spec.to_dict()})
    url = study_url_of(saved.get("optuna_storage"), args.optuna_storage)
    if url:
        check_study(url, exp_dir.name)  # a corrupt optuna.db: one line, not a traceback from Tune's restore


class _Placement(NamedTuple):
    """Where the trials run: GPUs per worker, trials at once, in Tune's process or a TorchTrainer, and why."""

    gpus_per_worker: float
    concurrent: int
    why: str
    in_trial: bool
    trainer_why: str


def _plan_search(args: argparse.Namespace, argv: list[str] | None, t0: float
                 ) -> tuple[SearchSpec, str, Path, TimeBudget | None]:
    """Settings, prepared data, the (locked) experiment folder and the time budget, before Ray starts."""
    spec, data, exp_dir = prepare_search(args)  # takes the experiment's lock
    if args.resume:
        check_resume_options(args, argv, spec, exp_dir)
    budget_s = spec.tune.time_budget_s
    first_rung = min(spec.tune.grace_period, int(spec.fixed.get("epochs", TrainConfig.epochs)))  # a short run's end is its rung
    budget = TimeBudget.resume(budget_s, read_budget(exp_dir), first_rung, t0,
                               end_reserve_s(spec, data, export=not args.no_export)) if budget_s else None
    return spec, data, exp_dir, budget


def _place_trials(args: argparse.Namespace, spec: SearchSpec, data: str, exp_dir: Path,
                  budget: TimeBudget | None) -> _Placement:
    """Fit the trials to the cluster (autoscaling included); ConfigError when the budget cannot hold one."""
    capacity = cluster_capacity()  # incl. autoscaling
    gpus_per_worker, concurrent, why = plan_resources(spec, capacity,
                                                      streaming=data_streams(data, spec.resources.workers_per_trial))
    in_trial, trainer_why = choose_trainer(spec, data, exp_dir, cluster_nodes(capacity))
    if budget and not args.resume:  # a resumed search may have spent it: it reports what it has
        budget.check_fits()
    return _Placement(gpus_per_worker, concurrent, why, in_trial, trainer_why)


def _announce(args: argparse.Namespace, spec: SearchSpec, exp_dir: Path, budget: TimeBudget | None,
              place: _Placement) -> str | None:
    """Say what the search will do and where to watch it; returns the Optuna study's URL, if any."""
    timing = f"; {budget.split_line()}" if budget else ""
    logger.info(f"search {exp_dir.name}: {planned_trials(spec.tune.num_samples, budget)}, {spec.tune.searcher} + "
                f"{spec.tune.scheduler}, space {spec.source or 'saved'}{timing}; {place.why}; {place.trainer_why}")
    study_url = study_url_of(load_spec_json(exp_dir).get("optuna_storage"), args.optuna_storage)
    if not args.quiet:
        logger.info(f"watch it: tensorboard --logdir {exp_dir}" + (f"  |  optuna-dashboard {redact(study_url)}" if study_url else ""))
    return study_url


def _fit(tuner, budget: TimeBudget | None):
    """Run the search (or, with the budget already spent, only collect its results) and say why it stopped."""
    if budget and budget.left() <= 0:
        logger.warning(f"the time budget of {fmt_duration(budget.budget_s)} is spent: no trial runs; the results so far "
                       "follow")
        return tuner.get_results()
    results = tuner.fit()
    if budget and budget.left() <= 0:
        logger.info(f"\ntime budget of {fmt_duration(budget.budget_s)} reached: unfinished trials stopped "
                    "(their checkpoints are kept)")
    elif budget and budget.closed:
        spent, left, need = budget.closed
        logger.info(f"\ntime budget of {fmt_duration(budget.budget_s)}: no trial started after {fmt_duration(spent)}, "
                    f"as the {fmt_duration(left)} left was less than the {fmt_duration(need or 0)} trials took to reach "
                    f"epoch {budget.first_rung}")
    return results


def _summarize(results, spec: SearchSpec, exp_dir: Path, study_url: str | None, budget: TimeBudget | None) -> int:
    """results.csv, the table, the best trial and the fronts; 1 when no trial left a checkpoint to name."""
    rows = write_results(results, exp_dir, spec.tune.metric, spec.tune.mode)
    finished = search_over(len(results), results.num_terminated + results.num_errors, spec.tune.num_samples, budget)
    if study_url and finished:
        from .tuning.study import close_orphans

        close_orphans(study_url, exp_dir.name)
    logger.info("")
    print_table(rows, spec.tune.metric, spec.tune.mode)
    errors = sum(1 for r in results if r.error)
    try:
        trial_id, ckpt, meta = best_checkpoint(exp_dir, spec.tune.metric, spec.tune.mode)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    logger.info(f"\nbest trial {trial_id}: {spec.tune.metric} {meta['metrics'][spec.tune.metric]:.4f} at epoch "
                f"{meta['epoch']} with " + ", ".join(f"{k}={_fmt(setting(meta['train_config'], k))}" for k in spec.search))
    logger.info(f"best checkpoint: {ckpt}")
    for objective in spec.tune.objectives:
        print_front(exp_dir, spec.tune.metric, spec.tune.mode, objective)
    if errors:
        logger.warning(f"warning: {errors} trial(s) failed; see {exp_dir}", extra=log.STDERR)
    return 0


def _finish(args: argparse.Namespace, spec: SearchSpec, data: str, exp_dir: Path, budget: TimeBudget | None,
            n_trials: int) -> None:
    """The search's products: the exported bundle, the report, the budget spent, and where it all is."""
    if not args.no_export:
        export_best(exp_dir, spec.tune.metric, data, spec.tune.mode)
    if not is_uri(exp_dir):
        report_or_warn(exp_dir)
    if budget:
        write_budget(exp_dir, budget.state())
        logger.info(f"time spent: {fmt_duration(budget.spent())} of the {fmt_duration(budget.budget_s)} budget, "
                    f"{n_trials} trial(s)")
    logger.info(f"experiment: {exp_dir}  (results.csv; resume with --resume {exp_dir})")


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()  # the time budget counts from here: preparing data and starting Ray included
    args = parse_args(argv)
    try:
        spec, data, exp_dir, budget = _plan_search(args, argv, t0)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    driver_resources = start_ray(args)
    try:
        place = _place_trials(args, spec, data, exp_dir, budget)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    study_url = _announce(args, spec, exp_dir, budget, place)
    tuner = build_tuner(spec, data, exp_dir, place.gpus_per_worker, place.concurrent, driver_resources,
                        resume=bool(args.resume), verbosity=0 if args.quiet else 2 if args.verbose else 1,
                        optuna_storage=study_url, budget=budget, in_trial=place.in_trial)
    results = _fit(tuner, budget)
    if _summarize(results, spec, exp_dir, study_url, budget):
        return 1
    _finish(args, spec, data, exp_dir, budget, len(results))
    return 0


def print_front(exp_dir: Path, metric: str, mode: str, objective: str) -> None:
    """The Pareto front of `metric` against `objective`, and how to export a point of it."""
    from .modeling.costs import LIMIT_OF

    points, front = pareto_front(exp_dir, metric, mode, objective)
    logger.info(f"\nPareto front of {metric} against {objective} ({len(front)} of {len(points)} trials' best checkpoints):")
    for value, cost, trial_id, ckpt, meta in front:
        logger.info(f"  {metric} {value:.4f}  {objective} {cost:g}  trial {trial_id}, epoch {meta['epoch']}")
    if len(front) > 1:
        logger.info(f"export a cheaper point: python -m audionet_ray.export {exp_dir} BUNDLE "
                    f"--pick {LIMIT_OF[objective]}={front[0][1]:g}")


def report_or_warn(exp_dir: Path) -> None:
    from .reporting.report import write_report

    try:
        logger.info(f"report: {write_report(exp_dir)}")
    except Exception as e:  # noqa: BLE001 - the search is done and saved; a failed plot must not fail it
        logger.warning(f"warning: no report ({type(e).__name__}: {e}); try python -m audionet_ray.report {exp_dir}",
                       extra=log.STDERR)


def export_best(exp_dir: Path, metric: str, data: str, mode: str = "max") -> None:
    """The best checkpoint as a bundle in EXPERIMENT/bundle, judged on the test split by evaluate
    (its test_metrics.json and confusion matrix go into the bundle, where the report reads them)."""
    from .detection.bundle import load
    from .deploy.evaluate import DET_FILE, METRICS_FILE, PNG_FILE, STREAMING_FILE, evaluate, evaluate_streaming
    from .deploy.export import export

    local = local_experiment(exp_dir, metric, mode)  # on s3:// etc.: its best checkpoint, copied here
    bundle = export(local, local / "bundle", metric=metric, mode=mode)
    logger.info(f"exported the best model to {bundle}  (python -m audionet_ray.predict {bundle} CLIP.wav)")
    try:
        b = load(bundle)
        s = evaluate(b, data, bundle)
    except DatasetError as e:  # e.g. a dataset with no test split: the bundle stands without it
        logger.warning(f"not evaluated on a test split: {e}")
        return
    logger.info(f"its test accuracy: {s['accuracy']:.4f} on {s['n_clips']} clips ({METRICS_FILE}, {PNG_FILE} in the bundle)")
    if b.config.get("task") == "keywords":  # a keyword detector: judged as one, on test-speaker streams
        try:
            r = evaluate_streaming(b, data, bundle)
        except DatasetError as e:
            logger.warning(f"not judged on test-speaker streams: {e}")
            return
        op, at = r["operating_point"], r["bundle_threshold"]["point"]
        logger.info(f"as a keyword spotter on test-speaker streams ({r['keyword_free_hours']:.1f} h keyword-free): "
                    f"false rejects {100 * at['frr']:.1f} % at {at['fa_per_hour']:.2g} false accepts/h (the bundle's "
                    f"threshold {at['threshold']:g}); " + (f"{100 * op['frr']:.1f} % at <= {r['target_fa_per_hour']:g}/h "
                    f"(threshold {op['threshold']:g})" if op else f"no threshold reaches {r['target_fa_per_hour']:g}/h")
                    + f"; clip accuracy {s['accuracy']:.4f} ({STREAMING_FILE}, {DET_FILE})")
    if is_uri(exp_dir):
        logger.info(f"and copied it to {(exp_dir / 'bundle').upload_from(bundle)}")


if __name__ == "__main__":
    sys.exit(main())
