"""`python -m audionet_ray.export SOURCE OUT_DIR`: the best checkpoint as a self-contained bundle.

SOURCE is a search's experiment folder (the best trial's best checkpoint is taken), a Train run
folder from `python -m audionet_ray.train` (its best checkpoint), a folder of such runs, or one
checkpoint folder (model.pt + meta.json). The bundle (see bundle.py) holds the weights as
safetensors, config.json and model.onnx; it is written next to OUT_DIR and moved into place
whole, so a crash never leaves half a bundle behind.

With the training data at hand (--data, else the path the checkpoint records) export also
- calibrates the detector: streams built from the *validation* split (never the test split,
  which stays for evaluate --streaming to judge) give the lowest threshold whose false accepts
  per hour stay at --target-fa-per-hour; that threshold and the smoothing it was measured with
  go into config.json as the operating point `predict` uses by default;
- writes model.int8.onnx: onnxruntime's static quantisation (QDQ, int8 weights per channel and
  int8 activations) calibrated on clips of the training split, with its test accuracy and its
  largest disagreement with the float model recorded.
Every bundle records deployment figures: parameters, size on disk, multiply-accumulates per
second of audio, and the median latency of one one-second window with onnxruntime on one thread.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..detection.bundle import (CONFIG_FILE, FORMAT, INT8_FILE, KIND, ONNX_FILE, NOT_KEYWORDS, WEIGHTS_FILE, Bundle, BundleError,
                     preprocessing_config, sha256_file, write_config)
from ..corpus.audio import SAMPLE_RATE
from ..pipeline.augment import standardise
from ..training.config import ConfigError, setting
from ..pipeline.dataset import DEFAULT_TRAIN_RATIO
from ..corpus.discover import UNKNOWN, DatasetError
from ..modeling import registry
from ..modeling.model import count_parameters, flops_per_clip
from ..training.checkpoint import META_FILE, MODEL_FILE, best, is_checkpoint, load_weights, metric_of, read_meta
from ..core.ranking import score
from ..tuning.experiment import SPEC_FILE, TRAIN_RUNS, checkpoints, load_spec_json
from ..core.storage import crash_point, recover_folder, replace_folder
from ..core import log as logs

log = logs.get(__name__)
ONNX_OPSET = 17
ONNX_INPUT, ONNX_OUTPUT = "clips", "logits"
INT8_CALIBRATION_CLIPS = 256  # training clips that set the activation ranges
LATENCY_WARMUP, LATENCY_RUNS = 10, 50


# ----------------------------------------------------------------------------- which checkpoint

def candidates(source: Path) -> tuple[str, list[tuple[str | None, Path, dict]]]:
    """What SOURCE is, and its checkpoints as (trial or run name, folder, meta)."""
    if is_checkpoint(source):
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
        tune = load_spec_json(source)["spec"].get("tune") or {}
        if tune.get("metric") == metric and tune.get("mode") in ("max", "min"):
            return tune["mode"]
    except ConfigError:  # not a search, or its search.json is cut short
        pass
    from ..training.config import metric_mode as known_mode

    return known_mode(metric)


def default_metric(source: str | Path) -> str:
    """What "best" means for SOURCE when --metric does not say: a search's own metric (search.json),
    frr_at_target for a keyword detector's run (its checkpoints record it), else val_accuracy."""
    source = Path(source).expanduser().resolve()
    try:
        metric = (load_spec_json(source)["spec"].get("tune") or {}).get("metric")
        if isinstance(metric, str):
            return metric
    except ConfigError:  # not a search
        pass
    try:
        _, found = candidates(source)
    except ConfigError:
        return "val_accuracy"
    return "frr_at_target" if any("frr_at_target" in (c[2].get("metrics") or {}) for c in found) else "val_accuracy"


