"""Deterministic synthetic keyword-spotting dataset in Google Speech Commands layout.

Why: the search pipeline needs data that exercises the real loader (class folders,
``validation_list.txt``/``testing_list.txt``, ``_background_noise_``) without a
2 GB download, and that is learnable but not trivial, so hyperparameters matter.

Each class word is a fixed template of phones (vowels, approximants, nasals,
fricatives, bursts, closures) plus a pitch contour.  A glottal pulse train
(Rosenberg pulse, continuous phase) is shaped per STFT frame by a cascade of
formant resonances that glide between phone targets; frication is filtered
noise.  Speakers differ in pitch, vocal tract length, rate, voice quality,
loudness and microphone colour; clips differ in onset, timing, pitch and
formant jitter, SNR and background noise.  Several words share vowels
(on/off, no/go/down, yes/left, right/stop) so they are confusable.

Only numpy and the stdlib ``wave`` module are used.  Every random draw comes
from ``numpy.random.default_rng`` seeded by a tuple such as
``(seed, TAG, speaker, class, clip)``, so output is byte-identical for the same
arguments and independent of generation order.

CLI: ``python -m audionet_ray.demo_data OUT_DIR [--speakers N] [--seed S]
[--takes K]`` (``--takes`` was ``--clips-per-speaker``, which still works).
"""

from __future__ import annotations

import argparse
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import log

logger = log.get(__name__)

SR = 16_000
CLIP_SAMPLES = SR
BACKGROUND_SECONDS = 10
N_FFT = 512
HOP = N_FFT // 4
MAX_WORD_SECONDS = 0.85
_FREQS = np.fft.rfftfreq(N_FFT, 1.0 / SR)

# Domain tags keep the seed sequences of different purposes apart.
_TAG_IDS, _TAG_SPLIT, _TAG_SPEAKER, _TAG_CLIP, _TAG_BACKGROUND = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Phone:
    """One articulation target.

    kind: "V" voiced sonorant (vowel, approximant, nasal), "F" fricative noise,
    "B" plosive burst, "C" closure (silence).  ``formants`` (F1, F2, F3, Hz, adult
    male) for voiced phones, ``noise`` (centre Hz, bandwidth Hz) for noise phones.
    ``amp`` is the level relative to a vowel.
    """

    kind: str
    amp: float
    formants: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noise: tuple[float, float] = (0.0, 0.0)


PHONES: dict[str, Phone] = {
    # vowels (roughly Peterson & Barney)
    "iy": Phone("V", 1.0, (280, 2250, 2900)),
    "eh": Phone("V", 1.0, (550, 1800, 2500)),
    "ah": Phone("V", 1.0, (640, 1190, 2390)),
    "aa": Phone("V", 1.0, (730, 1100, 2450)),
    "ao": Phone("V", 1.0, (590, 880, 2540)),
    "ow": Phone("V", 1.0, (500, 900, 2400)),
    "uw": Phone("V", 1.0, (320, 870, 2250)),
    # approximants and nasals: voiced but weaker
    "y": Phone("V", 0.6, (260, 2100, 3000)),
    "l": Phone("V", 0.5, (360, 1000, 2700)),
    "r": Phone("V", 0.55, (420, 1150, 1650)),
    "n": Phone("V", 0.3, (260, 1400, 2600)),
    # unvoiced
    "s": Phone("F", 0.35, noise=(5800, 2500)),
    "f": Phone("F", 0.12, noise=(4500, 6000)),
    "t": Phone("B", 0.55, noise=(4200, 3000)),
    "p": Phone("B", 0.35, noise=(900, 1600)),
    "d": Phone("B", 0.35, noise=(3800, 3000)),
    "g": Phone("B", 0.4, noise=(1900, 900)),
    "_": Phone("C", 0.0),
}


@dataclass(frozen=True)
class Word:
    """A class template: phones with durations (s at rate 1) and a pitch contour."""

    phones: tuple[tuple[str, float], ...]
    pitch: tuple[float, ...]  # f0 multipliers spread evenly over the word


