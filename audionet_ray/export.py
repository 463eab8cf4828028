"""`python -m audionet_ray.export SOURCE OUT_DIR`: the best checkpoint as a self-contained bundle.

SOURCE is a search's experiment folder (the best trial's best checkpoint is taken), a Train run
folder from `python -m audionet_ray.train` (its best checkpoint), a folder of such runs, or one
checkpoint folder (model.pt + meta.json). The bundle (see bundle.py) holds the weights as
safetensors, config.json and model.onnx; it is written next to OUT_DIR and moved into place
whole, so a crash never leaves half a bundle behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch

from . import __version__
from .bundle import (CONFIG_FILE, FORMAT, KIND, ONNX_FILE, WEIGHTS_FILE, BundleError, config_digest,
                     preprocessing_config, sha256_file)
from .audio import CLIP_SAMPLES
from .config import ConfigError
from .model import AudioNet, count_parameters
from .results import SPEC_FILE, TRAIN_RUNS, checkpoints, read_meta

MODEL_FILE, META_FILE = "model.pt", "meta.json"  # as written by train.save_checkpoint
ONNX_OPSET = 17
ONNX_INPUT, ONNX_OUTPUT = "clips", "logits"


# ----------------------------------------------------------------------------- which checkpoint

def candidates(source: Path) -> tuple[str, list[tuple[str | None, Path, dict]]]:
    """What SOURCE is, and its checkpoints as (trial or run name, folder, meta)."""
    if (source / MODEL_FILE).is_file() and (source / META_FILE).is_file():
        meta, why = read_meta(source)
        if not meta:
            raise ConfigError(f"{source}: an incomplete checkpoint ({why}; cut short by a crash?): export another one")
        return "checkpoint", [(source.name, source, meta)]
    if (source / TRAIN_RUNS).is_dir() or (source / SPEC_FILE).is_file():
        return "search", checkpoints(source)
    found = [(source.name, p.parent, read_meta(p.parent)[0]) for p in sorted(source.glob(f"checkpoint_*/{META_FILE}"))]
    if found:
        return "train run", [c for c in found if c[2]]  # a checkpoint cut short is not a candidate
    found = [(p.parent.parent.name, p.parent, read_meta(p.parent)[0])
             for p in sorted(source.glob(f"*/checkpoint_*/{META_FILE}"))]
    return "train runs", [c for c in found if c[2]]


def metric_mode(source: Path, metric: str) -> str:
    """max or min: the search's own mode for its metric, else min for losses and max otherwise."""
    try:
        tune = json.loads((source / SPEC_FILE).read_text())["spec"]["tune"]
        if tune.get("metric") == metric and tune.get("mode") in ("max", "min"):
            return tune["mode"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        pass
    return "min" if "loss" in metric else "max"


def pick(source: str | Path, metric: str = "val_accuracy", mode: str | None = None) -> dict:
    """The best checkpoint under SOURCE by `metric`: folder, meta and where it came from."""
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise ConfigError(f"{source}: no such folder (give an experiment folder, a Train run or a checkpoint folder)")
    kind, found = candidates(source)
    if not found:
        raise ConfigError(f"{source}: no checkpoint found (a checkpoint folder holds {MODEL_FILE} and {META_FILE}); "
                          f"give a search's experiment folder, a Train run folder or a checkpoint folder")
    with_metric = [c for c in found if isinstance(c[2].get("metrics", {}).get(metric), (int, float))]
    if not with_metric:
        known = sorted({k for c in found for k in c[2].get("metrics", {})})
        raise ConfigError(f"--metric {metric}: not recorded in the checkpoints under {source}; known: {', '.join(known)}")
    mode = mode or metric_mode(source, metric)
    sign = 1 if mode == "max" else -1
    name, ckpt, meta = max(with_metric, key=lambda c: (sign * c[2]["metrics"][metric], c[2].get("epoch", 0)))
    return {"kind": kind, "source": source, "name": name, "checkpoint": ckpt, "meta": meta,
            "metric": metric, "mode": mode, "candidates": len(with_metric)}


# ----------------------------------------------------------------------------- the bundle

def _searched(source: Path, train_config: dict) -> dict:
    """The trial's values of the parameters the search sampled (empty for a plain Train run)."""
    try:
        space = json.loads((source / SPEC_FILE).read_text())["spec"]["search"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return {}
    aug = train_config.get("augment") or {}
    return {k: train_config.get(k, aug.get(k)) for k in space}


def export_onnx(model: AudioNet, path: Path) -> dict | None:
    """model.onnx with a dynamic batch axis (TorchScript exporter: the dynamo one needs onnxscript).

    Returns its description for config.json, or None when the onnx package is missing. When
    onnxruntime is there the graph is run once against torch and the difference recorded.
    """
    try:
        import onnx  # noqa: F401 - the exporter's output is checked with it below
    except ImportError:
        return None
    example = torch.zeros(2, CLIP_SAMPLES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (example,), str(path), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                          dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
    import onnx

    onnx.checker.check_model(str(path))
    info = {"file": ONNX_FILE, "opset": ONNX_OPSET, "input": ONNX_INPUT, "output": ONNX_OUTPUT,
            "input_shape": ["batch", CLIP_SAMPLES], "input_is": "standardised clips (see preprocessing)",
            "exporter": f"torch.onnx (TorchScript) {torch.__version__}"}
    try:
        import onnxruntime as ort
    except ImportError:
        return info
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, CLIP_SAMPLES, generator=gen)
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {ONNX_INPUT: x.numpy()})[0]
    info["max_abs_diff_vs_torch"] = float(abs(got - ref).max())
    return info


def write_bundle(choice: dict, out_dir: str | Path) -> Path:
    """Write the bundle of `choice` (from `pick`) into out_dir, replacing an earlier bundle there."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_FILE).is_file())):
        raise ConfigError(f"{out} exists and is not a bundle folder: choose a new or empty OUT_DIR")
    ckpt, meta = choice["checkpoint"], choice["meta"]
    try:
        state = torch.load(ckpt / MODEL_FILE, map_location="cpu", weights_only=True)
        model = AudioNet.from_config(meta["model"])
        model.load_state_dict(state)
    except (OSError, KeyError, TypeError, RuntimeError, ValueError) as e:
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ConfigError(f"{ckpt}: cannot load the checkpoint ({msg})") from None
    model.eval()
    classes = meta["classes"]
    if len(classes) != model.config.n_classes:
        raise ConfigError(f"{ckpt / META_FILE}: {len(classes)} classes for a model with {model.config.n_classes} outputs")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE),
                  metadata={"format": "audionet-ray", "classes": json.dumps(classes)})
        onnx_info = export_onnx(model, tmp / ONNX_FILE)
        train_config = meta.get("train_config", {})
        config = {
            "kind": KIND,
            "format": FORMAT,
            "package_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": {"architecture": "AudioNet", "config": model.config.to_dict(),
                      "parameters": count_parameters(model)},
            "classes": classes,
            "preprocessing": preprocessing_config(),
            "training": {"epoch": meta.get("epoch"), "metrics": meta.get("metrics", {}),
                         "hyperparameters": train_config, "searched": _searched(choice["source"], train_config)},
            "selection": {"metric": choice["metric"], "mode": choice["mode"],
                          "value": meta["metrics"][choice["metric"]], "candidates": choice["candidates"]},
            "source": {"kind": choice["kind"], "path": str(choice["source"]), "checkpoint": str(ckpt),
                       ("trial_id" if choice["kind"] == "search" else "run"): choice["name"],
                       "model_pt_sha256": sha256_file(ckpt / MODEL_FILE)},
            "onnx": onnx_info,
            "files": {WEIGHTS_FILE: sha256_file(tmp / WEIGHTS_FILE),
                      **({ONNX_FILE: sha256_file(tmp / ONNX_FILE)} if onnx_info else {})},
        }
        config["config_sha256"] = config_digest(config)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
        mode = (tmp / CONFIG_FILE).stat().st_mode & 0o777  # what the umask gives a plain file
        for f in tmp.iterdir():  # safetensors writes owner-only files; a bundle is for sharing
            f.chmod(mode)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        tmp.rename(out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export(exp_dir: str | Path, out_dir: str | Path, metric: str = "val_accuracy", mode: str | None = None) -> Path:
    """Export the best checkpoint under exp_dir (a search, a Train run or a checkpoint) to out_dir."""
    return write_bundle(pick(exp_dir, metric, mode), out_dir)


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.export", description=__doc__.splitlines()[0])
    ap.add_argument("source", metavar="EXPERIMENT_DIR",
                    help="a search's experiment folder, a Train run folder, or one checkpoint folder")
    ap.add_argument("out_dir", metavar="OUT_DIR", help="the bundle folder to write (replaced if it holds a bundle)")
    ap.add_argument("--metric", default="val_accuracy", help="which checkpoint is best (default: val_accuracy)")
    ap.add_argument("--mode", choices=["max", "min"], help="default: the search's mode; min for losses, else max")
    args = ap.parse_args(argv)
    try:
        choice = pick(args.source, args.metric, args.mode)
        out = write_bundle(choice, args.out_dir)
    except (ConfigError, BundleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a full disk: write_bundle replaces OUT_DIR only once the new bundle is whole
        kept = ("an earlier bundle there is unchanged" if (Path(args.out_dir).expanduser() / CONFIG_FILE).is_file()
                else "nothing was written")
        print(f"error: {e.filename or args.out_dir}: {e.strerror or e} ({kept}): free some space or check that "
              f"OUT_DIR is writable", file=sys.stderr)
        return 2
    meta = choice["meta"]
    who = {"search": f"trial {choice['name']}", "checkpoint": f"checkpoint {choice['checkpoint']}"}.get(
        choice["kind"], f"run {choice['name']}")
    print(f"best of {choice['candidates']} checkpoint(s): {who}, epoch {meta.get('epoch')}, "
          f"{args.metric} {meta['metrics'][args.metric]:.4f}")
    config = json.loads((out / CONFIG_FILE).read_text())
    if not config["onnx"]:
        print("note: the onnx package is not installed, so the bundle has no model.onnx "
              "(pip install 'audionet-ray[onnx]' and export again for --onnx)", file=sys.stderr)
    print(f"bundle: {out}")
    print(f"try: python -m audionet_ray.predict {out} CLIP.wav")
    return 0


if __name__ == "__main__":
    sys.exit(main())
