"""A prepared dataset folder as one object: its manifest, classes, window, noise and splits.

prepare.py writes a folder (Parquet shards, manifest.json, noise.npy), on local disk or on
shared storage (s3://...); everything that reads one goes through `PreparedDataset`. The rule
that splits a speaker into train or validation (`split_filter`), the Parquet column names and
the noise's cap are written here, once: Ray Data's pushed-down filter, the pyarrow readers and
the manifest's clip counts all apply the same expression, so they cannot disagree.

    data = PreparedDataset.open("prepared/")   # one object per folder and process
    data.ray_datasets(0.9)                     # {"train": ray Dataset, "val": ...}
    pcm, labels = data.arrays("val", 0.9)      # int16 numpy, read with pyarrow, no Ray
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..corpus.audio import CLIP_SAMPLES, SAMPLE_RATE
from ..corpus.discover import DatasetError
from ..corpus.prepare import NOISE_FILE, load_manifest, pcm_from_binary, schema
from ..core.storage import UriPath, is_uri, location

DEFAULT_TRAIN_RATIO = 0.9  # share of the non-test speakers' hash range that trains: the one default
SPLITS = ("train", "val", "test")
BUCKET, PCM, LABEL = "bucket", "pcm", "label"  # prepare.py's Parquet columns that the splits need

MEMORY_ENV = "AUDIONET_MEMORY_MB"  # a worker keeps its data in memory up to this size (0: always stream)
NOISE_CAP_S = 600  # background noise kept for augmentation: 10 minutes, 19 MB of int16 per worker
NOISE_PIECE_S = 10  # ... as pieces this long, spread over all of it


# ----------------------------------------------------------------------------- the split rule

def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")


def split_filter(split: str, train_ratio: float, col: Callable[[str], Any] = pc.field):
    """THE split rule: a non-test speaker whose hash bucket is below `train_ratio` trains, the
    others validate; None for "test", which lives in shards of its own.

    A column expression, so one definition serves every reader: pyarrow's (`col=pc.field`, the
    default) for `Table.filter` and the manifest's counts, Ray Data's
    (`col=ray.data.expressions.col`) for a filter Ray pushes down into its Parquet reader.
    """
    check_split(split)
    if split == "test":
        return None
    trains = col(BUCKET) < train_ratio
    return trains if split == "train" else ~trains


def split_sizes(manifest: dict, train_ratio: float) -> dict[str, int]:
    """Clips of "train" and "val" by the manifest's [bucket, clips] per non-test speaker: the
    split's size known without reading a shard."""
    pairs = manifest["trainval_buckets"]
    table = pa.table({BUCKET: pa.array([float(b) for b, _ in pairs], pa.float64()),
                      "clips": pa.array([int(n) for _, n in pairs], pa.int64())})
    return {s: int(pc.sum(table.filter(split_filter(s, train_ratio))["clips"]).as_py() or 0)
            for s in ("train", "val")}


def train_ratio_range(manifest: dict) -> tuple[float, float]:
    """The train_ratios, to 2 decimals, that leave speakers on both sides of the split."""
    buckets = [b for b, _ in manifest["trainval_buckets"]]
    if not buckets:
        return 1.0, 0.0
    return math.floor(min(buckets) * 100 + 1) / 100, math.floor(max(buckets) * 100) / 100


def check_train_ratio(manifest: dict, train_ratio: float, where, need_val: bool = True) -> None:
    """Fail before training on a split with no speakers: an empty validation set would report
    val_accuracy 0 every epoch, and a search would rank its trials by nothing."""
    n = split_sizes(manifest, train_ratio)
    if n["train"] and (n["val"] or not need_val):
        return
    side = "train on" if not n["train"] else "validate on"
    lo, hi = train_ratio_range(manifest)
    fix = (f"use a train_ratio from {lo:g} to {hi:g}" if lo <= hi else
           "it has too few speakers to split by speaker; add speakers")
    raise DatasetError(f"train_ratio {train_ratio:g} leaves no speaker to {side} in {where} "
                       f"({len(manifest['trainval_buckets'])} non-test speakers): {fix}")


def fits_in_memory(manifest: dict, world: int) -> bool:
    """Whether each of `world` workers keeps its part of the data in memory (`arrays`) rather than
    streaming it through Ray Data. Decided once, from the manifest, by the driver that builds the run."""
    budget_mb = float(os.environ.get(MEMORY_ENV, "1024"))
    clip_bytes = 2 * manifest.get("clip_samples", CLIP_SAMPLES)
    return budget_mb > 0 and manifest.get("n_clips", float("inf")) * clip_bytes / world <= budget_mb * 2**20


