"""Decode every clip once into Parquet shards, so training streams a few large files.

Per small file Ray Data costs ~0.7 ms; a search reads its dataset dozens of times. Decoding
once (in parallel) into int16 shards turns every later epoch into sequential reads, and keeps
bad files out of the search for good: each is skipped here, with its reason in manifest.json.

`python -m audionet_ray.prepare DATA_ROOT OUT` does it (`main`); a search or a Train run does
it itself for a dataset root it is given (data.ensure_prepared). `prepare --keywords "hey jarvis"
--synthesize OUT` prepares a keyword task whose keywords are spoken by espeak-ng first
(keyword_source; with DATA_ROOT too, its clips join them).

Layout choices, each measured (benchmarks/bench_data.py, docs/performance.md):
- PCM is one `fixed_size_binary(32000)` value per clip (little-endian int16; 2 x clip_samples
  bytes for a `--window` other than one second, which the manifest's `clip_samples` records). As
  `list<int16>` Parquet stores a repetition level per sample, which made writing ~7x and
  reading ~30x slower.
- Rows are shuffled (seeded) before they are written, so every shard mixes classes and
  speakers and a file-level shuffle plus a small local buffer is enough in training.
- Test clips get their own shards: training and validation never read them.
- `path` and `speaker` are strings through `escape_path`: the name itself when it is printable
  UTF-8 (nearly always), else readable escapes (`\\xe9`, `\\x0a`, `\\\\`) that
  `unescape_path` turns back into the exact bytes on disk. The same goes for every path in
  manifest.json, so both stay valid UTF-8 whatever the names.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..core import log
from .audio import AUDIO_SUFFIXES, CLIP_SAMPLES, SAMPLE_RATE, WINDOW_RANGE_S, BadClip, decode_or_reason, read_audio, seconds_text, to_int16
from .discover import (NOISE_DIR, SILENCE, DatasetError, Discovery, discover, escape_path, is_test_speaker,
                       keywords_option, speaker_bucket)
from ..core.errors import ConfigError
from ..core.storage import is_uri, local_cache, location, publish

logger = log.get(__name__)

FORMAT_VERSION = 3  # 3: the manifest lists the buckets of trainval speakers
ROWS_PER_SHARD = 2048  # 64 MiB of PCM: large sequential reads, still many files to shuffle
ROW_GROUP = 256  # 8 MiB: the unit pyarrow decodes; small enough to keep reader memory flat
MANIFEST = "manifest.json"
NOISE_FILE = "noise.npy"
SERIAL_BELOW = 256  # fewer clips than this: decoding in-process beats starting a pool
SPLIT_PARTS = ("trainval", "test")
STAGING = ".staging"  # a new preparation is written here and moved in whole, so a full disk or a crash keeps the old one
SOURCE_MANIFEST = "wakeword.json"  # a generated source's record; its `clip_samples` is the window it was made for


@dataclass
class PrepareOptions:
    words: list[str] | None = None
    unknown: bool = False
    silence: bool = False
    strict: bool = False
    seed: int = 0
    clip_samples: int | None = None  # the window in samples; None: the source's (wakeword.json), else 1 s


def keyword_options(root: str | Path, keywords: list[str]) -> "PrepareOptions":
    """How a keyword task is prepared: the keywords as classes, every other word (and a root-level
    `_unknown_/` folder) as _unknown_, and _silence_ cut from the background noise when there is any."""
    noise = Path(root).expanduser() / NOISE_DIR
    has_noise = noise.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in noise.iterdir())
    return PrepareOptions(words=list(keywords), unknown=True, silence=has_noise)


def window_samples(seconds: float, what: str = "--window") -> int:
    """A window in seconds -> samples at SAMPLE_RATE; ConfigError (naming `what`) unless it lies in
    WINDOW_RANGE_S and is whole samples: a fractional sample has no clip length."""
    lo, hi = WINDOW_RANGE_S
    ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
    n = round(seconds * SAMPLE_RATE) if ok else 0
    if not ok or abs(seconds * SAMPLE_RATE - n) > 1e-6 or not lo * SAMPLE_RATE <= n <= hi * SAMPLE_RATE:
        raise ConfigError(f"{what}: {seconds!r} is not a window of {lo:g} to {hi:g} seconds in whole samples at "
                          f"{SAMPLE_RATE} Hz (a multiple of 1/{SAMPLE_RATE} s, such as 1.5)")
    return n


def window_option(text: str) -> float:
    """--window as a command gives it (text) -> seconds, checked (window_samples)."""
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"--window: {text!r} is not a number of seconds (such as 1.5)") from None
    window_samples(seconds)
    return seconds


def source_clip_samples(root: str | Path) -> int | None:
    """The window a generated source was made for: `clip_samples` in its root's wakeword.json
    (wakeword.synthesize writes it), else None (then 1 s)."""
    path = Path(root).expanduser() / SOURCE_MANIFEST
    if not path.is_file():
        return None
    try:
        n = json.loads(path.read_text()).get("clip_samples")
    except (OSError, ValueError, AttributeError) as e:
        raise DatasetError(f"{escape_path(path)}: not readable as JSON ({e}): fix it or pass --window") from None
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool):
        raise ConfigError(f"{escape_path(path)}: clip_samples must be a whole number of samples, got {n!r}")
    window_samples(n / SAMPLE_RATE, f"{escape_path(path)}: clip_samples {n}")
    return n


def resolve_clip_samples(root: str | Path, window: float | None) -> int:
    """The window of a preparation in samples: `window` seconds when given, else the source's, else 1 s."""
    if window is not None:
        return window_samples(window)
    return source_clip_samples(root) or CLIP_SAMPLES


