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
- `frontend`: "conv" (the reference: the first conv reads the samples, kernel 32, stride 4) or
  "filterbank": a learned filterbank on the raw waveform (Zeghidour et al. 2018, "Learning
  filterbanks from raw speech"; LEAF, 2021): one Conv1d of `filters` complex Gabor filters, a
  25 ms window every 10 ms, initialised at mel-spaced centre frequencies, then log power. The
  five convs that follow read its 98 frames with kernel 3, stride 2. Measured, the reference's
  first layers must learn a filterbank from scratch and are slow to (benchmarks/bench_variants.py);
  started at one, the net learns words in a few epochs.
- `clip_samples`: the input window, the prepared data's (`prepare --window`; train sets it from the
  manifest). One second is the reference; a longer window (a wake phrase of 1.2-1.4 s) gives every
  conv more steps, and with pool "flatten" a wider first dense layer. The conv front end needs at
  least MIN_SAMPLES["conv"] (10 572, 0.66 s) for its last conv to keep one step.
- `spec_augment` (filterbank only): SpecAugment's masks (Park et al. 2019) in training, two
  band ranges of up to 1/8 of the bands and two spans of up to 10 frames set to the band mean;
  nothing in eval mode, so bundles and ONNX graphs do not have it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import math

import torch
from torch import nn

CLIP_SAMPLES = 16_000
N_CONV = 5
KERNEL = 32
STRIDE = 4
NORMS = ("none", "batch", "group", "layer")
POOLS = ("flatten", "avg")
FRONTENDS = ("conv", "filterbank")
SAMPLE_RATE = 16_000
FB_WINDOW, FB_HOP = 400, 160  # 25 ms every 10 ms: 98 frames a second
FB_KERNEL, FB_STRIDE = 3, 2  # the convs after a filterbank: 98 -> 49 -> 25 -> 13 -> 7 -> 4 frames


@dataclass
class ModelConfig:
    """The model's settings, declared here only: AudioNet takes this object, config.TrainConfig nests
    it, and the command line's options and the YAML checks are derived from these fields (schema.py)."""

    n_classes: int = field(metadata={"from_data": True})  # the data's classes: never a setting of its own
    width: int = 256  # conv channels
    dense: int = 512  # dense layer units
    dropout: float = 0.2  # after every hidden dense layer but the last, as the reference
    norm: str = "none"  # none | batch | group | layer: between each conv and its ReLU
    norm_groups: int = 8  # GroupNorm's number of groups (norm="group" only); must divide width
    pool: str = "flatten"  # flatten | avg: how the last conv's time steps reach the dense layers
    dense_layers: int = 4  # hidden dense layers before the output layer
    frontend: str = "conv"  # conv (the reference) | filterbank (learned Gabor filterbank, log power)
    filters: int = 64  # filterbank bands (frontend="filterbank" only)
    spec_augment: bool = False  # in training, mask 2 random band ranges and 2 time spans of the filterbank's output
    # The input window in samples: the prepared data's (prepare --window), which train reads from its
    # manifest. In a TrainConfig 0 (the default) means whatever the data has; another value must equal it.
    clip_samples: int = CLIP_SAMPLES

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
        """Raise ValueError (one line, naming each bad option and what is allowed) for bad settings."""
        found = self.mistakes()
        if found:
            raise ValueError("; ".join(found))

    def mistakes(self) -> list[str]:
        """Every bad setting, one line each naming the option and what is allowed."""
        checks = [
            (self.n_classes >= 1, f"n_classes must be >= 1, got {self.n_classes}"),
            (self.width >= 1, f"width must be >= 1, got {self.width}"),
            (self.dense >= 1, f"dense must be >= 1, got {self.dense}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.norm in NORMS, f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}"),
            (self.pool in POOLS, f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}"),
            (self.dense_layers >= 0, f"dense_layers must be >= 0, got {self.dense_layers}"),
            (self.frontend in FRONTENDS, f"frontend must be one of {', '.join(FRONTENDS)}, got {self.frontend!r}"),
            (1 <= self.filters <= 512, f"filters must be between 1 and 512, got {self.filters}"),
            (not self.spec_augment or self.frontend == "filterbank",
             "spec_augment needs frontend filterbank (it masks the filterbank's bands and frames)"),
            (self.norm != "group" or (self.norm_groups >= 1 and self.width % self.norm_groups == 0),
             f"norm_groups must be >= 1 and divide width ({self.width}), got {self.norm_groups}"),
            (isinstance(self.clip_samples, int) and self.clip_samples >= MIN_SAMPLES[self.frontend]
             if self.frontend in FRONTENDS else True,
             f"clip_samples must be at least {MIN_SAMPLES.get(self.frontend)} for frontend {self.frontend} "
             f"(the convs need that many), got {self.clip_samples}"),
        ]
        return [msg for ok, msg in checks if not ok]


