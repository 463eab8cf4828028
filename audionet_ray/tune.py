"""The search: `python -m audionet_ray.tune`, Ray Tune + Optuna TPE + ASHA over TorchTrainer runs.

Each trial is a Tune function trainable that builds and fits one TorchTrainer (the shape Ray
2.60 documents for Tune driving Train V2); `TuneReportCallback` forwards each epoch's metrics
to Tune, where ASHA stops weak trials and Optuna proposes the next ones. Every trial's Train
run is named after the trial id, so a restarted trial (or a restored search) resumes from its
last checkpoint instead of epoch 0.

With no arguments it makes the demo dataset, prepares it (cached) and runs the default search.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .cluster import cluster_capacity
from .config import ConfigError, RunSettings, TrainConfig
from .discover import DatasetError
from .results import SPEC_FILE, TRAIN_RUNS, best_checkpoint, load_spec_json, local_experiment
from .storage import is_uri, location
from .search_space import SearchSpec, check_settings, load_spec, to_tune_space, tpe_startup_trials

# ----------------------------------------------------------------------------- one trial

def run_trial(config: dict, spec: dict, data: str, exp_dir: str, gpus_per_worker: float) -> None:
    """One trial: fit a TorchTrainer with the sampled config; metrics go to Tune per epoch."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from .train import build_trainer

    s = SearchSpec.from_dict(spec)
    cfg = TrainConfig.from_dict({**s.fixed, **config, "data": data})
    run = RunSettings(
        storage=f"{exp_dir}/{TRAIN_RUNS}",
        name=tune.get_context().get_trial_id(),  # stable: a retried or restored trial resumes
        workers=s.resources.workers_per_trial,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=s.resources.cpus_per_worker,
        max_failures=2,
    )
    result = build_trainer(cfg, run, callbacks=[TuneReportCallback()]).fit()
    if result.error:
        raise result.error


# ----------------------------------------------------------------------------- resources

def plan_resources(spec: SearchSpec, cluster: dict) -> tuple[float, int, str]:
    """GPUs per worker, concurrent trials, and a sentence saying why."""
    r, t = spec.resources, spec.tune
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 1.0)
    if r.gpus_per_trial == "auto":
        per_trial = 0.0 if gpus == 0 else (0.5 * r.workers_per_trial if gpus < 2 else float(r.workers_per_trial))
    else:
        per_trial = float(r.gpus_per_trial)
    if per_trial > 0 and gpus == 0:
        raise ConfigError(f"--gpus-per-trial {per_trial}: Ray sees no GPU here; use --gpus-per-trial 0")
    gpus_per_worker = per_trial / r.workers_per_trial
    data_cpus = 1.0 if cpus <= 8 else 0.25 * cpus  # Ray Data reads and decodes outside the workers
    by_cpu = math.floor((cpus - data_cpus) / (r.workers_per_trial * r.cpus_per_worker) + 1e-9)
    limits = {"CPUs": by_cpu}
    if per_trial > 0:
        limits["GPUs"] = math.floor(gpus / per_trial + 1e-9)
    if t.max_concurrent:
        limits["--max-concurrent"] = t.max_concurrent
    limits["trials"] = t.num_samples
    binding = min(limits, key=limits.get)
    n = max(1, limits[binding])
    if by_cpu < 1:
        raise ConfigError(f"a trial needs {r.workers_per_trial * r.cpus_per_worker:g} CPUs for its workers plus "
                          f"{data_cpus:g} for data, but Ray sees {cpus:g}: lower cpus_per_worker or workers_per_trial")
    device = f"{gpus_per_worker:g} GPU per worker" if per_trial else "CPU only"
    why = (f"{n} trial(s) at once, limited by {binding} ({cpus:g} CPUs, {gpus:g} GPUs; each trial "
           f"{r.workers_per_trial} worker(s) x {r.cpus_per_worker:g} CPU, {device}; {data_cpus:g} CPU kept for Ray Data)")
    return gpus_per_worker, n, why


# ----------------------------------------------------------------------------- the search

