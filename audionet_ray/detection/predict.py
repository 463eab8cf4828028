"""`python -m audionet_ray.predict BUNDLE FILE_OR_DIR...`: keywords in audio files.

Any sample rate (resampled with soxr), any channel count (mixed down), any length. A clip of
about one window (the bundle's: one second unless its data was prepared with another --window)
gets its top-k labels with probabilities. Longer audio is scanned like a streaming keyword
spotter: a window every --stride-ms; consecutive windows that
agree on a keyword above --threshold become one detection, printed with its time (threshold
and smoothing default to the operating point export calibrated into the bundle). _silence_
and _unknown_ are never reported as keywords, nor are windows quieter than -60 dBFS (digital
silence has no shape to classify). A bad file gets one error line; the others still run, and
the exit status is 1 if any file failed (2 for a bad bundle or option).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from ..core import log
from ..corpus.audio import BadClip, iter_audio
from .bundle import NOT_KEYWORDS, Bundle, BundleError, load_for
from ..corpus.discover import escape_path

SCAN_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}  # what a folder argument is searched for
ONE_CLIP_SLACK = 0.01  # up to 1 % over the window counts as one clip (resampling can add a sample or two)
QUIET_DBFS = -60.0  # windows below this RMS level are silence, whatever the model says
SCAN_ACTIVATIONS = 96 * 2**20  # bytes of model activations one batch of a scan may take (see scan_batch)
STRIDE_MS_MIN = 10.0  # finer steps only repeat the same window: 100 model calls per second of audio already
DEFAULTS = {"threshold": 0.6, "stride_ms": 250.0, "average_ms": 500.0, "suppress_ms": 1000.0}  # an uncalibrated bundle
# How a window says a keyword. "top" (the default): a keyword at or above the threshold that is
# also the window's top class. "keyword": its most probable keyword at or above the threshold,
# whatever _unknown_ scores (a wake-word detector's one score). Above 0.5 they agree. Below it
# "keyword" fires on words "top" never does, but every loud window then has a keyword over a low
# threshold, runs of windows merge, and false accepts can fall as the threshold falls (a DET
# curve that is not monotone: seen in the test suite); at 1 FA/h it changed nothing measured
# (docs/performance.md, "Wake word from text"). So it is an option, recorded with the calibration.
RULES = ("top", "keyword")


def detector_settings(bundle: Bundle) -> dict:
    """The detector's threshold and smoothing: the bundle's calibrated operating point (see
    export.py) when it has one, else DEFAULTS; "from" says which."""
    op = bundle.config.get("operating_point") or {}
    if isinstance(op.get("threshold"), (int, float)):
        return {**DEFAULTS, **{k: float(op[k]) for k in DEFAULTS if isinstance(op.get(k), (int, float))},
                "rule": op.get("rule") if op.get("rule") in RULES else "top",
                "from": f"calibrated: {op.get('fa_per_hour_target', '?')} FA/h on {op.get('measured_on', '?')}"}
    return {**DEFAULTS, "rule": RULES[0], "from": "default, not calibrated"}


@dataclass
class Detection:
    label: str
    time_s: float  # centre of the most confident window: where the word is
    start_s: float  # from the first window that found it ...
    end_s: float  # ... to the end of the last one
    prob: float  # the most confident window's probability


def rms_dbfs(windows: np.ndarray) -> np.ndarray:
    """RMS level of each window of float audio in [-1, 1], in dB relative to full scale."""
    rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-12))


def detections(labels: list[str], probs: np.ndarray, starts_s: list[float], loud: np.ndarray,
               threshold: float, win_s: float, suppress_s: float = 0.0) -> list[Detection]:
    """Runs of consecutive windows whose label (a rule's reading: see RULES) is the same keyword
    above threshold, one detection each; then, strongest first, a detection within `suppress_s` of
    a stronger one is dropped (one word, read as two labels by windows that cut it differently)."""
    runs: list[Detection] = []
    run: Detection | None = None
    prev = -2
    for i, (label, p, t, is_loud) in enumerate(zip(labels, probs, starts_s, loud)):
        if label in NOT_KEYWORDS or p < threshold or not is_loud:
            continue
        if run is not None and run.label == label and prev == i - 1:
            run.end_s = t + win_s
            if p > run.prob:
                run.prob, run.time_s = float(p), t + win_s / 2
        else:
            run = Detection(label, t + win_s / 2, t, t + win_s, float(p))
            runs.append(run)
        prev = i
    kept: list[Detection] = []
    for d in sorted(runs, key=lambda d: -d.prob):
        if all(abs(d.time_s - k.time_s) >= suppress_s for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: d.time_s)


@dataclass
class Windows:
    """What the sliding window saw: per window its start, top label, that label's (smoothed)
    probability and whether it was loud enough to count; and its most probable keyword with that
    keyword's probability (the "keyword" rule's reading). Computed once, it can be read at any
    threshold and either rule (streaming.py scores a whole DET curve from one pass)."""

    starts_s: list[float]
    labels: list[str]
    probs: np.ndarray
    loud: np.ndarray
    win_s: float
    duration_s: float = 0.0  # of the audio scanned
    keyword_labels: list[str] | None = None  # None: as `labels` (a model whose classes are all keywords)
    keyword_probs: np.ndarray | None = None

    def detections(self, threshold: float, suppress_ms: float = 1000.0, rule: str = "top") -> list[Detection]:
        if rule not in RULES:
            raise ValueError(f"detector rule {rule!r}: choose from {', '.join(RULES)}")
        keyword = rule == "keyword" and self.keyword_labels is not None
        return detections(self.keyword_labels if keyword else self.labels,
                          self.keyword_probs if keyword else self.probs, self.starts_s, self.loud, threshold,
                          self.win_s, suppress_ms / 1000)


def _keyword_columns(classes: list[str]) -> np.ndarray | None:
    """The keyword classes' columns, or None where every class is a keyword (the rules agree)."""
    cols = np.array([i for i, c in enumerate(classes) if c not in NOT_KEYWORDS], dtype=np.int64)
    return None if len(cols) in (0, len(classes)) else cols


