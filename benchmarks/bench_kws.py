"""The model judged as a keyword spotter: streaming FRR at 1 FA/h, int8 against float, latency.

Side by side in one run:
  1. a small AudioNet is trained (plain PyTorch with train.py's augmentation, no Ray: this
     measures the bundle, not the search) on the demo words or the project's espeak-ng speech,
     and exported as a bundle (operating point calibrated on validation streams, int8 model);
  2. `evaluate --streaming` on the test split, float (onnxruntime) and int8, with the same
     streams: per keyword the false-reject rate at the test split's own 1 FA/h threshold and at
     the bundle's calibrated threshold;
  3. clip accuracy on the test split, float and int8, and their largest disagreement;
  4. latency per one-second window, float and int8 graphs interleaved (onnxruntime, one
     intra-op thread, median of many after warm-up) at several model widths, the reference's
     included (random weights: latency does not depend on them); where int8 is not 2x faster,
     onnxruntime's profile says which ops take the time and which stayed float.

Goals (issue 17): int8 within 1 point of float accuracy with >= 2x lower latency per window.

    python benchmarks/bench_kws.py                       # demo words, ~10 min on 2 cores
    python benchmarks/bench_kws.py --data speech         # espeak-ng speech (16 words, 200 speakers)
    python benchmarks/bench_kws.py --quick               # a smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, demo_prepared, machine, machine_line, print_table, speech_prepared, write_json  # noqa: E402


def train_small(prepared: Path, ckpt: Path, width: int, dense: int, epochs: int, seed: int = 0) -> float:
    """A checkpoint trained on the training speakers (train_ratio 0.9); returns its val accuracy."""
    from audionet_ray.pipeline.augment import AugmentConfig, augment, standardise
    from audionet_ray.training.config import TrainConfig
    from audionet_ray.modeling.model import AudioNet, ModelConfig
    from audionet_ray.corpus.prepare import load_manifest
    from audionet_ray.detection.streaming import split_clips
    from audionet_ray.training.checkpoint import save as save_checkpoint

    classes = load_manifest(prepared)["classes"]
    cfg = TrainConfig.from_dict(dict(data=str(prepared), epochs=epochs, batch_size=32, lr=2e-3, width=width, dense=dense, seed=seed,
                      augment=AugmentConfig()))
    x, y = (torch.from_numpy(a) for a in split_clips(prepared, "train", cfg.train_ratio))
    xv, yv = (torch.from_numpy(a) for a in split_clips(prepared, "val", cfg.train_ratio))
    model_cfg = ModelConfig(len(classes), width, dense, cfg.model.dropout)
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # small batches on a shared 2-core machine: one thread is the faster
    model = AudioNet.from_config(model_cfg)
    opt = torch.optim.NAdam(model.parameters(), lr=cfg.lr)
    for epoch in range(1, epochs + 1):
        model.train()
        gen = torch.Generator().manual_seed(epoch)
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(augment(x[idx], gen, cfg.augment)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(standardise(xv)).argmax(1) == yv).float().mean()) if len(yv) else float("nan")
    ckpt.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, model, opt, epochs, cfg, model_cfg, classes, {"val_accuracy": acc})
    return acc


def kws_prepared(prepared_or_root: Path, keywords: list[str]) -> Path:
    """The dataset as a keyword spotter sees it: the keywords, every other word as _unknown_ (the
    words it must not fire on), and _silence_ cut from the background noise; prepared once."""
    from audionet_ray.corpus.prepare import PrepareOptions, load_manifest, prepare

    root = Path(load_manifest(prepared_or_root)["source"]) if (prepared_or_root / "manifest.json").exists() \
        else prepared_or_root
    out = CACHE / "bench" / f"kws-{root.name}-{len(keywords)}words"
    prepare(root, out, PrepareOptions(words=keywords, unknown=True, silence=True), progress=False)
    return out


def latency_pair(width: int, dense: int, n_classes: int, runs: int, folder: Path) -> dict:
    """Float and int8 latency per window of one model size, interleaved so load drifts hit both."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    from audionet_ray.deploy.export import export_onnx, onnx_latency_ms
    from audionet_ray.modeling.model import AudioNet, flops_per_clip

    torch.manual_seed(0)
    model = AudioNet(n_classes, width, dense).eval()
    f, pre, q = folder / f"w{width}.onnx", folder / f"w{width}.pre.onnx", folder / f"w{width}.int8.onnx"
    export_onnx(model, f)
    rng = np.random.default_rng(0)
    feed = [rng.standard_normal((1, 16_000)).astype(np.float32) for _ in range(16)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feed)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"clips": x}

    quant_pre_process(str(f), str(pre))
    quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    fl, i8 = [], []
    for _ in range(3):  # rounds, interleaved
        fl.append(onnx_latency_ms(f, runs=runs)["median_ms"])
        i8.append(onnx_latency_ms(q, runs=runs)["median_ms"])
    row = {"width": width, "dense": dense, "MMACs/window": flops_per_clip(model.config, training=False) / 2e6,
           "float ms": float(np.median(fl)), "int8 ms": float(np.median(i8))}
    row["speedup"] = row["float ms"] / row["int8 ms"]
    row["profile"] = op_profile(q, f) if row["speedup"] < 2 else None
    return row


