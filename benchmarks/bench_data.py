"""Data pipeline figures: preparing WAVs, streaming augmented batches, iter_torch_batches, memory.

Every figure is measured next to its baseline in the same process run (this machine is shared;
the load average is printed with the figures):

  prepare    WAV files/s of `prepare()` (decode, check, Parquet) against a bare single-process
             `soundfile.read(dtype="int16")` loop over the same files
  stream     clips/s delivered as augmented float32 torch batches: Ray Data (`split_datasets`
             -> `torch_batches` with PcmCollate -> `augment` on CPU) against a bare loop in one
             process (pyarrow reads the same shards, the same speaker filter, numpy augments)
  iterator   where the streaming time goes (ray-project/ray#50128): pyarrow reading alone, Ray's
             iter_batches, iter_torch_batches with PcmCollate (with and without the shuffle
             buffer), the same over a materialised dataset (iterator cost alone), and `augment`
  memory     peak RSS of this process (the consumer) and of its Ray workers while streaming a
             dataset 1x and 10x the size (shards hard-linked, nothing new on disk)

    python benchmarks/bench_data.py            # ~2-3 min on 2 cores
    python benchmarks/bench_data.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, machine, machine_line, median, print_table, write_json  # noqa: E402

TRAIN_RATIO = 0.9


# ----------------------------------------------------------------------------- datasets

def wav_dataset(n_copies: int) -> Path:
    """The demo data (24 speakers x 3 clips x 10 words = 720 WAVs), its clips copied under new
    speaker names `n_copies` times: a realistic number of small files without minutes of synthesis."""
    from audionet_ray.corpus.demo_data import generate

    base = CACHE / "bench" / "demo-24x3"
    if not (base / "testing_list.txt").exists():
        generate(base, speakers=24, clips_per_speaker=3)
    if n_copies <= 1:
        return base
    root = CACHE / "bench" / f"demo-24x3-copies{n_copies}"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(base / "_background_noise_", root / "_background_noise_")
        for word in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("_")):
            (root / word.name).mkdir(parents=True)
            for f in word.glob("*.wav"):
                for c in range(n_copies):
                    shutil.copyfile(f, root / word.name / f"c{c:03d}{f.name}")  # speaker c<copy><id>
        (root / "done").write_text("")
    return root


def replicated(prepared: Path, times: int) -> Path:
    """A prepared dataset `times` as large: its train/val shards hard-linked `times` over."""
    from audionet_ray.corpus.prepare import load_manifest

    if times == 1:
        return prepared
    m = load_manifest(prepared)
    out = prepared.parent / f"{prepared.name}-x{times}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shards = []
    for t in range(times):
        for s in m["split_shards"]["trainval"]:
            name = f"trainval-r{t:02d}-{s.split('-')[-1]}"
            os.link(prepared / s, out / name)
            shards.append(name)
    for s in m["split_shards"]["test"]:
        os.link(prepared / s, out / s)
    shutil.copyfile(prepared / "noise.npy", out / "noise.npy")
    m["split_shards"]["trainval"] = shards
    m["shards"] = shards + m["split_shards"]["test"]
    m["n_clips"] *= times
    (out / "manifest.json").write_text(json.dumps(m))
    return out


# ----------------------------------------------------------------------------- prepare

def bench_prepare(root: Path, workers: int) -> dict:
    import soundfile as sf

    from audionet_ray.corpus.prepare import prepare

    files = sorted(str(p) for p in root.glob("[!_]*/*.wav"))
    os.sync()
    t = time.perf_counter()
    for f in files:
        sf.read(f, dtype="int16")
    bare = len(files) / (time.perf_counter() - t)
    out = CACHE / "bench" / f"prepared-{root.name}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    m = prepare(root, out, workers=workers, progress=False)
    ours = len(files) / (time.perf_counter() - t)
    t = time.perf_counter()
    again = prepare(root, out, workers=workers, progress=False)
    cached_s = time.perf_counter() - t
    assert again["cached"], "second prepare reused the first"
    return {"files": len(files), "workers": workers, "bare_files_s": bare, "prepare_files_s": ours,
            "ratio": ours / bare, "cached_s": cached_s, "prepared": str(out), "n_clips": m["n_clips"]}


# ----------------------------------------------------------------------------- streaming

def numpy_augment(pcm: np.ndarray, rng: np.random.Generator, noise: np.ndarray, amp=200, max_shift=250,
                  bg_prob=0.8, bg_vol=0.1) -> np.ndarray:
    """The same recipe as audionet_ray.pipeline.augment, written as one would in numpy (the baseline)."""
    b, n = pcm.shape
    shift = rng.integers(-max_shift, max_shift + 1, b)
    x = np.empty((b, n), np.float32)
    for i, s in enumerate(shift):  # np.roll per clip, without its temporaries
        if s >= 0:
            x[i, s:], x[i, :s] = pcm[i, : n - s], pcm[i, n - s:]
        else:
            x[i, : n + s], x[i, n + s:] = pcm[i, -s:], pcm[i, :-s]
    if len(noise) > n:
        start = rng.integers(0, len(noise) - n + 1, b)
        vol = rng.random(b, dtype=np.float32) * bg_vol * (rng.random(b) < bg_prob)
        x += np.lib.stride_tricks.sliding_window_view(noise, n)[start] * vol[:, None]
    x += rng.uniform(-amp, amp, (b, n)).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    std = np.sqrt(np.einsum("ij,ij->i", x, x) / (n - 1))
    x /= (std + 1e-5)[:, None]
    return x


def bare_epoch(prepared: Path, batch: int, epoch: int, augment_too: bool = True) -> tuple[int, float]:
    """One process: pyarrow reads the train rows, numpy augments; shuffled files and batches."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch

    from audionet_ray.pipeline.data import load_noise
    from audionet_ray.corpus.prepare import load_manifest, pcm_from_binary

    m = load_manifest(prepared)
    rng = np.random.default_rng(epoch)
    noise = load_noise(prepared)
    files = [prepared / s for s in m["split_shards"]["trainval"]]
    rng.shuffle(files)
    n, t = 0, time.perf_counter()
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=batch, columns=["pcm", "label", "bucket"]):
            rb = rb.filter(pc.less(rb.column("bucket"), TRAIN_RATIO))
            pcm = pcm_from_binary(rb.column("pcm"))
            order = rng.permutation(len(pcm))
            labels = torch.from_numpy(rb.column("label").to_numpy()[order].astype(np.int64))
            if augment_too:
                x = torch.from_numpy(numpy_augment(pcm[order], rng, noise))
            else:
                x = torch.from_numpy(pcm[order])
            n += len(labels)
    return n, time.perf_counter() - t


