"""Which AudioNet variants and training recipes learn fast: val accuracy at epochs 2, 4 and the last.

Plain PyTorch, no Ray: every variant trains on the same in-memory clips with the same
augmentation (augment.py), batch order and initial seed as `train.py`, one after another in one
run, so the figures are side by side on the same load. The reference (no normalisation,
NAdam, constant lr) is the first row; each other row changes one or two settings from it.
The early epochs matter because a search's early-stopping rungs (ASHA at epochs 2-4) rank trials
by them: a variant at chance there gives the search nothing to rank.

    python benchmarks/bench_variants.py                       # the demo set (or --data a prepared/raw set)
    python benchmarks/bench_variants.py --data ~/speech-16x100 --epochs 10 --variants reference,batch,group
    python benchmarks/bench_variants.py --quick               # a smoke test: tiny model, 2 epochs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import demo_prepared, machine, machine_line, print_table, write_json  # noqa: E402

# the default space's augmentation: less uniform and background noise than the reference's
LIGHT = {"noise_amplitude": 50, "background_volume": 0.03}
REFERENCE_AUGMENT = {"noise_amplitude": 200, "background_volume": 0.1}

# name -> TrainConfig settings that differ from the reference recipe (below, in main)
VARIANTS: dict[str, dict] = {
    "reference": {},
    "batch": {"norm": "batch"},
    "group": {"norm": "group", "norm_groups": 8},
    "group1": {"norm": "group", "norm_groups": 1},  # one group: over channels and time
    "layer": {"norm": "layer"},
    "batch-avg": {"norm": "batch", "pool": "avg"},
    "batch-2dense": {"norm": "batch", "dense_layers": 2},
    "batch-lr3e-3": {"norm": "batch", "lr": 3e-3},
    "batch-lr3e-4": {"norm": "batch", "lr": 3e-4},
    "batch-cosine": {"norm": "batch", "schedule": "cosine", "warmup_epochs": 1.0},
    "batch-onecycle": {"norm": "batch", "schedule": "onecycle"},
    "batch-adamw": {"norm": "batch", "optimizer": "adamw", "weight_decay": 0.05},
    "batch-smooth": {"norm": "batch", "label_smoothing": 0.1},
    "batch-nodrop": {"norm": "batch", "dropout": 0.0},
    "reference-cosine": {"schedule": "cosine", "warmup_epochs": 1.0},
    "batch-avg-lr3e-3": {"norm": "batch", "pool": "avg", "lr": 3e-3},
    "batch-avg-cosine-lr3e-3": {"norm": "batch", "pool": "avg", "lr": 3e-3, "schedule": "cosine"},
    "batch-avg-w64": {"norm": "batch", "pool": "avg", "width": 64},
    "batch-avg-lr3e-3-w64": {"norm": "batch", "pool": "avg", "lr": 3e-3, "width": 64},
    # the filterbank front end and the recipe of the default space (search_spaces/default.yaml)
    "fb": {"norm": "batch", "pool": "avg", "lr": 3e-3, "frontend": "filterbank"},
    "fb-w64": {"norm": "batch", "pool": "avg", "lr": 3e-3, "frontend": "filterbank", "width": 64},
    "fb-f40": {"norm": "batch", "pool": "avg", "lr": 3e-3, "frontend": "filterbank", "filters": 40},
    "fb-lr1e-3": {"norm": "batch", "pool": "avg", "lr": 1e-3, "frontend": "filterbank"},
    **{f"{front}-w64-1d{extra}": {"norm": "batch", "pool": "avg", "lr": 3e-3, "frontend": fe, "width": 64,
                                  "dense_layers": 1, **LIGHT, **settings}
       for front, fe in (("wave", "conv"), ("fb", "filterbank"))
       for extra, settings in (("", {"schedule": "cosine"}), ("-constant", {}),
                               ("-refaug", {"schedule": "cosine", **REFERENCE_AUGMENT}),
                               ("-4dense", {"schedule": "cosine", "dense_layers": 4}))},
    "fb-w128-1d": {"norm": "batch", "pool": "avg", "lr": 3e-3, "frontend": "filterbank", "width": 128,
                   "dense_layers": 1, "schedule": "cosine", **LIGHT},
    "fb-w128-0d": {"norm": "batch", "pool": "avg", "lr": 3e-3, "frontend": "filterbank", "width": 128,
                   "dense_layers": 0, "schedule": "cosine", **LIGHT},
    "fb-w128-1d-ls-spec": {"norm": "batch", "pool": "avg", "lr": 3e-3, "frontend": "filterbank", "width": 128,
                           "dense_layers": 1, "schedule": "cosine", "label_smoothing": 0.1, "spec_augment": True,
                           **LIGHT},
    "fb-w128-1d-ls": {"norm": "batch", "pool": "avg", "lr": 3e-3, "frontend": "filterbank", "width": 128,
                      "dense_layers": 1, "schedule": "cosine", "label_smoothing": 0.1, **LIGHT},
}
# Far-field capture (augment.capture, issue 24) on the default space's recipe: how much, and what capacity
FAR = {"babble_prob": 0.3, "room_prob": 0.6, "mic_prob": 0.5, "snr_prob": 0.5, "snr_db": 0.0}
FAR_MILD = {"babble_prob": 0.2, "room_prob": 0.3, "mic_prob": 0.3, "snr_prob": 0.3, "snr_db": 5.0}
VARIANTS.update({
    "ff": {**VARIANTS["fb-w128-1d-ls"], **FAR},
    "ff-mild": {**VARIANTS["fb-w128-1d-ls"], **FAR_MILD},
    "ff-w192": {**VARIANTS["fb-w128-1d-ls"], **FAR, "width": 192},
    "ff-spec": {**VARIANTS["fb-w128-1d-ls"], **FAR, "spec_augment": True},
    "ff-0d": {**VARIANTS["fb-w128-1d-ls"], **FAR, "dense_layers": 0},
})


def load_split(prepared: Path, train_ratio: float, train_share: float = 1.0) -> dict:
    """train / val / test clips (int16) and labels from the Parquet shards, split by speaker
    bucket as `data.split_datasets` does, read with pyarrow (no Ray). `train_share` < 1 trains
    on fewer speakers (buckets below train_share x train_ratio), the validation ones unchanged."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from audionet_ray.pipeline.data import load_noise
    from audionet_ray.corpus.prepare import load_manifest, pcm_from_binary

    m = load_manifest(prepared)

    def read(part: str):
        xs, ys, bs = [], [], []
        for name in m["split_shards"][part]:
            t = pq.read_table(prepared / name, columns=["pcm", "label", "bucket"])
            xs.append(pcm_from_binary(t.column("pcm")).copy())
            ys.append(t.column("label").to_numpy().astype(np.int64))
            bs.append(t.column("bucket").to_numpy())
        if not xs:
            return np.zeros((0, 16_000), np.int16), np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(bs)

    x, y, b = read("trainval")
    xt, yt, _ = read("test")
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    return {"classes": m["classes"], "noise": t(load_noise(prepared)),
            "train": (t(x[b < train_share * train_ratio]), t(y[b < train_share * train_ratio])),
            "val": (t(x[b >= train_ratio]), t(y[b >= train_ratio])),
            "test": (t(xt), t(yt))}


