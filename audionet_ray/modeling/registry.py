"""Architectures by name: the one place that turns the name a checkpoint or a bundle records
(`architecture`) into the model class that builds it.

A model class here builds from its settings (`from_config(ModelConfig | dict)`) and keeps them
as `.config` (n_classes, clip_samples: what export, the bundle and the costs read). Adding an
architecture touches two files: its class (model.py, or a module of its own) and one line in
ARCHITECTURES below. Everything else (train, export, the bundle, the costs) builds through
`build`, so the name written into a checkpoint is the name that loads it again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import ConfigError
from .model import AudioNet

if TYPE_CHECKING:
    import torch

    from .model import ModelConfig

DEFAULT = "AudioNet"  # what a checkpoint or bundle that records no architecture holds: all written before the registry
ARCHITECTURES: dict[str, type] = {"AudioNet": AudioNet}


def names() -> list[str]:
    """The architectures this package can build, by name."""
    return list(ARCHITECTURES)


def model_class(architecture: str | None) -> type:
    """The class registered as `architecture` (None: DEFAULT); ConfigError naming the known ones."""
    name = DEFAULT if architecture is None else architecture
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):  # TypeError: not a name at all (a list in a hand-edited config.json)
        raise ConfigError(f"unknown architecture {architecture!r}: known are {', '.join(names())} "
                          f"(written by a newer audionet-ray?)") from None


def build(architecture: str | None, config: "ModelConfig | dict") -> "torch.nn.Module":
    """A new model of `architecture` with these settings (a checkpoint's or bundle's record)."""
    return model_class(architecture).from_config(config)


def name_of(model: "torch.nn.Module") -> str:
    """The registered name of `model`'s class: what a checkpoint and a bundle record."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ConfigError(f"{type(model).__name__}: not a registered architecture ({', '.join(names())}): "
                      f"add it to registry.ARCHITECTURES")


def recorded(record: dict) -> str:
    """The architecture a checkpoint's meta.json (its "architecture") or a bundle's config.json
    ("model": {"architecture"}) records; DEFAULT for one written before it was recorded."""
    model = record.get("model")
    if isinstance(model, dict) and "architecture" in model:
        return model["architecture"]
    return record.get("architecture", DEFAULT)