def _top_of(probs: np.ndarray, cols: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the top class among `cols` (all columns for None) and its probability."""
    sub = probs if cols is None else probs[:, cols]
    i = sub.argmax(axis=1)
    return (i if cols is None else cols[i]), sub[np.arange(len(i)), i]


def scan_batch(bundle: Bundle) -> int:
    """Windows per model call while scanning: what keeps the first conv's activations (width
    maps of a quarter of a window, float32, about three alive at once: the largest the model
    holds) within SCAN_ACTIVATIONS; 10 windows for the reference width of 256, at most 256."""
    width = (bundle.model.config.width if bundle.model is not None  # a model in hand (probe, calibration)
             else int((bundle.config.get("model") or {}).get("config", {}).get("width", 256)))
    per_window = 3 * 4 * max(width, 1) * bundle.clip_samples // 4
    return int(min(256, max(1, SCAN_ACTIVATIONS // per_window)))


class _Smoother:
    """Each window's probabilities averaged with `radius` neighbours either side (fewer at the
    ends), for probabilities that arrive a batch at a time; keeps each window's top class and top keyword only.

    A word is whole in a few consecutive windows and cut in the others; a cut word can look like
    another word to the model for one window, rarely for several in a row. The averages come from
    one running float64 sum over the whole scan, of which only the last rows are held
    (2 * radius + a batch): what a whole-file cumulative sum gives, in memory that does not grow
    with the file.
    """

    def __init__(self, radius: int, n_classes: int, keyword_cols: np.ndarray | None = None):
        self.radius, self.keyword_cols = radius, keyword_cols
        self.sums = np.zeros((1, n_classes))  # running sums before window `base`, `base` + 1, ...
        self.base = 0
        self.seen = 0  # windows added
        self.done = 0  # windows whose average is final
        self.top: list[np.ndarray] = []
        self.prob: list[np.ndarray] = []
        self.kw_top: list[np.ndarray] = []
        self.kw_prob: list[np.ndarray] = []

    def add(self, probs: np.ndarray) -> None:
        if self.radius <= 0:
            self._keep(probs)
            return
        new = np.cumsum(np.concatenate([self.sums[-1:], probs]), axis=0)[1:]  # float64, carried on
        self.sums = np.concatenate([self.sums, new])
        self.seen += len(probs)
        self._average(self.seen - self.radius, self.seen)

    def _average(self, upto: int, n: int) -> None:
        """Final averages of windows done..upto, with `n` windows seen in all."""
        if upto <= self.done:
            return
        i = np.arange(self.done, upto)
        lo, hi = np.maximum(i - self.radius, 0), np.minimum(i + self.radius + 1, n)
        self._keep((self.sums[hi - self.base] - self.sums[lo - self.base]) / (hi - lo)[:, None])
        self.done = upto
        drop = max(upto - self.radius, 0) - self.base  # no later window reaches further back
        self.sums, self.base = self.sums[drop:], self.base + drop

    def _keep(self, probs: np.ndarray) -> None:
        top, prob = _top_of(probs, None)
        self.top.append(top)
        self.prob.append(prob)
        if self.keyword_cols is not None:
            top, prob = _top_of(probs, self.keyword_cols)
            self.kw_top.append(top)
            self.kw_prob.append(prob)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(top class, its probability, top keyword, its probability) of every window; the last
        two None where every class is a keyword."""
        if self.radius > 0:
            self._average(self.seen, self.seen)
        if self.keyword_cols is None:
            return np.concatenate(self.top), np.concatenate(self.prob), None, None
        return (np.concatenate(self.top), np.concatenate(self.prob), np.concatenate(self.kw_top),
                np.concatenate(self.kw_prob))


