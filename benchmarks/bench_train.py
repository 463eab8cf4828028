"""Ray Train against a bare PyTorch loop: clips/s of one worker, and where Ray's time goes.

All variants train the same AudioNet (same seed, batch, NAdam, augmentation, validation pass and
checkpoint files every `checkpoint_every` epochs) on the same rows of prepared demo data, in
rounds in one process run, so that all see the same machine load:

  ray         Ray Train with the real loop (`audionet_ray.training.train.build_trainer`), as shipped:
              data that fits the worker's memory budget is read through Ray Data once, then
              served from memory every epoch
  ray-stream  the same with AUDIONET_MEMORY_MB=0: every epoch streams through Ray Data (what
              data above the budget does, and what every run did before)
  bare        no Ray: the rows as int16 tensors in memory, a plain loop, as many torch threads
              as Ray gives the worker (Ray sets OMP_NUM_THREADS, and so torch's threads, from
              the worker's num_cpus)

The real Ray loop is timed from inside without changing it: a wrapper around
`train_loop_per_worker` times its calls of the batch iterators, `save_checkpoint` and
`ray.train.report` and appends the times to a file. Figures:

  steady clips/s   train clips / time from the epoch's first batch to its last step
  epoch clips/s    train clips / whole epoch (pipeline start, train, validation, checkpoint, report)
  run clips/s      all train clips / whole run, start-up included (see bench_startup.py)
  ... per CPU-second  the same clips / CPU time of the training process (the Ray worker, or
                   the bare loop's process): robust to a busy machine, blind to other processes

Goal (issue 8): Ray Train at least 0.9x the bare loop on CPU with the small AudioNet.

    python benchmarks/bench_train.py            # demo data, width 32, 4 epochs x 2 rounds
    python benchmarks/bench_train.py --quick    # a tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import demo_prepared, machine, machine_line, median, print_table, write_json  # noqa: E402


# ----------------------------------------------------------------------------- the Ray side

def instrumented_loop(events_path: str, memory_mb: str | None):
    """`train_loop_per_worker`, timed from outside: each timed call appends a JSON line.

    `memory_mb` sets AUDIONET_MEMORY_MB for this run ("0": stream every epoch through Ray Data;
    None: the default, in memory when the data is small).
    """

    def loop(config: dict) -> None:
        import json as _json
        import os as _os
        import time as _time

        import ray.train as rt
        import torch as _torch

        import audionet_ray.training.checkpoint as C
        import audionet_ray.pipeline.data as D
        import audionet_ray.training.train as T

        def emit(ev: str, **kw) -> None:
            with open(events_path, "a") as f:
                f.write(_json.dumps({"ev": ev, "t": _time.time(), "cpu": _time.process_time(), **kw}) + "\n")

        if memory_mb is not None:
            _os.environ[D.MEMORY_ENV] = memory_mb
        emit("loop_start", threads=_torch.get_num_threads(), omp=_os.environ.get("OMP_NUM_THREADS"))
        real = {name: getattr(T, name) for name in ("torch_batches", "_memory_batches", "_read_shard")}
        real_save = C.save
        real_report = rt.report
        filling = []

        def timed(real_fn):
            def batches(source, batch_size, shuffle_seed=None, **kw):
                if filling:  # _read_shard's own pass: timed as a whole
                    yield from real_fn(source, batch_size, shuffle_seed, **kw)
                    return
                kind = "train" if shuffle_seed is not None else "val"
                emit(f"{kind}_start")
                yield from timed_iter(kind, real_fn(source, batch_size, shuffle_seed, **kw))
            return batches

        def timed_read(*a, **kw):
            emit("read_shard_start")
            filling.append(1)
            try:
                return real["_read_shard"](*a, **kw)
            finally:
                filling.clear()
                emit("read_shard_end")

        def timed_iter(kind, batches):
            it = iter(batches)
            wait, n, clips = 0.0, 0, 0
            while True:
                t = _time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    break
                dt = _time.perf_counter() - t
                if n == 0:
                    emit(f"{kind}_first_batch", wait=dt)
                wait, n, clips = wait + dt, n + 1, clips + len(batch[1])
                yield batch
            emit(f"{kind}_end", wait=wait, batches=n, clips=clips)

        def timed_save(*a, **kw):
            emit("save_start")
            real_save(*a, **kw)
            emit("save_end")

        def timed_report(metrics, checkpoint=None, **kw):
            emit("report_start", checkpoint=checkpoint is not None)
            real_report(metrics, checkpoint=checkpoint, **kw)
            emit("report_end")

        T.torch_batches, T._memory_batches = timed(real["torch_batches"]), timed(real["_memory_batches"])
        T._read_shard, C.save, rt.report = timed_read, timed_save, timed_report
        try:
            T.train_loop_per_worker(config)
        finally:
            for name, fn in real.items():
                setattr(T, name, fn)
            C.save = real_save
            rt.report = real_report
            _os.environ.pop(D.MEMORY_ENV, None)
            emit("loop_end")

    return loop


def ray_run(cfg, cpus_per_worker: float, gpu: bool, storage: str, name: str, memory_mb: str | None) -> dict:
    """One Ray Train run with the real loop; per-epoch timings from the worker's events."""
    from ray.train.torch import TorchTrainer

    from audionet_ray.training.config import RunSettings
    from audionet_ray.training.train import build_trainer

    events_path = str(Path(storage) / f"{name}.events.jsonl")
    from audionet_ray.pipeline.data import MEMORY_ENV

    if memory_mb is not None:  # the driver decides memory or streaming, in build_trainer
        os.environ[MEMORY_ENV] = memory_mb
    try:
        real = build_trainer(cfg, RunSettings(storage=storage, name=name, workers=1, cpus_per_worker=cpus_per_worker,
                                              gpus_per_worker=1.0 if gpu else 0.0,
                                              keep_checkpoints=2, max_failures=0))
    finally:
        os.environ.pop(MEMORY_ENV, None)
    trainer = TorchTrainer(instrumented_loop(events_path, memory_mb), train_loop_config=real.train_loop_config,
                           scaling_config=real.scaling_config, run_config=real.run_config,
                           datasets=real.datasets, dataset_config=real.data_config)
    t_fit = time.time()
    trainer.fit()
    t_done = time.time()
    events = [json.loads(line) for line in Path(events_path).read_text().splitlines()]
    fill = sum(b["t"] - a["t"] for a, b in zip([e for e in events if e["ev"] == "read_shard_start"],
                                               [e for e in events if e["ev"] == "read_shard_end"]))
    return {"epochs": ray_epochs(events), "run_s": t_done - t_fit, "fill_s": fill,
            "startup_s": events[0]["t"] - t_fit, "shutdown_s": t_done - events[-1]["t"],
            "threads": events[0]["threads"]}


