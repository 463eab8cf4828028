"""AudioNet: a raw-waveform 1-D CNN for keyword spotting (vj-1988/AudioNet-V1, in PyTorch).

Five Conv1d layers (kernel 32, stride 4, no padding, ReLU) shrink a 16 000-sample clip to
6 steps; four dense layers classify the flattened features. Defaults are the reference
(9 988 895 parameters with 31 classes); `width` and `dense` shrink it for CPU tests and demos
without changing its shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

CLIP_SAMPLES = 16_000
N_CONV = 5
KERNEL = 32
STRIDE = 4


@dataclass
class ModelConfig:
    n_classes: int
    width: int = 256  # conv channels
    dense: int = 512  # dense layer units
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


def conv_lengths(n_samples: int = CLIP_SAMPLES) -> list[int]:
    """Output length of each conv layer: 3993, 991, 240, 53, 6 for one second."""
    lengths, n = [], n_samples
    for _ in range(N_CONV):
        n = (n - KERNEL) // STRIDE + 1
        lengths.append(n)
    return lengths


class AudioNet(nn.Module):
    def __init__(self, n_classes: int, width: int = 256, dense: int = 512, dropout: float = 0.2):
        super().__init__()
        self.config = ModelConfig(n_classes, width, dense, dropout)
        convs: list[nn.Module] = []
        for i in range(N_CONV):
            convs += [nn.Conv1d(1 if i == 0 else width, width, KERNEL, STRIDE), nn.ReLU()]
        self.features = nn.Sequential(*convs)
        flat = width * conv_lengths()[-1]
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, dense), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(dense, dense), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(dense, dense), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(dense, dense), nn.ReLU(),
            nn.Linear(dense, n_classes),
        )
        self._init_weights()

    @classmethod
    def from_config(cls, cfg: ModelConfig | dict) -> "AudioNet":
        cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig(**cfg)
        return cls(cfg.n_classes, cfg.width, cfg.dense, cfg.dropout)

    def _init_weights(self) -> None:
        # Keras defaults of the reference: Glorot uniform on the first conv and the dense
        # layers, Glorot normal on convs 2-5, zero biases. Without normalisation layers the
        # network is sensitive to this.
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
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_clip(cfg: ModelConfig, training: bool = True) -> float:
    """Multiply-adds x2 from the layer shapes; a training step is ~3x the forward pass."""
    lengths = conv_lengths()
    fwd, c_in = 0.0, 1
    for n in lengths:
        fwd += 2.0 * n * c_in * cfg.width * KERNEL
        c_in = cfg.width
    dims = [cfg.width * lengths[-1], cfg.dense, cfg.dense, cfg.dense, cfg.dense, cfg.n_classes]
    fwd += sum(2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))
    return 3.0 * fwd if training else fwd
