"""The search: YAML validation, resource planning, real searches on CPU, resume after SIGKILL."""

import copy
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray.training.config import ConfigError, TrainConfig
from audionet_ray.tuning.search_space import (DefineByRun, Resources, SearchSpec, TuneSettings, is_active, load_spec,
                                       parse_duration, to_tune_space)
from audionet_ray.tune import TimeBudget, plan_resources

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- YAML

@pytest.mark.parametrize("name", ["default", "smoke", "large", "pareto"])
def test_shipped_search_spaces_load(name):
    spec = load_spec(ROOT / "search_spaces" / f"{name}.yaml")
    assert {"lr", "batch_size", "train_ratio"} <= set(spec.search)
    assert spec.tune.grace_period >= 2
    space = to_tune_space(spec.search)
    assert set(space) == set(spec.search)


BAD = {
    "not yaml": ("search: {lr: [1, 2\n", "not valid YAML at line"),
    "unknown section": ("serch: {}\n", "unknown section(s) serch"),
    "unknown parameter": ("search: {learning_rate: {loguniform: [1.0e-4, 1.0e-3]}}\n", "search.learning_rate is not a setting"),
    "unknown distribution": ("search: {lr: {gaussian: [0, 1]}}\n", "unknown distribution 'gaussian'"),
    "low above high": ("search: {lr: {loguniform: [1.0e-2, 1.0e-3]}}\n", "low 0.01 must be below high 0.001"),
    "log of zero": ("search: {lr: {loguniform: [0, 1.0e-3]}}\n", "must be > 0 on a log scale"),
    "unknown fixed": ("fixed: {epoch: 3}\n", "unknown setting(s): epoch"),
    "bad fixed value": ("fixed: {train_ratio: 1.5}\n", "train_ratio must be between 0 and 1"),
    "unknown tune key": ("tune: {samples: 3}\n", "tune: unknown key(s) samples"),
    "bad searcher": ("tune: {searcher: hyperopt}\n", "searcher 'hyperopt' unknown"),
    "grace too short": ("tune: {grace_period: 1}\n", "grace_period must be >= 2"),
    "negative startup": ("tune: {startup_trials: -1}\n", "startup_trials must be >= 0"),
    "bad time budget": ("tune: {time_budget: soon}\n", "tune.time_budget soon: a duration above zero"),
    "zero time budget": ("tune: {time_budget: 0m}\n", "tune.time_budget 0m: a duration above zero"),
    "bad choice value": ("search: {norm: {choice: [batch, btach]}}\n", "search.norm (norm btach): norm must be one of"),
    "choices that clash": ("search: {width: {choice: [24, 32]}, norm: {choice: [batch, group]},\n"
                           "  norm_groups: {choice: [8, 16], when: {norm: group}}}\n",
                           "search.norm_groups (width 24, norm group, norm_groups 16): norm_groups must"),
    "condition on a later parameter": ("search: {norm_groups: {choice: [8], when: {norm: group}}, norm: {choice: [batch, group]}}\n",
                                       "search.norm_groups.when.norm: must name a choice parameter listed above"),
    "condition on a value not offered": ("search: {norm: {choice: [batch, group]}, norm_groups: {choice: [8], when: {norm: grp}}}\n",
                                         "search.norm_groups.when.norm: ['grp'] not among its choices"),
    "condition not a mapping": ("search: {norm: {choice: [batch, group]}, norm_groups: {choice: [8], when: group}}\n",
                                "search.norm_groups.when must map an earlier choice parameter"),
    "choice of lists": ("search: {width: {choice: [[8, 16]]}}\n", "search.width.choice needs distinct plain values"),
}


