"""The reference AudioNet's training step on a GPU: clips/s, model FLOP/s, and the share of the
GPU's own bf16 matrix-multiply rate, measured in the same run.

One training step is what `audionet_ray.training.train` does per batch: int16 clips already on the
device -> augmentation (noise, background mix, shift, standardise) -> forward (autocast) ->
cross-entropy -> backward -> NAdam step. Settings compared:

  precision   fp32 (TF32 off), tf32 (TF32 matmuls and convolutions), bf16 (autocast + TF32)
  compile     torch.compile(model) off / on
  cudnn       torch.backends.cudnn.benchmark off / on
  batch       64 .. 1024

Default plan (so it fits in a few minutes): (A) the batch sweep at the training loop's GPU
default (bf16, cudnn.benchmark, no compile); (B) every precision x compile x cudnn setting at
one batch size; (C) the fastest setting of B across the batch sweep; (D) the fastest row again
with the host-to-device copy of each batch from pinned memory. `--full` runs the whole grid.
FLOPs per clip come from the layer shapes (`audionet_ray.modeling.model.flops_per_clip`, about 16.4
GFLOP per training clip for the reference); the matmul rate is an n x n bf16 matmul timed here.

Goal (issue 8), on an H100: at least 40 % of the measured bf16 matmul rate, about 20 000
training clips/s.

    python benchmarks/bench_gpu.py              # on a GPU machine
    python benchmarks/bench_gpu.py --quick      # tiny model on the CPU: a smoke test for CI
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, machine_line, print_table, write_json  # noqa: E402

from audionet_ray.pipeline.augment import AugmentConfig, augment, epoch_generator  # noqa: E402
from audionet_ray.modeling.model import CLIP_SAMPLES, AudioNet, ModelConfig, flops_per_clip  # noqa: E402


@dataclass(frozen=True)
class Setting:
    precision: str  # fp32 | tf32 | bf16
    compile: bool
    cudnn_benchmark: bool
    batch: int
    h2d: bool = False  # copy each batch from pinned host memory (as the real loop does)

    def label(self) -> str:
        return (f"{self.precision} compile={'on' if self.compile else 'off'} "
                f"cudnn.benchmark={'on' if self.cudnn_benchmark else 'off'}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """FLOP/s of an n x n x n matmul in `dtype`, timed for about `seconds` after a warm-up."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while True:
        for _ in range(10 if device.type == "cuda" else 1):
            a @ b
            reps += 1
        sync(device)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return 2.0 * n**3 * reps / dt


def set_precision(s: Setting, device: torch.device) -> None:
    tf32 = s.precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = s.cudnn_benchmark


