"""The keyword search against today's default search, judged as keyword spotters (issue 23).

Side by side in one run, on one 200-speaker espeak-ng set that is not the demo's (speech_data's
`kws` preset: 10 keywords, 6 of Speech Commands' other words and 24 further words per speaker,
its own seed), with the same time budget each:
  1. the default search (a clip classifier of every word folder), `--time-budget B`;
  2. the keyword search (`--keywords yes,no,...`: _unknown_, _silence_, sliding-window training,
     ranked by frr_at_target), `--time-budget B`;
  3. both exported bundles run as detectors over the same test-speaker streams (the keywords among
     other words over background noise, plus at least `--keyword-free-hours` of keyword-free audio):
     the false-reject rate at 1 and at 0.5 false accepts per hour (the lowest FRR whose FA/h stays at
     or below the rate; each model's own best threshold on these streams), the bundle's calibrated
     threshold as exported, clip accuracy on the test split's keyword clips, and both DET curves in
     one plot.

Goals (issue 23): FRR <= 5 % at <= 1 FA/h with keyword clip accuracy >= 0.95; stretch <= 2 % at 0.5/h.

    python benchmarks/bench_detector.py                        # 2 x 30 min searches, then judging
    python benchmarks/bench_detector.py --budget 10m --out /tmp/det   # shorter
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, machine, machine_line, print_table, run_search, write_json  # noqa: E402

KEYWORDS = "yes,no,up,down,left,right,on,off,stop,go"


def dataset(preset: str) -> Path:
    """The benchmark's speech set, generated once into the cache."""
    from audionet_ray import speech_data

    cfg = speech_data.PRESETS[preset]
    root = CACHE / "bench" / f"speech-{preset}"
    if speech_data.generated_with(root) != cfg.to_dict():
        t0 = time.time()
        speech_data.generate(root, cfg, progress=False)
        print(f"generated {root} in {time.time() - t0:.0f} s", flush=True)
    return root


def judge(bundle_dir: Path, prepared: Path, keywords: list[str], hours: float) -> dict:
    """The bundle as a detector on test-speaker streams, and its accuracy on the keyword clips."""
    from audionet_ray.detection.bundle import load
    from audionet_ray.detection.predict import detector_settings
    from audionet_ray.corpus.prepare import load_manifest
    from audionet_ray.detection.streaming import StreamOptions, evaluate_streams, operating_point, split_clips

    b = load(bundle_dir)
    s = detector_settings(b)
    opts = StreamOptions(seed=0, minutes=20.0, stride_ms=s["stride_ms"], average_ms=s["average_ms"],
                         suppress_ms=s["suppress_ms"], keyword_free_hours=hours)
    t0 = time.time()
    r = evaluate_streams(b, prepared, "test", opts, 1.0, keywords=keywords).to_dict()
    at = {f"frr_at_{t:g}": (operating_point(r, t) or {"frr": 1.0})["frr"] for t in (1.0, 0.5)}
    bt = min(r["curve"], key=lambda c: abs(c["threshold"] - s["threshold"]))
    classes = load_manifest(prepared)["classes"]
    clips, ids = split_clips(prepared, "test")
    keep = np.array([classes[i] in keywords for i in ids])
    probs = b.predict_proba(clips[keep])
    truth = [classes[i] for i in ids[keep]]
    acc = float(np.mean([b.classes[j] == t for j, t in zip(probs.argmax(1), truth)]))
    return {**at, "bundle_threshold": s["threshold"], "frr_at_bundle_threshold": bt["frr"],
            "fa_per_hour_at_bundle_threshold": bt["fa_per_hour"], "keyword_clip_accuracy": acc,
            "keyword_clips": int(keep.sum()), "keyword_free_hours": r["keyword_free_hours"],
            "judge_s": time.time() - t0, "note": r["note"], "curve": r["curve"]}


def plot(results: dict[str, dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    for name, r in results.items():
        pts = sorted(((c["fa_per_hour"] or 0.0, 100 * (c["frr"] or 0.0)) for c in r["curve"]),
                     key=lambda p: (p[0], -p[1]))  # left to right; at equal FA/h from high to low FRR
        ax.plot(*zip(*pts), lw=2, label=f"{name}: FRR {100 * r['frr_at_1']:.1f} % at <= 1 FA/h")
    ax.axvline(1.0, color="red", ls=":", lw=1)
    ax.set_xscale("symlog", linthresh=1.0)  # linear below 1 FA/h (0 sits on the axis), logarithmic above
    ax.set_xlim(left=0)
    ax.set_xlabel("false accepts per hour (test speakers)")
    ax.set_ylabel("false-reject rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("DET curves: default search vs keyword search, same data and budget")
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="30m", help="time budget of each search (default: 30m)")
    ap.add_argument("--preset", default="kws", help="speech_data preset of the data (default: kws)")
    ap.add_argument("--keyword-free-hours", type=float, default=1.0, help="of the judging streams (default: 1)")
    ap.add_argument("--out", default=str(CACHE / "bench" / "detector"), help="experiments, plot and JSON")
    ap.add_argument("--skip-search", action="store_true", help="judge the bundles of an earlier run in --out")
    ap.add_argument("--replot", action="store_true", help="only redraw det_compare.png from --out's bench_detector.json")
    args = ap.parse_args()
    from audionet_ray.pipeline.data import ensure_prepared

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((out / "bench_detector.json").read_text())
        plot({n: {**saved["results"][n], "frr_at_1": saved["results"][n]["frr_at_1"], "curve": c}
              for n, c in saved["curves"].items()}, out / "det_compare.png")
        print(f"DET curves: {out / 'det_compare.png'}")
        return 0
    info = machine()
    print(machine_line(info), flush=True)
    root = dataset(args.preset)
    keywords = KEYWORDS.split(",")
    prepared = ensure_prepared(root, keywords=keywords, progress=False)  # the streams: keyword-prepared test split
    runs = {"default search": [], "keyword search": ["--keywords", KEYWORDS]}
    searches = {}
    for name, extra in runs.items():
        tag = name.split()[0]
        if not args.skip_search:
            import shutil

            shutil.rmtree(out / tag, ignore_errors=True)
            searches[name] = run_search(root, out, tag, args.budget, extra)
            print("\n".join(searches[name]["tail"]), flush=True)
    results = {name: judge(out / name.split()[0] / "bundle", prepared, keywords, args.keyword_free_hours)
               for name in runs}
    rows = [{"search": n, "FRR at 1 FA/h": r["frr_at_1"], "FRR at 0.5 FA/h": r["frr_at_0.5"],
             "FRR at bundle thr": r["frr_at_bundle_threshold"], "FA/h there": r["fa_per_hour_at_bundle_threshold"],
             "kw clip acc": r["keyword_clip_accuracy"], "search s": searches.get(n, {}).get("wall_s")}
            for n, r in results.items()]
    print()
    print_table(rows)
    first = next(iter(results.values()))
    print(f"judged on {first['keyword_free_hours']:.2f} h of keyword-free test-speaker audio; {first['note']}")
    plot(results, out / "det_compare.png")
    print(f"DET curves: {out / 'det_compare.png'}")
    write_json(str(out / "bench_detector.json"), {"machine": info, "budget": args.budget, "preset": args.preset,
                                                  "searches": searches, "rows": rows,
                                                  "results": {n: {k: v for k, v in r.items() if k != "curve"}
                                                              for n, r in results.items()},
                                                  "curves": {n: r["curve"] for n, r in results.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
