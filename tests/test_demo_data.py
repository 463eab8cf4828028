"""Tests for the synthetic Speech-Commands-style demo dataset."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audionet_ray import demo_data

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME_RE = re.compile(r"^[0-9a-f]{8}_nohash_\d+\.wav$")
SPEAKERS = 6
CLIPS = 3


def _wav_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.wav"))


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _split_of(root: Path) -> dict[str, set[str]]:
    """Speaker ids per split, as a loader would infer them from the list files."""
    held = {name: (root / f"{name}_list.txt").read_text().split() for name in ("validation", "testing")}
    all_clips = [f"{p.parent.name}/{p.name}" for p in root.glob("*/*.wav") if p.parent.name != "_background_noise_"]
    listed = set(held["validation"]) | set(held["testing"])
    spk = lambda rel: rel.split("/")[1].split("_")[0]  # noqa: E731
    return {
        "train": {spk(r) for r in all_clips if r not in listed},
        "validation": {spk(r) for r in held["validation"]},
        "testing": {spk(r) for r in held["testing"]},
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    assert demo_data.generate(out, speakers=SPEAKERS, seed=0, clips_per_speaker=CLIPS) == out
    return out


def test_layout(dataset: Path) -> None:
    dirs = sorted(p.name for p in dataset.iterdir() if p.is_dir())
    assert dirs == sorted([*demo_data.CLASSES, "_background_noise_"])
    assert 8 <= len(demo_data.CLASSES) <= 12
    for word in demo_data.CLASSES:
        names = sorted(p.name for p in (dataset / word).iterdir())
        assert len(names) == SPEAKERS * CLIPS
        assert all(NAME_RE.match(n) for n in names), names
        assert {n.split("_")[-1] for n in names} == {f"{k}.wav" for k in range(CLIPS)}
    bg = sorted((dataset / "_background_noise_").glob("*.wav"))
    assert 3 <= len(bg) <= 4
    for p in bg:
        with wave.open(str(p)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            assert 10 <= w.getnframes() / 16000 <= 20
    assert (dataset / "validation_list.txt").is_file()
    assert (dataset / "testing_list.txt").is_file()
    assert "synthetic" in (dataset / "README.txt").read_text().lower()


def test_speaker_ids_are_consistent_per_class(dataset: Path) -> None:
    speakers = {word: {p.name.split("_")[0] for p in (dataset / word).glob("*.wav")} for word in demo_data.CLASSES}
    first = speakers[demo_data.CLASSES[0]]
    assert len(first) == SPEAKERS
    assert all(s == first for s in speakers.values())


def test_sample_format(dataset: Path) -> None:
    clips = [p for p in dataset.glob("*/*.wav") if p.parent.name != "_background_noise_"]
    for p in clips[::7]:
        with wave.open(str(p)) as w:
            assert w.getframerate() == 16000
            assert w.getnchannels() == 1
            assert w.getsampwidth() == 2
            assert w.getcomptype() == "NONE"
            assert w.getnframes() == 16000
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
        data, sr = sf.read(str(p), dtype="int16")
        assert sr == 16000 and data.shape == (16000,)
        np.testing.assert_array_equal(data, _read(p))


def test_clips_not_silent_and_not_clipped(dataset: Path) -> None:
    ratios = []
    for p in dataset.glob("*/*.wav"):
        x = _read(p).astype(np.int32)
        assert np.abs(x).max() > 2000, p
        assert np.sqrt(np.mean(x.astype(float) ** 2)) > 100, p
        assert np.mean(np.abs(x) >= 32767) < 0.001, p
        if p.parent.name != "_background_noise_":
            # A word in noise, not stationary noise: the loudest 100 ms stands out from the quietest.
            frames = np.sqrt(np.mean(x[:16000].reshape(10, 1600).astype(float) ** 2, axis=1))
            ratios.append(frames.max() / frames.min())
    assert min(ratios) > 1.4
    assert np.median(ratios) > 4


def test_lists_are_sorted_exist_and_speaker_disjoint(dataset: Path) -> None:
    for name in ("validation", "testing"):
        lines = (dataset / f"{name}_list.txt").read_text().splitlines()
        assert lines, name
        assert lines == sorted(lines)
        for line in lines:
            assert "\\" not in line
            word, fname = line.split("/")
            assert word in demo_data.CLASSES and NAME_RE.match(fname)
            assert (dataset / line).is_file(), line
    split = _split_of(dataset)
    assert all(split.values())
    assert not split["train"] & split["validation"]
    assert not split["train"] & split["testing"]
    assert not split["validation"] & split["testing"]
    # A held-out speaker is held out with every clip of every word.
    n_val = len((dataset / "validation_list.txt").read_text().splitlines())
    assert n_val == len(split["validation"]) * len(demo_data.CLASSES) * CLIPS


def test_split_fractions() -> None:
    ids = demo_data.speaker_ids(40, seed=3)
    assert len(set(ids)) == 40 and all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids)
    split = demo_data.split_speakers(ids, seed=3)
    counts = {k: list(split.values()).count(k) for k in ("train", "validation", "testing")}
    assert counts == {"train": 32, "validation": 4, "testing": 4}
    with pytest.raises(ValueError):
        demo_data.split_speakers(ids[:2], seed=3)


def test_deterministic(dataset: Path, tmp_path: Path) -> None:
    again = demo_data.generate(tmp_path / "again", speakers=SPEAKERS, seed=0, clips_per_speaker=CLIPS)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_clips_do_not_depend_on_dataset_size(dataset: Path, tmp_path: Path) -> None:
    """Per-clip seeds: the first speakers' clips are the same in a smaller run."""
    small = demo_data.generate(tmp_path / "small", speakers=3, seed=0, clips_per_speaker=1)
    rels = [r for r in _wav_files(small) if r.parts[0] != "_background_noise_"]
    assert len(rels) == 3 * len(demo_data.CLASSES)
    for rel in rels:
        assert (small / rel).read_bytes() == (dataset / rel).read_bytes(), rel


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    other = demo_data.generate(tmp_path / "other", speakers=3, seed=1, clips_per_speaker=1)
    ids0 = {p.name.split("_")[0] for p in (dataset / "yes").glob("*.wav")}
    ids1 = {p.name.split("_")[0] for p in (other / "yes").glob("*.wav")}
    assert not ids0 & ids1
    for name in demo_data.BACKGROUND_KINDS:
        rel = Path("_background_noise_") / f"{name}.wav"
        assert (dataset / rel).read_bytes() != (other / rel).read_bytes()


