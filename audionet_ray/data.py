"""From prepared Parquet shards to int16 torch batches on each Ray Train worker.

`python -m audionet_ray.prepare DATA_ROOT OUT` decodes a dataset once (prepare.py); training
then streams the shards with Ray Data. The train/validation split by speaker is a
column filter on the speaker's hash bucket, pushed down into the Parquet reader, so every
train_ratio of a search reads the same shards.
"""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from .audio import AUDIO_SUFFIXES, CLIP_SAMPLES, seconds_text
from .discover import SILENCE, UNKNOWN, DatasetError, escape_path
from .prepare import (MANIFEST, NOISE_FILE, PrepareOptions, load_manifest, pcm_from_binary, prepare,
                      resolve_clip_samples, summary_line, window_samples)
from .storage import is_uri, location


def split_datasets(prepared: str | Path, train_ratio: float, splits=("train", "val"),
                   shuffle_files: bool = True) -> dict:
    """Ray Datasets for the named splits ("train", "val", "test"): rows of `pcm` and `label`.

    Speakers with bucket < train_ratio train, the rest validate; "test" is the fixed test set,
    which lives in its own shards, so training never reads it. Training shards are read in a
    new random file order every epoch (`shuffle_files=False` keeps the shard order fixed, for
    runs that must be repeatable); pair with `torch_batches(..., shuffle_seed=...)`.
    """
    import ray.data
    from ray.data.expressions import col

    if not 0.0 < train_ratio < 1.0:
        raise DatasetError(f"train_ratio must be between 0 and 1 (exclusive), got {train_ratio}")
    unknown = [s for s in splits if s not in ("train", "val", "test")]
    if unknown:
        raise DatasetError(f"unknown split {unknown[0]!r}: choose from train, val, test")
    root = location(prepared)  # a local folder or a URI (s3://...): read_parquet takes both
    m = load_manifest(root)
    check_train_ratio(m, train_ratio, root, need_val="val" in splits)
    predicates = {"train": col("bucket") < train_ratio, "val": col("bucket") >= train_ratio}
    out = {}
    for name in splits:
        part = "test" if name == "test" else "trainval"
        files = [str(root / s) for s in m["split_shards"][part]]
        if not files:
            out[name] = _empty(m["clip_samples"])
            continue
        ds = ray.data.read_parquet(files, shuffle="files" if name == "train" and shuffle_files else None)
        ds = ds.select_columns(["pcm", "label", "bucket"])  # pushed down into the reader
        if name in predicates:
            ds = ds.filter(expr=predicates[name])
        out[name] = ds.select_columns(["pcm", "label"])
    return out


MEMORY_ENV = "AUDIONET_MEMORY_MB"  # a worker keeps its data in memory up to this size (0: always stream)


def fits_in_memory(manifest: dict, world: int) -> bool:
    """Whether each of `world` workers keeps its part of the data in memory (`read_split`) rather than
    streaming it through Ray Data. Decided once, from the manifest, by the driver that builds the run."""
    budget_mb = float(os.environ.get(MEMORY_ENV, "1024"))
    clip_bytes = 2 * manifest.get("clip_samples", CLIP_SAMPLES)
    return budget_mb > 0 and manifest.get("n_clips", float("inf")) * clip_bytes / world <= budget_mb * 2**20


