"""audionet_ray/log.py and the options every command shares: `--log-level` hides a real command's
progress and keeps its warnings, every command's --help shows its defaults, an option keeps one
meaning across commands, and a renamed option's old name still works and says what replaced it."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray import cli, log
from audionet_ray.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _level_restored():
    """A test that sets the level in this process leaves the next test at the level it found."""
    root = logging.getLogger(log.ROOT)
    level, env = root.level, os.environ.get(log.ENV)
    yield
    root.setLevel(level)
    if env is None:
        os.environ.pop(log.ENV, None)
    else:
        os.environ[log.ENV] = env


def _wav(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.random.default_rng(seed).standard_normal(16_000) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm.tobytes())


def _dataset(root: Path, words: tuple[str, ...]) -> Path:
    for i, word in enumerate(words):
        for k in range(2):
            _wav(root / word / f"spk{k}_nohash_0.wav", seed=10 * i + k)
    return root


def _run(module: str, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != log.ENV}  # the command's own default, not this process's
    return subprocess.run([sys.executable, "-m", f"audionet_ray.{module}", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- a real command's lines

def test_default_level_says_what_prepare_always_said(tmp_path):
    root = _dataset(tmp_path / "data", ("yes", "no"))
    p = _run("prepare", root, tmp_path / "out", "--jobs", "1")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("prepared 4 clips in 2 classes"), p.stdout
    assert lines[1] == f"manifest: {tmp_path / 'out' / 'manifest.json'}"  # plain lines, no level or logger prefix
    assert p.stderr == ""


def test_log_level_warning_hides_progress_and_keeps_warnings(tmp_path):
    two = _dataset(tmp_path / "two", ("yes", "no"))
    quiet = _run("prepare", two, tmp_path / "out2", "--jobs", "1", "--log-level", "warning")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", (quiet.stdout, quiet.stderr)
    assert (tmp_path / "out2" / "manifest.json").is_file()  # the work is done, only the talk is gone

    one = _dataset(tmp_path / "one", ("yes",))
    warned = _run("prepare", one, tmp_path / "out1", "--jobs", "1", "--log-level", "WARNING")
    assert warned.returncode == 0, warned.stderr
    (line,) = warned.stdout.splitlines()  # the summary with its warning; not the manifest line
    assert "warning: only one class" in line and line.startswith("prepared 2 clips in 1 classes")


def test_errors_keep_their_one_line_at_every_level(tmp_path):
    p = _run("evaluate", tmp_path / "no_such_bundle", "--log-level", "error")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: ") and "no_such_bundle" in line


def test_a_bad_log_level_is_argparse_one_line(tmp_path):
    p = _run("prepare", tmp_path, tmp_path / "out", "--log-level", "loud")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "--log-level: invalid choice: 'loud'" in p.stderr


# ----------------------------------------------------------------------------- renamed options

def test_prepares_old_workers_option_still_works_and_says_jobs_replaced_it(tmp_path):
    root = _dataset(tmp_path / "data", ("yes", "no"))
    p = _run("prepare", root, tmp_path / "out", "--workers", "1")
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip().splitlines() == ["--workers is now --jobs (the old name still works)"]
    assert p.stdout.startswith("prepared 4 clips")
    bad = _run("prepare", root, tmp_path / "out", "--workers", "0")  # the value is checked as --jobs is
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == "error: --jobs must be at least 1, got 0"


def test_demo_datas_old_clips_per_speaker_is_takes(tmp_path, capsys):
    from audionet_ray import demo_data

    demo_data.main([str(tmp_path / "old"), "--speakers", "3", "--clips-per-speaker", "1"])
    out = capsys.readouterr()
    assert out.err.strip() == "--clips-per-speaker is now --takes (the old name still works)"
    assert "30 clips, 3 speakers" in out.out  # 10 words x 3 speakers x 1 take
    demo_data.main([str(tmp_path / "new"), "--speakers", "3", "--takes", "1"])
    assert capsys.readouterr().err == ""
    old = sorted(p.relative_to(tmp_path / "old") for p in (tmp_path / "old").rglob("*.wav"))
    assert old == sorted(p.relative_to(tmp_path / "new") for p in (tmp_path / "new").rglob("*.wav"))


# ----------------------------------------------------------------------------- --help shows defaults

def _parser_of(command: str, monkeypatch, capsys) -> tuple[argparse.ArgumentParser, str]:
    """The parser a command builds, caught as it parses `--help` (it really parses), and its help."""
    seen: list[argparse.ArgumentParser] = []
    parse = argparse.ArgumentParser.parse_args

    def remember(self, *args, **kwargs):
        seen.append(self)
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", remember)
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0 and seen
    return seen[-1], capsys.readouterr().out


def _entries(help_text: str) -> dict[str, str]:
    """--help's options, each option string -> its whole entry (help lines joined)."""
    entries, current = {}, None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            current = line
            entries[line.split()[0].rstrip(",")] = current
        elif current is not None and line.startswith("   "):
            entries[current.split()[0].rstrip(",")] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_commands_help_shows_its_defaults_and_log_level(command, monkeypatch, capsys):
    parser, text = _parser_of(command, monkeypatch, capsys)
    entries = _entries(text)
    assert "--log-level" in entries and "(default: info)" in entries["--log-level"]
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        shown = entries[action.option_strings[0]]
        if not any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            assert "default" in shown, (command, shown)  # its default, or what decides it
        assert shown.count("(default:") <= 1, shown


