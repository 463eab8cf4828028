"""Optuna TPE + ASHA against random search + FIFO: best val_accuracy against trial-epochs spent.

Each search is a real `python -m audionet_ray.tune` run on the demo data (its own local Ray),
with the default search space (`--space default`: search_spaces/default.yaml's model, recipe and
sampled parameters, `--epochs` per trial) or the first benchmark's space (`--space legacy`: lr,
batch_size and dropout of a small waveform AudioNet); train_ratio is fixed at 0.8 so that every
trial is scored on the same validation speakers. Both methods get the same
budget of trial-epochs (an epoch of one trial is the unit of work ASHA saves): random + FIFO
runs `--fifo-trials` trials to the end; TPE + ASHA gets as many trials as ASHA should fit in the
same budget, and its curve is cut at that budget. Three searcher seeds each, interleaved
(random seed 0, TPE seed 0, random seed 1, ...) so both see the same machine load.

The curves come from Tune's per-epoch results (`run_trial_*/result.json`), ordered by the time
each epoch was reported: x = trial-epochs spent so far, y = best val_accuracy so far.

Goal (issue 8): TPE + ASHA reaches the best accuracy random + FIFO ends with in at most half
the trial-epochs.

    python benchmarks/bench_search.py            # 3 seeds x 2 methods, default space (~40 min on 2 idle cores)
    python benchmarks/bench_search.py --space legacy   # the first benchmark's space (~15 min)
    python benchmarks/bench_search.py --quick    # 1 seed, tiny model and budget (~2 min)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import demo_prepared, machine, machine_line, median, print_table, write_json  # noqa: E402

SPACE = """\
search:
  lr: {{loguniform: [1.0e-4, 1.0e-2]}}
  batch_size: {{choice: [32, 64, 128]}}
  dropout: {{uniform: [0.0, 0.5]}}
fixed:
  epochs: {epochs}
  width: {width}
  dense: {dense}
  train_ratio: 0.8
  checkpoint_every: 2
  seed: 0
tune:
  num_samples: 1
  max_concurrent: 0
  searcher: optuna
  scheduler: asha
  grace_period: {grace}
  reduction_factor: {rf}
  metric: val_accuracy
  mode: max
  seed: 0
  max_failures: 1
resources:
  workers_per_trial: 1
  gpus_per_trial: 0
  cpus_per_worker: {cpus}
