"""A search at a glance: `python -m audionet_ray.report EXPERIMENT_DIR` writes report.html.

The page has learning curves of every trial (trials the scheduler stopped early end in an x),
each hyperparameter against val_accuracy, Optuna's hyperparameter importances, the exported
bundle's confusion matrix on the test split (as `evaluate` wrote it), its operating point, int8
model, deployment figures, DET curve and the negative words that fire it most (when `evaluate
--streaming` has run), and a table of trials. Plots are PNG files in `plots/` next to the page, referenced relatively: the folder can
be copied, opened offline, and needs no CDN.

What it reads, all from the local experiment folder (experiment.py) and no running Ray (Ray's
Optuna search-space conversion is imported, nothing is started): the trials Tune recorded,
search.json, the best checkpoint's meta.json, the Optuna study (the SQLite file, or the storage
named in search.json; rebuilt from the trials when it is gone) and the bundle folder with
evaluate's output. No data, no model is run. A search writes its report at the end; run this
for a search that is still running, was interrupted, or ran elsewhere.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..training.config import TrainConfig
from ..corpus.discover import DatasetError
from ..tuning.distributions import DISTRIBUTIONS
from ..core.errors import ConfigError
from ..tuning.experiment import Trial, best, best_checkpoint, load_spec_json, load_trials, pareto_front, ranked
from ..core.storage import is_uri, redact, write_atomic
from ..tuning.study import load_study, study_from_trials
from ..core import log as logs

log = logs.get(__name__)

REPORT = "report.html"
PLOTS = "plots"


# ----------------------------------------------------------------------------- Optuna

def importances(study) -> tuple[dict[str, float] | None, int, str]:
    """Optuna's importances (its default evaluator, PED-ANOVA), completed trials, and why not if None."""
    import optuna

    n = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if n < 2:
        return None, n, f"Importances need at least 2 completed trials; this search has {n}."
    try:
        values = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as e:
        return None, n, f"Optuna could not compute importances: {e}"
    if not values or not all(np.isfinite(v) for v in values.values()):
        return None, n, "Optuna could not compute importances (every completed trial has the same value?)."
    return values, n, ""


# ----------------------------------------------------------------------------- the page

