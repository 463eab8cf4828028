"""Generated bad input (issue 16): no file name, file, option or half-written folder stops the work.

Hand-picked cases miss what nobody thought of (a name holding the byte 0xE9 crashed prepare,
see test_prepare.py). Here hypothesis draws the cases: dataset trees of real files with names of
arbitrary bytes, audio in every format soundfile writes and every kind of broken file the
project knows. Every test is seeded (`derandomize=True`) and bounded, so a failure repeats and
the whole file stays well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audionet_ray.corpus.discover import DatasetError, escape_path, speaker_bucket, unescape_path
from audionet_ray.corpus.prepare import load_manifest, pcm_from_binary, prepare

SR = 16_000


def bounded(n: int):
    """Seeded and bounded: the same cases on every run, no per-example deadline (files, CI load)."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- names

# one path component: any bytes but "/" and NUL, not "." or ".."
name_bytes = st.binary(min_size=1, max_size=24).map(lambda b: b.replace(b"/", b"s").replace(b"\0", b"z")).filter(
    lambda b: b not in (b".", b".."))


@bounded(300)
@given(name_bytes)
def test_escape_path_is_lossless_printable_and_the_identity_on_plain_names(raw):
    name = os.fsdecode(raw)
    text = escape_path(name)
    assert text.isprintable() and len(text.splitlines()) == 1  # one line of valid UTF-8 text
    text.encode("utf-8")
    assert os.fsencode(unescape_path(text)) == raw
    if name.isprintable() and "\\" not in name:
        assert text == name  # nearly every real name is stored as it is


@bounded(200)
@given(st.text(min_size=1, max_size=20), st.sampled_from(["", "test:"]))
def test_speaker_buckets_of_utf8_names_did_not_move(speaker, salt):
    """Splits are by the hash of the speaker's name: the fix for non-UTF-8 names must leave every
    UTF-8 name's bucket (so every existing split) where it was."""
    import hashlib

    try:
        old = hashlib.sha1(f"{salt}{speaker}".encode()).digest()
    except UnicodeEncodeError:  # lone surrogates: not a name the old code could hash at all
        return
    assert speaker_bucket(speaker, salt) == int.from_bytes(old[:8], "big") / 2**64


# ----------------------------------------------------------------------------- dataset trees

@dataclass
class Clip:
    """One entry in a generated tree and what prepare should make of it."""

    kind: str  # a good format ("wav16", "flac24", ...) or a broken kind ("empty", "nan", ...)
    channels: int = 1
    rate: int = SR
    frames: int = SR
    seed: int = 0

    @property
    def good(self) -> bool:
        return self.kind in GOOD


GOOD = {"wav16": ("WAV", "PCM_16"), "wav_float": ("WAV", "FLOAT"), "wav_double": ("WAV", "DOUBLE"),
        "flac16": ("FLAC", "PCM_16"), "flac24": ("FLAC", "PCM_24"), "wav_loud_float": ("WAV", "FLOAT")}
BAD = {  # kind -> the start of the reason prepare must give
    "empty": "empty file", "truncated": "truncated WAV", "text": "not readable as audio",
    "png": "not readable as audio", "nan": "NaN or infinite samples", "inf": "NaN or infinite samples",
    "folder": "not a regular file", "dangling": "broken symlink", "loop": "cannot stat file",
    "too_short": "too short to resample", "fifo": "not a regular file",
}
RATES = [SR, SR, 8_000, 11_025, 22_050, 44_100, 48_000, 96_000, 7_350, 1_000, 12_345]


