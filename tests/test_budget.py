"""Issue 25: the time budget is the search's length, and ASHA's rungs sit on checkpoint epochs."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from audionet_ray.training.config import ConfigError
from audionet_ray.tuning.search_space import (MAX_TRIALS, SearchSpec, TuneSettings, builtin_spaces, load_spec, rung_epochs,
                                       tpe_startup_trials, trial_cap)
from audionet_ray.tune import TimeBudget, TrialLines, _parser, apply_overrides, planned_trials, search_over


def _spec(name: str, *argv: str) -> SearchSpec:
    return apply_overrides(load_spec(name), _parser().parse_args(["--search-space", name, *argv]))


def _space(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "space.yaml"
    f.write_text(text)
    return f


# ----------------------------------------------------------------------------- rungs on checkpoints

@pytest.mark.parametrize("grace,rf,epochs", [(2, 2, 4), (4, 2, 40), (5, 2, 40), (4, 3, 30), (2, 2, 32),
                                             (3, 3, 27), (2, 4, 100), (6, 2, 6), (7, 2, 5)])
def test_rung_epochs_are_where_ashas_own_rungs_are(grace, rf, epochs):
    """The check must see the rungs the search's real ASHA ranks at, below the last epoch."""
    from audionet_ray.core.ray_private import asha_rungs
    from audionet_ray.tune import make_scheduler

    spec = SearchSpec(fixed={"epochs": epochs}, tune=TuneSettings(grace_period=grace, reduction_factor=rf))
    real = [int(m) for m, _ in asha_rungs(make_scheduler(spec)) if m < epochs]
    assert rung_epochs(grace, rf, epochs) == real


def _checkpoint_epochs(every: int, epochs: int) -> set[int]:
    """train.py's rule: every `every` epochs and at the end."""
    return {e for e in range(1, epochs + 1) if e % every == 0 or e == epochs}


@pytest.mark.parametrize("name", sorted(builtin_spaces()))
@pytest.mark.parametrize("scheduler", ["space's", "asha"])
def test_every_shipped_space_ranks_trials_at_checkpoint_epochs(name, scheduler):
    spec = _spec(name, *([] if scheduler == "space's" else ["--scheduler", "asha"]))
    t, epochs = spec.tune, spec.fixed["epochs"]
    rungs = rung_epochs(t.grace_period, t.reduction_factor, epochs)
    assert rungs and set(rungs) <= _checkpoint_epochs(spec.fixed["checkpoint_every"], epochs), (rungs, spec.fixed)


def test_default_space_checkpoints_every_2_epochs_with_rungs_at_4_8_16_32():
    spec = load_spec("default")
    assert spec.fixed["checkpoint_every"] == 2 and spec.tune.scheduler == "asha"
    assert rung_epochs(spec.tune.grace_period, spec.tune.reduction_factor, spec.fixed["epochs"]) == [4, 8, 16, 32]


OFF_RUNGS = {  # YAML -> what the one line says
    "fixed every 5, rungs 2, 4": ("fixed: {epochs: 8, checkpoint_every: 5}\ntune: {grace_period: 2}\n",
                                  "rungs at epochs 2, 4 (of 8), but fixed.checkpoint_every 5"),
    "fixed every 3, rungs 4, 8, 16": ("fixed: {epochs: 20, checkpoint_every: 3}\ntune: {grace_period: 4}\n",
                                      "tune.grace_period 4 and reduction_factor 2 put ASHA's rungs at epochs 4, 8, 16 "
                                      "(of 20), but fixed.checkpoint_every 3"),
    "searched, one choice off": ("search: {checkpoint_every: {choice: [4, 2, 3]}}\n"
                                 "fixed: {epochs: 20}\ntune: {grace_period: 4}\n", "but search.checkpoint_every 3"),
    "searched range": ("search: {checkpoint_every: {randint: [1, 4]}}\nfixed: {epochs: 20}\ntune: {grace_period: 4}\n",
                       "but search.checkpoint_every 3"),
    "the default checkpoint_every, rf 3": ("fixed: {epochs: 40}\ntune: {grace_period: 3, reduction_factor: 3}\n",
                                           "rungs at epochs 3, 9, 27 (of 40), but fixed.checkpoint_every 2"),
}


