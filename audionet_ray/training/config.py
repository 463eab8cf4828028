"""The settings of one training run, shared by `train` (one run) and `tune` (a search).

Plain dataclasses: `TrainConfig` is what the per-worker loop needs (and what a search
samples from: lr, batch_size, train_ratio, ...); `RunSettings` is where and on what it runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import schema
from ..pipeline.augment import AugmentConfig
from ..corpus.discover import keywords_option, parse_keywords  # noqa: F401 - where the commands have found them
from ..pipeline.dataset import DEFAULT_TRAIN_RATIO
from ..core.errors import ConfigError  # noqa: F401 - where the config's users have always found it
from ..modeling.model import CLIP_SAMPLES, ModelConfig
from .schema import shown  # noqa: F401 - where search_space and others have found it

OPTIMIZERS = ("nadam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")


def setting(train_config: dict, name: str) -> Any:
    """A setting by its flat name (as a search space names it) from a saved TrainConfig dict, where
    the augmentation settings sit under "augment" (and the model's, in a nested dict, under "model")."""
    if name in train_config:
        return train_config[name]
    for part in ("augment", "model"):
        if name in (train_config.get(part) or {}):
            return train_config[part][name]
    return None


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
    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # global: split across workers
    lr: float = 1e-4  # the learning rate (the peak of a cosine or onecycle schedule)
    beta1: float = 0.9  # Adam's first-moment decay
    beta2: float = 0.999  # Adam's second-moment decay
    weight_decay: float = 0.0  # L2 in the gradient (nadam) or decoupled (adamw)
    train_ratio: float = DEFAULT_TRAIN_RATIO  # share of the non-test speakers that train (the rest validate)
    optimizer: str = "nadam"  # nadam (the reference) | adamw (decoupled weight decay)
    schedule: str = "constant"  # constant (the reference) | cosine (warm-up, then to 0) | onecycle, per batch
    warmup_epochs: float = 1.0  # cosine only: linear warm-up from ~0 to lr over this many epochs
    label_smoothing: float = 0.0  # training loss only; val_loss stays plain cross-entropy
    # Weight the training loss by inverse class frequency (the train+val clips of the manifest):
    # a wake word's few hundred clips then count as much as its thousands of negatives.
    class_balance: bool = False
    # The model: its settings are model.ModelConfig's, nested here and named flat (width: 128) in a
    # search space, a trial's config and a saved config. The defaults are the reference AudioNet;
    # n_classes and clip_samples 0 stand for the data's (`model_config` fills them in).
    model: ModelConfig = field(default_factory=lambda: ModelConfig(n_classes=0, clip_samples=0))
    # A keyword task (a detector, not a clip classifier): the classes are these words plus _unknown_
    # (every other word) and _silence_; prepared as such (prepare --keywords), judged on streams.
    keywords: str = ""  # comma-separated; "" trains a classifier of every word of the data
    std_floor: float = 0.0  # int16 units: per-clip standardisation divides by at least this (augment.standardise)
    target_fa_per_hour: float = 1.0  # keyword tasks: frr_at_target is the false-reject rate at this rate ...
    detector_minutes: float = 4.0  # ... on this many minutes of validation-speaker streams, each checkpoint (0: off)
    seed: int = 0  # initial weights, data order and augmentation
    checkpoint_every: int = 2  # epochs; and always at the end
    bf16: bool = True  # autocast on GPU (ignored on CPU)
    deterministic: bool = False  # keep Ray Data's block order, for exact resume and tests
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        """The model's settings flat (as a search space names them, and as every saved config has
        had them), the augmentation's under "augment"; `from_dict` reads it back."""
        d = asdict(self)
        model = d.pop("model")
        model.pop("n_classes")
        return {**d, **model}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> "TrainConfig":
        """Build from a flat or nested dict (a space's values, a trial's, a saved config) and check
        it: every mistake (unknown keys, wrong types, bad values) in one ConfigError."""
        d = dict(d)
        if isinstance(d.get("keywords"), (list, tuple)):  # YAML may list them
            d["keywords"] = ",".join(parse_keywords(d["keywords"]))
        schema.check(cls, d, where)
        cfg = schema.build(cls, schema.nest(cls, d))
        cfg.validate(where)
        return cfg

    @classmethod
    def mistakes_in(cls, d: dict[str, Any], section: str = "", known: list[str] | None = None) -> list[str]:
        """Every mistake of a settings dict without raising (a search space's `fixed`, reported with
        the file's other mistakes): keys and types, then, where those are right, the values."""
        if isinstance(d.get("keywords"), (list, tuple)):
            d = {**d, "keywords": ",".join(parse_keywords(d["keywords"]))}
        found = schema.mistakes(cls, d, section, known=known)
        if found:
            return found
        return [f"{section}: {m}" if section else m for m in schema.build(cls, schema.nest(cls, d)).mistakes()]

    @property
    def keyword_list(self) -> list[str]:
        return parse_keywords(self.keywords)

    def model_config(self, n_classes: int, clip_samples: int | None = None) -> ModelConfig:
        """The model these settings train, for a dataset of `n_classes` words and clips of
        `clip_samples` (the manifest's; default: the setting's, else one second)."""
        return replace(self.model, n_classes=n_classes,
                       clip_samples=clip_samples or self.model.clip_samples or CLIP_SAMPLES)

    def data_clip_samples(self, manifest: dict, where) -> int:
        """The window the model trains on: the prepared data's; a clip_samples setting that differs
        from it is a mistake (the model would be built for clips the data does not have)."""
        have, given = int(manifest.get("clip_samples", CLIP_SAMPLES)), self.model.clip_samples
        if given and given != have:
            raise ConfigError(f"clip_samples: {given} given, but {where} holds clips of {have} samples "
                              f"({have / 16_000:g} s): leave clip_samples out (it comes from the data) or prepare "
                              f"the data with --window {given / 16_000:g}")
        return have

    def validate(self, where: str = "") -> None:
        """Every bad value (a range, a choice, a clash of the model's settings) in one ConfigError."""
        found = self.mistakes()
        if found:
            raise schema.error(found, where)

    def mistakes(self) -> list[str]:
        """The bad values, one line each naming the setting and what it may be."""
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
            (self.model.clip_samples >= 0,
             f"clip_samples must be >= 0 (0: the data's window), got {self.model.clip_samples}"),
            *((False, m) for m in self.augment.validate()),
        ]
        found = [msg for ok, msg in checks if not ok]
        if self.model.clip_samples >= 0:  # width, dense, ..., the model's settings (any n_classes will do)
            found += self.model_config(1).mistakes()
        return found


DEFAULT_STORAGE = "runs"  # where train's runs and tune's experiments go, and where `runs` looks: ./runs


@dataclass
class RunSettings:
    storage: str = DEFAULT_STORAGE  # local folder, NFS path or s3:// URI (shared on clusters)
    name: str = "audionet"
    workers: int = 1  # Ray Train workers (DDP), one per GPU when there are GPUs
    gpus_per_worker: float = 0.0  # fractions let several trials share one GPU
    cpus_per_worker: float = 1.0
    keep_checkpoints: int = 2  # best k by `metric` (the latest is always kept too)
    metric: str = "val_accuracy"  # frr_at_target (mode min) for a keyword search
    mode: str = "max"
    max_failures: int = 2  # worker crashes a run survives, restarting from its last checkpoint
