"""Accuracy against cost: does a multi-objective search find much cheaper models at nearly the
same accuracy?

One real search, as a user runs it: `python -m audionet_ray.tune --search-space pareto` (val
accuracy and MACs per one-second window, multi-objective TPE, FIFO) with a time budget on the
project's espeak-ng speech (16 words, 200 speakers; `--data` takes any set). Then each point of
its Pareto front is exported with `export --pick max_macs=...` and scored on the test split with
`python -m audionet_ray.evaluate`, so the front is judged on held-out speakers, not on the
validation accuracy the search steered by.

Goal (issue 17): the front holds a model with >= 4x fewer MACs than the most accurate one at
<= 2 points less test accuracy.

    python benchmarks/bench_pareto.py                  # ~25 min on 2 cores (--budget 20m)
    python benchmarks/bench_pareto.py --quick          # a smoke test: tiny data, 2 trials of 2 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, machine_line, print_table, speech_prepared, write_json  # noqa: E402

QUICK_SPACE = """search:
  lr: {loguniform: [1.0e-3, 3.0e-3]}
  width: {choice: [2, 8]}
fixed: {epochs: 2, frontend: filterbank, filters: 8, norm: batch, pool: avg, dense: 16, dense_layers: 1,
        checkpoint_every: 1, seed: 0, train_ratio: 0.75}
tune: {num_samples: 2, max_concurrent: 2, searcher: optuna, scheduler: fifo, objectives: [macs], seed: 0}
resources: {workers_per_trial: 1, gpus_per_trial: 0, cpus_per_worker: 1}
"""


def run(cmd: list[str], timeout: float) -> str:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        print(proc.stdout[-3000:])
        raise SystemExit(f"error: {' '.join(cmd[2:4])} ... exited with {proc.returncode}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a dataset root or prepared folder (default: 16 words x 200 speakers of speech)")
    ap.add_argument("--budget", default="20m", help="the search's time budget")
    ap.add_argument("--quick", action="store_true", help="tiny data, 2 trials of 2 epochs: a smoke test")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    from audionet_ray.pipeline.data import ensure_prepared
    from audionet_ray.tuning.experiment import pareto_front

    data = str(ensure_prepared(args.data, progress=False) if args.data else
               speech_prepared(*((12, 1) if args.quick else (200, 1))))
    info = machine()
    print(f"machine: {machine_line(info)}")
    print(f"data {data}; search space {'a tiny one' if args.quick else 'pareto'}, time budget {args.budget}", flush=True)
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_pareto-") as tmp:
        tmp = Path(tmp)
        space = "pareto"
        if args.quick:
            (tmp / "space.yaml").write_text(QUICK_SPACE)
            space = str(tmp / "space.yaml")
        t0 = time.time()
        run([py, "-m", "audionet_ray.tune", "--search-space", space, "--data", data, "--storage", str(tmp),
             "--name", "mo", "--quiet", "--no-export", *([] if args.quick else ["--time-budget", args.budget])],
            4 * 3600)
        wall = time.time() - t0
        points, front = pareto_front(tmp / "mo", "val_accuracy", "max", "macs")
        for i, (val, macs, trial_id, _, meta) in enumerate(front):
            bundle = tmp / f"bundle-{i}"
            run([py, "-m", "audionet_ray.export", str(tmp / "mo"), str(bundle), "--pick", f"max_macs={macs}",
                 "--target-fa-per-hour", "0", "--no-int8"], 900)
            run([py, "-m", "audionet_ray.evaluate", str(bundle), "--data", data, "--out", str(tmp / f"eval-{i}")], 900)
            test = json.loads((tmp / f"eval-{i}" / "test_metrics.json").read_text())
            rows.append({"trial": trial_id, "epoch": meta["epoch"], "width": meta["train_config"]["width"],
                         "filters": meta["train_config"]["filters"], "params": meta["metrics"]["params"],
                         "MMACs": macs / 1e6, "val_accuracy": val, "test_accuracy": test["accuracy"]})
    print(f"\n{len(points)} trials' best checkpoints, {len(front)} on the front; search {wall:.0f} s")
    print_table(rows)
    top = max(rows, key=lambda r: r["test_accuracy"]) if rows else None
    cheap = [r for r in rows if top and r["MMACs"] * 4 <= top["MMACs"] and r["test_accuracy"] >= top["test_accuracy"] - 0.02]
    verdict = "met" if cheap else "NOT met"
    if top:
        print(f"\nmost accurate on the front: {top['test_accuracy']:.3f} test at {top['MMACs']:.2f} MMACs; "
              + (f"{cheap[0]['test_accuracy']:.3f} at {cheap[0]['MMACs']:.2f} MMACs ({top['MMACs'] / cheap[0]['MMACs']:.1f}x fewer)"
                 if cheap else "no point with >= 4x fewer MACs within 2 points")
              + f"; goal: {verdict}; load average now {os.getloadavg()[0]:.2f}")
    write_json(args.json, {"machine": info, "args": vars(args), "data": data, "search_s": wall,
                           "points": len(points), "front": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
