"""Start-up: seconds from `python -m audionet_ray.tune` to the first training step, and what takes them.

The search CLI runs unchanged, as a user runs it, on the demo dataset already prepared (one
trial of one epoch, FIFO as ASHA needs two epochs or more, so the run ends by itself). A probe times it from inside: this file is
loaded through a `sitecustomize.py` on PYTHONPATH, which every Python process of the run
imports (the CLI, and the Ray processes it starts, which inherit the environment). The probe
wraps the import of a few modules and a few functions, and appends one JSON line per event to
the file named by AUDIONET_STARTUP_PROBE:

  driver        imports (torch, ray, ...), dataset check (ensure_prepared), ray.init, Tuner.fit
  trial driver  imports audionet_ray.training.train, build_trainer, TorchTrainer.fit
  Train worker  imports audionet_ray.training.train (the loop arrives), first torch_batches call, first
                batch (Ray Data pipeline start), small data read into memory, first optimizer
                step done

Goal (issue 8): under 20 s on this machine with the dataset prepared.

The phases are a TorchTrainer's, so the search runs with `--trainer torch`; the default, a trial
trained in Tune's own process, is timed by bench_throughput.py (launch and every trial to its
first step).

    python benchmarks/bench_startup.py            # 2 runs of the default search space
    python benchmarks/bench_startup.py --quick    # 1 run of the smoke space
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
PROBE_ENV = "AUDIONET_STARTUP_PROBE"
WATCH = ("torch", "ray", "ray.tune", "ray.train", "ray.data", "optuna", "audionet_ray.training.train")


# ----------------------------------------------------------------------------- the probe

def emit(ev: str, **kw) -> None:
    path = os.environ.get(PROBE_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"ev": ev, "t": time.time(), "pid": os.getpid(), **kw}) + "\n")


class _TimedLoader(importlib.abc.Loader):
    """Delegates to the real loader; records how long the module took to execute."""

    def __init__(self, loader, name: str):
        self._loader, self._name = loader, name

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        t0 = time.time()
        self._loader.exec_module(module)
        emit("import", name=self._name, start=t0)
        if self._name == "audionet_ray.training.train":
            _patch_train(module)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self):
        self._busy: set[str] = set()

    def find_spec(self, name, path, target=None):
        if name not in WATCH or name in self._busy:
            return None
        self._busy.add(name)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._busy.discard(name)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _TimedLoader(spec.loader, name)
        return spec


def _patch_train(T) -> None:
    """Wrap build_trainer (trial driver), torch_batches and _read_shard (Train worker); names unchanged."""
    import functools

    real_build, real_batches = T.build_trainer, T.torch_batches
    real_read = getattr(T, "_read_shard", None)  # small data is read into memory before the first epoch

    @functools.wraps(real_build)
    def build_trainer(*a, **kw):
        emit("build_trainer")
        trainer = real_build(*a, **kw)
        real_fit = trainer.fit

        def fit():
            emit("trainer_fit")
            return real_fit()

        trainer.fit = fit
        return trainer

    def first_data() -> bool:
        """True on the loop's first data call (Ray Data's batches or the in-memory read): the end of
        the loop's set-up; the first optimizer step after it is timed too."""
        from torch.optim.optimizer import register_optimizer_step_post_hook  # torch.optim hides the module

        if getattr(first_data, "called", False):
            return False
        first_data.called = True
        emit("loop_first_torch_batches")

        def after_step(opt, args, kwargs):
            emit("first_step_done")
            handle.remove()

        handle = register_optimizer_step_post_hook(after_step)
        return True

    @functools.wraps(real_batches)
    def torch_batches(*a, **kw):
        first_call = first_data()
        it = iter(real_batches(*a, **kw))
        if first_call:
            batch = next(it)
            emit("first_batch")
            yield batch
        yield from it

    T.build_trainer, T.torch_batches = build_trainer, torch_batches
    if real_read is not None:
        @functools.wraps(real_read)
        def _read_shard(*a, **kw):
            first_call = first_data()
            out = real_read(*a, **kw)
            if first_call:
                emit("first_batch")
            emit("read_shard_done")
            return out

        T._read_shard = _read_shard


