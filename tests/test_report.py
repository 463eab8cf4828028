"""Seeing a search: the report, the Optuna study, TensorBoard files and the terminal, on a real search."""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray.reporting.report import PLOTS, REPORT, importances, page_paths
from audionet_ray.tuning.experiment import load_trials

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ["learning_curves", "params_vs_metric", "importances", "confusion_matrix"]


@pytest.fixture(scope="module")
def search(ray_session, prepared_demo, tmp_path_factory):
    """One real smoke search (3 trials, ASHA; its best exported and evaluated), attached to the session's Ray:
    (experiment, stdout)."""
    storage = tmp_path_factory.mktemp("report")
    address = ray_session.get_runtime_context().gcs_address
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--search-space", "smoke",
                        "--data", str(prepared_demo), "--storage", str(storage), "--name", "x",
                        "--address", address], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return storage / "x", p.stdout


@pytest.mark.slow
def test_report_has_every_plot_as_a_png_and_works_offline(search, tmp_path):
    from matplotlib.image import imread

    exp, stdout = search
    assert f"report: {exp / REPORT}" in stdout  # written by the search itself
    page = (exp / REPORT).read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page  # offline
    for name in FIGURES:
        rel = f"{PLOTS}/{name}.png"
        assert f'src="{rel}"' in page, name
        png = exp / rel
        assert png.read_bytes()[:8] == PNG_SIGNATURE, name
        img = imread(png)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300 and img.shape[2] in (3, 4), (name, img.shape)
        assert np.ptp(img[..., :3]) > 0.5, f"{name} is blank"
    trials = load_trials(exp)
    assert len(trials) == 3
    for t in trials:  # the table: one row per trial, saying how it ended
        ended = "finished" if t.last["epoch"] == 4 else "stopped early"
        assert re.search(rf"<td>{t.trial_id}</td><td>{ended}</td>", page), (t.trial_id, ended)
    _report_out_is_a_folder_or_a_file(exp, tmp_path)


def _report_out_is_a_folder_or_a_file(exp, tmp_path):
    """report --out FOLDER (a new path without .html, or an existing folder) writes FOLDER/report.html
    with plots/ beside it; --out NAME.html still writes that file (as before)."""
    from audionet_ray import report

    (tmp_path / "made").mkdir()
    for out, page in ((tmp_path / "new", tmp_path / "new" / REPORT), (tmp_path / "made", tmp_path / "made" / REPORT),
                      (tmp_path / "page.html", tmp_path / "page.html")):
        assert report.main([str(exp), "--out", str(out)]) == 0
        text = page.read_text()
        assert 'src="plots/learning_curves.png"' in text and "</html>" in text, page
        assert (page.parent / PLOTS / "learning_curves.png").read_bytes()[:8] == PNG_SIGNATURE, page
    assert not (tmp_path / "page.html").is_dir() and not (tmp_path / "new" / "report.html").is_dir()


@pytest.mark.slow
def test_optuna_study_has_one_trial_per_tune_trial_with_the_same_parameters(search):
    import optuna

    exp, _ = search
    assert json.loads((exp / "search.json").read_text())["optuna_storage"] == f"sqlite:///{exp / 'optuna.db'}"
    study = optuna.load_study(study_name="x", storage=f"sqlite:///{exp / 'optuna.db'}")
    by_tune_id = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    trials = load_trials(exp)
    assert len(study.trials) == len(trials) == 3
    assert set(by_tune_id) == {t.trial_id for t in trials}
    for t in trials:
        ot = by_tune_id[t.trial_id]
        assert ot.state == optuna.trial.TrialState.COMPLETE
        assert ot.params == t.config
        assert ot.value == pytest.approx(t.last["val_accuracy"])
        # every epoch an intermediate value, the last one included
        assert ot.intermediate_values == pytest.approx({r["epoch"]: r["val_accuracy"] for r in t.history})


@pytest.mark.slow
def test_tensorboard_scalars_per_epoch_in_every_trial_folder(search):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp, _ = search
    trial_dirs = [d for d in exp.iterdir() if (d / "params.json").exists()]
    assert len(trial_dirs) == 3
    for d in trial_dirs:
        assert list(d.glob("events.out.tfevents.*")), d
        events = EventAccumulator(str(d))
        events.Reload()
        history = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        scalars = events.Scalars("ray/tune/val_accuracy")
        assert [s.step for s in scalars] == [r["epoch"] for r in history]  # stepped by epoch
        assert [s.value for s in scalars] == pytest.approx([r["val_accuracy"] for r in history])


