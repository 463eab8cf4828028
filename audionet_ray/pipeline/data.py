"""From prepared Parquet shards to int16 torch batches on each Ray Train worker.

`python -m audionet_ray.prepare DATA_ROOT OUT` decodes a dataset once (prepare.py); training
then streams the shards with Ray Data. The folder itself, its split by speaker and its noise
are `dataset.PreparedDataset`'s; the functions here are the names the package has always
called, and the way from a Ray Dataset to torch batches.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from ..core import log
from ..corpus.audio import CLIP_SAMPLES, seconds_text
from ..corpus.discover import SILENCE, UNKNOWN, DatasetError, escape_path
from .dataset import (MEMORY_ENV, NOISE_CAP_S, NOISE_PIECE_S, PreparedDataset, check_train_ratio,  # noqa: F401
                      fits_in_memory, read_noise, train_ratio_range)
from ..corpus.prepare import (MANIFEST, PrepareOptions, keyword_options, pcm_from_binary, prepare,  # noqa: F401 - data.keyword_options
                      resolve_clip_samples, summary_line, window_samples)
from ..core.storage import is_uri, location


def split_datasets(prepared: str | Path, train_ratio: float, splits=("train", "val"),
                   shuffle_files: bool = True) -> dict:
    """Ray Datasets for the named splits ("train", "val", "test"): rows of `pcm` and `label`
    (`PreparedDataset.ray_datasets`); pair with `torch_batches(..., shuffle_seed=...)`."""
    return PreparedDataset.open(prepared).ray_datasets(train_ratio, splits, shuffle_files)


def read_split(prepared: str | Path, train_ratio: float, split: str, rank: int = 0,
               world: int = 1, equal: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split read straight from the shards with pyarrow: int16 clips (N, clip_samples), labels,
    classes (`PreparedDataset.arrays`: rows dealt to `world` workers, `equal` parts for DDP)."""
    data = PreparedDataset.open(prepared)
    pcm, labels = data.arrays(split, train_ratio, rank, world, equal)
    return pcm, labels, data.classes


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
        _check_prepared(PreparedDataset.open(data).manifest, keywords, asked, data)
        return location(data)
    data = Path(data).expanduser()
    if (data / MANIFEST).exists():
        _check_prepared(PreparedDataset.open(data).manifest, keywords, asked, escape_path(data))
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
    log.get(__name__).info(summary_line(m))
    return out


def load_noise(prepared: str | Path, cap_s: float | None = NOISE_CAP_S) -> np.ndarray:
    """Background noise for augmentation, at most `cap_s` seconds (`dataset.read_noise`)."""
    return read_noise(prepared, cap_s)


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
    from ..corpus.prepare import main

    sys.exit(main(sys.argv[2:] if sys.argv[1:2] == ["prepare"] else sys.argv[1:]))
