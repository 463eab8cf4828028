"""Rooms and microphones: what far-field speech passes through before it becomes a user's clip.

Why: users record keywords metres from the mouth, in reverberant rooms, through telephones and
cheap microphones; a model that only ever heard close-talk speech loses a third of its accuracy
there (docs/performance.md, "Far-field speech"). This module makes the two responses of that
chain, as numpy arrays, for the training augmentation (augment.capture) and for the far-field
copies the speech generator writes (speech_data.far_field):

- `room_bank`: room impulse responses from pyroomacoustics' image-source method in shoebox rooms
  of random size and absorption (reverberation time drawn up to `rt60_max`), source and
  microphone 0.5-4 m apart. A bank is made ahead of time (seconds) and cached on disk, keyed by
  its seed and settings; different seeds give different rooms (the generator's test rooms are
  never a training bank's).
- `mic_curve`/`random_mic`: magnitude responses of microphones and channels (high-pass,
  low-pass, tilt, presence peak; telephone band 300-3400 Hz), zero phase.

Every random choice comes from the numpy Generator passed in: the same seed, the same rooms.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .audio import CLIP_SAMPLES, SAMPLE_RATE

RIR_TAPS = CLIP_SAMPLES  # only the first second of a tail can reach inside a one-second clip
BANK_VERSION = 1  # part of the cache key: a change to how rooms are made makes new files
RT60_MIN = 0.1  # seconds: below this a room is a close-talk booth


def simulate_room(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """One room's impulse response (RIR_TAPS, float32, unit energy), its direct sound at sample 0.

    A shoebox of random size whose wall absorption gives `rt60` by Sabine's formula (sizes that
    cannot reach it are drawn again), a source and a microphone at least 0.5 m from the walls and
    0.5-4 m from each other. The image-source method is deterministic given these numbers.
    """
    import pyroomacoustics as pra

    for _ in range(100):
        dims = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])
        try:
            e_abs, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # too large a room for so short a time
            continue
        src = rng.uniform(0.5, dims - 0.5)
        mic = rng.uniform(0.5, dims - 0.5)
        if 0.5 <= np.linalg.norm(src - mic) <= 4.0:
            break
    else:
        raise ValueError(f"no shoebox room reaches a reverberation time of {rt60} s")
    room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(e_abs), max_order=min(max_order, 60))
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    return _aligned(np.asarray(room.rir[0][0], dtype=np.float64))


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "audionet_ray" / "rooms"


def room_bank(seed: int, n: int = 64, rt60_max: float = 0.9, cache: bool = True) -> np.ndarray:
    """`n` room impulse responses (n, RIR_TAPS) with reverberation times spread over [RT60_MIN, rt60_max].

    Cached on disk (a .npy file per seed and settings, written whole or not at all): a bank
    of 64 rooms takes ~5-20 s to simulate, once per machine rather than once per trial.
    """
    if not RT60_MIN <= rt60_max <= 2.0:
        raise ValueError(f"rt60_max must be in [{RT60_MIN}, 2.0] seconds, got {rt60_max}")
    key = hashlib.sha256(f"{BANK_VERSION}:{seed}:{n}:{rt60_max:.4f}".encode()).hexdigest()[:16]
    path = _cache_dir() / f"bank-{key}.npy"
    if cache and path.is_file():
        try:
            bank = np.load(path, allow_pickle=False)
            if bank.shape == (n, RIR_TAPS):
                return bank
        except (OSError, ValueError):
            pass  # a damaged cache file is made again
    rng = np.random.default_rng([seed, 0x500D])
    rt60s = np.linspace(RT60_MIN, rt60_max, n)  # evenly spread: every strength is in every bank
    bank = np.stack([simulate_room(rng, float(t)) for t in rt60s])
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, bank, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home: the bank is simply made again next time
    return bank


def _aligned(rir: np.ndarray) -> np.ndarray:
    """From the direct sound (its peak, less a few taps) on, RIR_TAPS long, unit energy, float32."""
    start = max(0, int(np.argmax(np.abs(rir))) - 8)
    rir = np.asarray(rir[start: start + RIR_TAPS], dtype=np.float64)
    rir = np.pad(rir, (0, RIR_TAPS - len(rir)))
    return (rir / (np.sqrt(np.sum(rir**2)) + 1e-12)).astype(np.float32)


def measured_bank(folder: str | Path, first_only: bool = False) -> np.ndarray:
    """Measured room impulse responses: every readable, non-silent audio file of `folder` (one level).

    For users who have recordings of their own rooms (or a published set of them) and would rather
    train on those than on simulated shoeboxes. Unreadable or silent files are passed over; a folder
    without one usable response is a one-line ValueError naming it. `first_only`: stop at the
    first usable file (the check that runs before training).
    """
    from .audio import AUDIO_SUFFIXES, BadClip, read_audio

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"augment.rir_folder {folder}: not a folder (give a folder of room impulse responses, .wav or .flac)")
    rirs, files = [], sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    for path in files:
        try:
            x = read_audio(path, max_seconds=2.0)
        except (BadClip, OSError):
            continue
        if np.abs(x).max() > 0:
            rirs.append(_aligned(x))
            if first_only:
                break
    if not rirs:
        raise ValueError(f"augment.rir_folder {folder}: no usable room impulse response among its {len(files)} audio "
                         f"file(s) ({', '.join(AUDIO_SUFFIXES)}; unreadable and silent ones are passed over)")
    return np.stack(rirs)


def mic_curve(freqs: np.ndarray, highpass_hz: float, lowpass_hz: float, tilt_db: float = 0.0,
              presence_db: float = 0.0, presence_hz: float = 3000.0, order: int = 4) -> np.ndarray:
    """A microphone's (or a channel's) magnitude response at `freqs` (Hz, > 0), zero phase.

    High-pass of order 2, low-pass of `order` (8 for a telephone's steep band edge), a tilt in
    dB per octave about 1 kHz and a presence peak of `presence_db` an octave wide.
    """
    f = np.maximum(freqs, 1.0)
    h = 1 / np.sqrt(1 + (highpass_hz / f) ** 4)
    h = h / np.sqrt(1 + (f / lowpass_hz) ** (2 * order))
    h = h * 10 ** (tilt_db * np.log2(f / 1000.0) / 20)
    return h * 10 ** (presence_db * np.exp(-0.5 * (np.log2(f / presence_hz) / 0.5) ** 2) / 20)


def random_mic(rng: np.random.Generator, freqs: np.ndarray) -> np.ndarray:
    """A random channel: a telephone band (a third of the time) or a cheap microphone."""
    if rng.random() < 1 / 3:
        return mic_curve(freqs, rng.uniform(250, 400), rng.uniform(3000, 3600), rng.uniform(-2, 2),
                         rng.uniform(0, 6), rng.uniform(1500, 2500), order=8)
    return mic_curve(freqs, rng.uniform(80, 400), rng.uniform(3500, 7500), rng.uniform(-4, 3),
                     rng.uniform(0, 8), rng.uniform(2000, 5000))