WORDS: dict[str, Word] = {
    "yes": Word((("y", 0.10), ("eh", 0.22), ("s", 0.22)), (1.1, 1.05, 0.85)),
    "no": Word((("n", 0.10), ("ow", 0.24), ("uw", 0.16)), (1.15, 1.0, 0.8)),
    "up": Word((("ah", 0.30), ("_", 0.10), ("p", 0.05)), (1.0, 1.05, 0.95)),
    "down": Word((("d", 0.04), ("aa", 0.20), ("uw", 0.14), ("n", 0.14)), (1.2, 1.0, 0.8)),
    "left": Word((("l", 0.10), ("eh", 0.22), ("f", 0.12), ("_", 0.05), ("t", 0.05)), (1.0, 1.0, 0.9)),
    "right": Word((("r", 0.12), ("aa", 0.18), ("iy", 0.14), ("_", 0.06), ("t", 0.05)), (0.9, 1.1, 0.9)),
    "on": Word((("ao", 0.28), ("n", 0.20)), (0.95, 1.05, 0.9)),
    "off": Word((("ao", 0.28), ("f", 0.22)), (0.95, 1.05, 0.95)),
    "stop": Word((("s", 0.16), ("_", 0.05), ("t", 0.04), ("aa", 0.22), ("_", 0.08), ("p", 0.05)), (1.0, 1.1, 0.9)),
    "go": Word((("_", 0.04), ("g", 0.04), ("ow", 0.24), ("uw", 0.16)), (0.9, 1.1, 1.0)),
}
CLASSES: tuple[str, ...] = tuple(WORDS)
BACKGROUND_KINDS: tuple[str, ...] = ("white_noise", "pink_noise", "brown_noise", "running_tap")


@dataclass(frozen=True)
class Speaker:
    """Per-speaker voice: stays fixed across all words and clips of that speaker."""

    f0: float  # base pitch, Hz
    tract: float  # formant scale (shorter vocal tract -> higher formants)
    rate: float  # speaking rate (>1 faster)
    open_quotient: float  # glottal open phase; higher = softer, breathier voice
    breath: float  # aspiration noise level
    mic_tilt: float  # dB per octave around 1 kHz (microphone/channel colour)
    loudness: float


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def speaker_ids(n: int, seed: int) -> list[str]:
    """Unique 8-hex-digit ids; the first k are the same whatever n is."""
    rng = _rng(seed, _TAG_IDS)
    ids: list[str] = []
    while len(ids) < n:
        sid = f"{int(rng.integers(0, 2**32)):08x}"
        if sid not in ids:
            ids.append(sid)
    return ids


def split_speakers(ids: list[str], seed: int) -> dict[str, str]:
    """Map speaker id -> "train"/"validation"/"testing" (~10 % each held out)."""
    if len(ids) < 3:
        raise ValueError("need at least 3 speakers (one each for train/validation/test)")
    n_held = max(1, round(0.1 * len(ids)))
    order = _rng(seed, _TAG_SPLIT, len(ids)).permutation(len(ids))
    split = {ids[i]: "train" for i in order}
    for i in order[:n_held]:
        split[ids[i]] = "validation"
    for i in order[n_held : 2 * n_held]:
        split[ids[i]] = "testing"
    return split


def make_speaker(seed: int, index: int) -> Speaker:
    """Voice of speaker ``index``; seeded by (seed, index) only, so it survives a change of --speakers."""
    rng = _rng(seed, _TAG_SPEAKER, index)
    f0 = float(np.exp(rng.uniform(np.log(90), np.log(260))))
    # Higher voices tend to have shorter vocal tracts, but only loosely.
    size = (np.log(f0) - np.log(90)) / (np.log(260) - np.log(90))
    tract = float(np.clip(0.85 + 0.35 * (0.6 * size + 0.4 * rng.uniform()), 0.85, 1.2))
    return Speaker(
        f0=f0,
        tract=tract,
        rate=float(rng.uniform(0.8, 1.25)),
        open_quotient=float(rng.uniform(0.45, 0.75)),
        breath=float(rng.uniform(0.02, 0.15)),
        mic_tilt=float(rng.uniform(-3.0, 3.0)),
        loudness=float(rng.uniform(0.3, 0.95)),
    )


def _stft(x: np.ndarray) -> np.ndarray:
    """Frame-wise spectra, so filters can change every 8 ms (gliding formants) without an IIR loop."""
    win = np.hanning(N_FFT + 1)[:-1]
    n_frames = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    return np.fft.rfft(x[idx] * win, axis=1)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add; frames r, r+4, ... never overlap, so add them in 4 slabs."""
    win = np.hanning(N_FFT + 1)[:-1]
    frames = np.fft.irfft(spec, n=N_FFT, axis=1) * win
    ratio = N_FFT // HOP
    out = np.zeros(length)
    for r in range(ratio):
        slab = frames[r::ratio].reshape(-1)
        start = r * HOP
        out[start : start + len(slab)] += slab
    return out / 1.5  # sum of hann^2 at 75 % overlap


def _resonance(freqs: np.ndarray, centre: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Magnitude of a 2-pole resonator normalised to 1 at DC; broadcasts over frames."""
    c2 = centre**2
    return c2 / np.sqrt((c2 - freqs**2) ** 2 + (bw * freqs) ** 2)