def measure(s: Setting, model_cfg: ModelConfig, device: torch.device, steps: int, warmup: int) -> dict:
    """clips/s of the training step under setting `s` (fresh model, so no state carries over)."""
    set_precision(s, device)
    torch.manual_seed(0)
    model = AudioNet.from_config(model_cfg).to(device)
    opt = torch.optim.NAdam(model.parameters(), lr=1e-4)
    fwd = torch.compile(model) if s.compile else model
    aug = AugmentConfig()
    gen = epoch_generator(0, 1, 0, device)
    noise = torch.randint(-3000, 3000, (10 * CLIP_SAMPLES,), dtype=torch.int16, device=device)
    host = torch.randint(-8000, 8000, (s.batch, CLIP_SAMPLES), dtype=torch.int16)
    labels_host = torch.randint(0, model_cfg.n_classes, (s.batch,))
    if device.type == "cuda":
        host, labels_host = host.pin_memory(), labels_host.pin_memory()
    pcm_dev, y_dev = host.to(device), labels_host.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16")

    def step() -> None:
        if s.h2d:
            pcm, y = host.to(device, non_blocking=True), labels_host.to(device, non_blocking=True)
        else:
            pcm, y = pcm_dev, y_dev
        x = augment(pcm, gen, aug, noise)
        with autocast:
            logits = fwd(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        t0 = time.perf_counter()
        for _ in range(warmup):  # cudnn autotuning and compilation happen here
            step()
        sync(device)
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        dt = time.perf_counter() - t0
    except torch.cuda.OutOfMemoryError:
        return {"clips_per_s": None, "note": "out of memory"}
    finally:
        if s.compile:
            torch._dynamo.reset()
    out = {"clips_per_s": s.batch * steps / dt, "step_ms": 1e3 * dt / steps, "warmup_s": warm_s}
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model and batches on the CPU: a smoke test")
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when there is one)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--dense", type=int, default=512)
    ap.add_argument("--classes", type=int, default=35, help="35 words of Speech Commands v0.02")
    ap.add_argument("--batch-sizes", default="64,128,256,512,1024")
    ap.add_argument("--batch", type=int, default=256, help="batch size of the settings comparison (B)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per row")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per row (compilation, autotuning)")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    ap.add_argument("--full", action="store_true", help="the whole precision x compile x cudnn x batch grid")
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no GPU here (use --device cpu, or --quick)", file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batch_sizes.split(",")]
    if args.quick:  # the smallest run that still goes through every code path
        args.width, args.dense, args.classes, args.steps, args.warmup = 8, 32, 10, 2, 1
        batches, args.batch, args.matmul_n = [8, 16], 8, 256
        args.no_compile = args.no_compile or device.type == "cpu"
    on_gpu = device.type == "cuda"
    precisions = ["fp32", "tf32", "bf16"] if on_gpu else ["fp32", "bf16"]  # TF32 is a GPU mode
    cudnn_opts = [False, True] if on_gpu else [False]  # cuDNN is GPU only
    compile_opts = [False] if args.no_compile else [False, True]
    model_cfg = ModelConfig(args.classes, args.width, args.dense)
    flops = flops_per_clip(model_cfg, training=True)

    info = machine()
    print(f"machine: {machine_line(info)}; device {device}")
    if not on_gpu:
        print("note: no GPU: CPU figures only show that the benchmark runs; GPU rows stay 'not yet measured'")
    bf16_rate = matmul_rate(device, torch.bfloat16, args.matmul_n)
    fp32_rate = matmul_rate(device, torch.float32, args.matmul_n)
    torch.backends.cuda.matmul.allow_tf32 = True
    tf32_rate = matmul_rate(device, torch.float32, args.matmul_n) if on_gpu else None
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"matmul {args.matmul_n}^3: bf16 {bf16_rate / 1e12:.1f} TFLOP/s, fp32 {fp32_rate / 1e12:.1f} TFLOP/s"
          + (f", tf32 {tf32_rate / 1e12:.1f} TFLOP/s" if tf32_rate else ""))
    print(f"AudioNet width {args.width} dense {args.dense}, {args.classes} classes: "
          f"{flops / 1e9:.2f} GFLOP per training clip (3x the forward pass)")

    default = dict(precision="bf16" if on_gpu else "fp32", compile=False, cudnn_benchmark=on_gpu)
    if args.full:
        plan = [("grid", Setting(p, c, k, b))
                for p, c, k, b in itertools.product(precisions, compile_opts, cudnn_opts, batches)]
    else:
        plan = [("A", Setting(batch=b, **default)) for b in batches]
        plan += [("B", Setting(p, c, k, args.batch)) for p, c, k in itertools.product(precisions, compile_opts, cudnn_opts)]
    rows, done = [], {}

    def run(s: Setting, stage: str) -> dict:
        if s in done:  # e.g. B's default-setting row is one of A's
            return done[s]
        r = measure(s, model_cfg, device, args.steps, args.warmup)
        row = {"stage": stage, "setting": s.label(), "batch": s.batch,
               "h2d": ("pinned" if on_gpu else "copy") if s.h2d else "", **r}
        if r.get("clips_per_s"):
            row["model_tflop_s"] = r["clips_per_s"] * flops / 1e12
            row["of_bf16_matmul"] = r["clips_per_s"] * flops / bf16_rate
        done[s] = row
        rows.append(row)
        print(f"  {stage}  {s.label()}  batch {s.batch}{' +h2d' if s.h2d else ''}: "
              + (f"{r['clips_per_s']:.0f} clips/s, {row['of_bf16_matmul']:.1%} of bf16 matmul"
                 if r.get("clips_per_s") else r.get("note", "?")), flush=True)
        return row

    for stage, s in plan:
        run(s, stage)
    ok = [r for r in rows if r.get("clips_per_s")]
    if not args.full and ok:
        at_b = [(s, r) for s, r in done.items() if s.batch == args.batch and r.get("clips_per_s")]
        best_s = max(at_b, key=lambda sr: sr[1]["clips_per_s"])[0]
        for b in batches:  # C: the best setting across batch sizes
            run(Setting(best_s.precision, best_s.compile, best_s.cudnn_benchmark, b), "C")
    ok = [r for r in rows if r.get("clips_per_s")]
    best = max(ok, key=lambda r: r["clips_per_s"])
    best_s = next(s for s, r in done.items() if r is best)
    h2d = run(Setting(best_s.precision, best_s.compile, best_s.cudnn_benchmark, best_s.batch, h2d=True), "D")

    print()
    print_table(rows, ["stage", "setting", "batch", "h2d", "clips_per_s", "step_ms", "model_tflop_s",
                       "of_bf16_matmul", "warmup_s", "peak_gib", "note"])
    goal = 0.40
    frac = best["clips_per_s"] * flops / bf16_rate
    print(f"\nfastest: {best['setting']} at batch {best['batch']}: {best['clips_per_s']:.0f} clips/s, "
          f"{frac:.1%} of the measured bf16 matmul rate ({bf16_rate / 1e12:.1f} TFLOP/s); with the pinned "
          f"host-to-device copy {h2d.get('clips_per_s') or 0:.0f} clips/s")
    if on_gpu:
        print(f"goal >= {goal:.0%} of the bf16 matmul rate: {'met' if frac >= goal else 'NOT met'}")
    write_json(args.json, {"machine": info, "device": str(device), "args": vars(args), "flops_per_clip": flops,
                           "matmul_flop_s": {"bf16": bf16_rate, "fp32": fp32_rate, "tf32": tf32_rate},
                           "rows": rows, "fastest": best})
    return 0


if __name__ == "__main__":
    sys.exit(main())