def schema(clip_samples: int = CLIP_SAMPLES) -> pa.Schema:
    """The shards' columns; `pcm` holds `clip_samples` int16 per row (the preparation's window)."""
    return pa.schema(
        [
            ("pcm", pa.binary(2 * clip_samples)),  # int16 little-endian, clip_samples samples
            ("label", pa.int32()),
            ("speaker", pa.string()),  # escape_path of the speaker part of the name
            ("path", pa.string()),  # escape_path of the path relative to the root
            ("split", pa.string()),
            ("bucket", pa.float64()),
        ],
        metadata={"pcm": f"int16 little-endian, {clip_samples} samples at {SAMPLE_RATE} Hz"},
    )


SCHEMA = schema()  # of one-second data


def pcm_from_binary(arr: pa.Array | pa.ChunkedArray, clip_samples: int | None = None) -> np.ndarray:
    """A `pcm` column -> int16 (rows, clip_samples), zero-copy when it is one chunk.

    The length comes from the column's own type (fixed_size_binary of 2 x clip_samples bytes), so
    every reader follows the window the data was prepared with; `clip_samples` (the manifest's),
    when given, must agree, and is needed for a column whose type does not say.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    width = arr.type.byte_width // 2 if pa.types.is_fixed_size_binary(arr.type) else clip_samples
    if width is None or (clip_samples is not None and width != clip_samples):
        raise DatasetError(f"pcm column of type {arr.type}, but the manifest says clips of {clip_samples} "
                           "samples: prepare the dataset again")
    if len(arr) == 0:
        return np.zeros((0, width), np.int16)
    if not pa.types.is_fixed_size_binary(arr.type):  # e.g. plain binary after a conversion: one copy
        return np.frombuffer(b"".join(arr.to_pylist()), dtype="<i2").reshape(len(arr), width)
    flat = np.frombuffer(arr.buffers()[1], dtype="<i2", count=len(arr) * width, offset=arr.offset * 2 * width)
    return flat.reshape(len(arr), width)


def _stat_line(path: Path) -> str:
    try:
        st = path.stat()
        return f"{st.st_size}\0{st.st_mtime_ns}"
    except OSError:
        return "unreadable"  # a broken link: part of the key, skipped later with its reason


def _cache_key(found: Discovery, opts: PrepareOptions, clip_samples: int) -> str:
    """Changes when any file, its size or mtime, an option or the window changes: then we prepare again.
    One-second data keeps the key it had before windows could change."""
    parts = [FORMAT_VERSION, found.classes, opts.unknown, opts.silence, opts.seed]
    h = hashlib.sha256(json.dumps(parts + ([clip_samples] if clip_samples != CLIP_SAMPLES else [])).encode())
    root = Path(found.root)
    for rel in [it.path for it in found.items] + found.noise_files + found.empty_classes + found.held_out:
        h.update(os.fsencode(rel) + f"\0{_stat_line(root / rel)}\n".encode())  # the name's bytes, UTF-8 or not
    return h.hexdigest()


def _silence_clips(noise: np.ndarray, n: int, seed: int, clip_samples: int = CLIP_SAMPLES) -> list[np.ndarray]:
    """_silence_ examples: window-long cuts of background noise at random low volume."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = int(rng.integers(0, max(1, len(noise) - clip_samples)))
        seg = noise[start:start + clip_samples].astype(np.float32) * rng.uniform(0.0, 1.0)
        out.append(np.pad(seg, (0, clip_samples - len(seg))).astype(np.int16))
    return out


