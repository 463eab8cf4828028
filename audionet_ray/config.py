"""The settings of one training run, shared by `train` (one run) and `tune` (a search).

Plain dataclasses: `TrainConfig` is what the per-worker loop needs (and what a search
samples from: lr, batch_size, train_ratio, ...); `RunSettings` is where and on what it runs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .augment import AugmentConfig
from .errors import ConfigError  # noqa: F401 - where the config's users have always found it
from .model import CLIP_SAMPLES, ModelConfig

OPTIMIZERS = ("nadam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")


_TYPES = {"int": (numbers.Integral,), "float": (numbers.Real,), "str": (str,), "bool": (bool,),
          "float | str": (numbers.Real, str), "str | float | None": (str, numbers.Real, type(None))}


def shown(key: Any) -> str:
    """A key or value from the user's YAML or JSON as it can go into a one-line message."""
    return key if isinstance(key, str) and key.isprintable() and key.strip() == key and key else repr(key)


def check_types(obj: Any, prefix: str = "") -> None:
    """Each setting of a config dataclass has its declared type: YAML and JSON give any type
    anywhere, and a "4" or 2.5 epochs or a true learning rate would fail a trial hours later.
    Numbers must be finite, whole where an int is due, and fit in 64 bits (seeds go to torch)."""
    for f in fields(obj):
        v, allowed = getattr(obj, f.name), _TYPES.get(f.type)
        if allowed is None:  # a nested dataclass: checked on its own
            continue
        bad = not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed)
        if not bad and isinstance(v, numbers.Real) and not isinstance(v, bool):
            bad = not math.isfinite(v) or abs(v) >= 2**63
        if bad:
            raise ConfigError(f"{prefix}{f.name}: expected {f.type.replace(' | ', ' or ')}, got {repr(v)[:60]}")


def parse_keywords(text: str | list | None) -> list[str]:
    """'yes, no,,up' (or a YAML list) -> ['yes', 'no', 'up'] (order kept, repeats dropped)."""
    if isinstance(text, (list, tuple)):
        text = ",".join(map(str, text))
    return list(dict.fromkeys(w.strip() for w in (text or "").split(",") if w.strip()))


def keywords_option(text: str) -> list[str]:
    """--keywords as a command gives it: at least one keyword, or one line saying so."""
    keywords = parse_keywords(text)
    if not keywords:
        raise ConfigError("--keywords: no keyword given (a comma-separated list such as yes,no,up)")
    return keywords


def setting(train_config: dict, name: str) -> Any:
    """A setting by its flat name (as a search space names it) from a saved TrainConfig dict, where
    the augmentation settings sit under "augment"."""
    return train_config[name] if name in train_config else (train_config.get("augment") or {}).get(name)


# The metrics a search or an export may rank by, and which way is better.
METRIC_MODES = {"val_accuracy": "max", "val_loss": "min", "frr_at_target": "min"}


def metric_mode(metric: str) -> str:
    """max or min for a metric: the table above, else min for losses and max otherwise."""
    return METRIC_MODES.get(metric, "min" if "loss" in metric else "max")


# What a keyword task trains with unless its settings say otherwise (tune --keywords, train --keywords):
# half the clips cut as sliding windows, levels 20 dB down to 7 dB up, and quiet windows kept quiet
# (100 int16 units is -50 dBFS: the recording noise floor of the generated speech lies below it).
KEYWORD_DEFAULTS = {"std_floor": 100.0, "augment": {"window_prob": 0.5, "gain_db": 20.0}}


def with_keyword_defaults(settings: dict) -> dict:
    """`settings` (a space's `fixed`, or flat CLI settings) with KEYWORD_DEFAULTS where it sets nothing."""
    out = dict(settings)
    for k, v in KEYWORD_DEFAULTS.items():
        if k == "augment":
            aug = dict(out.get("augment") or {})
            for ak, av in v.items():
                if ak not in out:  # a flat key set by the user wins as well
                    aug.setdefault(ak, av)
            out["augment"] = aug
        else:
            out.setdefault(k, v)
    return out


