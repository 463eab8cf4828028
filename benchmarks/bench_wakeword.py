"""Wake words from text alone, judged on voices and an engine training never heard (issue 29).

For each phrase (default: `marmalade`, one word, and `hey jarvis`, two; neither a Speech Commands
word nor anything the project was tuned on):
  1. typed phrase -> exported bundle, timed, as a user runs it: `python -m audionet_ray.tune
     --keywords PHRASE --synthesize --synthesize-engines ENGINE --synthesize-speakers N
     --time-budget B` speaks it (N speakers x 2 takes, confusables, parts and other words) with
     the voices of the training engine only (`--train-engine`, default espeak-ng's own
     synthesizer; the held-out engine stays out of training entirely), prepares it, searches and
     exports, all within B: the budget counts from launch;
  2. two held-out test sets, each synthesized with another seed (speakers training never heard):
     "held-out voices" (the training engine) and "held-out engine" (`--test-engine`, default the
     Klatt formant synthesizer: voice variants training never used);
  3. per set, the project's stream evaluation (streaming.evaluate_streams: the phrase among the
     set's other clips over its background noise, then keyword-free streams of its _unknown_
     clips, i.e. confusables, parts and other words, and noise, until `--keyword-free-hours`):
     FRR at the threshold that keeps to 1 and to 0.5 false accepts per hour (each set's own best
     threshold) by the bundle's detector rule and, beside it, by the other rule on the same
     bundle (predict.RULES: "top", the default, and "keyword"), FRR and FA/h at the bundle's
     exported threshold, clip accuracy on every clip and on the phrase's clips alone, and a DET
     plot (plots.det_curve).

Prints a table; writes bench_wakeword.json and det-<phrase>-<set>.png into --out.

    python benchmarks/bench_wakeword.py                                  # 2 x 30 min searches
    python benchmarks/bench_wakeword.py --phrases marmalade --time-budget 4m --speakers 12 \\
        --test-speakers 6 --keyword-free-hours 0.1 --out /tmp/ww       # a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, machine, machine_line, print_table, write_json  # noqa: E402

TEST_SEED = 1  # the held-out sets' speakers: another seed than tune --synthesize's (0)


def synthesize(out: Path, phrase: str, speakers: int, engine: str, seed: int) -> dict:
    """One wake-word set of `phrase` by `engine`'s voices; returns its manifest."""
    from audionet_ray import wakeword as ww

    cfg = ww.WakewordConfig(phrases=(phrase,), speakers=speakers, takes=2, seed=seed, engines=(engine,))
    if ww.synthesized_with(out) != cfg.to_dict():
        ww.synthesize(out, cfg, progress=False)
    return json.loads((out / ww.MANIFEST).read_text())


def seconds_of(text: str) -> float:
    """tune's durations ("17s", "1m12s", "1h02m") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", text)))


def budget_split(plan: str) -> dict:
    """The plan line's split of the budget: before the search, reserved for the end, for trials."""
    m = re.search(r": (\S+) spent before the search .*?, (\S+) reserved for export and evaluation, (\S+) for trials", plan)
    return dict(zip(("before_search_s", "reserved_s", "trials_s"), map(seconds_of, m.groups()))) if m else {}


def train(phrase: str, out: Path, args: argparse.Namespace) -> dict:
    """Typed phrase -> bundle in one command: tune synthesizes (training engine only), prepares,
    searches and exports within the budget."""
    from audionet_ray import wakeword as ww
    from audionet_ray.corpus.prepare import load_manifest
    from audionet_ray.tuning.search_space import parse_duration
    from audionet_ray.detection.streaming import KEYWORD_FREE_HOURS_ENV

    shutil.rmtree(out / "search", ignore_errors=True)
    cmd = [sys.executable, "-m", "audionet_ray.tune", "--keywords", phrase, "--synthesize", "--synthesize-engines",
           args.train_engine, "--synthesize-speakers", str(args.speakers), "--time-budget", args.time_budget,
           "--storage", str(out), "--name", "search", "--quiet",
           *(["--search-space", args.search_space] if args.search_space else [])]
    print("$ " + " ".join(cmd), flush=True)
    quick = {KEYWORD_FREE_HOURS_ENV: str(args.keyword_free_hours)} if args.quick else {}  # tune's streams as short
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **quick})
    wall = time.time() - t0
    (out / "search.log").write_text(p.stdout + p.stderr)
    if p.returncode:
        raise SystemExit(f"tune failed ({p.returncode}); see {out / 'search.log'}:\n{p.stderr[-2000:]}")
    lines = p.stdout.splitlines()
    print("\n".join(lines[-6:]), flush=True)
    prepared = Path(json.loads((out / "search" / "search.json").read_text())["data"])
    made = json.loads((Path(load_manifest(prepared)["source"]) / ww.MANIFEST).read_text())
    split = budget_split(next((ln for ln in lines if ln.startswith("search search:")), ""))
    before = split.get("before_search_s", 0.0)  # synthesis, preparation and Ray's start: tune times them together
    return {"typed_to_bundle_s": wall, "budget_s": parse_duration(args.time_budget, "--time-budget"), **split,
            "synthesize_s": before, "search_s": wall - before, "prepared": str(prepared),
            "train_clips": made["counts"]["clips"], "window_s": made["clip_samples"] / 16_000,
            "voices": sorted(set(made["voices"].values())),
            "best": next((ln for ln in lines if ln.startswith("best trial")), "")}