def parse_limits(text: str | None) -> dict[str, float]:
    """'max_macs=5e6,max_params=100000' -> {"max_macs": 5e6, "max_params": 100000.0} (ConfigError if bad)."""
    from ..modeling.costs import CONSTRAINTS

    limits: dict[str, float] = {}
    for part in filter(None, (text or "").split(",")):
        key, _, value = part.partition("=")
        key = key.strip()
        try:
            limits[key] = float(value)
        except ValueError:
            limits[key] = float("nan")
        if key not in CONSTRAINTS or not limits[key] > 0:
            raise ConfigError(f"--pick {text}: each part must be LIMIT=NUMBER above 0 with LIMIT one of "
                              f"{', '.join(CONSTRAINTS)}, e.g. --pick max_macs=5e6")
    return limits


def pick(source: str | Path, metric: str = "val_accuracy", mode: str | None = None,
         limits: dict[str, float] | None = None) -> dict:
    """The best checkpoint under SOURCE by `metric`: folder, meta and where it came from. With
    `limits` (costs.CONSTRAINTS), the best of those whose recorded costs are within them: a point
    of a multi-objective search's Pareto front."""
    from ..modeling.costs import CONSTRAINTS, over_limits

    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise ConfigError(f"{source}: no such folder (give an experiment folder, a Train run or a checkpoint folder)")
    kind, found = candidates(source)
    if not found:
        raise ConfigError(f"{source}: no checkpoint found (a checkpoint folder holds {MODEL_FILE} and {META_FILE}); "
                          f"give a search's experiment folder, a Train run folder or a checkpoint folder")
    mode = mode or metric_mode(source, metric)
    if limits:
        costed = [c for c in found if all(CONSTRAINTS[k] in c[2].get("metrics", {}) for k in limits)]
        if not costed:
            raise ConfigError(f"--pick: the checkpoints under {source} record no "
                              f"{', '.join(CONSTRAINTS[k] for k in limits)} (written before costs were recorded?)")
        found = [c for c in costed if not over_limits(c[2]["metrics"], limits)]
        if not found:
            cheapest = {CONSTRAINTS[k]: min(c[2]["metrics"][CONSTRAINTS[k]] for c in costed) for k in limits}
            raise ConfigError(f"--pick: no checkpoint under {source} is within "
                              + ", ".join(f"{k} {v:g}" for k, v in limits.items())
                              + "; the cheapest record " + ", ".join(f"{k} {v:g}" for k, v in cheapest.items()))
    chosen = best(found, metric, mode)
    if chosen is None:
        known = sorted({k for c in found for k in c[2].get("metrics", {})})
        raise ConfigError(f"--metric {metric}: not recorded in the checkpoints under {source}; known: {', '.join(known)}")
    name, ckpt, meta = chosen
    with_metric = [c for c in found if score(metric_of(c[2], metric)) is not None]
    return {"kind": kind, "source": source, "name": name, "checkpoint": ckpt, "meta": meta,
            "metric": metric, "mode": mode, "candidates": len(with_metric), "limits": dict(limits or {})}


# ----------------------------------------------------------------------------- the bundle

def _searched(source: Path, train_config: dict) -> dict:
    """The trial's values of the parameters the search sampled (empty for a plain Train run)."""
    try:
        space = load_spec_json(source)["spec"].get("search") or {}
    except ConfigError:  # a plain Train run has no search.json
        return {}
    return {k: setting(train_config, k) for k in space}