@dataclass
class TrainConfig:
    data: str = ""  # a prepared dataset folder (python -m audionet_ray.prepare ...)
    epochs: int = 10
    batch_size: int = 128  # global: split across workers
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    train_ratio: float = 0.9
    optimizer: str = "nadam"  # nadam (the reference) | adamw (decoupled weight decay)
    schedule: str = "constant"  # constant (the reference) | cosine (warm-up, then to 0) | onecycle, per batch
    warmup_epochs: float = 1.0  # cosine only: linear warm-up from ~0 to lr over this many epochs
    label_smoothing: float = 0.0  # training loss only; val_loss stays plain cross-entropy
    # Weight the training loss by inverse class frequency (the train+val clips of the manifest):
    # a wake word's few hundred clips then count as much as its thousands of negatives.
    class_balance: bool = False
    # the model (see model.ModelConfig): the defaults are the reference AudioNet
    width: int = 256
    dense: int = 512
    dropout: float = 0.2
    norm: str = "none"
    norm_groups: int = 8
    pool: str = "flatten"
    dense_layers: int = 4
    frontend: str = "conv"
    filters: int = 64
    spec_augment: bool = False
    # The model's input window in samples: the prepared data's (prepare --window), which train reads
    # from its manifest. 0 (the default): whatever the data has; another value must equal it.
    clip_samples: int = 0
    # A keyword task (a detector, not a clip classifier): the classes are these words plus _unknown_
    # (every other word) and _silence_; prepared as such (prepare --keywords), judged on streams.
    keywords: str = ""  # comma-separated; "" trains a classifier of every word of the data
    std_floor: float = 0.0  # int16 units: per-clip standardisation divides by at least this (augment.standardise)
    target_fa_per_hour: float = 1.0  # keyword tasks: frr_at_target is the false-reject rate at this rate ...
    detector_minutes: float = 4.0  # ... on this many minutes of validation-speaker streams, each checkpoint (0: off)
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
        if isinstance(d.get("keywords"), (list, tuple)):  # YAML may list them
            d["keywords"] = ",".join(parse_keywords(d["keywords"]))
        aug = d.pop("augment", {}) or {}
        aug = aug.to_dict() if isinstance(aug, AugmentConfig) else dict(aug)
        aug_names = {f.name for f in fields(AugmentConfig)}
        for k in list(d):  # a search may sample augmentation settings as flat keys
            if k in aug_names:
                aug[k] = d.pop(k)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names, key=str) + sorted(set(aug) - aug_names, key=str)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(map(shown, unknown))}; known: {', '.join(sorted(names | aug_names))}")
        cfg = cls(**d, augment=AugmentConfig(**aug))
        check_types(cfg)
        check_types(cfg.augment)
        cfg.validate()
        return cfg

    @property
    def keyword_list(self) -> list[str]:
        return parse_keywords(self.keywords)

    def model_config(self, n_classes: int, clip_samples: int | None = None) -> ModelConfig:
        """The model these settings train, for a dataset of `n_classes` words and clips of
        `clip_samples` (the manifest's; default: the setting's, else one second)."""
        names = [f.name for f in fields(ModelConfig) if f.name not in ("n_classes", "clip_samples")]
        return ModelConfig(n_classes, **{k: getattr(self, k) for k in names},
                           clip_samples=clip_samples or self.clip_samples or CLIP_SAMPLES)

    def data_clip_samples(self, manifest: dict, where) -> int:
        """The window the model trains on: the prepared data's; a clip_samples setting that differs
        from it is a mistake (the model would be built for clips the data does not have)."""
        have = int(manifest.get("clip_samples", CLIP_SAMPLES))
        if self.clip_samples and self.clip_samples != have:
            raise ConfigError(f"clip_samples: {self.clip_samples} given, but {where} holds clips of {have} samples "
                              f"({have / 16_000:g} s): leave clip_samples out (it comes from the data) or prepare "
                              f"the data with --window {self.clip_samples / 16_000:g}")
        return have

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0.0 < self.train_ratio < 1.0, "train_ratio must be between 0 and 1"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.schedule != "cosine" or 0 <= self.warmup_epochs < self.epochs,
             f"warmup_epochs must be >= 0 and less than epochs ({self.epochs}), got {self.warmup_epochs}"),
            (0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.std_floor >= 0, f"std_floor must be >= 0 (int16 units), got {self.std_floor}"),
            (self.target_fa_per_hour > 0, f"target_fa_per_hour must be > 0, got {self.target_fa_per_hour}"),
            (self.detector_minutes >= 0, f"detector_minutes must be >= 0, got {self.detector_minutes}"),
            (self.clip_samples >= 0, f"clip_samples must be >= 0 (0: the data's window), got {self.clip_samples}"),
            *((False, m) for m in self.augment.validate()),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        try:
            self.model_config(1).validate()
        except ValueError as e:  # width, dense, ..., the model's settings
            raise ConfigError(str(e)) from None


@dataclass
class RunSettings:
    storage: str = "~/audionet_runs"  # local folder, NFS path or s3:// URI (shared on clusters)
    name: str = "audionet"
    workers: int = 1  # Ray Train workers (DDP), one per GPU when there are GPUs
    gpus_per_worker: float = 0.0  # fractions let several trials share one GPU
    cpus_per_worker: float = 1.0
    keep_checkpoints: int = 2  # best k by `metric` (the latest is always kept too)
    metric: str = "val_accuracy"  # frr_at_target (mode min) for a keyword search
    mode: str = "max"
    max_failures: int = 2  # worker crashes a run survives, restarting from its last checkpoint
