"""A clip window longer than one second, end to end (issue 29): `prepare --window 1.5` on a small
generated dataset of 1.5 s clips, every reader of its `pcm` column, the model built for the
window, a real Ray Train run, the exported ONNX graph on [n, 24000] and `predict` scanning a long
recording with 1.5 s windows. Real files, real processes, the session's Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray.corpus.audio import decode_clip
from audionet_ray.training.config import ConfigError, RunSettings, TrainConfig
from audionet_ray.pipeline.data import ensure_prepared, read_split, split_datasets, torch_batches
from audionet_ray.corpus.discover import DatasetError
from audionet_ray.modeling.model import AudioNet, ModelConfig, conv_lengths, flops_per_clip
from audionet_ray.corpus.prepare import (MANIFEST, SOURCE_MANIFEST, PrepareOptions, _ShardWriter, main as prepare_main,
                                  pcm_from_binary, prepare, window_samples)
from audionet_ray.detection.streaming import StreamOptions, iter_streams

SR = 16_000
N15 = 24_000  # 1.5 s
WORDS = {"low": 300.0, "mid": 900.0, "high": 2700.0}
SPEAKERS = 8


def _word(freq: float, seed: int, seconds: float = 1.5) -> np.ndarray:
    """A 0.6 s tone burst (the 'word') somewhere in `seconds` of faint noise, int16."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = rng.normal(0, 100, n)
    at = int(rng.integers(0, max(1, n - int(0.6 * SR))))
    t = np.arange(int(0.6 * SR)) / SR
    burst = 8000 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))
    x[at:at + len(burst)] += burst[: n - at]
    return np.clip(x, -32768, 32767).astype(np.int16)


def _write(path: Path, pcm: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, pcm, SR, subtype="PCM_16")


@pytest.fixture(scope="module")
def root15(tmp_path_factory) -> Path:
    """3 words x 8 speakers x 2 clips of 1.5 s (one of them 2 s long, one 1.2 s), 6 s of noise; the
    last speaker is the test split."""
    root = tmp_path_factory.mktemp("win") / "data"
    for w, (word, freq) in enumerate(WORDS.items()):
        for s in range(SPEAKERS):
            for k in range(2):
                seconds = 2.0 if (w, s, k) == (0, 0, 0) else 1.2 if (w, s, k) == (1, 0, 0) else 1.5
                _write(root / word / f"spk{s:02d}_nohash_{k}.wav", _word(freq, 100 * w + 10 * s + k, seconds))
    _write(root / "_background_noise_" / "hum.wav", _word(50.0, 7, 6.0))
    tests = [f"{word}/spk{SPEAKERS - 1:02d}_nohash_{k}.wav" for word in WORDS for k in range(2)]
    (root / "testing_list.txt").write_text("\n".join(tests) + "\n")  # one speaker tests
    return root


