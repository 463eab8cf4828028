"""audionet-ray: hyperparameter search for AudioNet keyword spotting on Ray.

The Python API (audionet_ray.api), loaded on first use so that importing the package stays cheap:

    search(data, space, budget=..., keywords=...) -> SearchResult   what `audionet-ray tune` runs
    result_of(experiment_dir) -> SearchResult                        a search's result, read back

The modules are grouped by stage, each folder importing only those before it in this order (each
folder's docstring says what it owns; tests/test_layout.py holds the rule):

    core -> corpus, modeling -> pipeline -> detection -> training -> tuning -> deploy -> reporting

and the front door at the top: tune (`python -m audionet_ray.tune`), cli (`audionet-ray`), api.
The earlier flat module names (`audionet_ray.predict`, ...) keep working through `_moved`.
"""

__version__ = "0.1.0"

from . import _moved

_moved.install()

_API = ("search", "result_of", "SearchResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_API})
