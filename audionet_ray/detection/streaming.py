"""Streaming evaluation: the bundle judged the way keyword spotters are judged.

Clip accuracy says little about a detector that listens all day. Here long streams are built
deterministically (seeded) from one split of a prepared dataset: keyword clips at random times
among unknown words, silent gaps, and the dataset's `_background_noise_` underneath at several
levels, with the true time of every keyword; plus streams of background noise alone. The same
sliding-window detector `predict` uses (predict.scan, then Windows.detections) runs over them
once, and its window probabilities are read at every threshold:

- false accepts per hour (FA/h): detections that match no spoken keyword (same label, within
  `tolerance_s` of its clip) per hour of keyword-free audio (all stream time outside keyword
  clips); a detection repeated within `refractory_s` of the same label counts once;
- false-reject rate (FRR) per keyword: spoken keywords no detection matched;
- the DET curve (FRR against FA/h as the threshold moves) and the threshold that meets a target
  FA/h with the fewest misses.

With H hours of keyword-free audio and no false accept seen, the true rate may still be up to
3/H per hour (95 %, Poisson): `enough_audio` says whether H supports the target. The noise is the
dataset's own, which training also mixed in (augmentation, _silence_ clips): FA/h on it is
optimistic for unseen rooms.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .bundle import NOT_KEYWORDS, Bundle
from ..corpus.discover import UNKNOWN, DatasetError
from .predict import Detection, Windows, scan
from ..pipeline.dataset import DEFAULT_TRAIN_RATIO, PreparedDataset, read_noise

POISSON_95_ZERO = 2.996  # -ln(0.05): 95 % upper bound of a rate when no event was seen, x 1/exposure


@dataclass
class StreamOptions:
    """How streams are built and scored; recorded with every result so a figure can be reproduced."""

    seed: int = 0
    minutes: float = 10.0  # at most this much keyword stream (fewer when the split runs out of clips)
    stream_s: float = 60.0  # one stream's length: streams are scanned one at a time
    gap_s: tuple[float, float] = (0.3, 1.5)  # silence (noise only) between two clips, uniform
    noise_dbfs: tuple[float, ...] = (-50.0, -40.0, -30.0)  # background RMS levels, one per stream in turn
    align_s: float = 0.0  # > 0: clips start on this grid (a stride: one window sees each clip whole), for tests
    tolerance_s: float = 0.5  # a detection this far outside a keyword's clip still matches it
    refractory_s: float = 1.0  # repeats of a label within this count once
    stride_ms: float = 250.0  # the detector's settings (as predict's options)
    average_ms: float = 500.0
    suppress_ms: float = 1000.0
    rule: str = "top"  # predict.RULES: how a window says a keyword
    # Keyword-free speech added until the streams hold this many hours without a keyword (0: none):
    # the split's other words (_unknown_, every word not a keyword) drawn again in new orders, gaps,
    # levels and noise. 1 FA/h can only be shown on about 3 h (POISSON_95_ZERO).
    keyword_free_hours: float = 0.0
    filler_gain_db: tuple[float, float] = (-15.0, 3.0)  # level of each other word in the keyword-free speech


# Calibration and evaluate --streaming: enough to show 1 FA/h. AUDIONET_KEYWORD_FREE_HOURS sets
# another default (the test suite's small datasets and models use minutes, not hours).
KEYWORD_FREE_HOURS_ENV = "AUDIONET_KEYWORD_FREE_HOURS"
DEFAULT_KEYWORD_FREE_HOURS = float(os.environ.get(KEYWORD_FREE_HOURS_ENV, "3.0"))


@dataclass
class Event:
    label: str
    start_s: float
    end_s: float


@dataclass
class Stream:
    audio: np.ndarray  # float32 in [-1, 1] at 16 kHz
    keywords: list[Event]  # the truth: every keyword clip, in time order
    noise_dbfs: float | None  # background level under it (None: the dataset has no noise)
    kind: str  # "mixed" (clips and gaps), "noise" (background noise alone) or "speech" (other words only)

    @property
    def seconds(self) -> float:
        return len(self.audio) / 16_000

    def summary(self) -> "StreamSummary":
        """The stream without its audio: what scoring needs once the detector has run over it."""
        return StreamSummary(self.seconds, self.keywords, self.noise_dbfs, self.kind)


@dataclass
class StreamSummary:
    seconds: float
    keywords: list[Event]
    noise_dbfs: float | None
    kind: str


# ----------------------------------------------------------------------------- data

def split_clips(prepared: Path, part: str, train_ratio: float = DEFAULT_TRAIN_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """(int16 clips (N, clip_samples), label ids) of "test", "val" or "train" (`PreparedDataset.arrays`)."""
    return PreparedDataset.open(prepared).arrays(part, train_ratio)


def dataset_noise(prepared: Path) -> np.ndarray:
    """The dataset's background noise, all of it (int16, all files end to end; empty when it has none)."""
    return read_noise(prepared, cap_s=None)