def build_tuner(spec: SearchSpec, data: str, exp_dir: Path, gpus_per_worker: float, concurrent: int,
                driver_resources: dict, resume: bool = False, verbosity: int = 1, optuna_storage: str | None = None):
    """verbosity: 0 final table only, 1 progress table and a line per trial, 2 also every result."""
    from ray import tune

    from .monitor import EpochTBXLogger, StudySearch, open_storage, progress_reporter

    t = spec.tune
    max_epochs = int(spec.fixed.get("epochs", TrainConfig.epochs))
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec.to_dict(), data=data, exp_dir=str(exp_dir),
                             gpus_per_worker=gpus_per_worker),
        driver_resources,
    )
    output = dict(  # TensorBoard files always; the terminal as asked
        callbacks=[EpochTBXLogger()] + ([TrialLines(t.metric, max_epochs)] if verbosity else []),
        progress_reporter=progress_reporter(t.metric, list(spec.search), verbosity),
        verbose=verbosity,
    )
    if resume:
        from ray.tune import Tuner

        tuner = Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, resume_errored=True)
        # The restored RunConfig is the first run's; this run's --quiet/--verbose apply instead.
        run_config = tuner._local_tuner.get_run_config()
        for k, v in output.items():
            setattr(run_config, k, v)
        return tuner
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if t.searcher == "optuna":
        import optuna

        # The study lives in an RDB (optuna-dashboard reads it live); Tune pickles this searcher,
        # storage URL included, with the experiment, so a resumed search adds to the same study.
        sampler = optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=tpe_startup_trials(t))
        searcher = StudySearch(metric=t.metric, mode=t.mode, sampler=sampler,
                               storage=open_storage(optuna_storage) if optuna_storage else None,
                               study_name=exp_dir.name)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        searcher = BasicVariantGenerator(random_state=t.seed)
    if t.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max_epochs,
                                  grace_period=t.grace_period, reduction_factor=t.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        param_space=to_tune_space(spec.search),
        tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode, search_alg=searcher, scheduler=scheduler,
                                    num_samples=t.num_samples, max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(
            name=exp_dir.name,
            storage_path=str(exp_dir.parent),
            failure_config=tune.FailureConfig(max_failures=t.max_failures),
            **output,
        ),
    )


def _trial_lines_class():
    from ray.tune import Callback

    class TrialLinesImpl(Callback):
        """One line per finished or failed trial, so a long search reads as a log."""

        def __init__(self, metric: str, max_epochs: int):
            self.metric = metric
            self.max_epochs = max_epochs

        def _print(self, trial, verb: str, extra: str = "") -> None:
            r = trial.last_result or {}
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((trial.config or {}).items()))
            print(f"trial {trial.trial_id} {verb} at epoch {r.get('epoch', 0)}/{self.max_epochs}: "
                  f"{self.metric} {_fmt(r.get(self.metric))}, val_loss {_fmt(r.get('val_loss'))} ({params}){extra}",
                  flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            done = (trial.last_result or {}).get("epoch", 0) >= self.max_epochs
            self._print(trial, "finished" if done else "stopped early")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._print(trial, "failed", f"; see {trial.error_file}")

    return TrialLinesImpl


def TrialLines(metric: str, max_epochs: int):  # noqa: N802 - a factory so that importing this module needs no Ray
    return _trial_lines_class()(metric, max_epochs)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ----------------------------------------------------------------------------- results

def write_results(results, exp_dir: Path, metric: str, mode: str) -> list[dict]:
    """results.csv: one row per trial, its parameters, last and best metrics."""
    rows = []
    for r in results:
        hist = r.metrics_dataframe
        best = None
        if hist is not None and metric in hist:
            col = hist[metric]
            best = float(col.max() if mode == "max" else col.min())
        m = r.metrics or {}
        row = {"trial_id": m.get("trial_id") or Path(r.path).name, **{k: v for k, v in (r.config or {}).items()},
               "epochs_run": m.get("epoch"), f"last_{metric}": m.get(metric), f"best_{metric}": best,
               "val_loss": m.get("val_loss"), "train_loss": m.get("train_loss"),
               "clips_per_s": m.get("clips_per_s"), "status": "error" if r.error else "done"}
        rows.append(row)
    if rows:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with (exp_dir / "results.csv").open("w", newline="") as f:  # a folder or a URI
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    return rows


def print_table(rows: list[dict], metric: str) -> None:
    if not rows:
        return
    cols = [k for k in rows[0] if k not in ("val_loss", "train_loss")]
    table = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in sorted(table, key=lambda t: t[cols.index(f"best_{metric}")], reverse=True):
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))


