"""Export, bundle loading, predict and evaluate, on a small AudioNet that really learned the demo words.

The word model is trained here with plain PyTorch (the same augmentation and optimizer as
train.py) on four demo words plus _silence_, and saved with train.save_checkpoint, so the
single-checkpoint export path is the one under test; the experiment-folder path gets a real
Ray Train run below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from audionet_ray import bundle as bundle_mod
from audionet_ray.pipeline.augment import AugmentConfig, augment, standardise
from audionet_ray.detection.bundle import FORMAT, BundleError, config_digest, load
from audionet_ray.training.config import ConfigError, TrainConfig
from audionet_ray.deploy.export import export
from audionet_ray.modeling.model import AudioNet, ModelConfig
from audionet_ray.corpus.prepare import PrepareOptions, pcm_from_binary, prepare
from audionet_ray.training.checkpoint import MODEL_FILE
from audionet_ray.training.checkpoint import save as save_checkpoint

WORDS = ["yes", "stop", "down", "left"]  # acoustically distinct, so a tiny model learns them fast
SR = 16_000


def _split(prepared: Path, part: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    m = json.loads((prepared / "manifest.json").read_text())
    xs, ys, paths = [], [], []
    for name in m["split_shards"][part]:
        t = pq.read_table(prepared / name, columns=["pcm", "label", "path"])
        xs.append(pcm_from_binary(t.column("pcm")).copy())
        ys.append(t.column("label").to_numpy())
        paths += t.column("path").to_pylist()
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64), paths


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def word_data(demo_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("words") / "prepared"
    prepare(demo_root, out, PrepareOptions(words=WORDS, silence=True), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def word_checkpoint(word_data, tmp_path_factory) -> Path:
    """A checkpoint folder (model.pt + meta.json) of a small AudioNet trained on the four words."""
    classes = json.loads((word_data / "manifest.json").read_text())["classes"]
    x, y, _ = _split(word_data, "trainval")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    cfg = TrainConfig.from_dict(dict(data=str(word_data), epochs=40, batch_size=8, lr=1e-3, width=16, dense=64, seed=0,
                      augment=AugmentConfig(background_prob=0.0)))
    model_cfg = ModelConfig(len(classes), cfg.model.width, cfg.model.dense, cfg.model.dropout)
    torch.manual_seed(cfg.seed)
    model = AudioNet.from_config(model_cfg)
    opt = torch.optim.NAdam(model.parameters(), lr=cfg.lr)
    for epoch in range(1, cfg.epochs + 1):
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
        acc = (model(standardise(x)).argmax(1) == y).float().mean().item()
    ckpt = tmp_path_factory.mktemp("ckpt") / "checkpoint_000040"
    ckpt.mkdir()
    save_checkpoint(ckpt, model, opt, cfg.epochs, cfg, model_cfg, classes, {"val_accuracy": acc, "train_accuracy": acc})
    return ckpt


@pytest.fixture(scope="module")
def word_bundle(word_checkpoint, tmp_path_factory) -> Path:
    return export(word_checkpoint, tmp_path_factory.mktemp("export") / "bundle")


def _confident_clips(bundle_dir: Path, word_data: Path, n_words: int = 2) -> list[tuple[str, np.ndarray]]:
    """(word, int16 clip) for `n_words` different words: of each word, the clip the model is
    surest of (> 0.9), so that a test of the sliding window does not hinge on a borderline clip."""
    b = load(bundle_dir)
    (xt, yt, _), (xv, yv, _) = _split(word_data, "test"), _split(word_data, "trainval")
    x, y = np.concatenate([xt, xv]), np.concatenate([yt, yv])
    probs = b.predict_proba(x)
    best: dict[str, int] = {}
    for i in range(len(x)):
        word = b.classes[y[i]]
        if probs[i].argmax() == y[i] and probs[i, y[i]] > 0.9 and word in WORDS:
            if word not in best or probs[i, y[i]] > probs[best[word], y[best[word]]]:
                best[word] = i
    assert len(best) >= n_words, f"the word model learned too little: confident on {sorted(best)} only"
    return [(w, x[best[w]]) for w in sorted(best, key=WORDS.index)][:n_words]


# ----------------------------------------------------------------------------- export and load

def test_bundle_loads_with_the_checkpoints_logits(word_checkpoint, word_bundle, word_data):
    meta = json.loads((word_checkpoint / "meta.json").read_text())
    ref = AudioNet.from_config(meta["model"])
    ref.load_state_dict(torch.load(word_checkpoint / MODEL_FILE, weights_only=True))
    ref.eval()
    b = load(word_bundle)
    assert not b.model.training
    x, _, _ = _split(word_data, "test")
    with torch.no_grad():
        want = ref(standardise(torch.from_numpy(x))).numpy()
    got = b.predict_logits(x)
    assert got.shape == (len(x), len(meta["classes"]))
    assert np.abs(got - want).max() < 1e-6
    # float audio as read from a file goes through the same int16-scale path as prepared data
    assert np.abs(b.predict_logits(x.astype(np.float32) / 32768) - want).max() < 1e-4

    config = json.loads((word_bundle / "config.json").read_text())
    assert b.classes == config["classes"] == meta["classes"]
    assert config["classes"][-1] == "_silence_"
    assert config["preprocessing"]["sample_rate"] == SR and config["preprocessing"]["clip_samples"] == SR
    assert config["model"]["config"] == meta["model"]
    assert config["training"]["hyperparameters"]["lr"] == 1e-3
    assert config["source"]["checkpoint"] == str(word_checkpoint.resolve())
    assert set(config["files"]) == {"model.safetensors", "model.onnx", "model.int8.onnx"}
    assert config["onnx"]["max_abs_diff_vs_torch"] < 1e-4
    assert not any(p.name.startswith(".") for p in word_bundle.parent.iterdir())  # no temp folders left


def test_onnx_and_torch_agree_on_real_clips(word_bundle, word_data):
    x_test, _, _ = _split(word_data, "test")
    x_train, _, _ = _split(word_data, "trainval")
    x = np.concatenate([x_test, x_train[:40]])
    t = load(word_bundle).predict_logits(x)
    o = load(word_bundle, backend="onnx").predict_logits(x)
    assert o.shape == t.shape
    assert np.abs(o - t).max() < 1e-4
    assert (o.argmax(1) == t.argmax(1)).all()


def _tamper(bundle_dir: Path, how: str) -> None:
    cfg_file = bundle_dir / "config.json"
    if how == "weights":
        data = bytearray((bundle_dir / "model.safetensors").read_bytes())
        data[-100] ^= 0xFF  # one weight changed
        (bundle_dir / "model.safetensors").write_bytes(bytes(data))
    elif how == "onnx missing":
        (bundle_dir / "model.onnx").unlink()
    elif how == "classes edited":
        cfg = json.loads(cfg_file.read_text())
        cfg["classes"][0], cfg["classes"][1] = cfg["classes"][1], cfg["classes"][0]
        cfg_file.write_text(json.dumps(cfg))
    elif how == "newer format":
        cfg = json.loads(cfg_file.read_text())
        cfg["format"] = FORMAT + 1
        cfg["config_sha256"] = config_digest(cfg)  # a genuine bundle of a later version
        cfg_file.write_text(json.dumps(cfg))
    elif how == "config cut short":
        cfg_file.write_text(cfg_file.read_text()[:200])


TAMPERED = {
    "weights": "model.safetensors: does not match its sha256",
    "onnx missing": "model.onnx: missing from the bundle",
    "classes edited": "changed after export (checksum mismatch)",
    "newer format": f"bundle format {FORMAT + 1} was written by a newer audionet-ray",
    "config cut short": "unreadable (JSONDecodeError)",
}


@pytest.mark.parametrize("how", sorted(TAMPERED))
def test_tampered_or_newer_bundle_is_refused(word_bundle, tmp_path, how):
    b = tmp_path / "bundle"
    shutil.copytree(word_bundle, b)
    load(b)  # the copy itself is fine
    _tamper(b, how)
    with pytest.raises(BundleError) as e:
        load(b)
    assert TAMPERED[how] in str(e.value)
    assert "\n" not in str(e.value)


def test_predict_cli_refuses_a_tampered_bundle_in_one_line(word_bundle, tmp_path):
    b = tmp_path / "bundle"
    shutil.copytree(word_bundle, b)
    _tamper(b, "weights")
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(SR, np.int16), SR)
    p = _run("audionet_ray.detection.predict", str(b), str(clip))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "sha256" in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_export_refuses_a_folder_that_is_not_a_bundle(word_checkpoint, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    p = _run("audionet_ray.deploy.export", str(word_checkpoint), str(tmp_path))
    assert p.returncode == 2 and "is not a bundle folder" in p.stderr and "Traceback" not in p.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- predict

def test_a_checkpoint_cut_short_is_never_exported_or_picked(word_checkpoint, tmp_path):
    """meta.json beside a model.pt a crash cut short: not a candidate, locally or behind a URI."""
    from audionet_ray.tuning.experiment import best_checkpoint, checkpoints

    exp = tmp_path / "exp"
    good = exp / "train_runs" / "t1" / "checkpoint_a"
    bad = exp / "train_runs" / "t2" / "checkpoint_b"
    shutil.copytree(word_checkpoint, good)
    shutil.copytree(word_checkpoint, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["metrics"]["val_accuracy"] += 0.5  # it would win, were it whole
    (bad / "meta.json").write_text(json.dumps(meta))
    data = (bad / MODEL_FILE).read_bytes()
    (bad / MODEL_FILE).write_bytes(data[: len(data) // 2])

    for where in (exp, f"file://{exp}"):
        assert [t for t, _, _ in checkpoints(where)] == ["t1"], where
        assert best_checkpoint(where)[0] == "t1"
    config = json.loads((export(exp, tmp_path / "bundle") / "config.json").read_text())
    assert config["source"]["trial_id"] == "t1"
    with pytest.raises(ConfigError) as e:
        export(bad, tmp_path / "b2")
    assert f"{bad}: an incomplete checkpoint ({MODEL_FILE} is cut short ({len(data) // 2} of {len(data)} bytes)" in str(e.value)
    assert not (tmp_path / "b2").exists()


def test_predict_8khz_stereo_file(word_bundle, word_data, tmp_path):
    (word, clip), = _confident_clips(word_bundle, word_data, 1)
    import soxr

    x = clip.astype(np.float32) / 32768
    low = soxr.resample(x, SR, 8_000)
    stereo = np.stack([low * 1.25, low * 0.75], axis=1)  # mixes down to `low`
    f = tmp_path / "clip_8k_stereo.wav"
    sf.write(f, stereo, 8_000, subtype="PCM_16")
    assert sf.info(f).samplerate == 8_000 and sf.info(f).channels == 2

    for extra in ([], ["--onnx"]):
        p = _run("audionet_ray.detection.predict", str(word_bundle), str(f), "--format", "json", "--top-k", "3", *extra)
        assert p.returncode == 0, p.stderr
        (r,) = json.loads(p.stdout)["files"]
        assert r["duration_s"] == pytest.approx(1.0, abs=1e-3)
        probs = [t["prob"] for t in r["top_k"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert r["top_k"][0]["label"] == word, (word, r["top_k"])
    text = _run("audionet_ray.detection.predict", str(word_bundle), str(f))
    assert text.returncode == 0 and text.stdout.startswith(f"{f}: {word} ")


def test_predict_finds_two_keywords_in_a_five_second_file(word_bundle, word_data, demo_root, tmp_path):
    (w1, c1), (w2, c2) = _confident_clips(word_bundle, word_data, 2)
    noise, _ = sf.read(demo_root / "_background_noise_" / "pink_noise.wav", dtype="float32")
    audio = noise[: 5 * SR] * 0.02  # quiet room noise between the words
    audio[int(0.5 * SR):int(1.5 * SR)] += c1 / 32768  # word 1 in 0.5-1.5 s
    audio[int(3.0 * SR):int(4.0 * SR)] += c2 / 32768  # word 2 in 3.0-4.0 s
    f = tmp_path / "two_words.wav"
    sf.write(f, audio, SR, subtype="PCM_16")

    # the threshold the test was written for, not the bundle's calibrated one (tested below)
    p = _run("audionet_ray.detection.predict", str(word_bundle), str(f), "--format", "json", "--stride-ms", "250",
             "--threshold", "0.6")
    assert p.returncode == 0, p.stderr
    (r,) = json.loads(p.stdout)["files"]
    assert r["duration_s"] == pytest.approx(5.0)
    assert len(r["windows"]) == 17
    found = [(d["label"], d["time_s"]) for d in r["detections"]]
    assert [lab for lab, _ in found] == [w1, w2], found
    assert 0.5 <= found[0][1] <= 1.5 and 3.0 <= found[1][1] <= 4.0, found
    text = _run("audionet_ray.detection.predict", str(word_bundle), str(f), "--threshold", "0.6")
    assert "2 keyword(s)" in text.stdout and w1 in text.stdout and w2 in text.stdout, text.stdout


def test_predict_reports_bad_files_and_goes_on(word_bundle, word_data, tmp_path):
    x, _, _ = _split(word_data, "test")
    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "good.wav", x[0], SR)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not audio at all")
    p = _run("audionet_ray.detection.predict", str(word_bundle), str(folder), str(tmp_path / "missing.wav"))
    assert p.returncode == 1
    errors = p.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors), p.stderr
    assert any("empty.wav: empty file" in e for e in errors) and any("missing.wav: no such file" in e for e in errors)
    assert "Traceback" not in p.stderr
    assert p.stdout.startswith(f"{folder / 'good.wav'}: ")


# ----------------------------------------------------------------------------- evaluate

def test_evaluate_writes_confusion_png_and_metrics(word_bundle, word_data, tmp_path):
    out = tmp_path / "eval"
    p = _run("audionet_ray.deploy.evaluate", str(word_bundle), "--data", str(word_data), "--out", str(out))
    assert p.returncode == 0, p.stderr
    png = out / "confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = plt.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100

    metrics = json.loads((out / "test_metrics.json").read_text())
    x, y, _ = _split(word_data, "test")
    pred = load(word_bundle).predict_logits(x).argmax(1)
    assert metrics["n_clips"] == len(y)
    assert metrics["accuracy"] == pytest.approx(float((pred == y).mean()))
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == len(y) and np.trace(cm) == (pred == y).sum()
    for c in metrics["classes"]:
        assert c in p.stdout  # one table row per class
    assert "precision" in p.stdout and "recall" in p.stdout and "test accuracy" in p.stdout
    assert not (word_bundle / "confusion_matrix.png").exists()  # --out was honoured


# ----------------------------------------------------------------------------- a real experiment folder

@pytest.mark.slow
def test_export_picks_the_best_checkpoint_of_an_experiment(ray_session, prepared_demo, tmp_path):
    """A real Train run laid out as a search's trial (train_runs/<trial_id>/), plus search.json."""
    from audionet_ray.training.config import RunSettings
    from audionet_ray.tuning.experiment import best_checkpoint
    from audionet_ray.training.train import build_trainer

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "search.json").write_text(json.dumps({"spec": {"search": {"lr": {"loguniform": [1e-4, 1e-2]}},
                                                          "tune": {"metric": "val_accuracy", "mode": "max"}},
                                                 "data": str(prepared_demo)}))
    cfg = TrainConfig.from_dict(dict(data=str(prepared_demo), epochs=4, width=8, dense=32, batch_size=32, lr=2e-3, checkpoint_every=2))
    result = build_trainer(cfg, RunSettings(storage=str(exp / "train_runs"), name="abc_00001", keep_checkpoints=5)).fit()
    assert result.error is None
    assert len(list((exp / "train_runs" / "abc_00001").glob("checkpoint_*/meta.json"))) == 2

    p = _run("audionet_ray.deploy.export", str(exp), str(exp / "bundle"))
    assert p.returncode == 0, p.stderr
    assert f"bundle: {exp / 'bundle'}" in p.stdout
    config = json.loads((exp / "bundle" / "config.json").read_text())
    trial, ckpt, meta = best_checkpoint(exp, "val_accuracy", "max")
    assert config["source"]["trial_id"] == trial == "abc_00001"
    assert config["source"]["checkpoint"] == str(ckpt.resolve())
    assert config["training"]["searched"] == {"lr": 2e-3}
    assert config["selection"] == {"metric": "val_accuracy", "mode": "max",
                                   "value": meta["metrics"]["val_accuracy"], "candidates": 2}

    ref = AudioNet.from_config(meta["model"])
    ref.load_state_dict(torch.load(ckpt / MODEL_FILE, weights_only=True))
    ref.eval()
    clips = np.random.default_rng(0).integers(-3000, 3000, (4, SR)).astype(np.int16)
    with torch.no_grad():
        want = ref(standardise(torch.from_numpy(clips))).numpy()
    assert np.abs(load(exp / "bundle").predict_logits(clips) - want).max() < 1e-6

    # by val_loss (lower is better) from the Train run folder itself, as a `train` user would
    metas = {m.parent: json.loads(m.read_text()) for m in (exp / "train_runs" / "abc_00001").glob("checkpoint_*/meta.json")}
    assert all(meta["metrics"]["val_clips"] > 0 for meta in metas.values())
    lowest = min(metas, key=lambda d: (metas[d]["metrics"]["val_loss"], -metas[d]["epoch"]))  # a tie: the later epoch
    bundle2 = export(exp / "train_runs" / "abc_00001", tmp_path / "b2", metric="val_loss")
    config2 = json.loads((bundle2 / "config.json").read_text())
    assert config2["selection"]["mode"] == "min"
    assert config2["source"]["checkpoint"] == str(lowest.resolve())

    # re-exporting over an existing bundle replaces it whole
    export(exp, exp / "bundle", metric="val_loss")
    assert json.loads((exp / "bundle" / "config.json").read_text())["selection"]["metric"] == "val_loss"
    bundle_mod.load(exp / "bundle")


