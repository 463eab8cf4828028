"""`python -m audionet_ray.evaluate BUNDLE --data ROOT`: the bundle on the held-out test split.

The test split is fixed when a dataset is prepared (testing_list.txt, or a hash of the speaker)
and lives in its own shards, which no training or search ever reads; this reads them with
pyarrow (no Ray needed), classifies every clip exactly as training validated (standardised
int16 clips), and reports accuracy, per-class precision and recall as a table, and the
confusion matrix as a PNG plus the numbers as JSON (in the bundle folder unless --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

from .bundle import Bundle, BundleError, load, resolve_device
from .discover import DatasetError
from .prepare import load_manifest, pcm_from_binary

PNG_FILE = "confusion_matrix.png"
METRICS_FILE = "test_metrics.json"


def test_batches(prepared: Path, batch_size: int = 512) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(int16 clips (B, 16000), labels (B,)) of the prepared dataset's test split."""
    m = load_manifest(prepared)
    if "split_shards" in m:
        files, only_test = m["split_shards"].get("test", []), False
    else:  # shards that mix splits: keep the test rows
        files, only_test = m["shards"], True
    cols = ["pcm", "label"] + (["split"] if only_test else [])
    for name in files:
        for batch in pq.ParquetFile(prepared / name).iter_batches(batch_size=batch_size, columns=cols):
            pcm, labels = pcm_from_binary(batch.column("pcm")), batch.column("label").to_numpy()
            if only_test:
                keep = np.asarray(batch.column("split").to_pylist()) == "test"
                pcm, labels = pcm[keep], labels[keep]
            if len(labels):
                yield pcm, labels.astype(np.int64)


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


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Rows normalised to recall (colour), raw counts written in the cells when they fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    size = max(5.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90 if n > 12 else 45, ha="right" if n <= 12 else "center")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7 if n > 20 else 9,
                            color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(bundle: Bundle, data: str | Path, out_dir: Path) -> dict:
    """Run the test split, write the PNG and JSON into out_dir, return the metrics."""
    from .data import ensure_prepared

    prepared = ensure_prepared(data)
    m = load_manifest(prepared)
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
    plot_confusion(cm, bundle.classes, out_dir / PNG_FILE, title)
    (out_dir / METRICS_FILE).write_text(json.dumps(s, indent=1) + "\n")
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("bundle", metavar="BUNDLE", help="a bundle folder from export (or the end of a search)")
    ap.add_argument("--data", help="dataset root or prepared folder (default: the data the model was trained on)")
    ap.add_argument("--out", help=f"folder for {PNG_FILE} and {METRICS_FILE} (default: the bundle folder)")
    ap.add_argument("--onnx", action="store_true", help="run model.onnx with onnxruntime instead of torch")
    ap.add_argument("--device", default="auto", help="torch device: auto (GPU if any), cpu, cuda (default: auto)")
    args = ap.parse_args(argv)
    try:
        bundle = load(args.bundle, backend="onnx" if args.onnx else "torch",
                      device="cpu" if args.onnx else resolve_device(args.device))
        data = args.data or bundle.config.get("training", {}).get("hyperparameters", {}).get("data")
        if not data:
            raise DatasetError("--data is needed: the bundle does not say which data it was trained on")
        if not args.data and not Path(data).is_dir():
            raise DatasetError(f"the bundle was trained on {data}, which is not there any more: pass --data ROOT")
        out_dir = Path(args.out).expanduser() if args.out else bundle.path
        if not args.data:
            print(f"data: {data} (the bundle's training data)")
        s = evaluate(bundle, data, out_dir)
    except (BundleError, DatasetError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or args.out}: {e.strerror or e} (pass --out DIR to write elsewhere)", file=sys.stderr)
        return 2
    print(table(s))
    extra = f"; left out {sum(s['left_out'].values())} clip(s) of classes the model does not know" if s["left_out"] else ""
    print(f"test accuracy {s['accuracy']:.4f} on {s['n_clips']} clips{extra}")
    print(f"confusion matrix: {out_dir / PNG_FILE}")
    print(f"metrics: {out_dir / METRICS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
