"""How much of the machine a search uses: training clips/s over a whole search vs a bare PyTorch loop.

A whole search (`python -m audionet_ray.tune`, the default space, a fixed number of trials and
epochs; FIFO and ASHA both) runs as a user runs it, while a sampler reads `/proc/stat` every half
second. Its throughput is every training clip its trials trained, over the search's wall time
from launch to exit. The baseline is a bare PyTorch loop in this process: the same AudioNet
variant, the same augmentation, the same training clips held in memory, torch using all cores,
at each batch size the search trained with. The bare loop trains `--bare-epochs` epochs per batch
size (not the search's whole total, which would double the run); its clips/s per batch size,
weighted by the clips the search trained at that batch size, is the baseline rate.

Where the rest of the search's wall time goes, from Tune's per-epoch results:
- start-up per trial: from the trial's start to its first training step;
- turnover: from a trial's end to the start of the next trial that took its place;
- launch to first step: from the command's launch to the first trial's first training step;
- idle cores: the mean share of idle CPU time over the search, from `/proc/stat`;
- CPU seconds by process kind (`/proc/<pid>/stat`, sampled): the Train workers, Train's
  controller and its helper actors, Tune's trial processes, Ray's own daemons. A process that
  starts and ends between two samples is missed; one that ends counts its last sample.

Goals (issue 14): search throughput >= 0.8x the bare loop; launch to first step < 20 s; each
later trial's first step < 8 s after the previous trial ends.

With `--time-budget` (issue 25) it runs instead the default search as a user runs it, with that
budget and the export on, once with `--trainer torch` (a TorchTrainer per trial: today's) and once
with `--trainer auto`, one after the other on the same data, and scores each exported bundle on
the test split with `python -m audionet_ray.evaluate`. Goals: wall time >= 0.9 of the budget;
training clips >= 0.7x what the bare loop trains over the whole budget; a later trial's first step
< 5 s after the previous one ended, the first < 20 s from launch; test accuracy of `auto`'s bundle
no worse than `torch`'s.

    python benchmarks/bench_throughput.py --data PREPARED            # default: 16 words x 200 speakers of speech
    python benchmarks/bench_throughput.py --time-budget 30m          # issue 25: torch vs auto, 30 min each (~65 min)
    python benchmarks/bench_throughput.py --quick                    # tiny: a smoke test
    python benchmarks/bench_throughput.py --quick --time-budget 90s  # tiny, the budget mode
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, machine_line, median, print_table, speech_prepared, write_json  # noqa: E402
from bench_robust import evaluate  # noqa: E402

TRAINERS = ("torch", "auto")  # the budget mode's searches: today's (the baseline), then the new default


class IdleSampler:
    """Mean idle share of all cores over a stretch of time, from /proc/stat's first line."""

    def __init__(self, every: float = 0.5):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return idle, sum(fields[:8])

    def _run(self) -> None:
        prev = self._read()
        while not self._stop.wait(self.every):
            cur = self._read()
            d_total = cur[1] - prev[1]
            if d_total > 0:
                self.samples.append((cur[0] - prev[0]) / d_total)
            prev = cur

    def __enter__(self) -> "IdleSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def idle_share(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


PROCESS_KINDS = [  # (part of the command line or process title, kind), first match wins
    ("RayTrainWorker", "Train worker"), ("TrainController", "Train controller"),
    ("ImplicitFunc", "Tune trial (function trainable)"), ("PlacementGroupCleaner", "Train PlacementGroupCleaner"),
    ("SynchronizationActor", "Train SynchronizationActor"), ("_QueueActor", "Tune-Train report queue"),
    ("DatasetManager", "Train DatasetManager"), ("PreemptionWatcher", "Train PreemptionWatcher"),
    ("audionet_ray.tune", "search driver"), ("gcs_server", "Ray daemons"), ("raylet", "Ray daemons"),
    ("dashboard", "Ray daemons"), ("DashboardAgent", "Ray daemons"), ("RuntimeEnvAgent", "Ray daemons"),
    ("log_monitor", "Ray daemons"), ("monitor.py", "Ray daemons"), ("ray::IDLE", "idle Ray workers"),
    ("ray::", "other Ray actors"), ("default_worker", "Ray workers starting"),
]


