"""Memory of `predict` on a long recording: peak RSS and wall time, streamed against whole-file.

Side by side in one run, each in its own process (peak RSS from os.wait4, that child alone):
  1. candidate: `python -m audionet_ray.predict BUNDLE long.wav --format json`, as a user runs
     it: the file is read a block at a time and windows go to the model 256 at a time;
  2. baseline: the whole-file path predict had before (read_audio of the whole file, then
     predict.scan_whole_file: every window copied out, one predict_proba over all of them); its
     per-window labels and quiet flags are compared with the candidate's.
The recording is a 16 kHz mono 16-bit WAV of noise and tones (written a block at a time); the
bundle is a random AudioNet exported for real (memory and time do not depend on the weights).

Goal (issue 27): peak RSS under 500 MB on a 2-hour file (the whole-file path took 8.6 GB).

    python benchmarks/bench_predict_memory.py                 # 2 hours (the baseline needs ~9 GB)
    python benchmarks/bench_predict_memory.py --minutes 5     # a smoke test
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

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine, machine_line, print_table, write_json  # noqa: E402

SR = 16_000
GOAL_MB = 500
ISSUE_BASELINE_MB = 8.6 * 1024  # measured in issue 27 on a 2-hour file


def make_bundle(folder: Path, width: int, dense: int) -> Path:
    """A bundle of a random AudioNet, through the real checkpoint -> export path (no int8, no calibration)."""
    import torch

    from audionet_ray.training.checkpoint import save as save_checkpoint
    from audionet_ray.training.config import TrainConfig
    from audionet_ray.deploy.export import export
    from audionet_ray.modeling.model import AudioNet, ModelConfig

    classes = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    cfg = TrainConfig.from_dict(dict(epochs=1, width=width, dense=dense, seed=0))
    model_cfg = ModelConfig(len(classes), width, dense, cfg.model.dropout)
    torch.manual_seed(0)
    model = AudioNet.from_config(model_cfg)
    ckpt = folder / "ckpt" / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    save_checkpoint(ckpt, model, torch.optim.SGD(model.parameters(), lr=0.1), 1, cfg, model_cfg, classes,
                    {"val_accuracy": 0.0})
    return export(ckpt, folder / "bundle", calibrate_fa=None, int8=False)


def write_recording(path: Path, minutes: float, seed: int = 0) -> None:
    """Noise at changing levels with a tone now and then, written a minute at a time."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    left = int(minutes * 60 * SR)
    t = np.arange(60 * SR) / SR
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        while left > 0:
            n = min(left, 60 * SR)
            x = rng.standard_normal(n).astype(np.float32) * rng.uniform(0.001, 0.05)
            x += (0.2 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t[:n]) * (rng.random(n // SR + 1) < 0.3).repeat(SR)[:n])
            f.write(np.clip(x, -1, 1))
            left -= n


def run(cmd: list[str], out: Path) -> dict:
    """One child process: wall seconds and its own peak RSS (MB), stdout into `out`."""
    t0 = time.perf_counter()
    with open(out, "w") as stdout:
        p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read().decode()
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} ...: exit {p.returncode}: {err.strip()[-500:]}")
    return {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def whole_file(bundle_dir: str, wav: str, stride_ms: float, average_ms: float, out: str) -> None:
    """predict's scan as it was before it streamed: the whole file read, then everything at once."""
    from audionet_ray.corpus.audio import read_audio
    from audionet_ray.detection.bundle import load
    from audionet_ray.detection.predict import scan_whole_file

    b = load(bundle_dir)
    w = scan_whole_file(b, read_audio(wav, b.sample_rate), stride_ms, average_ms)
    Path(out).write_text(json.dumps({"labels": w.labels, "loud": w.loud.tolist()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=120.0, help="length of the recording (default: 120)")
    ap.add_argument("--width", type=int, default=64, help="the model's conv channels (default: 64)")
    ap.add_argument("--dense", type=int, default=128, help="the model's dense units (default: 128)")
    ap.add_argument("--stride-ms", type=float, default=250.0, help="predict's window step (default: 250)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the whole-file baseline (it needs ~4.3 GB per hour)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--whole-file", nargs=5, metavar=("BUNDLE", "WAV", "STRIDE", "AVERAGE", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--make-bundle", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.whole_file:  # the baseline's own process
        b, wav, stride, average, out = args.whole_file
        whole_file(b, wav, float(stride), float(average), out)
        return 0
    if args.make_bundle:
        make_bundle(Path(args.make_bundle), args.width, args.dense)
        return 0

    # This process imports no torch until the runs are done: a child's peak RSS (wait4) counts
    # the parent's pages it was forked with, before exec replaced them.
    with tempfile.TemporaryDirectory(prefix="bench_predict_memory-") as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, __file__, "--make-bundle", str(tmp), "--width", str(args.width),
                        "--dense", str(args.dense)], check=True, capture_output=True)
        bundle = tmp / "bundle"
        wav = tmp / "long.wav"
        t0 = time.perf_counter()
        write_recording(wav, args.minutes)
        print(f"recording: {args.minutes:g} min, {wav.stat().st_size / 2**20:.0f} MB ({time.perf_counter() - t0:.0f} s to write); "
              f"AudioNet width {args.width}, dense {args.dense}; stride {args.stride_ms:g} ms")
        rows = {}
        rows["streamed (predict)"] = run([sys.executable, "-m", "audionet_ray.predict", str(bundle), str(wav), "--format", "json",
                                         "--stride-ms", str(args.stride_ms), "--average-ms", "500"], tmp / "predict.json")
        windows = json.loads((tmp / "predict.json").read_text())["files"][0]["windows"]
        agree = None
        if not args.no_baseline:
            rows["whole file (before)"] = run([sys.executable, __file__, "--whole-file", str(bundle), str(wav),
                                              str(args.stride_ms), "500", str(tmp / "whole.json")], tmp / "whole.out")
            ref = json.loads((tmp / "whole.json").read_text())
            same = [w["label"] == lab and w["quiet"] == (not loud) for w, lab, loud in zip(windows, ref["labels"], ref["loud"])]
            agree = sum(same) / len(ref["labels"]) if len(windows) == len(ref["labels"]) else 0.0
    info = machine()
    print(machine_line(info))
    table = [{"path": k, **v} for k, v in rows.items()]
    print_table(table, ["path", "peak_rss_mb", "wall_s"])
    cand = rows["streamed (predict)"]["peak_rss_mb"]
    base = rows.get("whole file (before)", {}).get("peak_rss_mb")
    print(f"{len(windows)} windows; streamed peak RSS {cand:.0f} MB: {'under' if cand < GOAL_MB else 'OVER'} the "
          f"{GOAL_MB} MB goal" + (f"; {base / cand:.1f}x less than the whole-file path ({base:.0f} MB)" if base else
                                  f" (the issue measured {ISSUE_BASELINE_MB:.0f} MB for 2 hours whole-file)"))
    if agree is not None:
        print(f"per-window labels and quiet flags agree with the whole-file path on {100 * agree:.2f} % of windows")
    write_json(args.json, {"machine": info, "minutes": args.minutes, "width": args.width, "dense": args.dense,
                           "stride_ms": args.stride_ms, "windows": len(windows), "rows": table, "goal_mb": GOAL_MB,
                           "agreement": agree})
    return 0


if __name__ == "__main__":
    sys.exit(main())