def _unit_power(h: np.ndarray) -> np.ndarray:
    return h / np.sqrt(np.mean(h**2, axis=-1, keepdims=True) + 1e-12)


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    w = np.hanning(n + 2)[1:-1]
    return np.convolve(x, w / w.sum(), mode="same")


@dataclass(frozen=True)
class _Timeline:
    """Where each phone of one utterance sits, per sample and per STFT frame; shared by every layer."""

    phones: list[Phone]
    bounds: np.ndarray  # phone boundaries, s
    centres: np.ndarray  # phone midpoints, s
    pad: int  # samples of room on each side for filter tails and STFT edges
    n: int  # samples including both pads
    t: np.ndarray  # time of each sample, s (negative in the leading pad)
    which: np.ndarray  # index of the phone sounding at each sample
    inside: np.ndarray  # whether each sample lies within the word
    ft: np.ndarray  # time of each STFT frame's centre, s


def _timeline(tmpl: Word, spk: Speaker, rng: np.random.Generator) -> _Timeline:
    """Jittered phone durations at the speaker's rate, capped so every word fits in a clip."""
    phones = [PHONES[p] for p, _ in tmpl.phones]
    durs = np.array([d for _, d in tmpl.phones]) / spk.rate
    durs *= rng.uniform(0.85, 1.15, len(durs)) * rng.uniform(0.93, 1.07)
    durs *= min(1.0, MAX_WORD_SECONDS / durs.sum())
    bounds = np.concatenate([[0.0], np.cumsum(durs)])
    pad = N_FFT
    n = int(round(bounds[-1] * SR)) + 2 * pad
    t = (np.arange(n) - pad) / SR
    n_frames = 1 + (n - N_FFT) // HOP
    return _Timeline(
        phones=phones,
        bounds=bounds,
        centres=(bounds[:-1] + bounds[1:]) / 2,
        pad=pad,
        n=n,
        t=t,
        which=np.clip(np.searchsorted(bounds, t, side="right") - 1, 0, len(phones) - 1),
        inside=(t >= 0) & (t < bounds[-1]),
        ft=(np.arange(n_frames) * HOP + N_FFT / 2 - pad) / SR,
    )


def _level_tracks(tl: _Timeline) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample voice and noise levels, smoothed so segments ramp instead of click."""
    kind = np.array([p.kind for p in tl.phones])
    amps = np.array([p.amp for p in tl.phones])
    voice_amp = np.where((kind == "V")[tl.which] & tl.inside, amps[tl.which], 0.0)
    voice_amp = _smooth(voice_amp, int(0.02 * SR))
    noise_amp = np.where(np.isin(kind, ["F", "B"])[tl.which] & tl.inside, amps[tl.which], 0.0)
    noise_amp = _smooth(noise_amp, int(0.006 * SR))
    return voice_amp, noise_amp


def _glottal_source(
    tmpl: Word, spk: Speaker, tl: _Timeline, voice_amp: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Glottal flow derivative plus breath: pitch is template contour x speaker x clip jitter, plus slow wobble."""
    t, n = tl.t, tl.n
    contour = np.asarray(tmpl.pitch)
    contour = 1.0 + (contour - 1.0) * rng.uniform(0.6, 1.4)
    f0 = spk.f0 * rng.uniform(0.9, 1.1) * np.interp(t, np.linspace(0, tl.bounds[-1], len(contour)), contour)
    f0 *= 1.0 + 0.015 * np.sin(2 * np.pi * rng.uniform(3, 7) * t + rng.uniform(0, 2 * np.pi))
    phase = np.cumsum(f0 / SR) + rng.uniform()
    x = (phase % 1.0) / spk.open_quotient
    tp = 0.65  # Rosenberg pulse: smooth opening, abrupt closure
    flow = np.where(x < tp, 0.5 * (1 - np.cos(np.pi * x / tp)), np.cos(0.5 * np.pi * (x - tp) / (1 - tp)))
    flow[x >= 1.0] = 0.0
    src = np.diff(flow, prepend=flow[0])
    src /= np.sqrt(np.mean(src**2)) + 1e-12
    return (src + spk.breath * rng.standard_normal(n)) * voice_amp