class ProcessCPU:
    """CPU seconds each kind of process used over a stretch of time (see PROCESS_KINDS)."""

    def __init__(self, every: float = 0.5):
        self.every, self.last, self._stop = every, {}, threading.Event()
        self.base = {pid: cpu for pid, cpu, _ in self._read()}
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read():
        hz = os.sysconf("SC_CLK_TCK")
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    stat = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                    cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                yield int(d), (int(stat[11]) + int(stat[12])) / hz, cmd

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for pid, cpu, cmd in self._read():
                kind = next((k for pat, k in PROCESS_KINDS if pat in cmd), None)
                if kind:
                    self.last[pid] = (kind, cpu - self.base.get(pid, 0.0))

    def __enter__(self) -> "ProcessCPU":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def by_kind(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for kind, cpu in self.last.values():
            k = out.setdefault(kind, {"cpu_s": 0.0, "processes": 0})
            k["cpu_s"] += cpu
            k["processes"] += 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["cpu_s"]))


def trial_epochs(exp_dir: Path) -> dict[str, list[dict]]:
    """Per trial, its reported epochs (Tune's result.json), in order."""
    out: dict[str, list[dict]] = {}
    for f in exp_dir.glob("*/result.json"):
        rows = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        rows = [r for r in rows if "train_clips" in r]
        if rows:
            out[rows[0].get("trial_id") or f.parent.name] = rows
    return out


def timeline(trials: dict[str, list[dict]], launch: float) -> dict:
    """Start-up, turnover and first-step times of a search from its trials' results."""
    spans = []
    for tid, rows in trials.items():
        first = rows[0]
        start = float(first["timestamp"]) - float(first["time_total_s"])  # the trial function's start
        first_step = float(first["timestamp"]) - float(first["epoch_seconds"])
        end = float(rows[-1]["timestamp"])
        spans.append({"trial": tid, "start": start, "first_step": first_step, "end": end,
                      "startup_s": max(0.0, first_step - start)})
    spans.sort(key=lambda s: s["start"])
    ends = sorted(s["end"] for s in spans)
    turnover, later = [], []  # later: the start-up of trials that took the slot of one that ended
    for s in spans:
        before = [e for e in ends if e <= s["start"] + 1.0]  # timestamps are whole seconds
        if before:
            turnover.append(max(0.0, s["first_step"] - before[-1]))
            later.append(s["startup_s"])
    return {"spans": spans,
            "launch_to_first_step_s": min(s["first_step"] for s in spans) - launch if spans else float("nan"),
            "startup_median_s": median([s["startup_s"] for s in spans]),
            "later_startup_median_s": median(later), "later_startup_max_s": max(later, default=float("nan")),
            "next_first_step_after_end_median_s": median(turnover),
            "next_first_step_after_end_max_s": max(turnover, default=float("nan")),
            "turnovers": turnover}


def run_search(data: str, storage: Path, name: str, space: str, timeout: float, flags: list[str]) -> dict:
    """One search as a user runs it (`flags`: its plan, e.g. trials and epochs or a time budget), sampled
    as it runs; its training clips, where they went, and its timeline from Tune's results."""
    cmd = [sys.executable, "-m", "audionet_ray.tune", "--search-space", space, "--data", data,
           "--storage", str(storage), "--name", name, "--quiet", *flags]
    launch = time.time()
    with IdleSampler() as idle, ProcessCPU() as cpu:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    wall = time.time() - launch
    if proc.returncode != 0:
        print(proc.stdout[-3000:])
        raise SystemExit(f"error: the search {name} exited with {proc.returncode}")
    plan = next((ln for ln in proc.stdout.splitlines() if ln.startswith("search ")), "")
    trials_run = trial_epochs(storage / name)
    clips = sum(r["train_clips"] for rows in trials_run.values() for r in rows)
    by_setting: dict[str, int] = {}  # what sets a trial's speed (model variant, batch size) -> clips trained
    for rows in trials_run.values():
        for r in rows:
            key = json.dumps(speed_settings(space, r.get("config") or {}), sort_keys=True)
            by_setting[key] = by_setting.get(key, 0) + int(r["train_clips"])
    in_epochs = sum(r["epoch_seconds"] for rows in trials_run.values() for r in rows)
    # checkpoints every 2 epochs: seconds spent writing them (recorded by the trial process; absent under
    # a TorchTrainer, whose report writes them), against the epochs' own time
    saving = [r["checkpoint_seconds"] for rows in trials_run.values() for r in rows if "checkpoint_seconds" in r]
    return {"checkpoint_share": sum(saving) / (in_epochs + sum(saving)) if saving else None,
            "checkpoints": len(saving),
            "wall_s": wall, "train_clips": clips, "clips_per_s": clips / wall, "plan": plan,
            "trial_epochs": sum(len(v) for v in trials_run.values()), "trials": len(trials_run),
            "clips_by_setting": by_setting, "idle_share": idle.idle_share, "epoch_seconds_sum": in_epochs,
            "cpu_by_kind": cpu.by_kind(),
            **timeline(trials_run, launch)}


