"""The package stays readable in small pieces: no function over 60 lines (issue 26).

The one exception is the per-worker training loop, which reads as the story of an epoch and may
take up to 80. A nested function or a method counts as a function of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "audionet_ray"
LIMIT = 60
EXCEPTIONS = {("train.py", "train_loop_per_worker"): 80}


def _functions(path: Path) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of every function and method in `path`, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(n.name, n.lineno, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_has_modules_to_measure():
    assert len(_modules()) > 20 and any(p.name == "train.py" for p in _modules())


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_the_limit(path):
    rel = path.relative_to(PACKAGE).as_posix()
    too_long = [f"{rel}:{line} {name} ({n} lines, limit {EXCEPTIONS.get((rel, name), LIMIT)})"
                for name, line, n in _functions(path) if n > EXCEPTIONS.get((rel, name), LIMIT)]
    assert not too_long, "split these into smaller functions: " + "; ".join(too_long)


def test_the_measure_counts_nested_functions_and_methods(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    src = tmp_path / "m.py"
    src.write_text(f"def outer():\n    def inner():\n{body.replace('    ', '        ')}\n\n"
                   f"class C:\n    def method(self):\n{body.replace('    ', '        ')}\n")
    sizes = {name: n for name, _, n in _functions(src)}
    assert sizes["inner"] == LIMIT + 1 and sizes["method"] == LIMIT + 1 and sizes["outer"] > LIMIT
