"""Decode every clip once into Parquet shards, so training streams a few large files.

Per small file Ray Data costs ~0.7 ms; a search reads its dataset dozens of times. Decoding
once (in parallel) into int16 shards turns every later epoch into sequential reads, and keeps
bad files out of the search for good: each is skipped here, with its reason in manifest.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .audio import CLIP_SAMPLES, SAMPLE_RATE, BadClip, load_clip, read_audio, to_int16
from .discover import SILENCE, DatasetError, Discovery, discover, speaker_bucket

FORMAT_VERSION = 1
ROWS_PER_SHARD = 2048
ROW_GROUP = 256
MANIFEST = "manifest.json"
NOISE_FILE = "noise.npy"


@dataclass
class PrepareOptions:
    words: list[str] | None = None
    unknown: bool = False
    silence: bool = False
    strict: bool = False
    seed: int = 0


SCHEMA = pa.schema([
    ("pcm", pa.list_(pa.int16(), CLIP_SAMPLES)),
    ("label", pa.int32()),
    ("speaker", pa.string()),
    ("path", pa.string()),
    ("split", pa.string()),
    ("bucket", pa.float64()),
])


def _cache_key(found: Discovery, opts: PrepareOptions) -> str:
    """Changes when any file, its size or mtime, or an option changes: then we prepare again."""
    h = hashlib.sha256(json.dumps([FORMAT_VERSION, opts.words, opts.unknown, opts.silence, opts.seed]).encode())
    root = Path(found.root)
    for rel in [it.path for it in found.items] + found.noise_files:
        st = (root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decode(path: str) -> tuple[np.ndarray | None, str | None]:
    try:
        return load_clip(path), None
    except BadClip as e:
        return None, str(e)


def _silence_clips(noise: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """_silence_ examples: one-second cuts of background noise at random low volume."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = int(rng.integers(0, max(1, len(noise) - CLIP_SAMPLES)))
        seg = noise[start:start + CLIP_SAMPLES].astype(np.float32) * rng.uniform(0.0, 1.0)
        out.append(np.pad(seg, (0, CLIP_SAMPLES - len(seg))).astype(np.int16))
    return out


class _ShardWriter:
    def __init__(self, out: Path):
        self.out, self.rows, self.shards = out, [], []

    def add(self, pcm: np.ndarray, label: int, speaker: str, path: str, split: str) -> None:
        self.rows.append((pcm, label, speaker, path, split))
        if len(self.rows) >= ROWS_PER_SHARD:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        pcm, label, speaker, path, split = zip(*self.rows)
        flat = pa.array(np.stack(pcm).ravel(), pa.int16())
        table = pa.table({
            "pcm": pa.FixedSizeListArray.from_arrays(flat, CLIP_SAMPLES),
            "label": pa.array(label, pa.int32()),
            "speaker": pa.array(speaker, pa.string()),
            "path": pa.array(path, pa.string()),
            "split": pa.array(split, pa.string()),
            "bucket": pa.array([speaker_bucket(s) for s in speaker], pa.float64()),
        }, schema=SCHEMA)
        name = f"part-{len(self.shards):05d}.parquet"
        pq.write_table(table, self.out / name, row_group_size=ROW_GROUP,
                       use_dictionary=["speaker", "split"], compression="zstd", compression_level=1)
        self.shards.append(name)
        self.rows = []


def prepare(
    root: str | Path,
    out: str | Path,
    opts: PrepareOptions | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Prepare `root` into `out` unless `out` already holds the same data; returns the manifest."""
    opts = opts or PrepareOptions()
    out = Path(out).expanduser()
    found = discover(root, opts.words, opts.unknown, opts.silence)
    key = _cache_key(found, opts)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("cache_key") == key:
            old["cached"] = True
            return old
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("part-*.parquet"):
        stale.unlink()
    manifest_path.unlink(missing_ok=True)

    rootp = Path(found.root)
    skipped: list[dict] = [{"path": f"{c}/", "reason": "empty class folder"} for c in found.empty_classes]
    noise_parts = []
    for rel in found.noise_files:
        try:
            noise_parts.append(to_int16(read_audio(rootp / rel)))
        except BadClip as e:
            skipped.append({"path": rel, "reason": str(e)})
    noise = np.concatenate(noise_parts) if noise_parts else np.zeros(0, np.int16)
    np.save(out / NOISE_FILE, noise, allow_pickle=False)

    writer = _ShardWriter(out)
    counts: dict[str, dict[str, int]] = {"trainval": {}, "test": {}}
    paths = [str(rootp / it.path) for it in found.items]
    workers = workers or min(8, os.cpu_count() or 1)
    bar = tqdm(total=len(paths), desc="decoding clips", unit="clip", disable=not progress)
    with ProcessPoolExecutor(workers) as pool:
        for it, (pcm, reason) in zip(found.items, pool.map(_decode, paths, chunksize=64)):
            bar.update()
            if pcm is None:
                skipped.append({"path": it.path, "reason": reason})
                if opts.strict:
                    bar.close()
                    raise DatasetError(f"{rootp / it.path}: {reason} (--strict turns skips into errors)")
                continue
            writer.add(pcm, it.label, it.speaker, it.path, it.split)
            c = counts[it.split]
            c[found.classes[it.label]] = c.get(found.classes[it.label], 0) + 1
    bar.close()
    if opts.silence:
        n = max(1, sum(counts["trainval"].values()) // max(1, len(found.classes) - 1))
        for i, pcm in enumerate(_silence_clips(noise, n, opts.seed)):
            spk = f"silence{i:05d}"
            split = "test" if speaker_bucket(spk, "test:") < 0.1 else "trainval"
            writer.add(pcm, found.classes.index(SILENCE), spk, f"{SILENCE}/{i}", split)
            counts[split][SILENCE] = counts[split].get(SILENCE, 0) + 1
    writer.flush()
    if not writer.shards:
        raise DatasetError(f"{root}: no clip could be read ({len(skipped)} skipped); see the reasons with --strict")

    manifest = {
        "format": FORMAT_VERSION,
        "cache_key": key,
        "source": found.root,
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "classes": found.classes,
        "counts": counts,
        "n_clips": sum(sum(c.values()) for c in counts.values()),
        "noise_samples": int(len(noise)),
        "shards": writer.shards,
        "skipped": skipped,
        "options": {"words": opts.words, "unknown": opts.unknown, "silence": opts.silence},
        "seconds": round(time.time() - t0, 2),
    }
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(manifest_path)  # written last and atomically: its presence means "complete"
    manifest["cached"] = False
    return manifest


def load_manifest(prepared: str | Path) -> dict:
    path = Path(prepared).expanduser() / MANIFEST
    if not path.exists():
        raise DatasetError(f"{path.parent} is not a prepared dataset (no {MANIFEST}): run `python -m audionet_ray.data prepare DATA_ROOT OUT` first")
    return json.loads(path.read_text())


def summary_line(m: dict) -> str:
    n_skip = len(m["skipped"])
    why = {}
    for s in m["skipped"]:
        why[s["reason"].split(" (")[0]] = why.get(s["reason"].split(" (")[0], 0) + 1
    reasons = "; ".join(f"{k}: {v}" for k, v in sorted(why.items()))
    state = "cached, nothing to do" if m.get("cached") else f"{m['seconds']} s"
    return (f"prepared {m['n_clips']} clips in {len(m['classes'])} classes "
            f"({sum(m['counts']['trainval'].values())} train/val, {sum(m['counts']['test'].values())} test), "
            f"skipped {n_skip}{' (' + reasons + ')' if n_skip else ''} [{state}]")
