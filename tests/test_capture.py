"""Far-field capture (augment.capture) and its rooms (rooms.py): what each stage does to a clip,
measured on the clip; seeded; off means untouched; bad settings are one line."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray.pipeline.augment import AugmentConfig, Capture, capture
from audionet_ray.training.config import ConfigError, TrainConfig
from audionet_ray.corpus.rooms import RIR_TAPS, mic_curve, room_bank

N = 16_000


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """Room banks go to a folder of this module's own, not the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def speech_like(b: int, seed: int = 0) -> torch.Tensor:
    """Bursts of tone in silence: a 'word' of 0.4 s at a random place in each clip, int16 units."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(b, N)
    t = torch.arange(6400) / 16_000
    for i in range(b):
        start = int(torch.randint(0, N - 6400, (1,), generator=g))
        f = 200 + 600 * float(torch.rand(1, generator=g))
        x[i, start:start + 6400] = 3000 * torch.sin(2 * torch.pi * f * t) * torch.hann_window(6400)
    return x


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_room_bank_is_seeded_cached_and_direct_sound_first():
    a, b = room_bank(7, 4, 0.6), room_bank(7, 4, 0.6, cache=False)
    assert a.shape == (4, RIR_TAPS) and np.array_equal(a, b)
    assert not np.array_equal(a, room_bank(8, 4, 0.6, cache=False))
    assert np.allclose((a.astype(np.float64) ** 2).sum(1), 1.0, atol=1e-4)
    assert (np.abs(a).argmax(1) < 50).all()  # the direct sound (or a first reflection) leads
    # longer reverberation leaves more energy late: the bank spreads rt60 from short to long
    late = (a[:, 4000:].astype(np.float64) ** 2).sum(1)
    assert late[-1] > late[0]


def test_off_is_none_and_zero_shares_leave_clips_alone():
    assert Capture.of(AugmentConfig(), 0, N) is None
    cfg = AugmentConfig(room_prob=1.0, babble_prob=0.0, mic_prob=0.0, snr_prob=0.0, rt60_max=0.5)
    cap = Capture.of(cfg, 0, N)
    x = speech_like(8)
    none = AugmentConfig(room_prob=0.0)
    assert torch.equal(capture(x.clone(), gen(), none, cap), x)


def test_room_adds_a_tail_after_the_word():
    cfg = AugmentConfig(room_prob=1.0, rt60_max=0.5)
    cap = Capture.of(cfg, 0, N)
    x = torch.zeros(32, N)
    x[:, 4000:4400] = 3000 * torch.hann_window(400)  # a click, then silence
    out = capture(x.clone(), gen(1), cfg, cap)
    tail = out[:, 4800:8000].square().sum(1) / out.square().sum(1)
    assert (tail > 1e-4).all() and tail.median() > 1e-2  # reverberation fills the silence after it


def test_microphone_band_removes_low_frequencies_for_telephone_like_responses():
    freqs = np.fft.rfftfreq(2 * N, 1 / 16_000)
    h = mic_curve(freqs, 300, 3400, order=8)
    assert h[np.searchsorted(freqs, 100)] < 0.15 and h[np.searchsorted(freqs, 6000)] < 0.02
    assert 0.7 < h[np.searchsorted(freqs, 1000)] < 1.3


@settings(max_examples=15, deadline=None)
@given(snr=st.floats(-10, 25), seed=st.integers(0, 2**31))
def test_noise_lands_at_the_drawn_snr(snr, seed):
    cfg = AugmentConfig(snr_prob=1.0, snr_db=snr)
    cap = Capture.of(cfg, 0, N)
    x = speech_like(16, seed % 1000)
    out = capture(x.clone(), gen(seed), cfg, cap)
    measured = 10 * torch.log10(x.square().sum(1) / (out - x).square().sum(1))
    assert (measured > snr - 0.5).all() and (measured < snr + 20.5).all()


def test_babble_mixes_other_clips_but_never_into_silence():
    cfg = AugmentConfig(babble_prob=1.0, babble_snr_db=0.0)
    cap = Capture.of(cfg, 0, N)
    x = speech_like(16)
    speech = torch.ones(16, dtype=torch.bool)
    speech[:4] = False
    out = capture(x.clone(), gen(2), cfg, cap, speech=speech)
    assert torch.equal(out[:4], x[:4])
    added = (out[4:] - x[4:]).square().sum(1) / x[4:].square().sum(1)
    assert (added > 10 ** (-15.5 / 10)).all()  # at least one talker at <= 15 dB (x 3 talkers: <= 1.0 * 3)
    assert (added < 3 * 1.0 + 1e-3).all()


def test_seeded_same_generator_same_capture_and_int16_level_kept():
    cfg = AugmentConfig(babble_prob=0.5, room_prob=0.5, mic_prob=0.5, snr_prob=0.5, snr_db=0.0)
    cap = Capture.of(cfg, 0, N)
    x = speech_like(32)
    a = capture(x.clone(), gen(3), cfg, cap)
    b = capture(x.clone(), gen(3), cfg, cap)
    c = capture(x.clone(), gen(4), cfg, cap)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("key,value", [("room_prob", 1.5), ("babble_prob", -0.1), ("snr_db", -30.0),
                                       ("babble_snr_db", 60.0), ("rt60_max", 5.0), ("mic_prob", 2.0)])
def test_out_of_range_settings_are_one_line_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"augment.{key}") as e:
        TrainConfig.from_dict({key: value})
    assert "\n" not in str(e.value)


def _write(path, samples: np.ndarray, rate: int = 16_000) -> None:
    import soundfile as sf

    sf.write(str(path), samples, rate, subtype="PCM_16")


def test_measured_rooms_from_a_folder_replace_the_simulated_ones(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16_000
    _write(tmp_path / "hall.wav", 0.5 * rng.standard_normal(8000) * 10 ** (-3 * t / 0.6))
    _write(tmp_path / "office.flac", 0.5 * rng.standard_normal(4000) * 10 ** (-3 * t[:4000] / 0.2), 48_000)
    _write(tmp_path / "silent.wav", np.zeros(1000))
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    (tmp_path / "notes.txt").write_text("not a room")
    cfg = TrainConfig.from_dict({"room_prob": 1.0, "rir_folder": str(tmp_path)}).augment
    cap = Capture.of(cfg, 0, N)
    assert len(cap.rooms) == 2 + 1  # hall and office (the silent and broken files passed over), and "no room"
    x = speech_like(4)
    out = capture(x.clone(), gen(), cfg, cap)
    assert not torch.equal(out, x) and torch.isfinite(out).all()


@pytest.mark.parametrize("make", ["missing", "empty", "only_bad"])
def test_a_room_folder_without_usable_audio_is_one_line_before_training(tmp_path, make):
    folder = tmp_path / "rirs"
    if make != "missing":
        folder.mkdir()
    if make == "only_bad":
        (folder / "a.wav").write_bytes(b"RIFF\x00\x00not audio")
        _write(folder / "b.wav", np.zeros(100))
    with pytest.raises(ConfigError, match="augment.rir_folder") as e:
        TrainConfig.from_dict({"room_prob": 0.5, "rir_folder": str(folder)})
    assert "\n" not in str(e.value) and str(folder) in str(e.value)


def test_flat_names_of_augmentation_settings_are_found_in_a_saved_config():
    from audionet_ray.training.config import setting

    saved = TrainConfig.from_dict({"room_prob": 0.3, "lr": 0.01}).to_dict()  # as a checkpoint keeps it
    assert setting(saved, "room_prob") == 0.3 and setting(saved, "lr") == 0.01
    assert setting(saved, "snr_db") == AugmentConfig().snr_db


@pytest.mark.slow
def test_a_search_over_capture_settings_ends_with_its_best_trial_and_an_export(tmp_path, prepared_demo, ray_session):
    """The search samples augmentation keys (room_prob, snr_db) like any other and reports and exports
    its best trial (the best-trial line once looked them up at the top level of the saved config)."""
    import yaml

    from audionet_ray.tuning.search_space import load_spec

    smoke = load_spec("smoke")
    space = {"search": {"room_prob": {"choice": [0.0, 0.5]}, "snr_db": {"choice": [0.0, 10.0]}},
             "fixed": {**smoke.fixed, "epochs": 2, "augment": {"snr_prob": 0.5, "rt60_max": 0.3}},
             "tune": {"num_samples": 2, "max_concurrent": 2, "grace_period": 2, "seed": 0},
             "resources": {"workers_per_trial": 1, "gpus_per_trial": 0, "cpus_per_worker": 0.5}}
    (tmp_path / "ff.yaml").write_text(yaml.safe_dump(space))
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--search-space", str(tmp_path / "ff.yaml"),
                        "--data", str(prepared_demo), "--storage", str(tmp_path / "runs"), "--name", "ff", "--quiet",
                        "--address", ray_session.get_runtime_context().gcs_address],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    best = next(ln for ln in p.stdout.splitlines() if ln.startswith("best trial"))
    assert "room_prob=" in best and "snr_db=" in best and "None" not in best
    assert (tmp_path / "runs" / "ff" / "bundle" / "config.json").is_file()