def test_the_help_formatter_adds_a_default_once_and_only_where_there_is_one():
    p = argparse.ArgumentParser(prog="x", formatter_class=log.HelpFormatter)
    p.add_argument("--n", type=int, default=3, help="how many")
    p.add_argument("--seed", type=int, default=0, help="a seed")
    p.add_argument("--said", default="a", help="already said (default: a)")
    p.add_argument("--flag", action="store_true", help="a switch")
    p.add_argument("--none", help="decided later")
    entries = _entries(p.format_help())
    assert entries["--n"].endswith("how many (default: 3)") and entries["--seed"].endswith("(default: 0)")
    assert entries["--said"].count("default") == 1
    assert "default" not in entries["--flag"] and "default" not in entries["--none"]


# ----------------------------------------------------------------------------- one meaning per option name

def test_processes_are_jobs_in_every_data_command(monkeypatch, capsys):
    for command in ("prepare", "speech"):
        parser, text = _parser_of(command, monkeypatch, capsys)
        assert "--jobs" in _entries(text) and "--workers" not in text, command  # --workers: Ray Train's, in train
    from audionet_ray import far_field

    with pytest.raises(SystemExit):
        far_field.main(["--help"])
    text = capsys.readouterr().out
    assert "--jobs" in _entries(text) and "--workers" not in text


def test_predict_and_evaluate_choose_the_same_device_by_default(monkeypatch, capsys):
    from audionet_ray import evaluate, predict

    assert predict._parser().get_default("device") == evaluate._parser().get_default("device") == "auto"


def test_train_and_tune_put_runs_in_the_same_storage_by_default(tmp_path, monkeypatch, capsys):
    from audionet_ray import train, tune

    assert train._parser().get_default("storage") == tune._parser().get_default("storage") == "runs"
    assert train.RunSettings().storage == "runs"  # build_trainer's default, for a caller of the Python API
    (tmp_path / "runs" / "search-1").mkdir(parents=True)  # `runs` looks where both put them: ./runs
    monkeypatch.chdir(tmp_path)
    assert cli.main(["runs"]) == 0 and "in runs" in capsys.readouterr().out
    entries = _entries(train._parser().format_help())
    assert "(default: ./runs, as tune's" in entries["--storage"] and "--storage ~/audionet_runs" in entries["--storage"]


# ----------------------------------------------------------------------------- the module

def test_setup_is_idempotent_and_refuses_an_unknown_level():
    for level in ("debug", "info", "info", "warning"):
        log.setup(level)
    handlers = [h for h in logging.getLogger(log.ROOT).handlers if isinstance(h, log._Console)]
    assert len(handlers) == 1 and logging.getLogger(log.ROOT).level == logging.WARNING
    assert os.environ[log.ENV] == "warning"  # what Ray's workers and decoding pools start at
    with pytest.raises(ConfigError, match="--log-level loud: one of debug, info, warning, error"):
        log.setup("loud")
    assert log.get("tune").name == "audionet_ray.tune" and log.get("audionet_ray.pipeline.data").name == "audionet_ray.pipeline.data"


def test_a_child_process_starts_at_the_level_it_inherits():
    code = ("from audionet_ray import log; l = log.get('x'); l.info('info line'); l.warning('warning line'); "
            "l.warning('to stderr', extra=log.STDERR)")
    env = {**os.environ, log.ENV: "warning"}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "warning line\n" and p.stderr == "to stderr\n", (p.stdout, p.stderr)


LEVELS = st.sampled_from(log.LEVELS)


@settings(max_examples=60, deadline=None)
@given(message=st.text(st.characters(blacklist_categories=("Cs",)), max_size=80), level=LEVELS, said_at=LEVELS)
def test_a_message_is_written_as_print_wrote_it_exactly_when_its_level_is_on(message, level, said_at):
    log.setup(level)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        getattr(log.get("prop"), said_at)(message)
    shown = log.LEVELS.index(said_at) >= log.LEVELS.index(level)
    assert out.getvalue() == (message + "\n" if shown else "") and err.getvalue() == ""


def test_quiet_follows_the_level():
    log.setup("info")
    assert not log.quiet()
    log.setup("warning")
    assert log.quiet()


def test_demo_data_writes_the_same_bytes_at_any_level(tmp_path):
    """--log-level is how a command talks, not what it makes."""
    a = _run("demo_data", tmp_path / "a", "--speakers", "3", "--takes", "1")
    b = _run("demo_data", tmp_path / "b", "--speakers", "3", "--takes", "1", "--log-level", "error")
    assert a.returncode == b.returncode == 0 and a.stdout.startswith("demo_data: 10 classes") and b.stdout == ""
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_debug_adds_tunes_options_with_the_password_hidden(capsys):
    from audionet_ray import tune

    tune.parse_args(["--optuna-storage", "postgresql://me:secret@db/optuna"])
    assert capsys.readouterr().out == ""
    tune.parse_args(["--optuna-storage", "postgresql://me:secret@db/optuna", "--log-level", "debug"])
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("tune's options: ") and "me:***@db" in line and "secret" not in line
