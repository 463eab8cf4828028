"""The settings of one training run, shared by `train` (one run) and `tune` (a search).

Plain dataclasses: `TrainConfig` is what the per-worker loop needs (and what a search
samples from: lr, batch_size, train_ratio, ...); `RunSettings` is where and on what it runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .augment import AugmentConfig


class ConfigError(ValueError):
    """A bad setting; the message names it, in one line."""


@dataclass
class TrainConfig:
    data: str = ""  # a prepared dataset folder (python -m audionet_ray.data prepare ...)
    epochs: int = 10
    batch_size: int = 128  # global: split across workers
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    train_ratio: float = 0.9
    width: int = 256
    dense: int = 512
    dropout: float = 0.2
    seed: int = 0
    checkpoint_every: int = 2  # epochs; and always at the end
    bf16: bool = True  # autocast on GPU (ignored on CPU)
    deterministic: bool = False  # keep Ray Data's block order, for exact resume and tests
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a flat or nested dict; unknown keys are an error naming them."""
        d = dict(d)
        aug = d.pop("augment", {}) or {}
        aug = aug.to_dict() if isinstance(aug, AugmentConfig) else dict(aug)
        aug_names = {f.name for f in fields(AugmentConfig)}
        for k in list(d):  # a search may sample augmentation settings as flat keys
            if k in aug_names:
                aug[k] = d.pop(k)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names) + sorted(set(aug) - aug_names)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(names | aug_names))}")
        cfg = cls(**d, augment=AugmentConfig(**aug))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0.0 < self.train_ratio < 1.0, "train_ratio must be between 0 and 1"),
            (self.width >= 1 and self.dense >= 1, "width and dense must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


@dataclass
class RunSettings:
    storage: str = "~/audionet_runs"  # local folder, NFS path or s3:// URI (shared on clusters)
    name: str = "audionet"
    workers: int = 1  # Ray Train workers (DDP), one per GPU when there are GPUs
    gpus_per_worker: float = 0.0  # fractions let several trials share one GPU
    cpus_per_worker: float = 1.0
    keep_checkpoints: int = 2  # best k by val_accuracy (the latest is always kept too)
    max_failures: int = 2  # worker crashes a run survives, restarting from its last checkpoint
