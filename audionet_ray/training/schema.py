"""The settings' schema, read from the config dataclasses themselves.

A setting is declared once, as a dataclass field (model.ModelConfig, augment.AugmentConfig,
config.TrainConfig); everything else is derived from that field here: the check of a YAML or
JSON dict (`check`: every mistake at once, with the nearest name for a misspelt key), the flat
names a search space and a saved config use (`nest` folds `width` into `model`), and the
command-line options (`add_options`, `values`). The help of an option is the field's
`metadata["help"]`, else the comment beside (or just above) the field in its source.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import inspect
import math
import numbers
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

from ..core.errors import ConfigError


def shown(key: Any) -> str:
    """A key or value from the user's YAML or JSON as it can go into a one-line message."""
    return key if isinstance(key, str) and key.isprintable() and key.strip() == key and key else repr(key)


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The real types of `cls`'s fields (its annotations are strings under `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def nested(cls: type) -> dict[str, type]:
    """The fields of `cls` that are config dataclasses themselves (TrainConfig's model and augment)."""
    return {f.name: hints(cls)[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints(cls)[f.name])}


def settings(cls: type) -> list[str]:
    """The names a user sets on `cls`: its own fields, and those of its nested dataclasses by their
    flat names; not those the data fills in (metadata `from_data`) nor the nested fields themselves."""
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("from_data"):
            continue
        sub = nested(cls).get(f.name)
        out += settings(sub) if sub else [f.name]
    return out


def flat_hints(cls: type) -> dict[str, Any]:
    """Every setting's type by its flat name."""
    return {name: hints(owner)[name] for owner, name in _leaves(cls)}


# ----------------------------------------------------------------------------- types