def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _esc(v) -> str:
    return html.escape(_fmt(v))


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.muted { color: #666; } .note { background: #fff7e0; padding: 0.6em 1em; border-left: 4px solid #e0b000; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e4e4e4; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best { background: #e8f5e9; font-weight: 600; }
"""


def _figure(title: str, img: Path | None, note: str, out_dir: Path) -> str:
    body = (f'<img src="{html.escape(img.relative_to(out_dir).as_posix())}" alt="{html.escape(title)}">'
            if img else "")
    return f"<h2>{html.escape(title)}</h2>\n{body}\n" + (f'<p class="muted">{html.escape(note)}</p>\n' if note else "")


def _bundle_section(bundle_dir: Path, img_dir: Path, out_dir: Path) -> str:
    """The exported bundle as a keyword spotter: its operating point, int8 model and deployment
    figures (config.json), and the DET curve when `evaluate --streaming` has run on it."""
    from ..core import plots

    try:
        config = json.loads((bundle_dir / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    op, q, dep = config.get("operating_point"), config.get("int8"), config.get("deployment") or {}
    rows = []
    if dep:
        lat = dep.get("latency_per_window_ms", {})
        rows += [("parameters", f"{dep['parameters']:,}"),
                 ("size on disk", ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in dep.get("size_bytes", {}).items())),
                 ("MACs per second of audio", f"{dep['macs_per_second_of_audio'] / 1e6:,.1f} M "
                                              f"({dep['windows_per_second']:g} windows a second)"),
                 ("latency per window", ", ".join(f"{k} {v['median_ms']:.3g} ms" for k, v in lat.items())
                  + f" ({dep.get('latency_method', '')}; {dep.get('cpu', '')}, load {dep.get('cpu_load_1min')})")]
    if op:
        rows.append(("operating point", f"threshold {op['threshold']:g}, average {op['average_ms']:g} ms: "
                                        f"{op['fa_per_hour']:.3g} FA/h, FRR {100 * (op['frr'] or 0):.1f} % on "
                                        f"{op['measured_on']}" + ("" if op["enough_audio"] else f" ({op['note']})")))
    else:
        rows.append(("operating point", config.get("operating_point_skipped") or "not calibrated"))
    if q and "test_accuracy" in q:
        rows.append(("int8 model", f"test accuracy {q['test_accuracy']:.4f} (float {q['float_test_accuracy']:.4f}); "
                                   f"top-1 agreement {q['top1_agreement_with_float']:.4f}"))
    table = ("<table>\n" + "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
             + "\n</table>\n")
    part = f"<h2>The exported bundle</h2>\n<p class=muted>{html.escape(str(bundle_dir))}</p>\n{table}"
    try:
        r = json.loads((bundle_dir / "streaming_metrics.json").read_text())
        img = plots.det_curve(r, img_dir / "det_curve.png")
        note = (f"evaluate --streaming on the {r['split']} split: {r['keyword_free_hours'] * 60:.1f} min of "
                f"keyword-free audio. {r['note']}")
        part += _figure("DET curve (streaming)", img, note, out_dir)
        part += _firing_table(r.get("firing_negatives"))
    except (OSError, ValueError, KeyError):
        part += (f'<p class="muted">No DET curve yet: python -m audionet_ray.evaluate {html.escape(str(bundle_dir))} '
                 f"--streaming</p>\n")
    return part


def _firing_table(rows: list[dict] | None) -> str:
    """The negative words that fire the detector most (negatives.py, written by evaluate --streaming)."""
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("says", "kind", "clips", "fires", "mean p", "max p", "as"))
    body = "\n".join(
        f"<tr><td>{_esc(f['text'])}</td><td>{_esc(f['kind'])}</td><td class=num>{f['clips']}</td>"
        f"<td class=num>{100 * f['fires']:.0f} %</td><td class=num>{f['mean_probability']:.3f}</td>"
        f"<td class=num>{f['max_probability']:.3f}</td><td>{_esc(f['top_keyword'])}</td></tr>" for f in rows)
    return ("<h2>Negatives that fire most</h2>\n<p class=muted>Test-split clips that say no keyword, grouped by "
            "what they say; fires: the share of its clips whose keyword probability reaches the bundle's "
            "threshold.</p>\n" f"<table>\n<tr>{head}</tr>\n{body}\n</table>\n")


def _test_section(bundle_dir: Path, data: str, img_dir: Path, out_dir: Path) -> tuple[str, str]:
    """The exported bundle on the test split, as `evaluate` last judged it (its test_metrics.json):
    the confusion matrix, and a sentence for the summary."""
    from ..core import plots
    from ..detection.bundle import CONFIG_FILE, BundleError, read_config
    from ..deploy.evaluate import METRICS_FILE

    title = "The exported bundle on the test split"
    try:
        s = json.loads((bundle_dir / METRICS_FILE).read_text())
        cm, classes = np.asarray(s["confusion_matrix"], dtype=np.int64), list(s["classes"])
        source = read_config(bundle_dir).get("source") or {}
    except (OSError, ValueError, KeyError, TypeError, BundleError):
        how = (f"python -m audionet_ray.export {bundle_dir.parent} {bundle_dir}; "
               if not (bundle_dir / CONFIG_FILE).exists() else "") + f"python -m audionet_ray.evaluate {bundle_dir} --data {data}"
        return _figure(title, None, f"No confusion matrix: the bundle has not been evaluated yet ({how}).", out_dir), ""
    where = f"trial {source['trial_id']}, " if source.get("trial_id") else ""
    ckpt = Path(str(source.get("checkpoint", ""))).name
    head = f"{where}{ckpt}: test accuracy {s['accuracy']:.3f} on {s['n_clips']} clips ({s.get('backend', 'torch')})"
    img = plots.confusion_matrix(cm, classes, head, img_dir / "confusion_matrix.png")
    note = (f"From {bundle_dir / METRICS_FILE}, written by python -m audionet_ray.evaluate on {s.get('data')}; "
            "rows: true class, columns: predicted.")
    return _figure(title, img, note, out_dir), f" The exported bundle ({where}{ckpt}) scores {s['accuracy']:.3f} on the {s['n_clips']} test clips."


def _trial_table(trials: list[Trial], search: list[str], metric: str, mode: str, max_epochs: int,
                 best_id: str | None) -> str:
    ending = {"finished": "finished", "stopped": "stopped early", "failed": "failed", "unfinished": "not finished"}
    head = ["trial", "ended", "epochs", f"best {metric}", f"last {metric}", "last val_loss", *search, "clips/s"]
    rows = []
    for t in ranked(trials, metric, mode, key=lambda t: t.best(metric, mode)):  # best first, unscored last
        cells = [t.trial_id, ending[t.ending(max_epochs)], t.last.get("epoch", 0), t.best(metric, mode),
                 t.last.get(metric), t.last.get("val_loss"), *(t.config.get(k) for k in search),
                 t.last.get("clips_per_s")]
        tds = "".join(f'<td class="num">{_esc(c)}</td>' if isinstance(c, (int, float)) else f"<td>{_esc(c)}</td>"
                      for c in cells)
        rows.append(f'<tr{" class=best" if t.trial_id == best_id else ""}>{tds}</tr>')
    return ("<table>\n<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>\n"
            + "\n".join(rows) + "\n</table>\n")


def _best_trial(exp_dir: Path, trials: list[Trial], metric: str, mode: str) -> tuple[Trial, float]:
    """(the best trial, its score): the trial of the best checkpointed epoch, as export picks it (an
    unsaved epoch cannot be used); with no checkpoint yet, the trial with the best epoch."""
    scored = [t for t in trials if t.best(metric, mode) is not None]
    if not scored:
        raise ConfigError(f"{exp_dir}: no trial has reported {metric} yet: nothing to plot")
    try:
        trial_id, _, meta = best_checkpoint(exp_dir, metric, mode)
        by_id = {t.trial_id: t for t in scored}
        if trial_id in by_id:
            return by_id[trial_id], meta["metrics"][metric]
    except ConfigError:  # no whole checkpoint yet
        pass
    top = best(scored, metric, mode, key=lambda t: t.best(metric, mode))
    return top, top.best(metric, mode)


def _summary(spec: dict, trials: list[Trial], best_trial: Trial, best_score: float, max_epochs: int) -> str:
    """The page's first paragraph: what ran, how the trials ended, the best trial and its settings."""
    tune, metric = spec["tune"], spec["tune"]["metric"]
    endings = [t.ending(max_epochs) for t in trials]
    counts = ", ".join(f"{endings.count(k)} {label}" for k, label in
                       [("finished", "ran every epoch"), ("stopped", "stopped early"), ("failed", "failed"),
                        ("unfinished", "not finished")] if endings.count(k))
    params = ", ".join(f"{k}={_fmt(best_trial.config.get(k))}" for k in spec["search"])
    asked = (f"{len(trials)} trials in a {tune['time_budget']} budget" if tune.get("time_budget")
             else f"{len(trials)} trials of {tune['num_samples']} asked")
    return (f"{asked} ({counts}); {tune['searcher']} "
            f"+ {tune['scheduler']}, up to {max_epochs} epochs each. Best: trial {best_trial.trial_id}, "
            f"{metric} {_fmt(best_score)} ({params}).")


def page_paths(exp_dir: Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """(the page, its plots' folder beside it). `out` is a file (NAME.html, or an existing file) or a
    folder (an existing one, or a new path without .html) that gets report.html; by default the
    experiment folder does."""
    page = Path(out).expanduser().resolve() if out else exp_dir / REPORT
    if out and (page.is_dir() or (page.suffix.lower() not in (".html", ".htm") and not page.exists())):
        page = page / REPORT
    return page, page.parent / PLOTS


def write_report(exp_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write report.html (and plots/*.png beside it) for an experiment folder, or at `out`; returns its path."""
    from ..core import plots

    exp_dir = Path(exp_dir).expanduser().resolve()
    saved = load_spec_json(exp_dir)
    spec = saved["spec"]
    metric, mode = spec["tune"]["metric"], spec["tune"]["mode"]
    max_epochs = int(spec["fixed"].get("epochs", TrainConfig.epochs))
    search = list(spec["search"])
    out, img_dir = page_paths(exp_dir, out)
    trials = load_trials(exp_dir)
    best_trial, best_score = _best_trial(exp_dir, trials, metric, mode)

    parts = []
    curves = plots.learning_curves(trials, metric, max_epochs, best_trial.trial_id, img_dir / "learning_curves.png")
    parts.append(_figure("Learning curves", curves, "One line per trial. o: ran every epoch; x: stopped early by "
                         "the scheduler (ASHA) at its last epoch; the thick line is the best trial.", out.parent))
    log_scale = frozenset(n for n, d in spec["search"].items() if DISTRIBUTIONS[next(iter(d))].log)
    pvm = plots.params_vs_metric(trials, spec["search"], metric, mode, max_epochs, best_trial.trial_id,
                                 img_dir / "params_vs_metric.png", log_scale)
    parts.append(_figure(f"Hyperparameters against {metric}", pvm, "Each trial's best epoch.", out.parent))

    study = load_study(exp_dir, saved)
    source = "the search's Optuna study"
    if study is None:
        study, source = study_from_trials(trials, spec, metric, mode), "a study rebuilt from Tune's results"
    values, n_complete, why = importances(study)
    img = plots.importances(values, "PED-ANOVA", n_complete, img_dir / "importances.png") if values else None
    note = (f"From {source} ({n_complete} completed trials), with Optuna's default evaluator, PED-ANOVA. "
            "With few trials, read them as a hint." if values else why)
    parts.append(_figure("Hyperparameter importances", img, note, out.parent))

    from ..modeling.costs import LIMIT_OF

    for objective in spec["tune"].get("objectives") or []:
        points, front = pareto_front(exp_dir, metric, mode, objective)
        img = plots.pareto_front(points, front, metric, objective, img_dir / f"pareto_{objective}.png") if points else None
        note = ("Each trial's best checkpoint; blue: the trials no other beats on both. Export one with "
                f"python -m audionet_ray.export {exp_dir} BUNDLE --pick {LIMIT_OF[objective]}=N." if points else
                f"No checkpoint records {objective}.")
        parts.append(_figure(f"{metric} against {objective}", img, note, out.parent))

    test_part, summary_test = _test_section(exp_dir / "bundle", saved["data"], img_dir, out.parent)
    parts.append(test_part)

    summary = _summary(spec, trials, best_trial, best_score, max_epochs) + summary_test
    live = "tensorboard --logdir " + str(exp_dir)
    if saved.get("optuna_storage"):
        live += "  |  optuna-dashboard " + redact(saved["optuna_storage"])  # an older search.json may hold a password
    page = (f"<!doctype html>\n<html lang=en><head><meta charset=utf-8>\n<title>Search {html.escape(exp_dir.name)}</title>\n"
            f"<style>{STYLE}</style></head><body>\n<h1>Search {html.escape(exp_dir.name)}</h1>\n"
            f'<p class="muted">{html.escape(str(exp_dir))} &middot; written {time.strftime("%Y-%m-%d %H:%M")}</p>\n'
            f"<p>{html.escape(summary)}</p>\n" + "".join(parts)
            + _bundle_section(exp_dir / "bundle", img_dir, out.parent)
            + "<h2>Trials</h2>\n" + _trial_table(trials, search, metric, mode, max_epochs, best_trial.trial_id)
            + f'<p class="muted">Live views: <code>{html.escape(live)}</code></p>\n</body></html>\n')
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page)  # a reader (or a crash) never meets half a page
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audionet_ray.report", description=__doc__.splitlines()[0],
                                 formatter_class=logs.HelpFormatter)
    logs.add_option(ap)
    ap.add_argument("experiment", help="an experiment folder (<storage>/<name>, with search.json)")
    ap.add_argument("--out", help=f"where the page goes: a file (NAME.html) or a folder (an existing one, or a "
                                  f"path without .html) that gets {REPORT}; plots/ beside the page "
                                  f"(default: EXPERIMENT/{REPORT})")
    args = ap.parse_args(argv)
    logs.setup(args.log_level)
    if is_uri(args.experiment):
        print(f"error: {args.experiment}: the report reads a local experiment folder; copy it here first",
              file=sys.stderr)
        return 2
    try:
        path = write_report(args.experiment, args.out)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