class _ShardWriter:
    """Buffers rows of one split and writes them as numbered shards of ROWS_PER_SHARD."""

    def __init__(self, out: Path, prefix: str, clip_samples: int = CLIP_SAMPLES):
        self.out, self.prefix, self.rows, self.shards = out, prefix, [], []
        self.schema = schema(clip_samples)

    def add(self, pcm: bytes, label: int, speaker: str, path: str, split: str) -> None:
        """`speaker` and `path` as on disk: escaped here, the bucket hashed from the real name."""
        self.rows.append((pcm, label, escape_path(speaker), escape_path(path), split, speaker_bucket(speaker)))
        if len(self.rows) >= ROWS_PER_SHARD:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        pcm, label, speaker, path, split, bucket = zip(*self.rows)
        table = pa.table({
            "pcm": pa.FixedSizeBinaryArray.from_buffers(self.schema.field("pcm").type, len(pcm),
                                                        [None, pa.py_buffer(b"".join(pcm))]),
            "label": pa.array(label, pa.int32()),
            "speaker": pa.array(speaker, pa.string()),
            "path": pa.array(path, pa.string()),
            "split": pa.array(split, pa.string()),
            "bucket": pa.array(bucket, pa.float64()),
        }, schema=self.schema)
        name = f"{self.prefix}-{len(self.shards):05d}.parquet"
        pq.write_table(table, self.out / name, row_group_size=ROW_GROUP, compression="zstd",
                       compression_level=1, use_dictionary=["speaker", "split"],
                       write_statistics=["label", "split", "bucket"])
        self.shards.append(name)
        self.rows = []


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork when it is safe (Linux, no other threads yet), else forkserver.

    fork starts workers in milliseconds. forkserver is safe next to threads (a Ray driver, a
    test session) but re-imports the caller's __main__ in every worker, which costs seconds
    when that is a search's driver (torch, ray).
    """
    safe = sys.platform == "linux" and threading.active_count() == 1
    return multiprocessing.get_context("fork" if safe else "forkserver")


def _decoded(paths: list[str], workers: int, ctx: multiprocessing.context.BaseContext, clip_samples: int):
    """(bytes, notes) or (None, reason) per path, in order; a pool only when it pays off."""
    decode = partial(decode_or_reason, n=clip_samples)
    if workers <= 1 or len(paths) < SERIAL_BELOW:
        yield from map(decode, paths)
        return
    pool = ProcessPoolExecutor(workers, mp_context=ctx)
    try:
        yield from pool.map(decode, paths, chunksize=64)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fail_strict(opts: PrepareOptions, shown: str, reason: str) -> None:
    """`shown`: the path as escape_path gives it, so the message stays one line."""
    if opts.strict:
        raise DatasetError(f"{shown}: {reason} (--strict turns every skip into an error; fix or remove the file)")


def _check_out_folder(out: Path, rootp: Path) -> None:
    """`out` must be a folder (or new) outside the dataset, which a later discovery would read as a class."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output {escape_path(out)} exists and is not a folder")
    try:
        inside = rootp.is_dir() and out.resolve().is_relative_to(rootp.resolve())
    except (OSError, RuntimeError) as e:  # a symlink loop on the way
        raise DatasetError(f"cannot resolve {escape_path(out)} or {escape_path(rootp)}: {e}") from None
    if inside:
        raise DatasetError(f"output {escape_path(out)} is inside the dataset root {escape_path(rootp)}: "
                           "choose a folder outside it")