@pytest.mark.parametrize("case", sorted(OFF_RUNGS))
def test_a_rung_that_is_not_a_checkpoint_epoch_is_one_line_naming_file_and_keys(case, tmp_path):
    text, message = OFF_RUNGS[case]
    f = _space(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_spec(f)
    line = str(e.value)
    assert line.startswith(f"{f}: ") and message in line and "\n" not in line, line
    assert "make grace_period a multiple of checkpoint_every" in line


@pytest.mark.parametrize("text", [
    "fixed: {epochs: 8, checkpoint_every: 5}\ntune: {scheduler: fifo}\n",       # no rungs: FIFO
    "fixed: {epochs: 4, checkpoint_every: 3}\ntune: {grace_period: 4}\n",       # no rung before the last epoch
    "fixed: {epochs: 100, checkpoint_every: 3}\ntune: {grace_period: 6, reduction_factor: 3}\n",
    "search: {checkpoint_every: {choice: [1, 2, 4]}}\nfixed: {epochs: 40}\ntune: {grace_period: 4}\n",
    "search: {checkpoint_every: {randint: [1, 3]}}\nfixed: {epochs: 40}\ntune: {grace_period: 2}\n",
])
def test_rungs_on_checkpoint_epochs_pass(text, tmp_path):
    load_spec(_space(tmp_path, text))


def test_switching_a_space_to_asha_on_the_command_line_is_checked_and_names_the_file(tmp_path):
    f = _space(tmp_path, "fixed: {epochs: 12, checkpoint_every: 5}\ntune: {scheduler: fifo, grace_period: 2}\n")
    load_spec(f)  # FIFO: fine
    with pytest.raises(ConfigError) as e:
        apply_overrides(load_spec(f), _parser().parse_args(["--search-space", str(f), "--scheduler", "asha"]))
    assert str(e.value).startswith(f"{f} with the command line's options: tune.grace_period 2")
    with pytest.raises(ConfigError, match="reduction_factor must be >= 2"):
        load_spec(_space(tmp_path, "tune: {reduction_factor: 1}\n"))


def test_cli_refuses_off_checkpoint_rungs_before_ray_starts(tmp_path):
    f = _space(tmp_path, "fixed: {epochs: 12, checkpoint_every: 5}\ntune: {grace_period: 2}\n")
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--search-space", str(f), "--storage", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {f}: ") and "fixed.checkpoint_every 5" in lines[0], p.stderr
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- num_samples as a cap

def test_trial_cap():
    assert trial_cap(20, budgeted=False, given=False) == 20  # no budget: the plan
    assert trial_cap(20, budgeted=False, given=True) == 20
    assert trial_cap(20, budgeted=True, given=False) == MAX_TRIALS == 1000  # the budget is the length
    assert trial_cap(20, budgeted=True, given=True) == 20  # --num-samples: a hard cap


