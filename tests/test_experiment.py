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

from audionet_ray.errors import ConfigError
from audionet_ray.experiment import LOCK_FILE, SPEC_FILE, load_spec_json, lock_experiment, save_spec
from audionet_ray.storage import HIDDEN, hides_password, redact, redact_text, write_atomic

HOLD = """
import sys, time
from audionet_ray.experiment import lock_experiment
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
    code = f"from audionet_ray.experiment import lock_experiment; lock_experiment({where!r}); print('mine')"
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