def all_clips(prepared: Path) -> tuple[np.ndarray, list[str]]:
    """Every clip of a prepared set (all its speakers are held out) and its class name."""
    from audionet_ray.corpus.prepare import load_manifest
    from audionet_ray.detection.streaming import split_clips

    classes = load_manifest(prepared)["classes"]
    parts = [split_clips(prepared, "test"), split_clips(prepared, "train", train_ratio=1.0)]
    return np.concatenate([c for c, _ in parts]), [classes[i] for _, ids in parts for i in ids]


def clip_accuracy(bundle, prepared: Path, keyword: str) -> dict:
    """The bundle's accuracy on every clip of the set, and on the phrase's clips alone."""
    clips, labels = all_clips(prepared)
    guess = [bundle.classes[j] for j in bundle.predict_proba(clips).argmax(1)]
    right = np.array([g == t for g, t in zip(guess, labels)])
    said = np.array([t == keyword for t in labels])
    return {"clip_accuracy": float(right.mean()), "phrase_clip_accuracy": float(right[said].mean()),
            "clips": len(labels), "phrase_clips": int(said.sum())}


def judge(bundle_dir: Path, root: Path, keyword: str, args: argparse.Namespace, label: str, png: Path) -> dict:
    """The bundle as a detector on a held-out set's streams (every speaker of it), and on its clips."""
    from audionet_ray import plots
    from audionet_ray.detection.bundle import load
    from audionet_ray.pipeline.data import ensure_prepared
    from audionet_ray.detection.predict import RULES, detector_settings
    from audionet_ray.detection.streaming import StreamOptions, evaluate_streams, operating_point

    prepared = ensure_prepared(root, cache_dir=args.out / "cache", progress=False, keywords=[keyword])
    b = load(bundle_dir)
    s = detector_settings(b)
    t0 = time.time()
    by_rule = {}
    for rule in sorted(RULES, key=lambda r: r != s["rule"]):  # the bundle's rule first: its figures lead
        opts = StreamOptions(seed=0, minutes=args.minutes, stride_ms=s["stride_ms"], average_ms=s["average_ms"],
                             suppress_ms=s["suppress_ms"], keyword_free_hours=args.keyword_free_hours, rule=rule)
        r = evaluate_streams(b, prepared, "train", opts, 1.0, train_ratio=1.0, keywords=[keyword]).to_dict()
        r["split"] = f"{label}, {rule} rule"  # every speaker of the held-out set, not a split of it
        if rule == s["rule"]:
            plots.det_curve(r, png)
            first = r
        by_rule[rule] = {f"frr_at_{t:g}": (operating_point(r, t) or {"frr": 1.0})["frr"] for t in (1.0, 0.5)}
    r = first
    bt = min(r["curve"], key=lambda c: abs(c["threshold"] - s["threshold"]))
    return {**by_rule[s["rule"]], "rule": s["rule"], "by_rule": by_rule, "bundle_threshold": s["threshold"],
            "frr_at_bundle_threshold": bt["frr"],
            "fa_per_hour_at_bundle_threshold": bt["fa_per_hour"], **clip_accuracy(b, prepared, keyword),
            "spoken": r["spoken"].get(keyword, 0), "keyword_free_hours": r["keyword_free_hours"],
            "judge_s": time.time() - t0, "note": r["note"], "det_plot": str(png)}