def conv_lengths(n_samples: int = CLIP_SAMPLES, frontend: str = "conv") -> list[int]:
    """Output length of each conv layer: 3993, 991, 240, 53, 6 for one second (the reference);
    49, 25, 13, 7, 4 after the filterbank's 98 frames. A longer window has more steps, so a
    flatten pool's dense layer grows with it."""
    if frontend == "filterbank":
        lengths, n = [], (n_samples - FB_WINDOW) // FB_HOP + 1
        for _ in range(N_CONV):
            n = (n + 2 * (FB_KERNEL // 2) - FB_KERNEL) // FB_STRIDE + 1
            lengths.append(n)
        return lengths
    lengths, n = [], n_samples
    for _ in range(N_CONV):
        n = (n - KERNEL) // STRIDE + 1
        lengths.append(n)
    return lengths


def _min_samples(frontend: str) -> int:
    """The shortest input whose last conv still has one step: 10 572 samples for the conv front
    end (0.66 s), one filterbank frame (the padded convs after it keep at least one step)."""
    if frontend == "filterbank":
        return FB_WINDOW
    n = 1
    for _ in range(N_CONV):
        n = (n - 1) * STRIDE + KERNEL
    return n


MIN_SAMPLES = {f: _min_samples(f) for f in FRONTENDS}


def _mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _hz(mel: float) -> float:
    return 700.0 * (10 ** (mel / 2595.0) - 1.0)


class Filterbank(nn.Module):
    """Log power of `n` learned band-pass filters, a 25 ms window every 10 ms.

    A Conv1d with 2n output channels holds each filter's real and imaginary part; it starts as
    complex Gabor filters (a Gaussian window times a complex sinusoid) at mel-spaced centre
    frequencies 60 Hz-7.6 kHz, each as wide as its mel band, and every weight trains. Power is
    re^2 + im^2; the log compresses it as hearing does (and as log-mel features do). Each band's
    mean over the clip is subtracted: a recording chain's colour is a per-band constant in the log
    domain (measured on espeak-ng speech with varied microphones: +0.03-0.08 val accuracy at 30
    epochs with a cosine schedule, level with a constant one).
    """

    def __init__(self, n: int, spec_augment: bool = False):
        super().__init__()
        self.n, self.spec_augment = n, spec_augment
        self.conv = nn.Conv1d(1, 2 * n, FB_WINDOW, FB_HOP, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(self.gabor(n))

    @staticmethod
    def gabor(n: int) -> torch.Tensor:
        """(2n, 1, window) Gabor weights: mel-spaced centres, bandwidths of the mel bands."""
        edges = [_hz(_mel(60.0) + i * (_mel(7600.0) - _mel(60.0)) / (n + 1)) for i in range(n + 2)]
        t = torch.arange(FB_WINDOW, dtype=torch.float64) - (FB_WINDOW - 1) / 2
        re, im = [], []
        for k in range(n):
            centre, width = edges[k + 1], max(edges[k + 2] - edges[k], 1.0)  # full width at half maximum, Hz
            sigma = min(math.sqrt(2 * math.log(2)) / (math.pi * width) * SAMPLE_RATE, FB_WINDOW / 6)
            env = torch.exp(-0.5 * (t / sigma) ** 2)
            env = env / env.norm()
            phase = 2 * math.pi * centre / SAMPLE_RATE * t
            re.append(env * torch.cos(phase))
            im.append(env * torch.sin(phase))
        return torch.stack(re + im).unsqueeze(1).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = torch.log(y[:, :self.n] ** 2 + y[:, self.n:] ** 2 + 1e-4)
        y = y - y.mean(dim=-1, keepdim=True)
        if self.spec_augment and self.training:
            y = y * spec_mask(y.shape, y.device)
        return y


def spec_mask(shape: torch.Size, device, masks: int = 2, max_frames: int = 10) -> torch.Tensor:
    """(B, F, T) of 0/1: per clip, `masks` band ranges of 0..F/8 bands and `masks` spans of
    0..max_frames frames are 0. Random from torch's global generator, as dropout is."""
    b, f, t = shape
    keep = torch.ones(shape, device=device)
    for size, limit, axis in ((f, f // 8, 1), (t, max_frames, 2)):
        pos = torch.arange(size, device=device).view((1, size, 1) if axis == 1 else (1, 1, size))
        for _ in range(masks):
            width = torch.randint(0, limit + 1, (b, 1, 1), device=device)
            start = (torch.rand(b, 1, 1, device=device) * (size - width + 1)).long()
            keep = keep.masked_fill((pos >= start) & (pos < start + width), 0.0)
    return keep


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
    def __init__(self, config: ModelConfig | int | None = None, /, *args: Any, **settings: Any):
        """`AudioNet(ModelConfig(...))`; `AudioNet(31, width=8)` is short for `AudioNet(ModelConfig(31, width=8))`
        (ModelConfig's arguments, so that its fields are written down once), and settings given
        beside a ModelConfig replace its own."""
        super().__init__()
        if isinstance(config, ModelConfig):
            c = replace(config, **settings)
        else:
            c = ModelConfig(*([] if config is None else [config]), *args, **settings)
        self.config = c
        c.validate()
        convs: list[nn.Module] = []
        if c.frontend == "filterbank":
            # absent for the reference, so its state_dict keys stay as they were
            self.frontend = nn.Sequential(Filterbank(c.filters, c.spec_augment),
                                          *([_norm(c.norm, c.filters, 1)] if c.norm != "none" else []))
        for i in range(N_CONV):
            if c.frontend == "filterbank":
                convs.append(nn.Conv1d(c.filters if i == 0 else c.width, c.width, FB_KERNEL, FB_STRIDE, FB_KERNEL // 2))
            else:
                convs.append(nn.Conv1d(1 if i == 0 else c.width, c.width, KERNEL, STRIDE))
            if c.norm != "none":
                convs.append(_norm(c.norm, c.width, c.norm_groups))
            convs.append(nn.ReLU())
        self.features = nn.Sequential(*convs)
        # no parameters: the reference's state_dict keys stay as they were
        self.pool = nn.AdaptiveAvgPool1d(1) if c.pool == "avg" else nn.Identity()
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = c.width * (1 if c.pool == "avg" else conv_lengths(c.clip_samples, c.frontend)[-1])
        for i in range(c.dense_layers):
            layers += [nn.Linear(n_in, c.dense), nn.ReLU()]
            if i < c.dense_layers - 1:
                layers.append(nn.Dropout(c.dropout))
            n_in = c.dense
        layers.append(nn.Linear(n_in, c.n_classes))
        self.classifier = nn.Sequential(*layers)
        self._init_weights()

    @classmethod
    def from_config(cls, cfg: ModelConfig | dict) -> "AudioNet":
        return cls(cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg))

    def _init_weights(self) -> None:
        # Keras defaults of the reference: Glorot uniform on the first conv and the dense
        # layers, Glorot normal on convs 2-5, zero biases. Without normalisation layers the
        # network is sensitive to this. Norm layers keep torch's init (scale 1, shift 0).
        conv_layers = [m for m in self.features if isinstance(m, nn.Conv1d)]
        for i, conv in enumerate(conv_layers):  # the filterbank keeps its Gabor start
            (nn.init.xavier_uniform_ if i == 0 else nn.init.xavier_normal_)(conv.weight)
            nn.init.zeros_(conv.bias)
        for m in self.classifier:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for standardised clips of shape (B, clip_samples) or (B, 1, clip_samples)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if self.config.frontend == "filterbank":
            x = self.frontend(x)
        return self.classifier(self.pool(self.features(x)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_clip(cfg: ModelConfig, training: bool = True) -> float:
    """Multiply-adds x2 from the layer shapes (norm layers are negligible); a training step is
    ~3x the forward pass."""
    lengths = conv_lengths(cfg.clip_samples, cfg.frontend)
    fwd, c_in, kernel = 0.0, 1, KERNEL
    if cfg.frontend == "filterbank":
        frames = (cfg.clip_samples - FB_WINDOW) // FB_HOP + 1
        fwd, c_in, kernel = 2.0 * frames * 2 * cfg.filters * FB_WINDOW, cfg.filters, FB_KERNEL
    for n in lengths:
        fwd += 2.0 * n * c_in * cfg.width * kernel
        c_in = cfg.width
    n_in = cfg.width * (1 if cfg.pool == "avg" else lengths[-1])
    dims = [n_in, *[cfg.dense] * cfg.dense_layers, cfg.n_classes]
    fwd += sum(2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))
    return 3.0 * fwd if training else fwd