def scan_blocks(bundle: Bundle, blocks: Iterable[np.ndarray], stride_ms: float = 250.0,
                average_ms: float = 500.0) -> Windows:
    """The streaming detector's model pass over float audio at the bundle's rate, given as
    consecutive blocks of any size (>= one window in all): a window (the bundle's) every stride_ms,
    plus one flush with the end so the tail is seen; probabilities averaged over +-average_ms/2.

    Windows go to the model `scan_batch` at a time and only per-window results are kept, so a
    two-hour recording needs the memory of one batch, not of the recording.
    """
    sr, win = bundle.sample_rate, bundle.clip_samples
    stride = max(1, int(round(stride_ms * sr / 1000)))
    smoother = _Smoother(int(average_ms / 2 // (stride / sr * 1000)), len(bundle.classes),
                         _keyword_columns(bundle.classes))
    starts: list[int] = []
    loud: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    buf, buf0, n = np.zeros(0, np.float32), 0, 0  # buf: the audio from sample buf0 to n
    size = scan_batch(bundle)

    def run() -> None:
        windows = np.stack(batch)
        batch.clear()
        loud.append(rms_dbfs(windows) >= QUIET_DBFS)
        smoother.add(bundle.predict_proba(windows, size))

    for block in blocks:
        buf = np.concatenate([buf, block]) if len(buf) else np.asarray(block)
        n += len(block)
        nxt = starts[-1] + stride if starts else 0
        while nxt + win <= n:
            batch.append(buf[nxt - buf0:nxt - buf0 + win])
            starts.append(nxt)
            nxt += stride
            if len(batch) == size:
                run()
        keep = max(min(nxt, n - win), buf0)  # the next window, or the last second for the flush
        buf, buf0 = buf[keep - buf0:], keep
    if not starts:
        raise ValueError(f"audio shorter than one window ({n} of {win} samples): nothing to scan")
    if starts[-1] + win < n:
        batch.append(buf[n - win - buf0:])
        starts.append(n - win)
    if batch:
        run()
    top, probs, kw_top, kw_probs = smoother.finish()
    return Windows(starts_s=[s / sr for s in starts], labels=[bundle.classes[i] for i in top], probs=probs,
                   loud=np.concatenate(loud), win_s=win / sr, duration_s=n / sr,
                   keyword_labels=None if kw_top is None else [bundle.classes[i] for i in kw_top],
                   keyword_probs=kw_probs)


def scan(bundle: Bundle, audio: np.ndarray, stride_ms: float = 250.0, average_ms: float = 500.0) -> Windows:
    """`scan_blocks` over float audio at the bundle's rate held in memory (>= one window long)."""
    return scan_blocks(bundle, [audio], stride_ms, average_ms)


def scan_whole_file(bundle: Bundle, audio: np.ndarray, stride_ms: float = 250.0, average_ms: float = 500.0) -> Windows:
    """`scan` with everything in memory at once: every window copied out, one model pass, one
    running sum. What predict did before it streamed (about 4 GB per hour of audio), kept as the
    reference that tests and benchmarks/bench_predict_memory.py hold the streamed scan to."""
    sr, win = bundle.sample_rate, bundle.clip_samples
    stride = max(1, int(round(stride_ms * sr / 1000)))
    starts = list(range(0, len(audio) - win + 1, stride))
    if starts[-1] + win < len(audio):
        starts.append(len(audio) - win)
    windows = np.lib.stride_tricks.sliding_window_view(audio, win)[starts]
    probs = bundle.predict_proba(windows, scan_batch(bundle))  # the model sees the batches scan gives it
    radius = int(average_ms / 2 // (stride / sr * 1000))
    if radius > 0:
        csum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
        i = np.arange(len(probs))
        lo, hi = np.maximum(i - radius, 0), np.minimum(i + radius + 1, len(probs))
        probs = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    top, prob = _top_of(probs, None)
    cols = _keyword_columns(bundle.classes)
    kw_top, kw_prob = _top_of(probs, cols) if cols is not None else (None, None)
    return Windows(starts_s=[s / sr for s in starts], labels=[bundle.classes[i] for i in top],
                   probs=prob, loud=rms_dbfs(windows) >= QUIET_DBFS, win_s=win / sr,
                   duration_s=len(audio) / sr,
                   keyword_labels=None if kw_top is None else [bundle.classes[i] for i in kw_top],
                   keyword_probs=kw_prob)


def predict_file(bundle: Bundle, path: Path, top_k: int = 3, stride_ms: float = 250.0, threshold: float = 0.6,
                 average_ms: float = 500.0, suppress_ms: float = 1000.0, rule: str = RULES[0]) -> dict:
    """One file's result as a dict (raises BadClip for audio that cannot be read).

    The file is read a block at a time: a clip of about a second is then read whole, anything
    longer is scanned as it streams in, so memory does not grow with the recording.
    """
    sr, win = bundle.sample_rate, bundle.clip_samples
    blocks = iter_audio(path, sr)
    head, n = [], 0
    for block in blocks:
        head.append(block)
        n += len(block)
        if n > win * (1 + ONE_CLIP_SLACK):
            break
    result: dict = {"path": escape_path(path), "window_s": win / sr}
    if n <= win * (1 + ONE_CLIP_SLACK):
        probs = bundle.predict_proba(np.concatenate(head))[0]
        order = np.argsort(-probs)[:top_k]
        result["duration_s"] = round(n / sr, 3)
        result["top_k"] = [{"label": bundle.classes[i], "prob": float(probs[i])} for i in order]
        return result
    w = scan_blocks(bundle, chain(head, blocks), stride_ms, average_ms)
    del head
    result["duration_s"] = round(w.duration_s, 3)
    result["windows"] = [{"start_s": round(t, 4), "label": lab, "prob": float(p), "quiet": not bool(q)}
                         for t, lab, p, q in zip(w.starts_s, w.labels, w.probs, w.loud)]
    result["detections"] = [asdict(d) for d in w.detections(threshold, suppress_ms, rule)]
    return result


def expand(inputs: list[str]) -> list[tuple[Path, str | None]]:
    """Files to predict, folders searched recursively; (path, error) for what cannot be used."""
    out: list[tuple[Path, str | None]] = []
    for arg in inputs:
        p = Path(arg).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in SCAN_SUFFIXES and f.is_file())
            out += [(f, None) for f in files] or [(p, f"no audio files ({', '.join(sorted(SCAN_SUFFIXES))}) in this folder")]
        else:
            out.append((p, None if p.exists() or p.is_symlink() else "no such file"))
    return out


def text_lines(r: dict, threshold: float, stride_ms: float) -> list[str]:
    if "top_k" in r:
        return [f"{r['path']}: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top_k"])]
    dets = r["detections"]
    head = (f"{r['path']}: {r['duration_s']:.2f} s, {len(r['windows'])} windows of {r.get('window_s', 1.0):g} s "
            f"every {stride_ms:g} ms: "
            + (f"{len(dets)} keyword(s)" if dets else f"no keyword above {threshold:g}"))
    return [head] + [f"  {d['time_s']:7.2f} s  {d['label']:<10} {d['prob']:.3f}  ({d['start_s']:.2f}-{d['end_s']:.2f} s)"
                     for d in dets]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.predict", description=__doc__.splitlines()[0],
                                 formatter_class=log.HelpFormatter)
    ap.add_argument("bundle", metavar="BUNDLE", help="a bundle folder from export (or the end of a search)")
    ap.add_argument("inputs", metavar="FILE_OR_DIR", nargs="+", help="audio files, or folders searched for them")
    ap.add_argument("--top-k", type=int, default=3, help="labels shown per one-window clip (default: 3)")
    ap.add_argument("--stride-ms", type=float,
                    help="window step for longer audio (default: the bundle's operating point, else 250)")
    ap.add_argument("--threshold", type=float,
                    help="probability a window needs to count (default: the bundle's calibrated threshold, else 0.6)")
    ap.add_argument("--average-ms", type=float,
                    help="average each window's probabilities with its neighbours within +-half this span "
                         "(default: the bundle's operating point, else 500; 0: off)")
    ap.add_argument("--suppress-ms", type=float,
                    help="drop a detection this close to a stronger one (default: the bundle's, else 1000; 0: off)")
    ap.add_argument("--rule", choices=RULES,
                    help="keyword: a window's most probable keyword counts at the threshold, whatever _unknown_ "
                         "scores; top: only when it is the window's top class (default: the bundle's, else top)")
    ap.add_argument("--format", choices=["text", "json"], default="text", help="json: one document on stdout")
    ap.add_argument("--onnx", action="store_true", help="run model.onnx with onnxruntime instead of torch")
    ap.add_argument("--int8", action="store_true", help="run the bundle's int8 model (model.int8.onnx) with onnxruntime")
    ap.add_argument("--device", default="auto", help="torch device: auto (GPU if any), cpu, cuda (default: auto, "
                                                     "as evaluate's)")
    log.add_option(ap)
    return ap