def speed_settings(space: str, sampled: dict) -> dict:
    """The settings of a trial that set its training speed: the model variant and the batch size."""
    from audionet_ray.training.config import TrainConfig
    from audionet_ray.tuning.search_space import load_spec

    cfg = TrainConfig.from_dict({**load_spec(space).fixed, **sampled, "data": ""})
    return {"batch_size": cfg.batch_size, **cfg.model_config(1).to_dict()}


def bare_rates(data: str, space: str, settings: list[str], epochs: int) -> dict[str, float]:
    """Training clips/s of a plain loop (all cores, data in memory, same model and augmentation) for
    each setting (speed_settings as JSON) the search trained with."""
    import torch
    import torch.nn.functional as F

    from audionet_ray.pipeline.augment import augment, epoch_generator
    from audionet_ray.training.config import TrainConfig
    from audionet_ray.pipeline.data import load_noise, read_split
    from audionet_ray.modeling.model import AudioNet
    from audionet_ray.tuning.search_space import load_spec

    spec = load_spec(space)
    cfg = TrainConfig.from_dict({**spec.fixed, "data": data})
    torch.set_num_threads(os.cpu_count() or 1)
    pcm, labels, classes = read_split(data, cfg.train_ratio, "train")
    pcm, labels = torch.from_numpy(pcm), torch.from_numpy(labels)
    noise = torch.from_numpy(load_noise(data))
    rates = {}
    for key in settings:
        setting = json.loads(key)
        bs = setting.pop("batch_size")
        torch.manual_seed(0)
        model = AudioNet.from_config({**setting, "n_classes": len(classes)})
        opt = torch.optim.NAdam(model.parameters(), lr=1e-3)
        model.train()
        n, t0 = 0, time.perf_counter()
        for epoch in range(1, epochs + 1):
            gen = epoch_generator(0, epoch, 0, torch.device("cpu"))
            order = torch.randperm(len(labels))
            for i in range(0, len(labels), bs):
                idx = order[i:i + bs]
                x = augment(pcm[idx], gen, cfg.augment, noise)
                loss = F.cross_entropy(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n += len(idx)
        rates[key] = n / (time.perf_counter() - t0)
        print(f"  bare loop, batch {bs}, width {setting['width']}: {rates[key]:.0f} clips/s over {epochs} epoch(s) of {len(labels)} clips "
              f"({torch.get_num_threads()} threads)", flush=True)
    return rates


def run_searches(args: argparse.Namespace, data: str, runs: dict[str, list[str]],
                 score: bool = False) -> tuple[dict[str, dict], dict[str, float]]:
    """The searches of `runs` (label -> its command-line flags) one after the other on the same data;
    with `score` each one's exported bundle on the test split. Then the bare loop at every setting
    they trained, and each search's bare rate: the bare loop's for its mix of settings."""
    searches = {}
    with tempfile.TemporaryDirectory(prefix="bench_throughput-") as tmp:
        for i, (label, flags) in enumerate(runs.items()):
            storage, name = Path(tmp) / "runs", f"tp-{i}"
            r = searches[label] = run_search(data, storage, name, args.space, args.timeout, flags)
            if score:
                r["test_accuracy"] = evaluate(storage / name / "bundle", Path(data), Path(tmp) / f"eval-{i}")
            print(f"  {label}: {r['plan']}", flush=True)
            print(f"  {label}: {r['train_clips']} clips in {r['trial_epochs']} trial-epochs of {r['trials']} trials, "
                  f"{r['wall_s']:.0f} s wall: {r['clips_per_s']:.1f} clips/s; idle {100 * r['idle_share']:.0f} % of "
                  "the cores" + (f"; test accuracy {r['test_accuracy']:.4f}" if score else ""), flush=True)
    rates = bare_rates(data, args.space, sorted({k for r in searches.values() for k in r["clips_by_setting"]}),
                       args.bare_epochs)
    for r in searches.values():
        r["bare_s"] = sum(n / rates[k] for k, n in r["clips_by_setting"].items())  # the bare loop's, same clips
        r["bare_clips_per_s"] = r["train_clips"] / r["bare_s"] if r["bare_s"] else float("nan")
        r["ratio"] = r["clips_per_s"] / r["bare_clips_per_s"]
    return searches, rates


def budget_mode(args: argparse.Namespace, data: str, info: dict) -> int:
    """Issue 25: the default search with a time budget, as `--trainer torch` (today's) and `--trainer
    auto`, each exported and its bundle scored on the test split; one row per trainer."""
    from audionet_ray.tuning.search_space import parse_duration

    budget_s = parse_duration(args.time_budget, "--time-budget")
    extra = ["--epochs", "8"] if args.quick else []  # tiny data: short trials, so that later trials start
    searches, rates = run_searches(args, data, {t: ["--time-budget", args.time_budget, "--trainer", t, *extra]
                                                for t in TRAINERS}, score=True)
    rows = []
    for trainer, r in searches.items():
        r["of_budget"] = r["wall_s"] / budget_s
        r["x_bare_over_budget"] = r["train_clips"] / (r["bare_clips_per_s"] * budget_s)
        rows.append({"trainer": trainer, "wall_s": r["wall_s"], "of budget": r["of_budget"],
                     "trials": r["trials"], "trial_epochs": r["trial_epochs"], "clips/s": r["clips_per_s"],
                     "bare clips/s": r["bare_clips_per_s"], "ratio": r["ratio"],
                     "x bare over budget": r["x_bare_over_budget"], "idle %": 100 * r["idle_share"],
                     "launch->1st step s": r["launch_to_first_step_s"],
                     "later startup s med/max": f"{r['later_startup_median_s']:.1f}/{r['later_startup_max_s']:.1f}",
                     "end->next 1st step s med/max": f"{r['next_first_step_after_end_median_s']:.1f}/"
                                                     f"{r['next_first_step_after_end_max_s']:.1f}",
                     "test accuracy": r["test_accuracy"]})
    print()
    print_table(rows)
    base = searches[TRAINERS[0]]["test_accuracy"]
    for trainer, r in searches.items():
        turnover, first = r["next_first_step_after_end_median_s"], r["launch_to_first_step_s"]
        print(f"{trainer}: wall {r['of_budget']:.2f} of the budget (goal >= 0.9: {met(r['of_budget'] >= 0.9)}); "
              f"{r['x_bare_over_budget']:.2f}x the bare loop over the budget (goal >= 0.7x: "
              f"{met(r['x_bare_over_budget'] >= 0.7)}); a later trial's first step {turnover:.1f} s (median) after "
              f"the previous one ended (goal < 5 s: {met(turnover < 5)}); launch to first step {first:.1f} s "
              f"(goal < 20 s: {met(first < 20)}); test accuracy {r['test_accuracy']:.4f} against "
              f"{TRAINERS[0]}'s {base:.4f} (goal no worse: {met(r['test_accuracy'] >= base)})")
        if r["checkpoint_share"] is not None:
            print(f"{trainer}: checkpoints every 2 epochs took {100 * r['checkpoint_share']:.2f} % of the trials' "
                  f"time ({r['checkpoints']} written; goal <= 3 %: {met(r['checkpoint_share'] <= 0.03)})")
    print_cpu(searches)
    print(f"load average now {os.getloadavg()[0]:.2f}")
    write_json(args.json, {"machine": info, "args": vars(args), "data": data, "budget_s": budget_s, "rows": rows,
                           "searches": searches, "bare_rates": rates})
    return 0


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_cpu(searches: dict[str, dict]) -> None:
    """Where each search's CPU went, by kind of process: what a trial costs beyond its training."""
    for label, r in searches.items():
        n = max(1, r["trials"])
        print(f"{label}: CPU seconds by process kind over the search ({r['wall_s']:.0f} s wall, "
              f"{r['epoch_seconds_sum']:.0f} s in epochs): "
              + "; ".join(f"{k} {v['cpu_s']:.1f} ({v['processes']} proc., {v['cpu_s'] / n:.1f}/trial)"
                          for k, v in r["cpu_by_kind"].items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a prepared dataset or a dataset root (default: 16 words x 200 speakers of speech)")
    ap.add_argument("--space", default="default", help="search space (default: the default search)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--schedulers", default="fifo,asha")
    ap.add_argument("--cpus-per-worker", default="",
                    help="also run ASHA with these CPUs per worker (comma-separated, e.g. 0.5: 2 trials a core)")
    ap.add_argument("--bare-epochs", type=int, default=2, help="epochs of the bare loop per batch size")
    ap.add_argument("--quick", action="store_true",
                    help="tiny data, 2 trials x 2 epochs, ASHA only (with --time-budget: 8-epoch trials): a smoke test")
    ap.add_argument("--time-budget", metavar="DURATION",
                    help="instead: the default search with this budget (e.g. 30m), --trainer torch against auto")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.schedulers, args.bare_epochs = 2, 2, "asha", 1
    from audionet_ray.pipeline.data import ensure_prepared

    data = str(ensure_prepared(args.data, progress=False) if args.data else
               speech_prepared(*((12, 1) if args.quick else (200, 1))))
    info = machine()
    print(f"machine: {machine_line(info)}")
    if args.time_budget:
        print(f"data {data}; space {args.space}; --time-budget {args.time_budget}, --trainer {' then '.join(TRAINERS)}",
              flush=True)
        return budget_mode(args, data, info)
    print(f"data {data}; space {args.space}; {args.trials} trials x {args.epochs} epochs; {args.schedulers}"
          + (f"; and asha at {args.cpus_per_worker} CPU per worker" if args.cpus_per_worker else ""),
          flush=True)
    plan = ["--num-samples", str(args.trials), "--epochs", str(args.epochs), "--no-export"]
    runs = {sched: ["--scheduler", sched, *plan] for sched in args.schedulers.split(",")}
    runs |= {f"asha, {c} CPU/worker": ["--scheduler", "asha", "--cpus-per-worker", c, *plan]
             for c in args.cpus_per_worker.split(",") if c}
    searches, rates = run_searches(args, data, runs)
    rows = []
    for sched, r in searches.items():
        rows.append({"scheduler": sched, "trials": r["trials"], "trial_epochs": r["trial_epochs"],
                     "wall_s": r["wall_s"], "clips/s": r["clips_per_s"], "bare clips/s": r["bare_clips_per_s"],
                     "ratio": r["ratio"], "idle %": 100 * r["idle_share"],
                     "launch->1st step s": r["launch_to_first_step_s"],
                     "startup/trial s": r["startup_median_s"],
                     "end->next 1st step s": r["next_first_step_after_end_median_s"],
                     "wall beyond bare s": r["wall_s"] - r["bare_s"]})
    print()
    print_table(rows)
    for row in rows:
        print(f"{row['scheduler']}: {row['ratio']:.2f}x the bare loop (goal >= 0.8x: {met(row['ratio'] >= 0.8)}); "
              f"launch to first step {row['launch->1st step s']:.1f} s (goal < 20 s); a later trial's first step "
              f"{row['end->next 1st step s']:.1f} s after the previous one ended (goal < 8 s)")
    print_cpu(searches)
    print(f"load average now {os.getloadavg()[0]:.2f}")
    write_json(args.json, {"machine": info, "args": vars(args), "rows": rows, "searches": searches,
                           "bare_rates": rates})
    return 0


if __name__ == "__main__":
    sys.exit(main())
