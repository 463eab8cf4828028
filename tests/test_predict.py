"""predict on long recordings: streamed from disk a block at a time, with the whole-file result.

The bundle is a small untrained AudioNet exported for real (no data: no int8, no calibration);
its answers are arbitrary but deterministic, which is all a comparison of two ways of computing
them needs. The recordings are real WAV and FLAC files of a few minutes written here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audionet_ray.corpus.audio import iter_audio, read_audio
from audionet_ray.detection.bundle import load
from audionet_ray.detection.predict import scan, scan_batch, scan_blocks, scan_whole_file

SR = 16_000
CLASSES = ["_silence_", "_unknown_", "yes", "no", "up", "down"]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle of a small random AudioNet (written by export from a real checkpoint)."""
    from audionet_ray.training.checkpoint import save as save_checkpoint
    from audionet_ray.training.config import TrainConfig
    from audionet_ray.deploy.export import export
    from audionet_ray.modeling.model import AudioNet, ModelConfig

    cfg = TrainConfig.from_dict(dict(epochs=1, width=8, dense=16, seed=0))
    model_cfg = ModelConfig(len(CLASSES), cfg.model.width, cfg.model.dense, cfg.model.dropout)
    torch.manual_seed(0)
    model = AudioNet.from_config(model_cfg).eval()
    ckpt = tmp_path_factory.mktemp("ckpt") / "checkpoint_000001"
    ckpt.mkdir()
    save_checkpoint(ckpt, model, torch.optim.SGD(model.parameters(), lr=0.1), 1, cfg, model_cfg, CLASSES,
                    {"val_accuracy": 0.0})
    return export(ckpt, tmp_path_factory.mktemp("export") / "bundle", calibrate_fa=None, int8=False)


