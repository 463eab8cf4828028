"""The experiment folder (experiment.py) and the helpers it writes through (storage.py): one driver
at a time, files written whole, and no password in anything written or shown. Real processes
hold and lose the lock; nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray.core.errors import ConfigError
from audionet_ray.tuning.experiment import LOCK_FILE, SPEC_FILE, load_spec_json, lock_experiment, save_spec
from audionet_ray.core.storage import HIDDEN, hides_password, redact, redact_text, write_atomic

HOLD = """
import sys, time
from audionet_ray.tuning.experiment import lock_experiment
lock_experiment(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def _holder(where: str) -> subprocess.Popen:
    """A real process that takes the lock with the real function and keeps it."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, where], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _take(where: str) -> subprocess.CompletedProcess:
    code = f"from audionet_ray.tuning.experiment import lock_experiment; lock_experiment({where!r}); print('mine')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("uri", [False, True])
def test_a_second_driver_is_refused_and_a_killed_drivers_lock_is_taken_over(uri, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    where = f"file://{exp}" if uri else str(exp)
    first = _holder(where)
    try:
        second = _take(where)
        assert second.returncode != 0 and "mine" not in second.stdout
        line = second.stderr.strip().splitlines()[-1]
        assert f"another search driver runs this experiment (host {socket.gethostname()}, pid {first.pid}" in line
    finally:
        first.send_signal(signal.SIGKILL)  # no chance to release anything
        first.wait()
    third = _take(where)
    assert third.returncode == 0, third.stderr
    assert f"took over {exp / LOCK_FILE if not uri else where + '/' + LOCK_FILE}" in third.stdout
    assert f"pid {first.pid}" in third.stdout
    fourth = _take(where)  # the third exited cleanly: released, nothing to take over
    assert fourth.returncode == 0 and "took over" not in fourth.stdout


def test_the_same_process_may_lock_again_and_a_released_lock_is_free(tmp_path):
    lock = lock_experiment(tmp_path)
    again = lock_experiment(tmp_path)  # e.g. main() called twice in one process
    again.release()
    lock.release()  # already released: nothing happens
    assert _take(str(tmp_path)).returncode == 0


def test_a_holder_on_another_host_behind_a_uri_is_refused_with_how_to_free_it(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "2026-01-01 00:00:00"}))
    with pytest.raises(ConfigError) as e:
        lock_experiment(f"file://{tmp_path}")
    assert "(host elsewhere, pid 1, since 2026-01-01 00:00:00)" in str(e.value)
    assert f"delete file://{tmp_path}/{LOCK_FILE}" in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- files written whole

def test_write_atomic_replaces_whole_and_leaves_no_temporary_file(tmp_path):
    f = tmp_path / "results.csv"
    f.write_text("old")
    write_atomic(f, "new,rows\n")
    assert f.read_text() == "new,rows\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
    write_atomic(f"file://{tmp_path}/results.csv", b"uri")
    assert f.read_bytes() == b"uri"


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    """A process killed while writing the temporary file: the old search.json is still there, whole."""
    f = tmp_path / SPEC_FILE
    f.write_text('{"spec": {}}')
    code = ("import os, signal, sys\nfrom audionet_ray import storage\n"
            "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
            "storage.write_atomic(sys.argv[1], 'x' * 10_000_000)\n")
    p = subprocess.run([sys.executable, "-c", code, str(f)], timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert f.read_text() == '{"spec": {}}'


# ----------------------------------------------------------------------------- passwords

words = st.text(st.characters(blacklist_characters="@/:?#[]", blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)


@settings(deadline=None)  # the first example imports SQLAlchemy
@given(scheme=st.sampled_from(["postgresql", "postgresql+psycopg2", "mysql+pymysql", "sqlite"]), user=words,
       password=st.text(st.characters(blacklist_characters="@%*", blacklist_categories=("Cs", "Cc")), min_size=1),
       host=words, db=words)
def test_a_password_never_survives_redaction_and_the_rest_does(scheme, user, password, host, db):
    from sqlalchemy.engine import make_url

    url = f"{scheme}://{user}:{password}@{host}/{db}"
    shown = redact(url)
    assert shown == f"{scheme}://{user}:{HIDDEN}@{host}/{db}" and hides_password(shown)
    assert make_url(url).password == password  # what SQLAlchemy would connect with is what is hidden
    assert redact(shown) == shown
    message = f"cannot connect to {url} with password {password}"
    assert password not in redact_text(message, url).replace(f"{scheme}://{user}:{HIDDEN}@{host}/{db}", "")


@given(url=st.one_of(st.builds("sqlite:///{}".format, st.text(min_size=1)), st.text().filter(lambda s: "://" not in s),
                     st.builds("postgresql://{}@{}/db".format, words, words)))
def test_a_url_without_a_password_is_shown_as_it_is(url):
    assert redact(url) == url and not hides_password(url)


def test_search_json_never_holds_the_password(tmp_path):
    save_spec(tmp_path, {"spec": {}, "data": "d", "optuna_storage": "postgresql://ann:s3cret@db.example/optuna"})
    assert "s3cret" not in (tmp_path / SPEC_FILE).read_text()
    assert load_spec_json(tmp_path)["optuna_storage"] == "postgresql://ann:***@db.example/optuna"


# ----------------------------------------------------------------------------- the one "best"

# a row's metric as results, histories and checkpoints hold it: a number, NaN, None, no key at all,
# or something that is not a score (a bool, text)
metric_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.none(),
                          st.just("missing"), st.booleans(), st.text(max_size=2))
rows_of_metric = st.lists(metric_values, max_size=12).map(
    lambda vs: [{"epoch": i} if v == "missing" else {"epoch": i, "m": v} for i, v in enumerate(vs)])


def _valid(row: dict) -> bool:
    v = row.get("m")
    return type(v) in (int, float) and v == v  # not a bool, not NaN


@given(rows=rows_of_metric, mode=st.sampled_from(["max", "min"]))
def test_best_is_the_brute_force_best_of_the_valid_values_first_on_a_tie(rows, mode):
    from audionet_ray.tuning.experiment import best

    valid = [r for r in rows if _valid(r)]
    got = best(rows, "m", mode)
    if not valid:
        assert got is None
        return
    top = (max if mode == "max" else min)(r["m"] for r in valid)
    assert got is next(r for r in valid if r["m"] == top)  # the first row that has it


@given(rows=rows_of_metric, mode=st.sampled_from(["max", "min"]))
def test_ranked_puts_the_valid_values_best_first_and_the_rest_last_in_order(rows, mode):
    from audionet_ray.tuning.experiment import best, ranked

    order = ranked(rows, "m", mode)
    assert sorted(map(id, order)) == sorted(map(id, rows))
    n = sum(map(_valid, rows))
    head, tail = order[:n], order[n:]
    assert all(map(_valid, head)) and [r["epoch"] for r in tail] == [r["epoch"] for r in rows if not _valid(r)]
    sign = 1 if mode == "max" else -1
    assert all(sign * a["m"] >= sign * b["m"] for a, b in zip(head, head[1:]))
    assert (head[0] if head else None) is best(rows, "m", mode)


@settings(deadline=None, max_examples=60)  # the first example imports Ray Tune and pandas
@given(rows=rows_of_metric, mode=st.sampled_from(["max", "min"]))
def test_a_trials_best_and_results_csv_agree_with_the_one_best(rows, mode, tmp_path_factory):
    """Trial.best over its epochs and results.csv's best_<metric> (from Tune's real Result)."""
    import pandas as pd
    from ray.tune import Result

    from audionet_ray.tuning.experiment import RESULTS_FILE, Trial, best, write_results

    numeric = [r for r in rows if not isinstance(r.get("m"), str)]  # a DataFrame column of one kind
    want = best(numeric, "m", mode)
    assert Trial("t", {}, "TERMINATED", numeric).best("m", mode) == (None if want is None else want["m"])
    frame = pd.DataFrame([{"epoch": r["epoch"], "m": r.get("m")} for r in numeric]) if numeric else None
    result = Result(metrics={"trial_id": "t", "m": 0.0, "config": {}}, checkpoint=None, error=None,
                    path="/nowhere/t", metrics_dataframe=frame)
    exp = tmp_path_factory.mktemp("exp")
    (row,) = write_results([result], exp, "m", mode)
    assert row["best_m"] == (None if want is None else float(want["m"]))
    assert (exp / RESULTS_FILE).is_file()


def test_the_pareto_front_keeps_the_points_no_other_beats_cheapest_first():
    from audionet_ray.core.ranking import pareto_front

    points = [(0.9, 100, "a"), (0.8, 50, "b"), (0.85, 120, "c"), (0.95, 400, "d"), (float("nan"), 10, "e"),
              (0.8, 60, "f")]
    assert [p[2] for p in pareto_front(points, "max")] == ["b", "a", "d"]
    losses = [(0.3, 100, "a"), (0.5, 50, "b"), (0.2, 300, "c"), (0.4, 200, "d")]
    assert [p[2] for p in pareto_front(losses, "min")] == ["b", "a", "c"]