def _cached(out: Path, key: str, opts: PrepareOptions, rootp: Path) -> dict | None:
    """The earlier preparation in `out` when it was made from the same data and options with all its shards."""
    manifest_path = out / MANIFEST
    if not manifest_path.exists():
        return None
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        old = {}
    if old.get("cache_key") != key or not all((out / s).is_file() for s in old.get("shards", [])):
        return None
    if old["skipped"]:
        _fail_strict(opts, f"{escape_path(rootp)}/{old['skipped'][0]['path']}", old["skipped"][0]["reason"])
    old["cached"] = True
    return old


def _staged(out: Path, found: Discovery, opts: PrepareOptions, key: str, workers: int | None,
            progress: bool) -> dict:
    """Write a new preparation into `out`/.staging; a full disk is one line and leaves `out` as it was."""
    had_old = (out / MANIFEST).exists()
    stage = out / STAGING
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(stage, ignore_errors=True)  # left by a crash
        stage.mkdir()
        return _prepare_into(stage, found, opts, key, workers, progress)
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        if not isinstance(e, OSError):
            raise
        kept = "the earlier preparation there is unchanged" if had_old else "nothing was kept"
        raise DatasetError(f"{escape_path(getattr(e, 'filename', None) or out)}: {e.strerror or e} while writing "
                           f"the prepared data ({kept}): free some space or choose another OUT, then run again") from None


def _swap_in(out: Path, manifest: dict) -> None:
    """Move the staged preparation over the old one.

    The swap needs no new space. The manifest goes first and comes back last: its presence
    always means a complete preparation, whenever a crash lands.
    """
    stage = out / STAGING
    (out / MANIFEST).unlink(missing_ok=True)
    for stale in [*out.glob("part-*.parquet"), *out.glob("trainval-*.parquet"), *out.glob("test-*.parquet")]:
        stale.unlink()
    for name in [NOISE_FILE, *manifest["shards"]]:
        (stage / name).replace(out / name)
    (stage / MANIFEST).replace(out / MANIFEST)
    stage.rmdir()