def _features(x: np.ndarray) -> np.ndarray:
    """Log band energies of a 0.4 s window around the loudest part, pooled into 4 time chunks."""
    frames = x[:15872].reshape(-1, 128).astype(float)
    frames = np.concatenate([frames[:-1], frames[1:]], axis=1) * np.hanning(256)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(256, 1 / 16000)
    edges = np.geomspace(250, 8001, 17)
    bands = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:])]).astype(float)
    width = 48
    energy = np.convolve(power.sum(axis=1), np.ones(width), mode="same")
    start = int(np.clip(np.argmax(energy) - width // 2, 0, len(power) - width))
    logspec = np.log(power[start : start + width] @ (bands / bands.sum(1, keepdims=True)).T + 1e-3)
    logspec -= logspec.mean()
    return logspec.reshape(4, -1, logspec.shape[1]).mean(axis=1).ravel()


def test_learnable_but_not_trivial(dataset: Path) -> None:
    """Nearest class mean on held-out speakers: well above chance, clearly below perfect."""
    split = _split_of(dataset)
    X, y, train = [], [], []
    for c, word in enumerate(demo_data.CLASSES):
        for p in sorted((dataset / word).glob("*.wav")):
            X.append(_features(_read(p)))
            y.append(c)
            train.append(p.name.split("_")[0] in split["train"])
    X, y, train = np.array(X), np.array(y), np.array(train)
    means = np.stack([X[train & (y == c)].mean(axis=0) for c in range(len(demo_data.CLASSES))])
    pred = np.argmin(((X[~train, None, :] - means[None]) ** 2).sum(axis=-1), axis=1)
    acc = float(np.mean(pred == y[~train]))
    chance = 1 / len(demo_data.CLASSES)
    assert acc > chance + 0.25, acc
    assert acc < 0.95, acc


def test_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, "-m", "audionet_ray.demo_data", str(out), "--speakers", "4"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and "10 classes" in lines[0] and "120 clips" in lines[0], res.stdout
    assert len(list(out.glob("*/*_nohash_2.wav"))) == 4 * len(demo_data.CLASSES)
    assert (out / "validation_list.txt").read_text() and (out / "testing_list.txt").read_text()

    bad = subprocess.run(
        [sys.executable, "-m", "audionet_ray.demo_data", str(tmp_path / "bad"), "--speakers", "2"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode != 0