def ray_epochs(events: list[dict]) -> list[dict]:
    """Cut the worker's event stream into epochs (each starts at a `train_start`)."""
    starts = [i for i, e in enumerate(events) if e["ev"] == "train_start"]
    end = next(e for e in events if e["ev"] == "loop_end")
    out = []
    for k, i in enumerate(starts):
        j = starts[k + 1] if k + 1 < len(starts) else len(events)
        ev = events[i:j]
        t = {e["ev"]: e for e in ev}
        nxt = events[j] if j < len(events) else end
        first, tend = t["train_first_batch"], t["train_end"]
        report_s = sum(b["t"] - a["t"] for a, b in zip([e for e in ev if e["ev"] == "report_start"],
                                                        [e for e in ev if e["ev"] == "report_end"]))
        out.append({
            "clips": tend["clips"],
            "first_batch_s": first["wait"],  # Ray Data pipeline start for this epoch
            "steady_s": tend["t"] - first["t"],
            "data_wait_s": tend["wait"] - first["wait"],  # blocked on data after the first batch
            "train_s": tend["t"] - t["train_start"]["t"],
            "val_s": t["val_end"]["t"] - t["val_start"]["t"],
            "val_first_batch_s": t["val_first_batch"]["wait"] if "val_first_batch" in t else 0.0,
            "save_s": (t["save_end"]["t"] - t["save_start"]["t"]) if "save_start" in t else 0.0,
            "report_s": report_s,
            "checkpoint": bool(t.get("report_start", {}).get("checkpoint")),
            "epoch_s": nxt["t"] - t["train_start"]["t"],
            "steady_cpu_s": tend["cpu"] - first["cpu"],  # the worker process's CPU time
            "epoch_cpu_s": nxt["cpu"] - t["train_start"]["cpu"],
        })
    return out