# ----------------------------------------------------------------------------- streams

def _noise_bed(noise: np.ndarray, n: int, dbfs: float | None, rng: np.random.Generator) -> np.ndarray:
    """n samples of the background noise from a random offset (looping), at RMS `dbfs`."""
    if dbfs is None or not len(noise):
        return np.zeros(n, np.float32)
    start = int(rng.integers(len(noise)))
    seg = noise[(start + np.arange(n)) % len(noise)].astype(np.float32) / 32768  # looping, no copy of it all
    rms = float(np.sqrt(np.mean(np.square(seg, dtype=np.float64)))) or 1.0
    return seg * np.float32(10 ** (dbfs / 20) / rms)


def build_streams(clips: np.ndarray, labels: list[str], keywords: set[str], noise: np.ndarray,
                  opts: StreamOptions) -> list[Stream]:
    """Every stream of `iter_streams`, in memory (short evaluations and tests)."""
    return list(iter_streams(clips, labels, keywords, noise, opts))


def iter_streams(clips: np.ndarray, labels: list[str], keywords: set[str], noise: np.ndarray,
                 opts: StreamOptions):
    """Mixed streams of the clips (keywords and everything else, shuffled), noise-only streams, and
    keyword-free speech up to `opts.keyword_free_hours`; one at a time, so hours never sit in memory.

    `clips` are int16 clips of one window each, `labels` their class names; clips whose label is in
    `keywords` are the truth, all others (unknown words, words the model was not trained on,
    _silence_) are keyword-free filler. Same inputs and options, same streams.
    """
    rng = np.random.default_rng(opts.seed)
    sr, clip_s = 16_000, clips.shape[1] / 16_000 if len(clips) else 1.0
    levels = list(opts.noise_dbfs) if len(noise) else [None]
    order = rng.permutation(len(clips))
    budget = opts.minutes * 60
    free_s = 0.0  # keyword-free seconds so far
    count = 0
    i = 0
    while i < len(order) and budget > 0:
        # one stream: clips with gaps until it is stream_s long (or the clips or minutes run out)
        placed: list[tuple[int, int]] = []
        snap = (lambda t: math.ceil(t / opts.align_s - 1e-9) * opts.align_s) if opts.align_s > 0 else (lambda t: t)
        t = snap(rng.uniform(*opts.gap_s))
        while i < len(order) and t + clip_s <= min(opts.stream_s, budget):
            placed.append((order[i], int(round(t * sr))))
            t = snap(t + clip_s + rng.uniform(*opts.gap_s))
            i += 1
        if not placed:
            break
        n = int(round(t * sr))
        dbfs = levels[count % len(levels)]
        audio = _noise_bed(noise, n, dbfs, rng)
        events = []
        for k, at in placed:
            audio[at:at + clips.shape[1]] += clips[k].astype(np.float32) / 32768
            if labels[k] in keywords:
                events.append(Event(labels[k], at / sr, (at + clips.shape[1]) / sr))
        budget -= n / sr
        free_s += n / sr - sum(e.end_s - e.start_s for e in events)
        count += 1
        yield Stream(np.clip(audio, -1, 1), events, dbfs, "mixed")
    if len(noise):
        n_stream = int(opts.stream_s * sr)
        for dbfs in opts.noise_dbfs:  # every second of the dataset's noise, at each level
            base = noise.astype(np.float32) / 32768
            rms = float(np.sqrt(np.mean(np.square(base, dtype=np.float64)))) or 1.0
            base = base * np.float32(10 ** (dbfs / 20) / rms)
            for s in range(0, len(base), n_stream):
                part = base[s:s + n_stream]
                if len(part) >= max(sr, clips.shape[1]):  # shorter than one window: nothing to scan
                    free_s += len(part) / sr
                    yield Stream(np.clip(part, -1, 1), [], dbfs, "noise")
    yield from _keyword_free_speech(clips, labels, keywords, noise, opts, rng, free_s)