def _formant_voice(
    tl: _Timeline, spk: Speaker, src: np.ndarray, voice_amp: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Shape the source by formant tracks that glide between voiced-phone targets (coarticulation); vowel RMS 1."""
    phones, ft = tl.phones, tl.ft
    voiced = [i for i, p in enumerate(phones) if p.kind == "V"]
    scale = spk.tract * rng.uniform(0.96, 1.04, 3)
    tracks = np.stack(
        [np.interp(ft, tl.centres[voiced], [phones[i].formants[k] for i in voiced]) * scale[k] for k in range(3)]
        + [np.full(len(ft), 3500.0 * spk.tract), np.full(len(ft), 4500.0 * spk.tract)],
        axis=1,
    )
    bws = np.array([80.0, 100.0, 150.0, 250.0, 300.0])
    h = np.prod(_resonance(_FREQS[None, None, :], tracks[:, :, None], bws[None, :, None]), axis=1)
    voice = _istft(_stft(src) * _unit_power(h), tl.n)
    vrms = np.sqrt(np.mean(voice[voice_amp > 0.5 * voice_amp.max()] ** 2)) + 1e-12
    return voice / vrms


def _frication(tl: _Timeline, spk: Speaker, noise_amp: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Filtered noise where each frame takes the filter of the nearest noise phone; None for an all-voiced word."""
    phones, ft = tl.phones, tl.ft
    noisy = [i for i, p in enumerate(phones) if p.kind in "FB"]
    if not noisy:
        return None
    nearest = np.array(noisy)[np.argmin(np.abs(ft[:, None] - tl.centres[noisy][None, :]), axis=1)]
    fc = np.array([phones[i].noise[0] for i in nearest]) * spk.tract * rng.uniform(0.9, 1.1)
    bw = np.array([phones[i].noise[1] for i in nearest])
    hn = _resonance(_FREQS[None, :], fc[:, None], bw[:, None]) * (_FREQS[None, :] / (_FREQS[None, :] + 300.0))
    return _istft(_stft(rng.standard_normal(tl.n) * noise_amp) * _unit_power(hn), tl.n)


def render_word(word: str, spk: Speaker, rng: np.random.Generator) -> np.ndarray:
    """Synthesize one utterance (float, arbitrary length, vowel RMS about 1).

    The steps draw from ``rng`` in a fixed order (timing, pitch, breath, formants,
    frication): keep it, or every generated dataset changes.
    """
    tmpl = WORDS[word]
    tl = _timeline(tmpl, spk, rng)
    voice_amp, noise_amp = _level_tracks(tl)
    src = _glottal_source(tmpl, spk, tl, voice_amp, rng)
    voice = _formant_voice(tl, spk, src, voice_amp, rng)
    fric = _frication(tl, spk, noise_amp, rng)
    if fric is not None:
        voice += fric
    return voice[tl.pad : -tl.pad]


def _colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    spec *= 1.0 / np.maximum(f, 20.0) ** (exponent / 2)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n=n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def make_background(seed: int) -> dict[str, np.ndarray]:
    """Long noise recordings for ``_background_noise_`` (float, peak <= ~0.5)."""
    n = BACKGROUND_SECONDS * SR
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(BACKGROUND_KINDS):
        rng = _rng(seed, _TAG_BACKGROUND, i)
        if name == "running_tap":
            hiss = _colored_noise(rng, n, 0.0)
            spec = np.fft.rfft(hiss)
            f = np.fft.rfftfreq(n, 1.0 / SR)
            spec *= _resonance(f, np.array(2500.0), np.array(3000.0)) * (f / (f + 500.0))
            hiss = np.fft.irfft(spec, n=n)
            gurgle = 1.0 + 0.5 * _smooth(_colored_noise(rng, n, 0.0), 800) * 20
            t = np.arange(n) / SR
            hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3, 5))
            x = hiss / np.std(hiss) * np.clip(gurgle, 0.2, None) + 0.3 * hum
        else:
            x = _colored_noise(rng, n, {"white_noise": 0.0, "pink_noise": 1.0, "brown_noise": 2.0}[name])
        out[name] = 0.5 * x / np.max(np.abs(x))
    return out


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")