def held_out(phrase: str, out: Path, args: argparse.Namespace, train_voices: list[str]) -> dict[str, tuple[Path, dict]]:
    """The two held-out sets: unseen speakers of the training engine, and speakers of the test engine."""
    sets = {}
    for label, engine in (("held-out voices", args.train_engine), ("held-out engine", args.test_engine)):
        root = out / f"test-{engine}"
        made = synthesize(root, phrase, args.test_speakers, engine, TEST_SEED)
        voices = set(made["voices"].values())
        sets[label] = (root, {"engine": engine, "speakers": len(made["voices"]),
                              "voices_seen_in_training": len(voices & set(train_voices)),
                              "variants_seen_in_training": len({v.split("+")[1] for v in voices}
                                                               & {v.split("+")[1] for v in train_voices})})
    return sets


def bench_phrase(phrase: str, args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """Train (unless --skip-search), then judge on both held-out sets; the figures and table rows."""
    from audionet_ray import wakeword as ww

    keyword = ww.folder_of(phrase)
    out = args.out / keyword
    out.mkdir(parents=True, exist_ok=True)
    trained = train(phrase, out, args) if not args.skip_search else json.loads((out / "trained.json").read_text())
    (out / "trained.json").write_text(json.dumps(trained, indent=1))
    figures, rows = {"trained": trained, "sets": {}}, []
    for label, (root, info) in held_out(phrase, out, args, trained["voices"]).items():
        r = judge(out / "search" / "bundle", root, keyword, args, f"{phrase}: {label} ({info['engine']})",
                  args.out / f"det-{keyword}-{label.split()[-1]}.png")
        figures["sets"][label] = {**info, **r}
        rows.append({"phrase": phrase, "test set": f"{label} ({info['engine']})", "rule": r["rule"],
                     "FRR@1FA/h": r["frr_at_1"], "FRR@0.5FA/h": r["frr_at_0.5"],
                     **{f"FRR@1FA/h {rule} rule": v["frr_at_1"] for rule, v in r["by_rule"].items()
                        if rule != r["rule"]},
                     "FRR@bundle": r["frr_at_bundle_threshold"],
                     "FA/h@bundle": r["fa_per_hour_at_bundle_threshold"], "clip acc": r["clip_accuracy"],
                     "phrase clip acc": r["phrase_clip_accuracy"], "kw-free h": r["keyword_free_hours"],
                     "typed->bundle s": trained["typed_to_bundle_s"]})
    return figures, rows


def main(argv: list[str] | None = None) -> int:
    from audionet_ray.corpus.speech_data import ENGINES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phrases", default="marmalade,hey jarvis", help="comma-separated (default: marmalade,hey jarvis)")
    ap.add_argument("--time-budget", default="30m", help="of each phrase's search (default: 30m)")
    ap.add_argument("--speakers", type=int, default=120, help="training speakers, 2 takes each (default: 120)")
    ap.add_argument("--test-speakers", type=int, default=40, help="speakers of each held-out set (default: 40)")
    ap.add_argument("--train-engine", default="espeak", choices=ENGINES)
    ap.add_argument("--test-engine", default="espeak-klatt", choices=ENGINES, help="the engine held out of training")
    ap.add_argument("--keyword-free-hours", type=float, default=1.0, help="per held-out set (default: 1)")
    ap.add_argument("--minutes", type=float, default=20.0, help="at most this much stream with the phrase in it")
    ap.add_argument("--search-space", help="tune's --search-space (default: tune's own)")
    ap.add_argument("--out", type=Path, default=CACHE / "bench" / "wakeword", help="sets, searches, plots and JSON")
    ap.add_argument("--skip-search", action="store_true", help="judge the bundles of an earlier run in --out")
    ap.add_argument("--quick", action="store_true", help="a smoke test: marmalade, 12 speakers, the smoke space, "
                                                         "--keyword-free-hours 0.02 for tune's export too")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.train_engine == args.test_engine:
        ap.error("--test-engine: choose an engine other than --train-engine, so that one is held out")
    if args.quick:
        args.phrases, args.speakers, args.test_speakers, args.time_budget = "marmalade", 12, 8, "2m"
        args.keyword_free_hours, args.minutes, args.search_space = 0.02, 1.0, "smoke"
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(machine_line(info), flush=True)
    figures, rows = {}, []
    for phrase in [p.strip() for p in args.phrases.split(",") if p.strip()]:
        figures[phrase], more = bench_phrase(phrase, args)
        rows += more
    print()
    print_table(rows)
    for phrase, f in figures.items():
        for label, r in f["sets"].items():
            print(f"{phrase}, {label}: {r['note']}")
    result = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "phrases": figures}
    write_json(str(args.out / "bench_wakeword.json"), result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