def _keyword_free_speech(clips: np.ndarray, labels: list[str], keywords: set[str], noise: np.ndarray,
                         opts: StreamOptions, rng: np.random.Generator, free_s: float):
    """Streams of the split's other words, end to end with short gaps, until the keyword-free time
    reaches opts.keyword_free_hours. Clips are drawn again (new neighbours, levels and noise):
    hours of them hold fewer distinct words than hours of new speech would, which
    evaluate_streams' note says."""
    others = np.array([i for i, lab in enumerate(labels) if lab not in keywords], dtype=np.int64)
    need = opts.keyword_free_hours * 3600 - free_s
    if need <= 0 or not len(others):
        return
    sr, n_clip = 16_000, clips.shape[1]
    levels = list(opts.noise_dbfs) if len(noise) else [None]
    count = 0
    while need > 0:
        seconds = min(opts.stream_s, max(need, 1.5 * n_clip / sr))
        n = int(seconds * sr)
        dbfs = levels[count % len(levels)]
        audio = _noise_bed(noise, n, dbfs, rng)
        at = int(rng.uniform(0.0, 0.5) * sr)
        while at + n_clip <= n:
            k = others[rng.integers(len(others))]
            gain = np.float32(10 ** (rng.uniform(*opts.filler_gain_db) / 20) / 32768)
            audio[at:at + n_clip] += clips[k].astype(np.float32) * gain
            at += n_clip + int(rng.uniform(-0.2, 0.6) * sr)  # words may run into each other
        need -= n / sr
        count += 1
        yield Stream(np.clip(audio, -1, 1), [], dbfs, "speech")


# ----------------------------------------------------------------------------- scoring

def count_once(dets: list[Detection], refractory_s: float) -> list[Detection]:
    """Detections in time order, less those within refractory_s after a counted one of the same label."""
    kept: list[Detection] = []
    last: dict[str, float] = {}
    for d in sorted(dets, key=lambda d: d.time_s):
        if d.label in last and d.time_s - last[d.label] < refractory_s:
            continue
        kept.append(d)
        last[d.label] = d.time_s
    return kept


def match(dets: list[Detection], truth: list[Event], tolerance_s: float) -> tuple[list[bool], int]:
    """Which true keywords a detection found (one detection finds at most one), and how many
    detections found none (false accepts). A detection matches the nearest unfound keyword of
    its label whose clip, widened by tolerance_s, holds its time."""
    found = [False] * len(truth)
    false_accepts = 0
    for d in dets:
        best, best_dist = None, math.inf
        for j, e in enumerate(truth):
            if found[j] or e.label != d.label or not (e.start_s - tolerance_s <= d.time_s <= e.end_s + tolerance_s):
                continue
            dist = abs(d.time_s - (e.start_s + e.end_s) / 2)
            if dist < best_dist:
                best, best_dist = j, dist
        if best is None:
            false_accepts += 1
        else:
            found[best] = True
    return found, false_accepts


THRESHOLDS = tuple(float(t) for t in np.round(np.concatenate([np.arange(0.05, 0.99, 0.01),
                                                               [0.99, 0.995, 0.998, 0.999]]), 4))


def _judged(labels: list[str] | None, spoken: dict) -> list[str] | None:
    return None if labels is None else [lab if lab in spoken else UNKNOWN for lab in labels]