@pytest.mark.parametrize("argv,want", [
    ([], 20),
    (["--time-budget", "30m"], MAX_TRIALS),
    (["--time-budget", "30m", "--num-samples", "20"], 20),
    (["--time-budget", "30m", "--num-samples", "5"], 5),
    (["--num-samples", "5"], 5),
])
def test_a_time_budget_makes_num_samples_a_cap(argv, want):
    spec = _spec("default", *argv)
    assert spec.tune.num_samples == want
    assert tpe_startup_trials(spec.tune) == max(2, min(10, want // 3))  # a capped budget search: Optuna's 10, not 333


def test_a_budget_in_the_file_is_the_length_too(tmp_path):
    f = _space(tmp_path, "tune: {num_samples: 12, time_budget: 30m}\n")
    assert _spec(str(f)).tune.num_samples == MAX_TRIALS
    assert _spec(str(f), "--num-samples", "12").tune.num_samples == 12
    assert tpe_startup_trials(_spec(str(f)).tune) == 10


def test_planned_trials_line():
    assert planned_trials(20, None) == "20 trials"
    assert planned_trials(1000, TimeBudget(600.0)) == "trials until the time budget is spent (at most 1000)"


# ----------------------------------------------------------------------------- the end of the budget

def test_the_last_trials_start_only_where_most_configurations_reach_their_rung():
    b = TimeBudget(budget_s=1000.0, first_rung=4)  # reserve 60 s
    b.rung_s = [30.0, 40.0, 50.0, 60.0, 120.0]  # one wide, slow configuration
    assert b.rung_estimate() == 60.0  # the upper quartile: 3 in 4 configurations make it; the median (50) half
    b.spent_before = 1000 - 60 - 61  # 61 s left
    assert b.can_start() and not b.over()
    b.spent_before += 6  # 55 s left: enough for the median trial, not for the quartile's
    assert not b.can_start() and b.over()
    spent, left, need = b.closed
    assert left == pytest.approx(55, abs=0.5) and need == 60.0
    b.spent_before -= 30  # time does not come back, nor does sampling (Tune saved its searcher as finished)
    assert b.over()


def test_a_closed_budget_stays_closed_after_a_resume_and_an_open_one_stays_open():
    b = TimeBudget(budget_s=300.0, spent_before=100.0, first_rung=2, rung_s=[250.0])
    assert not b.can_start()
    again = TimeBudget.resume(600.0, b.state(), 2, t0=b.t0)  # even with more time: no trial would start
    assert again.closed == b.closed and again.over()
    fresh = TimeBudget.resume(600.0, TimeBudget(300.0, 100.0, 2, [50.0]).state(), 2, t0=b.t0)
    assert fresh.closed is None and not fresh.over() and fresh.can_start()
    assert TimeBudget.resume(600.0, {"budget_s": 600, "spent_s": 10.0, "rung_s": []}, 2, 0.0).closed is None  # old budget.json


@pytest.mark.parametrize("trials,ended,num_samples,budget,over", [
    (5, 5, 5, None, True),           # every trial ran
    (4, 4, 5, None, False),          # interrupted before the last trial
    (5, 4, 5, None, False),          # one still running
    (7, 7, 1000, "spent", True),     # the budget ran out: its trials stopped (TERMINATED)
    (7, 7, 1000, "closed", True),    # the budget started no more trials and the last ones ended
    (7, 6, 1000, "spent", False),    # interrupted: a trial is still RUNNING, a resume continues it
    (7, 7, 1000, "open", False),     # interrupted between trials: a resume samples more
    (3, 3, 3, "open", True),         # the --num-samples cap reached within the budget
])
def test_search_over(trials, ended, num_samples, budget, over):
    b = None
    if budget:
        b = TimeBudget(600.0, spent_before=700.0 if budget == "spent" else 100.0)
        if budget == "closed":
            b.closed = (100.0, 440.0, 500.0)
    assert search_over(trials, ended, num_samples, b) is over


def test_trial_lines_say_which_trials_the_budget_stopped(capsys):
    spent, running = TimeBudget(100.0, spent_before=200.0), TimeBudget(100.0)
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.001}, last_result={"epoch": 6, "val_accuracy": 0.5},
                            error_file="")
    TrialLines("val_accuracy", 40, spent).on_trial_complete(0, [], trial)
    TrialLines("val_accuracy", 40, running).on_trial_complete(0, [], trial)
    TrialLines("val_accuracy", 6, spent).on_trial_complete(0, [], trial)
    out = capsys.readouterr().out.splitlines()
    assert [re.search(r"trial t1 (.*) at epoch", ln)[1] for ln in out] == [
        "stopped by the time budget", "stopped early", "finished"], out


# ----------------------------------------------------------------------------- one real search

