"""The package's layout is its architecture: each stage folder imports only the stages below it
(the order in audionet_ray/__init__.py's docstring and the README's Architecture section). Read
from every module's imports, lazy ones inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import audionet_ray

PKG = Path(audionet_ray.__file__).parent
# a stage may import its own modules and those of a stage of a lower rank
RANK = {"core": 0, "corpus": 1, "modeling": 1, "pipeline": 2, "detection": 3, "training": 4, "tuning": 5,
        "deploy": 6, "reporting": 7, "": 8}


def _stage(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else ""


def _imported_stages(path: Path) -> set[tuple[str, str]]:
    """(stage, module) of every package module `path` imports."""
    here = path.relative_to(PKG).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(here[: len(here) - (node.level - 1)]) if node.level > 1 else list(here)
            parts = base + (node.module.split(".") if node.module else [])
            names = [parts] if node.module else [parts + [a.name] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("audionet_ray."):
            names = [node.module.split(".")[1:]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1:] for a in node.names if a.name.startswith("audionet_ray.")]
        else:
            continue
        for parts in names:
            if parts and parts[0] in RANK and parts[0]:
                found.add((parts[0], ".".join(parts)))
            elif parts:
                found.add(("", ".".join(parts)))
    return found


def test_every_stage_is_a_folder_with_a_docstring_that_says_what_it_owns():
    for stage in RANK:
        if stage:
            init = PKG / stage / "__init__.py"
            assert init.is_file(), stage
            assert len(ast.get_docstring(ast.parse(init.read_text())) or "") > 80, stage


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_import_runs_back_up(path):
    stage = _stage(path)
    if stage not in RANK:
        pytest.skip("not a stage")
    up = sorted(m for s, m in _imported_stages(path)
                if s != stage and (RANK.get(s, 8) >= RANK[stage]) and m not in ("__version__",))
    assert not up, f"{path.relative_to(PKG)} ({stage}) imports {up}: a stage imports only the stages below it"


def test_the_top_level_holds_only_the_front_door():
    top = sorted(p.stem for p in PKG.glob("*.py"))
    assert top == ["__init__", "_moved", "api", "cli", "tune"], top
