"""What `pip install .` gives a user: the wheel carries the built-in search spaces, and the
dependency floors admit no release with a known fix still missing.

The wheel is built from this checkout and installed with `--target` into a folder outside it;
a fresh interpreter then imports the package from that folder only (cwd elsewhere, the
checkout not on its path), as a user who installed the wheel would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent

# The first release with the fix, and the last one without it (which the floor must refuse).
FIXED = {
    "torch": ("2.6.0", "2.5.1", "CVE-2025-32434: torch.load(weights_only=True) could still run code"),
    "pyarrow": ("14.0.1", "14.0.0", "CVE-2023-47248: reading IPC/Parquet could run code"),
    "onnx": ("1.17.0", "1.16.1", "CVE-2024-5187, CVE-2024-27318: paths out of a model's folder"),
    "tqdm": ("4.66.3", "4.66.2", "CVE-2024-34062: eval of CLI arguments"),
}

LOAD = """
import json, sys
import audionet_ray, audionet_ray.tuning.search_space as s
specs = {name: s.load_spec(name) for name in ("default", "smoke")}
print(json.dumps({"package": audionet_ray.__file__, "sources": {n: p.source for n, p in specs.items()},
                  "samples": specs["smoke"].tune.num_samples}))
"""


def _requirements(name: str) -> list[Requirement]:
    """Each mention of `name` in pyproject.toml, the optional extras' included."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return [r for r in map(Requirement, reqs) if r.name == name]


def _source_copy(dest: Path) -> Path:
    """What the build reads, copied: building in the checkout would write build/ and egg-info
    into a tree that others use at the same time."""
    shutil.copytree(ROOT / "audionet_ray", dest / "audionet_ray", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


@pytest.mark.parametrize("name", sorted(FIXED))
def test_floor_refuses_the_last_release_without_the_fix(name):
    fixed, vulnerable, why = FIXED[name]
    specs = [r.specifier for r in _requirements(name)]
    assert specs, f"{name} is no longer a dependency: drop it from FIXED"
    for spec in specs:
        assert not spec.contains(vulnerable, prereleases=True), f"{name}{spec} admits {vulnerable} ({why})"
        assert spec.contains(fixed) and spec.contains("999.0"), f"{name}{spec}: a floor, never a pin"


@pytest.mark.slow
def test_installed_wheel_loads_its_built_in_search_spaces(tmp_path):
    """Fails when the YAML files are left out of the wheel: `built in:` empty, no such file."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(_source_copy(tmp_path / "src"))],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("audionet_ray-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -I: no PYTHONPATH from the caller and no cwd on the path; the target folder goes first
    code = f"import sys; sys.path.insert(0, {str(target)!r})\n{LOAD}"
    p = subprocess.run([sys.executable, "-I", "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.splitlines()[-1])
    assert Path(out["package"]).is_relative_to(target), out  # the installed copy, not this checkout
    for name, source in out["sources"].items():
        assert Path(source).is_relative_to(target / "audionet_ray") and Path(source).name == f"{name}.yaml", out
    assert out["samples"] >= 1
