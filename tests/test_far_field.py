"""The far-field recorder: layout and lists as the source's, byte-identical for a seed whatever the
number of processes, other seeds other audio, each split its own rooms and noise stretches, babble
from other speakers of the same split, clips that are degraded but still speech, one-line errors.
Real espeak-ng speech, real rooms (pyroomacoustics), real files and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audionet_ray import far_field as ff
from audionet_ray import speech_data as sd
from audionet_ray.corpus.rooms import mic_curve, random_mic, room_bank

REPO_ROOT = Path(__file__).resolve().parents[1]
# 16 speakers: 2 validation and 2 test speakers, so every split has babble from another speaker
CLEAN = sd.SpeechConfig(speakers=16, takes=1, words=("yes", "no"), seed=5, other_words=1)
ROOMS = 4  # per split: a few seconds of simulation rather than 15
OWN = {ff.MANIFEST, ff.CLIPS_TABLE}  # what far_field adds at the root


def _read(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _table(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / ff.CLIPS_TABLE).read_text().splitlines()]


def _lists(root: Path) -> dict[str, set[str]]:
    return {n: set((root / f"{n}_list.txt").read_text().split()) for n in ("validation", "testing")}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sd.generate(tmp_path_factory.mktemp("clean") / "data", CLEAN, jobs=2, progress=False)


@pytest.fixture(scope="module")
def far(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CLEAN's far-field copy, seed 1, by two processes."""
    out = tmp_path_factory.mktemp("far") / "data"
    assert ff.far_field(clean, out, seed=1, progress=False, jobs=2, rooms=ROOMS) == out
    return out


def test_layout_and_lists_are_the_sources(clean: Path, far: Path) -> None:
    src, out = _files(clean), _files(far)
    assert set(out) - OWN == set(src) - {sd.MARKER}
    for name in ("validation_list.txt", "testing_list.txt"):
        assert out[name] == src[name]
    assert all(out[k] == v for k, v in src.items() if k.startswith("_background_noise_/"))
    assert out["README.txt"].startswith(src["README.txt"]) and b"Far-field copy" in out["README.txt"]
    manifest = json.loads(out[ff.MANIFEST])
    assert manifest["complete"] and manifest["seed"] == 1 and manifest["source_config"] == CLEAN.to_dict()
    assert manifest["source"] == str(clean.resolve())
    table = _table(far)
    clips = sorted(k for k in src if k.endswith(".wav") and not k.startswith("_background_noise_/"))
    assert [t["path"] for t in table] == clips  # every clip once, in order, _unknown_/ included
    lists = _lists(clean)
    for t in table:
        want = "validation" if t["path"] in lists["validation"] else "testing" if t["path"] in lists["testing"] else "train"
        assert t["split"] == want, t
    assert {s: m["clips"] for s, m in manifest["splits"].items()} == {
        s: sum(t["split"] == s for t in table) for s in ff.SPLITS}


def test_same_bytes_whatever_the_number_of_processes(clean: Path, far: Path, tmp_path: Path) -> None:
    one = ff.far_field(clean, tmp_path / "one", seed=1, progress=False, jobs=1, rooms=ROOMS)
    assert _files(one) == _files(far)


def test_another_seed_other_rooms_babble_and_noise(clean: Path, far: Path, tmp_path: Path) -> None:
    other = ff.far_field(clean, tmp_path / "other", seed=2, progress=False, jobs=2, rooms=ROOMS)
    a, b = _files(far), _files(other)
    clips = [k for k in a if k.endswith(".wav") and not k.startswith("_background_noise_/")]
    assert sum(a[k] != b[k] for k in clips) == len(clips)
    seeds = [json.loads(x[ff.MANIFEST])["splits"]["train"]["room_bank_seed"] for x in (a, b)]
    assert seeds[0] != seeds[1]
    assert _table(far) != _table(other)


def test_each_split_has_rooms_of_its_own(far: Path) -> None:
    splits = json.loads((far / ff.MANIFEST).read_text())["splits"]
    seeds = {s: m["room_bank_seed"] for s, m in splits.items()}
    assert len(set(seeds.values())) == 3 and seeds["testing"] == ff.bank_seed(1, "testing")
    banks = {s: room_bank(seed, ROOMS, ff.RT60_MAX) for s, seed in seeds.items()}
    for s in ("train", "validation"):  # no test room is a training or validation room
        gap = np.abs(banks["testing"][:, None, :] - banks[s][None, :, :]).max(axis=2)
        assert gap.min() > 0.01, (s, gap.min())
    used = {s: {t["room"] for t in _table(far) if t["split"] == s} for s in ff.SPLITS}
    assert all(r and r <= set(range(ROOMS)) for r in used.values()), used


