"""The package's earlier flat module names (`audionet_ray.tune`, `audionet_ray.predict`, ...) kept
working after the modules moved into their stage folders: `python -m audionet_ray.tune` as the
brief names it, the README's `python -m` commands, and experiments whose Tune state pickled a
function or class under its old module name. An old name imports as the module itself (one copy,
so a patch of one is a patch of both); `-m` runs the module as __main__."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# the old flat name -> its stage folder (the layout the package __init__ describes)
MOVED: dict[str, str] = {
    'audio': 'corpus',
    'augment': 'pipeline',
    'bundle': 'detection',
    'checkpoint': 'training',
    'cluster': 'core',
    'config': 'training',
    'confusables': 'corpus',
    'costs': 'modeling',
    'data': 'pipeline',
    'dataset': 'pipeline',
    'demo_data': 'corpus',
    'discover': 'corpus',
    'distributions': 'tuning',
    'errors': 'core',
    'evaluate': 'deploy',
    'experiment': 'tuning',
    'export': 'deploy',
    'far_field': 'corpus',
    'keyword_source': 'corpus',
    'log': 'core',
    'model': 'modeling',
    'monitor': 'training',
    'negatives': 'detection',
    'plan': 'tuning',
    'plots': 'core',
    'predict': 'detection',
    'prepare': 'corpus',
    'ranking': 'core',
    'ray_private': 'core',
    'ray_setup': 'core',
    'registry': 'modeling',
    'report': 'reporting',
    'rooms': 'corpus',
    'schema': 'training',
    'search_space': 'tuning',
    'speech_data': 'corpus',
    'storage': 'core',
    'streaming': 'detection',
    'study': 'tuning',
    'train': 'training',
    'trial_process': 'training',
    'tuner': 'tuning',
    'wakeword': 'corpus',
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        pkg, _, name = fullname.partition(".")
        if pkg == "audionet_ray" and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a placeholder, replaced by the real module in exec_module

    def exec_module(self, module) -> None:
        real = importlib.import_module(_target(module.__name__))
        sys.modules[module.__name__] = real  # what the import statement hands back

    def get_code(self, fullname):
        """For `python -m audionet_ray.OLD`: run the moved module as __main__."""
        return compile(f"import runpy\nrunpy.run_module({_target(fullname)!r}, run_name='__main__', alter_sys=True)\n",
                       f"<{fullname}>", "exec")


def _target(fullname: str) -> str:
    name = fullname.rpartition(".")[2]
    return f"audionet_ray.{MOVED[name]}.{name}"


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # before an editable install's finder, which maps names to files
