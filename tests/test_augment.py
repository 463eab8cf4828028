"""Augmentation: shapes, statistics, noise and shift bounds, per-epoch randomness, reproducibility."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from audionet_ray.pipeline.augment import AugmentConfig, augment, epoch_generator, perturb, standardise
from audionet_ray.pipeline.data import load_noise
from audionet_ray.corpus.prepare import pcm_from_binary

CPU = torch.device("cpu")
N = 16_000
OFF = dict(noise_amplitude=0, max_shift=0, background_prob=0.0)


@pytest.fixture(scope="module")
def clips(prepared_demo) -> torch.Tensor:
    """64 real demo clips as int16 (64, 16000)."""
    table = pq.read_table(next(prepared_demo.glob("trainval-*.parquet")), columns=["pcm"])
    return torch.from_numpy(pcm_from_binary(table.column("pcm"))[:64].copy())


@pytest.fixture(scope="module")
def noise(prepared_demo) -> torch.Tensor:
    return torch.from_numpy(load_noise(prepared_demo))


def test_shapes_dtype_and_standardised_statistics(clips, noise):
    out = augment(clips, epoch_generator(0, 1, 0, CPU), AugmentConfig(), noise)
    assert out.shape == clips.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.mean(dim=1).abs().max() < 1e-4
    assert (out.std(dim=1) - 1).abs().max() < 1e-3
    assert clips.dtype == torch.int16  # the input is left alone


def test_standardise_matches_reference_and_survives_dc_offset_and_silence():
    x = torch.randn(5, N) * 10 + torch.tensor([[0.0], [5000.0], [-20000.0], [1.0], [0.0]])
    x[4] = 0  # digital silence
    ref = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-5)
    got = standardise(x)
    assert torch.allclose(got, ref, atol=1e-4)
    assert (got[4] == 0).all()
    # int16 in, same as float in
    pcm = (torch.randn(3, N) * 3000).to(torch.int16)
    assert torch.allclose(standardise(pcm), standardise(pcm.float()))


def test_uniform_noise_stays_within_amplitude_and_has_its_spread(clips):
    cfg = AugmentConfig(noise_amplitude=200, max_shift=0, background_prob=0.0)
    raw = perturb(clips, epoch_generator(0, 0, 0, CPU), cfg)
    added = raw - clips.float()
    assert added.abs().max() <= 200
    assert abs(added.mean().item()) < 1.0
    assert added.std().item() == pytest.approx(200 / np.sqrt(3), rel=0.01)  # uniform on [-200, 200)
    # no noise -> nothing added
    assert torch.equal(perturb(clips, epoch_generator(0, 0, 0, CPU), AugmentConfig(**OFF)), clips.float())


def test_shift_is_a_roll_within_max_shift_and_varies_per_clip(clips):
    cfg = AugmentConfig(noise_amplitude=0, max_shift=250, background_prob=0.0)
    out = perturb(clips, epoch_generator(3, 0, 0, CPU), cfg)
    allowed = np.arange(-250, 251)
    shifts = []
    for row, src in zip(out.numpy(), clips.float().numpy()):
        # np.roll(src, s)[0] == src[-s]: candidates from the first sample, then the whole clip
        found = [s for s in allowed[src[(-allowed) % N] == row[0]] if np.array_equal(row, np.roll(src, s))]
        assert found, "every clip is its source rolled by at most 250 samples"
        shifts.append(found[0])
    assert len(set(shifts)) > 10


def test_background_noise_is_a_scaled_stretch_of_the_noise_file(noise):
    cfg = AugmentConfig(noise_amplitude=0, max_shift=0, background_prob=0.5, background_volume=0.1)
    zeros = torch.zeros(200, N, dtype=torch.int16)
    out = perturb(zeros, epoch_generator(0, 0, 0, CPU), cfg, noise)
    with_noise = out.abs().amax(dim=1) > 0
    assert 0.3 < with_noise.float().mean() < 0.7  # about background_prob of the clips
    nf = noise.float().numpy()
    windows = np.lib.stride_tricks.sliding_window_view(nf, 3)
    for row in out[with_noise][:5].numpy():
        first = np.flatnonzero(row)[0]
        # where in the noise file could this stretch start? the volume is the same on every
        # sample, so three samples in a row pin it down; then the whole clip must match
        with np.errstate(divide="ignore", invalid="ignore"):
            vol = row[first] / windows[:, 0]
            near = np.isclose(windows[:, 1] * vol, row[first + 1], atol=1e-3) & np.isclose(
                windows[:, 2] * vol, row[first + 2], atol=1e-3) & (np.abs(vol) <= 0.1 + 1e-6)
        ok = any(np.allclose(row, nf[c - first:c - first + N] * vol[c], atol=1e-2)
                 for c in np.flatnonzero(near) if 0 <= c - first <= len(nf) - N)
        assert ok, "background is a contiguous stretch of the noise at volume <= 0.1"


def test_fresh_randomness_each_epoch_and_the_same_again_for_the_same_seed(clips, noise):
    cfg = AugmentConfig()
    a = augment(clips, epoch_generator(7, 1, 0, CPU), cfg, noise)
    again = augment(clips, epoch_generator(7, 1, 0, CPU), cfg, noise)
    next_epoch = augment(clips, epoch_generator(7, 2, 0, CPU), cfg, noise)
    other_rank = augment(clips, epoch_generator(7, 1, 1, CPU), cfg, noise)
    other_seed = augment(clips, epoch_generator(8, 1, 0, CPU), cfg, noise)
    assert torch.equal(a, again)
    for b in (next_epoch, other_rank, other_seed):
        assert not torch.allclose(a, b)
    # successive batches of one epoch differ too (the generator moves on)
    g = epoch_generator(7, 1, 0, CPU)
    assert not torch.equal(augment(clips, g, cfg, noise), augment(clips, g, cfg, noise))


def test_validation_is_only_standardised(clips, noise):
    """Validation/test input is `standardise`: deterministic, and what augment gives with all randomness off."""
    val = standardise(clips)
    assert torch.equal(val, standardise(clips))
    off = augment(clips, epoch_generator(0, 0, 0, CPU), AugmentConfig(**OFF), noise)
    assert torch.allclose(off, val)
    assert not torch.allclose(augment(clips, epoch_generator(0, 0, 0, CPU), AugmentConfig(), noise), val)


def test_extreme_int16_and_short_noise_are_safe():
    pcm = torch.full((4, N), -32768, dtype=torch.int16)
    pcm[:, ::2] = 32767
    out = augment(pcm, epoch_generator(0, 0, 0, CPU), AugmentConfig(), torch.zeros(100, dtype=torch.int16))
    assert torch.isfinite(out).all()
    # background shorter than a clip is ignored rather than indexed out of range
    cfg = AugmentConfig(background_prob=1.0, noise_amplitude=0, max_shift=0)
    assert torch.equal(perturb(pcm, epoch_generator(0, 0, 0, CPU), cfg, torch.ones(N // 2, dtype=torch.int16)),
                       pcm.float())