def _patch_driver() -> None:
    """ray.init, Tuner.fit and ensure_prepared, wrapped once their modules are imported."""
    import builtins

    real_import = builtins.__import__
    done: set[str] = set()

    def wrap(obj, attr, ev):
        real = getattr(obj, attr)

        def wrapper(*a, **kw):
            emit(f"{ev}_start")
            try:
                return real(*a, **kw)
            finally:
                emit(f"{ev}_end")

        setattr(obj, attr, wrapper)

    def hooked(name, globals=None, locals=None, fromlist=(), level=0):
        mod = real_import(name, globals, locals, fromlist, level)
        if len(done) < 3:
            if "ray" not in done and "ray" in sys.modules and hasattr(sys.modules["ray"], "init"):
                done.add("ray")
                wrap(sys.modules["ray"], "init", "ray_init")
            if "tune" not in done and "ray.tune" in sys.modules and hasattr(sys.modules["ray.tune"], "Tuner"):
                done.add("tune")
                wrap(sys.modules["ray.tune"].Tuner, "fit", "tuner_fit")
            if "data" not in done and "audionet_ray.pipeline.data" in sys.modules \
                    and hasattr(sys.modules["audionet_ray.pipeline.data"], "ensure_prepared"):
                done.add("data")
                wrap(sys.modules["audionet_ray.pipeline.data"], "ensure_prepared", "ensure_prepared")
        if len(done) == 3:
            builtins.__import__ = real_import
        return mod

    builtins.__import__ = hooked


def install_probe() -> None:
    """Called from the generated sitecustomize.py in every Python process of the measured run."""
    if not os.environ.get(PROBE_ENV):
        return
    sys.meta_path.insert(0, _Finder())
    if os.environ.get("AUDIONET_STARTUP_DRIVER_PID") == str(os.getpid()):
        emit("python_started")
        _patch_driver()


SITECUSTOMIZE = f"""import sys
sys.path.insert(0, {str(HERE)!r})
import bench_startup
bench_startup.install_probe()
"""


# ----------------------------------------------------------------------------- the measurement

