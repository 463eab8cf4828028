"""`python -m audionet_ray.evaluate BUNDLE --data ROOT`: the bundle on the held-out test split.

The test split is fixed when a dataset is prepared (testing_list.txt, or a hash of the speaker)
and lives in its own shards, which no training or search ever reads; this reads them with
pyarrow (no Ray needed), classifies every clip exactly as training validated (standardised
int16 clips), and reports accuracy, per-class precision and recall as a table, and the
confusion matrix as a PNG plus the numbers as JSON (in the bundle folder unless --out).

With --streaming it judges the bundle as a keyword spotter instead (streaming.py): long streams
built from the test split, false accepts per hour and false-reject rate per keyword across
thresholds, the DET curve as a PNG, and the threshold for --target-fa-per-hour.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core import log
from ..detection.bundle import NOT_KEYWORDS, Bundle, BundleError, load_for
from ..corpus.discover import DatasetError
from ..detection.negatives import as_dicts, firing_negatives
from ..pipeline.dataset import PreparedDataset
from ..corpus.prepare import pcm_from_binary

logger = log.get(__name__)

PNG_FILE = "confusion_matrix.png"
METRICS_FILE = "test_metrics.json"
DET_FILE = "det_curve.png"
STREAMING_FILE = "streaming_metrics.json"


def test_batches(prepared: Path, batch_size: int = 512) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(int16 clips (B, clip_samples), labels (B,)) of the prepared dataset's test split."""
    for batch in PreparedDataset.open(prepared).batches("test", ("pcm", "label"), batch_size):
        yield pcm_from_binary(batch.column("pcm")), batch.column("label").to_numpy().astype(np.int64)