# ----------------------------------------------------------------------------- the bare side

def load_rows(cfg) -> dict:
    """The rows Ray streams (same split functions), as in-memory int16 / int64 tensors."""
    import numpy as np
    import pyarrow as pa
    import torch

    from audionet_ray.pipeline.data import load_noise, split_datasets
    from audionet_ray.corpus.prepare import load_manifest, pcm_from_binary

    out = {"n_classes": len(load_manifest(cfg.data)["classes"]),
           "noise": torch.from_numpy(load_noise(cfg.data))}
    for name, ds in split_datasets(cfg.data, cfg.train_ratio, shuffle_files=False).items():
        tables = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        if not tables:  # e.g. no validation speakers in a tiny dataset
            out[name] = (torch.zeros(0, 16_000, dtype=torch.int16), torch.zeros(0, dtype=torch.int64))
            continue
        table = pa.concat_tables(tables)
        pcm = pcm_from_binary(table.column("pcm")).copy()  # writable, owned by torch
        out[name] = (torch.from_numpy(pcm), torch.from_numpy(table.column("label").to_numpy().astype(np.int64)))
    return out


def bare_run(cfg, rows: dict, threads: int, device: str, ckpt_dir: str) -> dict:
    """The same epochs as `train_loop_per_worker`, without Ray: plain tensors, plain loop."""
    import torch
    import torch.nn.functional as F

    from audionet_ray.pipeline.augment import augment, epoch_generator, standardise
    from audionet_ray.modeling.model import AudioNet, ModelConfig
    from audionet_ray.training.checkpoint import save as save_checkpoint
    from audionet_ray.training.train import _step_stats

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    t_run = time.time()
    dev = torch.device(device)
    on_gpu = dev.type == "cuda"
    model_cfg = ModelConfig(rows["n_classes"], cfg.model.width, cfg.model.dense, cfg.model.dropout)
    torch.manual_seed(cfg.seed)
    model = AudioNet.from_config(model_cfg).to(dev)
    opt = torch.optim.NAdam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay)
    noise = rows["noise"].to(dev)
    (tr_x, tr_y), (va_x, va_y) = rows["train"], rows["val"]
    if on_gpu:
        tr_x, tr_y, va_x, va_y = (t.pin_memory() for t in (tr_x, tr_y, va_x, va_y))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu and cfg.bf16)
    bs, n = cfg.batch_size, len(tr_y)
    epochs = []
    for epoch in range(1, cfg.epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        gen = epoch_generator(cfg.seed, epoch, 0, dev)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        stats = torch.zeros(3, device=dev)
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            pcm, y = tr_x[idx].to(dev, non_blocking=True), tr_y[idx].to(dev, non_blocking=True)
            x = augment(pcm, gen, cfg.augment, noise)
            with autocast:
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            stats += _step_stats(logits, y, loss)
        if on_gpu:
            torch.cuda.synchronize()
        t1, c1 = time.perf_counter(), time.process_time()
        model.eval()
        vstats = torch.zeros(3, device=dev)
        with torch.no_grad(), autocast:
            for i in range(0, len(va_y), max(bs, 256)):
                pcm, y = va_x[i:i + max(bs, 256)].to(dev), va_y[i:i + max(bs, 256)].to(dev)
                logits = model(standardise(pcm)).float()
                vstats += _step_stats(logits, y, F.cross_entropy(logits, y))
        s = torch.cat([stats, vstats]).tolist()
        t2 = time.perf_counter()
        metrics = {"epoch": epoch, "train_loss": s[0] / max(s[2], 1), "val_accuracy": s[4] / max(s[5], 1)}
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
            d = Path(ckpt_dir) / f"epoch{epoch}"
            d.mkdir(parents=True, exist_ok=True)
            save_checkpoint(d, model, opt, epoch, cfg, model_cfg, [str(c) for c in range(rows["n_classes"])], metrics)
        t3, c3 = time.perf_counter(), time.process_time()
        epochs.append({"clips": n, "first_batch_s": 0.0, "steady_s": t1 - t0, "data_wait_s": 0.0, "train_s": t1 - t0,
                       "val_s": t2 - t1, "save_s": t3 - t2, "report_s": 0.0, "epoch_s": t3 - t0,
                       "steady_cpu_s": c1 - c0, "epoch_cpu_s": c3 - c0, "val_accuracy": metrics["val_accuracy"]})
    t_end = time.time()
    torch.set_num_threads(before)
    return {"epochs": epochs, "run_s": t_end - t_run}


# ----------------------------------------------------------------------------- the table

VARIANTS = {  # name -> AUDIONET_MEMORY_MB for the Ray run (None: the bare loop)
    "ray": "",  # the default: small data is read once, then served from the worker's memory
    "ray-stream": "0",  # every epoch streamed through Ray Data (the behaviour for data above the budget)
    "bare": None,
}


def figures(run: dict) -> dict:
    """Rates and per-epoch costs of one run, over the epochs after the first (warm-up on both sides)."""
    eps = run["epochs"][1:] or run["epochs"]
    fig = {
        "steady_clips_s": median([e["clips"] / e["steady_s"] for e in eps]),
        "epoch_clips_s": median([e["clips"] / e["epoch_s"] for e in eps]),
        "run_clips_s": sum(e["clips"] for e in run["epochs"]) / run["run_s"],
        "steady_clips_per_cpu_s": median([e["clips"] / e["steady_cpu_s"] for e in eps]),
        "epoch_clips_per_cpu_s": median([e["clips"] / e["epoch_cpu_s"] for e in eps]),
        "train_pipeline_start_s": median([e["first_batch_s"] for e in eps]),
        "data_wait_after_first_batch_s": median([e["data_wait_s"] for e in eps]),
        "val_pass_s": median([e["val_s"] for e in eps]),
        "checkpoint_save_s": median([e["save_s"] for e in run["epochs"] if e["save_s"] > 0] or [0.0]),
        "report_with_checkpoint_s": median([e["report_s"] for e in run["epochs"] if e.get("checkpoint")] or [0.0]),
        "report_metrics_only_s": median([e["report_s"] for e in run["epochs"]
                                         if "checkpoint" in e and not e["checkpoint"]] or [0.0]),
    }
    for k in ("fill_s", "startup_s", "shutdown_s"):
        if k in run:
            fig[k] = run[k]
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny data and model, 3 epochs, 1 round: a smoke test")
    ap.add_argument("--data", help="a prepared dataset (default: the demo dataset, prepared once into the cache)")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--dense", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (ray, ray-stream, bare), interleaved")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="which of " + ", ".join(VARIANTS))
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--gpu", action="store_true", help="train on the GPU (Ray worker with 1 GPU; bare loop on cuda)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.dense, args.epochs, args.rounds, args.batch_size = 8, 32, 3, 1, 32
    variants = [v for v in args.variants.split(",") if v]
    if "bare" not in variants or any(v not in VARIANTS for v in variants):
        print(f"error: --variants: a comma list of {', '.join(VARIANTS)} including bare", file=sys.stderr)
        return 2

    import ray
    import torch

    from audionet_ray.training.config import TrainConfig
    from audionet_ray.core.ray_setup import init_ray

    if args.gpu and not torch.cuda.is_available():
        print("error: --gpu: torch sees no GPU here", file=sys.stderr)
        return 2
    data = args.data or str(demo_prepared(*((12, 2) if args.quick else (24, 3))))
    cfg = TrainConfig.from_dict(dict(data=str(data), epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, width=args.width,
                      dense=args.dense, seed=0, checkpoint_every=2, train_ratio=0.75 if args.quick else 0.9))
    threads = max(1, int(args.cpus_per_worker))  # what Ray gives the worker (OMP_NUM_THREADS)

    # As the CLIs start Ray: with its own dashboard, which Train's placement-group cleaner asks
    # whether a controller is alive (another Ray on the same machine would answer "dead").
    init_ray(log_to_driver=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    info = machine()
    print(f"machine: {machine_line(info)}")
    rows = load_rows(cfg)
    print(f"data: {data}: {len(rows['train'][1])} train clips, {len(rows['val'][1])} val clips; AudioNet width "
          f"{cfg.model.width} dense {cfg.model.dense}, batch {cfg.batch_size}, NAdam, {cfg.epochs} epochs, checkpoint every "
          f"{cfg.checkpoint_every}; worker {args.cpus_per_worker:g} CPU, {threads} torch thread(s) on both sides; "
          f"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S={os.environ['RAY_TRAIN_HEALTH_CHECK_INTERVAL_S']}", flush=True)

    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        for r in range(args.rounds):
            rnd = {"load_average": os.getloadavg()[0], "runs": {}}
            for v in variants:
                if v == "bare":
                    run = bare_run(cfg, rows, threads, "cuda" if args.gpu else "cpu", f"{tmp}/bare{r}")
                else:
                    run = ray_run(cfg, args.cpus_per_worker, args.gpu, tmp, f"{v}{r}", VARIANTS[v] or None)
                    if run["threads"] != threads:
                        print(f"warning: the Ray worker ran {run['threads']} torch threads, the bare loop {threads}")
                rnd["runs"][v] = {"figures": figures(run), **run}
                print(f"  round {r + 1} {v}: {rnd['runs'][v]['figures']['epoch_clips_s']:.1f} clips/s per epoch",
                      flush=True)
            rounds.append(rnd)
    ray.shutdown()

    table = []
    for key, label in (("steady_clips_s", "steady clips/s (first batch to last step)"),
                       ("epoch_clips_s", "epoch clips/s (whole epoch)"),
                       ("run_clips_s", "run clips/s (start-up included)"),
                       ("steady_clips_per_cpu_s", "steady clips per CPU-second (training process)"),
                       ("epoch_clips_per_cpu_s", "epoch clips per CPU-second (training process)")):
        for r, rnd in enumerate(rounds):
            f = {v: rnd["runs"][v]["figures"][key] for v in variants}
            table.append({"figure": label, "round": r + 1, **f,
                          **{f"{v}/bare": f[v] / f["bare"] for v in variants if v != "bare"}})
    print()
    print_table(table)
    print("\nper-epoch and one-off costs, seconds (median over epochs 2..):")
    keys = [k for k in figures(rounds[0]["runs"][variants[0]]) if "clips" not in k]
    keys += ["fill_s", "startup_s", "shutdown_s"]
    print_table([{"cost": k, **{f"{v} r{r + 1}": rnd["runs"][v]["figures"].get(k) for r, rnd in enumerate(rounds)
                                for v in variants}} for k in dict.fromkeys(keys)])
    ratios = {v: {key: median([rnd["runs"][v]["figures"][key] / rnd["runs"]["bare"]["figures"][key]
                               for rnd in rounds]) for key in ("steady_clips_s", "epoch_clips_s", "run_clips_s",
                                                               "epoch_clips_per_cpu_s")}
              for v in variants if v != "bare"}
    print()
    for v, rt in ratios.items():
        verdict = "met" if rt["epoch_clips_s"] >= 0.9 else "NOT met"
        print(f"{v}/bare, median of {len(rounds)} round(s): steady {rt['steady_clips_s']:.3f}x, whole epoch "
              f"{rt['epoch_clips_s']:.3f}x (goal >= 0.9x: {verdict}), whole run {rt['run_clips_s']:.3f}x; "
              f"per CPU-second of the training process, whole epoch {rt['epoch_clips_per_cpu_s']:.3f}x")
    print(f"load average now {os.getloadavg()[0]:.2f}")
    write_json(args.json, {"machine": info, "args": vars(args), "rounds": rounds, "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
