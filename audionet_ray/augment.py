"""Per-epoch augmentation as batched torch ops, run where the model runs.

Clips travel from the data pipeline as int16 (half the bytes of float32, a quarter of the
work for the CPUs that feed a GPU); here they become augmented, standardised float32 in a
handful of vectorised ops, microseconds on a GPU. The reference recipe: uniform integer noise
in [-200, 200), a circular shift in [-250, 250], per-clip standardisation; plus the common
Speech Commands recipe of mixing in a random stretch of background noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class AugmentConfig:
    noise_amplitude: int = 200  # int16 units of uniform noise; 0 turns it off
    max_shift: int = 250  # samples of circular shift either way; 0 turns it off
    background_prob: float = 0.8  # chance a clip gets background noise (if the dataset has any)
    background_volume: float = 0.1  # maximum volume of that noise

    def to_dict(self) -> dict:
        return asdict(self)


def standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per clip: what AudioNet sees in training and in use."""
    x = x.float()
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True)
    return (x - mean) / (std + eps)


def augment(
    pcm: torch.Tensor,
    gen: torch.Generator,
    cfg: AugmentConfig,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """int16 clips (B, N) -> augmented, standardised float32 (B, N); randomness only from `gen`."""
    b, n = pcm.shape
    dev = pcm.device
    x = pcm.float()
    if noise is not None and noise.numel() > n and cfg.background_prob > 0:
        start = torch.randint(0, noise.numel() - n, (b, 1), generator=gen, device=dev)
        seg = noise[start + torch.arange(n, device=dev)].float()
        keep = torch.rand(b, 1, generator=gen, device=dev) < cfg.background_prob
        vol = torch.rand(b, 1, generator=gen, device=dev) * cfg.background_volume * keep
        x = x + seg * vol
    if cfg.noise_amplitude > 0:
        a = cfg.noise_amplitude
        x = x + torch.randint(-a, a, (b, n), generator=gen, device=dev, dtype=torch.int16).float()
    if cfg.max_shift > 0:
        s = cfg.max_shift
        shift = torch.randint(-s, s + 1, (b, 1), generator=gen, device=dev)
        idx = (torch.arange(n, device=dev) - shift) % n  # torch.roll, one shift per clip
        x = x.gather(1, idx)
    return standardise(x)


def epoch_generator(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """Fresh randomness every epoch and worker, the same again for the same seed (and on resume)."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch * 7_919 + rank) % (2**63 - 1))
    return g