"""


def space_yaml(args) -> str:
    """The search space the benchmark runs, as YAML."""
    if args.space == "legacy":
        return SPACE.format(epochs=args.epochs, width=args.width, dense=args.dense, grace=min(args.grace, args.epochs),
                            rf=args.reduction_factor, cpus=args.cpus_per_worker)
    import yaml

    from audionet_ray.tuning.search_space import SEARCH_SPACES

    d = yaml.safe_load((SEARCH_SPACES / "default.yaml").read_text())
    d["search"].pop("train_ratio", None)
    d["fixed"].update(epochs=args.epochs, train_ratio=0.8)
    if args.quick:  # a tiny model
        d["search"].pop("width", None)
        d["fixed"].update(width=args.width, filters=8)
    d["tune"].update(num_samples=1, grace_period=min(args.grace, args.epochs), reduction_factor=args.reduction_factor,
                     time_budget=None, seed=0)
    d["resources"].update(cpus_per_worker=args.cpus_per_worker, gpus_per_trial=0)
    return yaml.safe_dump(d, sort_keys=False)


def asha_epochs_per_trial(max_t: int, grace: int, rf: int) -> float:
    """Expected epochs of one ASHA trial when each rung keeps 1/rf of the trials reaching it."""
    rungs, r = [], grace
    while r < max_t:
        rungs.append(r)
        r *= rf
    total, prev, keep = 0.0, 0, 1.0
    for r in rungs + [max_t]:
        total += keep * (r - prev)
        prev, keep = r, keep / rf
    return total


def run_search(space: Path, data: str, storage: Path, name: str, searcher: str, scheduler: str, seed: int,
               trials: int, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "audionet_ray.tune", "--search-space", str(space), "--data", data,
           "--searcher", searcher, "--scheduler", scheduler, "--seed", str(seed), "--num-samples", str(trials),
           "--storage", str(storage), "--name", name, "--no-export", "--quiet"]
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    wall = time.time() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:])
        raise SystemExit(f"error: the search {name} exited with {proc.returncode}")
    return {"results": read_results(storage / name), "wall_s": wall}


def read_results(exp_dir: Path) -> list[dict]:
    """Every reported epoch of every trial: trial, epoch, val_accuracy and when it was reported."""
    out = []
    for f in exp_dir.glob("*/result.json"):
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if "val_accuracy" in r:
                out.append({"trial": r.get("trial_id") or f.parent.name, "epoch": r.get("epoch"),
                            "val_accuracy": float(r["val_accuracy"]),
                            "t": float(r.get("timestamp", 0)) + 1e-6 * float(r.get("time_total_s", 0))})
    return sorted(out, key=lambda r: r["t"])


def curve(results: list[dict], budget: int) -> list[float]:
    """best val_accuracy after k trial-epochs, k = 1..budget (flat after the search's last epoch)."""
    best, ys = 0.0, []
    for r in results[:budget]:
        best = max(best, r["val_accuracy"])
        ys.append(best)
    return ys + [best] * (budget - len(ys))


def epochs_to_reach(ys: list[float], target: float) -> int | None:
    return next((k + 1 for k, y in enumerate(ys) if y >= target - 1e-9), None)


def plot(curves: dict, budget: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = list(range(1, budget + 1))
    for (label, colour) in (("random + FIFO", "tab:gray"), ("TPE + ASHA", "tab:blue")):
        runs = curves[label]
        for ys in runs:
            ax.step(xs, ys, where="post", color=colour, alpha=0.3, lw=1)
        mean = [sum(c[i] for c in runs) / len(runs) for i in range(budget)]
        ax.step(xs, mean, where="post", color=colour, lw=2.2, label=f"{label} (mean of {len(runs)} seeds)")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best val_accuracy so far")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, tiny model, 2 trials of 2 epochs: a smoke test")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--space", choices=["default", "legacy"], default="default",
                    help="default: search_spaces/default.yaml; legacy: lr, batch_size, dropout of a waveform AudioNet")
    ap.add_argument("--epochs", type=int, help="epochs of a full trial (ASHA's max_t; default 20, legacy 6)")
    ap.add_argument("--fifo-trials", type=int, default=5, help="random + FIFO trials; budget = this x epochs")
    ap.add_argument("--grace", type=int, help="ASHA grace period (default: the default space's, 5; legacy 2)")
    ap.add_argument("--reduction-factor", type=int, help="ASHA reduction factor (default 2; legacy 3)")
    ap.add_argument("--width", type=int, default=16, help="legacy (and --quick): conv channels")
    ap.add_argument("--dense", type=int, default=64, help="legacy: dense units")
    ap.add_argument("--cpus-per-worker", type=float, default=1.0, help="1: two trials at once on 2 cores")
    ap.add_argument("--data", help="a prepared dataset (default: the demo dataset)")
    ap.add_argument("--plot", default=str(Path(__file__).resolve().parents[1] / "docs" / "img" / "bench_search.png"))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per search")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    legacy = args.space == "legacy"
    args.epochs = args.epochs or (6 if legacy else 20)
    args.grace = args.grace or (2 if legacy else 4)
    args.reduction_factor = args.reduction_factor or (3 if legacy else 2)
    if args.quick:
        args.seeds, args.epochs, args.fifo_trials, args.width, args.dense = 1, 2, 2, 8, 32
        if args.plot == ap.get_default("plot"):
            args.plot = str(Path(tempfile.gettempdir()) / "bench_search_quick.png")

    if args.data or args.quick or legacy:
        data = args.data or str(demo_prepared(*((12, 2) if args.quick else (24, 3))))
    else:  # the demo's own speech set, as `make demo` trains on it
        from audionet_ray.pipeline.data import ensure_prepared
        from audionet_ray.tune import demo_dataset

        data = str(ensure_prepared(demo_dataset(), progress=False))
    budget = args.fifo_trials * args.epochs
    per_trial = asha_epochs_per_trial(args.epochs, min(args.grace, args.epochs), args.reduction_factor)
    asha_trials = max(args.fifo_trials, math.ceil(budget / per_trial))
    info = machine()
    print(f"machine: {machine_line(info)}")
    model = (f"AudioNet width {args.width} dense {args.dense}; search lr, batch_size, dropout" if legacy else
             "the default space (train_ratio fixed at 0.8)")
    print(f"data {data}; {model}; "
          f"budget {budget} trial-epochs: random + FIFO {args.fifo_trials} trials x {args.epochs} epochs, "
          f"TPE + ASHA {asha_trials} trials (grace {args.grace}, reduction factor {args.reduction_factor}, "
          f"~{per_trial:.2f} epochs per trial); {args.seeds} seed(s)", flush=True)

    curves = {"random + FIFO": [], "TPE + ASHA": []}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_search-") as tmp:
        space = Path(tmp) / "space.yaml"
        space.write_text(space_yaml(args))
        for seed in range(args.seeds):
            for label, searcher, scheduler, trials in (("random + FIFO", "random", "fifo", args.fifo_trials),
                                                       ("TPE + ASHA", "optuna", "asha", asha_trials)):
                name = f"{searcher}-{scheduler}-seed{seed}"
                r = run_search(space, data, Path(tmp) / "runs", name, searcher, scheduler, seed, trials, args.timeout)
                ys = curve(r["results"], budget)
                curves[label].append(ys)
                rows.append({"method": label, "seed": seed, "trials": trials, "trial_epochs": len(r["results"]),
                             "best_at_budget": ys[-1], "best_at_half": ys[budget // 2 - 1] if budget >= 2 else ys[-1],
                             "wall_s": r["wall_s"], "load": os.getloadavg()[0]})
                print(f"  {name}: {len(r['results'])} trial-epochs, best val_accuracy {ys[-1]:.3f} "
                      f"in {r['wall_s']:.0f} s", flush=True)

    reach = []
    for seed in range(args.seeds):
        target = curves["random + FIFO"][seed][-1]
        k = epochs_to_reach(curves["TPE + ASHA"][seed], target)
        reach.append({"seed": seed, "random+FIFO final best": target,
                      "TPE+ASHA trial-epochs to reach it": k if k is not None else f"not within {budget}",
                      "share of budget": (k / budget) if k is not None else None})
    print()
    print_table(rows)
    print()
    print_table(reach)
    mean_fifo = sum(c[-1] for c in curves["random + FIFO"]) / args.seeds
    mean_asha = [sum(c[i] for c in curves["TPE + ASHA"]) / args.seeds for i in range(budget)]
    k_mean = epochs_to_reach(mean_asha, mean_fifo)
    shares = [r["share of budget"] if r["share of budget"] is not None else float("inf") for r in reach]
    verdict = "met" if median(shares) <= 0.5 else "NOT met"
    print(f"\nmean curves: random + FIFO ends at {mean_fifo:.3f}; TPE + ASHA reaches it after "
          f"{k_mean if k_mean else 'more than ' + str(budget)} of {budget} trial-epochs. Median share of the budget "
          f"TPE + ASHA needs: {median(shares):.2f} (goal <= 0.5: {verdict}); load average now {os.getloadavg()[0]:.2f}")
    plot(curves, budget, Path(args.plot), f"best val_accuracy vs trial-epochs, {args.seeds} seed(s), "
         + (f"AudioNet w{args.width}/d{args.dense} on the demo data" if legacy else "the default space, demo data"))
    print(f"plot: {args.plot}")
    write_json(args.json, {"machine": info, "args": vars(args), "budget": budget, "asha_trials": asha_trials,
                           "rows": rows, "reach": reach, "curves": curves})
    return 0


if __name__ == "__main__":
    sys.exit(main())