# ----------------------------------------------------------------------------- noise

def read_noise(prepared: str | Path, cap_s: float | None = NOISE_CAP_S) -> np.ndarray:
    """Background noise for augmentation as one int16 array (empty when the dataset has none).

    At most `cap_s` seconds of it: every training worker holds its noise (on its device), and a
    dataset with hours of background recordings would cost each one all of them. Longer noise is
    cut to evenly spaced NOISE_PIECE_S pieces across the whole file, the same every time (every
    worker, run and resume mixes in the same noise). A local noise.npy is memory-mapped, so only
    the pieces kept are read; one on a URI is read whole once, then cut. The array is the
    caller's own (writable, nothing else keeps it). `cap_s=None` keeps all of it (streaming
    evaluation's noise-only streams play every second). Needs no manifest.
    """
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


# ----------------------------------------------------------------------------- the folder

_OPEN: dict[str, "PreparedDataset"] = {}


@dataclass(frozen=True, eq=False)
class PreparedDataset:
    """One prepared folder (a local path or a URI) and its manifest, read once per process.

    Build it with `PreparedDataset.open`: the same folder gives the same object until its
    manifest changes (a prepare that rewrites it is seen). `manifest` is shared: read it, do
    not change it.
    """

    root: "Path | UriPath"
    manifest: dict = field(repr=False)

    @classmethod
    def open(cls, prepared: "str | Path | UriPath") -> "PreparedDataset":
        """The dataset at `prepared`; a one-line DatasetError if it is not a prepared folder."""
        root = location(prepared)
        manifest = load_manifest(root)  # cached by the file's version
        key = str(root)
        found = _OPEN.get(key)
        if found is None or found.manifest is not manifest:
            found = _OPEN[key] = cls(root, manifest)
        return found

    # ---- what the folder holds
    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def clip_samples(self) -> int:
        """The window the clips were cut to (prepare's --window; one second by default)."""
        return int(self.manifest.get("clip_samples", CLIP_SAMPLES))

    @property
    def sample_rate(self) -> int:
        return int(self.manifest.get("sample_rate", SAMPLE_RATE))

    def shards(self, split: str) -> list[str]:
        """Paths or URIs of the shards that hold `split`: train and val share the trainval shards."""
        check_split(split)
        part = "test" if split == "test" else "trainval"
        return [str(self.root / s) for s in self.manifest["split_shards"].get(part, [])]

    def noise(self, cap_s: float | None = NOISE_CAP_S) -> np.ndarray:
        """The background noise (`read_noise`)."""
        return read_noise(self.root, cap_s)

    # ---- the split, from the manifest alone
    def split_sizes(self, train_ratio: float) -> dict[str, int]:
        return split_sizes(self.manifest, train_ratio)

    def train_ratio_range(self) -> tuple[float, float]:
        return train_ratio_range(self.manifest)

    def check_train_ratio(self, train_ratio: float, where=None, need_val: bool = True) -> None:
        check_train_ratio(self.manifest, train_ratio, self.root if where is None else where, need_val)

    def fits_in_memory(self, world: int) -> bool:
        return fits_in_memory(self.manifest, world)

    # ---- the split's rows
    def ray_datasets(self, train_ratio: float, splits=("train", "val"), shuffle_files: bool = True) -> dict:
        """Ray Datasets for the named splits: rows of `pcm` and `label`.

        The split rule is a filter that Ray pushes down into the Parquet reader; "test" is the
        fixed test set, in its own shards, so training never reads it. Training shards are read
        in a new random file order every epoch (`shuffle_files=False` keeps the shard order
        fixed, for runs that must be repeatable).
        """
        if not 0.0 < train_ratio < 1.0:
            raise DatasetError(f"train_ratio must be between 0 and 1 (exclusive), got {train_ratio}")
        for s in splits:
            check_split(s)
        self.check_train_ratio(train_ratio, need_val="val" in splits)
        return {s: self._ray_dataset(s, train_ratio, shuffle_files and s == "train") for s in splits}

    def _ray_dataset(self, split: str, train_ratio: float, shuffle_files: bool):
        import ray.data
        from ray.data.expressions import col

        files = self.shards(split)
        if not files:
            return ray.data.from_arrow(self._empty_table())
        ds = ray.data.read_parquet(files, shuffle="files" if shuffle_files else None)
        ds = ds.select_columns([PCM, LABEL, BUCKET])  # pushed down into the reader
        keep = split_filter(split, train_ratio, col=col)
        if keep is not None:
            ds = ds.filter(expr=keep)
        return ds.select_columns([PCM, LABEL])

    def _empty_table(self, columns=(PCM, LABEL)) -> pa.Table:
        """The shards' schema and no rows (e.g. no test clips in a tiny dataset)."""
        return schema(self.clip_samples).empty_table().select(list(columns))

    def arrow(self, split: str, train_ratio: float = DEFAULT_TRAIN_RATIO, columns=(PCM, LABEL)) -> pa.Table:
        """The split's rows in shard order, read with pyarrow (no Ray): `columns` of them."""
        keep = split_filter(split, train_ratio)
        tables = []
        for shard in self.shards(split):
            table = pq.read_table(shard, columns=list(dict.fromkeys([*columns, BUCKET])))  # a path or a URI
            tables.append((table if keep is None else table.filter(keep)).select(list(columns)))
        return pa.concat_tables(tables) if tables else self._empty_table(columns)

    def arrays(self, split: str, train_ratio: float = DEFAULT_TRAIN_RATIO, rank: int = 0, world: int = 1,
               equal: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The split as int16 clips (N, clip_samples) and int64 labels, in shard order.

        For data that fits in memory: a Ray Data pipeline costs seconds to start and CPUs of its
        own for one pass over a few MB. Rows are dealt to `world` workers by position (rank,
        rank + world, ...); `equal` drops the last few rows so that every worker gets as many
        (DDP steps in lockstep: one batch more on one worker would hang the others).
        """
        table = self.arrow(split, train_ratio)
        if equal:
            table = table.slice(0, table.num_rows // world * world)
        if world > 1:
            table = table.take(pa.array(range(rank, table.num_rows, world), pa.int64()))
        pcm = pcm_from_binary(table.column(PCM), self.clip_samples).copy()  # writable, owned: no Arrow buffer kept
        return pcm, table.column(LABEL).to_numpy().astype(np.int64)

    def row_groups(self, split: str, columns=(PCM, LABEL),
                   train_ratio: float = DEFAULT_TRAIN_RATIO) -> Iterator[pa.Table]:
        """The split's rows a Parquet row group (prepare's ROW_GROUP rows) at a time, in shard
        order, none empty. A trainval row group is first read by its bucket column alone and
        skipped when none of its speakers is in the split: a pass that stops early reads only
        the row groups it uses."""
        keep = split_filter(split, train_ratio)
        read = list(dict.fromkeys([*columns, *([BUCKET] if keep is not None else [])]))
        for shard in self.shards(split):
            f = pq.ParquetFile(shard)  # a path or a URI
            for g in range(f.num_row_groups):
                if keep is not None and not f.read_row_group(g, columns=[BUCKET]).filter(keep).num_rows:
                    continue
                table = f.read_row_group(g, columns=read)
                table = (table if keep is None else table.filter(keep)).select(list(columns))
                if table.num_rows:
                    yield table

    def batches(self, split: str, columns=(PCM, LABEL), batch_size: int = 512,
                train_ratio: float = DEFAULT_TRAIN_RATIO) -> Iterator[pa.RecordBatch]:
        """The split's rows in shard order, at most `batch_size` at a time: a pass over the data
        that never holds all of it."""
        for table in self.row_groups(split, columns, train_ratio):
            yield from table.to_batches(max_chunksize=batch_size)

    def first_clips(self, split: str, train_ratio: float, n: int) -> np.ndarray:
        """The first `n` clips of `split` in shard order, int16 (at most n, clip_samples).
        prepare shuffled the rows (seeded), so these are a random draw, the same every time,
        read a row group at a time until `n` are found: a few row groups, not the whole split."""
        parts, have = [np.zeros((0, self.clip_samples), np.int16)], 0
        for table in self.row_groups(split, (PCM,), train_ratio) if n > 0 else ():
            parts.append(pcm_from_binary(table.column(PCM), self.clip_samples)[: n - have].copy())
            have += len(parts[-1])
            if have >= n:
                break
        return np.concatenate(parts)
