"""Decoding one audio file into what AudioNet eats: 16 kHz mono int16, exactly one window
(one second unless the dataset was prepared with another `--window`).

Speech Commands is mostly clean, but a real folder of 100 000 clips has surprises (empty files,
half-downloaded files, stereo, 44.1 kHz, 24-bit or float WAV, NaNs). Everything here raises
`BadClip` with a reason instead of crashing, so preparing a dataset can skip and count the
file; what can be repaired (resampling, mixdown, padding) is repaired and noted, so the
manifest can say how much of the data needed it.

int16 <-> float uses soundfile's convention (x / 32768), so a 16-bit clip survives the trip
bit for bit; the common 16 kHz mono 16-bit case skips floats altogether.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
CLIP_SAMPLES = 16_000
CLIP_BYTES = 2 * CLIP_SAMPLES  # int16
WINDOW_RANGE_S = (0.5, 3.0)  # prepare --window: half a second (one short word) to three (a long wake phrase)
AUDIO_SUFFIXES = {".wav", ".flac"}
_READ_MARGIN = 1.1  # read a little past one second so the resampler has its right context
BLOCK_FRAMES = 1 << 16  # source frames per read when a long file is streamed (4 s at 16 kHz)


class BadClip(Exception):
    """A file that cannot become a clip; the message says why in a few words."""


def _check_file(path: Path) -> None:
    """Reasons that need no decoder: missing, not a file, empty, unreadable."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadClip("broken symlink" if path.is_symlink() else "file disappeared") from None
    except OSError as e:
        raise BadClip(f"cannot stat file ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadClip("not a regular file (a folder or device named like audio)")
    if st.st_size == 0:
        raise BadClip("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise BadClip("permission denied")


def _wav_truncated(path: Path) -> str | None:
    """For RIFF WAV: the data chunk's declared size against what the file really holds.

    libsndfile quietly decodes whatever is there; a half-downloaded clip would then train on
    half a word under a full word's label, so we call it out instead.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(f.fileno()).st_size
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, n = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"data":
                    have = size - f.tell()
                    # 0 and 0xFFFFFFFF mean "length unknown" (streamed writers): not truncated
                    if n not in (0, 0xFFFFFFFF) and have < n:
                        return f"truncated WAV ({have} of {n} data bytes)"
                    return None
                f.seek(n + (n & 1), 1)
    except OSError:
        return None


def _open(path: Path) -> sf.SoundFile:
    """The file opened for decoding, after the checks that need no decoder (BadClip if it cannot be)."""
    _check_file(path)
    if why := _wav_truncated(path):  # by content: a cut WAV named .flac is still cut
        raise BadClip(why)
    with _unreadable(path):
        return sf.SoundFile(os.fsencode(path))  # bytes: soundfile cannot encode a non-UTF-8 name


@contextmanager
def _unreadable(path: Path):
    """A decoder's error as BadClip("not readable as audio (...)"), without the file name (the skip list names it)."""
    try:
        yield
    except (sf.SoundFileError, RuntimeError, ValueError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        msg = msg.replace(f"Error opening {os.fsencode(path)!r}: ", "")
        raise BadClip(f"not readable as audio ({msg[:100]})") from None


def _mono(data: np.ndarray, subtype: str, channels: int, notes: list[str]) -> np.ndarray:
    """Decoded frames (n, channels) -> mono float32, refusing NaN or infinite samples."""
    if subtype in ("FLOAT", "DOUBLE") and not np.isfinite(data).all():
        raise BadClip("NaN or infinite samples")
    if subtype != "PCM_16":
        notes.append(f"converted from {subtype}")
    if channels > 1:
        data = data.mean(axis=1, keepdims=True)
        notes.append(f"mixed down from {channels} channels")
    return data[:, 0]


def _clipped(mono: np.ndarray, subtype: str, resampled: bool, notes: list[str]) -> np.ndarray:
    """Float sources and resampler overshoot can leave [-1, 1]: clipped back into it."""
    if subtype in ("FLOAT", "DOUBLE") or resampled:
        if len(mono) and np.abs(mono).max() > 1.0:
            notes.append("clipped to [-1, 1]")
        mono = np.clip(mono, -1.0, 1.0)
    return mono


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None,
               notes: list[str] | None = None) -> np.ndarray:
    """Mono float32 in [-1, 1] at `sample_rate` (soxr resampling); at most `max_seconds` of it.

    Appends to `notes` what had to be repaired (resampled, mixed down, converted, clipped).
    The whole file is in memory: for long recordings use `iter_audio`.
    """
    path = Path(path)
    notes = notes if notes is not None else []
    f = _open(path)
    with f, _unreadable(path):
        sr, channels, subtype = f.samplerate, f.channels, f.subtype
        frames = -1 if max_seconds is None else int(np.ceil(max_seconds * sr * _READ_MARGIN))
        data = f.read(frames, dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise BadClip("no audio frames")
    mono = _mono(data, subtype, channels, notes)
    if sr != sample_rate:
        mono = resample(mono, sr, sample_rate)
        notes.append(f"resampled from {sr} Hz")
        if len(mono) == 0:  # a frame or two at a low rate: the resampler gives nothing back
            raise BadClip(f"too short to resample ({data.shape[0]} frames at {sr} Hz)")
    mono = _clipped(mono, subtype, sr != sample_rate, notes)
    if max_seconds is not None:
        mono = mono[: int(round(max_seconds * sample_rate))]
    return mono


def iter_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """`read_audio` of a whole file a block at a time, for recordings too long to hold: the same
    samples (soxr's stream resampler carries its filter state across blocks and gives what the
    one-shot call gives), in memory one block of `block_frames` source frames."""
    path = Path(path)
    f = _open(path)
    with f:
        sr, channels, subtype = f.samplerate, f.channels, f.subtype
        stream = soxr.ResampleStream(sr, sample_rate, 1, dtype="float32", quality="HQ") if sr != sample_rate else None
        frames = out = 0
        while True:
            with _unreadable(path):
                data = f.read(block_frames, dtype="float32", always_2d=True)
            last = data.shape[0] < block_frames
            frames += data.shape[0]
            if last and frames == 0:
                raise BadClip("no audio frames")
            mono = _mono(data, subtype, channels, [])
            if stream is not None:
                mono = stream.resample_chunk(mono, last=last)
            out += len(mono)
            if last and out == 0:
                raise BadClip(f"too short to resample ({frames} frames at {sr} Hz)")
            if len(mono):
                yield _clipped(mono, subtype, stream is not None, [])
            if last:
                return


def resample(x: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 at `to_rate`: soxr's band-limited HQ filter, the project's one resampler."""
    return soxr.resample(x, from_rate, to_rate, quality="HQ").astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16 with soundfile's scale, so 16-bit sources come back exactly."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def fit_length(x: np.ndarray, n: int = CLIP_SAMPLES) -> np.ndarray:
    """Zero-pad short clips at the end and cut long ones, like the reference trainer."""
    if len(x) >= n:
        return x[:n]
    return np.pad(x, (0, n - len(x)))


def seconds_text(n: int, sample_rate: int = SAMPLE_RATE) -> str:
    """16000 -> '1 s', 24000 -> '1.5 s': a window's length as the user gives it."""
    return f"{n / sample_rate:g} s"


def decode_clip(path: str | Path, n: int = CLIP_SAMPLES) -> tuple[np.ndarray, list[str]]:
    """One training clip (int16, `n` samples: the prepared dataset's window) and what had to be
    repaired to get it."""
    path = Path(path)
    notes: list[str] = []
    pcm = None
    if path.suffix.lower() == ".wav":
        _check_file(path)
        if why := _wav_truncated(path):
            raise BadClip(why)
        try:  # the common case: 16 kHz mono 16-bit, read as int16 without a float round trip
            with sf.SoundFile(os.fsencode(path)) as f:
                if (f.samplerate, f.channels, f.subtype) == (SAMPLE_RATE, 1, "PCM_16"):
                    pcm = f.read(n + 1, dtype="int16")
                    n_total = f.frames
        except (sf.SoundFileError, RuntimeError, ValueError, OSError):
            pcm = None  # read_audio below reports it properly
    if pcm is None:
        mono = read_audio(path, max_seconds=(n + 1) / SAMPLE_RATE, notes=notes)
        pcm = to_int16(mono)
        n_total = len(pcm)
    if len(pcm) == 0:
        raise BadClip("no audio frames")
    if n_total > n:
        notes.append(f"cut to {seconds_text(n)}")
    elif n_total < n:
        notes.append(f"padded to {seconds_text(n)}")
    return fit_length(pcm, n), notes


def decode_or_reason(path: str, n: int = CLIP_SAMPLES) -> tuple[bytes | None, list[str] | str]:
    """For worker processes: (int16 bytes, notes) or (None, reason). Never raises for bad audio.

    Anything else a decoder throws is a reason too: one odd file in 100 000 must not stop the
    whole preparation (and a worker's exception would end the pool).
    """
    try:
        pcm, notes = decode_clip(path, n)
        return pcm.astype("<i2", copy=False).tobytes(), notes
    except BadClip as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - the reason names the exception, the skip list the file
        first = (str(e).splitlines() or [""])[0][:100]
        return None, f"could not be decoded ({type(e).__name__}: {first})"