def _recording(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Noise whose level and colour change every half second, with silent stretches: windows that
    differ, some quiet (below QUIET_DBFS)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    x = rng.standard_normal((n, channels)).astype(np.float32)
    x = np.cumsum(x, axis=0) * 0.02 - np.cumsum(x, axis=0).mean(axis=0) * 0.02 + x * 0.3  # some low end
    level = np.repeat(rng.uniform(0.0, 0.3, n // (sr // 2) + 1), sr // 2)[:n, None]
    level[level < 0.05] = 0.0  # digital silence
    return np.clip(x / max(np.abs(x).max(), 1e-9) * level * 3, -1, 1).astype(np.float32)


def _same(w, ref) -> None:
    assert w.starts_s == ref.starts_s
    assert w.labels == ref.labels
    np.testing.assert_array_equal(w.probs, ref.probs)
    np.testing.assert_array_equal(w.loud, ref.loud)
    assert w.duration_s == ref.duration_s
    assert w.keyword_labels == ref.keyword_labels and ref.keyword_labels is not None
    np.testing.assert_array_equal(w.keyword_probs, ref.keyword_probs)


@pytest.mark.parametrize("stride_ms,average_ms", [(250, 500), pytest.param(200, 0, marks=pytest.mark.slow),
                                                pytest.param(500, 3000, marks=pytest.mark.slow)])
def test_streamed_scan_of_a_file_equals_the_whole_file_scan(tiny_bundle, tmp_path, stride_ms, average_ms):
    b = load(tiny_bundle)
    f = tmp_path / "long.wav"
    sf.write(f, _recording(150.3, SR), SR, subtype="PCM_16")  # 2.5 min; the tail is not on the stride grid
    audio = read_audio(f)
    ref = scan_whole_file(b, audio, stride_ms, average_ms)
    assert len(ref.labels) > scan_batch(b) and 0 < ref.loud.sum() < len(ref.loud)  # more than one model batch; loud and quiet
    assert len(set(ref.labels)) > 1  # the random model does not say the same everywhere
    for block_frames in (3_000, 65_536):  # blocks shorter than a window, and the default
        _same(scan_blocks(b, iter_audio(f, SR, block_frames), stride_ms, average_ms), ref)
    _same(scan(b, audio, stride_ms, average_ms), ref)  # evaluate --streaming's in-memory path


def test_streamed_resampling_and_mixdown_equal_the_whole_file(tiny_bundle, tmp_path):
    b = load(tiny_bundle)
    f = tmp_path / "long_44k_stereo.flac"
    sf.write(f, _recording(35.7, 44_100, channels=2, seed=1), 44_100, subtype="PCM_24")
    audio = read_audio(f)  # soxr one-shot over the whole file
    streamed = np.concatenate(list(iter_audio(f, SR, 10_000)))  # soxr's stream resampler, block by block
    np.testing.assert_allclose(streamed, audio, rtol=0, atol=1e-6)
    assert len(streamed) == len(audio)
    ref = scan_whole_file(b, audio, 250, 500)
    w = scan_blocks(b, iter_audio(f, SR, 10_000), 250, 500)
    assert w.starts_s == ref.starts_s and w.labels == ref.labels
    np.testing.assert_allclose(w.probs, ref.probs, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(w.loud, ref.loud)


def test_predict_cli_on_a_long_file_matches_the_whole_file_scan(tiny_bundle, tmp_path):
    b = load(tiny_bundle)
    f = tmp_path / "rec.wav"
    sf.write(f, _recording(30.0, SR, seed=2), SR, subtype="PCM_16")
    p = _run("audionet_ray.detection.predict", str(tiny_bundle), str(f), "--format", "json", "--stride-ms", "200")
    assert p.returncode == 0, p.stderr
    (r,) = json.loads(p.stdout)["files"]
    ref = scan_whole_file(b, read_audio(f), 200, 500)
    assert r["duration_s"] == 30.0
    assert [x["start_s"] for x in r["windows"]] == [round(s, 4) for s in ref.starts_s]
    assert [x["label"] for x in r["windows"]] == ref.labels
    assert [x["prob"] for x in r["windows"]] == [float(p) for p in ref.probs]
    assert [x["quiet"] for x in r["windows"]] == [not q for q in ref.loud]


def test_a_one_second_clip_still_gets_top_k(tiny_bundle, tmp_path):
    f = tmp_path / "clip.wav"
    clip = _recording(1.0, 22_050, seed=3)
    clip[:] = np.sin(np.arange(len(clip)) * 0.05)[:, None] * 0.3  # loud throughout
    sf.write(f, clip, 22_050)
    p = _run("audionet_ray.detection.predict", str(tiny_bundle), str(f), "--format", "json", "--top-k", "2")
    assert p.returncode == 0, p.stderr
    (r,) = json.loads(p.stdout)["files"]
    probs = load(tiny_bundle).predict_proba(read_audio(f))[0]
    assert r["duration_s"] == pytest.approx(1.0, abs=1e-3)
    assert [t["label"] for t in r["top_k"]] == [CLASSES[i] for i in np.argsort(-probs)[:2]]
    assert [t["prob"] for t in r["top_k"]] == [float(probs[i]) for i in np.argsort(-probs)[:2]]


@pytest.mark.parametrize("stride", ["0.001", "-250", "1001", "nan"])
def test_a_stride_out_of_range_is_one_line(tiny_bundle, tmp_path, stride):
    f = tmp_path / "rec.wav"
    sf.write(f, _recording(3.0, SR), SR)
    p = _run("audionet_ray.detection.predict", str(tiny_bundle), str(f), f"--stride-ms={stride}")
    assert p.returncode == 2 and p.stdout == "", p.stderr
    assert p.stderr.startswith("error: --stride-ms must be from 10 to 1000") and p.stderr.count("\n") == 1, p.stderr


def test_a_file_cut_short_or_empty_mid_stream_is_one_error_line(tiny_bundle, tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, _recording(5.0, SR), SR, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    silent = tmp_path / "none.wav"
    sf.write(silent, np.zeros((0, 1), np.float32), SR)
    p = _run("audionet_ray.detection.predict", str(tiny_bundle), str(good), str(cut), str(silent))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    errors = p.stderr.strip().splitlines()
    assert len(errors) == 2 and "cut.wav: truncated WAV" in errors[0] and "none.wav: no audio frames" in errors[1], errors
    assert p.stdout.startswith(f"{good}: 5.00 s, ")