def prepare(
    root: str | Path,
    out: str | Path,
    opts: PrepareOptions | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Prepare `root` into `out` unless `out` already holds the same data; returns the manifest.

    The manifest's `cached` says whether this call reused an earlier run. Bad clips are
    skipped and listed (`skipped`), repairs are counted (`repaired`); with `opts.strict` the
    first skip raises `DatasetError` instead.
    """
    opts = opts or PrepareOptions()
    out = Path(out).expanduser()
    rootp = Path(root).expanduser()
    _check_out_folder(out, rootp)
    found = discover(rootp, opts.words, opts.unknown, opts.silence)
    opts = replace(opts, clip_samples=opts.clip_samples or resolve_clip_samples(rootp, None))
    key = _cache_key(found, opts, opts.clip_samples)
    old = _cached(out, key, opts, rootp)
    if old is not None:
        return old
    for s in found.empty_classes:
        _fail_strict(opts, escape_path(rootp / s), "empty class folder")
    manifest = _staged(out, found, opts, key, workers, progress)
    _swap_in(out, manifest)
    manifest["cached"] = False
    return manifest


class _Tally:
    """The shard writers of one preparation and what went into them, for the manifest."""

    def __init__(self, stage: Path, clip_samples: int) -> None:
        self.writers = {part: _ShardWriter(stage, part, clip_samples) for part in SPLIT_PARTS}
        self.counts: dict[str, dict[str, int]] = {part: {} for part in SPLIT_PARTS}
        self.speakers: Counter = Counter()  # trainval clips per speaker: which train_ratio leaves both splits

    def add(self, pcm: bytes, label: int, cls: str, speaker: str, path: str, split: str) -> None:
        self.writers[split].add(pcm, label, speaker, path, split)
        self.counts[split][cls] = self.counts[split].get(cls, 0) + 1
        if split == "trainval":
            self.speakers[speaker] += 1

    def shards(self) -> dict[str, list[str]]:
        """Flush the last rows; the shard files of each split part."""
        for w in self.writers.values():
            w.flush()
        return {part: self.writers[part].shards for part in SPLIT_PARTS}


def _write_noise(stage: Path, found: Discovery, opts: PrepareOptions, skipped: list[dict]) -> np.ndarray:
    """All background noise as one int16 array in noise.npy; unreadable files are skipped (or fail --strict)."""
    rootp = Path(found.root)
    noise_parts = []
    for rel in found.noise_files:
        try:
            noise_parts.append(to_int16(read_audio(rootp / rel)))
        except BadClip as e:
            _fail_strict(opts, escape_path(rootp / rel), str(e))
            skipped.append({"path": escape_path(rel), "reason": str(e)})
    noise = np.concatenate(noise_parts) if noise_parts else np.zeros(0, np.int16)
    np.save(stage / NOISE_FILE, noise, allow_pickle=False)
    return noise


def _write_clips(tally: _Tally, found: Discovery, opts: PrepareOptions, workers: int | None, progress: bool,
                 skipped: list[dict], repaired: Counter) -> None:
    """Decode every clip (in a pool when it pays) into the shards, in a seeded shuffled order.

    Shuffled once, deterministically: every shard then mixes classes and speakers.
    """
    rootp = Path(found.root)
    order = np.random.default_rng(opts.seed).permutation(len(found.items))
    items = [found.items[i] for i in order]
    workers = workers or min(8, os.cpu_count() or 1)
    decoded = _decoded([str(rootp / it.path) for it in items], workers, _pool_context(),  # before tqdm's thread
                       opts.clip_samples or CLIP_SAMPLES)
    with closing(decoded), tqdm(total=len(items), desc="decoding clips", unit="clip",
                                disable=None if progress else True) as bar:
        for it, (pcm, notes) in zip(items, decoded):
            bar.update()
            if pcm is None:
                _fail_strict(opts, escape_path(rootp / it.path), notes)
                skipped.append({"path": escape_path(it.path), "reason": notes})
                continue
            repaired.update(notes)
            tally.add(pcm, it.label, found.classes[it.label], it.speaker, it.path, it.split)


def _write_silence(tally: _Tally, noise: np.ndarray, found: Discovery, opts: PrepareOptions, clip_samples: int) -> None:
    """`_silence_` clips cut from the noise, as many as an average class has, split by their made-up speakers."""
    n = max(1, sum(tally.counts["trainval"].values()) // max(1, len(found.classes) - 1))
    for i, pcm in enumerate(_silence_clips(noise, n, opts.seed, clip_samples)):
        spk = f"silence{i:05d}"
        split = "test" if is_test_speaker(spk) else "trainval"
        tally.add(pcm.astype("<i2").tobytes(), found.classes.index(SILENCE), SILENCE, spk, f"{SILENCE}/{i}", split)


def _prepare_into(stage: Path, found: Discovery, opts: PrepareOptions, key: str, workers: int | None,
                  progress: bool) -> dict:
    """Decode and write everything (noise, shards, manifest) into `stage`; returns the manifest."""
    t0 = time.time()
    rootp = Path(found.root)
    # every path that leaves for JSON or Parquet goes through escape_path (see the module docstring)
    skipped: list[dict] = [{"path": f"{escape_path(c)}/", "reason": "empty class folder"} for c in found.empty_classes]
    repaired: Counter = Counter()
    noise = _write_noise(stage, found, opts, skipped)
    clip_samples = opts.clip_samples or CLIP_SAMPLES
    tally = _Tally(stage, clip_samples)
    _write_clips(tally, found, opts, workers, progress, skipped, repaired)
    if opts.silence:
        _write_silence(tally, noise, found, opts, clip_samples)
    split_shards = tally.shards()
    if not any(split_shards.values()):
        reasons = Counter(s["reason"].split(" (")[0] for s in skipped).most_common(3)
        raise DatasetError(f"{escape_path(rootp)}: no clip could be read ({len(skipped)} skipped: "
                           + "; ".join(f"{r}: {n}" for r, n in reasons) + ")")
    counts = tally.counts
    manifest = {
        "format": FORMAT_VERSION,
        "cache_key": key,
        "source": escape_path(found.root),
        "sample_rate": SAMPLE_RATE,
        "clip_samples": clip_samples,
        "classes": found.classes,
        "counts": counts,
        "n_clips": sum(sum(c.values()) for c in counts.values()),
        "noise_samples": int(len(noise)),
        # [bucket, clips] of each trainval speaker, by bucket: train_ratio r trains on those below r
        "trainval_buckets": sorted([speaker_bucket(s), n] for s, n in tally.speakers.items()),
        "shards": split_shards["trainval"] + split_shards["test"],
        "split_shards": split_shards,
        "skipped": skipped,
        "repaired": dict(sorted(repaired.items())),
        "held_out": [escape_path(p) for p in found.held_out],
        "options": {"words": opts.words, "unknown": opts.unknown, "silence": opts.silence, "seed": opts.seed},
        "seconds": round(time.time() - t0, 2),
    }
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _file_version(path) -> tuple | None:
    """What changes when a file is rewritten: a local file's inode, mtime and size (prepare
    replaces the manifest by a rename), a URI's size; None when there is no file."""
    try:
        if is_uri(path):
            return (path.size(),)
        st = path.stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    except (FileNotFoundError, NotADirectoryError):
        return None