# ----------------------------------------------------------------------------- model variants

def _variant_checkpoint(word_data: Path, out: Path, **variant) -> Path:
    """A checkpoint of a small AudioNet variant trained briefly with train.py's recipe functions
    (a cosine schedule, so train_state.pt carries a scheduler the export must ignore)."""
    from audionet_ray.training.train import make_optimizer, make_scheduler

    classes = json.loads((word_data / "manifest.json").read_text())["classes"]
    x, y, _ = _split(word_data, "trainval")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    cfg = TrainConfig.from_dict(dict(data=str(word_data), epochs=3, batch_size=16, lr=3e-3, width=8, dense=32, seed=0,
                      schedule="cosine", augment=AugmentConfig(background_prob=0.0), **variant))
    model_cfg = cfg.model_config(len(classes))
    torch.manual_seed(0)
    model = AudioNet.from_config(model_cfg)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, -(-len(y) // cfg.batch_size))
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        gen = torch.Generator().manual_seed(epoch)
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(augment(x[idx], gen, cfg.augment)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    out.mkdir(parents=True)
    save_checkpoint(out, model, opt, cfg.epochs, cfg, model_cfg, classes, {"val_accuracy": 0.5}, sched)
    return out


@pytest.mark.parametrize("norm, frontend", [("batch", "conv"), ("group", "conv"), ("layer", "conv"),
                                            ("batch", "filterbank"), ("none", "filterbank")])
def test_every_norm_variant_exports_with_its_config_and_a_matching_onnx_graph(norm, frontend, word_data, tmp_path):
    ckpt = _variant_checkpoint(word_data, tmp_path / "checkpoint_000003", norm=norm, norm_groups=2, pool="avg",
                               dense_layers=2, frontend=frontend, filters=16)
    b_dir = export(ckpt, tmp_path / "bundle")
    config = json.loads((b_dir / "config.json").read_text())
    want = ModelConfig(len(config["classes"]), 8, 32, 0.2, norm, 2, "avg", 2, frontend, 16)
    assert config["model"]["config"] == want.to_dict()  # the bundle records the whole variant
    assert config["onnx"]["max_abs_diff_vs_torch"] < 1e-4
    if frontend == "filterbank":  # int8 steps cannot hold the power before the log: the front end stays float
        import onnx

        graph = onnx.load(str(b_dir / "model.int8.onnx")).graph
        made_by = {o: n for n in graph.node for o in n.output}
        log = next(n for n in graph.node if n.op_type == "Log")
        assert all(made_by[i].op_type != "DequantizeLinear" for i in log.input if i in made_by)
        assert "front end in float" in config["int8"]["quantisation"]
        assert config["int8"]["top1_agreement_with_float"] >= 0.9, config["int8"]
    x_test, _, _ = _split(word_data, "test")
    t, o = load(b_dir), load(b_dir, backend="onnx")
    assert t.model.config == want and not t.model.training
    lt, lo = t.predict_logits(x_test), o.predict_logits(x_test)
    assert np.abs(lt - lo).max() < 1e-4
    # eval mode: a clip's logits are its own, whatever else is in the batch (batch norm's running statistics)
    assert np.abs(t.predict_logits(x_test[:1]) - lt[:1]).max() < 1e-4


@pytest.mark.parametrize("frontend", ["conv", "filterbank"])
def test_batch_norm_variant_round_trips_to_predict_on_both_backends(frontend, word_data, demo_root, tmp_path):
    """checkpoint -> export -> ONNX -> `python -m audionet_ray.predict`, for norm=batch: the CLI's
    top words and probabilities agree between torch and onnxruntime, and with the bundle API."""
    ckpt = _variant_checkpoint(word_data, tmp_path / "checkpoint_000003", norm="batch", frontend=frontend)
    b_dir = export(ckpt, tmp_path / "bundle")
    b = load(b_dir)
    x_test, _, _ = _split(word_data, "test")
    files = []
    for i in range(3):
        f = tmp_path / f"clip{i}.wav"
        sf.write(f, x_test[i], SR, subtype="PCM_16")
        files.append(str(f))
    want = b.predict_proba(x_test[:3])
    runs = {}
    for backend, extra in (("torch", []), ("onnx", ["--onnx"])):
        p = _run("audionet_ray.detection.predict", str(b_dir), *files, "--format", "json", "--top-k", "2", *extra)
        assert p.returncode == 0, p.stderr
        runs[backend] = json.loads(p.stdout)["files"]
    for i, (rt, ro) in enumerate(zip(runs["torch"], runs["onnx"])):
        assert [t["label"] for t in rt["top_k"]] == [t["label"] for t in ro["top_k"]]
        assert rt["top_k"][0]["label"] == b.classes[int(want[i].argmax())]
        for a, c in zip(rt["top_k"], ro["top_k"]):
            assert a["prob"] == pytest.approx(c["prob"], abs=1e-4)
        assert rt["top_k"][0]["prob"] == pytest.approx(float(want[i].max()), abs=1e-4)


# ----------------------------------------------------------------------------- operating point, int8, deployment

def test_config_holds_operating_point_int8_and_deployment_figures(word_bundle, word_data):
    from audionet_ray.modeling.model import count_parameters, flops_per_clip

    config = json.loads((word_bundle / "config.json").read_text())
    assert set(config["files"]) == {"model.safetensors", "model.onnx", "model.int8.onnx"}
    op = config["operating_point"]
    assert 0 < op["threshold"] <= 1 and op["measured_on"].startswith("validation split streams")
    assert (op["stride_ms"], op["average_ms"], op["suppress_ms"], op["rule"]) == (250, 500, 1000, "top")
    assert op["fa_per_hour_target"] == 1 and op["target_met"] == (op["fa_per_hour"] <= 1)
    assert op["enough_audio"] is False and "3.0 h are needed" in op["note"]  # minutes of demo noise

    b = load(word_bundle)
    dep = config["deployment"]
    assert dep["parameters"] == count_parameters(b.model) == config["model"]["parameters"]
    assert dep["size_bytes"] == {f: (word_bundle / f).stat().st_size for f in config["files"]}
    assert dep["macs_per_window"] == int(flops_per_clip(b.model.config, training=False) / 2)
    assert dep["macs_per_second_of_audio"] == pytest.approx(4 * dep["macs_per_window"], rel=1e-6)
    for kind in ("float", "int8"):
        lat = dep["latency_per_window_ms"][kind]
        assert 0 < lat["min_ms"] <= lat["median_ms"] < 1000
    assert "1 intra-op thread" in dep["latency_method"]

    q = config["int8"]
    x, y, _ = _split(word_data, "test")
    int8 = load(word_bundle, backend="int8").predict_logits(x)
    flt = load(word_bundle, backend="onnx").predict_logits(x)
    assert q["test_clips"] == len(y)
    assert q["test_accuracy"] == pytest.approx(float((int8.argmax(1) == y).mean()))
    assert q["float_test_accuracy"] == pytest.approx(float((flt.argmax(1) == y).mean()))
    assert q["max_abs_logit_diff_vs_float"] == pytest.approx(float(np.abs(int8 - flt).max()), rel=1e-4)
    assert 0 < q["max_abs_logit_diff_vs_float"] < 2  # quantised, and close
    assert q["calibration_split"] == "train" and q["calibration_clips"] > 0


def test_a_tampered_int8_model_is_refused(word_bundle, tmp_path):
    b = tmp_path / "bundle"
    shutil.copytree(word_bundle, b)
    load(b, backend="int8")
    data = bytearray((b / "model.int8.onnx").read_bytes())
    data[-200] ^= 0xFF
    (b / "model.int8.onnx").write_bytes(bytes(data))
    for backend in ("int8", "torch"):  # the whole bundle is checked, whichever model runs
        with pytest.raises(BundleError) as e:
            load(b, backend=backend)
        assert "model.int8.onnx: does not match its sha256" in str(e.value) and "\n" not in str(e.value)
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(SR, np.int16), SR)
    p = _run("audionet_ray.detection.predict", str(b), str(clip), "--int8")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "model.int8.onnx: does not match its sha256" in p.stderr


def test_predict_int8_and_the_bundles_operating_point(word_bundle, word_data, demo_root, tmp_path):
    """predict --int8 runs the int8 graph; with no --threshold predict takes the bundle's calibrated one."""
    (w1, c1), (w2, c2) = _confident_clips(word_bundle, word_data, 2)
    noise, _ = sf.read(demo_root / "_background_noise_" / "pink_noise.wav", dtype="float32")
    audio = noise[: 5 * SR] * 0.02
    audio[int(0.5 * SR):int(1.5 * SR)] += c1 / 32768
    audio[int(3.0 * SR):int(4.0 * SR)] += c2 / 32768
    f = tmp_path / "two_words.wav"
    sf.write(f, audio, SR, subtype="PCM_16")
    op = json.loads((word_bundle / "config.json").read_text())["operating_point"]
    runs = {}
    for name, extra in (("float", ["--onnx"]), ("int8", ["--int8"])):
        p = _run("audionet_ray.detection.predict", str(word_bundle), str(f), "--format", "json", *extra)
        assert p.returncode == 0, p.stderr
        runs[name] = doc = json.loads(p.stdout)
        assert doc["backend"] == ("int8" if name == "int8" else "onnx")
        assert doc["threshold"] == op["threshold"] and doc["operating_point"].startswith("calibrated")
        assert doc["rule"] == op["rule"] == "top"  # the rule it was calibrated with
    (rf,), (ri,) = runs["float"]["files"], runs["int8"]["files"]
    same = [a["label"] == b["label"] for a, b in zip(ri["windows"], rf["windows"])]
    assert len(same) == 17 and sum(same) >= 15  # a near tie may fall either way
    assert [d["label"] for d in ri["detections"]] == [d["label"] for d in rf["detections"]]
    p = _run("audionet_ray.detection.predict", str(word_bundle), str(f), "--format", "json", "--threshold", "0.5")
    assert json.loads(p.stdout)["threshold"] == 0.5  # an explicit option wins
    p = _run("audionet_ray.detection.predict", str(word_bundle), str(f), "--int8", "--onnx")
    assert p.returncode == 2 and p.stderr.startswith("error: --onnx and --int8")


def test_export_without_data_leaves_out_int8_and_calibration_and_says_why(word_checkpoint, tmp_path):
    p = _run("audionet_ray.deploy.export", str(word_checkpoint), str(tmp_path / "bundle"), "--data", str(tmp_path / "gone"))
    assert p.returncode == 0, p.stderr
    assert "note: int8 skipped:" in p.stderr and "pass --data ROOT" in p.stderr
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["int8"] is None and config["operating_point"] is None and "model.int8.onnx" not in config["files"]
    assert config["deployment"]["latency_per_window_ms"].keys() == {"float"}
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(SR, np.int16), SR)
    p = _run("audionet_ray.detection.predict", str(tmp_path / "bundle"), str(clip), "--int8")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "has no model.int8.onnx" in p.stderr, p.stderr
    p = _run("audionet_ray.detection.predict", str(tmp_path / "bundle"), str(clip), "--format", "json")
    assert json.loads(p.stdout)["threshold"] == 0.6  # uncalibrated: the default


