"""From prepared Parquet shards to int16 torch batches on each Ray Train worker.

`python -m audionet_ray.data prepare DATA_ROOT OUT` decodes a dataset once (see prepare.py);
training then streams the shards with Ray Data. The train/validation split by speaker is a
column filter on the speaker's hash bucket, pushed down into the Parquet reader, so every
train_ratio of a search reads the same shards.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from .audio import CLIP_SAMPLES
from .discover import DatasetError
from .prepare import MANIFEST, NOISE_FILE, PrepareOptions, load_manifest, prepare, summary_line


def split_datasets(prepared: str | Path, train_ratio: float, splits=("train", "val"),
                   shuffle_files: bool = True) -> dict:
    """Ray Datasets for the named splits: speakers with bucket < train_ratio train.

    `shuffle_files=False` keeps the shard order fixed, for runs that must be repeatable.
    """
    import ray.data
    from ray.data.expressions import col

    if not 0.0 < train_ratio < 1.0:
        raise DatasetError(f"train_ratio must be between 0 and 1 (exclusive), got {train_ratio}")
    m = load_manifest(prepared)
    files = [str(Path(prepared).expanduser() / s) for s in m["shards"]]
    trainval = col("split") == "trainval"
    predicates = {
        "train": trainval & (col("bucket") < train_ratio),
        "val": trainval & (col("bucket") >= train_ratio),
        "test": col("split") == "test",
    }
    out = {}
    for name in splits:
        ds = ray.data.read_parquet(files, columns=["pcm", "label", "split", "bucket"],
                                   shuffle="files" if name == "train" and shuffle_files else None)
        out[name] = ds.filter(expr=predicates[name]).select_columns(["pcm", "label"])
    return out


def ensure_prepared(data: str | Path, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """A prepared folder as is; a raw dataset root prepared once into a cache folder.

    The cache is keyed by the root's absolute path, and prepare() itself re-checks the file
    list, so a changed dataset is prepared again and an unchanged one costs a directory scan.
    """
    import hashlib

    data = Path(data).expanduser()
    if (data / MANIFEST).exists():
        return data
    cache = Path(cache_dir or os.environ.get("AUDIONET_CACHE", "~/.cache/audionet_ray")).expanduser()
    out = cache / "prepared" / f"{data.name}-{hashlib.sha1(str(data.resolve()).encode()).hexdigest()[:8]}"
    m = prepare(data, out, progress=progress)
    print(summary_line(m), flush=True)
    return out


def load_noise(prepared: str | Path) -> np.ndarray:
    path = Path(prepared).expanduser() / NOISE_FILE
    return np.load(path, allow_pickle=False) if path.exists() else np.zeros(0, np.int16)


class PcmCollate(ArrowBatchCollateFn):
    """Arrow batch -> (int16 clips (B, 16000), int64 labels) without a per-row Python loop."""

    def __call__(self, batch: pa.Table) -> tuple[torch.Tensor, torch.Tensor]:
        pcm = batch.column("pcm").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        labels = batch.column("label").to_numpy().astype(np.int64)
        with warnings.catch_warnings():  # Arrow memory is read-only; nothing writes to it in place
            warnings.simplefilter("ignore", UserWarning)
            clips = torch.from_numpy(pcm.reshape(-1, CLIP_SAMPLES))
        return clips, torch.from_numpy(labels)


def torch_batches(shard, batch_size: int, shuffle_seed: int | None = None, pin_memory: bool = False):
    """Iterate a worker's shard as (int16 clips, labels); a shuffle buffer when training."""
    return shard.iter_torch_batches(
        batch_size=batch_size,
        collate_fn=PcmCollate(),
        local_shuffle_buffer_size=4 * batch_size if shuffle_seed is not None else None,
        local_shuffle_seed=shuffle_seed,
        prefetch_batches=2,
        pin_memory=pin_memory,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.data", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="decode a Speech Commands-style folder into Parquet shards")
    p.add_argument("root", help="dataset root: one folder of clips per word")
    p.add_argument("out", help="output folder for shards and manifest.json")
    p.add_argument("--words", help="comma-separated words to keep as classes (default: all)")
    p.add_argument("--unknown", action="store_true", help="with --words: other words become _unknown_")
    p.add_argument("--silence", action="store_true", help="add a _silence_ class cut from background noise")
    p.add_argument("--strict", action="store_true", help="fail on the first bad file instead of skipping it")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPUs, max 8)")
    args = ap.parse_args(argv)
    words = [w.strip() for w in args.words.split(",") if w.strip()] if args.words else None
    if (args.unknown) and not words:
        ap.error("--unknown needs --words")
    try:
        m = prepare(args.root, args.out, PrepareOptions(words, args.unknown, args.silence, args.strict),
                    workers=args.workers)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(m))
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