def launch(args: list[str], workdir: Path, timeout: float) -> dict:
    """Run the CLI under the probe; the shell `exec` keeps the pid, so the driver knows it is the driver."""
    probe_dir = workdir / "probe"
    probe_dir.mkdir(exist_ok=True)
    (probe_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    events = workdir / f"events-{time.time_ns()}.jsonl"
    env = dict(os.environ)
    env[PROBE_ENV] = str(events)
    env["PYTHONPATH"] = os.pathsep.join([str(probe_dir)] + [p for p in [env.get("PYTHONPATH")] if p])
    cmd = " ".join([f'AUDIONET_STARTUP_DRIVER_PID=$$ exec "{sys.executable}" -m audionet_ray.tune',
                    *(f"'{a}'" for a in args)])
    t0 = time.time()
    proc = subprocess.run(["bash", "-c", cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    t_end = time.time()
    evs = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
    return {"launch": t0, "end": t_end, "rc": proc.returncode, "output": proc.stdout, "events": evs}


def phases(run: dict) -> list[tuple[str, float]]:
    """Consecutive phases from launch to the first step; each row the seconds it took."""
    evs, t0 = run["events"], run["launch"]
    first = {}
    for e in evs:
        key = e["ev"] if e["ev"] != "import" else f"import {e['name']}@{e['pid']}"
        first.setdefault(key, e)

    def t(ev: str) -> float | None:
        return first[ev]["t"] if ev in first else None

    reads = [e["t"] for e in evs if e["ev"] == "read_shard_done"]
    last_read = max(reads) if reads else t("first_batch")  # 0 s when every epoch streams
    driver = next((e["pid"] for e in evs if e["ev"] == "python_started"), None)
    worker = first.get("first_batch", {}).get("pid")
    trial = first.get("build_trainer", {}).get("pid")
    marks = [
        ("python interpreter start", t("python_started")),
        ("driver imports, arguments, dataset check", t("ray_init_start")),
        ("ray.init (local Ray: GCS, raylet, dashboard)", t("ray_init_end")),
        ("search set-up (resources, Optuna, Tuner)", t("tuner_fit_start")),
        ("Tune starts the trial (its process, imports)", t("build_trainer")),
        ("build_trainer (Ray Datasets, TorchTrainer)", t("trainer_fit")),
        ("Train start: controller, worker group, torch in the worker",
         first.get(f"import audionet_ray.training.train@{worker}", {}).get("t")),
        ("loop set-up (manifest, model, prepare_model, noise)", t("loop_first_torch_batches")),
        ("first data: Ray Data's first batch, or the in-memory read", t("first_batch")),
        ("rest of the data into memory (small data only)", last_read),
        ("first training step", t("first_step_done")),
    ]
    out, prev = [], t0
    for name, tm in marks:
        if tm is None:
            out.append((name, float("nan")))
            continue
        out.append((name, tm - prev))
        prev = tm
    out.append(("total: launch to first step done", (t("first_step_done") or float("nan")) - t0))
    details = []
    for e in evs:
        if e["ev"] == "import":
            who = {driver: "driver", worker: "worker", trial: "trial driver"}.get(e["pid"], "other")
            if who != "other":
                details.append((f"  import {e['name']} ({who})", e["t"] - e["start"]))
    if t("ensure_prepared_start") and t("ensure_prepared_end"):
        details.append(("  ensure_prepared (cached dataset check)", t("ensure_prepared_end") - t("ensure_prepared_start")))
    return out + details


def main(argv: list[str] | None = None) -> int:
    from _common import machine, machine_line, median, print_table, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run of the smoke search space")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    space = "smoke" if args.quick else "default"
    runs = 1 if args.quick else args.runs

    from audionet_ray.pipeline.data import ensure_prepared
    from audionet_ray.tune import demo_dataset

    prepared = ensure_prepared(demo_dataset(), progress=False)  # "with the dataset prepared": not timed
    info = machine()
    print(f"machine: {machine_line(info)}")
    print(f"command: python -m audionet_ray.tune --search-space {space} --num-samples 1 --epochs 1 --scheduler fifo "
          f"--trainer torch (demo data, prepared in {prepared})")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_startup-") as tmp:
        for i in range(runs):
            cli = ["--search-space", space, "--num-samples", "1", "--epochs", "1", "--scheduler", "fifo",
                   "--trainer", "torch", "--storage", f"{tmp}/runs",
                   "--name", f"startup{i}", "--no-export", "--quiet"]
            r = launch(cli, Path(tmp), args.timeout)
            if r["rc"] != 0 or not any(e["ev"] == "first_step_done" for e in r["events"]):
                print(r["output"][-3000:])
                print(f"error: run {i + 1} exited {r['rc']} without a recorded first step", file=sys.stderr)
                return 1
            results.append({"phases": phases(r), "whole_run_s": r["end"] - r["launch"],
                            "load_average": os.getloadavg()[0]})
    names = [n for n, _ in results[0]["phases"]]
    rows = [{"phase": n, **{f"run {i + 1} s": dict(res["phases"]).get(n) for i, res in enumerate(results)}}
            for n in names]
    rows.append({"phase": "whole CLI run (1 trial x 1 epoch, to exit)",
                 **{f"run {i + 1} s": res["whole_run_s"] for i, res in enumerate(results)}})
    print()
    print_table(rows)
    total = median([dict(res["phases"])["total: launch to first step done"] for res in results])
    print(f"\nlaunch to first training step: {total:.1f} s (median of {runs}); goal < 20 s: "
          f"{'met' if total < 20 else 'NOT met'}; load average now {os.getloadavg()[0]:.2f}")
    write_json(args.json, {"machine": info, "runs": results, "median_total_s": total})
    return 0


if __name__ == "__main__":
    sys.exit(main())