def accuracy(model, data, batch: int = 256) -> float:
    import torch

    from audionet_ray.pipeline.augment import standardise

    x, y = data
    if not len(y):
        return float("nan")
    model.eval()
    ok = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            ok += (model(standardise(x[i:i + batch])).argmax(1) == y[i:i + batch]).sum().item()
    return ok / len(y)


def run_variant(cfg, rows: dict, report_at: set[int]) -> dict:
    """One training run as `train_loop_per_worker` does it on one worker; val accuracy per epoch."""
    import torch
    import torch.nn.functional as F

    from audionet_ray.pipeline.augment import Capture, augment, epoch_generator
    from audionet_ray.modeling.model import AudioNet, count_parameters
    from audionet_ray.training.train import make_optimizer, make_scheduler

    torch.manual_seed(cfg.seed)
    model = AudioNet.from_config(cfg.model_config(len(rows["classes"])))
    opt = make_optimizer(model, cfg)
    (x, y), n = rows["train"], len(rows["train"][1])
    sched = make_scheduler(opt, cfg, -(-n // cfg.batch_size))
    out = {"params": count_parameters(model), "val": {}, "train_loss": {}}
    cap = Capture.of(cfg.augment, cfg.seed, x.shape[1])  # far-field variants: made before the clock starts
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        gen = epoch_generator(cfg.seed, epoch, 0, torch.device("cpu"))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        loss_sum = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            logits = model(augment(x[idx], gen, cfg.augment, rows["noise"], cap=cap))
            loss = F.cross_entropy(logits, y[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.item() * len(idx)
        out["train_loss"][epoch] = loss_sum / n
        if epoch in report_at:
            out["val"][epoch] = accuracy(model, rows["val"])
    out["test"] = accuracy(model, rows["test"])
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a prepared or raw dataset (default: the demo set, prepared once into the cache)")
    ap.add_argument("--variants", default="reference,batch,group,layer,batch-avg,batch-cosine,batch-adamw",
                    help="comma list of: " + ", ".join(VARIANTS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--dense", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3, help="the reference recipe's lr (a variant may set its own)")
    ap.add_argument("--train-ratio", type=float, default=0.9)
    ap.add_argument("--train-share", type=float, default=1.0,
                    help="train on this share of the training speakers (a quicker run on a large set)")
    ap.add_argument("--seeds", default="0", help="comma list of seeds; each variant runs once per seed")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 epochs, two variants: a smoke test")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.dense, args.epochs, args.variants = 8, 32, 2, "reference,batch"
        args.train_ratio = 0.75  # the 12-speaker quick set has no speaker above 0.9
    names = [v for v in args.variants.split(",") if v]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        print(f"error: --variants: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(VARIANTS)}",
              file=sys.stderr)
        return 2

    import torch

    from audionet_ray.training.config import ConfigError, TrainConfig
    from audionet_ray.pipeline.data import ensure_prepared

    torch.set_num_threads(args.threads)
    data = ensure_prepared(args.data, progress=False) if args.data else demo_prepared(*((12, 2) if args.quick else (24, 3)))
    base = dict(data=str(data), epochs=args.epochs, width=args.width, dense=args.dense, batch_size=args.batch_size,
                lr=args.lr, train_ratio=args.train_ratio)
    try:
        cfgs = {v: TrainConfig.from_dict({**base, **VARIANTS[v]}) for v in names}
        for c in cfgs.values():
            c.validate()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = load_split(Path(data), args.train_ratio, args.train_share)
    report_at = {e for e in (2, 4, args.epochs) if e <= args.epochs}
    info = machine()
    print(f"machine: {machine_line(info)}; {args.threads} torch thread(s)")
    print(f"data: {data}: {len(rows['classes'])} classes, {len(rows['train'][1])} train / {len(rows['val'][1])} val / "
          f"{len(rows['test'][1])} test clips; AudioNet width {args.width} dense {args.dense}, batch "
          f"{args.batch_size}, reference lr {args.lr:g} NAdam constant, {args.epochs} epochs", flush=True)
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for v in names:
            cfg = TrainConfig.from_dict({**base, **VARIANTS[v], "seed": seed})
            r = run_variant(cfg, rows, report_at)
            row = {"variant": v, "seed": seed, "params": r["params"],
                   **{f"val@{e}": r["val"][e] for e in sorted(report_at)}, "test": r["test"],
                   "loss@last": r["train_loss"][args.epochs], "s/epoch": r["seconds"] / args.epochs}
            results.append({**row, "settings": VARIANTS[v]})
            print("  " + "  ".join(f"{k} {val:.3f}" if isinstance(val, float) else f"{k} {val}"
                                   for k, val in row.items()), flush=True)
    print()
    print_table([{k: v for k, v in r.items() if k != "settings"} for r in results])
    if len(set(args.seeds.split(","))) > 1:
        print("\nmean over seeds:")
        keys = [k for k in results[0] if k.startswith("val@") or k == "test"]
        print_table([{"variant": v, **{k: sum(r[k] for r in results if r["variant"] == v) /
                                       sum(1 for r in results if r["variant"] == v) for k in keys}} for v in names])
    print(f"load average now {os.getloadavg()[0]:.2f}")
    write_json(args.json, {"machine": info, "args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
