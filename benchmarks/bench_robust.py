"""Far-field speech: the default search with and without far-field augmentation (issue 24).

Side by side in one run, on a 35-word, 200-speaker espeak-ng set made by the project (speech_data's
`far35` preset, not the demo's speakers) and its far-field copy (far_field.py: babble of other
speakers of the same split, simulated rooms of 0.15-0.9 s reverberation, telephone and cheap
microphone bands, noise at 0-15 dB SNR; test speakers, rooms and noises held out), the same
time budget each, each run as a user runs it (CLI subprocesses):
  (a) the default search (search_spaces/default.yaml) on the far-field set;
  (b) the robust search (search_spaces/robust.yaml: far-field augmentation on, and the capacity
      and schedule chosen for it) on the far-field set;
each exported bundle scored by `python -m audionet_ray.evaluate` on the far-field test split and on
the clean test split (the same test speakers and words, recorded clean).

Goals (issue 24): (b) >= 0.85 test accuracy far-field (stretch 0.90); no worse on clean speech.

    python benchmarks/bench_robust.py                         # 2 x 30 min searches (~70 min in all)
    python benchmarks/bench_robust.py --budget 10m --out /tmp/robust
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, machine, machine_line, print_table, run_search, write_json  # noqa: E402

RUNS = {"(a) default search": ["--search-space", "default"], "(b) robust search": ["--search-space", "robust"]}


def datasets(preset: str, seed: int) -> tuple[Path, Path]:
    """The clean set and its far-field copy (speech_data --far-field), made once into the cache, prepared."""
    import json as _json

    from audionet_ray import far_field, speech_data
    from audionet_ray.pipeline.data import ensure_prepared

    cfg = speech_data.PRESETS[preset]
    far = CACHE / "bench" / f"speech-{preset}-far{seed}"
    clean = far_field.clean_path(far)
    t0 = time.time()
    try:
        made = _json.loads((far / far_field.MANIFEST).read_text())
        ok = made["complete"] and made["seed"] == seed and speech_data.generated_with(clean) == cfg.to_dict()
    except (OSError, ValueError, KeyError):
        ok = False
    if not ok:
        if speech_data.generated_with(clean) != cfg.to_dict():
            speech_data.generate(clean, cfg, progress=False)
        far_field.far_field(clean, far, seed=seed, progress=False)
        print(f"made {clean} and its far-field copy {far} in {time.time() - t0:.0f} s", flush=True)
    return ensure_prepared(clean, progress=False), ensure_prepared(far, progress=False)


def evaluate(bundle: Path, data: Path, out: Path) -> float:
    """The bundle's test accuracy on `data`'s test split (python -m audionet_ray.evaluate)."""
    p = subprocess.run([sys.executable, "-m", "audionet_ray.evaluate", str(bundle), "--data", str(data),
                        "--out", str(out)], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"evaluate {bundle} on {data} failed:\n{p.stderr[-2000:]}")
    return json.loads((out / "test_metrics.json").read_text())["accuracy"]


def epochs_trained(exp: Path) -> dict:
    """Trials, epochs and training clips per second over the search (from its trials' metrics)."""
    from audionet_ray.tuning.experiment import load_trials

    trials = load_trials(exp)
    epochs = sum(len(t.history) for t in trials)
    rates = [r["clips_per_s"] for t in trials for r in t.history if r.get("clips_per_s")]
    return {"trials": len(trials), "epochs": epochs, "clips_per_s": sum(rates) / max(len(rates), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="30m", help="time budget of each search (default: 30m)")
    ap.add_argument("--preset", default="far35", help="speech_data preset of the clean set (default: far35)")
    ap.add_argument("--seed", type=int, default=0, help="the far-field copy's seed")
    ap.add_argument("--runs", default="a,b", help="which of a, b to run")
    ap.add_argument("--out", default=str(CACHE / "bench" / "robust"), help="experiments, logs and JSON")
    ap.add_argument("--skip-search", action="store_true", help="score the bundles of an earlier run in --out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(machine_line(info), flush=True)
    clean, far = datasets(args.preset, args.seed)
    rows, searches = [], {}
    for label, extra in RUNS.items():
        key = label[1]
        if key not in args.runs:
            continue
        if not args.skip_search:
            shutil.rmtree(out / key, ignore_errors=True)
            searches[label] = run_search(far, out, key, args.budget, extra)
            print("\n".join(searches[label]["tail"]), flush=True)
        bundle = out / key / "bundle"
        row = {"search": label, "far-field test": evaluate(bundle, far, out / f"eval-{key}-far"),
               "clean test": evaluate(bundle, clean, out / f"eval-{key}-clean"),
               "wall s": searches.get(label, {}).get("wall_s"), **epochs_trained(out / key)}
        rows.append(row)
        print(f"  {row}", flush=True)
    print()
    print_table(rows)
    by = {r["search"][:3]: r for r in rows}
    if "(b)" in by:
        b = by["(b)"]
        verdict = "met" if b["far-field test"] >= 0.85 else "NOT met"
        print(f"\n(b) far-field test accuracy {b['far-field test']:.3f} (goal >= 0.85: {verdict}); clean "
              f"{b['clean test']:.3f}" + (f" against (a)'s {by['(a)']['clean test']:.3f}" if "(a)" in by else ""))
    write_json(str(out / "bench_robust.json"), {"machine": info, "args": vars(args), "rows": rows,
                                                "searches": searches})
    return 0


if __name__ == "__main__":
    sys.exit(main())
