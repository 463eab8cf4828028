"""Decoding one audio file into what AudioNet eats: 16 kHz mono int16, exactly one second.

Speech Commands is mostly clean, but a real folder of 100 000 clips has surprises (empty files,
stereo, 44.1 kHz, float WAV, NaNs). Everything here raises `BadClip` with a reason instead of
crashing, so preparing a dataset can skip and count the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
CLIP_SAMPLES = 16_000
AUDIO_SUFFIXES = {".wav", ".flac"}


class BadClip(Exception):
    """A file that cannot become a clip; the message says why in a few words."""


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any-length mono float32 in [-1, 1] at `sample_rate`, resampled with soxr if needed."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadClip("empty file (0 bytes)")
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except BadClip:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise BadClip(f"unreadable audio ({str(e).splitlines()[0][:120]})") from None
    if data.shape[0] == 0:
        raise BadClip("no audio frames")
    if not np.isfinite(data).all():
        raise BadClip("NaN or infinite samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32)
    return np.clip(mono, -1.0, 1.0)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def fit_length(x: np.ndarray, n: int = CLIP_SAMPLES) -> np.ndarray:
    """Zero-pad short clips at the end and cut long ones, like the reference trainer."""
    if len(x) >= n:
        return x[:n]
    return np.pad(x, (0, n - len(x)))


def load_clip(path: str | Path) -> np.ndarray:
    """One training clip: int16, 16 000 samples."""
    return to_int16(fit_length(read_audio(path)))