@functools.lru_cache(maxsize=32)
def _parsed_manifest(path, version: tuple) -> dict:
    """manifest.json parsed, once per process and version of the file."""
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise DatasetError(f"{escape_path(path)} is not valid JSON ({e}): run prepare again") from None


def load_manifest(prepared: str | Path) -> dict:
    """A prepared folder's manifest, read once per process (a rewritten one is read again).
    Shared by every caller: read it, do not change it."""
    path = location(prepared) / MANIFEST  # a local folder or a URI (s3://...) on a cluster
    version = _file_version(path)
    if version is None:
        raise DatasetError(f"{escape_path(path.parent)} is not a prepared dataset (no {MANIFEST}): run `python -m audionet_ray.prepare DATA_ROOT OUT` first")
    m = _parsed_manifest(path if is_uri(path) else path.resolve(), version)
    if m.get("format") != FORMAT_VERSION:
        raise DatasetError(f"{escape_path(path.parent)} was prepared by another version (format {m.get('format')}, need {FORMAT_VERSION}): run prepare again")
    return m


def _grouped(reasons: list[str]) -> str:
    """'empty file (0 bytes)', 'truncated WAV (10 of 32000 data bytes)' -> 'empty file: 1; truncated WAV: 1'."""
    return "; ".join(f"{k}: {v}" for k, v in sorted(Counter(r.split(" (")[0] for r in reasons).items()))


def _window_note(m: dict) -> str:
    """' of 1.5 s' for data prepared with another window than one second; '' for one second."""
    n = m.get("clip_samples", CLIP_SAMPLES)
    return "" if n == CLIP_SAMPLES else f" of {seconds_text(n)}"


def summary_line(m: dict) -> str:
    """One line for the end of `prepare`: what is there, what was skipped and repaired, and why."""
    skipped = [s["reason"] for s in m["skipped"]]
    repaired = m.get("repaired", {})
    parts = [
        f"prepared {m['n_clips']} clips{_window_note(m)} in {len(m['classes'])} classes "
        f"({sum(m['counts']['trainval'].values())} train/val, {sum(m['counts']['test'].values())} test)",
        f"skipped {len(skipped)}" + (f" ({_grouped(skipped)})" if skipped else ""),
    ]
    if repaired:
        parts.append("repaired " + "; ".join(f"{k}: {v}" for k, v in repaired.items()))
    if m.get("held_out"):
        parts.append(f"held out {len(m['held_out'])} clips of test speakers missing from testing_list.txt")
    if len(m["classes"]) < 2:
        parts.append("warning: only one class, nothing to tell apart")
    state = "cached, nothing to do" if m.get("cached") else f"{m['seconds']} s"
    return ", ".join(parts) + f" [{state}]"