def _args(hint: Any) -> tuple:
    """A union's members (int | None -> (int, NoneType)); any other type alone."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def type_name(hint: Any) -> str:
    """int, float or str, list, ...: how a message names a type."""
    return " or ".join("None" if a is type(None) else getattr(a, "__name__", str(a)) for a in _args(hint))


def fits(value: Any, hint: Any) -> bool:
    """Whether a YAML/JSON value is of the declared type. A bool is no number (YAML reads `yes` as
    true); numbers must be finite and fit in 64 bits (seeds go to torch); an int is whole."""
    members = _args(hint)
    if len(members) > 1:
        return any(fits(value, a) for a in members)
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool or isinstance(value, bool):
        return hint is bool and isinstance(value, bool)
    if hint in (int, float):
        ok = isinstance(value, numbers.Integral if hint is int else numbers.Real)
        return ok and math.isfinite(value) and abs(value) < 2**63
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    if origin in (list, tuple):
        inner = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and (not inner or all(fits(v, inner[0]) for v in value))
    return isinstance(value, origin)


# ----------------------------------------------------------------------------- checks

def unknown_name(key: Any, known: list[str], text: str, label: str = "known") -> str:
    """`text` about a key that names nothing, and the nearest known name (a misspelling), else the
    known names under `label`."""
    near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.7)
    return text + (f" (did you mean {near[0]}?)" if near else f"; {label}: {', '.join(sorted(known))}")


def _unknown(key: Any, known: list[str], label: str) -> str:
    return unknown_name(key, known, label.format(key=shown(key)))


def mistakes(cls: type, d: dict, section: str = "", unknown: str = "unknown setting(s): {key}",
             known: list[str] | None = None) -> list[str]:
    """Every mistake of `d` as settings of dataclass `cls`, one line each: an unknown key with the
    nearest known name, a value not of its field's type. Nested settings may be given flat (`width`)
    or nested (`augment: {...}`). `section` names where `d` sits in a file (fixed, tune); `known`
    names keys the caller takes itself."""
    own = {f.name for f in dataclasses.fields(cls)}
    flat = {k: sub for name, sub in nested(cls).items() for k in settings(sub) if k not in own}
    out = []
    for key, value in d.items():
        owner = cls if key in own else flat.get(key)
        where = f"{section}.{key}" if section else str(key)
        if owner is None:
            if key not in (known or []):
                names = [*settings(cls), *(known or [])]
                out.append((f"{section}: " if section else "") + _unknown(key, names, unknown))
            continue
        hint = hints(owner)[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            out += mistakes(hint, value, where, unknown)
        elif not fits(value, hint):
            out.append(f"{where}: expected {type_name(hint)}, got {repr(value)[:60]}")
    return out


def error(found: list[str], where: str = "") -> ConfigError:
    """One ConfigError for all of `found`: a file is fixed in one go, not one rerun per mistake."""
    if len(found) == 1:
        return ConfigError(f"{where}: {found[0]}" if where else found[0])
    return ConfigError(f"{len(found)} mistakes{f' in {where}' if where else ''}: {'; '.join(found)}")


def check(cls: type, d: dict, where: str = "", **kw: Any) -> None:
    """Raise one ConfigError listing every mistake of `d` (see `mistakes`), if it has any."""
    found = mistakes(cls, d, **kw)
    if found:
        raise error(found, where)


# ----------------------------------------------------------------------------- flat keys and building

def nest(cls: type, d: dict) -> dict:
    """`d` with the flat keys of nested settings moved under their field (a search space samples
    `width`, which lives in `model`), and a nested dataclass given as an object made a dict. A
    flat key wins over the same key in the nested dict, as a sampled value over a fixed one."""
    out = dict(d)
    for name, sub in nested(cls).items():
        part = out.get(name)
        part = dataclasses.asdict(part) if isinstance(part, sub) else {} if part is None else part
        if not isinstance(part, dict):
            continue  # not a mapping: `mistakes` names it
        part = dict(part)
        for key in settings(sub):
            if key in out and key not in hints(cls):
                part[key] = out.pop(key)
        out[name] = part
    return out


def build(cls: type, d: dict, base: Any = None) -> Any:
    """An instance of `cls` from a checked, nested dict: nested fields start from their defaults
    (or `base`'s), so a dict names only what it changes."""
    kw = {}
    for name, value in d.items():
        sub = nested(cls).get(name)
        if sub is not None and isinstance(value, dict):
            value = build(sub, value, getattr(base, name) if base is not None else _default(cls, name))
        kw[name] = value
    return dataclasses.replace(base, **kw) if base is not None else cls(**kw)


def _default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default if f.default is not dataclasses.MISSING else hints(cls)[name]()


def flat_defaults(cls: type) -> dict[str, Any]:
    """Every setting's default by its flat name."""
    d = dataclasses.asdict(build(cls, {}))
    for name in nested(cls):
        d.update(d.pop(name))
    return {k: d[k] for k in settings(cls)}


# ----------------------------------------------------------------------------- help text

@functools.cache
def comments(cls: type) -> dict[str, str]:
    """Each field's comment in `cls`'s source: the one beside it, else the lines just above it."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):  # no source (a frozen build): options go without help
        return {}
    out, above = {}, []
    for line in lines:
        text = line.strip()
        m = re.match(r"^(\w+)\s*:[^#]*?(?:#\s*(.*))?$", text)
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        if m and not text.startswith(("def ", "class ", "@", "return")):
            out[m[1]] = m[2] or " ".join(above)
        above = []
    return out


def help_of(cls: type, name: str) -> str:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.metadata.get("help") or comments(cls).get(name, "")


# ----------------------------------------------------------------------------- command-line options

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_bool(text: str) -> bool:
    """true/false (yes/no, on/off, 1/0) as an option's value."""
    if str(text).lower() in TRUE + FALSE:
        return str(text).lower() in TRUE
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Given(argparse.Action):
    """Stores the value and notes that the command line gave it (defaults such as a keyword
    task's must not override what the user typed, even where it equals the plain default)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.__dict__.setdefault("_given", set()).add(self.dest)


def _leaves(cls: type) -> Iterator[tuple[type, str]]:
    """(the dataclass that declares it, name) for every setting of `cls`, nested ones included."""
    for f in dataclasses.fields(cls):
        sub = nested(cls).get(f.name)
        if sub is not None:
            yield from _leaves(sub)
        elif not f.metadata.get("from_data"):
            yield cls, f.name


def add_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                aliases: dict[str, str] | None = None) -> None:
    """A `--name` option for every setting of `cls` (`--batch-size` and `--batch_size` alike), typed,
    defaulted and helped by its field; a bool takes true/false, or nothing for true. Grouped by
    the dataclass that declares the setting. `aliases`: older option strings, by setting."""
    defaults, groups = flat_defaults(cls), {}
    for owner, name in _leaves(cls):
        if name in skip:
            continue
        hint = [a for a in _args(hints(owner)[name]) if a is not type(None)][0]
        if hint not in (int, float, str, bool):
            continue  # lists and mappings are YAML's, not a command line's
        group = groups.setdefault(owner, parser.add_argument_group(f"{owner.__name__} settings"))
        flags = dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}", *(aliases or {}).get(name, "").split()])
        text = help_of(owner, name).replace("%", "%%")
        kind = dict(nargs="?", const=True, type=parse_bool, metavar="{true,false}") if hint is bool else dict(type=hint)
        group.add_argument(*flags, dest=name, default=defaults[name], action=_Given,
                           help=f"{text} (default: %(default)s)".lstrip(), **kind)


def values(args: argparse.Namespace, cls: type, given_only: bool = False) -> dict[str, Any]:
    """The settings of `cls` that `args` holds, by flat name (`TrainConfig.from_dict` takes them);
    `given_only`: those the command line gave."""
    given = vars(args).get("_given", set())
    return {name: getattr(args, name) for _, name in _leaves(cls)
            if hasattr(args, name) and (name in given or not given_only)}