def ray_epoch(prepared: Path, batch: int, epoch: int, mode: str = "augment", ds=None) -> tuple[int, float]:
    """The pipeline as training uses it; `mode` picks how far along it we stop."""
    import torch

    from audionet_ray.pipeline.augment import AugmentConfig, augment, epoch_generator
    from audionet_ray.pipeline.data import load_noise, split_datasets, torch_batches

    t = time.perf_counter()
    if ds is None:
        ds = split_datasets(prepared, TRAIN_RATIO, ("train",))["train"]
    n = 0
    if mode == "iter_batches":
        for b in ds.iter_batches(batch_size=batch, batch_format="pyarrow", prefetch_batches=2):
            n += b.num_rows
    elif mode in ("torch", "torch_noshuffle"):
        for clips, y in torch_batches(ds, batch, shuffle_seed=epoch if mode == "torch" else None):
            n += len(y)
    else:
        noise = torch.from_numpy(load_noise(prepared))
        gen = epoch_generator(0, epoch, 0, torch.device("cpu"))
        for clips, y in torch_batches(ds, batch, shuffle_seed=epoch):
            x = augment(clips, gen, AugmentConfig(), noise)
            n += len(y)
    return n, time.perf_counter() - t


def augment_only(prepared: Path, batch: int, reps: int) -> float:
    import torch

    from audionet_ray.pipeline.augment import AugmentConfig, augment, epoch_generator
    from audionet_ray.pipeline.data import load_noise

    noise = torch.from_numpy(load_noise(prepared))
    clips = (torch.randn(batch, 16_000) * 3000).to(torch.int16)
    gen = epoch_generator(0, 0, 0, torch.device("cpu"))
    augment(clips, gen, AugmentConfig(), noise)
    t = time.perf_counter()
    for _ in range(reps):
        augment(clips, gen, AugmentConfig(), noise)
    torch_rate = reps * batch / (time.perf_counter() - t)
    rng, n16 = np.random.default_rng(0), noise
    t = time.perf_counter()
    for _ in range(reps):
        numpy_augment(clips.numpy(), rng, n16)
    return {"torch_clips_s": torch_rate, "numpy_clips_s": reps * batch / (time.perf_counter() - t)}