def export_onnx(model: torch.nn.Module, path: Path) -> dict | None:
    """model.onnx with a dynamic batch axis (TorchScript exporter: the dynamo one needs onnxscript).

    Returns its description for config.json, or None when the onnx package is missing. When
    onnxruntime is there the graph is run once against torch and the difference recorded.
    """
    try:
        import onnx  # noqa: F401 - the exporter's output is checked with it below
    except ImportError:
        return None
    n = model.config.clip_samples  # the window the model was built for: a fixed axis of the graph
    example = torch.zeros(2, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (example,), str(path), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                          dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
    import onnx

    onnx.checker.check_model(str(path))
    info = {"file": ONNX_FILE, "opset": ONNX_OPSET, "input": ONNX_INPUT, "output": ONNX_OUTPUT,
            "input_shape": ["batch", n], "input_is": "standardised clips (see preprocessing)",
            "exporter": f"torch.onnx (TorchScript) {torch.__version__}"}
    try:
        import onnxruntime as ort
    except ImportError:
        return info
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, n, generator=gen)
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {ONNX_INPUT: x.numpy()})[0]
    info["max_abs_diff_vs_torch"] = float(abs(got - ref).max())
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def onnx_latency_ms(path: Path, runs: int = LATENCY_RUNS, warmup: int = LATENCY_WARMUP) -> dict:
    """Median (and fastest) time of one window (the graph's input length) through onnxruntime on
    one intra-op thread: a device-like figure, after `warmup` runs. Other processes on the machine
    slow it; the load average is recorded beside it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    n = sess.get_inputs()[0].shape[1]  # the window, fixed in the graph
    x = standardise(torch.randn(1, n, generator=torch.Generator().manual_seed(0))).numpy()
    for _ in range(warmup):
        sess.run(None, {ONNX_INPUT: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {ONNX_INPUT: x})
        times.append(time.perf_counter() - t0)
    return {"median_ms": round(1000 * float(np.median(times)), 4), "min_ms": round(1000 * float(np.min(times)), 4)}


def deployment_figures(model: torch.nn.Module, folder: Path, files: list[str], stride_ms: float) -> dict:
    """What a device needs to know: size, compute per second of audio and latency per window."""
    macs = flops_per_clip(model.config, training=False) / 2
    figures = {"parameters": count_parameters(model),
               "size_bytes": {f: (folder / f).stat().st_size for f in files},
               "macs_per_window": int(macs),
               "macs_per_second_of_audio": int(macs * 1000 / stride_ms),
               "windows_per_second": 1000 / stride_ms,
               "latency_per_window_ms": {},
               "latency_method": (f"onnxruntime, 1 intra-op thread, batch 1, {LATENCY_WARMUP} warm-up runs, "
                                  f"median of {LATENCY_RUNS}"),
               "cpu": _cpu_name(), "cpu_load_1min": round(os.getloadavg()[0], 2)}
    try:
        import onnxruntime as ort

        figures["onnxruntime"] = ort.__version__
    except ImportError:
        return figures
    for name, f in (("float", ONNX_FILE), ("int8", INT8_FILE)):
        if f in files:
            figures["latency_per_window_ms"][name] = onnx_latency_ms(folder / f)
    lat = figures["latency_per_window_ms"]
    if "float" in lat and "int8" in lat:
        figures["int8_speedup"] = round(lat["float"]["median_ms"] / max(lat["int8"]["median_ms"], 1e-9), 2)
    return figures


def _clips(prepared: Path, part: str, train_ratio: float) -> tuple:
    from ..detection.streaming import split_clips

    return split_clips(prepared, part, train_ratio)


def calibration_clips(prepared: Path, train_ratio: float, n: int = INT8_CALIBRATION_CLIPS) -> np.ndarray:
    """The first `n` clips of the training speakers in shard order, int16 (n, samples).

    prepare shuffled the rows (seeded) before writing them, so these are a random draw of the
    training split, the same at every export. They are read a row group at a time (256 clips,
    8 MB) until `n` are found: a few row groups, not the whole split.
    """
    from ..pipeline.dataset import PreparedDataset

    return PreparedDataset.open(prepared).first_clips("train", train_ratio, n)


FLOAT_NODES = ("/frontend/",)  # ONNX node names (torch.onnx's module paths) that int8 leaves in float


def _quantize_static(folder: Path, feed: np.ndarray) -> bool:
    """Write folder/model.int8.onnx from folder/model.onnx, activation ranges from `feed`; True when
    the filterbank front end was left in float."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(range(len(feed)))

        def get_next(self):
            i = next(self.rows, None)
            return None if i is None else {ONNX_INPUT: feed[i:i + 1]}

    pre = folder / ".model.pre.onnx"
    try:
        quant_pre_process(str(folder / ONNX_FILE), str(pre))
        import onnx

        # The filterbank front end stays float: its power spans ~7 decades before the log, which
        # int8 steps cannot hold (measured: 0.09 test accuracy with it quantised, 0.87 float).
        float_nodes = [n.name for n in onnx.load(str(pre)).graph.node if n.name.startswith(FLOAT_NODES)]
        quantize_static(str(pre), str(folder / INT8_FILE), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=float_nodes)
    finally:
        pre.unlink(missing_ok=True)
    return bool(float_nodes)