def test_tpe_models_after_a_third_of_a_small_search():
    from audionet_ray.tuning.search_space import tpe_startup_trials

    assert [tpe_startup_trials(TuneSettings(num_samples=n)) for n in (1, 3, 8, 12, 30, 200)] == [2, 2, 2, 4, 10, 10]
    assert tpe_startup_trials(TuneSettings(num_samples=8, startup_trials=5)) == 5


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_yaml_is_one_clear_error(case, tmp_path):
    text, message = BAD[case]
    f = tmp_path / "space.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_spec(f)
    assert message in str(e.value)
    assert str(f) in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_reports_bad_yaml_in_one_line_without_traceback(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("search: {lr: {loguniform: [1.0e-2, 1.0e-3]}}\n")
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--search-space", str(f)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(f) in lines[0], p.stderr
    assert "Traceback" not in p.stderr + p.stdout


def test_cli_refuses_a_bad_time_budget_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--time-budget", "30 minutes",
                        "--storage", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == "error: --time-budget 30 minutes: a duration above zero such as 90s, 30m, 1.5h or plain seconds"
    assert not list(tmp_path.iterdir())  # refused before anything was made


@given(st.floats(min_value=0.001, max_value=1e5, allow_nan=False), st.sampled_from(["", "s", "m", "h"]))
def test_durations_read_as_seconds(value, unit):
    text = f"{value}{unit}"
    assert parse_duration(text, "--time-budget") == pytest.approx(value * {"": 1, "s": 1, "m": 60, "h": 3600}[unit])


@given(st.text(max_size=12))
def test_any_other_duration_is_one_line_naming_the_option(text):
    try:
        seconds = parse_duration(text, "--time-budget")
    except ConfigError as e:
        assert str(e).startswith(f"--time-budget {text}: ") and str(e).count("\n") == text.count("\n")
    else:
        assert seconds > 0 and text.strip()[-1] in "0123456789.smh"


def test_time_budget_starts_no_trial_that_cannot_reach_its_first_rung():
    b = TimeBudget(budget_s=100.0, spent_before=20.0, first_rung=2)
    assert b.reserve_s == 10.0 and 69 < b.left() <= 70 and b.can_start()  # no estimate yet: start
    b.trial_started("a")
    b.trial_reached("a", 1)  # before the rung: no estimate
    assert b.rung_estimate() is None and "a" in b.started
    b.started["a"] -= 60  # as if trial a had started 60 s ago
    b.trial_reached("a", 2)
    assert 59 < b.rung_estimate() < 62 and b.can_start()  # 70 s left >= 60 s needed
    b.spent_before += 15  # 55 s left: a new trial would be stopped before epoch 2
    assert not b.can_start() and b.closed[1] == pytest.approx(55, abs=0.5) and b.closed[2] == b.rung_estimate()
    again = TimeBudget.resume(100.0, b.state(), 2, t0=b.t0)  # a resumed search: what was spent, and the estimate
    assert again.spent() == pytest.approx(b.spent(), abs=0.2) and again.rung_s == b.rung_s and not again.can_start()


# ----------------------------------------------------------------------------- conditional spaces

@st.composite
def conditional_spaces(draw):
    """A search with a choice parameter and other parameters sampled only for some of its values."""
    parent = draw(st.lists(st.sampled_from(["none", "batch", "group", "layer"]), min_size=2, max_size=4, unique=True))
    search = {"norm": {"choice": parent}, "lr": {"loguniform": [1e-4, 1e-2]}}
    when = {}
    for name, dist in (("norm_groups", {"choice": [1, 2, 4]}), ("dropout", {"uniform": [0.0, 0.5]}),
                       ("dense_layers", {"randint": [1, 5]})):
        if draw(st.booleans()):
            search[name] = dist
            if draw(st.booleans()):
                when[name] = {"norm": draw(st.lists(st.sampled_from(parent), min_size=1, unique=True))}
    return search, when


@settings(max_examples=25, deadline=None)
@given(conditional_spaces(), st.sampled_from(["tpe", "random"]), st.integers(0, 2**16))
def test_both_searchers_sample_a_conditional_parameter_only_when_its_condition_holds(space, sampler, seed):
    """Through Ray's OptunaSearch itself, as the search uses it (no Ray instance needed to suggest)."""
    import optuna

    from audionet_ray.tuning.study import StudySearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search, when = space
    make = optuna.samplers.TPESampler(seed=seed, n_startup_trials=2) if sampler == "tpe" else optuna.samplers.RandomSampler(seed)
    searcher = StudySearch(space=DefineByRun(search, when), metric="val_accuracy", mode="max", sampler=make)
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val_accuracy": float(i % 3), "epoch": 2})
        for name, dist in search.items():
            active = is_active(when.get(name, {}), config)
            assert (name in config) == active, (config, when)
            if not active:
                continue
            (kind, args), = dist.items()
            v = config[name]
            assert v in args if kind == "choice" else args[0] <= v < args[1] if kind == "randint" else args[0] <= v <= args[1]


def test_cli_missing_search_space_file(tmp_path):
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--search-space", str(tmp_path / "nope.yaml")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no such file" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("where", ["search", "fixed"])
def test_cli_refuses_a_train_ratio_that_leaves_no_validation_speaker(where, prepared_demo, tmp_path):
    """Checked against the dataset before Ray starts: not an errored trial, or val_accuracy 0, hours in."""
    from audionet_ray.corpus.prepare import load_manifest

    top = max(b for b, _ in load_manifest(prepared_demo)["trainval_buckets"])
    ratio = round((top + 1) / 2, 4)
    f = tmp_path / "space.yaml"
    f.write_text(f"search: {{train_ratio: {{uniform: [0.5, {ratio}]}}}}\n" if where == "search" else
                 f"search: {{lr: {{loguniform: [1.0e-4, 1.0e-3]}}}}\nfixed: {{train_ratio: {ratio}}}\n")
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--search-space", str(f), "--data", str(prepared_demo),
                        "--storage", str(tmp_path / "exp")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr + p.stdout, p.stderr
    want = f"{f}: search.train_ratio {ratio:g}" if where == "search" else f"{f}: train_ratio {ratio:g}"
    assert lines[0].startswith(f"error: {want} leaves no speaker to validate on in {prepared_demo}"), lines[0]


# ----------------------------------------------------------------------------- Ray's private APIs

def test_ray_private_apis_are_still_there(tmp_path, capsys):
    """Each private or developer Ray API the search relies on (audionet_ray/ray_private.py) still
    exists and behaves as read in Ray 2.60: when a Ray upgrade breaks one, this fails first."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from audionet_ray import ray_private
    from audionet_ray.tuning.study import StudySearch
    from audionet_ray.tune import refill_asha

    assert ray.__version__.startswith("2.60."), f"ray {ray.__version__}: re-read ray_private.py against it, then widen the pin"
    # A Tuner's configs, which a restored search changes before fit()
    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(time_budget_s=5),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="x"))
    tune_config, run_config = ray_private.restored_configs(tuner)
    assert isinstance(tune_config, tune.TuneConfig) and tune_config.time_budget_s == 5
    assert isinstance(run_config, tune.RunConfig) and run_config.name == "x"

    # ASHA's rungs: (epoch, {trial_id: sign * metric}), filled as ASHA fills them itself
    def asha():
        return ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max", max_t=8, grace_period=2,
                             reduction_factor=2)

    live = asha()
    assert [(m, r) for m, r in ray_private.asha_rungs(live)] == [(2, {}), (4, {}), (8, {})]
    trials = [Trial("probe", trial_id=f"t{i}", stub=True) for i in range(3)]
    results = {t.trial_id: [{"epoch": e, "val_accuracy": 0.1 * i + 0.01 * e} for e in (1, 2, 3, 4)]
               for i, t in enumerate(trials)}
    for t in trials:
        live.on_trial_add(None, t)
        for r in results[t.trial_id]:
            live.on_trial_result(None, t, r)
    refilled = asha()
    refill_asha(refilled, results, "val_accuracy", "max")
    assert ray_private.asha_rungs(refilled) == ray_private.asha_rungs(live)
    assert ray_private.asha_rungs(live)[0][1] == {"t0": 0.02, "t1": pytest.approx(0.12), "t2": pytest.approx(0.22)}

    # OptunaSearch's trial bookkeeping
    searcher = StudySearch(space=DefineByRun({"lr": {"loguniform": [1e-4, 1e-2]}}, {}), metric="val_accuracy",
                           mode="max", sampler=optuna.samplers.RandomSampler(0))
    searcher.suggest("a")
    assert isinstance(ray_private.optuna_trial(searcher, "a"), optuna.trial.Trial)
    assert not ray_private.optuna_told(searcher, "a")
    searcher.on_trial_complete("a", {"val_accuracy": 0.5, "epoch": 2})
    assert ray_private.optuna_told(searcher, "a") and ray_private.optuna_trial(searcher, "b") is None
    # A driver killed after Optuna recorded a trial's end but before Tune saved it: the resumed searcher
    # (Tune's older pickle) still holds the trial as running; its results must not reach Optuna, which
    # refuses to update a finished trial (UpdateFinishedTrialError ended the resumed search).
    searcher.suggest("c")
    stale = copy.deepcopy(searcher._completed_trials)
    searcher.on_trial_complete("c", {"val_accuracy": 0.4, "epoch": 2})
    assert ray_private.optuna_trial_finished(ray_private.optuna_trial(searcher, "c"))
    searcher._completed_trials = stale  # as restored from the older pickle
    assert not ray_private.optuna_told(searcher, "c") and searcher.finished_in_study("c")
    searcher.on_trial_result("c", {"val_accuracy": 0.6, "epoch": 4})  # no error, nothing recorded
    searcher.on_trial_complete("c", {"val_accuracy": 0.6, "epoch": 4})
    assert ray_private.optuna_told(searcher, "c")
    assert ray_private.optuna_study(searcher).trials[-1].value == 0.4

    # Train V2's callback API and the run folder of its StorageContext, which train.py uses
    import pyarrow.fs as pafs
    from ray.train.v2._internal.execution.storage import StorageContext
    from ray.train.v2.api.context import TrainContext

    assert hasattr(ray_private.UserCallback, "after_report")
    assert "get_storage" in TrainContext.__dict__
    fs, run_dir = ray_private.train_run_folder(StorageContext(storage_path=str(tmp_path), experiment_dir_name="run"))
    assert isinstance(fs, pafs.FileSystem) and run_dir == (tmp_path / "run").as_posix()
    assert TrialScheduler.STOP == "STOP"


def test_progress_table_survives_unreported_trials_and_conditional_parameters(ray_session, tmp_path, capsys):
    """CLIReporter._print, ._metric, ._sort_by_metric and ._current_best_trial
    (ray_private.FilteredCLIReporter): Tune's own table raises a TypeError sorting finished trials
    that never reported the metric, and a KeyError naming the best trial's parameters when it did
    not sample a conditional one."""
    import inspect

    from ray.train._internal.storage import StorageContext  # what Tune gives every trial
    from ray.tune import CLIReporter
    from ray.tune.experiment import Trial

    from audionet_ray import ray_private

    def trial(i, config):
        return Trial("probe", trial_id=f"t{i}", stub=True, config=config,
                     storage=StorageContext(str(tmp_path), "x", trial_dir_name=f"t{i}"))

    def reporter(kind):
        r = kind(metric_columns=["val_accuracy"], parameter_columns=["norm", "norm_groups"], sort_by_metric=True)
        r.setup(start_time=time.time(), metric="val_accuracy", mode="max")
        return r

    assert list(inspect.signature(CLIReporter._print).parameters) == ["self", "msg"]
    filtered = reporter(type("R", (ray_private.FilteredCLIReporter,), {"drop_prefixes": ("Result logdir:",)}))
    assert filtered._metric == "val_accuracy" and filtered._sort_by_metric

    unreported = [trial(i, {"norm": "batch"}) for i in range(2)]
    for t in unreported:  # finished without a result (the time budget stopped them in epoch 1)
        t.set_status(Trial.TERMINATED)
    with pytest.raises(TypeError):  # Tune's own sort; when this stops failing, the workaround can go
        reporter(CLIReporter).report(unreported, True)
    filtered.report(unreported, True, "Result logdir: /tmp/ray/x")
    out = capsys.readouterr().out
    assert "t0" in out and "TERMINATED" in out and "Result logdir" not in out

    best = trial(2, {"norm": "batch"})  # norm_groups: sampled only for norm: group
    best.update_last_result({"val_accuracy": 0.9, "config": {"norm": "batch"}})
    with pytest.raises(KeyError):
        reporter(CLIReporter).report([best], False)
    filtered.report([best], False)
    out = capsys.readouterr().out
    assert "Current best trial: t2 with val_accuracy=0.9 and parameters={'norm': 'batch', 'norm_groups': None}" in out


def test_tensorboard_curve_of_a_restarted_trial_never_repeats_a_step(ray_session, tmp_path):
    """monitor.EpochTBXLogger through TBXLoggerCallback._trial_writer: a driver killed after epoch 3,
    and a new one resuming the trial from its epoch-1 checkpoint, leave one point per epoch, the
    resumed attempt's."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from audionet_ray.training.monitor import EpochTBXLogger

    trial = Trial("probe", trial_id="t0", stub=True, storage=StorageContext(str(tmp_path), "x", trial_dir_name="t0"))
    for attempt, epochs in ((1, [1, 2, 3]), (2, [2, 3, 4])):
        logger = EpochTBXLogger()  # each driver has its own
        for e in epochs:
            logger.log_trial_result(e, trial, {"epoch": e, "val_accuracy": attempt + e / 10, "training_iteration": 1})
        logger.log_trial_end(trial)
        time.sleep(1.1)  # event files are named by the second they were opened in
    events = EventAccumulator(str(trial.local_path))
    events.Reload()
    points = [(s.step, round(s.value, 3)) for s in events.Scalars("ray/tune/val_accuracy")]
    assert points == [(1, 1.1), (2, 2.2), (3, 2.3), (4, 2.4)], points


# ----------------------------------------------------------------------------- resources

def _spec(workers=1, gpus="auto", cpus=1.0, max_concurrent=0, n=8):
    return SearchSpec(tune=TuneSettings(num_samples=n, max_concurrent=max_concurrent),
                      resources=Resources(workers, gpus, cpus))


def test_plan_cpu_only_laptop():
    gpw, n, why = plan_resources(_spec(cpus=0.5), {"CPU": 2.0})
    assert gpw == 0 and n == 2 and "CPUs" in why


def test_plan_counts_the_driver_slots_trials_hold():
    """Half a CPU a trial: 4 trials on 2 CPUs where Ray has the slots for their drivers (a local Ray
    of ours: 4 a CPU), 2 where it has only 2 (and the plan says so)."""
    _, n, why = plan_resources(_spec(cpus=0.5), {"CPU": 2.0, "driver_slot": 8.0}, streaming=False)
    assert n == 4 and "limited by CPUs" in why
    _, n, why = plan_resources(_spec(cpus=0.5), {"CPU": 2.0, "driver_slot": 2.0}, streaming=False)
    assert n == 2 and "limited by driver slots" in why


def test_plan_single_gpu_shares_it_between_trials():
    gpw, n, why = plan_resources(_spec(), {"CPU": 16.0, "GPU": 1.0})
    assert gpw == 0.5 and n == 2 and "GPUs" in why
    gpw, n, _ = plan_resources(_spec(gpus=0.25), {"CPU": 16.0, "GPU": 1.0})
    assert gpw == 0.25 and n == 4


def test_plan_cluster_one_gpu_per_worker_and_ddp():
    gpw, n, _ = plan_resources(_spec(workers=2, cpus=4), {"CPU": 64.0, "GPU": 8.0})
    assert gpw == 1.0 and n == 4
    _, n, why = plan_resources(_spec(max_concurrent=1), {"CPU": 64.0, "GPU": 8.0})
    assert n == 1 and "--max-concurrent" in why


def test_plan_refuses_gpus_that_are_not_there():
    with pytest.raises(ConfigError, match="no GPU"):
        plan_resources(_spec(gpus=1), {"CPU": 2.0})
    with pytest.raises(ConfigError, match="lower cpus_per_worker"):
        plan_resources(_spec(cpus=4), {"CPU": 2.0})


# ----------------------------------------------------------------------------- real searches

def _tune(args, timeout=600, **popen):
    cmd = [sys.executable, "-m", "audionet_ray.tune", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if popen:
        return subprocess.Popen(cmd, env=env, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _rows(exp: Path) -> list[dict]:
    with open(exp / "results.csv") as f:
        return list(csv.DictReader(f))


def _address():
    import ray

    return ray.get_runtime_context().gcs_address


@pytest.mark.slow
def test_optuna_asha_search_stops_trials_and_later_trials_still_finish(ray_session, prepared_demo, tmp_path):
    """ray-project/ray#54305: trials stopped by ASHA must free their resources for later ones."""
    p = _tune(["--search-space", "smoke", "--data", str(prepared_demo), "--num-samples", "5",
               "--storage", str(tmp_path), "--name", "asha", "--address", _address(), "--no-export"])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = _rows(tmp_path / "asha")
    assert len(rows) == 5 and all(r["status"] == "done" for r in rows), rows
    epochs = [int(float(r["epochs_run"])) for r in rows]
    # ASHA stops a trial at epoch 2 only when it scores below the earlier trials' median there: with
    # TPE steering later trials upwards, or near-chance ties at epoch 2, it may stop none.
    assert set(epochs) <= {2, 4} and max(epochs) == 4, epochs
    assert "best trial" in p.stdout and "best checkpoint:" in p.stdout
    # every trial's Train run checkpointed into the experiment folder
    assert len(list((tmp_path / "asha" / "train_runs").iterdir())) == 5


@pytest.mark.slow
def test_random_search_with_fifo_runs_every_trial_to_the_end(ray_session, prepared_demo, tmp_path):
    p = _tune(["--search-space", "smoke", "--data", str(prepared_demo), "--num-samples", "2", "--epochs", "2",
               "--searcher", "random", "--scheduler", "fifo", "--storage", str(tmp_path), "--name", "rand",
               "--address", _address(), "--no-export"])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = _rows(tmp_path / "rand")
    assert len(rows) == 2 and [int(float(r["epochs_run"])) for r in rows] == [2, 2]
    assert "random + fifo" in p.stdout
    assert len({r["lr"] for r in rows}) == 2


def _epoch_history(exp: Path) -> dict[str, list[int]]:
    """Each trial's reported epochs, in order, from Tune's own result.json files."""
    out = {}
    for f in exp.glob("run_trial_*/result.json"):
        tid = f.parent.name.split("_")[2]
        out[tid] = [json.loads(line)["epoch"] for line in f.read_text().splitlines() if line.strip()]
    return out


def _checkpointed(exp: Path) -> set[str]:
    return {d.parent.name for d in (exp / "train_runs").glob("*/checkpoint_*") if (d / "meta.json").exists()}


def _done_trials(exp: Path) -> set[str]:
    """Trials Tune has recorded as finished in its experiment state."""
    done = set()
    for f in exp.glob("experiment_state-*.json"):
        try:
            state = json.loads(f.read_text())
        except json.JSONDecodeError:  # Tune is rewriting it right now: the next poll reads it whole
            continue
        for t in state.get("trial_data", []):
            trial = json.loads(t[0]) if isinstance(t, list) else t
            if isinstance(trial, dict) and trial.get("status") == "TERMINATED":
                done.add(trial.get("trial_id"))
    return done


def _kill_when(proc, cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if cond():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.5)
    raise AssertionError(f"the search ended (rc={proc.poll()}) or timed out before {what}")


@pytest.mark.slow
def test_resume_after_driver_sigkill_twice(ray_session, prepared_demo, tmp_path):
    """Kill the real search driver twice at different points, resume to completion."""
    exp = tmp_path / "crashy"
    base = ["--address", _address(), "--no-export"]
    first = _tune(["--search-space", "smoke", "--data", str(prepared_demo), "--num-samples", "4", "--epochs", "6",
                   "--scheduler", "fifo", "--storage", str(tmp_path), "--name", "crashy", *base],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # 1st kill: as soon as one trial has a checkpoint (trials mid-run)
    _kill_when(first, lambda: len(_checkpointed(exp)) >= 1, 300, "a first checkpoint")
    ckpt_at_kill1, history_at_kill1 = _checkpointed(exp), _epoch_history(exp)

    second = _tune(["--resume", str(exp), *base], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # 2nd kill: once a trial is recorded as finished, so finished trials must survive a kill too
    _kill_when(second, lambda: len(_done_trials(exp)) >= 1, 400, "a finished trial")
    done_at_kill2 = _done_trials(exp)
    ckpt_at_kill2, history_at_kill2 = _checkpointed(exp), _epoch_history(exp)

    final = _tune(["--resume", str(exp), *base], timeout=600)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    rows = _rows(exp)
    assert len(rows) == 4, rows  # the number of trials as asked
    assert all(r["status"] == "done" and int(float(r["epochs_run"])) == 6 for r in rows), rows
    ids = {r["trial_id"] for r in rows}
    assert done_at_kill2 <= ids  # no finished trial lost
    history = _epoch_history(exp)
    for ckpt_at_kill, history_at_kill in ((ckpt_at_kill1, history_at_kill1), (ckpt_at_kill2, history_at_kill2)):
        for tid in ckpt_at_kill:
            # a trial that had a checkpoint when the driver was killed never reported epoch 1 again
            # (one that had none yet rightly starts over: it may have an epoch 1 from each attempt)
            before = history_at_kill.get(tid, []).count(1)
            assert history[tid].count(1) <= max(before, 1), (tid, history_at_kill.get(tid), history[tid])
    assert set(ckpt_at_kill1) <= ids
    _assert_live_views_survive_resume(exp, ids)


def _assert_live_views_survive_resume(exp: Path, ids: set[str]) -> None:
    """After two kills: one finished Optuna trial per Tune trial in the same study, TensorBoard by epoch."""
    import optuna
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'optuna.db'}")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert {t.user_attrs["tune_trial_id"] for t in done} == ids and len(done) == 4, study.trials
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    for d in (d for d in exp.iterdir() if (d / "params.json").exists()):
        events = EventAccumulator(str(d))
        events.Reload()  # a resumed trial's steps go on from its checkpoint's epoch, not from 1
        steps = [s.step for s in events.Scalars("ray/tune/val_accuracy")]
        # A SIGKILLed driver loses what it had not yet written: the result of an epoch whose
        # checkpoint was saved but not yet recorded, and TensorBoard events still in its writer's
        # queue. What must hold: steps never repeat or go back, they are epochs Tune recorded, and
        # after the last resume every epoch from the checkpoint's on is there.
        results = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines() if ln.strip()]
        resumed_from = results[-1]["resumed_from"]
        assert steps == sorted(set(steps)) and steps[-1] == 6, (d.name, steps)
        assert set(steps) <= {r["epoch"] for r in results}, (d.name, steps, results)
        assert set(range(resumed_from + 1, 7)) <= set(steps), (d.name, steps, resumed_from)


@pytest.mark.slow
def test_killed_search_resumes_with_asha_rungs_and_the_time_budget_left(ray_session, prepared_demo, tmp_path):
    """Issue 15 item 5 and issue 13 item 4 on one real search: SIGKILL the driver once ASHA has
    recorded epoch-2 results; the resumed scheduler holds them (so it stops a trial that the
    uninterrupted search would have stopped, where Ray's own resume would let it run), and the
    resumed search runs on the time that was left, ends within the budget and exports."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from audionet_ray.core.ray_private import asha_rungs
    from audionet_ray.tuning.experiment import read_budget, trial_results
    from audionet_ray.tune import make_scheduler, refill_asha

    exp, budget, trials = tmp_path / "budgeted", 360, 1000  # more trials than the budget fits (~2 a second start in Tune's reused trial processes)
    base = ["--address", _address()]
    first = _tune(["--search-space", "smoke", "--data", str(prepared_demo), "--num-samples", str(trials), "--max-concurrent", "2",
                   "--time-budget", f"{budget // 60}m", "--storage", str(tmp_path), "--name", "budgeted", *base],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(first, lambda: sum(max(h, default=0) >= 2 for h in _epoch_history(exp).values()) >= 2, budget,
               "two trials reached ASHA's first rung")
    spent_at_kill = read_budget(exp)["spent_s"]
    assert 0 < spent_at_kill < budget

    # What the resumed driver does before it continues, here in the test: refill a fresh ASHA.
    saved = SearchSpec.from_dict(json.loads((exp / "search.json").read_text())["spec"])
    recorded = trial_results(exp)
    refilled, forgetful = make_scheduler(saved), make_scheduler(saved)  # forgetful: Ray's own resume
    for s in (refilled, forgetful):
        s.set_search_properties("val_accuracy", "max")
    refill_asha(refilled, recorded, "val_accuracy", "max")
    at_rung2 = {tid: next(r["val_accuracy"] for r in rows if r["epoch"] >= 2)
                for tid, rows in recorded.items() if any(r["epoch"] >= 2 for r in rows)}
    assert len(at_rung2) >= 2 and asha_rungs(refilled)[0] == (2, at_rung2)
    assert asha_rungs(forgetful)[0] == (2, {})
    probe = Trial("probe", trial_id="probe", stub=True)  # a new trial, worse at epoch 2 than all recorded
    decisions = []
    for s in (refilled, forgetful):
        s.on_trial_add(None, probe)
        decisions.append(s.on_trial_result(None, probe, {"epoch": 2, "val_accuracy": min(at_rung2.values()) - 0.01}))
    assert decisions == [TrialScheduler.STOP, TrialScheduler.CONTINUE]

    t0 = time.monotonic()
    resumed = _tune(["--resume", str(exp), *base], timeout=budget + 120)
    took = time.monotonic() - t0
    out = resumed.stdout
    assert resumed.returncode == 0, out[-3000:] + resumed.stderr[-3000:]
    first_line = next(ln for ln in out.splitlines() if ln.startswith("search budgeted:"))
    m = re.search(r"\((?:(\d+)m)?(\d+)s left\)", first_line)
    left = int(m[1] or 0) * 60 + int(m[2])
    assert "time budget 6m00s" in first_line and budget - spent_at_kill - 60 <= left <= budget - spent_at_kill, first_line
    refill_line = next(ln for ln in out.splitlines() if ln.startswith("ASHA's rungs refilled"))
    assert f"epoch 2: {len(at_rung2)} trial(s)" in refill_line, refill_line
    spent = read_budget(exp)["spent_s"]
    assert spent_at_kill < spent <= budget + 10 and took <= left + 60, (spent, took, left)
    rows = _rows(exp)
    # the budget ended it: by stopping trials when it ran out, or by starting none that could not reach epoch 2
    assert re.search(r"time budget of 6m00s( reached: unfinished trials stopped|: no trial started after)", out), out
    assert len(rows) < trials
    assert "exported the best model" in out and (exp / "bundle" / "config.json").exists()

    again = _tune(["--resume", str(exp), *base, "--no-export"], timeout=300)  # nothing left to spend: no trial starts
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(_rows(exp)) == len(rows) and read_budget(exp)["spent_s"] <= budget + 10, again.stdout[-3000:]


@pytest.mark.parametrize("cpus,samples,want_n,want_cpw", [
    (2, 8, 2, 1.0),    # the 2-core laptop: two trials of one CPU, none kept for Ray Data
    (4, 8, 2, 2.0),
    (8, 8, 2, 4.0),
    (64, 8, 8, 8.0),   # fewer trials than slots: each trial gets more CPUs
    (64, 40, 16, 4.0),
    (2, 1, 1, 2.0),    # one trial takes both cores
])
def test_plan_auto_cpus_leave_no_core_idle_when_data_is_in_memory(cpus, samples, want_n, want_cpw):
    spec = _spec(cpus="auto", n=samples)
    gpw, n, why = plan_resources(spec, {"CPU": float(cpus)}, streaming=False)
    assert (n, spec.resources.cpus_per_worker) == (want_n, want_cpw)
    assert n * spec.resources.cpus_per_worker == cpus, "every core trains"
    assert "no CPU kept for Ray Data" in why and f"{want_cpw:g} CPU" in why


def test_plan_auto_keeps_cpus_for_streaming_data_and_shares_a_gpu():
    spec = _spec(cpus="auto")
    _, n, why = plan_resources(spec, {"CPU": 2.0}, streaming=True)
    assert (n, spec.resources.cpus_per_worker) == (1, 1.0) and "1 CPU kept for Ray Data" in why
    spec = _spec(cpus="auto")
    gpw, n, why = plan_resources(spec, {"CPU": 16.0, "GPU": 1.0}, streaming=False)
    assert (gpw, n, spec.resources.cpus_per_worker) == (0.5, 2, 8.0)
    spec = _spec(cpus="auto")
    gpw, n, _ = plan_resources(spec, {"CPU": 16.0, "GPU": 1.0}, streaming=True)
    assert (gpw, n, spec.resources.cpus_per_worker) == (0.5, 2, 6.0)  # 4 CPUs (a quarter) feed Ray Data


def _lifetimes(exp: Path) -> list[tuple[float, float]]:
    """Each trial's life, from its start (Tune's timestamp less time_total_s) to its last result.
    Start-up dominates a smoke trial (its 2 epochs take ~1 s), so lives, not epochs, show overlap."""
    spans = []
    for f in exp.glob("*/result.json"):
        rows = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        spans.append((rows[0]["timestamp"] - rows[0]["time_total_s"], rows[-1]["timestamp"]))
    return spans


@pytest.mark.slow
@pytest.mark.parametrize("cpus", [2, 4])
def test_auto_resources_on_a_real_ray_train_on_every_core(cpus, ray_session, prepared_demo, tmp_path):
    """The rule on a real local Ray: 2 CPUs -> 2 trials x 1 CPU, 4 CPUs -> 2 trials x 2 CPUs (torch
    threads to match), trials overlap, and every trial finishes. 2 CPUs: the session's Ray; 4: its own."""
    where = ["--address", _address()] if cpus == 2 else ["--num-cpus", "4"]
    p = _tune(["--search-space", "smoke", "--data", str(prepared_demo), "--num-samples", "3", "--epochs", "2",
               "--cpus-per-worker", "auto", "--scheduler", "fifo", "--storage", str(tmp_path), "--name", "auto",
               "--no-export", "--quiet", *where])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    per_worker = cpus // 2
    assert f"2 trial(s) at once" in p.stdout and f"x {per_worker} CPU ({per_worker} torch thread(s))" in p.stdout, p.stdout
    assert "no CPU kept for Ray Data" in p.stdout
    rows = _rows(tmp_path / "auto")
    assert len(rows) == 3 and all(r["status"] == "done" and int(float(r["epochs_run"])) == 2 for r in rows), rows
    threads = {json.loads(ln)["torch_threads"] for f in (tmp_path / "auto").glob("*/result.json")
               for ln in f.read_text().splitlines() if ln.strip()}
    assert threads == {per_worker}
    spans = sorted(_lifetimes(tmp_path / "auto"))
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), f"no two trials ran at once: {spans}"


# ----------------------------------------------------------------------------- accuracy against cost

PARETO_SPACE = """search:
  lr: {loguniform: [3.0e-3, 6.0e-3]}
  batch_size: {choice: [32, 64]}
  train_ratio: {uniform: [0.7, 0.9]}
  width: {choice: [2, 4, 8, 16, 64]}
fixed: {epochs: 3, frontend: filterbank, filters: 8, norm: batch, pool: avg, dense: 16, dense_layers: 1,
        checkpoint_every: 1, seed: 0}
tune: {num_samples: 4, max_concurrent: 2, searcher: optuna, scheduler: fifo, objectives: [macs],
       constraints: {max_params: %d}, seed: 1}
resources: {workers_per_trial: 1, gpus_per_trial: 0, cpus_per_worker: 0.5}
"""


@pytest.mark.slow  # a real search with an export: ~70 s
def test_multi_objective_search_keeps_a_front_and_export_picks_a_point_of_it(ray_session, prepared_demo, tmp_path):
    """A search minimising MACs beside val_accuracy, with a parameter limit that width 64 breaks:
    no trial over the limit trains (Optuna records the rejected samples), the front is printed and
    drawn, and `export --pick` exports the most accurate checkpoint within a MACs limit."""
    import optuna

    from audionet_ray.training.checkpoint import read_meta
    from audionet_ray.training.config import TrainConfig
    from audionet_ray.modeling.costs import model_costs
    from audionet_ray.corpus.prepare import load_manifest
    from audionet_ray.tuning.experiment import pareto_front

    n_classes = len(load_manifest(prepared_demo)["classes"])
    cost = {w: model_costs(TrainConfig.from_dict(dict(width=w, dense=16, dense_layers=1, frontend="filterbank", filters=8,
                                       norm="batch", pool="avg")).model_config(n_classes)) for w in (2, 4, 8, 16, 64)}
    limit = cost[16]["params"]  # width 64 is over it, every other width within
    space = tmp_path / "pareto.yaml"
    space.write_text(PARETO_SPACE % limit)
    exp = tmp_path / "mo"
    p = _tune(["--search-space", str(space), "--data", str(prepared_demo), "--storage", str(tmp_path), "--name", "mo",
               "--address", _address(), "--no-export"], timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = _rows(exp)
    assert len(rows) == 4 and {int(r["width"]) for r in rows} <= {2, 4, 8, 16}, rows
    # each trial's checkpoints record what its model costs, as costs.py computes it
    for folder in (d for d in exp.glob("train_runs/*/checkpoint_*") if d.is_dir()):
        meta, _ = read_meta(folder)
        w = meta["train_config"]["width"]
        assert meta["metrics"]["macs"] == cost[w]["macs"] and meta["metrics"]["params"] == cost[w]["params"]
    points, front = pareto_front(exp, "val_accuracy", "max", "macs")
    # TPE starts at random: with seed 1 it draws widths 64 (over the limit), 2, 16, 4, ...: a width-16
    # model that learns more in 3 epochs than a width-2 one puts at least two points on the front
    assert len(points) == 4 and len(front) >= 2 and "Pareto front of val_accuracy against macs" in p.stdout
    for acc, macs, *_ in points:  # nothing off the front beats a front point on both
        assert not any(f[0] < acc and f[1] >= macs for f in front)
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert len(study.directions) == 2
    rejected = [t for t in study.trials if "over_limits" in t.user_attrs]
    assert rejected and all(t.params["width"] == 64 and t.state.name == "FAIL" for t in rejected)
    # the report draws the front
    assert (exp / "plots" / "pareto_macs.png").stat().st_size > 1000
    # export the best point within a MACs limit between the cheapest and the most accurate
    cheapest = front[0]
    out = subprocess.run([sys.executable, "-m", "audionet_ray.export", str(exp), str(tmp_path / "b"), "--no-int8",
                          "--target-fa-per-hour", "0", "--pick", f"max_macs={cheapest[1]}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    within = [pt for pt in points if pt[1] <= cheapest[1]]
    assert config["selection"]["limits"] == {"max_macs": float(cheapest[1])}
    assert config["deployment"]["macs_per_window"] <= cheapest[1]
    assert config["selection"]["value"] == max(pt[0] for pt in within)
    bad = subprocess.run([sys.executable, "-m", "audionet_ray.export", str(exp), str(tmp_path / "c"),
                          "--pick", "max_macs=1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --pick: no checkpoint under")


@pytest.mark.parametrize("tune, message", [
    ("{objectives: [flops]}", "tune.objectives must be a list of at most one of macs, params, latency_ms"),
    ("{objectives: macs}", "tune.objectives must be a list"),
    ("{constraints: {max_flops: 3}}", "tune.constraints: unknown limit max_flops"),
    ("{constraints: {max_params: -1}}", "tune.constraints.max_params must be a number above 0"),
    ("{constraints: [1]}", "tune.constraints must map limits"),
])
def test_bad_objectives_and_constraints_are_one_line(tune, message, tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text(f"search: {{lr: {{loguniform: [1.0e-4, 1.0e-3]}}}}\ntune: {tune}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(f)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_configuration_over_the_limits_is_never_suggested_and_optuna_records_why():
    """The searcher alone (no Ray cluster): samples over max_params are told to Optuna as failed,
    with the limit they broke, and sampled again; a space with nothing within gives up in one line."""
    import optuna

    from audionet_ray.modeling.costs import model_costs
    from audionet_ray.tuning.study import CostLimits, StudySearch
    from audionet_ray.core.ray_private import optuna_study

    fixed = {"frontend": "filterbank", "filters": 8, "norm": "batch", "pool": "avg", "dense": 16, "dense_layers": 1}
    small = model_costs(TrainConfig.from_dict(dict(width=4, **fixed)).model_config(5))["params"]
    search = {"width": {"choice": [4, 64]}, "lr": {"loguniform": [1e-3, 1e-2]}}
    s = StudySearch(space=DefineByRun(search, {}), metric=["val_accuracy", "macs"], mode=["max", "min"],
                    sampler=optuna.samplers.RandomSampler(seed=0))
    s.limits = CostLimits({"max_params": small}, fixed, 5)
    got = [s.suggest(f"t{i}")["width"] for i in range(8)]
    assert got == [4] * 8
    trials = optuna_study(s).trials
    rejected = [t for t in trials if "over_limits" in t.user_attrs]
    assert rejected and all(t.params["width"] == 64 and t.state == optuna.trial.TrialState.FAIL for t in rejected)
    assert all(t.user_attrs["over_limits"].startswith("params ") for t in rejected)
    nothing = StudySearch(space=DefineByRun({"width": {"choice": [64]}}, {}), metric="val_accuracy", mode="max",
                          sampler=optuna.samplers.RandomSampler(seed=0))
    nothing.limits = CostLimits({"max_params": small}, fixed, 5)
    assert nothing.suggest("t0") == "FINISHED"


# ----------------------------------------------------------------------------- one driver, nothing ignored

def _saved_search(tmp_path: Path, **saved) -> Path:
    """An experiment folder as a started search leaves it: search.json (the smoke space)."""
    from audionet_ray.tuning.experiment import save_spec

    exp = tmp_path / "runs" / "exp"
    exp.mkdir(parents=True)
    save_spec(exp, {"spec": load_spec("smoke").to_dict(), "data": str(tmp_path / "prepared"), **saved})
    return exp


def test_a_second_driver_gets_one_line_and_a_killed_ones_lock_is_taken_over(tmp_path):
    import socket

    exp = _saved_search(tmp_path)
    hold = ("import sys, time\nfrom audionet_ray.tuning.experiment import lock_experiment\n"
            "lock_experiment(sys.argv[1]); print('held', flush=True); time.sleep(600)\n")
    first = subprocess.Popen([sys.executable, "-c", hold, str(exp)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        second = _tune(["--resume", str(exp)], timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"another search driver runs this experiment (host {socket.gethostname()}, pid {first.pid}," in lines[0]
    finally:
        first.kill()  # SIGKILL: it never releases the lock
        first.wait()
    # the lock is taken over with a note; this driver then stops at an option it may not change
    third = _tune(["--resume", str(exp), "--num-samples", "9"], timeout=120)
    assert f"took over {exp / 'driver.lock'}" in third.stdout and f"pid {first.pid}" in third.stdout
    assert third.returncode == 2 and len(third.stderr.strip().splitlines()) == 1
    assert "--num-samples 9: --resume continues the search" in third.stderr and "(num_samples 3)" in third.stderr


@pytest.mark.parametrize("option, value, saved", [
    ("--num-samples", "20", "num_samples 3"), ("--epochs", "7", "epochs 4"), ("--search-space", "default", "search_space "),
    ("--searcher", "random", "searcher optuna"), ("--gpus-per-trial", "1", "gpus_per_trial 0"),
    ("--max-concurrent", "1", "max_concurrent 2"), ("--data", "elsewhere", "data "), ("--name", "other", "name exp"),
    ("--optuna-storage", "sqlite:////tmp/other.db", "optuna_storage None"),
])
def test_resume_refuses_an_option_it_would_otherwise_ignore(option, value, saved, tmp_path, capsys):
    from audionet_ray.tune import main

    exp = _saved_search(tmp_path)
    assert main(["--resume", str(exp), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {option} {value}: --resume continues the search as "
                                                f"{exp / 'search.json'} saved it ({saved}")
    assert f"drop {option}" in err[0]


def test_resume_applies_a_new_time_budget_and_accepts_the_saved_values(tmp_path):
    import argparse

    from audionet_ray.tuning.experiment import load_spec_json
    from audionet_ray.tuning.search_space import SearchSpec
    from audionet_ray.tune import _parser, check_resume_options

    exp = _saved_search(tmp_path)
    argv = ["--resume", str(exp), "--time-budget", "10m", "--num-samples", "3", "--gpus-per-trial", "0", "--quiet"]
    args: argparse.Namespace = _parser().parse_args(argv)
    spec = SearchSpec.from_dict(load_spec_json(exp)["spec"])
    check_resume_options(args, argv, spec, exp)
    assert spec.tune.time_budget_s == 600
    assert SearchSpec.from_dict(load_spec_json(exp)["spec"]).tune.time_budget_s == 600  # the next resume keeps it


def test_resume_with_a_corrupt_optuna_db_is_one_line(tmp_path):
    exp = _saved_search(tmp_path, optuna_storage=f"sqlite:///{tmp_path / 'runs' / 'exp' / 'optuna.db'}")
    (exp / "optuna.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)  # a header, then garbage
    p = _tune(["--resume", str(exp)], timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(f"error: {exp / 'optuna.db'}: the Optuna study file is corrupt")
    assert "restore it from a backup" in lines[0]


def test_resume_shows_no_password_and_takes_it_from_the_command_line(tmp_path, capsys):
    from audionet_ray.tune import main

    url = "postgresql://ann:s3cret@127.0.0.1:9/optuna"
    exp = _saved_search(tmp_path, optuna_storage=url)
    assert "s3cret" not in (exp / "search.json").read_text()
    assert main(["--resume", str(exp), "--optuna-storage", "postgresql://ann:other@127.0.0.1:9/optuna2"]) == 2
    err = capsys.readouterr().err
    assert "other" not in err and "--optuna-storage postgresql://ann:***@127.0.0.1:9/optuna2" in err
    assert main(["--resume", str(exp), "--optuna-storage", url]) == 2  # accepted, then the server is not there
    err = capsys.readouterr().err
    assert "s3cret" not in err and "postgresql://ann:***@127.0.0.1:9/optuna" in err


def test_a_journal_file_holds_a_study_that_two_processes_write_at_once(tmp_path):
    """JournalStorage (meant for NFS, where SQLite's locks break): a path as --optuna-storage."""
    import optuna

    from audionet_ray.tuning.study import check_study, open_storage, study_storage

    exp = tmp_path / "exp"
    url = study_storage(str(tmp_path / "optuna.journal"), exp)
    assert url == str(tmp_path / "optuna.journal")
    optuna.create_study(study_name="exp", storage=open_storage(url))
    write = ("import sys, optuna\nfrom audionet_ray.tuning.study import open_storage\n"
             "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
             "s = optuna.load_study(study_name='exp', storage=open_storage(sys.argv[1]))\n"
             "s.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=10)\n")
    procs = [subprocess.Popen([sys.executable, "-c", write, url]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    check_study(url, "exp")
    trials = optuna.load_study(study_name="exp", storage=open_storage(url)).trials
    assert len(trials) == 20 and sorted(t.number for t in trials) == list(range(20))
    with pytest.raises(ConfigError, match="holds no Optuna study named 'other'"):
        check_study(url, "other")