@pytest.mark.slow
def test_a_budget_search_runs_past_num_samples_and_ends_inside_the_budget(ray_session, prepared_demo, tmp_path):
    """The smoke space plans 3 trials; with a time budget and no --num-samples the search keeps
    sampling until the budget is spent, ends inside it, exports the best trial, and a resume of the
    ended search starts nothing."""
    import csv
    import json

    budget = 150
    base = ["--address", ray_session.get_runtime_context().gcs_address]
    cmd = [sys.executable, "-m", "audionet_ray.tune", "--search-space", "smoke", "--data", str(prepared_demo),
           "--time-budget", f"{budget}s", "--storage", str(tmp_path), "--name", "long", *base]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=budget + 240, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    exp = tmp_path / "long"
    first = next(ln for ln in p.stdout.splitlines() if ln.startswith("search long:"))
    assert "trials until the time budget is spent (at most 1000)" in first, first
    with open(exp / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 3, rows  # more than the space's num_samples
    spent = json.loads((exp / "budget.json").read_text())["spent_s"]
    assert spent <= budget + 10, (spent, p.stdout[-3000:])
    # the budget ended it, not num_samples: by stopping trials when it ran out, or by starting none
    # that could not reach epoch 2 in the time left (smoke's 4-epoch trials then end soon after)
    assert re.search(r"time budget of 2m30s( reached: unfinished trials stopped|: no trial started after)",
                     p.stdout), p.stdout[-3000:]
    print(f"{len(rows)} trials in {spent:.0f} s of {budget} s:",
          *(ln for ln in p.stdout.splitlines() if ln.startswith(("time budget of", "trial "))), sep="\n")
    assert "exported the best model" in p.stdout and (exp / "bundle" / "config.json").exists()
    assert re.search(rf"time spent: .* of the 2m30s budget, {len(rows)} trial\(s\)", p.stdout), p.stdout[-2000:]

    import optuna  # the search is over: no Optuna trial is left RUNNING

    study = optuna.load_study(study_name="long", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))

    again = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--resume", str(exp), "--no-export", *base],
                           capture_output=True, text=True, timeout=240, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    with open(exp / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


# ----------------------------------------------------------------------------- from launch to bundle (issue 29)

def test_the_split_counts_what_went_before_and_reserves_the_end():
    import time

    from audionet_ray.tune import fmt_duration

    b = TimeBudget(budget_s=180.0, end_s=75.0, t0=time.monotonic() - 15)  # launched 15 s ago
    assert b.reserve_s == 18.0 + 75.0  # 10 % for stopping and writing, plus the keyword bundle's streams
    assert b.spent() + b.reserve_s + b.left() == pytest.approx(180.0)
    assert b.split_line() == ("time budget 3m00s: 15s spent before the search (synthesis, preparation, starting Ray), "
                              f"1m33s reserved for export and evaluation, {fmt_duration(b.left())} for trials")
    assert fmt_duration(b.left()) == "1m12s"
    b.check_fits()
    resumed = TimeBudget.resume(180.0, {"spent_s": 100.0}, 2, t0=time.monotonic(), end_s=20.0)  # what went before stays spent
    assert resumed.split_line().startswith("time budget 3m00s (1m20s left): 1m40s spent before the search (earlier runs")


def test_a_budget_too_small_for_what_it_holds_is_one_line():
    import time

    b = TimeBudget(budget_s=120.0, end_s=75.0, t0=time.monotonic() - 20)  # 20 + 12 + 75: 13 s left
    with pytest.raises(ConfigError) as e:
        b.check_fits()
    assert str(e.value).startswith("--time-budget 2m00s: 20s went to synthesis, preparation and starting Ray and "
                                   "1m27s is reserved for export and evaluation, which leaves 13s for trials: "
                                   "give at least 3m00s"), str(e.value)
    assert "\n" not in str(e.value)


def test_the_end_reserve_follows_the_costliest_model_the_space_can_sample(prepared_demo):
    from audionet_ray.tune import END_FIXED_S, end_reserve_s, largest_macs

    smoke, default = _spec("smoke", "--keywords", "yes,no"), _spec("default", "--keywords", "yes,no")
    assert 3 < largest_macs(smoke, 4, 16_000) < largest_macs(default, 4, 16_000)  # default: width 128 at its top
    wide = _spec("default", "--keywords", "yes,no")
    wide.search.pop("width")
    wide.fixed["width"] = 64
    assert largest_macs(wide, 4, 16_000) < largest_macs(default, 4, 16_000)
    assert END_FIXED_S < end_reserve_s(smoke, prepared_demo) < end_reserve_s(default, prepared_demo)
    assert end_reserve_s(smoke, prepared_demo, export=False) == 0.0  # no bundle to calibrate
    assert end_reserve_s(_spec("smoke"), prepared_demo) == 0.0  # a classifier: no streams


@pytest.mark.slow  # synthesis, a search and a keyword bundle's export and evaluation: ~3 min
def test_typed_phrase_to_exported_bundle_within_the_budget(tmp_path):
    """The budget counts from launch: synthesis and preparation come out of it and the end is
    reserved, so the command, export and test streams included, ends within it."""
    import time

    budget = 180
    env = {**os.environ, "AUDIONET_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--keywords", "marmalade", "--synthesize",
                        "--synthesize-speakers", "12", "--synthesize-engines", "espeak", "--search-space", "smoke",
                        "--time-budget", "3m", "--num-cpus", "2", "--storage", str(tmp_path), "--name", "kw"],
                       capture_output=True, text=True, timeout=budget + 240, env=env)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    first = next(ln for ln in p.stdout.splitlines() if ln.startswith("search kw:"))
    m = re.search(r"time budget 3m00s: (\S+) spent before the search \(synthesis, preparation, starting Ray\), "
                  r"(\S+) reserved for export and evaluation, (\S+) for trials", first)
    assert m, first
    print(first, f"\ntook {took:.0f} s", *p.stdout.splitlines()[-4:], sep="\n")
    assert (tmp_path / "kw" / "bundle" / "config.json").exists() and "test-speaker streams" in p.stdout
    assert took <= budget + 20, (took, p.stdout[-3000:])