# ----------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.tune", description=__doc__.splitlines()[0])
    ap.add_argument("--search-space", default="default", help="YAML file, or a name in search_spaces/ (default, smoke, large)")
    ap.add_argument("--data", help="dataset root (prepared on first use) or prepared folder; default: the demo dataset")
    ap.add_argument("--num-samples", type=int, help="trials in total")
    ap.add_argument("--max-concurrent", type=int, help="trials at once (default: what the resources fit)")
    ap.add_argument("--epochs", type=int, help="epochs per trial (ASHA's max_t)")
    ap.add_argument("--gpus-per-trial", help="GPUs per trial; fractions share a GPU (0.5, 0.25); 'auto'")
    ap.add_argument("--workers-per-trial", type=int, help="Ray Train workers per trial (DDP; one per GPU)")
    ap.add_argument("--cpus-per-worker", type=float, help="CPUs per Ray Train worker")
    ap.add_argument("--searcher", choices=["optuna", "random"])
    ap.add_argument("--scheduler", choices=["asha", "fifo"])
    ap.add_argument("--seed", type=int, help="seed of the searcher")
    ap.add_argument("--storage", default="runs", help="where experiments go: a local folder, NFS or s3:// (default: ./runs)")
    ap.add_argument("--name", help="experiment name (default: search-<date>-<time>)")
    ap.add_argument("--resume", metavar="EXPERIMENT_DIR", help="continue an interrupted search")
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="attach to a running Ray cluster ('auto')")
    ap.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    ap.add_argument("--no-export", action="store_true", help="do not export the best trial at the end")
    ap.add_argument("--optuna-storage", metavar="URL",
                    help="SQLAlchemy URL of the Optuna study (default: sqlite:///EXPERIMENT_DIR/optuna.db); "
                         "watch it with optuna-dashboard URL")
    out = ap.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="only the final table")
    out.add_argument("--verbose", action="store_true", help="also every epoch of every trial and the workers' logs")
    return ap


def apply_overrides(spec: SearchSpec, args: argparse.Namespace) -> SearchSpec:
    t, r = spec.tune, spec.resources
    for name in ("num_samples", "max_concurrent", "searcher", "scheduler", "seed"):
        if getattr(args, name) is not None:
            setattr(t, name, getattr(args, name))
    if args.epochs is not None:
        spec.fixed["epochs"] = args.epochs
    if args.workers_per_trial is not None:
        r.workers_per_trial = args.workers_per_trial
    if args.cpus_per_worker is not None:
        r.cpus_per_worker = args.cpus_per_worker
    if args.gpus_per_trial is not None:
        try:
            r.gpus_per_trial = args.gpus_per_trial if args.gpus_per_trial == "auto" else float(args.gpus_per_trial)
        except ValueError:
            raise ConfigError(f"--gpus-per-trial {args.gpus_per_trial}: a number (0, 0.25, 1, ...) or 'auto'") from None
    check_settings(spec, "command line")
    TrainConfig.from_dict({**spec.fixed, "data": ""})
    return spec


def demo_dataset() -> Path:
    """The embedded demo data, generated once into the cache."""
    from .demo_data import generate

    root = Path(os.environ.get("AUDIONET_CACHE", "~/.cache/audionet_ray")).expanduser() / "demo_data"
    if not (root / "testing_list.txt").exists():
        print(f"generating the demo dataset into {root} ...", flush=True)
        generate(root)
    return root


def prepare_search(args: argparse.Namespace) -> tuple[SearchSpec, str, Path]:
    """Spec, prepared data and experiment folder, from the command line or a search to resume."""
    from .data import ensure_prepared

    if args.resume:
        exp_dir = location(args.resume).resolve()  # a local folder or a URI (s3://...)
        saved = load_spec_json(exp_dir)
        return SearchSpec.from_dict(saved["spec"]), saved["data"], exp_dir
    spec = apply_overrides(load_spec(args.search_space), args)
    data = ensure_prepared(args.data or demo_dataset())
    check_space_fits_data(spec, data)
    name = args.name or time.strftime("search-%Y%m%d-%H%M%S")
    exp_dir = location(args.storage).resolve() / name
    if (exp_dir / SPEC_FILE).exists():
        raise ConfigError(f"{exp_dir} already holds a search: --resume {exp_dir} to continue it, or pick another --name")
    exp_dir.mkdir(parents=True, exist_ok=True)
    saved = {"spec": spec.to_dict(), "data": str(data)}
    if spec.tune.searcher == "optuna":
        from .monitor import study_storage

        saved["optuna_storage"] = study_storage(args.optuna_storage, exp_dir)  # checked before Ray starts
    elif args.optuna_storage:
        raise ConfigError(f"--optuna-storage: only --searcher optuna keeps an Optuna study; this search uses {spec.tune.searcher}")
    (exp_dir / SPEC_FILE).write_text(json.dumps(saved, indent=1))
    return spec, str(data), exp_dir


