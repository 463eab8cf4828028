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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .bundle import NOT_KEYWORDS, Bundle
from .discover import DatasetError
from .predict import Detection, Windows, scan
from .prepare import NOISE_FILE, load_manifest, pcm_from_binary

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
    kind: str  # "mixed" (clips and gaps) or "noise" (background noise alone)

    @property
    def seconds(self) -> float:
        return len(self.audio) / 16_000


# ----------------------------------------------------------------------------- data

def split_clips(prepared: Path, part: str, train_ratio: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """(int16 clips (N, 16000), label ids) of "test", "val" or "train" (speakers' bucket vs train_ratio)."""
    m = load_manifest(prepared)
    shards = m["split_shards"]["test" if part == "test" else "trainval"]
    xs, ys = [np.zeros((0, m["clip_samples"]), np.int16)], [np.zeros(0, np.int64)]
    for name in shards:
        t = pq.read_table(prepared / name, columns=["pcm", "label", "bucket"])
        keep = np.ones(t.num_rows, bool)
        if part != "test":
            bucket = t.column("bucket").to_numpy()
            keep = bucket < train_ratio if part == "train" else bucket >= train_ratio
        xs.append(pcm_from_binary(t.column("pcm"))[keep])
        ys.append(t.column("label").to_numpy()[keep].astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def dataset_noise(prepared: Path) -> np.ndarray:
    """The dataset's background noise (int16, all files end to end; empty when it has none)."""
    f = prepared / NOISE_FILE
    return np.load(f, allow_pickle=False) if f.is_file() else np.zeros(0, np.int16)


# ----------------------------------------------------------------------------- streams

def _noise_bed(noise: np.ndarray, n: int, dbfs: float | None, rng: np.random.Generator) -> np.ndarray:
    """n samples of the background noise from a random offset (looping), at RMS `dbfs`."""
    if dbfs is None or not len(noise):
        return np.zeros(n, np.float32)
    start = int(rng.integers(len(noise)))
    seg = np.resize(np.roll(noise, -start), n).astype(np.float32) / 32768
    rms = float(np.sqrt(np.mean(np.square(seg, dtype=np.float64)))) or 1.0
    return seg * np.float32(10 ** (dbfs / 20) / rms)


def build_streams(clips: np.ndarray, labels: list[str], keywords: set[str], noise: np.ndarray,
                  opts: StreamOptions) -> list[Stream]:
    """Mixed streams of the clips (keywords and everything else, shuffled) and noise-only streams.

    `clips` are int16 one-second clips, `labels` their class names; clips whose label is in
    `keywords` are the truth, all others (unknown words, words the model was not trained on,
    _silence_) are keyword-free filler. Same inputs and options, same streams.
    """
    rng = np.random.default_rng(opts.seed)
    sr, clip_s = 16_000, clips.shape[1] / 16_000 if len(clips) else 1.0
    levels = list(opts.noise_dbfs) if len(noise) else [None]
    order = rng.permutation(len(clips))
    streams: list[Stream] = []
    budget = opts.minutes * 60
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
        dbfs = levels[len(streams) % len(levels)]
        audio = _noise_bed(noise, n, dbfs, rng)
        events = []
        for k, at in placed:
            audio[at:at + clips.shape[1]] += clips[k].astype(np.float32) / 32768
            if labels[k] in keywords:
                events.append(Event(labels[k], at / sr, (at + clips.shape[1]) / sr))
        streams.append(Stream(np.clip(audio, -1, 1), events, dbfs, "mixed"))
        budget -= n / sr
    if len(noise):
        n_stream = int(opts.stream_s * sr)
        for dbfs in opts.noise_dbfs:  # every second of the dataset's noise, at each level
            base = noise.astype(np.float32) / 32768
            rms = float(np.sqrt(np.mean(np.square(base, dtype=np.float64)))) or 1.0
            base = base * np.float32(10 ** (dbfs / 20) / rms)
            for s in range(0, len(base), n_stream):
                part = base[s:s + n_stream]
                if len(part) >= sr:  # shorter than one window: nothing to scan
                    streams.append(Stream(np.clip(part, -1, 1), [], dbfs, "noise"))
    return streams


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


def score(windows: list[Windows], streams: list[Stream], keywords: list[str], opts: StreamOptions,
          thresholds: tuple[float, ...] = THRESHOLDS) -> dict:
    """FA/h and FRR (overall and per keyword) at every threshold, from one pass of the detector."""
    total_s = sum(s.seconds for s in streams)
    keyword_s = sum(e.end_s - e.start_s for s in streams for e in s.keywords)
    free_h = (total_s - keyword_s) / 3600
    spoken = {k: sum(e.label == k for s in streams for e in s.keywords) for k in keywords}
    curve = []
    for th in thresholds:
        fa, missed = 0, {k: 0 for k in keywords}
        for w, s in zip(windows, streams):
            dets = count_once(w.detections(th, opts.suppress_ms), opts.refractory_s)
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


def evaluate_streams(bundle: Bundle, prepared: Path, split: str = "test", opts: StreamOptions | None = None,
                     target_fa_per_hour: float = 1.0, train_ratio: float = 0.9) -> StreamingResult:
    """Build the streams of `split`, run the detector once per stream, score every threshold."""
    opts = opts or StreamOptions()
    m = load_manifest(prepared)
    clips, ids = split_clips(prepared, split, train_ratio)
    if not len(clips):
        raise DatasetError(f"{prepared}: the {split} split has no clips to build streams from")
    labels = [m["classes"][i] for i in ids]
    keywords = [c for c in bundle.classes if c not in NOT_KEYWORDS and c in m["classes"]]
    if not keywords:
        raise DatasetError(f"{prepared}: none of the bundle's keywords ({', '.join(bundle.classes[:8])}) "
                           f"is a class of this dataset: evaluate on the data the model was trained for")
    streams = build_streams(clips, labels, set(keywords), dataset_noise(prepared), opts)
    windows = [scan(bundle, s.audio, opts.stride_ms, opts.average_ms) for s in streams]
    r = score(windows, streams, keywords, opts)
    ok, note = enough_audio(r["keyword_free_hours"], target_fa_per_hour)
    if not len(dataset_noise(prepared)):
        note += "; the dataset has no _background_noise_, so gaps are digital silence (easy)"
    return StreamingResult(
        split=split, options=asdict(opts), keywords=keywords, curve=r["curve"],
        keyword_free_hours=r["keyword_free_hours"], noise_only_hours=r["noise_only_hours"],
        total_hours=r["total_hours"], spoken=r["spoken"], target_fa_per_hour=target_fa_per_hour,
        operating_point=operating_point(r, target_fa_per_hour), enough_audio=ok, note=note,
        streams=[{"kind": s.kind, "seconds": round(s.seconds, 3), "noise_dbfs": s.noise_dbfs,
                  "keywords": len(s.keywords)} for s in streams])