def score(windows: list[Windows], streams: list, keywords: list[str], opts: StreamOptions,
          thresholds: tuple[float, ...] = THRESHOLDS) -> dict:
    """FA/h and FRR (overall and per keyword) at every threshold, from one pass of the detector."""
    total_s = sum(s.seconds for s in streams)
    keyword_s = sum(e.end_s - e.start_s for s in streams for e in s.keywords)
    free_h = (total_s - keyword_s) / 3600
    spoken = {k: sum(e.label == k for s in streams for e in s.keywords) for k in keywords}
    # A word that is not judged is never a detection, nor does it suppress one: read as _unknown_.
    judged = [replace(w, labels=_judged(w.labels, spoken), keyword_labels=_judged(w.keyword_labels, spoken))
              for w in windows]
    curve = []
    for th in thresholds:
        fa, missed = 0, {k: 0 for k in keywords}
        for w, s in zip(judged, streams):
            dets = count_once(w.detections(th, opts.suppress_ms, opts.rule), opts.refractory_s)
            found, n_fa = match(dets, s.keywords, opts.tolerance_s)
            fa += n_fa
            for e, f in zip(s.keywords, found):
                missed[e.label] += not f
        n_spoken = sum(spoken.values())
        curve.append({"threshold": th, "false_accepts": fa,
                      "fa_per_hour": fa / free_h if free_h > 0 else None,
                      "frr": sum(missed.values()) / n_spoken if n_spoken else None,
                      "frr_per_keyword": {k: (missed[k] / spoken[k] if spoken[k] else None) for k in keywords}})
    return {"thresholds": list(thresholds), "curve": curve, "keyword_free_hours": free_h,
            "total_hours": total_s / 3600, "spoken": spoken,
            "noise_only_hours": sum(s.seconds for s in streams if s.kind == "noise") / 3600}


def operating_point(result: dict, target_fa_per_hour: float) -> dict | None:
    """The lowest threshold whose FA/h is at most the target (fewest misses), or None if none is."""
    ok = [c for c in result["curve"] if c["fa_per_hour"] is not None and c["fa_per_hour"] <= target_fa_per_hour]
    return min(ok, key=lambda c: (c["frr"] if c["frr"] is not None else 0, c["threshold"])) if ok else None


def enough_audio(keyword_free_hours: float, target_fa_per_hour: float) -> tuple[bool, str]:
    """Whether the keyword-free audio can show the target rate, and a sentence saying so."""
    bound = POISSON_95_ZERO / keyword_free_hours if keyword_free_hours > 0 else math.inf
    if bound <= target_fa_per_hour:
        return True, (f"{keyword_free_hours:.2f} h of keyword-free audio: zero false accepts would bound the "
                      f"rate below {bound:.2g}/h (95 %)")
    need = POISSON_95_ZERO / target_fa_per_hour
    return False, (f"only {keyword_free_hours * 60:.1f} min of keyword-free audio: even zero false accepts "
                   f"only bound the rate below {bound:.2g}/h (95 %); {need:.1f} h are needed to show "
                   f"{target_fa_per_hour:g}/h: treat the FA/h figures as rough")


# ----------------------------------------------------------------------------- all together

@dataclass
class StreamingResult:
    split: str
    options: dict
    keywords: list[str]
    curve: list[dict]
    keyword_free_hours: float
    noise_only_hours: float
    total_hours: float
    spoken: dict[str, int]
    target_fa_per_hour: float
    operating_point: dict | None
    enough_audio: bool
    note: str
    streams: list[dict] = field(default_factory=list)  # per stream: kind, seconds, noise level, keywords

    def to_dict(self) -> dict:
        return asdict(self)


def stream_keywords(classes: list[str], data_classes: list[str], keywords: list[str] | None = None) -> list[str]:
    """The keywords a detector is judged on: the given ones, else every class of the model that is
    a class of the data and not _unknown_ / _silence_ (a classifier's words all count)."""
    chosen = keywords or [c for c in classes if c not in NOT_KEYWORDS and c in data_classes]
    return [k for k in chosen if k in classes and k in data_classes]


def scan_streams(bundle: Bundle, streams, opts: StreamOptions) -> tuple[list[Windows], list[StreamSummary]]:
    """The detector over each stream as it is made; only the windows' results are kept."""
    windows, kept = [], []
    for s in streams:
        windows.append(scan(bundle, s.audio, opts.stride_ms, opts.average_ms))
        kept.append(s.summary())
    return windows, kept