def _int8_vs_float(folder: Path, prepared: Path, train_ratio: float, classes: list[str], std_floor: float) -> dict:
    """The float and int8 graphs side by side on the test split (the clips of the model's classes),
    so the bundle says what quantisation cost."""
    import onnxruntime as ort

    x, y = _clips(prepared, "test", train_ratio)
    m = load_manifest_classes(prepared)
    to_model = np.array([classes.index(c) if c in classes else -1 for c in m])
    y = to_model[y] if len(y) else y
    x, y = x[y >= 0], y[y >= 0]
    if not len(x):
        return {"test_clips": 0}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    xs = standardise(torch.from_numpy(x), floor=std_floor).numpy()
    out = {}
    for name, f in (("float", ONNX_FILE), ("int8", INT8_FILE)):
        sess = ort.InferenceSession(str(folder / f), opts, providers=["CPUExecutionProvider"])
        out[name] = np.concatenate([sess.run(None, {ONNX_INPUT: xs[i:i + 256]})[0] for i in range(0, len(xs), 256)])
    probs = {k: np.exp(v - v.max(1, keepdims=True)) / np.exp(v - v.max(1, keepdims=True)).sum(1, keepdims=True)
             for k, v in out.items()}
    acc = {k: float((v.argmax(1) == y).mean()) for k, v in out.items()}
    return {"test_clips": int(len(x)), "test_accuracy": acc["int8"], "float_test_accuracy": acc["float"],
            "accuracy_drop_points": round(100 * (acc["float"] - acc["int8"]), 3),
            "top1_agreement_with_float": float((out["int8"].argmax(1) == out["float"].argmax(1)).mean()),
            "max_abs_prob_diff_vs_float": float(np.abs(probs["int8"] - probs["float"]).max()),
            "max_abs_logit_diff_vs_float": float(np.abs(out["int8"] - out["float"]).max())}


def quantize_int8(folder: Path, prepared: Path, train_ratio: float, classes: list[str],
                  std_floor: float = 0.0) -> dict:
    """model.int8.onnx from folder/model.onnx: static QDQ quantisation (per-channel int8 weights,
    int8 activations, MinMax ranges from INT8_CALIBRATION_CLIPS training clips), then the float
    and int8 graphs side by side on the test split."""
    import onnxruntime.quantization  # noqa: F401 - an ImportError before any work: export says int8 was skipped

    calib = calibration_clips(prepared, train_ratio)
    if not len(calib):
        raise DatasetError(f"{prepared}: no training clips to calibrate the int8 model on")
    feed = standardise(torch.from_numpy(calib), floor=std_floor).numpy()  # as the bundle's preprocessing
    float_front = _quantize_static(folder, feed)
    info = {"file": INT8_FILE, "quantisation": "onnxruntime quantize_static, QDQ, per-channel int8 weights, "
            "int8 activations, MinMax calibration" + (", filterbank front end in float" if float_front else ""),
            "calibration_clips": int(len(feed)),
            "calibration_split": "train", "input": ONNX_INPUT, "output": ONNX_OUTPUT}
    info.update(_int8_vs_float(folder, prepared, train_ratio, classes, std_floor))
    return info


def load_manifest_classes(prepared: Path) -> list[str]:
    from ..pipeline.dataset import PreparedDataset

    return PreparedDataset.open(prepared).classes