def _stride_problem(stride_ms: float, window_s: float) -> str:
    name = "one-second" if window_s == 1.0 else f"{window_s:g}-second"
    return f"--stride-ms must be from {STRIDE_MS_MIN:g} to {1000 * window_s:g} (the {name} window), got {stride_ms}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.setup(args.log_level)
    given = lambda v: v is not None  # noqa: E731 - options left out come from the bundle
    problems = [(args.top_k >= 1, f"--top-k must be at least 1, got {args.top_k}"),
                (not given(args.stride_ms) or STRIDE_MS_MIN <= args.stride_ms, _stride_problem(args.stride_ms, 1.0)),
                (not given(args.threshold) or 0 < args.threshold <= 1, f"--threshold must be in (0, 1], got {args.threshold}"),
                (not given(args.average_ms) or 0 <= args.average_ms < float("inf"), f"--average-ms must be >= 0, got {args.average_ms}"),
                (not given(args.suppress_ms) or args.suppress_ms >= 0, f"--suppress-ms must be >= 0, got {args.suppress_ms}"),
                (not (args.onnx and args.int8), "--onnx and --int8: choose one (--int8 runs onnxruntime too)")]
    for ok, msg in problems:
        if not ok:
            print(f"error: {msg}", file=sys.stderr)
            return 2
    try:
        bundle = load_for(args.bundle, args.onnx, args.int8, args.device)
    except (BundleError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    window_s = bundle.clip_samples / bundle.sample_rate
    if given(args.stride_ms) and args.stride_ms > 1000 * window_s:  # a step longer than the window skips audio
        print(f"error: {_stride_problem(args.stride_ms, window_s)}", file=sys.stderr)
        return 2
    settings = detector_settings(bundle)
    for k in (*DEFAULTS, "rule"):
        if getattr(args, k) is None:
            setattr(args, k, settings[k])
    results, failed = [], 0
    for path, problem in expand(args.inputs):
        try:
            if problem:
                raise BadClip(problem)
            r = predict_file(bundle, path, min(args.top_k, len(bundle.classes)), args.stride_ms, args.threshold,
                             args.average_ms, args.suppress_ms, args.rule)
        except BadClip as e:
            failed += 1
            print(f"error: {escape_path(path)}: {e}", file=sys.stderr)
            results.append({"path": escape_path(path), "error": str(e)})
            continue
        results.append(r)
        if args.format == "text":  # the command's output, which users pipe: print, at every --log-level
            print("\n".join(text_lines(r, args.threshold, args.stride_ms)), flush=True)
    if args.format == "json":
        doc = {"bundle": str(bundle.path), "backend": bundle.backend, "classes": bundle.classes,
               "threshold": args.threshold, "stride_ms": args.stride_ms, "average_ms": args.average_ms,
               "suppress_ms": args.suppress_ms, "rule": args.rule, "operating_point": settings["from"], "files": results}
        print(json.dumps(doc, indent=1))  # the command's output: print, at every --log-level
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
