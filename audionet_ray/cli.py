"""`audionet-ray COMMAND ...`: one front door to every command of the package.

Each command is the module's own `main(argv)`, given the rest of the command line unchanged, so
`audionet-ray tune --num-samples 4` is `python -m audionet_ray.tune --num-samples 4` (both keep
working). `runs` lists the experiments under a storage folder. A command's module is imported
only when it runs: `audionet-ray --help` loads neither Ray nor torch.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from . import __version__
from .core import log

PROG = "audionet-ray"

# command -> (module, one line for --help)
COMMANDS = {
    "prepare": ("corpus.prepare", "decode a Speech Commands-style folder into Parquet shards, once"),
    "speech": ("corpus.speech_data", "generate a Speech Commands-style dataset spoken by espeak-ng"),
    "train": ("training.train", "train AudioNet once with Ray Train (no search)"),
    "tune": ("tune", "the search: Ray Tune + Optuna TPE + ASHA over Ray Train runs"),
    "export": ("deploy.export", "the best checkpoint of a search (or a run) as a self-contained bundle"),
    "predict": ("detection.predict", "keywords in audio files, with a bundle"),
    "evaluate": ("deploy.evaluate", "a bundle on the held-out test split"),
    "report": ("reporting.report", "a search at a glance: report.html with its plots"),
    "runs": (None, "the experiments under a storage folder: state, trials, best score, bundle"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [OPTIONS ...]", "",
             "Hyperparameter search for AudioNet keyword spotting on Ray. Commands:", ""]
    lines += [f"  {name.ljust(width)}  {line}" for name, (_, line) in COMMANDS.items()]
    lines += ["", f"`{PROG} COMMAND --help` shows a command's options; `{PROG} tune ...` is "
              "`python -m audionet_ray.tune ...`.", "",
              "options:", "  -h, --help  this list", "  --version   the package's version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        print(f"{PROG}: unknown command '{command}': {hint}one of {', '.join(COMMANDS)} ({PROG} --help)",
              file=sys.stderr)
        return 2
    module = COMMANDS[command][0]
    if module is None:
        return runs(rest)
    rc = importlib.import_module(f"audionet_ray.{module}").main(rest)
    return 0 if rc is None else int(rc)


# ----------------------------------------------------------------------------- runs

def _default_storage() -> str:
    """Where `tune` puts experiments (and `train` its runs) when --storage does not say: the one default."""
    from .training.config import DEFAULT_STORAGE

    return DEFAULT_STORAGE


def _score(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def runs(argv: list[str] | None = None) -> int:
    """`audionet-ray runs [--storage DIR]`: one line per experiment."""
    ap = argparse.ArgumentParser(prog=f"{PROG} runs", description=COMMANDS["runs"][1],
                                 formatter_class=log.HelpFormatter)
    ap.add_argument("--storage", help="the storage folder a search was given (a local folder or s3://...; "
                                      "default: tune's, ./runs)")
    log.add_option(ap)
    args = ap.parse_args(argv)
    log.setup(args.log_level)
    from .core.errors import ConfigError
    from .tuning.experiment import experiments, summarize

    storage = args.storage or _default_storage()
    try:
        found = experiments(storage)
    except (OSError, ConfigError) as e:
        print(f"error: {storage}: cannot be read ({e})", file=sys.stderr)
        return 2
    if not found:  # the table and these lines are the command's output: print, at every --log-level
        print(f"no experiments in {storage} (start one with `{PROG} tune --storage {storage}`)")
        return 0
    head = ["name", "state", "trials", "metric", "best", "best trial", "bundle"]
    rows, problems = [], []
    for exp in found:
        s = summarize(exp)
        metric = f"{s.metric} ({s.mode})" if s.metric else "-"
        rows.append([s.name, s.state, str(s.trials), metric, _score(s.best), s.best_trial or "-",
                     "yes" if s.bundle else "no"])
        if s.problem:
            problems.append(f"{s.name}: {s.problem}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print(f"{len(rows)} experiment(s) in {storage}:")
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    for p in problems:
        print(f"note: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
