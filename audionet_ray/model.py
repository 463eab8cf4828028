"""AudioNet: a raw-waveform 1-D CNN for keyword spotting (vj-1988/AudioNet-V1, in PyTorch).

Five Conv1d layers (kernel 32, stride 4, no padding, ReLU) shrink a 16 000-sample clip to
6 steps; four dense layers classify the flattened features. `ModelConfig(n_classes)` is the
reference exactly (9 988 895 parameters with 31 classes, no normalisation, Keras' init); its
options are the variants a search can turn:

- `norm` between each conv and its ReLU. The reference has none and, measured, sits at chance
  for its first epochs (benchmarks/bench_variants.py): an early-stopping search then ranks
  noise. "batch" is BatchNorm1d; "group" is GroupNorm with `norm_groups` groups over channels
  and time; "layer" is LayerNorm over the channels at each time step (wav2vec 2.0's feature
  encoder). "group" and "layer" do not depend on the batch, so they behave the same at any
  batch size and in eval mode.
- `width` (conv channels), `dense` (units), `dense_layers` (hidden dense layers), `dropout`.
- `pool`: "flatten" (the reference: the last 6 steps side by side) or "avg" (their mean: a
  word shifted in time gives nearly the same features, and the dense input is `width`, not
  6 x `width`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

CLIP_SAMPLES = 16_000
N_CONV = 5
KERNEL = 32
STRIDE = 4
NORMS = ("none", "batch", "group", "layer")
POOLS = ("flatten", "avg")


@dataclass
class ModelConfig:
    n_classes: int
    width: int = 256  # conv channels
    dense: int = 512  # dense layer units
    dropout: float = 0.2  # after every hidden dense layer but the last, as the reference
    norm: str = "none"  # none | batch | group | layer: between each conv and its ReLU
    norm_groups: int = 8  # GroupNorm's number of groups (norm="group" only); must divide width
    pool: str = "flatten"  # flatten | avg: how the last conv's time steps reach the dense layers
    dense_layers: int = 4  # hidden dense layers before the output layer

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """From a checkpoint's or bundle's record; keys an older version did not write take
        their defaults (the reference), so old checkpoints load as the model they were."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model setting(s) {', '.join(unknown)} (written by a newer audionet-ray?)")
        return cls(**d)

    def validate(self) -> None:
        """Raise ValueError (one line, naming the option and what is allowed) for a bad setting."""
        checks = [
            (self.n_classes >= 1, f"n_classes must be >= 1, got {self.n_classes}"),
            (self.width >= 1, f"width must be >= 1, got {self.width}"),
            (self.dense >= 1, f"dense must be >= 1, got {self.dense}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.norm in NORMS, f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}"),
            (self.pool in POOLS, f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}"),
            (self.dense_layers >= 0, f"dense_layers must be >= 0, got {self.dense_layers}"),
            (self.norm != "group" or (self.norm_groups >= 1 and self.width % self.norm_groups == 0),
             f"norm_groups must be >= 1 and divide width ({self.width}), got {self.norm_groups}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


def conv_lengths(n_samples: int = CLIP_SAMPLES) -> list[int]:
    """Output length of each conv layer: 3993, 991, 240, 53, 6 for one second."""
    lengths, n = [], n_samples
    for _ in range(N_CONV):
        n = (n - KERNEL) // STRIDE + 1
        lengths.append(n)
    return lengths


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, T) at each time step (LayerNorm wants C last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    return ChannelLayerNorm(channels)


class AudioNet(nn.Module):
    def __init__(self, n_classes: int, width: int = 256, dense: int = 512, dropout: float = 0.2,
                 norm: str = "none", norm_groups: int = 8, pool: str = "flatten", dense_layers: int = 4):
        super().__init__()
        self.config = cfg = ModelConfig(n_classes, width, dense, dropout, norm, norm_groups, pool, dense_layers)
        cfg.validate()
        convs: list[nn.Module] = []
        for i in range(N_CONV):
            convs.append(nn.Conv1d(1 if i == 0 else width, width, KERNEL, STRIDE))
            if norm != "none":
                convs.append(_norm(norm, width, norm_groups))
            convs.append(nn.ReLU())
        self.features = nn.Sequential(*convs)
        # no parameters: the reference's state_dict keys stay as they were
        self.pool = nn.AdaptiveAvgPool1d(1) if pool == "avg" else nn.Identity()
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = width * (1 if pool == "avg" else conv_lengths()[-1])
        for i in range(dense_layers):
            layers += [nn.Linear(n_in, dense), nn.ReLU()]
            if i < dense_layers - 1:
                layers.append(nn.Dropout(dropout))
            n_in = dense
        layers.append(nn.Linear(n_in, n_classes))
        self.classifier = nn.Sequential(*layers)
        self._init_weights()

    @classmethod
    def from_config(cls, cfg: ModelConfig | dict) -> "AudioNet":
        cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg)
        return cls(**cfg.to_dict())

    def _init_weights(self) -> None:
        # Keras defaults of the reference: Glorot uniform on the first conv and the dense
        # layers, Glorot normal on convs 2-5, zero biases. Without normalisation layers the
        # network is sensitive to this. Norm layers keep torch's init (scale 1, shift 0).
        conv_layers = [m for m in self.features if isinstance(m, nn.Conv1d)]
        for i, conv in enumerate(conv_layers):
            (nn.init.xavier_uniform_ if i == 0 else nn.init.xavier_normal_)(conv.weight)
            nn.init.zeros_(conv.bias)
        for m in self.classifier:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for standardised clips of shape (B, 16000) or (B, 1, 16000)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.classifier(self.pool(self.features(x)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_clip(cfg: ModelConfig, training: bool = True) -> float:
    """Multiply-adds x2 from the layer shapes (norm layers are negligible); a training step is
    ~3x the forward pass."""
    lengths = conv_lengths()
    fwd, c_in = 0.0, 1
    for n in lengths:
        fwd += 2.0 * n * c_in * cfg.width * KERNEL
        c_in = cfg.width
    n_in = cfg.width * (1 if cfg.pool == "avg" else lengths[-1])
    dims = [n_in, *[cfg.dense] * cfg.dense_layers, cfg.n_classes]
    fwd += sum(2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))
    return 3.0 * fwd if training else fwd
