"""The front door: `audionet-ray COMMAND` dispatches to each module's main, `runs` lists a storage
folder's experiments, `audionet_ray.search` runs a real search, and the installed wheel's script works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_packaging import _source_copy  # the wheel is built from a copy, as that test builds it

from audionet_ray import cli

ROOT = Path(__file__).resolve().parent.parent


def _saved_search(storage: Path, name: str) -> Path:
    """An experiment folder as a search leaves it when it starts: search.json (the smoke space)."""
    from audionet_ray.tuning.experiment import save_spec
    from audionet_ray.tuning.search_space import load_spec

    exp = storage / name
    exp.mkdir(parents=True)
    save_spec(exp, {"spec": load_spec("smoke").to_dict(), "data": str(storage / "prepared")})
    return exp


# ----------------------------------------------------------------------------- dispatch

def test_help_lists_every_command_in_one_line_each(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("prepare", "speech", "train", "tune", "export", "predict", "evaluate", "report", "runs"):
        (line,) = [line for line in out.splitlines() if line.strip().startswith(name + " ")]
        assert len(line.split()) > 2, line  # the name and what it does


@pytest.mark.parametrize("command, module", [("tune", "tune"), ("speech", "speech_data"), ("export", "export"),
                                             ("prepare", "prepare")])
def test_a_command_shows_its_modules_own_help(command, module, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    assert f"usage: python -m audionet_ray.{module}" in capsys.readouterr().out


def test_options_reach_the_command_unchanged(tmp_path, capsys):
    """tune's own one-line refusal of a bad --time-budget, through the front door."""
    assert cli.main(["tune", "--time-budget", "soon", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --time-budget soon"), err


def test_an_unknown_command_is_one_line_with_a_suggestion(capsys):
    assert cli.main(["tnue", "--num-samples", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "unknown command 'tnue'" in captured.err and "did you mean 'tune'?" in captured.err


def test_python_m_forms_still_work():
    p = subprocess.run([sys.executable, "-m", "audionet_ray.report", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "usage: python -m audionet_ray.report" in p.stdout


def test_importing_the_package_loads_neither_ray_nor_torch():
    code = ("import sys, audionet_ray; assert callable(audionet_ray.search); "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", "import sys, audionet_ray; "
                        "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr  # and the API is there on first use


# ----------------------------------------------------------------------------- runs

def test_runs_of_an_empty_or_missing_storage_is_one_line(tmp_path, capsys):
    for storage in (tmp_path, tmp_path / "missing"):
        assert cli.main(["runs", "--storage", str(storage)]) == 0
        captured = capsys.readouterr()
        assert captured.out.strip() == (f"no experiments in {storage} (start one with "
                                         f"`audionet-ray tune --storage {storage}`)") and captured.err == ""


def test_runs_tells_running_from_interrupted_searches(tmp_path, capsys):
    storage = tmp_path / "runs"
    started, live, killed = (_saved_search(storage, n) for n in ("a-started", "b-live", "c-killed"))
    (storage / "not-an-experiment").mkdir()
    hold = ("import sys, time\nfrom audionet_ray.tuning.experiment import lock_experiment\n"
            "lock_experiment(sys.argv[1]); print('held', flush=True); time.sleep(600)\n")
    drivers = [subprocess.Popen([sys.executable, "-c", hold, str(e)], stdout=subprocess.PIPE, text=True)
               for e in (live, killed)]
    try:
        assert [d.stdout.readline().strip() for d in drivers] == ["held", "held"]
        drivers[1].kill()  # SIGKILL: its lock still names it
        drivers[1].wait()
        assert cli.main(["runs", "--storage", str(storage)]) == 0
    finally:
        for d in drivers:
            d.kill()
            d.wait()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"3 experiment(s) in {storage}:"
    assert lines[1].split()[:4] == ["name", "state", "trials", "metric"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"a-started", "b-live", "c-killed"}
    assert rows["a-started"] == ["a-started", "interrupted", "0", "val_accuracy", "(max)", "-", "-", "no"]
    assert rows["b-live"][1] == "running" and rows["c-killed"][1] == "interrupted"


def test_runs_names_a_folder_it_cannot_read_and_goes_on(tmp_path, capsys):
    storage = tmp_path / "runs"
    _saved_search(storage, "good")
    (storage / "broken").mkdir()
    (storage / "broken" / "search.json").write_text('{"spec": ')  # cut short
    assert cli.main(["runs", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "2 experiment(s)" in out and "note: broken: " in out and "cut short" in out


# ----------------------------------------------------------------------------- the Python API

def test_search_options_are_tunes_and_a_misspelt_one_is_refused(tmp_path):
    from audionet_ray.api import search_argv
    from audionet_ray.core.errors import ConfigError

    argv = search_argv(tmp_path / "data", "smoke", budget="2m", keywords=["yes", "no"], num_samples=2,
                       export=False, epochs=2, quiet=True, verbose=False)
    assert argv == ["--search-space", "smoke", "--data", str(tmp_path / "data"), "--time-budget", "2m",
                    "--num-samples", "2", "--no-export", "--epochs", "2", "--quiet", "--keywords", "yes,no"]
    from audionet_ray.tune import _parser

    _parser().parse_args(argv)  # tune reads it
    with pytest.raises(ConfigError, match="no option 'epoch' \\(did you mean 'epochs'\\?\\)"):
        search_argv(epoch=3)


def test_search_passes_synthesize_and_says_a_bad_phrase_in_one_line(tmp_path, monkeypatch):
    import audionet_ray
    from audionet_ray.api import search_argv
    from audionet_ray.core.errors import ConfigError

    argv = search_argv(keywords=["hey computer", "marmalade"], synthesize=True, synthesize_speakers=8)
    assert argv[-5:] == ["--synthesize", "--synthesize-speakers", "8", "--keywords", "hey computer,marmalade"]
    monkeypatch.setenv("AUDIONET_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="^--keywords: ") as e:
        audionet_ray.search(keywords=["naïve"], synthesize=True, storage=tmp_path)
    assert "\n" not in str(e.value)


def test_search_raises_tunes_one_line_instead_of_an_exit_code(tmp_path):
    import audionet_ray
    from audionet_ray.core.errors import ConfigError

    with pytest.raises(ConfigError, match="^--time-budget soon"):
        audionet_ray.search(tmp_path / "nothing", "smoke", budget="soon", storage=tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        audionet_ray.search(tmp_path / "nothing", str(tmp_path / "missing.yaml"), storage=tmp_path)


def test_search_refuses_a_ray_this_process_already_started(ray_session, tmp_path):
    import audionet_ray
    from audionet_ray.core.errors import ConfigError

    with pytest.raises(ConfigError, match="Ray is already initialised in this process.*ray.shutdown"):
        audionet_ray.search(tmp_path, "smoke", storage=tmp_path)
    assert ray_session.is_initialized() and not list(tmp_path.iterdir())  # left as it was, nothing written


SEARCH = """
import json, sys
import audionet_ray
r = audionet_ray.search(sys.argv[1], "smoke", storage=sys.argv[2], name="api", num_samples=2, epochs=2,
                        address=sys.argv[3], quiet=True)
b = r.load_bundle()
print(json.dumps({"result": {k: str(v) for k, v in vars(r).items()}, "score": r.score, "lr": r.config["lr"],
                  "classes": b.classes, "package": audionet_ray.__file__}))
"""


@pytest.fixture(scope="module")
def api_search(ray_session, prepared_demo, tmp_path_factory):
    """One real search through `audionet_ray.search` (the smoke space, 2 trials of 2 epochs, exported),
    in its own process attached to the session's Ray: (storage, what it printed as JSON)."""
    storage = tmp_path_factory.mktemp("api")
    address = ray_session.get_runtime_context().gcs_address
    p = subprocess.run([sys.executable, "-c", SEARCH, str(prepared_demo), str(storage), address],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return storage, json.loads(p.stdout.splitlines()[-1])


@pytest.mark.slow  # a real search with an export: ~60 s on 2 cores
def test_search_returns_the_best_checkpoint_and_the_bundle(api_search):
    from audionet_ray.training.checkpoint import read_meta
    from audionet_ray.tuning.experiment import best_checkpoint

    storage, out = api_search
    r = out["result"]
    exp = storage / "api"
    assert r["experiment"] == str(exp) and r["metric"] == "val_accuracy" and r["mode"] == "max"
    trial_id, ckpt, meta = best_checkpoint(exp, "val_accuracy", "max")
    assert (r["trial_id"], r["checkpoint"]) == (trial_id, str(ckpt))
    assert out["score"] == meta["metrics"]["val_accuracy"] and out["lr"] == meta["train_config"]["lr"]
    assert read_meta(Path(r["checkpoint"]))[0]["epoch"] == int(r["epoch"])
    assert r["bundle"] == str(exp / "bundle") and (exp / "bundle" / "config.json").is_file()
    assert out["classes"] == json.loads((exp / "bundle" / "config.json").read_text())["classes"]
    assert len(list((exp / "train_runs").iterdir())) == 2


@pytest.mark.slow
def test_runs_shows_a_finished_search_with_its_best_score_and_bundle(api_search, capsys):
    storage, out = api_search
    _saved_search(storage, "later")  # beside it, one that never ran
    assert cli.main(["runs", "--storage", str(storage)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["api"] == ["api", "finished", "2", "val_accuracy", "(max)", f"{out['score']:.4g}",
                           out["result"]["trial_id"], "yes"]
    assert rows["later"][1:3] == ["interrupted", "0"]


# ----------------------------------------------------------------------------- the installed wheel

def _site_packages() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]


@pytest.mark.slow
def test_the_installed_wheel_gives_a_working_console_script(tmp_path):
    """`pip install` of the wheel (not editable) into a fresh venv that sees this venv's dependencies
    (a .pth line: no download), then its `audionet-ray`, run from elsewhere."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(_source_copy(tmp_path / "src"))],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("audionet_ray-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies: a path line, not a site dir, so this venv's editable finder of the checkout is not run
    (site / "deps.pth").write_text(_site_packages() + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    script = venv / "bin" / "audionet-ray"
    assert script.is_file()
    elsewhere, empty = tmp_path / "elsewhere", tmp_path / "empty"
    elsewhere.mkdir()
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args):
        return subprocess.run([str(script), *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)

    p = run("tune", "--help")
    assert p.returncode == 0 and "usage: python -m audionet_ray.tune" in p.stdout and "--time-budget" in p.stdout, p.stderr
    p = run("runs", "--storage", str(empty))
    assert p.returncode == 0 and p.stdout.strip().startswith(f"no experiments in {empty}"), p.stdout + p.stderr
    p = subprocess.run([str(python), "-c", "import audionet_ray.cli as c, audionet_ray.api as a; print(c.__file__); "
                        "print(a.__file__)"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for f in p.stdout.split():
        assert Path(f).is_relative_to(site / "audionet_ray"), p.stdout  # the installed copy, not this checkout
    assert script.read_text().startswith(f"#!{python}")
    p = run("runs")  # tune's default storage, ./runs, here: none
    assert p.returncode == 0 and p.stdout.strip().startswith("no experiments in runs"), p.stdout + p.stderr