# ----------------------------------------------------------------------------- a killed export

def _tiny_checkpoint(d: Path, epoch: int) -> Path:
    cfg = TrainConfig.from_dict(dict(width=4, dense=8, seed=epoch))
    torch.manual_seed(epoch)
    model = AudioNet.from_config(cfg.model_config(3))
    d.mkdir(parents=True)
    save_checkpoint(d, model, torch.optim.NAdam(model.parameters()), epoch, cfg, cfg.model_config(3), ["a", "b", "c"],
                    {"val_accuracy": 0.5})
    return d


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two checkpoints (epochs 1 and 2) and the bundle of the first."""
    root = tmp_path_factory.mktemp("kill")
    old, new = _tiny_checkpoint(root / "checkpoint_1", 1), _tiny_checkpoint(root / "checkpoint_2", 2)
    return old, new, export(old, root / "old_bundle", int8=False, calibrate_fa=None)


def _killed_export(ckpt: Path, out: Path, step: str, exchange: bool = True) -> None:
    """`python -m audionet_ray.export` that SIGKILLs itself at `step` (storage.crash_point); without
    `exchange`, as on a filesystem that cannot swap two folders in one step."""
    code = ("import sys\nfrom audionet_ray import storage\n"
            + ("" if exchange else "storage._exchange = lambda a, b: False\n")
            + "from audionet_ray.deploy.export import main\nsys.exit(main(sys.argv[1:]))\n")
    p = subprocess.run([sys.executable, "-c", code, str(ckpt), str(out), "--no-int8"], capture_output=True,
                       text=True, timeout=180, env={**os.environ, "AUDIONET_CRASH_AT": step})
    assert p.returncode == -9, p.stderr


def _epoch(out: Path) -> int:
    return load(out).config["training"]["epoch"]


@pytest.mark.parametrize("step", ["export:written", "replace:swapped"])
def test_an_export_killed_at_any_step_leaves_a_usable_bundle(step, old_and_new, tmp_path):
    from audionet_ray.core.storage import leftovers, recover_folder

    old, new, old_bundle = old_and_new
    out = tmp_path / "bundle"
    shutil.copytree(old_bundle, out)
    _killed_export(new, out, step)
    assert _epoch(out) == (1 if step == "export:written" else 2)  # the old bundle or the new one, whole
    assert leftovers(out)  # what the killed export was working on
    recover_folder(out)  # what the next export does first
    assert not leftovers(out) and _epoch(out) == (1 if step == "export:written" else 2)


def test_where_folders_cannot_be_swapped_the_next_export_puts_the_old_bundle_back(old_and_new, tmp_path, capsys):
    old, new, old_bundle = old_and_new
    out = tmp_path / "bundle"
    shutil.copytree(old_bundle, out)
    _killed_export(new, out, "replace:hidden", exchange=False)
    assert not out.exists() and [p.name.split("-")[0] for p in tmp_path.iterdir() if p.name.startswith(".")]
    export(old, out, int8=False, calibrate_fa=None)  # the next export
    assert "restored from .bundle.old-" in capsys.readouterr().out
    assert _epoch(out) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_int8_calibration_reads_the_first_training_clips_a_row_group_at_a_time(demo_root, tmp_path, monkeypatch):
    from audionet_ray import prepare as prepare_mod
    from audionet_ray.deploy.export import calibration_clips

    monkeypatch.setattr(prepare_mod, "ROW_GROUP", 16)  # many row groups from the small demo
    out = tmp_path / "prepared"
    prepare(demo_root, out, PrepareOptions(words=WORDS, silence=True), workers=1, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    tables = [pq.read_table(out / s, columns=["pcm", "bucket"]) for s in m["split_shards"]["trainval"]]
    pcm = np.concatenate([pcm_from_binary(t.column("pcm")) for t in tables])
    train = pcm[np.concatenate([t.column("bucket").to_numpy() for t in tables]) < 0.9]
    groups = sum(pq.ParquetFile(out / s).num_row_groups for s in m["split_shards"]["trainval"])
    assert groups >= 5 and len(train) > 40

    reads = []
    real = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, i, **kw: reads.append(i) or real(self, i, **kw))
    got = calibration_clips(out, 0.9, 20)
    assert np.array_equal(got, train[:20])  # the first 20 of the training speakers, in shard order
    assert len(set(reads)) <= 3 < groups  # what it took to find them, not every row group
    assert np.array_equal(calibration_clips(out, 0.9, 10_000), train)  # asked for more: all there are