def confusion(bundle: Bundle, prepared: Path, data_classes: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Confusion counts over the bundle's classes (rows: true, columns: predicted).

    Test classes are matched to the model's by name; clips of classes the model does not know
    are left out and counted per class.
    """
    to_model = np.array([bundle.classes.index(c) if c in bundle.classes else -1 for c in data_classes])
    n = len(bundle.classes)
    cm = np.zeros((n, n), np.int64)
    left_out: dict[str, int] = {}
    for pcm, labels in test_batches(prepared):
        y = to_model[labels]
        for c in labels[y < 0]:
            left_out[data_classes[c]] = left_out.get(data_classes[c], 0) + 1
        if not (y >= 0).any():
            continue
        pred = bundle.predict_logits(pcm[y >= 0]).argmax(axis=1)
        np.add.at(cm, (y[y >= 0], pred), 1)
    return cm, left_out


def scores(cm: np.ndarray, classes: list[str]) -> dict:
    """Accuracy and per-class precision, recall, F1 (None where a class has no predictions / clips)."""
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)

    def ratio(a: float, b: float) -> float | None:
        return float(a / b) if b else None

    per_class = {}
    for i, c in enumerate(classes):
        p, r = ratio(tp[i], predicted[i]), ratio(tp[i], actual[i])
        f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else (0.0 if p is not None and r is not None else None)
        per_class[c] = {"precision": p, "recall": r, "f1": f1, "support": int(actual[i]), "predicted": int(predicted[i])}
    present = [v for v in per_class.values() if v["support"]]
    macro = {k: float(np.mean([v[k] or 0.0 for v in present])) if present else None for k in ("precision", "recall", "f1")}
    return {"n_clips": int(cm.sum()), "accuracy": ratio(tp.sum(), cm.sum()), "macro": macro, "per_class": per_class}


def table(s: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    width = max(8, *(len(c) for c in s["per_class"]))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for c, v in s["per_class"].items():
        lines.append(f"{c:<{width}}  {f(v['precision']):>9}  {f(v['recall']):>6}  {f(v['f1']):>5}  {v['support']:>7}")
    m = s["macro"]
    lines.append(f"{'macro':<{width}}  {f(m['precision']):>9}  {f(m['recall']):>6}  {f(m['f1']):>5}  {s['n_clips']:>7}")
    return "\n".join(lines)


def evaluate(bundle: Bundle, data: str | Path, out_dir: Path) -> dict:
    """Run the test split, write the PNG and JSON into out_dir, return the metrics."""
    from ..core import plots
    from ..pipeline.data import ensure_prepared

    prepared = ensure_prepared(data, window=bundle.clip_samples / bundle.sample_rate)  # a root: cut to its window
    m = PreparedDataset.open(prepared).manifest
    if m.get("sample_rate", 16_000) != bundle.sample_rate or m.get("clip_samples", 16_000) != bundle.clip_samples:
        raise DatasetError(f"{prepared}: clips of {m.get('clip_samples')} samples at {m.get('sample_rate')} Hz, "
                           f"but the bundle expects {bundle.clip_samples} at {bundle.sample_rate} Hz")
    shared = [c for c in m["classes"] if c in bundle.classes]
    if not shared:
        raise DatasetError(f"{data}: none of its classes ({', '.join(m['classes'][:8])}, ...) is a class of the bundle "
                           f"({', '.join(bundle.classes[:8])}, ...): evaluate on the dataset the model was trained for")
    cm, left_out = confusion(bundle, prepared, m["classes"])
    if cm.sum() == 0:
        raise DatasetError(f"{data}: the test split has no clips of the bundle's classes (testing_list.txt empty?)")
    s = scores(cm, bundle.classes)
    s.update({"bundle": str(bundle.path), "data": str(data), "prepared": str(prepared), "backend": bundle.backend,
              "classes": bundle.classes, "confusion_matrix": cm.tolist(), "left_out": left_out,
              "confusion_png": PNG_FILE})
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"test accuracy {s['accuracy']:.3f} on {s['n_clips']} clips"
    plots.confusion_matrix(cm, bundle.classes, title, out_dir / PNG_FILE)  # at most plots.MATRIX_CLASSES drawn
    (out_dir / METRICS_FILE).write_text(json.dumps(s, indent=1) + "\n")
    return s


def evaluate_streaming(bundle: Bundle, data: str | Path, out_dir: Path, target_fa_per_hour: float = 1.0,
                       minutes: float = 10.0, seed: int = 0, keyword_free_hours: float | None = None,
                       keywords: list[str] | None = None) -> dict:
    """Streaming evaluation on the test split (streaming.py); writes the DET PNG and JSON into out_dir.

    The detector runs with the bundle's operating point (threshold, smoothing) when it has one,
    and the figures at that threshold are reported beside the test split's own best threshold.
    """
    from ..core import plots
    from ..pipeline.data import ensure_prepared
    from ..detection.predict import detector_settings
    from ..detection.streaming import DEFAULT_KEYWORD_FREE_HOURS, StreamOptions, evaluate_streams

    if keywords:
        unknown = [k for k in keywords if k not in bundle.classes or k in NOT_KEYWORDS]
        if unknown:
            raise DatasetError(f"--keywords: {', '.join(unknown)} is not a keyword of the bundle; its keywords: "
                               + ", ".join(c for c in bundle.classes if c not in NOT_KEYWORDS))
    prepared = ensure_prepared(data, window=bundle.clip_samples / bundle.sample_rate)  # a root: cut to its window
    settings = detector_settings(bundle)
    hours = DEFAULT_KEYWORD_FREE_HOURS if keyword_free_hours is None else keyword_free_hours
    opts = StreamOptions(seed=seed, minutes=minutes, stride_ms=settings["stride_ms"], keyword_free_hours=hours,
                         average_ms=settings["average_ms"], suppress_ms=settings["suppress_ms"], rule=settings["rule"])
    r = evaluate_streams(bundle, prepared, "test", opts, target_fa_per_hour, keywords=keywords).to_dict()
    at = settings["threshold"]
    r["bundle_threshold"] = {"threshold": at, "from": settings["from"],
                             "point": min(r["curve"], key=lambda c: abs(c["threshold"] - at))}
    r.update({"bundle": str(bundle.path), "data": str(data), "backend": bundle.backend, "det_png": DET_FILE,
              "firing_negatives": as_dicts(firing_negatives(bundle, prepared, at))})
    out_dir.mkdir(parents=True, exist_ok=True)
    plots.det_curve(r, out_dir / DET_FILE)
    (out_dir / STREAMING_FILE).write_text(json.dumps(r, indent=1) + "\n")
    return r


def streaming_lines(r: dict) -> list[str]:
    """The streaming result as a few lines: per keyword FRR at the bundle's threshold and at the target."""
    op, bt = r["operating_point"], r["bundle_threshold"]["point"]
    kws = r["keywords"]
    width = max(8, *(len(k) for k in kws))
    pct = lambda v: "-" if v is None else f"{100 * v:5.1f} %"  # noqa: E731
    head = f"{'keyword':<{width}}  spoken  FRR at {bt['threshold']:g} ({r['bundle_threshold']['from']})"
    if op:
        head += f"  FRR at {op['threshold']:g} ({r['target_fa_per_hour']:g} FA/h)"
    lines = [f"{len(r['streams'])} streams, {r['total_hours'] * 60:.1f} min ({r['keyword_free_hours'] * 60:.1f} min "
             f"keyword-free, {r['noise_only_hours'] * 60:.1f} min of it background noise alone), test split, "
             f"{r['options'].get('rule', 'top')} rule", head]
    for k in kws:
        row = f"{k:<{width}}  {r['spoken'][k]:>6}  {pct(bt['frr_per_keyword'][k]):>10}"
        if op:
            row += f"  {pct(op['frr_per_keyword'][k]):>10}"
        lines.append(row)
    lines.append(f"at threshold {bt['threshold']:g}: {bt['fa_per_hour']:.3g} false accepts per hour, "
                 f"FRR {pct(bt['frr']).strip()}")
    if op:
        lines.append(f"threshold for <= {r['target_fa_per_hour']:g} FA/h: {op['threshold']:g} "
                     f"({op['fa_per_hour']:.3g} FA/h, FRR {pct(op['frr']).strip()})")
    else:
        lines.append(f"no threshold up to {r['curve'][-1]['threshold']:g} keeps false accepts at or below "
                     f"{r['target_fa_per_hour']:g} per hour")
    lines.append(("" if r["enough_audio"] else "warning: ") + r["note"])
    fired = [f for f in r.get("firing_negatives", []) if f["fires"] > 0][:5]
    if fired:
        lines.append("test clips of other words that reach the threshold most: " + ", ".join(
            f"{f['text']} ({f['kind']}, {100 * f['fires']:.0f} % of {f['clips']})" for f in fired))
    return lines


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.evaluate", description=__doc__.splitlines()[0],
                                 formatter_class=log.HelpFormatter)
    ap.add_argument("bundle", metavar="BUNDLE", help="a bundle folder from export (or the end of a search)")
    ap.add_argument("--data", help="dataset root or prepared folder (default: the data the model was trained on)")
    ap.add_argument("--out", help=f"folder for {PNG_FILE} and {METRICS_FILE} (default: the bundle folder)")
    ap.add_argument("--onnx", action="store_true", help="run model.onnx with onnxruntime instead of torch")
    ap.add_argument("--int8", action="store_true", help="run the bundle's int8 model (model.int8.onnx) with onnxruntime")
    ap.add_argument("--device", default="auto", help="torch device: auto (GPU if any), cpu, cuda (default: auto)")
    ap.add_argument("--streaming", action="store_true",
                    help=f"judge it as a keyword spotter on long streams: FA/h, FRR, DET curve ({DET_FILE}, {STREAMING_FILE})")
    ap.add_argument("--target-fa-per-hour", type=float, default=1.0,
                    help="with --streaming: the false-accept rate to find a threshold for (default: 1)")
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="with --streaming: at most this many minutes of keyword streams (default: 10)")
    ap.add_argument("--seed", type=int, default=0, help="with --streaming: how the streams are laid out (default: 0)")
    ap.add_argument("--keyword-free-hours", type=float,
                    help="with --streaming: add the test split's other words until the streams hold this many hours "
                         "without a keyword (default: 3, enough to show 1 false accept per hour; 0: none added)")
    ap.add_argument("--keywords", help="with --streaming: judge only these keywords of the bundle (comma-separated)")
    log.add_option(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.setup(args.log_level)
    for ok, msg in [(args.target_fa_per_hour > 0, f"--target-fa-per-hour must be > 0, got {args.target_fa_per_hour:g}"),
                    (args.minutes > 0, f"--minutes must be > 0, got {args.minutes:g}"),
                    ((args.keyword_free_hours or 0) >= 0, f"--keyword-free-hours must be >= 0, got {args.keyword_free_hours}"),
                    (not (args.onnx and args.int8), "--onnx and --int8: choose one (--int8 runs onnxruntime too)")]:
        if not ok:
            print(f"error: {msg}", file=sys.stderr)
            return 2
    try:
        bundle = load_for(args.bundle, args.onnx, args.int8, args.device)
        data = args.data or bundle.config.get("training", {}).get("hyperparameters", {}).get("data")
        if not data:
            raise DatasetError("--data is needed: the bundle does not say which data it was trained on")
        if not args.data and not Path(data).is_dir():
            raise DatasetError(f"the bundle was trained on {data}, which is not there any more: pass --data ROOT")
        out_dir = Path(args.out).expanduser() if args.out else bundle.path
        if not args.data:
            logger.info(f"data: {data} (the bundle's training data)")
        if args.streaming:
            from ..training.config import parse_keywords

            r = evaluate_streaming(bundle, data, out_dir, args.target_fa_per_hour, args.minutes, args.seed,
                                   args.keyword_free_hours, parse_keywords(args.keywords) or None)
        else:
            s = evaluate(bundle, data, out_dir)
    except (BundleError, DatasetError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or args.out}: {e.strerror or e} (pass --out DIR to write elsewhere)", file=sys.stderr)
        return 2
    if args.streaming:
        for line in streaming_lines(r):  # its warning (too little audio) stays at --log-level warning
            (logger.warning if line.startswith("warning: ") else logger.info)(line)
        logger.info(f"DET curve: {out_dir / DET_FILE}")
        logger.info(f"metrics: {out_dir / STREAMING_FILE}")
        return 0
    logger.info(table(s))
    extra = f"; left out {sum(s['left_out'].values())} clip(s) of classes the model does not know" if s["left_out"] else ""
    logger.info(f"test accuracy {s['accuracy']:.4f} on {s['n_clips']} clips{extra}")
    logger.info(f"confusion matrix: {out_dir / PNG_FILE}")
    logger.info(f"metrics: {out_dir / METRICS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