def calibrate(model: torch.nn.Module, classes: list[str], prepared: Path, train_ratio: float, target_fa_per_hour: float,
              minutes: float, std_floor: float = 0.0, keyword_free_hours: float | None = None) -> dict:
    """The operating point on validation-split streams: the lowest threshold at the target FA/h,
    on at least DEFAULT_KEYWORD_FREE_HOURS of keyword-free audio (so the target is measurable)."""
    from ..detection.predict import DEFAULTS
    from ..detection.streaming import DEFAULT_KEYWORD_FREE_HOURS, StreamOptions, evaluate_streams

    b = Bundle(path=prepared, config={}, classes=classes, sample_rate=SAMPLE_RATE,
               clip_samples=model.config.clip_samples, model=model, std_floor=std_floor)
    hours = DEFAULT_KEYWORD_FREE_HOURS if keyword_free_hours is None else keyword_free_hours
    opts = StreamOptions(minutes=minutes, stride_ms=DEFAULTS["stride_ms"], average_ms=DEFAULTS["average_ms"],
                         suppress_ms=DEFAULTS["suppress_ms"], keyword_free_hours=hours)
    r = evaluate_streams(b, prepared, "val", opts, target_fa_per_hour, train_ratio)
    point, met = r.operating_point, r.operating_point is not None
    if point is None:  # no threshold is that quiet: the quietest one, and say so
        point = min(r.curve, key=lambda c: (c["fa_per_hour"], -c["threshold"]))
    return {"threshold": point["threshold"], "stride_ms": opts.stride_ms, "average_ms": opts.average_ms,
            "suppress_ms": opts.suppress_ms, "rule": opts.rule, "fa_per_hour_target": target_fa_per_hour,
            "target_met": met,
            "fa_per_hour": point["fa_per_hour"], "frr": point["frr"], "frr_per_keyword": point["frr_per_keyword"],
            "measured_on": f"validation split streams ({r.total_hours * 60:.1f} min, seed {opts.seed})",
            "keyword_free_hours": r.keyword_free_hours, "enough_audio": r.enough_audio, "note": r.note}


def _prepared_data(data: str | Path | None, train_config: dict, clip_samples: int) -> tuple[Path | None, str]:
    """The prepared dataset to calibrate on (with the model's window: a root is prepared with it,
    a prepared folder must have it), or None and why not."""
    from ..pipeline.data import ensure_prepared

    data = data or train_config.get("data")
    if not data:
        return None, "the checkpoint does not say which data it was trained on: pass --data ROOT"
    try:
        return ensure_prepared(data, progress=False, window=clip_samples / SAMPLE_RATE), ""
    except (DatasetError, ConfigError, OSError) as e:
        return None, f"no usable training data ({str(e).splitlines()[0][:160]}): pass --data ROOT"


def _check_bundle_folder(out: Path) -> None:
    """OUT_DIR may be new, empty or an earlier bundle; finish a swap an earlier export was killed in."""
    if out.parent.is_dir():
        recover_folder(out)  # what an export killed while replacing this bundle left behind
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_FILE).is_file())):
        raise ConfigError(f"{out} exists and is not a bundle folder: choose a new or empty OUT_DIR")


def _load_model(ckpt: Path, meta: dict) -> torch.nn.Module:
    """The checkpoint's model (its recorded architecture) in eval mode; ConfigError in one line if it cannot be."""
    try:
        state = load_weights(ckpt)
        model = registry.build(registry.recorded(meta), meta["model"])  # the checkpoint's architecture
        model.load_state_dict(state)
    except (OSError, KeyError, TypeError, RuntimeError, ValueError) as e:
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ConfigError(f"{ckpt}: cannot load the checkpoint ({msg})") from None
    model.eval()
    classes = meta["classes"]
    if len(classes) != model.config.n_classes:
        raise ConfigError(f"{ckpt / META_FILE}: {len(classes)} classes for a model with {model.config.n_classes} outputs")
    return model


@dataclass(frozen=True)
class _CalibrationData:
    """The prepared data a bundle is calibrated on, read as the checkpoint was trained on it."""

    prepared: Path | None
    why: str  # why there is none
    classes: list[str]
    train_ratio: float
    std_floor: float


