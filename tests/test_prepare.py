"""Preparation on real files: bit-exact round trip, every kind of bad input, the cache, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from audionet_ray.corpus.discover import SILENCE, UNKNOWN, DatasetError, unescape_path
from audionet_ray.corpus.prepare import PrepareOptions, load_manifest, pcm_from_binary, prepare, summary_line

SR = 16_000


def tone(seconds: float, sr: int = SR, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise16(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 4000).clip(-32768, 32767).astype(np.int16)


def write(path: Path, data, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(os.fsencode(path), data, sr, subtype=subtype)  # bytes: any name, UTF-8 or not
    return path


def prepared_rows(out: Path) -> dict[str, np.ndarray]:
    """path -> int16 clip, for every row of every shard."""
    rows = {}
    for shard in load_manifest(out)["shards"]:
        t = pq.read_table(out / shard, columns=["path", "pcm"])
        for p, clip in zip(t.column("path").to_pylist(), pcm_from_binary(t.column("pcm"))):
            rows[p] = clip
    return rows


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audionet_ray.data", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ----------------------------------------------------------------------------- round trip

def test_parquet_round_trip_is_bit_exact(demo_root, prepared_demo):
    rows = prepared_rows(prepared_demo)
    assert len(rows) == len(list(demo_root.glob("[!_]*/*.wav")))
    for rel, clip in rows.items():
        wav, sr = sf.read(demo_root / rel, dtype="int16")
        assert sr == SR and clip.dtype == np.int16 and np.array_equal(clip, wav), rel


def test_manifest_describes_the_data(demo_root, prepared_demo):
    m = load_manifest(prepared_demo)
    assert m["classes"] == sorted(p.name for p in demo_root.iterdir() if p.is_dir() and p.name[0] != "_")
    assert m["n_clips"] == sum(sum(c.values()) for c in m["counts"].values()) == len(prepared_rows(prepared_demo))
    assert m["skipped"] == [] and m["source"] == str(demo_root)
    assert m["noise_samples"] == len(np.load(prepared_demo / "noise.npy"))
    # shards mix classes: rows were shuffled before writing
    t = pq.read_table(prepared_demo / m["split_shards"]["trainval"][0], columns=["label"])
    assert len(set(t.column("label").to_pylist()[:40])) > 3


def test_words_unknown_silence_are_prepared(demo_root, tmp_path):
    m = prepare(demo_root, tmp_path / "p", PrepareOptions(["yes", "no"], unknown=True, silence=True),
                workers=1, progress=False)
    assert m["classes"] == ["no", "yes", UNKNOWN, SILENCE]
    total = {c: m["counts"]["trainval"].get(c, 0) + m["counts"]["test"].get(c, 0) for c in m["classes"]}
    assert total[UNKNOWN] == 8 * total["yes"] and total[SILENCE] > 0
    labels = set()
    for shard in m["shards"]:
        labels |= set(pq.read_table(tmp_path / "p" / shard, columns=["label"]).column("label").to_pylist())
    assert labels == {0, 1, 2, 3}


@pytest.fixture(scope="module")
def speech_with_other_words(tmp_path_factory) -> Path:
    """espeak-ng speech: yes and no, 3 speakers x 10 takes (20 trainval clips: a keyword's minimum),
    and 3 other words per speaker in _unknown_/."""
    from audionet_ray.corpus.speech_data import SpeechConfig, generate

    cfg = SpeechConfig(speakers=3, takes=10, words=("yes", "no"), seed=4, other_words=3)
    return generate(tmp_path_factory.mktemp("kws") / "data", cfg, jobs=1, progress=False)


def test_a_keyword_task_takes_the_other_words_as_unknown(speech_with_other_words, tmp_path):
    from audionet_ray.corpus.discover import discover, speaker_of

    root = speech_with_other_words
    other = sorted(f"_unknown_/{p.name}" for p in (root / "_unknown_").iterdir())
    assert len(other) == 9
    m = prepare(root, tmp_path / "p", PrepareOptions(["yes"], unknown=True, silence=True), workers=1, progress=False)
    assert m["classes"] == ["yes", UNKNOWN, SILENCE] and m["skipped"] == []
    total = {c: m["counts"]["trainval"].get(c, 0) + m["counts"]["test"].get(c, 0) for c in m["classes"]}
    assert total["yes"] == 30 and total[UNKNOWN] == 30 + 9  # the word "no" and every other word
    rows = prepared_rows(tmp_path / "p")
    assert set(other) <= set(rows)
    found = discover(root, ["yes"], unknown=True, silence=True)
    testing = set((root / "testing_list.txt").read_text().split())
    by_path = {it.path: it for it in found.items}
    for rel in other:
        it = by_path[rel]
        assert found.classes[it.label] == UNKNOWN and it.speaker == speaker_of(rel)
        assert (it.split == "test") == (rel in testing)
    # a speaker's other words fall on the side of the split of the speaker's keyword clips
    split_of = {it.speaker: it.split for it in found.items if not it.path.startswith("_unknown_/")}
    assert all(it.split == split_of[it.speaker] for it in found.items)
    assert {it.split for it in found.items if it.path in other} == {"test", "trainval"}


def test_a_classifier_ignores_the_other_words(speech_with_other_words, tmp_path):
    root = speech_with_other_words
    m = prepare(root, tmp_path / "all", workers=1, progress=False)
    assert m["classes"] == ["no", "yes"] and m["n_clips"] == 60
    assert not [p for p in prepared_rows(tmp_path / "all") if p.startswith("_unknown_")]
    only = prepare(root, tmp_path / "yes", PrepareOptions(["yes"], silence=True), workers=1, progress=False)
    assert only["classes"] == ["yes", SILENCE]
    assert {p.split("/")[0] for p in prepared_rows(tmp_path / "yes")} == {"yes", SILENCE}


# ----------------------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, dict]:
    """A dataset with every kind of bad or unusual file, and what each should become."""
    root = tmp_path_factory.mktemp("messy") / "data"
    src = {}
    for i, word in enumerate(("yes", "no")):
        for k in range(3):
            src[f"{word}/good{k}_nohash_0.wav"] = write(root / word / f"good{k}_nohash_0.wav", noise16(SR, 10 * i + k))
    good = write(root / "yes" / "ref_nohash_0.wav", noise16(SR, 99))
    raw = good.read_bytes()
    (root / "yes" / "zero_nohash_0.wav").write_bytes(b"")
    (root / "yes" / "trunc_nohash_0.wav").write_bytes(raw[: len(raw) // 2])
    (root / "yes" / "text_nohash_0.wav").write_text("this is not audio\n" * 50)
    (root / "yes" / "folder_nohash_0.wav").mkdir()
    (root / "yes" / "link_nohash_0.wav").symlink_to(root / "nowhere.wav")
    nan = tone(1.0)
    nan[100] = np.nan
    write(root / "yes" / "nan_nohash_0.wav", nan, subtype="FLOAT")
    inf = tone(1.0)
    inf[5] = np.inf
    write(root / "yes" / "inf_nohash_0.wav", inf, subtype="FLOAT")
    write(root / "yes" / "sr8k_nohash_0.wav", tone(1.0, 8_000), sr=8_000)
    write(root / "yes" / "sr44k_nohash_0.wav", tone(1.0, 44_100), sr=44_100)
    left, right = noise16(SR, 1), noise16(SR, 2)
    write(root / "no" / "stereo_nohash_0.wav", np.stack([left, right], axis=1))
    v24 = np.random.default_rng(3).integers(-(2**23), 2**23, SR).astype(np.int32) << 8  # 24-bit in int32
    write(root / "no" / "pcm24_nohash_0.wav", v24, subtype="PCM_24")
    fl = np.random.default_rng(4).uniform(-0.9, 0.9, SR).astype(np.float32)
    write(root / "no" / "float_nohash_0.wav", fl, subtype="FLOAT")
    flac = noise16(SR, 5)
    write(root / "no" / "clip_nohash_0.flac", flac, subtype="PCM_16")
    long = noise16(2 * SR, 6)
    write(root / "no" / "long_nohash_0.wav", long)
    short = noise16(int(0.3 * SR), 7)
    write(root / "no" / "short_nohash_0.wav", short)
    locked = write(root / "no" / "locked_nohash_0.wav", noise16(SR, 8))
    locked.chmod(0)
    (root / "empty").mkdir()
    write(root / "_background_noise_" / "hum.wav", tone(3.0, freq=50.0))
    (root / "_background_noise_" / "broken.wav").write_bytes(b"RIFF")
    expect = dict(
        left=left, right=right, v24=v24, fl=fl, flac=flac, long=long, short=short, good=src,
        locked_readable=os.access(locked, os.R_OK),  # root reads anything: chmod 000 blocks nobody
    )
    return root, expect


SKIPPED = {
    "yes/zero_nohash_0.wav": "empty file (0 bytes)",
    "yes/trunc_nohash_0.wav": "truncated WAV",
    "yes/text_nohash_0.wav": "not readable as audio",
    "yes/folder_nohash_0.wav": "not a regular file",
    "yes/link_nohash_0.wav": "broken symlink",
    "yes/nan_nohash_0.wav": "NaN or infinite samples",
    "yes/inf_nohash_0.wav": "NaN or infinite samples",
    "empty/": "empty class folder",
    "_background_noise_/broken.wav": "not readable as audio",
}


@pytest.fixture(scope="module")
def messy_prepared(messy, tmp_path_factory) -> tuple[dict, dict]:
    root, _ = messy
    out = tmp_path_factory.mktemp("messy_out") / "p"
    return prepare(root, out, workers=1, progress=False), prepared_rows(out)


def test_every_bad_file_is_skipped_with_its_reason(messy, messy_prepared):
    _, expect = messy
    m, rows = messy_prepared
    skipped = {s["path"]: s["reason"] for s in m["skipped"]}
    wanted = dict(SKIPPED)
    if not expect["locked_readable"]:
        wanted["no/locked_nohash_0.wav"] = "permission denied"
    assert set(skipped) == set(wanted)
    for path, reason in wanted.items():
        assert skipped[path].startswith(reason), (path, skipped[path])
    assert not set(rows) & set(skipped)
    assert m["classes"] == ["no", "yes"]  # the empty folder is no class
    n_good = 7 + 9 - (0 if expect["locked_readable"] else 1)  # 7 good + 9 repaired or plain-odd
    assert m["n_clips"] == len(rows) == n_good


def test_repairable_files_are_repaired_and_counted(messy, messy_prepared):
    _, e = messy
    m, rows = messy_prepared
    assert m["repaired"] == {
        "converted from FLOAT": 1, "converted from PCM_24": 1, "cut to 1 s": 1,
        "mixed down from 2 channels": 1, "padded to 1 s": 1,
        "resampled from 44100 Hz": 1, "resampled from 8000 Hz": 1,
    }
    assert all(c.shape == (SR,) and c.dtype == np.int16 for c in rows.values())
    mix = (e["left"].astype(np.int32) + e["right"]) / 2
    assert np.abs(rows["no/stereo_nohash_0.wav"] - mix).max() <= 0.5
    assert np.abs(rows["no/pcm24_nohash_0.wav"] - (e["v24"] >> 8) / 256).max() <= 1
    assert np.abs(rows["no/float_nohash_0.wav"] - e["fl"] * 32768).max() <= 0.5
    assert np.array_equal(rows["no/clip_nohash_0.flac"], e["flac"])
    assert np.array_equal(rows["no/long_nohash_0.wav"], e["long"][:SR])
    short = rows["no/short_nohash_0.wav"]
    assert np.array_equal(short[: len(e["short"])], e["short"]) and not short[len(e["short"]):].any()
    # resampled to 16 kHz: the same 440 Hz tone as one written at 16 kHz (edges aside)
    ref = np.round(tone(1.0) * 32768)
    for name in ("yes/sr8k_nohash_0.wav", "yes/sr44k_nohash_0.wav"):
        got = rows[name].astype(np.float64)
        assert np.corrcoef(got[200:-200], ref[200:-200])[0, 1] > 0.999, name
        assert abs(np.abs(got).max() / np.abs(ref).max() - 1) < 0.02, name
    for rel, path in e["good"].items():
        assert np.array_equal(rows[rel], sf.read(path, dtype="int16")[0])


def test_summary_line_counts_skips_and_repairs(messy_prepared):
    m, _ = messy_prepared
    line = summary_line(m)
    assert "\n" not in line
    assert f"prepared {m['n_clips']} clips in 2 classes" in line
    assert f"skipped {len(m['skipped'])} (" in line
    assert "NaN or infinite samples: 2" in line and "empty class folder: 1" in line
    assert "repaired " in line and "resampled from 8000 Hz: 1" in line


def test_one_class_dataset_is_prepared_with_a_warning(tmp_path):
    write(tmp_path / "data" / "yes" / "a_nohash_0.wav", noise16(SR, 0))
    write(tmp_path / "data" / "yes" / "b_nohash_0.wav", noise16(SR, 1))
    m = prepare(tmp_path / "data", tmp_path / "out", workers=1, progress=False)
    assert m["classes"] == ["yes"] and m["n_clips"] == 2
    assert "warning: only one class" in summary_line(m)


def test_nothing_readable_is_a_one_line_error(tmp_path):
    (tmp_path / "data" / "yes").mkdir(parents=True)
    (tmp_path / "data" / "yes" / "a.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"no clip could be read \(1 skipped: empty file: 1\)"):
        prepare(tmp_path / "data", tmp_path / "out", workers=1, progress=False)


def test_strict_turns_the_first_skip_into_an_error(tmp_path):
    write(tmp_path / "data" / "yes" / "a_nohash_0.wav", noise16(SR, 0))
    (tmp_path / "data" / "yes" / "b_nohash_0.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="b_nohash_0.wav: empty file"):
        prepare(tmp_path / "data", tmp_path / "out", PrepareOptions(strict=True), workers=1, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    # a cached, non-strict result with skips does not get past --strict either
    prepare(tmp_path / "data", tmp_path / "out", workers=1, progress=False)
    with pytest.raises(DatasetError, match="--strict"):
        prepare(tmp_path / "data", tmp_path / "out", PrepareOptions(strict=True), workers=1, progress=False)


def test_worker_pool_gives_the_same_result_as_one_process(messy, messy_prepared, tmp_path):
    root, _ = messy
    m1, rows1 = messy_prepared
    m2 = prepare(root, tmp_path / "pool", workers=2, progress=False)
    rows2 = prepared_rows(tmp_path / "pool")
    assert m2["skipped"] == m1["skipped"] and m2["repaired"] == m1["repaired"]
    assert rows1.keys() == rows2.keys() and all(np.array_equal(rows1[k], rows2[k]) for k in rows1)


def test_output_inside_the_dataset_is_refused(tmp_path):
    write(tmp_path / "yes" / "a_nohash_0.wav", noise16(SR, 0))
    with pytest.raises(DatasetError, match="inside the dataset root"):
        prepare(tmp_path, tmp_path / "prepared", workers=1, progress=False)


# ----------------------------------------------------------------------------- cache

def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_second_prepare_does_no_work_and_a_changed_file_triggers_a_new_one(tmp_path):
    root = tmp_path / "data"
    for k in range(4):
        write(root / ("yes" if k % 2 else "no") / f"s{k}_nohash_0.wav", noise16(SR, k))
    out = tmp_path / "out"
    first = prepare(root, out, workers=1, progress=False)
    assert first["cached"] is False
    before = _mtimes(out)
    second = prepare(root, out, workers=1, progress=False)
    assert second["cached"] is True and "cached, nothing to do" in summary_line(second)
    assert _mtimes(out) == before, "nothing was rewritten"
    assert second["cache_key"] == first["cache_key"]

    changed = root / "yes" / "s1_nohash_0.wav"
    write(changed, noise16(SR, 1234))
    os.utime(changed, ns=(before["manifest.json"] + 10**9,) * 2)  # a later mtime whatever the clock
    third = prepare(root, out, workers=1, progress=False)
    assert third["cached"] is False
    assert np.array_equal(prepared_rows(out)["yes/s1_nohash_0.wav"], noise16(SR, 1234))

    write(root / "yes" / "s9_nohash_0.wav", noise16(SR, 9))  # a new file too
    fourth = prepare(root, out, workers=1, progress=False)
    assert fourth["cached"] is False and fourth["n_clips"] == 5
    assert prepare(root, out, workers=1, progress=False)["cached"] is True
    # options are part of the key
    assert prepare(root, out, PrepareOptions(words=["yes"]), workers=1, progress=False)["cached"] is False


def test_missing_shard_means_prepare_again(tmp_path, demo_root):
    out = tmp_path / "out"
    m = prepare(demo_root, out, workers=1, progress=False)
    (out / m["shards"][0]).unlink()
    assert prepare(demo_root, out, workers=1, progress=False)["cached"] is False
    assert (out / m["shards"][0]).exists()


# ----------------------------------------------------------------------------- CLI

def test_cli_prepares_and_prints_one_summary_line(messy, tmp_path):
    root, _ = messy
    proc = run_cli("prepare", root, tmp_path / "out", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = proc.stdout.splitlines()[0]
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert summary.startswith(f"prepared {m['n_clips']} clips") and f"skipped {len(m['skipped'])} (" in summary


def test_cli_strict_is_a_one_line_error(messy, tmp_path):
    root, _ = messy
    assert_one_line_error(run_cli("prepare", root, tmp_path / "out", "--strict"), "--strict", str(root))


@pytest.mark.parametrize("case", ["missing", "empty", "no_class_folders", "a_file", "unknown_without_words",
                                  "missing_word", "out_is_a_file"])
def test_cli_usage_errors_are_one_line(case, tmp_path):
    root = tmp_path / "root"
    out = tmp_path / "out"
    args = []
    if case == "empty":
        root.mkdir()
    elif case == "no_class_folders":
        write(root / "_background_noise_" / "n.wav", noise16(SR, 0))
        (root / "notes.txt").write_text("x")
    elif case == "a_file":
        root.write_text("x")
    elif case in ("unknown_without_words", "missing_word", "out_is_a_file"):
        write(root / "yes" / "a_nohash_0.wav", noise16(SR, 0))
        args = {"unknown_without_words": ["--unknown"], "missing_word": ["--words", "yes,maybe"],
                "out_is_a_file": []}[case]
        if case == "out_is_a_file":
            out.write_text("x")
    needle = {"unknown_without_words": "--unknown needs --words", "missing_word": "maybe",
              "out_is_a_file": str(out)}.get(case, str(root))
    assert_one_line_error(run_cli("prepare", root, out, *args), needle)


# ----------------------------------------------------------------------------- odd file names

def test_cli_prepares_a_file_whose_name_is_not_utf8(tmp_path):
    """Issue 16: one name holding the byte 0xE9 (Latin-1 'é') crashed prepare in the cache key."""
    root = tmp_path / "data"
    write(root / "yes" / "a_nohash_0.wav", noise16(SR, 0))
    write(root / "no" / "b_nohash_0.wav", noise16(SR, 1))
    odd = root / os.fsdecode(b"yes/caf\xe9_nohash_0.wav")  # a real file with that byte in its name
    write(odd, noise16(SR, 2))
    assert os.fsencode(odd.name) == b"caf\xe9_nohash_0.wav"
    proc = run_cli("prepare", root, tmp_path / "out", "--workers", "1")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("prepared 3 clips in 2 classes"), proc.stdout
    rows = prepared_rows(tmp_path / "out")
    assert np.array_equal(rows["yes/caf\\xe9_nohash_0.wav"], noise16(SR, 2))  # the byte, escaped readably
    assert (root / unescape_path("yes/caf\\xe9_nohash_0.wav")).samefile(odd)  # and back to the file
    assert run_cli("prepare", root, tmp_path / "out").stdout.startswith("prepared 3 clips")  # cached now


def odd_tree(root: Path) -> dict[bytes, str]:
    """Clips under names that are legal on Linux and trip up code that thinks names are text.

    Returns the raw relative path of every clip -> what it should become: "kept" or a skip reason.
    """
    names = {
        b"yes/caf\xe9_nohash_0.wav": "kept",  # Latin-1, not UTF-8
        b"yes/new\nline_nohash_0.wav": "kept",
        b"yes/tab\there_nohash_0.wav": "kept",
        b"yes/-dash_nohash_0.wav": "kept",
        b"yes/--help_nohash_0.wav": "kept",
        b"yes/back\\slash_nohash_0.wav": "kept",
        b"yes/" + b"L" * 251 + b".wav": "kept",  # 255 bytes, the longest name ext4 takes
        b"yes/Case_nohash_0.wav": "kept",
        b"yes/case_nohash_0.wav": "kept",  # differs only in case: another file, another speaker
        b"no/\xff\xfe\x01_nohash_0.WAV": "kept",
        b"no/\xe2\x80\xa8sep_nohash_0.wav": "kept",  # U+2028, a line break to str.splitlines
        b"no/plain_nohash_0.wav": "kept",
        b"no/loop_nohash_0.wav": "cannot stat file",  # a symlink to itself
        b"no/dangling\xe9_nohash_0.wav": "broken symlink",
        b"caf\xe9/x_nohash_0.wav": "kept",  # a class folder whose name is not UTF-8
    }
    for i, (raw, fate) in enumerate(names.items()):
        path = root / os.fsdecode(raw)
        path.parent.mkdir(parents=True, exist_ok=True)
        if b"loop" in raw:
            path.symlink_to(path.name)
        elif b"dangling" in raw:
            path.symlink_to(root / "nowhere.wav")
        else:
            write(path, noise16(SR, 100 + i))
    (root / os.fsdecode(b"loopdir\xe9")).symlink_to(".")  # a folder symlink loop: no class, no hang
    (root / "gone").symlink_to(root / "nowhere")  # a dangling folder link: no class
    return names


def test_odd_names_are_kept_losslessly_or_skipped_readably(tmp_path):
    root = tmp_path / "data"
    names = odd_tree(root)
    m = prepare(root, tmp_path / "out", workers=1, progress=False)
    rows = prepared_rows(tmp_path / "out")
    kept = {raw for raw, fate in names.items() if fate == "kept"}
    assert {os.fsencode(unescape_path(p)) for p in rows} == kept
    for p, clip in rows.items():
        assert p.isprintable(), p  # one line of valid text in Parquet
        assert np.array_equal(clip, sf.read(os.fsencode(root / unescape_path(p)), dtype="int16")[0])
    skipped = {os.fsencode(unescape_path(s["path"])): s["reason"] for s in m["skipped"]}
    assert {raw: r.split(" (")[0] for raw, r in skipped.items()} == {
        b"loopdir\xe9/": "empty class folder",  # the link to the root holds folders, no clips
        **{raw: fate for raw, fate in names.items() if fate != "kept"}}
    assert all(s["path"].isprintable() for s in m["skipped"])
    assert m["classes"] == ["caf\\xe9", "no", "yes"]
    json.loads((tmp_path / "out" / "manifest.json").read_bytes().decode("utf-8"))  # strict UTF-8
    assert prepare(root, tmp_path / "out", workers=1, progress=False)["cached"] is True


def test_odd_names_reach_the_cli_as_one_line_each(tmp_path):
    root = tmp_path / "data"
    odd_tree(root)
    proc = run_cli("prepare", root, tmp_path / "out", "--strict")
    assert_one_line_error(proc, "--strict")
    assert "\\xe9" in proc.stderr or "loop_nohash_0.wav" in proc.stderr
    proc = run_cli("prepare", root, tmp_path / "out")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stdout.splitlines()) == 2


def test_a_root_named_like_an_option_is_prepared_after_double_dash(tmp_path):
    root = tmp_path / "-data"
    write(root / "yes" / "a_nohash_0.wav", noise16(SR, 0))
    proc = subprocess.run([sys.executable, "-m", "audionet_ray.prepare", "--", "-data", "out"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "manifest.json").exists()


# ----------------------------------------------------------------------------- prepare --synthesize

def _prepare_cli(*args, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUDIONET_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "audionet_ray.prepare", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env)


def test_prepare_synthesize_speaks_a_phrase_into_a_window_that_holds_it(tmp_path):
    """A typed two-word phrase and no data: spoken by espeak-ng with its negatives, prepared as a
    keyword task in the window wakeword chose for it (1.25 s for "hey jarvis")."""
    out = tmp_path / "p"
    p = _prepare_cli("--keywords", "hey jarvis", "--synthesize", "--synthesize-speakers", "6", out, cache=tmp_path / "c")
    assert p.returncode == 0, p.stderr
    m = load_manifest(out)
    assert m["classes"] == ["hey_jarvis", UNKNOWN, SILENCE] and m["clip_samples"] == 20_000
    shard = pq.read_table(out / m["split_shards"]["test"][0], columns=["pcm"])
    assert pcm_from_binary(shard.column("pcm")).shape[1] == 20_000
    kinds = {unescape_path(q).split("/")[0] for s in m["shards"] for q in pq.read_table(out / s, columns=["path"])
             .column("path").to_pylist()}
    assert {"hey_jarvis", UNKNOWN} <= kinds


@pytest.mark.parametrize("args, needles", [
    (["--synthesize"], ["--synthesize", "--keywords"]),
    (["--synthesize-speakers", "5", "--keywords", "marmalade", "ROOT"], ["only with --synthesize"]),
    (["--synthesize", "--keywords", "héllo"], ["héllo"]),
])
def test_prepare_synthesize_mistakes_are_one_line(tmp_path, args, needles):
    args = [tmp_path if a == "ROOT" else a for a in args]
    p = _prepare_cli(*args, tmp_path / "p", cache=tmp_path / "c")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert all(n in lines[0] for n in needles), lines
    assert not (tmp_path / "p" / "manifest.json").exists()