@pytest.fixture(scope="module")
def prepared15(root15, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("win-prepared") / "p15"
    assert prepare_main([str(root15), str(out), "--window", "1.5", "--workers", "1"]) == 0
    return out


# ----------------------------------------------------------------------------- prepare

def test_prepare_with_a_1_5_s_window_writes_24000_sample_rows(prepared15, root15):
    m = json.loads((prepared15 / MANIFEST).read_text())
    assert m["clip_samples"] == N15 and m["n_clips"] == len(WORDS) * SPEAKERS * 2
    assert m["repaired"] == {"cut to 1.5 s": 1, "padded to 1.5 s": 1}
    for shard in m["shards"]:
        table = pq.read_table(prepared15 / shard)
        assert table.schema.field("pcm").type.byte_width == 2 * N15
        assert all(len(v) == 2 * N15 for v in table.column("pcm").to_pylist())
    pcm, labels, classes = read_split(prepared15, 0.5, "train")
    assert pcm.shape[1] == N15 and len(pcm) == len(labels) > 0
    # a clip as written comes back bit for bit, the long one cut, the short one padded with zeros
    table = pq.read_table(prepared15 / m["shards"][0], columns=["pcm", "path"])
    rows = dict(zip(table.column("path").to_pylist(), pcm_from_binary(table.column("pcm"), N15)))
    for path, row in rows.items():
        src, _ = sf.read(root15 / path, dtype="int16")
        n = min(len(src), N15)
        assert np.array_equal(row[:n], src[:n]) and not row[n:].any()


def test_1_s_and_1_5_s_preparations_of_one_source_do_not_collide(root15, prepared15, tmp_path):
    one = ensure_prepared(root15, cache_dir=tmp_path, progress=False)
    longer = ensure_prepared(root15, cache_dir=tmp_path, progress=False, window=1.5)
    assert one != longer
    assert json.loads((one / MANIFEST).read_text())["clip_samples"] == SR
    m15 = json.loads((longer / MANIFEST).read_text())
    assert m15["clip_samples"] == N15 and m15["cache_key"] != json.loads((one / MANIFEST).read_text())["cache_key"]
    assert ensure_prepared(root15, cache_dir=tmp_path, progress=False, window=1.5) == longer  # cached
    assert ensure_prepared(prepared15) == ensure_prepared(prepared15, window=1.5) == prepared15
    with pytest.raises(DatasetError) as e:
        ensure_prepared(prepared15, window=1.0)
    assert "\n" not in str(e.value) and "window of 1.5 s" in str(e.value) and "--window 1" in str(e.value)


def test_the_window_comes_from_the_sources_wakeword_json(tmp_path):
    root = tmp_path / "wake"
    for word, freq in WORDS.items():
        for s in range(4):
            _write(root / word / f"spk{s}_nohash_0.wav", _word(freq, s, 1.25))
    (root / SOURCE_MANIFEST).write_text(json.dumps({"clip_samples": 20_000, "counts": {}}))
    out = ensure_prepared(root, cache_dir=tmp_path / "cache", progress=False)
    assert json.loads((out / MANIFEST).read_text())["clip_samples"] == 20_000
    assert "1.25s" in out.name
    # --window wins over the source
    assert prepare(root, tmp_path / "p1", PrepareOptions(clip_samples=SR), workers=1, progress=False)["clip_samples"] == SR
    (root / SOURCE_MANIFEST).write_text(json.dumps({"clip_samples": 123}))
    with pytest.raises(ConfigError) as e:
        ensure_prepared(root, cache_dir=tmp_path / "cache", progress=False)
    assert "\n" not in str(e.value) and SOURCE_MANIFEST in str(e.value) and "clip_samples" in str(e.value)


@pytest.mark.parametrize("window", ["0.2", "3.5", "1.00001", "abc", "nan", "inf"])
def test_a_bad_window_is_one_line(root15, tmp_path, capsys, window):
    assert prepare_main([str(root15), str(tmp_path / "out"), f"--window={window}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --window: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_a_bad_window_is_one_line_from_the_command(root15, tmp_path):
    p = subprocess.run([sys.executable, "-m", "audionet_ray.prepare", str(root15), str(tmp_path / "o"),
                        "--window", "0.1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("error: --window: 0.1 is not a window of 0.5 to 3 seconds"), p.stderr


@settings(max_examples=25, deadline=None)
@given(n=st.integers(8_000, 48_000), rows=st.integers(0, 3), length=st.integers(1, 50_000),
       seed=st.integers(0, 2**32 - 1))
def test_pcm_round_trips_for_any_window(n, rows, length, seed):
    """Any window in range: clips written to a shard come back bit for bit, and a file of any
    length decodes to its first n samples, zero-padded."""
    assert window_samples(n / SR) == n
    rng = np.random.default_rng(seed)
    clips = rng.integers(-32768, 32768, size=(rows, n)).astype(np.int16)
    with tempfile.TemporaryDirectory() as d:
        w = _ShardWriter(Path(d), "trainval", n)
        for i, c in enumerate(clips):
            w.add(c.astype("<i2").tobytes(), 0, f"s{i}", f"w/s{i}.wav", "trainval")
        w.flush()
        if rows:
            back = pcm_from_binary(pq.read_table(Path(d) / w.shards[0]).column("pcm"), n)
            assert back.shape == (rows, n) and np.array_equal(back, clips)
        src = rng.integers(-32768, 32768, size=length).astype(np.int16)
        _write(Path(d) / "x.wav", src)
        got, notes = decode_clip(Path(d) / "x.wav", n)
    k = min(n, length)
    assert got.shape == (n,) and np.array_equal(got[:k], src[:k]) and not got[k:].any()
    assert notes == ([] if length == n else [f"{'cut' if length > n else 'padded'} to {n / SR:g} s"])


def test_the_ray_data_path_gives_24000_sample_batches(ray_session, prepared15):
    ds = split_datasets(prepared15, 0.5, splits=("train", "test"))
    for name, d in ds.items():
        for pcm, y in torch_batches(d, 8):
            assert pcm.dtype == torch.int16 and pcm.shape[1] == N15 and len(pcm) == len(y), name


# ----------------------------------------------------------------------------- model

@pytest.mark.parametrize("frontend", ["conv", "filterbank"])
def test_the_model_is_built_for_its_window(frontend):
    m = AudioNet(3, width=8, dense=16, frontend=frontend, filters=8, clip_samples=N15).eval()
    assert m(torch.zeros(2, N15)).shape == (2, 3)
    assert m.config.clip_samples == N15 and AudioNet.from_config(m.config.to_dict()).config == m.config
    short = ModelConfig(3, 8, 16, frontend=frontend, filters=8)
    assert conv_lengths(N15, frontend)[-1] > conv_lengths(SR, frontend)[-1]
    assert flops_per_clip(m.config) > 1.3 * flops_per_clip(short)
    with pytest.raises(RuntimeError):  # a 1 s input does not fit a 1.5 s flatten model's dense layer
        m(torch.zeros(1, SR))


def test_a_window_the_convs_cannot_take_and_a_clip_samples_setting_unlike_the_data_are_one_line():
    with pytest.raises(ValueError, match="^clip_samples must be at least 10572 for frontend conv"):
        ModelConfig(3, clip_samples=8_000).validate()
    cfg = TrainConfig.from_dict(dict(clip_samples=SR))
    assert cfg.data_clip_samples({"clip_samples": SR}, "d") == SR
    assert TrainConfig().data_clip_samples({"clip_samples": N15}, "d") == N15
    with pytest.raises(ConfigError) as e:
        cfg.data_clip_samples({"clip_samples": N15}, "d")
    assert "\n" not in str(e.value) and str(e.value).startswith("clip_samples: 16000 given, but d holds clips of 24000")


def test_streams_of_1_5_s_clips_place_whole_keywords_in_1_5_s_windows():
    rng = np.random.default_rng(0)
    clips = rng.integers(-1000, 1000, size=(12, N15)).astype(np.int16)
    labels = ["yes", "no", "_unknown_"] * 4
    noise = rng.integers(-100, 100, size=int(2.2 * SR)).astype(np.int16)  # a noise stream shorter than 2 windows
    streams = list(iter_streams(clips, labels, {"yes", "no"}, noise, StreamOptions(minutes=1, stream_s=8.0,
                                                                                   noise_dbfs=(-40.0,))))
    events = [e for s in streams for e in s.keywords]
    assert len(events) == 8 and all(e.end_s - e.start_s == pytest.approx(1.5) for e in events)
    assert all(len(s.audio) >= N15 for s in streams)  # every stream holds at least one window


# ----------------------------------------------------------------------------- train, export, predict

def _train(prepared: Path, storage: Path, epochs: int) -> dict:
    """A small run (its dense layer's size follows the window: pool flatten); the same storage again resumes."""
    from audionet_ray.training.train import build_trainer

    cfg = TrainConfig.from_dict(dict(data=str(prepared), epochs=epochs, batch_size=16, lr=3e-3, width=8, dense=16, dense_layers=1,
                      norm="batch", pool="flatten", train_ratio=0.5, seed=0, checkpoint_every=1))
    result = build_trainer(cfg, RunSettings(storage=str(storage), name="w15", keep_checkpoints=5)).fit()
    assert result.error is None, result.error
    return result.metrics


@pytest.mark.slow
def test_train_export_onnx_and_predict_with_a_1_5_s_window(ray_session, prepared15, tmp_path):
    import onnxruntime as ort

    from audionet_ray.detection.bundle import load
    from audionet_ray.deploy.evaluate import evaluate
    from audionet_ray.deploy.export import ONNX_INPUT, main as export_main

    assert _train(prepared15, tmp_path / "runs", 1)["resumed_from"] == 0
    assert _train(prepared15, tmp_path / "runs", 2)["resumed_from"] == 1  # the checkpoint rebuilt as a 1.5 s model
    run = tmp_path / "runs" / "w15"
    metas = [json.loads(p.read_text()) for p in run.glob("checkpoint_*/meta.json")]
    assert metas and all(m["model"]["clip_samples"] == N15 for m in metas)  # resume and export rebuild it

    out = tmp_path / "bundle"
    assert export_main([str(run), str(out), "--calibration-minutes", "0.5"]) == 0
    config = json.loads((out / "config.json").read_text())
    pre = config["preprocessing"]
    assert pre["clip_samples"] == N15 and pre["window_seconds"] == 1.5
    assert config["model"]["config"]["clip_samples"] == N15 and config["onnx"]["input_shape"] == ["batch", N15]
    # calibration ran the detector over streams of whole 1.5 s clips; int8 calibrated on 1.5 s clips
    assert config["operating_point"] and "operating_point_skipped" not in config, config.get("operating_point_skipped")
    assert config["int8"]["calibration_clips"] > 0, config.get("int8_skipped")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, N15)).astype(np.float32)
    assert sess.run(None, {ONNX_INPUT: x})[0].shape == (5, len(WORDS))
    bundle = load(out)
    assert bundle.clip_samples == N15 and bundle.preprocess(np.zeros(SR, np.int16)).shape == (1, N15)
    s = evaluate(bundle, prepared15, tmp_path / "eval")  # the test split's 1.5 s clips, as training validated
    assert s["n_clips"] == sum(json.loads((prepared15 / MANIFEST).read_text())["counts"]["test"].values()) == 6
    root = json.loads((prepared15 / MANIFEST).read_text())["source"]
    one = prepare(root, tmp_path / "p1", workers=1, progress=False)  # the same source at 1 s
    with pytest.raises(DatasetError, match="window of 1 s .* not 1.5 s"):  # a 1 s folder for a 1.5 s bundle
        evaluate(bundle, tmp_path / "p1", tmp_path / "eval1")
    assert one["clip_samples"] == SR

    rec = tmp_path / "rec.wav"
    _write(rec, np.concatenate([_word(f, i, 1.5) for i, f in enumerate(WORDS.values())] * 2))  # 9 s
    p = subprocess.run([sys.executable, "-m", "audionet_ray.predict", str(out), str(rec), "--format", "json",
                        "--stride-ms", "500"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)["files"][0]
    starts = [w["start_s"] for w in r["windows"]]
    assert r["window_s"] == 1.5 and starts == pytest.approx([0.5 * i for i in range(16)])  # the last at 9 - 1.5
    text = subprocess.run([sys.executable, "-m", "audionet_ray.predict", str(out), str(rec), "--stride-ms", "2000"],
                          capture_output=True, text=True, timeout=300)
    assert text.returncode == 2 and text.stderr.startswith("error: --stride-ms must be from 10 to 1500 (the 1.5-second")



def test_export_onnx_takes_the_models_window(tmp_path):
    """Without training: the graph's input is [batch, 24000], it runs on it and its latency is timed on it."""
    import onnxruntime as ort

    from audionet_ray.deploy.export import ONNX_INPUT, export_onnx, onnx_latency_ms

    model = AudioNet(3, width=8, dense=16, pool="avg", clip_samples=N15).eval()
    info = export_onnx(model, tmp_path / "m.onnx")
    assert info["input_shape"] == ["batch", N15] and info["max_abs_diff_vs_torch"] < 1e-4
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {ONNX_INPUT: np.zeros((4, N15), np.float32)})[0].shape == (4, 3)
    assert onnx_latency_ms(tmp_path / "m.onnx", runs=2, warmup=1)["median_ms"] > 0