def test_babble_is_other_speakers_of_the_same_split(far: Path) -> None:
    table = _table(far)
    split = {t["path"]: t["split"] for t in table}
    with_babble = {s: 0 for s in ff.SPLITS}
    for t in table:
        speaker = Path(t["path"]).name.split("_nohash_")[0]
        assert 0 <= len(t["babble"]) <= ff.BABBLE_CLIPS[1]
        for b in t["babble"]:
            assert split[b] == t["split"] and Path(b).name.split("_nohash_")[0] != speaker, (t, b)
        if t["babble"]:
            with_babble[t["split"]] += 1
            assert ff.BABBLE_SNR_DB[0] <= t["babble_snr_db"] <= ff.BABBLE_SNR_DB[1]
        if t["babble"]:  # babble or noise, never both
            assert t["noise"] is None and t["noise_snr_db"] is None
        else:
            assert ff.NOISE_SNR_DB[0] <= t["noise_snr_db"] <= ff.NOISE_SNR_DB[1]
        assert t["channel"] in ("telephone", "microphone")
    assert all(with_babble.values()), with_babble


def test_noise_of_each_split_comes_from_its_own_stretch(far: Path) -> None:
    lengths = {}
    for p in (far / "_background_noise_").iterdir():
        lengths[f"_background_noise_/{p.name}"] = len(_read(p)[0]) / 16_000
    kinds = set()
    for t in _table(far):
        if t["noise"] is None:  # babble instead
            continue
        if "@" in t["noise"]:
            name, at = t["noise"].split("@")
            lo, hi = ff.NOISE_STRETCH[t["split"]]
            start = float(at.rstrip("s"))
            assert lo * lengths[name] - 1e-3 <= start and start + 1 <= hi * lengths[name] + 1e-3, t
            kinds.add("file")
        else:
            kinds.add(t["noise"])
    assert "file" in kinds and kinds - {"file"} <= set(ff.COLOURS) and len(kinds) >= 3, kinds


def test_clips_are_degraded_but_still_speech(clean: Path, far: Path) -> None:
    table = {t["path"]: t for t in _table(far)}
    envelope_r = []
    for rel, t in table.items():
        x, rate = _read(far / rel)
        y, _ = _read(clean / rel)
        assert rate == 16_000 and len(x) == len(y) == 16_000 and x.dtype == np.int16
        assert not np.array_equal(x, y)
        peak = np.abs(x.astype(np.float64)).max()
        assert np.mean(np.abs(x) >= 32767) < 0.001  # not clipped
        assert abs(20 * np.log10(peak / 32768) - t["peak_dbfs"]) < 0.05  # the recorded level
        assert ff.PEAK_DBFS[0] - 0.01 <= t["peak_dbfs"] <= ff.PEAK_DBFS[1] + 0.01
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.99  # not the clean waveform
        env = [np.sqrt((z.astype(np.float64).reshape(50, 320) ** 2).mean(axis=1)) for z in (x, y)]
        envelope_r.append(np.corrcoef(*env)[0, 1])
    assert np.median(envelope_r) > 0.6, sorted(envelope_r)  # the word is still where it was


def test_the_recorded_channel_is_random_mics(far: Path) -> None:
    """far_field names a channel from random_mic's first draw: a telephone cuts 7 kHz by far more
    than any microphone does. If rooms.random_mic changes its draws, this fails."""
    freqs = np.array([1000.0, 7000.0])
    for s in range(300):
        telephone = np.random.default_rng(s).random() < ff.TELEPHONE_SHARE
        h = random_mic(np.random.default_rng(s), freqs)
        assert (20 * np.log10(h[1]) < -38) == telephone, (s, 20 * np.log10(h))
    assert {t["channel"] for t in _table(far)} == {"telephone", "microphone"}


def test_speech_data_mic_response_is_rooms_mic_curve() -> None:
    spk = sd.make_speaker(0, 3, ["m1"])
    want = mic_curve(sd._FREQS, spk.highpass_hz, spk.lowpass_hz, spk.tilt_db, spk.presence_db, spk.presence_hz)
    assert np.array_equal(sd.mic_response(spk), want)