@st.composite
def clips(draw) -> Clip:
    if draw(st.integers(0, 3)) == 0:
        return Clip(draw(st.sampled_from(sorted(BAD))), seed=draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(sorted(GOOD)))
    rate = draw(st.sampled_from(RATES))
    frames = draw(st.integers(max(1, rate // 1000), int(rate * 1.3)))  # >= 1 ms, up to 1.3 s
    return Clip(kind, draw(st.integers(1, 2)), rate, frames, draw(st.integers(0, 2**16)))


def write_clip(path: Path, c: Clip) -> None:
    """A real file (or folder, or link) of kind `c.kind` at `path` (any name: written by bytes)."""
    rng = np.random.default_rng(c.seed)
    bpath = os.fsencode(path)
    if c.good:
        fmt, subtype = GOOD[c.kind]
        x = rng.uniform(-0.9, 0.9, (c.frames, c.channels))
        if c.kind == "wav_loud_float":
            x *= 40.0  # float WAV beyond full scale: clipped, counted, kept
        sf.write(bpath, x.astype(np.float64 if subtype == "DOUBLE" else np.float32), c.rate,
                 format=fmt, subtype=subtype)
    elif c.kind in ("nan", "inf", "truncated", "too_short"):
        x = rng.uniform(-0.5, 0.5, (SR // 4, 1)).astype(np.float32)
        x[rng.integers(len(x))] = np.nan if c.kind == "nan" else np.inf
        if c.kind == "too_short":
            sf.write(bpath, x[:1], 96_000, format="WAV", subtype="FLOAT")
            return
        sf.write(bpath, x if c.kind != "truncated" else np.nan_to_num(x), SR, format="WAV", subtype="FLOAT")
        if c.kind == "truncated":
            raw = path.read_bytes()
            path.write_bytes(raw[: len(raw) // 2])
    elif c.kind == "empty":
        path.write_bytes(b"")
    elif c.kind == "text":
        path.write_bytes(b"not audio at all\n" * (1 + c.seed % 40))
    elif c.kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    elif c.kind == "folder":
        path.mkdir()
    elif c.kind == "fifo":  # a named pipe: opening it to read would wait forever
        os.mkfifo(path)
    elif c.kind == "dangling":
        path.symlink_to(path.parent / "nowhere-at-all")
    elif c.kind == "loop":
        path.symlink_to(path.name)


suffixes = st.sampled_from([".wav", ".wav", ".flac", ".WAV", ".Flac"])
class_names = name_bytes.filter(lambda b: not b.startswith((b".", b"_")))
speakers = st.sampled_from([b"amy", b"bo", b"caf\xe9", b"-x", b"tab\tnl\n", b"\xff\xfe", b"Amy", b"back\\sl"])


@st.composite
def trees(draw) -> dict:
    """{class folder (bytes): {file name (bytes): Clip or None (a stray non-audio file)}}."""
    folders = draw(st.lists(class_names, min_size=1, max_size=3, unique=True))
    tree = {}
    for folder in folders:
        entries = {}
        for i in range(draw(st.integers(0, 5))):
            spk = draw(speakers)
            name = spk + b"_nohash_" + str(i).encode()
            c = draw(clips())
            suffix = draw(suffixes)
            if c.good and c.kind.startswith("flac") != suffix.lower().endswith("flac"):
                suffix = ".flac" if c.kind.startswith("flac") else ".wav"  # libsndfile reads by content anyway
            entries[name + suffix.encode()] = c
        if draw(st.booleans()):
            entries[draw(st.sampled_from([b"notes.txt", b".DS_Store", b"x.mp3", b"wav"]))] = None
        tree[folder] = entries
    return tree


def build(root: Path, tree: dict, test_list: list[bytes] | None) -> None:
    root.mkdir(parents=True)
    for folder, entries in tree.items():
        (root / os.fsdecode(folder)).mkdir()
        for name, c in entries.items():
            path = root / os.fsdecode(folder) / os.fsdecode(name)
            if c is None:
                path.write_bytes(b"stray")
            else:
                write_clip(path, c)
    if test_list is not None:  # names a line cannot hold as they are, in escape_path's form
        lines = [os.fsencode(escape_path(os.fsdecode(n))) if n != n.strip() or b"\n" in n or b"\r" in n else n
                 for n in test_list]
        (root / "testing_list.txt").write_bytes(b"\n".join(lines) + b"\n")


def shard_rows(out: Path, m: dict) -> list[dict]:
    rows = []
    for shard in m["shards"]:
        t = pq.read_table(out / shard)
        pcm = pcm_from_binary(t.column("pcm"))
        for i, r in enumerate(t.drop(["pcm"]).to_pylist()):
            rows.append({**r, "pcm": pcm[i]})
    return rows


@bounded(60)
@given(trees(), st.booleans(), st.data())
def test_prepare_on_generated_trees(tree, with_list, data):
    good = {f + b"/" + n: c for f, es in tree.items() for n, c in es.items() if c is not None and c.good}
    bad = {f + b"/" + n: c for f, es in tree.items() for n, c in es.items() if c is not None and not c.good}
    test_list = sorted(data.draw(st.sets(st.sampled_from(sorted(good)))) if good else []) if with_list else None
    tmp = Path(tempfile.mkdtemp(prefix="bad-input-"))
    try:
        root, out = tmp / "data", tmp / "out"
        build(root, tree, test_list)
        try:
            m = prepare(root, out, workers=1, progress=False)
        except DatasetError as e:  # only when there is nothing to prepare, and then one line
            assert not good, f"{len(good)} good clips, yet: {e}"
            assert len(str(e).splitlines()) == 1 and str(e).isprintable()
            return
        assert good, "prepared a tree without one good clip"
        rows = shard_rows(out, m)
        by_path = {os.fsencode(unescape_path(r["path"])): r for r in rows}
        assert len(by_path) == len(rows)
        held_out = {os.fsencode(unescape_path(p)) for p in m["held_out"]}
        # every good clip is kept, under its folder's class, or held out (a test speaker's other clip:
        # discovery holds it out, good or bad, before anything is decoded)
        assert set(by_path) | (held_out & set(good)) == set(good) and not set(by_path) & held_out
        for raw, r in by_path.items():
            folder = raw.split(b"/")[0]
            assert m["classes"][r["label"]] == escape_path(os.fsdecode(folder))
            assert r["pcm"].shape == (SR,)
            if good[raw].kind == "wav16" and good[raw].rate == SR and good[raw].channels == 1:
                want = sf.read(os.fsencode(root / unescape_path(r["path"])), dtype="int16")[0][:SR]
                assert np.array_equal(r["pcm"][: len(want)], want)  # bit exact
        # every bad one is reported, with its reason; NaN and inf are among them, never in a shard
        skipped = {os.fsencode(unescape_path(s["path"].rstrip("/"))): s["reason"] for s in m["skipped"]}
        empty_folders = {f for f, es in tree.items() if not any(c is not None for c in es.values())}
        assert set(skipped) == (set(bad) - held_out) | empty_folders
        for raw, c in bad.items():
            assert raw in held_out or skipped[raw].startswith(BAD[c.kind]), (raw, c, skipped[raw])
        assert all(s["path"].isprintable() for s in m["skipped"])
        # speakers never cross splits; the bucket column is the speaker's
        seen: dict[str, tuple] = {}
        for r in rows:
            key = (r["split"], r["bucket"])
            assert seen.setdefault(r["speaker"], key) == key, r["speaker"]
            assert r["bucket"] == speaker_bucket(unescape_path(r["speaker"]))
        if test_list is not None:
            listed = set(test_list)
            assert {raw for raw, r in by_path.items() if r["split"] == "test"} == listed
        json.loads((out / "manifest.json").read_bytes().decode("utf-8"))  # valid UTF-8 JSON
        # a second prepare of the same tree does nothing
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        again = prepare(root, out, workers=1, progress=False)
        assert again["cached"] is True
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
        assert load_manifest(out)["cache_key"] == m["cache_key"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- keyword tasks

def word_folders(root: Path, counts: dict[str, int], tested: dict[str, int] | None = None) -> None:
    """Real WAV clips: `counts[w]` speakers of its own say w once; the first `tested[w]` of them are in
    testing_list.txt."""
    lines = []
    for w, n in counts.items():
        (root / w).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sf.write(root / w / f"{w}{i:03d}_nohash_0.wav", np.full(160, 100 * (i + 1), np.int16), SR)
            if i < (tested or {}).get(w, 0):
                lines.append(f"{w}/{w}{i:03d}_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("".join(lines))


def test_a_keyword_that_is_not_a_word_names_it_and_the_words_there_are(tmp_path):
    from audionet_ray.corpus.discover import discover

    root = tmp_path / "data"
    word_folders(root, {"yes": 25, "no": 25, "up": 25})
    (root / "empty").mkdir()
    for words in (["yes", "maybe"], ["maybe", "yes", "_unknown_", "_silence_"]):
        with pytest.raises(DatasetError) as e:
            discover(root, words, unknown=True)
        msg = str(e.value)
        assert len(msg.splitlines()) == 1 and "maybe" in msg and msg.endswith("the words there are: no, up, yes"), msg
    proc = run_module("audionet_ray.pipeline.data", "prepare", root, tmp_path / "out", "--words", "yes,maybe", "--unknown")
    line = assert_one_line_error(proc, "maybe", "no, up, yes")
    assert not (tmp_path / "out" / "manifest.json").exists(), line


@bounded(25)
@given(yes=st.integers(1, 30), yes_tested=st.integers(0, 3), no=st.integers(1, 30), both=st.booleans())
def test_a_keyword_with_too_few_clips_is_one_line_with_its_count(yes, yes_tested, no, both):
    from audionet_ray.corpus.discover import MIN_KEYWORD_CLIPS, discover

    tmp = Path(tempfile.mkdtemp(prefix="keyword-clips-"))
    try:
        root = tmp / "data"
        word_folders(root, {"yes": yes, "no": no, "up": 3}, {"yes": yes_tested})
        keywords = ["yes", "no"] if both else ["yes"]
        trainval = {"yes": max(0, yes - yes_tested), "no": no}
        few = [w for w in sorted(keywords) if trainval[w] < MIN_KEYWORD_CLIPS]
        if few:
            with pytest.raises(DatasetError) as e:
                discover(root, keywords, unknown=True)
            msg = str(e.value)
            assert len(msg.splitlines()) == 1 and f"at least {MIN_KEYWORD_CLIPS}" in msg, msg
            for w in ("yes", "no"):
                assert (f"{w} ({trainval[w]})" in msg) == (w in few), msg
        else:
            found = discover(root, keywords, unknown=True)
            assert found.classes == [*sorted(keywords), "_unknown_"]
        # a classifier, or words without _unknown_, keeps today's rules: any count will do
        assert discover(root).classes == ["no", "up", "yes"]
        assert discover(root, keywords).classes == sorted(keywords)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- predict and evaluate

def run_module(*args, timeout: float = 300, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def assert_one_line_error(proc, *needles: str, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """A tree with odd names (classes and clips), prepared: clips in test and train/val alike."""
    root = tmp_path_factory.mktemp("odd") / os.fsdecode(b"donn\xe9es")
    for i, folder in enumerate([b"caf\xe9", b"ta\tb", b"yes"]):
        for k, spk in enumerate([b"amy", b"\xff", b"new\nline", b"-dash", b"Amy", b"back\\sl", b"s6", b"s7"]):
            (root / os.fsdecode(folder)).mkdir(parents=True, exist_ok=True)
            write_clip(root / os.fsdecode(folder) / os.fsdecode(spk + b"_nohash_0.wav"), Clip("wav16", seed=10 * i + k))
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(odd_data, tmp_path_factory) -> Path:
    """A checkpoint of an untrained small AudioNet over odd_data's classes: enough to export and run."""
    import torch

    from audionet_ray.training.config import TrainConfig
    from audionet_ray.modeling.model import AudioNet, ModelConfig
    from audionet_ray.training.checkpoint import save as save_checkpoint

    prepared = tmp_path_factory.mktemp("odd_prepared") / "p"
    classes = prepare(odd_data, prepared, workers=1, progress=False)["classes"]
    cfg = TrainConfig.from_dict(dict(data=str(prepared), epochs=1, width=4, dense=8))
    model_cfg = ModelConfig(len(classes), cfg.model.width, cfg.model.dense, cfg.model.dropout)
    torch.manual_seed(0)
    model = AudioNet.from_config(model_cfg)
    ckpt = tmp_path_factory.mktemp("odd_ckpt") / "checkpoint_000001"
    ckpt.mkdir()
    save_checkpoint(ckpt, model, torch.optim.NAdam(model.parameters()), 1, cfg, model_cfg, classes,
                    {"val_accuracy": 0.5})
    return ckpt


@pytest.fixture(scope="module")
def tiny_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    from audionet_ray.deploy.export import export

    return export(tiny_checkpoint, tmp_path_factory.mktemp("odd_export") / "bundle")


def test_predict_names_every_odd_file_on_one_line(tiny_bundle, odd_data, tmp_path, capsys):
    bad = tmp_path / os.fsdecode(b"cut\xe9\n.wav")
    bad.write_bytes(b"RIFF")
    loop = tmp_path / os.fsdecode(b"loop\t.wav")
    loop.symlink_to(loop.name)
    proc = run_module("audionet_ray.detection.predict", tiny_bundle, odd_data, "--", bad, loop, "-missing.wav")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == 24 and all(ln.isprintable() for ln in out)  # one line per clip, names escaped
    assert any("caf\\xe9/new\\x0aline_nohash_0.wav: " in ln for ln in out), out[:3]
    errors = proc.stderr.splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") and e.isprintable() for e in errors), errors
    assert "cut\\xe9\\x0a.wav" in errors[0] and "loop\\x09.wav: cannot stat" in errors[1]
    from audionet_ray.detection.predict import main as predict_main

    assert predict_main([str(tiny_bundle), str(odd_data), "--format", "json"]) == 0  # in-process: no second start-up
    files = json.loads(capsys.readouterr().out)["files"]
    assert len(files) == 24 and {os.fsencode(unescape_path(f["path"])) for f in files} == {
        os.fsencode(p) for p in odd_data.rglob("*.wav")}


def test_evaluate_on_odd_names_reads_them_as_text(tiny_bundle, odd_data, tmp_path):
    proc = run_module("audionet_ray.deploy.evaluate", tiny_bundle, "--data", odd_data, "--out", tmp_path / "ev",
                      "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "caf\\xe9" in proc.stdout and "ta\\x09b" in proc.stdout
    metrics = json.loads((tmp_path / "ev" / "test_metrics.json").read_bytes().decode("utf-8"))
    assert set(metrics["per_class"]) == {"caf\\xe9", "ta\\x09b", "yes"}


# ----------------------------------------------------------------------------- search-space YAML

SMOKE = Path(__file__).resolve().parent.parent / "search_spaces" / "smoke.yaml"
odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([10**30, -10**30, 2**63, 1e308, -1e-308]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.sampled_from(["1e-3", "", "auto", "30m", "-1"]),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(-10, 10), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


@st.composite
def search_yaml(draw) -> str:
    """smoke.yaml with a few mutations: wrong types, unknown keys, inverted or empty ranges, huge values."""
    import copy

    import yaml

    doc = yaml.safe_load(SMOKE.read_text())
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["search", "fixed", "tune", "resources", None]))
        how = draw(st.sampled_from(["set", "unknown", "range", "drop", "whole"]))
        if section is None:  # the document itself
            doc = draw(st.one_of(odd_values, st.just(doc))) if how == "whole" else doc
            continue
        if not isinstance(doc, dict):
            break
        part = doc.get(section)
        if how == "drop":
            doc.pop(section, None)
        elif how == "whole" or not isinstance(part, dict):
            doc[section] = draw(odd_values)
        elif how == "unknown":
            part[draw(st.sampled_from(["lr_max", "epoch", "num_sample", "x", "GPU", ""]))] = draw(odd_values)
        elif how == "range" and section == "search":
            name = draw(st.sampled_from(sorted(part)))
            kind = draw(st.sampled_from(["loguniform", "uniform", "randint", "quniform", "choice", "normal"]))
            lo, hi = draw(odd_values), draw(odd_values)
            args = draw(st.sampled_from([[hi, lo], [lo, lo], [], [lo], [lo, hi, lo], lo]))
            part[name] = {kind: copy.deepcopy(args)}
            if draw(st.booleans()):
                part[name]["when"] = draw(st.one_of(odd_values, st.just({"norm": "group"}), st.just({"lr": 1})))
        else:
            key = draw(st.sampled_from(sorted(part) or ["x"]))
            part[key] = draw(odd_values)
    return yaml.safe_dump(doc, allow_unicode=True)


def _one_line_naming(msg: str, where: str) -> None:
    assert len(msg.splitlines()) == 1 and where in msg, msg


@bounded(250)
@given(search_yaml())
def test_generated_search_spaces_load_or_fail_in_one_line(text):
    from dataclasses import fields

    from audionet_ray.pipeline.augment import AugmentConfig
    from audionet_ray.training.config import ConfigError, TrainConfig
    from audionet_ray.tuning.search_space import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "space.yaml"
        f.write_text(text)
        try:
            spec = load_spec(f)
        except ConfigError as e:
            _one_line_naming(str(e), str(f))
            return
    # what loads is usable: each setting has its type, and every choice and bound makes a TrainConfig
    for section in (spec.tune, spec.resources):
        for name, default in vars(type(section)()).items():
            value = getattr(section, name)
            if isinstance(default, bool) or default is None or isinstance(default, str):
                continue
            if isinstance(default, (list, dict)):  # objectives: names; constraints: limits above 0
                assert isinstance(value, type(default)), (name, value)
                assert all(isinstance(v, str) for v in value) if isinstance(value, list) else all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value.values()), (name, value)
                continue
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, value)
            if isinstance(default, int) and name != "gpus_per_trial":
                assert isinstance(value, int), (name, value)
            assert np.isfinite(float(value)) and abs(value) < 2**63, (name, value)
    TrainConfig.from_dict({**spec.fixed, "data": ""})
    whole = {f.name for f in (*fields(TrainConfig), *fields(AugmentConfig)) if f.type == "int"}
    for name, dist in spec.search.items():  # what a trial draws fits the setting's type
        assert not (set(dist) - {"randint", "choice"} and name in whole), (name, dist)


@bounded(60)
@given(st.one_of(st.binary(max_size=60), st.sampled_from([b"[" * 3000, b"search: {lr: \xe9}", b"\x00", b"a: b: c",
                                                          b"search:\n\t- x", b"{" * 100 + b"}" * 99])))
def test_search_space_files_that_are_not_yaml_fail_in_one_line(raw):
    from audionet_ray.training.config import ConfigError
    from audionet_ray.tuning.search_space import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "space.yaml"
        f.write_bytes(raw)
        try:
            load_spec(f)  # an empty or comment-only file is an empty space: the defaults
        except ConfigError as e:
            _one_line_naming(str(e), str(f))


def test_a_folder_given_as_search_space_is_one_line(tmp_path):
    from audionet_ray.training.config import ConfigError
    from audionet_ray.tuning.search_space import load_spec

    (tmp_path / "space.yaml").mkdir()
    with pytest.raises(ConfigError, match="cannot read it"):
        load_spec(tmp_path / "space.yaml")


@pytest.mark.parametrize("section, key, value, needle", [
    ("tune", "num_samples", "8", "tune.num_samples: expected int, got '8'"),  # a wrong type
    ("fixed", "epoch", 3, "unknown setting(s): epoch"),  # an unknown key
    ("search", "lr", {"loguniform": [1.0e-2, 1.0e-4]}, "low 0.01 must be below high 0.0001"),  # inverted range
    ("fixed", "seed", 10**30, "seed: expected int"),  # a huge value (torch takes 64 bits)
])
def test_tune_cli_refuses_a_broken_search_space_in_one_line(prepared_demo, tmp_path, section, key, value, needle):
    import yaml

    doc = yaml.safe_load(SMOKE.read_text())
    doc[section][key] = value
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump(doc))
    proc = run_module("audionet_ray.tune", "--search-space", f, "--data", prepared_demo, "--storage", tmp_path / "runs")
    assert_one_line_error(proc, str(f), needle)
    assert not (tmp_path / "runs").exists()  # refused before anything was written or started


# ----------------------------------------------------------------------------- tampered bundles

BUNDLE_FILES = ["config.json", "model.safetensors", "model.onnx"]
HARMLESS_EXTRAS = ["notes.txt", "test_metrics.json", "confusion_matrix.png", ".DS_Store"]
MODEL_EXTRAS = ["model.pt", "weights.safetensors", "model2.onnx", "model.int8.onnx"]


@bounded(40)
@given(st.sampled_from(["change", "cut", "missing", "extra"]), st.sampled_from(BUNDLE_FILES),
       st.floats(0, 1, exclude_max=True), st.integers(1, 255), st.sampled_from(HARMLESS_EXTRAS + MODEL_EXTRAS),
       st.sampled_from(["torch", "onnx"]))
def test_a_changed_missing_or_extra_bundle_file_is_refused_in_one_line(tiny_bundle, how, name, at, xor, extra,
                                                                       backend):
    from audionet_ray.detection.bundle import BundleError, load

    with tempfile.TemporaryDirectory() as tmp:
        b = Path(tmp) / "bundle"
        shutil.copytree(tiny_bundle, b)
        f = b / name
        raw = bytearray(f.read_bytes())
        pos = int(at * len(raw))
        if how == "change":
            raw[pos] ^= xor
            f.write_bytes(bytes(raw))
        elif how == "cut":
            f.write_bytes(bytes(raw[:pos]))
        elif how == "missing":
            f.unlink()
        else:
            (b / extra).write_bytes(bytes(raw))  # a copy of a real file under another name
        try:
            load(b, backend=backend)
        except BundleError as e:
            msg = str(e)
            assert len(msg.splitlines()) == 1 and str(b) in msg, msg
            assert how != "extra" or extra in msg, msg
            return
        if how == "extra":
            assert extra in HARMLESS_EXTRAS, f"{extra} was not noticed"
        else:  # only a change that leaves config.json's content as it was (its whitespace) may pass
            same = json.loads((tiny_bundle / name).read_bytes()) == json.loads(f.read_bytes())
            assert name == "config.json" and same, f"{how} {name} at {pos} was not noticed"


@pytest.mark.parametrize("cli", ["predict", "evaluate"])
def test_predict_and_evaluate_refuse_a_tampered_bundle_in_one_line(tiny_bundle, odd_data, tmp_path, cli):
    b = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, b)
    raw = bytearray((b / "model.safetensors").read_bytes())
    raw[-3] ^= 1  # one bit of one weight
    (b / "model.safetensors").write_bytes(bytes(raw))
    args = [odd_data / os.fsdecode(b"yes/amy_nohash_0.wav")] if cli == "predict" else ["--data", odd_data]
    proc = run_module(f"audionet_ray.{cli}", b, *args)
    assert_one_line_error(proc, "model.safetensors", "export it again")
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in tiny_bundle.iterdir())  # nothing written


# ----------------------------------------------------------------------------- a full disk

@pytest.fixture
def disk_of(tmp_path):
    """disk_of(kib) -> a folder on a filesystem of that size (tmpfs), the test's own to fill up;
    the test is skipped, saying why, where mounting is not allowed."""
    import subprocess

    mounted = []

    def mount(kib: int) -> Path:
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        if os.geteuid() != 0:
            pytest.skip("the full-disk tests mount a small tmpfs, which needs root")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(disk)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a size-limited tmpfs here ({proc.stderr.strip() or proc.returncode})")
        mounted.append(disk)
        return disk

    yield mount
    import gc

    gc.collect()  # a writer that failed mid-file may still hold it open until collected
    for disk in mounted:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], check=False)  # detached now, freed when closed


@pytest.fixture
def small_disk(disk_of) -> Path:
    return disk_of(2048)


def _noise_tree(root: Path, n: int, start: int = 0) -> None:
    for k in range(start, start + n):  # white noise: compresses to nearly its 32 kB
        (root / ("yes" if k % 2 else "no")).mkdir(parents=True, exist_ok=True)
        write_clip(root / ("yes" if k % 2 else "no") / f"s{k:03d}_nohash_0.wav", Clip("wav16", seed=k))


def test_a_full_disk_during_prepare_keeps_the_earlier_preparation(small_disk, tmp_path):
    root, out = tmp_path / "data", small_disk / "prepared"
    _noise_tree(root, 20)
    first = prepare(root, out, workers=1, progress=False)
    rows = {r["path"]: r["pcm"].copy() for r in shard_rows(out, first)}
    _noise_tree(root, 60, start=20)  # 80 clips: more than the disk holds beside the first 20
    with pytest.raises(DatasetError) as e:
        prepare(root, out, workers=1, progress=False)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "No space left on device" in msg, msg
    assert "the earlier preparation there is unchanged" in msg
    assert load_manifest(out)["cache_key"] == first["cache_key"]  # still the first, whole and readable
    again = {r["path"]: r["pcm"] for r in shard_rows(out, first)}
    assert again.keys() == rows.keys() and all(np.array_equal(again[k], rows[k]) for k in rows)
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", "noise.npy", *first["shards"]])
    proc = run_module("audionet_ray.pipeline.data", "prepare", root, out)
    assert_one_line_error(proc, "No space left on device", "unchanged")


def test_a_full_disk_on_a_first_prepare_says_nothing_was_kept(small_disk, tmp_path):
    root, out = tmp_path / "data", small_disk / "prepared"
    _noise_tree(root, 80)
    proc = run_module("audionet_ray.corpus.prepare", root, out)
    assert_one_line_error(proc, "No space left on device", "nothing was kept", "free some space")
    assert list(out.iterdir()) == []  # no half-written shards left to fill the disk


def test_a_full_disk_during_export_keeps_the_earlier_bundle(tiny_checkpoint, tiny_bundle, disk_of):
    from audionet_ray.detection.bundle import load

    size = sum(f.stat().st_size for f in tiny_bundle.iterdir())
    disk = disk_of(int(size * 1.4) // 1024 + 16)  # room for one bundle, not for a second beside it
    out = disk / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    proc = run_module("audionet_ray.deploy.export", tiny_checkpoint, out)
    assert_one_line_error(proc, "No space left on device", "earlier bundle there is unchanged")
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before and load(out).classes
    assert sorted(p.name for p in disk.iterdir()) == ["bundle"]  # the half-written copy is gone


def test_a_full_disk_during_a_checkpoint_save_keeps_the_earlier_checkpoint(tiny_checkpoint, disk_of):
    """The new checkpoint is cut short; export and the best-checkpoint pick see only the whole one."""
    import torch

    from audionet_ray.training.config import TrainConfig
    from audionet_ray.deploy.export import pick
    from audionet_ray.modeling.model import AudioNet, ModelConfig
    from audionet_ray.training.checkpoint import read_meta
    from audionet_ray.training.checkpoint import save as save_checkpoint

    size = sum(f.stat().st_size for f in tiny_checkpoint.iterdir())
    disk = disk_of(int(size * 1.4) // 1024 + 16)  # room for one checkpoint, not for a second
    run = disk / "run"
    shutil.copytree(tiny_checkpoint, run / "checkpoint_000001")
    meta = json.loads((tiny_checkpoint / "meta.json").read_text())
    cfg, model_cfg = TrainConfig.from_dict(meta["train_config"]), ModelConfig(**meta["model"])
    model = AudioNet.from_config(model_cfg)
    (run / "checkpoint_000002").mkdir()
    with pytest.raises((OSError, RuntimeError)):  # torch.save reports a full disk as a RuntimeError
        save_checkpoint(run / "checkpoint_000002", model, torch.optim.NAdam(model.parameters()), 2, cfg, model_cfg,
                        meta["classes"], {"val_accuracy": 0.9})
    assert read_meta(run / "checkpoint_000002")[0] is None
    chosen = pick(run)
    assert chosen["checkpoint"].name == "checkpoint_000001" and chosen["candidates"] == 1


# ----------------------------------------------------------------------------- experiment folders cut short

TINY_SEARCH = """search:
  lr: {loguniform: [1.0e-3, 3.0e-3]}
fixed: {epochs: 2, width: 4, dense: 8, checkpoint_every: 1, seed: 0}
tune: {num_samples: 2, max_concurrent: 1, searcher: random, scheduler: fifo, seed: 0}
resources: {workers_per_trial: 1, gpus_per_trial: 0, cpus_per_worker: 0.5}
"""


@pytest.fixture(scope="module")
def experiment(ray_session, prepared_demo, tmp_path_factory) -> Path:
    """A real (tiny) search's experiment folder: 2 trials of 2 epochs, a checkpoint every epoch."""
    storage = tmp_path_factory.mktemp("cut_search")
    space = storage / "tiny.yaml"
    space.write_text(TINY_SEARCH)
    proc = run_module("audionet_ray.tune", "--search-space", space, "--data", prepared_demo, "--storage", storage,
                      "--name", "x", "--address", ray_session.get_runtime_context().gcs_address, "--no-export",
                      timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return storage / "x"


def cut_short(src: Path, dst: Path, at: float, keep: float) -> str:
    """Copy `src` as a crash or a full disk at a moment would have left it: files in the order
    they were last written; those after the moment gone, the one it caught cut to `keep` of its size."""
    shutil.copytree(src, dst, symlinks=True)
    files = sorted((p for p in dst.rglob("*") if p.is_file() and not p.is_symlink()),
                   key=lambda p: (p.stat().st_mtime_ns, str(p)))
    k = int(at * len(files))
    for p in files[k + 1:]:
        p.unlink()
    caught = files[k]
    caught.write_bytes(caught.read_bytes()[: int(keep * caught.stat().st_size)])
    return str(caught.relative_to(dst))


@pytest.mark.slow
@bounded(12)
@given(st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True))
def test_experiment_cut_short_anywhere_export_picks_a_whole_checkpoint_or_says_why(experiment, at, keep):
    from audionet_ray.training.config import ConfigError
    from audionet_ray.corpus.discover import DatasetError
    from audionet_ray.deploy.export import pick
    from audionet_ray.reporting.report import write_report
    from audionet_ray.training.checkpoint import read_meta

    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp) / "x"
        caught = cut_short(experiment, exp, at, keep)
        try:
            chosen = pick(exp)
            assert read_meta(chosen["checkpoint"])[0] is not None, caught  # never a cut-short checkpoint
        except ConfigError as e:
            assert len(str(e).splitlines()) == 1 and str(exp) in str(e), (caught, e)
        try:
            write_report(exp)
        except (ConfigError, DatasetError) as e:
            assert len(str(e).splitlines()) == 1, (caught, e)


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["export", "report"])
def test_export_and_report_on_a_folder_cut_short_give_one_line(experiment, tmp_path, cli):
    exp = tmp_path / "x"
    cut_short(experiment, exp, 0.0, 0.5)  # only the first file written, and half of it
    args = [exp, tmp_path / "bundle"] if cli == "export" else [exp]
    proc = run_module(f"audionet_ray.{cli}", *args)
    assert_one_line_error(proc, str(exp))