@pytest.mark.slow
def test_terminal_shows_the_progress_table_and_a_line_per_trial(search):
    exp, stdout = search
    header = [line for line in stdout.splitlines() if "Trial name" in line][-1]  # the first has no results yet
    columns = {cell.strip() for cell in header.split("|")}
    assert {"lr", "batch_size", "train_ratio", "val_acc", "epoch", "val_loss", "clips/s"} <= columns, header
    assert "Result logdir" not in stdout  # Tune's staging folder, not the experiment
    assert f"tensorboard --logdir {exp}" in stdout and f"optuna-dashboard sqlite:///{exp / 'optuna.db'}" in stdout
    for t in load_trials(exp):
        assert re.search(rf"^trial {t.trial_id} (finished|stopped early) at epoch {t.last['epoch']}/4: val_accuracy ",
                         stdout, re.M), t.trial_id


def test_importances_need_two_completed_trials():
    import optuna
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(direction="maximize")
    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "train_ratio": FloatDistribution(0.6, 0.9)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3, "train_ratio": 0.8}, distributions=space, value=0.5))
    values, n, why = importances(study)
    assert values is None and n == 1 and "at least 2 completed trials" in why
    study.add_trial(optuna.trial.create_trial(params={"lr": 3e-3, "train_ratio": 0.7}, distributions=space, value=0.7))
    values, n, _ = importances(study)
    assert n == 2 and set(values) == {"lr", "train_ratio"} and sum(values.values()) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(name=st.text("abcXYZ-_", min_size=1, max_size=10), ext=st.sampled_from(["", ".html", ".HTML", ".htm", ".txt", ".d"]),
       kind=st.sampled_from(["missing", "folder", "file"]))
def test_out_is_a_page_or_a_folder_that_gets_one(name, ext, kind):
    """page_paths on real paths: an existing folder, or a new path without .html, gets report.html;
    NAME.html or an existing file is the page; plots/ always sit beside the page."""
    with tempfile.TemporaryDirectory() as tmp:
        exp, out = Path(tmp) / "exp", Path(tmp) / f"{name}{ext}"
        if kind == "folder":
            out.mkdir()
        elif kind == "file":
            out.write_text("an old page")
        page, plots = page_paths(exp, str(out))
        folder = kind == "folder" or (kind == "missing" and ext.lower() not in (".html", ".htm"))
        assert page == (out.resolve() / REPORT if folder else out.resolve()) and plots == page.parent / PLOTS
        assert page_paths(exp, None) == (exp / REPORT, exp / PLOTS)  # by default: the experiment folder


def test_report_cli_refuses_a_folder_that_is_not_an_experiment(tmp_path):
    p = subprocess.run([sys.executable, "-m", "audionet_ray.report", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.startswith("error: ") and str(tmp_path) in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_a_thousand_classes_with_odd_names_through_evaluate_and_the_report(tmp_path):
    """1 000 classes, some named like mathtext (`$x_$` made matplotlib raise), with `_` and `\\`:
    evaluate's figure and JSON, and the report's section from that JSON, on real files; the
    figures stay a readable size (the most confused classes), the JSON keeps every count."""
    from matplotlib.image import imread

    from audionet_ray import plots
    from audionet_ray.detection.bundle import FORMAT, KIND, write_config
    from audionet_ray.deploy.evaluate import METRICS_FILE, PNG_FILE, scores
    from audionet_ray.reporting.report import _test_section

    n = 1000
    odd = ["$x$", "$x_$", "a_b", "back\\slash", "$", "50$ bill\\$"]
    classes = odd + [f"word_{i:04d}" for i in range(n - len(odd))]
    rng = np.random.default_rng(0)
    cm = np.diag(rng.integers(5, 20, n))
    for i, j in rng.integers(0, n, (3000, 2)):  # scattered confusions, more among the odd names
        cm[i, j] += 1
    cm[:6, :6] += rng.integers(0, 9, (6, 6))

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    write_config(bundle, {"kind": KIND, "format": FORMAT, "source": {"trial_id": "t$1$", "checkpoint": "/x/checkpoint_000004"}})
    s = scores(cm, classes)
    s.update({"classes": classes, "confusion_matrix": cm.tolist(), "backend": "torch", "data": "d"})
    (bundle / METRICS_FILE).write_text(json.dumps(s, indent=1) + "\n")
    png = plots.confusion_matrix(cm, classes, f"test accuracy {s['accuracy']:.3f}", bundle / PNG_FILE)  # as evaluate draws it

    out = tmp_path / "report"
    page = _test_section(bundle, "d", out / "plots", out)[0]
    assert "No confusion matrix" not in page and 'src="plots/confusion_matrix.png"' in page
    for f in (png, out / "plots" / "confusion_matrix.png"):
        img = imread(f)
        assert 800 < img.shape[0] < 2500 and 800 < img.shape[1] < 2500, img.shape  # 40 classes, not 1 000
        assert np.ptp(img[..., :3]) > 0.5
    back = json.loads((bundle / METRICS_FILE).read_text())
    assert np.array_equal(np.array(back["confusion_matrix"]), cm) and back["classes"] == classes
    shown = plots.most_confused(cm, plots.MATRIX_CLASSES)
    assert len(shown) == plots.MATRIX_CLASSES and set(range(6)) <= set(shown)  # the most confused are drawn