def _operating_point(model: torch.nn.Module, cd: _CalibrationData, calibrate_fa: float | None, minutes: float,
                     skipped: dict) -> dict | None:
    """The calibrated operating point, or None with the reason in `skipped` (no data, unreadable shards)."""
    if calibrate_fa and cd.prepared:
        try:
            return calibrate(model, cd.classes, cd.prepared, cd.train_ratio, calibrate_fa, minutes, cd.std_floor)
        except (DatasetError, OSError) as e:  # e.g. shards behind a URI this machine cannot read
            skipped["operating_point_skipped"] = str(e).splitlines()[0][:300]
    elif calibrate_fa:
        skipped["operating_point_skipped"] = cd.why
    return None



def _int8_model(tmp: Path, cd: _CalibrationData, int8: bool, onnx_info: dict | None, skipped: dict) -> dict | None:
    """model.int8.onnx and its figures, or None with the reason in `skipped`; a full disk is raised, not skipped."""
    if int8 and onnx_info and cd.prepared:
        try:
            return quantize_int8(tmp, cd.prepared, cd.train_ratio, cd.classes, cd.std_floor)
        except ImportError:
            skipped["int8_skipped"] = "onnxruntime is not installed (pip install 'audionet-ray[onnx]')"
        except (DatasetError, OSError) as e:
            if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
                raise  # a full disk: no new bundle, rather than one quietly without its int8 model
            skipped["int8_skipped"] = str(e).splitlines()[0][:300]
    elif int8:
        skipped["int8_skipped"] = cd.why if onnx_info else "no model.onnx (the onnx package is not installed)"
    return None


def _bundle_config(choice: dict, model: torch.nn.Module, products: dict) -> dict:
    """config.json: the model, its classes and preprocessing, how it was trained and chosen, and
    `products` (onnx, int8, operating point, deployment figures, what was skipped, the files)."""
    ckpt, meta = choice["checkpoint"], choice["meta"]
    classes = meta["classes"]
    train_config = meta.get("train_config", {})
    return {
        "kind": KIND,
        "format": FORMAT,
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"architecture": registry.name_of(model), "config": model.config.to_dict(),
                  "parameters": count_parameters(model)},
        "classes": classes,
        # a keyword detector (classes with _unknown_) reports these only; a classifier every class
        "task": "keywords" if train_config.get("keywords") else "classifier",
        "keywords": [c for c in classes if c not in NOT_KEYWORDS],
        "preprocessing": preprocessing_config(float(train_config.get("std_floor", 0.0)), model.config.clip_samples),
        "training": {"epoch": meta.get("epoch"), "metrics": meta.get("metrics", {}),
                     "hyperparameters": train_config, "searched": _searched(choice["source"], train_config)},
        "selection": {"metric": choice["metric"], "mode": choice["mode"],
                      "value": meta["metrics"][choice["metric"]], "candidates": choice["candidates"],
                      **({"limits": choice["limits"]} if choice.get("limits") else {})},  # export --pick
        "source": {"kind": choice["kind"], "path": str(choice["source"]), "checkpoint": str(ckpt),
                   ("trial_id" if choice["kind"] == "search" else "run"): choice["name"],
                   "model_pt_sha256": sha256_file(ckpt / MODEL_FILE)},
        **products,
    }


def _write_contents(choice: dict, model: torch.nn.Module, tmp: Path, data: str | Path | None,
                    calibrate_fa: float | None, int8: bool, calibration_minutes: float) -> dict:
    """Weights, model.onnx, the operating point, model.int8.onnx and the deployment figures into
    `tmp`; returns config.json's content."""
    from safetensors.torch import save_file

    from ..detection.predict import DEFAULTS

    meta = choice["meta"]
    classes = meta["classes"]
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE),
              metadata={"format": "audionet-ray", "classes": json.dumps(classes)})
    onnx_info = export_onnx(model, tmp / ONNX_FILE)
    train_config = meta.get("train_config", {})
    train_ratio = float(train_config.get("train_ratio", DEFAULT_TRAIN_RATIO))
    std_floor = float(train_config.get("std_floor", 0.0))
    prepared, why = (_prepared_data(data, train_config, model.config.clip_samples) if (int8 or calibrate_fa)
                     else (None, "not asked for"))
    cd = _CalibrationData(prepared, why, classes, train_ratio, std_floor)
    skipped: dict = {}
    operating = _operating_point(model, cd, calibrate_fa, calibration_minutes, skipped)
    int8_info = _int8_model(tmp, cd, int8, onnx_info, skipped)
    files = [WEIGHTS_FILE] + ([ONNX_FILE] if onnx_info else []) + ([INT8_FILE] if int8_info else [])
    deployment = deployment_figures(model, tmp, files, (operating or DEFAULTS)["stride_ms"])
    return _bundle_config(choice, model, {"onnx": onnx_info, "int8": int8_info, "operating_point": operating,
                                          "deployment": deployment, **skipped, "files": files})


