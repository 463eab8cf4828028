"""The flat module names of earlier versions keep working after the modules moved into their stage
folders: as imports (one module, not a copy), as `python -m` commands, and in pickles that Tune
saved with an experiment (its tuner.pkl names the trial function by module)."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys

import pytest

from audionet_ray._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_name_imports_the_moved_module_itself(old):
    moved = importlib.import_module(f"audionet_ray.{MOVED[old]}.{old}")
    assert importlib.import_module(f"audionet_ray.{old}") is moved
    assert sys.modules[f"audionet_ray.{old}"] is moved


def test_a_pickle_naming_an_old_module_loads_the_moved_object():
    from audionet_ray.tuning.tuner import run_trial
    from audionet_ray.tuning.study import StudySearch

    # protocol-0 GLOBAL opcodes, as a pickle written before the move names them
    assert pickle.loads(b"caudionet_ray.tuner\nrun_trial\n.") is run_trial
    assert pickle.loads(b"caudionet_ray.study\nStudySearch\n.") is StudySearch


@pytest.mark.parametrize("old", ["predict", "prepare", "far_field"])
def test_python_dash_m_with_an_old_name_runs_the_command(old):
    out = subprocess.run([sys.executable, "-m", f"audionet_ray.{old}", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"python -m audionet_ray.{old}" in out.stdout  # the usage line names the command as users type it


def test_a_name_that_never_existed_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("audionet_ray.no_such_module")
