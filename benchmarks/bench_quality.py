"""The model a search finds, on real speech: test accuracy of what each way of training exports.

Side by side in one run, on a set made by the project's espeak-ng generator (16 words, 200
speakers by default; `--data` takes any other Speech Commands-style set, to check that the
defaults generalise), each run as a user runs it (CLI subprocesses), each exported as a bundle
and scored by `python -m audionet_ray.evaluate` on the speaker-disjoint test split:

  (a) the seed's recipe by hand: `python -m audionet_ray.train`, NAdam lr 1e-4, batch 128,
      30 epochs, no normalisation, constant lr, the reference's noise, on all cores (the seed's
      AudioNet at width 32, dense 128: at width 64 an epoch takes ~65 s on one core, at the
      reference's 256 channels 30 epochs take hours on 2 cores);
  (b) the default search (Optuna TPE + ASHA) with `--time-budget`;
  (c) random search + FIFO, same space and budget.

Goals (issue 13): (b) >= 0.96 test accuracy within 30 minutes at 200 speakers, above (a) and (c).

    python benchmarks/bench_quality.py                       # ~70 min on 2 cores
    python benchmarks/bench_quality.py --budget 10m          # shorter searches
    python benchmarks/bench_quality.py --quick               # a smoke test: tiny data, 2 epochs, 1-minute budgets
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

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def run(cmd: list[str], timeout: float) -> tuple[str, float]:
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        print(proc.stdout[-3000:])
        raise SystemExit(f"error: {' '.join(cmd[2:5])} ... exited with {proc.returncode}")
    return proc.stdout, time.time() - t0


def evaluate(bundle: Path, data: str, out: Path) -> dict:
    run([sys.executable, "-m", "audionet_ray.evaluate", str(bundle), "--data", data, "--out", str(out)], 900)
    return json.loads((out / "test_metrics.json").read_text())


def row(label: str, metrics: dict, wall: float, extra: str = "") -> dict:
    recalls = {c: v["recall"] for c, v in metrics["per_class"].items() if c in KEYWORDS and v["recall"] is not None}
    worst = min(recalls, key=recalls.get) if recalls else None
    return {"run": label, "test_accuracy": metrics["accuracy"], "test_clips": metrics["n_clips"],
            "worst_keyword": f"{worst} {recalls[worst]:.2f}" if worst else "", "wall_s": wall, "note": extra}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a dataset root or prepared folder (default: 16 words x 200 speakers of speech)")
    ap.add_argument("--budget", default="30m", help="time budget of each search (b, c)")
    ap.add_argument("--seed-epochs", type=int, default=30, help="epochs of the seed's recipe (a)")
    ap.add_argument("--runs", default="a,b,c", help="which of a, b, c to run")
    ap.add_argument("--quick", action="store_true", help="tiny data, 2 epochs, 1-minute budgets: a smoke test")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    search_extra: list[str] = []
    if args.quick:
        args.budget, args.seed_epochs = "90s", 2
        search_extra = ["--num-samples", "2", "--epochs", "2"]
    from audionet_ray.pipeline.data import ensure_prepared

    data = str(ensure_prepared(args.data, progress=False) if args.data else
               speech_prepared(*((12, 1) if args.quick else (200, 1))))
    width, dense = 32, 128
    info = machine()
    print(f"machine: {machine_line(info)}")
    print(f"data {data}; searches with --time-budget {args.budget}; seed recipe {args.seed_epochs} epochs at "
          f"width {width}, dense {dense}", flush=True)
    rows = []
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench_quality-") as tmp:
        tmp = Path(tmp)
        if "a" in args.runs:
            out, wall = run([py, "-m", "audionet_ray.train", "--data", data, "--lr", "1e-4", "--batch-size", "128",
                             "--epochs", str(args.seed_epochs), "--width", str(width), "--dense", str(dense),
                             "--cpus-per-worker", str(os.cpu_count() or 1),
                             "--storage", str(tmp / "train"), "--name", "seed"], 4 * 3600)
            run([py, "-m", "audionet_ray.export", str(tmp / "train" / "seed"), str(tmp / "bundle-a")], 900)
            rows.append(row("(a) seed recipe by hand", evaluate(tmp / "bundle-a", data, tmp / "eval-a"), wall,
                            f"{args.seed_epochs} epochs"))
            print(f"  {rows[-1]}", flush=True)
        for key, label, flags in (("b", "(b) default search, TPE + ASHA", []),
                                  ("c", "(c) random + FIFO, same space", ["--searcher", "random", "--scheduler", "fifo"])):
            if key not in args.runs:
                continue
            name = f"search-{key}"
            out, wall = run([py, "-m", "audionet_ray.tune", "--data", data, "--time-budget", args.budget,
                             "--storage", str(tmp / "runs"), "--name", name, "--quiet", *flags, *search_extra],
                            4 * 3600)
            best = next((ln for ln in out.splitlines() if ln.startswith("best trial")), "")
            rows.append(row(label, evaluate(tmp / "runs" / name / "bundle", data, tmp / f"eval-{key}"), wall, best))
            print(f"  {rows[-1]}", flush=True)
    print()
    print_table(rows)
    by = {r["run"][:3]: r["test_accuracy"] for r in rows}
    if "(b)" in by:
        others = [v for k, v in by.items() if k != "(b)"]
        verdict = "met" if by["(b)"] >= 0.96 and all(by["(b)"] > v for v in others) else "NOT met"
        print(f"\n(b) {by['(b)']:.3f} test accuracy; goal >= 0.96 and above (a) and (c): {verdict}; "
              f"load average now {os.getloadavg()[0]:.2f}")
    write_json(args.json, {"machine": info, "args": vars(args), "data": data, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