def _publish(tmp: Path, out: Path, config: dict) -> None:
    """config.json last, files readable as a plain file is, then swap the new bundle in whole."""
    write_config(tmp, config)
    mode = (tmp / CONFIG_FILE).stat().st_mode & 0o777  # what the umask gives a plain file
    for f in tmp.iterdir():  # safetensors writes owner-only files; a bundle is for sharing
        f.chmod(mode)
    crash_point("export:written")
    replace_folder(tmp, out)  # at every moment OUT holds the old bundle or the new one


def write_bundle(choice: dict, out_dir: str | Path, data: str | Path | None = None, calibrate_fa: float | None = 1.0,
                 int8: bool = True, calibration_minutes: float = 10.0) -> Path:
    """Write the bundle of `choice` (from `pick`) into out_dir, replacing an earlier bundle there.

    With the training data (`data`, else the checkpoint's), the operating point is calibrated at
    `calibrate_fa` false accepts per hour (None: not calibrated) and the int8 model is written
    (`int8`); without it both are left out and config.json says why.
    """
    out = Path(out_dir).expanduser().resolve()
    _check_bundle_folder(out)
    model = _load_model(choice["checkpoint"], choice["meta"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        config = _write_contents(choice, model, tmp, data, calibrate_fa, int8, calibration_minutes)
        _publish(tmp, out, config)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export(exp_dir: str | Path, out_dir: str | Path, metric: str = "val_accuracy", mode: str | None = None,
           **options) -> Path:
    """Export the best checkpoint under exp_dir (a search, a Train run or a checkpoint) to out_dir;
    `options` are write_bundle's (data, calibrate_fa, int8, calibration_minutes)."""
    return write_bundle(pick(exp_dir, metric, mode), out_dir, **options)


# ----------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.export", description=__doc__.splitlines()[0],
                                 formatter_class=logs.HelpFormatter)
    logs.add_option(ap)
    ap.add_argument("source", metavar="EXPERIMENT_DIR",
                    help="a search's experiment folder, a Train run folder, or one checkpoint folder")
    ap.add_argument("out_dir", metavar="OUT_DIR", help="the bundle folder to write (replaced if it holds a bundle)")
    ap.add_argument("--metric", help="which checkpoint is best (default: the search's metric; frr_at_target for a "
                                     "keyword detector's run; else val_accuracy)")
    ap.add_argument("--mode", choices=["max", "min"], help="default: the search's mode; else min for frr_at_target and losses, max otherwise")
    ap.add_argument("--data", help="the training data (dataset root or prepared folder) to calibrate the threshold "
                                   "and the int8 model on (default: the data the checkpoint was trained on)")
    ap.add_argument("--target-fa-per-hour", type=float, default=1.0,
                    help="calibrate the detector's threshold for this many false accepts per hour on validation "
                         "streams (default: 1; 0: leave the threshold uncalibrated)")
    ap.add_argument("--calibration-minutes", type=float, default=10.0,
                    help="at most this many minutes of validation keyword streams (default: 10)")
    ap.add_argument("--no-int8", action="store_true", help="leave out model.int8.onnx")
    ap.add_argument("--pick", metavar="LIMITS",
                    help="the best checkpoint within cost limits, a point of a multi-objective search's Pareto front: "
                         "e.g. max_macs=5e6 or max_params=100000,max_latency_ms=1 (default: the best, no limits)")
    return ap


def _bad_option(args: argparse.Namespace) -> str | None:
    """The first option out of range, as its one-line message; None when all are usable."""
    for ok, msg in [(args.target_fa_per_hour >= 0, f"--target-fa-per-hour must be >= 0, got {args.target_fa_per_hour:g}"),
                    (args.calibration_minutes > 0, f"--calibration-minutes must be > 0, got {args.calibration_minutes:g}")]:
        if not ok:
            return msg
    return None


def _say_what_was_written(args: argparse.Namespace, choice: dict, out: Path) -> None:
    """Which checkpoint won, then what its bundle holds and what it left out and why."""
    meta = choice["meta"]
    who = {"search": f"trial {choice['name']}", "checkpoint": f"checkpoint {choice['checkpoint']}"}.get(
        choice["kind"], f"run {choice['name']}")
    within = (" within " + ", ".join(f"{k} {v:g}" for k, v in choice["limits"].items())) if choice["limits"] else ""
    log.info(f"best of {choice['candidates']} checkpoint(s){within}: {who}, epoch {meta.get('epoch')}, "
             f"{args.metric} {meta['metrics'][args.metric]:.4f}")
    config = json.loads((out / CONFIG_FILE).read_text())
    if not config["onnx"]:
        log.warning("note: the onnx package is not installed, so the bundle has no model.onnx "
                    "(pip install 'audionet-ray[onnx]' and export again for --onnx)", extra=logs.STDERR)
    op, q, dep = config.get("operating_point"), config.get("int8"), config.get("deployment", {})
    if op:
        log.info(f"operating point: threshold {op['threshold']:g} ({op['fa_per_hour']:.3g} FA/h, FRR "
                 f"{100 * (op['frr'] or 0):.1f} % on {op['measured_on']})"
                 + ("" if op["target_met"] else f"; no threshold reached {op['fa_per_hour_target']:g} FA/h"))
        if not op["enough_audio"]:
            log.warning(f"note: {op['note']}", extra=logs.STDERR)
    for key in ("operating_point_skipped", "int8_skipped"):
        if config.get(key):
            log.warning(f"note: {key.replace('_', ' ')}: {config[key]}", extra=logs.STDERR)
    if q and "test_accuracy" in q:
        log.info(f"int8: test accuracy {q['test_accuracy']:.4f} (float {q['float_test_accuracy']:.4f}), "
                 f"agrees with float on {100 * q['top1_agreement_with_float']:.1f} % of {q['test_clips']} test clips")
    lat = dep.get("latency_per_window_ms", {})
    log.info(f"deployment: {dep.get('parameters', 0):,} parameters, {dep.get('macs_per_second_of_audio', 0) / 1e6:,.1f} M "
             f"MACs per second of audio" + "".join(f", {k} {v['median_ms']:.3g} ms per window" for k, v in lat.items()))
    log.info(f"bundle: {out}")
    log.info(f"try: python -m audionet_ray.predict {out} CLIP.wav")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level)
    bad = _bad_option(args)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    try:
        args.metric = args.metric or default_metric(args.source)
        choice = pick(args.source, args.metric, args.mode, parse_limits(args.pick))
        out = write_bundle(choice, args.out_dir, data=args.data, calibrate_fa=args.target_fa_per_hour or None,
                           int8=not args.no_int8, calibration_minutes=args.calibration_minutes)
    except (ConfigError, BundleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a full disk: write_bundle replaces OUT_DIR only once the new bundle is whole
        kept = ("an earlier bundle there is unchanged" if (Path(args.out_dir).expanduser() / CONFIG_FILE).is_file()
                else "nothing was written")
        print(f"error: {e.filename or args.out_dir}: {e.strerror or e} ({kept}): free some space or check that "
              f"OUT_DIR is writable", file=sys.stderr)
        return 2
    _say_what_was_written(args, choice, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