def op_profile(int8: Path, flt: Path, runs: int = 20) -> dict:
    """Time per op type (onnxruntime's profiler) of both graphs, and the ops of the int8 graph."""
    import onnx
    import onnxruntime as ort

    out = {"int8_graph_ops": dict(Counter(n.op_type for n in onnx.load(str(int8)).graph.node))}
    for name, path in (("float", flt), ("int8", int8)):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(path.with_suffix("")) + "-prof"
        opts.log_severity_level = 3
        s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((1, 16_000)).astype(np.float32)
        for _ in range(runs):
            s.run(None, {"clips": x})
        events = json.loads(Path(s.end_profiling()).read_text())
        per_op: Counter = Counter()
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                per_op[e["args"].get("op_name", "?")] += e["dur"] / runs / 1000
        out[f"{name}_ms_per_op"] = {k: round(v, 4) for k, v in per_op.most_common()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="demo", help="demo, speech, or a dataset root / prepared folder")
    ap.add_argument("--keywords", default="yes,no,up,down,left,right",
                    help="the words to spot; every other word of the data is _unknown_ (default: yes,no,up,down,left,right)")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--dense", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--minutes", type=float, default=10.0, help="keyword stream minutes (test and calibration)")
    ap.add_argument("--latency-widths", default="16,64,256", help="model widths to time (256: the reference)")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per latency round")
    ap.add_argument("--quick", action="store_true", help="a smoke test: tiny data, 2 epochs, short streams")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.minutes, args.latency_widths, args.runs = 2, 1.0, "8", 10

    from audionet_ray.detection.bundle import load
    from audionet_ray.deploy.evaluate import evaluate_streaming
    from audionet_ray.deploy.export import export

    info = machine()
    print(machine_line(info), flush=True)
    if args.data == "demo":
        root = demo_prepared(*((8, 2) if args.quick else (24, 3)))
    elif args.data == "speech":
        root = speech_prepared(*((20, 1) if args.quick else (200, 1)))
    else:
        root = Path(args.data).expanduser()
    prepared = kws_prepared(root, args.keywords.split(","))
    fig: dict = {"machine": info, "data": str(prepared), "width": args.width, "dense": args.dense,
                 "epochs": args.epochs, "minutes": args.minutes}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        fig["val_accuracy"] = train_small(prepared, tmp / "ckpt" / "checkpoint", args.width, args.dense, args.epochs)
        fig["train_s"] = round(time.time() - t0, 1)
        t0 = time.time()
        bundle_dir = export(tmp / "ckpt" / "checkpoint", tmp / "bundle", data=prepared,
                            calibration_minutes=args.minutes)
        fig["export_s"] = round(time.time() - t0, 1)
        config = json.loads((bundle_dir / "config.json").read_text())
        fig.update({k: config.get(k) for k in ("operating_point", "int8", "deployment")})
        print(f"trained {fig['train_s']} s (val accuracy {fig['val_accuracy']:.3f}), exported {fig['export_s']} s")

        streaming = {}
        for backend in ("onnx", "int8"):
            r = evaluate_streaming(load(bundle_dir, backend=backend), prepared, tmp / backend, 1.0, args.minutes)
            streaming[backend] = r
        fig["streaming"] = {k: {"operating_point": v["operating_point"], "bundle_threshold": v["bundle_threshold"],
                                "keyword_free_hours": v["keyword_free_hours"], "enough_audio": v["enough_audio"],
                                "note": v["note"], "spoken": v["spoken"]} for k, v in streaming.items()}
        rows = []
        for kw in streaming["onnx"]["keywords"]:
            row = {"keyword": kw, "spoken": streaming["onnx"]["spoken"][kw]}
            for backend, label in (("onnx", "float"), ("int8", "int8")):
                r = streaming[backend]
                op, bt = r["operating_point"], r["bundle_threshold"]["point"]
                row[f"{label} FRR@1FA/h"] = op["frr_per_keyword"][kw] if op else None
                row[f"{label} FRR@bundle"] = bt["frr_per_keyword"][kw]
            rows.append(row)
        print("\nstreaming, test split: FRR per keyword at the test split's own 1 FA/h threshold and at the "
              "bundle's calibrated threshold")
        print_table(rows)
        for backend, r in streaming.items():
            op = r["operating_point"]
            print(f"{backend}: " + (f"1 FA/h at threshold {op['threshold']:g}, FRR {op['frr']:.3f}; " if op else
                                   "no threshold reaches 1 FA/h; ")
                  + f"bundle threshold {r['bundle_threshold']['threshold']:g}: "
                  f"{r['bundle_threshold']['point']['fa_per_hour']:.3g} FA/h, FRR {r['bundle_threshold']['point']['frr']:.3f}")
        print(("" if streaming["onnx"]["enough_audio"] else "warning: ") + streaming["onnx"]["note"])
        fig["frr_rows"] = rows

        q = config["int8"]
        print(f"\nclip accuracy, test split ({q['test_clips']} clips): float {q['float_test_accuracy']:.4f}, "
              f"int8 {q['test_accuracy']:.4f} ({q['accuracy_drop_points']:+.2f} points lost), top-1 agreement "
              f"{q['top1_agreement_with_float']:.4f}, largest probability difference {q['max_abs_prob_diff_vs_float']:.3f}")

        n_classes = len(config["classes"])
        lat_rows = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for w in (int(v) for v in args.latency_widths.split(",")):
                dense = 512 if w == 256 else args.dense
                lat_rows.append(latency_pair(w, dense, n_classes, args.runs, tmp))
        print("\nlatency per one-second window, onnxruntime 1 thread (median of 3 interleaved rounds):")
        print_table([{k: v for k, v in r.items() if k != "profile"} for r in lat_rows])
        for r in lat_rows:
            if r["profile"]:
                p = r["profile"]
                print(f"width {r['width']}: int8 is {r['speedup']:.2f}x; int8 graph ops {p['int8_graph_ops']}")
                print(f"  float ms per op: {p['float_ms_per_op']}")
                print(f"  int8 ms per op:  {p['int8_ms_per_op']}")
        fig["latency"] = lat_rows
    print(machine_line(machine()))
    write_json(args.json, fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