def make_clip(
    word: str, spk: Speaker, background: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """One 1 s int16 clip: word at a random onset, noise, channel colour, random peak level."""
    utt = render_word(word, spk, rng)[: CLIP_SAMPLES - 1600]
    clip = np.zeros(CLIP_SAMPLES)
    onset = int(rng.integers(800, CLIP_SAMPLES - len(utt) - 800 + 1))
    clip[onset : onset + len(utt)] = utt
    speech_rms = np.sqrt(np.mean(utt**2)) + 1e-12

    noise = _colored_noise(rng, CLIP_SAMPLES, rng.uniform(0.0, 1.5))
    clip += noise * speech_rms * 10 ** (-rng.uniform(5.0, 25.0) / 20)
    if rng.uniform() < 0.3:
        bg = background[int(rng.integers(len(background)))]
        start = int(rng.integers(0, len(bg) - CLIP_SAMPLES))
        seg = bg[start : start + CLIP_SAMPLES]
        clip += seg / (np.std(seg) + 1e-12) * speech_rms * 10 ** (-rng.uniform(5.0, 20.0) / 20)

    spec = np.fft.rfft(clip)
    f = np.fft.rfftfreq(CLIP_SAMPLES, 1.0 / SR)
    spec *= 10 ** (spk.mic_tilt * np.log2(np.maximum(f, 50.0) / 1000.0) / 20)
    spec[0] = 0.0
    clip = np.fft.irfft(spec, n=CLIP_SAMPLES)
    level = spk.loudness * rng.uniform(0.6, 1.05)
    return _to_int16(clip * min(level, 0.98) / np.max(np.abs(clip)))


def write_wav(path: Path, samples: np.ndarray) -> None:
    """16-bit mono PCM via the stdlib, so the bytes depend only on the samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


_README = """\
Synthetic keyword-spotting demo data (NOT real speech).

Generated by audionet_ray.corpus.demo_data with seed={seed}, speakers={speakers},
clips_per_speaker={clips}:
  python -m audionet_ray.demo_data OUT_DIR --seed {seed} --speakers {speakers} --takes {clips}

Layout follows Google Speech Commands: one folder per word ({classes}),
files <speaker>_nohash_<n>.wav (16 kHz mono int16, 16000 samples),
_background_noise_/ with {n_bg} long noise files, and validation_list.txt /
testing_list.txt (speaker-disjoint; everything else is training data).

Words are formant-synthesised phone sequences (glottal pulses through formant
resonances, filtered-noise fricatives and bursts) with per-speaker pitch, vocal
tract length, rate and voice quality, and per-clip timing/pitch jitter, random
onset and additive noise at 5-25 dB SNR.  The same arguments always give
byte-identical files.
"""


def generate(out_dir: str | Path, speakers: int = 24, seed: int = 0, clips_per_speaker: int = 3) -> Path:
    """Write the dataset under ``out_dir`` and return it as a Path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = speaker_ids(speakers, seed)
    split = split_speakers(ids, seed)

    background = make_background(seed)
    for name, x in background.items():
        write_wav(out / "_background_noise_" / f"{name}.wav", _to_int16(x))
    bg_list = list(background.values())

    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    for s, sid in enumerate(ids):
        spk = make_speaker(seed, s)
        for c, word in enumerate(CLASSES):
            for k in range(clips_per_speaker):
                clip = make_clip(word, spk, bg_list, _rng(seed, _TAG_CLIP, s, c, k))
                rel = f"{word}/{sid}_nohash_{k}.wav"
                write_wav(out / rel, clip)
                if split[sid] in lists:
                    lists[split[sid]].append(rel)

    for name, entries in lists.items():
        (out / f"{name}_list.txt").write_text("".join(f"{e}\n" for e in sorted(entries)))
    (out / "README.txt").write_text(
        _README.format(
            seed=seed,
            speakers=speakers,
            clips=clips_per_speaker,
            classes=", ".join(CLASSES),
            n_bg=len(background),
        )
    )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m audionet_ray.demo_data", description=__doc__.split("\n")[0],
                                formatter_class=log.HelpFormatter)
    p.add_argument("out_dir", type=Path, help="output folder (created; files of the same names are replaced)")
    p.add_argument("--speakers", type=int, default=24, help="number of speakers, at least 3")
    p.add_argument("--seed", type=int, default=0, help="the dataset's seed: the same seed, the same bytes")
    p.add_argument("--takes", type=int, default=3, help="clips per speaker and word, as speech_data's --takes")
    log.add_option(p)
    log.add_renamed(p, "--clips-per-speaker", "--takes", type=int)
    a = p.parse_args(argv)
    log.setup(a.log_level)
    if a.speakers < 3 or a.takes < 1:
        p.error("need --speakers >= 3 and --takes >= 1")
    t0 = time.perf_counter()
    generate(a.out_dir, speakers=a.speakers, seed=a.seed, clips_per_speaker=a.takes)
    n = a.speakers * a.takes * len(CLASSES)
    secs = time.perf_counter() - t0
    logger.info(f"demo_data: {len(CLASSES)} classes, {n} clips, {a.speakers} speakers -> {a.out_dir} in {secs:.1f} s")


if __name__ == "__main__":
    main()