@pytest.fixture(scope="module")
def tiny(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six clips of CLEAN, without lists: the speaker-hash rule splits them."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    for rel in sorted(p.relative_to(clean) for p in clean.glob("yes/*.wav"))[:6]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((clean / rel).read_bytes())
    return root


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**40))
def test_any_seed_gives_a_valid_repeatable_copy(tiny: Path, tmp_path_factory: pytest.TempPathFactory,
                                                seed: int) -> None:
    base = tmp_path_factory.mktemp("any")
    a = ff.far_field(tiny, base / "a", seed=seed, progress=False, jobs=1, rooms=2)
    b = ff.far_field(tiny, base / "b", seed=seed, progress=False, jobs=2, rooms=2)
    assert _files(a) == _files(b)
    manifest = json.loads((a / ff.MANIFEST).read_text())
    assert manifest["split_rule"] == "speaker hash (discover)" and manifest["clips"] == 6
    for t in _table(a):
        x, _ = _read(a / t["path"])
        assert len(x) == 16_000 and 0 < np.abs(x).max() < 32767 and t["room"] in (0, 1)


def test_the_hash_rule_puts_test_speakers_in_testing(tiny: Path, tmp_path: Path) -> None:
    from audionet_ray.corpus.discover import discover

    test = {it.path for it in discover(tiny).items if it.split == "test"}
    split = {p: s for p, (_, s) in ff.find_source(tiny).clips.items()}
    assert {p for p, s in split.items() if s == "testing"} == test
    assert set(split.values()) <= {"train", "testing"}


def _run(module: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=600)


def test_cli_is_the_function(clean: Path, far: Path, tmp_path: Path) -> None:
    r = _run("audionet_ray.corpus.far_field", [str(clean), str(tmp_path / "cli"), "--seed", "1", "--rooms", str(ROOMS),
                                        "--quiet"])
    assert r.returncode == 0, r.stderr
    assert "far_field:" in r.stdout and _files(tmp_path / "cli") == _files(far)
    r = _run("audionet_ray.corpus.far_field", [str(clean), str(tmp_path / "cli"), "--seed", "1", "--rooms", str(ROOMS),
                                        "--quiet"])  # its own folder: replaced
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case, says", [
    ("no clips", "no .wav or .flac clips"),
    ("missing", "does not exist"),
    ("foreign out", "not empty and was not made by far_field"),
    ("out in src", "overlap"),
    ("rooms", "--rooms must be at least 1"),
])
def test_bad_input_is_one_line(clean: Path, tmp_path: Path, case: str, says: str) -> None:
    src, out, extra = clean, tmp_path / "out", []
    if case == "no clips":
        src = tmp_path / "empty"
        (src / "yes").mkdir(parents=True)
        (src / "yes" / "notes.txt").write_text("no audio here")
    elif case == "missing":
        src = tmp_path / "nothing"
    elif case == "foreign out":
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    elif case == "out in src":
        out = clean / "far"
    else:
        extra = ["--rooms", "0"]
    with pytest.raises(ff.FarFieldError, match=says):
        ff.far_field(src, out, progress=False, rooms=int(extra[1]) if extra else ROOMS)
    r = _run("audionet_ray.corpus.far_field", [str(src), str(out), "--quiet", *extra])
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    if case == "foreign out":
        assert (out / "mine.txt").read_text() == "keep me" and sorted(os.listdir(out)) == ["mine.txt"]
    assert not (clean / "far").exists()


def test_speech_data_far_field_writes_both(tmp_path: Path) -> None:
    out = tmp_path / "set"
    args = [str(out), "--speakers", "3", "--words", "go", "--quiet", "--far-field"]
    r = _run("audionet_ray.corpus.speech_data", args)
    assert r.returncode == 0, r.stderr
    assert f"clean: {out}.clean" in r.stdout
    assert sd.generated_with(ff.clean_path(out)) == sd.SpeechConfig(speakers=3, words=("go",)).to_dict()
    assert json.loads((out / ff.MANIFEST).read_text())["source"] == str(ff.clean_path(out).resolve())
    assert len(list((out / "go").glob("*.wav"))) == 3
    first, made = _files(out), [p.stat().st_mtime_ns for p in sorted(ff.clean_path(out).rglob("*.wav"))]
    r = _run("audionet_ray.corpus.speech_data", args)  # again: the clean set is reused, the copy the same
    assert r.returncode == 0, r.stderr
    assert _files(out) == first
    assert [p.stat().st_mtime_ns for p in sorted(ff.clean_path(out).rglob("*.wav"))] == made


def test_speech_data_far_field_refuses_a_foreign_out_before_speaking(tmp_path: Path) -> None:
    out = tmp_path / "set"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    r = _run("audionet_ray.corpus.speech_data", [str(out), "--speakers", "3", "--words", "go", "--quiet", "--far-field"])
    assert r.returncode == 2 and "not made by far_field" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not ff.clean_path(out).exists()


def test_far35_preset_is_speech_commands_35_words() -> None:
    cfg = sd.PRESETS["far35"]
    assert (cfg.speakers, cfg.takes, cfg.seed, cfg.other_words) == (200, 1, 3, 0)
    assert len(cfg.words) == len(set(cfg.words)) == 35 and {"marvin", "sheila", "visual", "learn"} <= set(cfg.words)
    sd._check_words(cfg.words)
    eng = sd.Espeak()
    for w in ("marvin", "sheila"):  # names espeak-ng speaks as words
        assert len(eng.say(w + ".", "en-us+m1", 175, 50, 50, seed=1)) > 0.25 * eng.sample_rate


def test_unlisted_clips_of_a_test_speaker_are_test_clips(clean: Path, tmp_path: Path) -> None:
    """A hand-made testing_list.txt that names only the words' clips: the test speakers' _unknown_/
    clips are still recorded in test rooms (discover holds them out of training too)."""
    import shutil

    root = shutil.copytree(clean, tmp_path / "data")
    listed = (root / "testing_list.txt").read_text().split()
    (root / "testing_list.txt").write_text("".join(f"{e}\n" for e in listed if not e.startswith("_unknown_/")))
    split = {p: s for p, (_, s) in ff.find_source(root).clips.items()}
    unknown_of_test = [e for e in listed if e.startswith("_unknown_/")]
    assert unknown_of_test and all(split[e] == "testing" for e in unknown_of_test)
    assert {p for p, s in split.items() if s == "testing"} == set(listed)