def check_space_fits_data(spec: SearchSpec, data: str | Path) -> None:
    """Every train_ratio the space can sample must leave speakers to train and validate on;
    otherwise some trials would fail, or rank by an empty validation set, hours in."""
    from .data import check_train_ratio
    from .prepare import load_manifest

    manifest = load_manifest(data)
    where = f"{spec.source or 'search space'}: " + ("search." if "train_ratio" in spec.search else "")
    for ratio in sorted(set(spec.value_range("train_ratio"))):
        try:
            check_train_ratio(manifest, ratio, data)
        except DatasetError as e:
            raise ConfigError(f"{where}{e}") from None


def start_ray(args: argparse.Namespace) -> dict:
    """Attach to a cluster or start a local Ray; returns what each trial driver holds."""
    from .ray_setup import init_ray, trial_driver_resources

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")  # search state on disk at most 5 s old
    init_ray(args.address, args.num_cpus, log_to_driver=args.verbose)  # workers' logs drown the table
    return trial_driver_resources()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        spec, data, exp_dir = prepare_search(args)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import ray

    driver_resources = start_ray(args)
    try:
        gpus_per_worker, concurrent, why = plan_resources(spec, cluster_capacity())  # incl. autoscaling
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"search {exp_dir.name}: {spec.tune.num_samples} trials, {spec.tune.searcher} + {spec.tune.scheduler}, "
          f"space {spec.source or 'saved'}; {why}", flush=True)
    study_url = load_spec_json(exp_dir).get("optuna_storage")
    if not args.quiet:
        print(f"watch it: tensorboard --logdir {exp_dir}" + (f"  |  optuna-dashboard {study_url}" if study_url else ""))
    tuner = build_tuner(spec, data, exp_dir, gpus_per_worker, concurrent, driver_resources,
                        resume=bool(args.resume), verbosity=0 if args.quiet else 2 if args.verbose else 1,
                        optuna_storage=study_url)
    results = tuner.fit()
    rows = write_results(results, exp_dir, spec.tune.metric, spec.tune.mode)
    finished = len(results) >= spec.tune.num_samples and all(r.error or (r.metrics or {}).get("done") for r in results)
    if study_url and finished:
        from .monitor import close_orphans

        close_orphans(study_url, exp_dir.name)
    print()
    print_table(rows, spec.tune.metric)
    errors = sum(1 for r in results if r.error)
    try:
        trial_id, ckpt, meta = best_checkpoint(exp_dir, spec.tune.metric, spec.tune.mode)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\nbest trial {trial_id}: {spec.tune.metric} {meta['metrics'][spec.tune.metric]:.4f} at epoch "
          f"{meta['epoch']} with " + ", ".join(f"{k}={_fmt(meta['train_config'][k])}" for k in spec.search))
    print(f"best checkpoint: {ckpt}")
    if errors:
        print(f"warning: {errors} trial(s) failed; see {exp_dir}", file=sys.stderr)
    if not args.no_export:
        export_best(exp_dir, spec.tune.metric)
    if not is_uri(exp_dir):
        report_or_warn(exp_dir)
    print(f"experiment: {exp_dir}  (results.csv; resume with --resume {exp_dir})")
    return 0


def report_or_warn(exp_dir: Path) -> None:
    from .report import write_report

    try:
        print(f"report: {write_report(exp_dir)}")
    except Exception as e:  # noqa: BLE001 - the search is done and saved; a failed plot must not fail it
        print(f"warning: no report ({type(e).__name__}: {e}); try python -m audionet_ray.report {exp_dir}",
              file=sys.stderr)


def export_best(exp_dir: Path, metric: str) -> None:
    try:
        from .export import export
    except ImportError:  # the export module is optional in this build
        return
    local = local_experiment(exp_dir, metric)  # on s3:// etc.: its best checkpoint, copied here
    bundle = export(local, local / "bundle", metric=metric)
    print(f"exported the best model to {bundle}  (python -m audionet_ray.predict {bundle} CLIP.wav)")
    if is_uri(exp_dir):
        print(f"and copied it to {(exp_dir / 'bundle').upload_from(bundle)}")


if __name__ == "__main__":
    sys.exit(main())