def _synthesized_source(args: argparse.Namespace) -> tuple[str, str]:
    """--synthesize: the folder keyword_source speaks the keywords into (joined with ROOT's clips),
    and the keywords as its class names."""
    from .keyword_source import DEFAULT_SPEAKERS, source_for

    if not args.synthesize:
        raise ConfigError("--synthesize-speakers/--synthesize-engines: only with --synthesize")
    if args.keywords is None:
        raise ConfigError('--synthesize: give the words or phrases to speak with --keywords, e.g. --keywords "hey jarvis"')
    source, folders = source_for(keywords_option(args.keywords), args.root,
                                 speakers=args.synthesize_speakers or DEFAULT_SPEAKERS, engines=args.synthesize_engines)
    return str(source), ",".join(folders)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m audionet_ray.prepare", formatter_class=log.HelpFormatter,
                                description="decode a Speech Commands-style folder into Parquet shards, once")
    p.add_argument("root", help="dataset root: one folder of clips per word (with --synthesize: optional)")
    p.add_argument("out", nargs="?", help="output folder for shards and manifest.json")
    p.add_argument("--words", help="comma-separated words to keep as classes (default: all)")
    p.add_argument("--keywords", help="a keyword task: these words, _unknown_ (every other word) and _silence_ "
                                      "(from the background noise, if the dataset has any)")
    p.add_argument("--unknown", action="store_true", help="with --words: other words become _unknown_")
    p.add_argument("--silence", action="store_true", help="add a _silence_ class cut from background noise")
    p.add_argument("--strict", action="store_true", help="fail on the first bad file instead of skipping it")
    p.add_argument("--jobs", type=int, default=None, help="decoding processes (default: CPUs, max 8)")
    p.add_argument("--window", metavar="SECONDS",
                   help=f"clip length: longer clips are cut, shorter ones padded ({WINDOW_RANGE_S[0]:g}-"
                        f"{WINDOW_RANGE_S[1]:g} s; default: the source's {SOURCE_MANIFEST} clip_samples, else 1)")
    p.add_argument("--synthesize", action="store_true",
                   help="with --keywords: keywords (words or phrases) that are not folders of ROOT, or all of "
                        "them without ROOT, are spoken by espeak-ng with confusable negatives (keyword_source)")
    p.add_argument("--synthesize-speakers", type=int, metavar="N", help="with --synthesize: speakers (default 120)")
    p.add_argument("--synthesize-engines", metavar="E,..", help="with --synthesize: espeak, espeak-klatt (default: both)")
    log.add_option(p)
    log.add_renamed(p, "--workers", "--jobs", type=int)  # --jobs: processes, as speech_data and far_field name them
    return p


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    log.setup(args.log_level)
    if args.out is None:  # `prepare --synthesize --keywords "hey jarvis" OUT`: the one path is OUT
        args.root, args.out = (None, args.root) if args.synthesize else ap.error("OUT is missing")
    words = [w.strip() for w in args.words.split(",") if w.strip()] if args.words else None
    try:
        if args.synthesize or args.synthesize_speakers is not None or args.synthesize_engines is not None:
            args.root, args.keywords = _synthesized_source(args)
        if args.keywords is not None and (words or args.unknown or args.silence):
            raise DatasetError("--keywords: give either --keywords or --words/--unknown/--silence, not both")
        if args.keywords is not None:

            keywords = keywords_option(args.keywords)
            opts = keyword_options(args.root, keywords)
            words, args.unknown, args.silence = opts.words, opts.unknown, opts.silence
        if args.unknown and not words:
            raise DatasetError("--unknown needs --words (the words that stay classes of their own)")
        if args.jobs is not None and args.jobs < 1:
            raise DatasetError(f"--jobs must be at least 1, got {args.jobs}")
        clip_samples = resolve_clip_samples(args.root, None if args.window is None else window_option(args.window))
        out = local_cache(args.out, "prepared") if is_uri(args.out) else args.out  # a bucket: prepared here first
        m = prepare(args.root, out, PrepareOptions(words, args.unknown, args.silence, args.strict,
                                                   clip_samples=clip_samples), workers=args.jobs,
                    progress=not log.quiet())
        if is_uri(args.out):
            publish(out, args.out)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. OUT on a read-only or full disk
        print(f"error: {escape_path(e.filename or args.out)}: {e.strerror or e} (check that OUT is writable)", file=sys.stderr)
        return 2
    summary = summary_line(m)
    (logger.warning if "warning: " in summary else logger.info)(summary)  # e.g. one class: said at any level
    logger.info(f"manifest: {escape_path(location(args.out) / 'manifest.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