# ----------------------------------------------------------------------------- memory

def _rss_kb(pid: int) -> tuple[int, int]:
    """(private, shared) resident kB: RssAnon + RssFile, and RssShmem -- the pages of Ray's
    object store this process has mapped, which the store's own size bounds, not the dataset's."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                fields[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return fields.get("RssAnon", 0) + fields.get("RssFile", 0), fields.get("RssShmem", 0)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class PeakRSS:
    """Samples RSS of this process and, apart, of its Ray worker processes, every 50 ms: private
    memory (what grows if a pipeline holds data it should not) and object-store pages apart."""

    def __init__(self):
        self.me = self.workers = self.me_shm = self.workers_shm = 0
        self._stop = threading.Event()

    def _run(self):
        pid = os.getpid()
        kids, last = [], 0.0
        while not self._stop.is_set():
            if time.time() - last > 1.0:
                kids, last = [k for k in _descendants(pid) if "ray::" in _cmd(k)], time.time()
            me, shm = _rss_kb(pid)
            self.me, self.me_shm = max(self.me, me), max(self.me_shm, shm)
            ks = [_rss_kb(k) for k in kids]
            self.workers = max(self.workers, sum(k[0] for k in ks))
            self.workers_shm = max(self.workers_shm, max((k[1] for k in ks), default=0))
            self._stop.wait(0.05)

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _store_mb() -> float:
    import ray

    return ray.cluster_resources().get("object_store_memory", 0) / 2**20 if ray.is_initialized() else float("nan")


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data, one epoch each: a smoke run")
    ap.add_argument("--copies", type=int, default=None, help="copies of the 720 demo WAVs (default 10; quick 2)")
    ap.add_argument("--epochs", type=int, default=None, help="streaming epochs per variant (default 3; quick 1)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--cpus", type=int, default=None, help="CPUs for Ray (default: all)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    copies = args.copies or (2 if args.quick else 10)
    epochs = args.epochs or (1 if args.quick else 3)
    cpus = args.cpus or os.cpu_count()
    info = machine()
    print(machine_line(info), flush=True)
    fig: dict = {"machine": info, "batch_size": args.batch_size, "cpus": cpus}

    # prepare ---------------------------------------------------------------
    root = wav_dataset(copies)
    p = bench_prepare(root, workers=min(8, cpus))
    fig["prepare"] = p
    print(f"\nprepare: {p['files']} WAV files, {p['workers']} workers")
    print_table([
        {"": "bare soundfile loop, 1 process", "files/s": p["bare_files_s"], "x bare": 1.0},
        {"": f"prepare(), {p['workers']} processes", "files/s": p["prepare_files_s"], "x bare": p["ratio"]},
    ])
    print(f"second prepare on unchanged data: {p['cached_s']:.2f} s (cached)")
    prepared = Path(p["prepared"])

    # streaming -------------------------------------------------------------
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.DataContext.get_current().print_on_execution_start = False
    import torch

    fig["torch_threads"] = torch.get_num_threads()
    rows = []

    def run(name: str, fn, n_epochs: int) -> dict:
        rates, first = [], None
        for e in range(n_epochs):
            n, dt = fn(e)
            rates.append(n / dt)
            first = first or n
        r = {"variant": name, "clips": first, "clips/s": median(rates), "best": max(rates), "epochs": len(rates)}
        rows.append(r)
        print(f"  {name}: {r['clips/s']:.0f} clips/s (best {r['best']:.0f})", flush=True)
        return r

    warm = ray_epoch(prepared, args.batch_size, 99)  # start Ray Data's workers once, not timed
    print(f"\nstreaming {warm[0]} train clips (train_ratio {TRAIN_RATIO}), batch {args.batch_size}, "
          f"{epochs} epochs each, Ray with {cpus} CPUs, torch {fig['torch_threads']} threads", flush=True)
    # interleave bare and ray so both see the same load
    variants = [
        ("bare: pyarrow + numpy augment, 1 process", lambda e: bare_epoch(prepared, args.batch_size, e)),
        ("ray: read_parquet -> filter -> iter_torch_batches -> augment", lambda e: ray_epoch(prepared, args.batch_size, e)),
        ("bare: pyarrow read only", lambda e: bare_epoch(prepared, args.batch_size, e, augment_too=False)),
        ("ray: iter_batches (pyarrow) only", lambda e: ray_epoch(prepared, args.batch_size, e, "iter_batches")),
        ("ray: iter_torch_batches + PcmCollate, no shuffle", lambda e: ray_epoch(prepared, args.batch_size, e, "torch_noshuffle")),
        ("ray: iter_torch_batches + PcmCollate + shuffle buffer", lambda e: ray_epoch(prepared, args.batch_size, e, "torch")),
    ]
    results = {name: run(name, fn, epochs) for name, fn in variants}
    from audionet_ray.pipeline.data import split_datasets

    mat = split_datasets(prepared, TRAIN_RATIO, ("train",))["train"].materialize()
    results["materialised"] = run("ray: iter_torch_batches over a materialised dataset (iterator alone)",
                                  lambda e: ray_epoch(prepared, args.batch_size, e, "torch", ds=mat), epochs)
    del mat
    aug = augment_only(prepared, args.batch_size, reps=4 if args.quick else 20)
    rows.append({"variant": "augment alone, torch (CPU)", "clips/s": aug["torch_clips_s"]})
    rows.append({"variant": "augment alone, numpy", "clips/s": aug["numpy_clips_s"]})
    bare = results[variants[0][0]]["clips/s"]
    for r in rows:
        r["x bare"] = r["clips/s"] / bare
    print()
    print_table(rows, ["variant", "clips", "clips/s", "best", "x bare"])
    fig["stream"] = rows
    fig["ratio_stream"] = results[variants[1][0]]["clips/s"] / bare

    # memory ----------------------------------------------------------------
    big = replicated(prepared, 10)
    mem = []
    for label, data in (("1x", prepared), ("10x", big)):
        with PeakRSS() as peak:
            n, dt = ray_epoch(data, args.batch_size, 0)
        mem.append({"dataset": label, "clips": n, "clips/s": n / dt, "peak RSS MB (this process)": peak.me / 1024,
                    "peak RSS MB (Ray workers)": peak.workers / 1024,
                    "object store pages MB (this process)": peak.me_shm / 1024,
                    "object store pages MB (one worker, max)": peak.workers_shm / 1024})
        print(f"  memory {label}: {n} clips, peak private RSS {peak.me / 1024:.0f} MB here, "
              f"{peak.workers / 1024:.0f} MB in Ray workers; object store pages mapped "
              f"{peak.me_shm / 1024:.0f} MB here", flush=True)
    growth = mem[1]["peak RSS MB (this process)"] / mem[0]["peak RSS MB (this process)"] - 1
    wgrowth = mem[1]["peak RSS MB (Ray workers)"] / max(mem[0]["peak RSS MB (Ray workers)"], 1) - 1
    print()
    print_table(mem)
    print(f"peak private RSS growth at 10x the data: {100 * growth:+.1f} % here, {100 * wgrowth:+.1f} % in Ray "
          f"workers (goal < 20 %); object store pages are bounded by the store ({_store_mb():.0f} MB here)")
    fig["memory"] = {"rows": mem, "growth": growth, "worker_growth": wgrowth}
    shutil.rmtree(big, ignore_errors=True)
    ray.shutdown()

    print(f"\nsummary: prepare {p['ratio']:.2f}x the bare soundfile loop; streaming augmented batches "
          f"{fig['ratio_stream']:.2f}x the bare pyarrow+numpy loop; memory {100 * growth:+.1f} % at 10x data")
    print(machine_line())
    write_json(args.json, fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