def evaluate_streams(bundle: Bundle, prepared: Path, split: str = "test", opts: StreamOptions | None = None,
                     target_fa_per_hour: float = 1.0, train_ratio: float = DEFAULT_TRAIN_RATIO,
                     keywords: list[str] | None = None) -> StreamingResult:
    """Build the streams of `split`, run the detector once per stream, score every threshold.
    `keywords`: judge only these (default: every keyword class the model and the data share)."""
    opts = opts or StreamOptions()
    data = PreparedDataset.open(prepared)
    if data.clip_samples != bundle.clip_samples:  # each clip must fit one window, whole
        raise DatasetError(f"{prepared}: clips of {data.clip_samples} samples, but the bundle's window is "
                           f"{bundle.clip_samples}: evaluate on data prepared with the bundle's window")
    clips, ids = data.arrays(split, train_ratio)
    if not len(clips):
        raise DatasetError(f"{prepared}: the {split} split has no clips to build streams from")
    labels = [data.classes[i] for i in ids]
    keywords = stream_keywords(bundle.classes, data.classes, keywords)
    if not keywords:
        raise DatasetError(f"{prepared}: none of the bundle's keywords ({', '.join(bundle.classes[:8])}) "
                           f"is a class of this dataset: evaluate on the data the model was trained for")
    noise = data.noise(cap_s=None)
    windows, streams = scan_streams(bundle, iter_streams(clips, labels, set(keywords), noise, opts), opts)
    r = score(windows, streams, keywords, opts)
    ok, note = enough_audio(r["keyword_free_hours"], target_fa_per_hour)
    filler = sum(s.kind == "speech" for s in streams)
    if filler:
        distinct = sum(lab not in keywords for lab in labels)
        note += (f"; {sum(s.seconds for s in streams if s.kind == 'speech') / 3600:.2f} h of it are the split's "
                 f"{distinct} non-keyword clips drawn again in new orders, levels and noise")
    if not len(noise):
        note += "; the dataset has no _background_noise_, so gaps are digital silence (easy)"
    return StreamingResult(
        split=split, options=asdict(opts), keywords=keywords, curve=r["curve"],
        keyword_free_hours=r["keyword_free_hours"], noise_only_hours=r["noise_only_hours"],
        total_hours=r["total_hours"], spoken=r["spoken"], target_fa_per_hour=target_fa_per_hour,
        operating_point=operating_point(r, target_fa_per_hour), enough_audio=ok, note=note,
        streams=[{"kind": s.kind, "seconds": round(s.seconds, 3), "noise_dbfs": s.noise_dbfs,
                  "keywords": len(s.keywords)} for s in streams])


class DetectorProbe:
    """A trial's cheap detector check: validation-speaker streams built once, scanned at each
    checkpoint, scored at every threshold; `frr_at_target` is what a keyword search ranks by.

    A few minutes of streams cannot show 1 FA/h (that needs hours: see enough_audio), so at the
    target the probe allows no false accept at all: the strictest reading, and a fair ranking.
    """

    def __init__(self, clips: np.ndarray, labels: list[str], keywords: list[str], noise: np.ndarray,
                 minutes: float, target_fa_per_hour: float, seed: int = 0):
        self.opts = StreamOptions(seed=seed, minutes=minutes, stream_s=30.0)
        self.keywords, self.target = keywords, target_fa_per_hour
        self.streams = build_streams(clips, labels, set(keywords), noise[: 16_000 * 60], self.opts)

    def measure(self, bundle: Bundle) -> dict:
        windows, _ = scan_streams(bundle, self.streams, self.opts)
        r = score(windows, self.streams, self.keywords, self.opts)
        point = operating_point(r, self.target)
        frr = None if point is None else point["frr"]  # None: no keyword was spoken (no clips of it here)
        return {"frr_at_target": 1.0 if frr is None else frr,
                "threshold_at_target": None if point is None else point["threshold"],
                "probe_minutes": r["total_hours"] * 60}
