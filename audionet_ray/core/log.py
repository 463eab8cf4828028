"""The package's messages and the options every command shares: `--log-level`, defaults in
`--help`, and old option names that keep working.

Every module logs under "audionet_ray" (`log = get(__name__)`), and one handler writes each
message as it is ("%(message)s", no prefixes) to stdout, as the print() calls it replaces did, so
what users and scripts read at the default level (info) is unchanged. The handler is installed on
first use, not only by a command's main(): a library call (`audionet_ray.search`, `ensure_prepared`
in a Ray worker) says what it always said. `extra=STDERR` sends a line to stderr, for the
warnings that went there. `setup(level)` sets the level and writes it into AUDIONET_LOG_LEVEL,
which the processes a command starts (Ray's workers, decoding pools) inherit and start at.

It imports only the standard library: a command's --help loads neither torch nor Ray.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

ROOT = "audionet_ray"
ENV = "AUDIONET_LOG_LEVEL"
LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
STDERR = {"stderr": True}  # logger.warning(msg, extra=STDERR): this line goes to stderr


class _Console(logging.Handler):
    """Plain lines to the current sys.stdout (or sys.stderr), looked up on every line: a test's
    capsys or api's stderr tee replaces them after the handler is made."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if getattr(record, "stderr", False) else sys.stdout
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own policy for a stream that fails
            self.handleError(record)


def _level(name: str | None) -> int:
    return getattr(logging, (name or DEFAULT_LEVEL).upper(), logging.INFO)


def _install() -> logging.Logger:
    """The package's logger with its one console handler (added once per process)."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _Console) for h in root.handlers):
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(_level(os.environ.get(ENV)) if os.environ.get(ENV, "").lower() in LEVELS else logging.INFO)
        root.propagate = False  # a root handler of the user's would write every line twice
    return root


def get(name: str) -> logging.Logger:
    """The logger of a module (`get(__name__)`), under "audionet_ray"."""
    _install()
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")


def setup(level: str = DEFAULT_LEVEL) -> logging.Logger:
    """Set the package's level (one of LEVELS) for this process and the ones it starts; idempotent."""
    from .errors import ConfigError

    if level.lower() not in LEVELS:
        raise ConfigError(f"--log-level {level}: one of {', '.join(LEVELS)}")
    root = _install()
    root.setLevel(_level(level))
    os.environ[ENV] = level.lower()
    return root


def quiet() -> bool:
    """Whether info lines are hidden (--log-level warning or error): progress bars follow them."""
    return not _install().isEnabledFor(logging.INFO)


def add_option(parser: argparse.ArgumentParser) -> None:
    """--log-level, the same on every command."""
    parser.add_argument("--log-level", choices=LEVELS, default=DEFAULT_LEVEL, type=str.lower,
                        help="warning: only warnings and errors (no progress lines); debug: more detail")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in --help, unless its help already says it or there is none to show
    (a flag, or None where the help says what decides)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "%(default)" in text
                or "default:" in text or "default " in text):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class _Renamed(argparse.Action):
    """An option's old name: stores into the new one's place and says what replaced it."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        get("cli").warning(f"{option_string} is now {self.new} (the old name still works)", extra=STDERR)
        setattr(namespace, self.dest, values)


def add_renamed(parser: argparse.ArgumentParser, old: str, new: str, **kwargs) -> None:
    """`old` keeps working as `new` (the option added before, whose type `kwargs` repeat), hidden in --help."""
    dest = next(a.dest for a in parser._actions if new in a.option_strings)
    parser.add_argument(old, dest=dest, action=_Renamed, new=new, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **kwargs)