def read_split(prepared: str | Path, train_ratio: float, split: str, rank: int = 0,
               world: int = 1, equal: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split read straight from the shards with pyarrow: int16 clips (N, clip_samples), labels, classes.

    For data that fits in memory: a Ray Data pipeline costs seconds to start and CPUs of its own
    for one pass over a few MB (benchmarks/bench_throughput.py); reading the Parquet files here
    takes a fraction of a second and leaves every CPU to training. Rows are dealt to `world`
    workers by position (rank, rank + world, ...); `equal` drops the last few rows so that every
    worker gets as many (DDP steps in lockstep: one batch more on one worker would hang the others).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if split not in ("train", "val", "test"):
        raise DatasetError(f"unknown split {split!r}: choose from train, val, test")
    root = location(prepared)
    m = load_manifest(root)
    part = "test" if split == "test" else "trainval"
    tables = []
    for shard in m["split_shards"][part]:
        table = pq.read_table(str(root / shard), columns=["pcm", "label", "bucket"])  # a path or a URI
        if split != "test":
            keep = pc.less(table["bucket"], train_ratio) if split == "train" else pc.greater_equal(table["bucket"], train_ratio)
            table = table.filter(keep)
        tables.append(table.select(["pcm", "label"]))
    if not tables:
        return np.zeros((0, m["clip_samples"]), np.int16), np.zeros(0, np.int64), m["classes"]
    table = pa.concat_tables(tables)
    if equal:
        table = table.slice(0, table.num_rows // world * world)
    if world > 1:
        table = table.take(pa.array(range(rank, table.num_rows, world)))
    pcm = pcm_from_binary(table.column("pcm"), m["clip_samples"]).copy()  # writable, owned: nothing keeps Arrow's buffers
    return pcm, table.column("label").to_numpy().astype(np.int64), m["classes"]


def train_ratio_range(manifest: dict) -> tuple[float, float]:
    """The train_ratios, to 2 decimals, that leave speakers on both sides of the split."""
    buckets = [b for b, _ in manifest["trainval_buckets"]]
    if not buckets:
        return 1.0, 0.0
    return math.floor(min(buckets) * 100 + 1) / 100, math.floor(max(buckets) * 100) / 100


def check_train_ratio(manifest: dict, train_ratio: float, where, need_val: bool = True) -> None:
    """Fail before training on a split with no speakers: an empty validation set would report
    val_accuracy 0 every epoch, and a search would rank its trials by nothing."""
    pairs = manifest["trainval_buckets"]
    n_train = sum(n for b, n in pairs if b < train_ratio)
    n_val = sum(n for b, n in pairs if b >= train_ratio)
    if n_train and (n_val or not need_val):
        return
    side = "train on" if not n_train else "validate on"
    lo, hi = train_ratio_range(manifest)
    fix = (f"use a train_ratio from {lo:g} to {hi:g}" if lo <= hi else
           "it has too few speakers to split by speaker; add speakers")
    raise DatasetError(f"train_ratio {train_ratio:g} leaves no speaker to {side} in {where} "
                       f"({len(pairs)} non-test speakers): {fix}")


def keyword_options(root: str | Path, keywords: list[str]) -> "PrepareOptions":
    """How a keyword task is prepared: the keywords as classes, every other word (and a root-level
    `_unknown_/` folder) as _unknown_, and _silence_ cut from the background noise when there is any."""
    from .discover import NOISE_DIR

    noise = Path(root).expanduser() / NOISE_DIR
    has_noise = noise.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in noise.iterdir())
    return PrepareOptions(words=list(keywords), unknown=True, silence=has_noise)


def check_keywords(manifest: dict, keywords: list[str], where) -> None:
    """A prepared folder given with --keywords must have been prepared for exactly those."""
    want = sorted(keywords)
    have = [c for c in manifest["classes"] if c not in (UNKNOWN, SILENCE)]
    if UNKNOWN not in manifest["classes"] or sorted(have) != want:
        raise DatasetError(f"{where} was prepared for the classes {', '.join(manifest['classes'][:12])}, not for "
                           f"the keywords {', '.join(want)}: pass the dataset root instead, or prepare it with "
                           f"--keywords {','.join(want)}")


def check_window(manifest: dict, clip_samples: int, where) -> None:
    """A prepared folder given with a window (--window, a bundle's) must have been prepared with it."""
    have = manifest.get("clip_samples", CLIP_SAMPLES)
    if have != clip_samples:
        raise DatasetError(f"{where} was prepared with a window of {seconds_text(have)} ({have} samples), not "
                           f"{seconds_text(clip_samples)}: pass the dataset root instead, or prepare it with "
                           f"--window {clip_samples / 16_000:g}")


def _check_prepared(m: dict, keywords: list[str] | None, clip_samples: int | None, where) -> None:
    if keywords:
        check_keywords(m, keywords, where)
    if clip_samples is not None:
        check_window(m, clip_samples, where)


def ensure_prepared(data: str | Path, cache_dir: str | Path | None = None, progress: bool = True,
                    keywords: list[str] | None = None, window: float | None = None) -> Path:
    """A prepared folder as is; a raw dataset root prepared once into a cache folder.

    `window` (seconds, prepare's --window) is the clip length; None takes the source's
    (wakeword.json), else 1 s. A prepared folder given with a window must have been prepared
    with it. The cache is keyed by the root's absolute path (and the keywords of a keyword task,
    and a window other than 1 s), and prepare() itself re-checks the file list, so a changed
    dataset is prepared again and an unchanged one costs a directory scan.
    """
    import hashlib

    asked = None if window is None else window_samples(window)
    if is_uri(data):  # shared storage on a cluster: it must already hold a prepared dataset
        _check_prepared(load_manifest(data), keywords, asked, data)
        return location(data)
    data = Path(data).expanduser()
    if (data / MANIFEST).exists():
        _check_prepared(load_manifest(data), keywords, asked, escape_path(data))
        return data
    clip_samples = resolve_clip_samples(data, window)
    cache = Path(cache_dir or os.environ.get("AUDIONET_CACHE", "~/.cache/audionet_ray")).expanduser()
    # the name for people (escaped, cut to fit a 255-byte name), the hash of the exact bytes for uniqueness
    wtag = "" if clip_samples == CLIP_SAMPLES else f"@{clip_samples}"
    key = hashlib.sha1(os.fsencode(data.resolve()) + (",".join(keywords or []) + wtag).encode()).hexdigest()[:8]
    tag = ("-kws" if keywords else "") + (f"-{clip_samples / 16_000:g}s" if wtag else "")
    out = cache / "prepared" / f"{escape_path(data.name)[:40]}{tag}-{key}"
    opts = keyword_options(data, keywords) if keywords else PrepareOptions()
    m = prepare(data, out, replace(opts, clip_samples=clip_samples), progress=progress)
    print(summary_line(m), flush=True)
    return out


def _empty(clip_samples: int):
    """A dataset with the right schema and no rows (e.g. no test clips in a tiny dataset)."""
    import ray.data

    table = pa.table({"pcm": pa.array([], pa.binary(2 * clip_samples)), "label": pa.array([], pa.int32())})
    return ray.data.from_arrow(table)


NOISE_CAP_S = 600  # background noise kept for augmentation: 10 minutes, 19 MB of int16 per worker
NOISE_PIECE_S = 10  # ... as pieces this long, spread over all of it


def load_noise(prepared: str | Path, cap_s: float | None = NOISE_CAP_S) -> np.ndarray:
    """Background noise for augmentation as one int16 array (empty when the dataset has none).

    At most `cap_s` seconds of it: every training worker holds its noise (on its device), and a
    dataset with hours of background recordings would cost each one all of them. Longer noise is
    cut to evenly spaced NOISE_PIECE_S pieces across the whole file, the same every time (every
    worker, run and resume mixes in the same noise). A local noise.npy is memory-mapped, so only
    the pieces kept are read; one on a URI is read whole once, then cut. The array is the
    caller's own (writable, nothing else keeps it). `cap_s=None` keeps all of it (streaming
    evaluation's noise-only streams play every second).
    """
    from .audio import SAMPLE_RATE

    path = location(prepared) / NOISE_FILE
    if not path.exists():
        return np.zeros(0, np.int16)
    if is_uri(path):
        noise = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
    else:
        noise = np.load(path, mmap_mode="r", allow_pickle=False)
    cap = len(noise) if cap_s is None else int(cap_s * SAMPLE_RATE)
    if len(noise) <= cap:
        return np.array(noise)
    piece = min(NOISE_PIECE_S * SAMPLE_RATE, cap)
    starts = np.linspace(0, len(noise) - piece, cap // piece).astype(np.int64)
    return np.concatenate([noise[s:s + piece] for s in starts])


class PcmCollate(ArrowBatchCollateFn):
    """Arrow batch -> (int16 clips (B, clip_samples), int64 labels) without a per-row Python loop.

    The clip length comes from the `pcm` column's type (prepare.pcm_from_binary), so the collate
    needs nothing from the manifest.

    The clips tensor shares Arrow's read-only memory (no copy): move or convert it (`.to`,
    `.float()`, `augment`, `standardise`) before changing it in place.
    """

    def __call__(self, batch: pa.Table):
        pcm = pcm_from_binary(batch.column("pcm"))
        labels = batch.column("label").to_numpy().astype(np.int64)
        with warnings.catch_warnings():  # Arrow memory is read-only; see the docstring
            warnings.simplefilter("ignore", UserWarning)
            clips = torch.from_numpy(pcm)
        return clips, torch.from_numpy(labels)


def torch_batches(shard, batch_size: int, shuffle_seed: int | None = None, pin_memory: bool = False):
    """Iterate a worker's shard (a Dataset or DataIterator) as (int16 clips, int64 labels).

    With `shuffle_seed` rows pass through a local shuffle buffer (on top of the per-epoch file
    order shuffle of the training split); use a different seed each epoch.
    """
    return shard.iter_torch_batches(
        batch_size=batch_size,
        collate_fn=PcmCollate(),
        local_shuffle_buffer_size=4 * batch_size if shuffle_seed is not None else None,
        local_shuffle_seed=shuffle_seed,
        prefetch_batches=2,
        pin_memory=pin_memory,
    )


if __name__ == "__main__":  # the command's first name: python -m audionet_ray.data prepare ROOT OUT
    from .prepare import main

    sys.exit(main(sys.argv[2:] if sys.argv[1:2] == ["prepare"] else sys.argv[1:]))
