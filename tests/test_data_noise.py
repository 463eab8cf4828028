"""data.load_noise: background noise bounded for every worker, the same pieces every time."""

from __future__ import annotations

import numpy as np
import torch

from audionet_ray.pipeline.data import NOISE_PIECE_S, load_noise
from audionet_ray.corpus.prepare import NOISE_FILE

SR = 16_000


def test_long_noise_is_cut_to_evenly_spaced_pieces_the_same_every_time(tmp_path):
    noise = np.arange(120 * SR, dtype=np.int64).astype(np.int16)  # 2 minutes; every sample tells where it was
    np.save(tmp_path / NOISE_FILE, noise)
    got = load_noise(tmp_path, cap_s=30)
    piece = NOISE_PIECE_S * SR
    assert got.dtype == np.int16 and len(got) == 30 * SR
    assert np.array_equal(got[:piece], noise[:piece]) and np.array_equal(got[-piece:], noise[-piece:])  # both ends
    assert np.array_equal(got[piece:2 * piece], noise[55 * SR:65 * SR])  # and the middle
    assert np.array_equal(load_noise(tmp_path, cap_s=30), got)  # deterministic
    assert got.flags.writeable and not isinstance(got, np.memmap)  # a copy, not the mapped file
    torch.from_numpy(got).add_(1)  # a tensor of it can be changed in place (no read-only memory)


def test_short_noise_is_kept_whole_and_missing_noise_is_empty(tmp_path):
    noise = np.random.default_rng(0).integers(-3000, 3000, 45 * SR).astype(np.int16)
    np.save(tmp_path / NOISE_FILE, noise)
    got = load_noise(tmp_path)  # 45 s: under the 10-minute cap
    assert np.array_equal(got, noise) and got.flags.writeable and not isinstance(got, np.memmap)
    assert load_noise(tmp_path / "nothing-here").shape == (0,)
