"""The keyword task (issue 23) across modules: sliding-window relabelling (augment.stream_windows),
bounded standardisation, lazy keyword-free streams and keyword-only scoring (streaming), the
keyword settings (config), `prepare --keywords` on generated speech, and a real keyword search
exported and judged as a detector. Real espeak-ng speech, real processes, the session's Ray.
"""

from __future__ import annotations

import csv
import inspect
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from audionet_ray.pipeline.augment import KEYWORD_SHARE, SPEECH_SHARE, Roles, standardise, stream_windows
from audionet_ray.training.config import ConfigError, TrainConfig
from audionet_ray.corpus.discover import SILENCE, UNKNOWN, DatasetError
from audionet_ray.detection.predict import Windows
from audionet_ray.detection.streaming import Event, Stream, StreamOptions, iter_streams, score, stream_keywords

SR = 16_000
KWS = ["down", "no", "yes"]
EPS = 1e-4  # shares this close to a threshold may fall either way in float32


def _error_line(p: subprocess.CompletedProcess) -> str:
    """The one line a CLI prints for bad input (exit 2, no traceback)."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _run(module: str, *args, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


# ----------------------------------------------------------------------------- stream_windows

def _classes(with_silence: bool) -> list[str]:
    return KWS + [UNKNOWN] + ([SILENCE] if with_silence else [])


def _expected_labels(shares: list[float], labels: list[int], roles: Roles) -> set[int]:
    """What stream_windows' docstring promises, from each clip's energy share of the window; every
    answer a share within EPS of a threshold (or of a tie) allows."""
    out = set()
    for d in (-EPS, EPS):
        kw = [(s, lab) for s, lab in zip(shares, labels) if bool(roles.keyword[lab]) and s >= KEYWORD_SHARE + d]
        if kw:
            top = max(s for s, _ in kw)
            out |= {lab for s, lab in kw if s >= top - EPS}
        elif any(s >= SPEECH_SHARE + d and lab != roles.silence for s, lab in zip(shares, labels)):
            out.add(roles.unknown)
        else:
            out.add(roles.unknown if roles.silence is None else roles.silence)
    return out


@st.composite
def batches(draw, n: int = 64, max_b: int = 6):
    """int16 clips (B, n) of faint noise, each with or without a 'word' (a loud burst at a random
    position), and labels among the keywords, _unknown_ and _silence_."""
    with_silence = draw(st.booleans())
    classes = _classes(with_silence)
    b = draw(st.integers(1, max_b))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pcm = rng.integers(-3, 4, size=(b, n)).astype(np.int16)  # faint, and distinct per clip
    labels = []
    for i in range(b):
        lab = draw(st.integers(0, len(classes) - 1))
        labels.append(lab)
        if classes[lab] != SILENCE or draw(st.booleans()):  # silence clips may hold a noise burst too
            length = draw(st.integers(1, n - 1))
            at = draw(st.integers(0, n - length))
            pcm[i, at:at + length] = rng.choice([-1, 1], length) * rng.integers(500, 20_000, length)
    return classes, torch.from_numpy(pcm), torch.tensor(labels, dtype=torch.int64)


def _all_cuts(pcm: np.ndarray, window: np.ndarray, i: int):
    """Every (left, right, start) whose stream [left, i, right] holds `window` at `start`, as
    stream_windows lays it: start within 3/4 of a clip of the middle clip's own place."""
    b, n = pcm.shape
    reach = (3 * n) // 4
    for left, right in itertools.product(range(b), repeat=2):
        canvas = np.concatenate([pcm[left], pcm[i], pcm[right]])
        for start in range(n - reach, n + reach + 1):
            if np.array_equal(canvas[start:start + n], window):
                yield left, right, start


def _shares(pcm: np.ndarray, parts: tuple[int, int, int], start: int) -> list[float]:
    n = pcm.shape[1]
    out = []
    for p, k in enumerate(parts):
        e = pcm[k].astype(np.float64) ** 2
        lo, hi = min(max(start - p * n, 0), n), min(max(start + n - p * n, 0), n)
        out.append(e[lo:hi].sum() / max(e.sum(), 1e-6))
    return out


@settings(max_examples=120, deadline=None)
@given(batch=batches(), seed=st.integers(0, 2**31 - 1))
def test_every_window_is_a_cut_of_a_three_clip_stream_labelled_by_what_it_holds(batch, seed):
    """prob=1: each output clip is one clip's worth of [neighbour, itself, neighbour] at an offset
    of up to 3/4 of a clip, and its label is the one the energy shares inside it call for
    (recomputed here in float64 from the cut found in the output)."""
    classes, pcm, y = batch
    roles = Roles.of(classes)
    before = pcm.clone(), y.clone()
    out, labels = stream_windows(pcm, y, torch.Generator().manual_seed(seed), roles, 1.0)
    assert torch.equal(pcm, before[0]) and torch.equal(y, before[1])  # the caller's batch is left alone
    assert out.shape == pcm.shape and out.dtype == torch.int16 and labels.dtype == y.dtype
    a, ys = pcm.numpy(), y.tolist()
    for i in range(len(a)):
        cuts = list(_all_cuts(a, out[i].numpy(), i))
        assert cuts, f"window {i} is no cut of a stream around clip {i}"
        allowed = set().union(*(_expected_labels(_shares(a, (lf, i, rt), s), [ys[lf], ys[i], ys[rt]], roles)
                                for lf, rt, s in cuts))
        assert int(labels[i]) in allowed, (i, [classes[k] for k in allowed], classes[int(labels[i])], cuts[:3])


@settings(max_examples=150, deadline=None)
@given(b=st.integers(1, 8), j=st.integers(0, 7), length=st.integers(4, 360), pos=st.floats(0, 1),
       word=st.sampled_from(KWS + [UNKNOWN]), seed=st.integers(0, 2**31 - 1))
def test_a_window_is_the_keyword_only_with_at_least_half_of_its_energy(b, j, length, pos, word, seed):
    """Near-silent _silence_ clips and one word clip: the label of every window follows the share of
    the word's burst that the window holds (located in the output: a run of loud samples per copy)."""
    n = 400
    j = j % b
    classes = _classes(True)
    rng = np.random.default_rng(seed)
    pcm = rng.integers(-2, 3, size=(b, n)).astype(np.int16)
    at = int(pos * (n - length))
    burst = (rng.choice([-1, 1], length) * rng.integers(1000, 30_000, length)).astype(np.int16)
    pcm[j] = 0
    pcm[j, at:at + length] = burst
    energy = float((burst.astype(np.float64) ** 2).sum())
    y = torch.full((b,), classes.index(SILENCE))
    y[j] = classes.index(word)
    out, labels = stream_windows(torch.from_numpy(pcm), y, torch.Generator().manual_seed(seed), Roles.of(classes), 1.0)
    for w, lab in zip(out.numpy(), labels.tolist()):
        loud = np.abs(w.astype(np.int64)) >= 1000
        edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
        shares = [float((w[s:e].astype(np.float64) ** 2).sum()) / energy for s, e in zip(edges[::2], edges[1::2])]
        top = max(shares, default=0.0)
        assume(all(abs(top - t) > EPS for t in (KEYWORD_SHARE, SPEECH_SHARE)))
        if word != UNKNOWN and top >= KEYWORD_SHARE:
            want = word
        elif top >= SPEECH_SHARE:
            want = UNKNOWN
        else:
            want = SILENCE
        assert classes[lab] == want, (top, shares, classes[lab], want)
        if classes[lab] in KWS:
            assert classes[lab] == word and top >= KEYWORD_SHARE


@settings(max_examples=40, deadline=None)
@given(batch=batches(n=200, max_b=8), seed=st.integers(0, 2**31 - 1))
def test_prob_zero_changes_nothing_and_one_seed_gives_one_result(batch, seed):
    classes, pcm, y = batch
    roles = Roles.of(classes)
    out, labels = stream_windows(pcm, y, torch.Generator().manual_seed(seed), roles, 0.0)
    assert torch.equal(out, pcm) and torch.equal(labels, y)
    for prob in (0.5, 1.0):
        first = stream_windows(pcm, y, torch.Generator().manual_seed(seed), roles, prob)
        again = stream_windows(pcm, y, torch.Generator().manual_seed(seed), roles, prob)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_roles_of_a_classifier_is_none_and_of_a_keyword_task_names_them():
    assert Roles.of(["bed", "no", "yes"]) is None
    assert Roles.of(["no", "yes", SILENCE]) is None  # a classifier with silence: still no _unknown_
    r = Roles.of(["no", "yes", UNKNOWN, SILENCE])
    assert r.keyword.tolist() == [True, True, False, False] and r.unknown == 2 and r.silence == 3
    r = Roles.of(["no", UNKNOWN])
    assert r.keyword.tolist() == [True, False] and r.silence is None


# ----------------------------------------------------------------------------- standardise with a floor

@settings(max_examples=80, deadline=None)
@given(std=st.floats(0.5, 20), floor=st.floats(100, 2000), loud=st.floats(3000, 20_000), seed=st.integers(0, 2**16))
def test_quiet_noise_stays_quiet_and_speech_gets_unit_spread(std, floor, loud, seed):
    g = torch.Generator().manual_seed(seed)
    quiet = torch.randn(4, SR, generator=g) * std + 37.0
    out = standardise(quiet.clone(), floor=floor)
    want = quiet.std(dim=1) / floor
    assert torch.allclose(out.std(dim=1), want, rtol=1e-3) and (out.std(dim=1) < 0.25).all()
    assert out.mean(dim=1).abs().max() < 1e-3
    speech = torch.randn(4, SR, generator=g) * loud
    assert torch.allclose(standardise(speech.clone(), floor=floor).std(dim=1), torch.ones(4), atol=1e-3)
    # floor 0 is the standardisation of before: (x - mean) / (std + eps)
    for x in (quiet, speech):
        ref = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-5)
        assert torch.allclose(standardise(x.clone(), floor=0.0), ref, atol=1e-4)
        assert torch.equal(standardise(x.clone(), floor=0.0), standardise(x.clone()))


# ----------------------------------------------------------------------------- streams

KW_LEVEL, OTHER_LEVEL = -20_000, 1_000


def _clip_set(n_kw: int = 6, n_other: int = 10):
    """Keyword clips are a negative DC level, other words a positive one: any negative sample in
    a stream without noise is keyword audio."""
    labels = [("no", "yes")[i % 2] for i in range(n_kw)] + [("bed", UNKNOWN)[i % 2] for i in range(n_other)]
    clips = np.array([[KW_LEVEL if lab in KWS else OTHER_LEVEL] * SR for lab in labels], np.int16)
    return clips, labels


def _free_seconds(streams) -> float:
    return sum(s.seconds for s in streams) - sum(e.end_s - e.start_s for s in streams for e in s.keywords)


@settings(max_examples=12, deadline=None)
@given(hours=st.floats(0.01, 0.2), seed=st.integers(0, 1000), stream_s=st.floats(20, 300),
       with_noise=st.booleans())
def test_keyword_free_streams_reach_the_hours_asked_and_hold_no_keyword(hours, seed, stream_s, with_noise):
    clips, labels = _clip_set()
    noise = (np.random.default_rng(0).normal(0, 300, 20 * SR)).astype(np.int16) if with_noise else np.zeros(0, np.int16)
    opts = StreamOptions(seed=seed, minutes=0.5, stream_s=stream_s, keyword_free_hours=hours)
    gen = iter_streams(clips, labels, {"no", "yes"}, noise, opts)
    assert inspect.isgenerator(gen)
    streams = list(gen)
    free = _free_seconds(streams)
    assert free >= hours * 3600 - 1.0, (free, hours * 3600)
    assert free <= hours * 3600 + max(stream_s, 1.5) + 60  # ... and not far beyond (a stream's worth)
    speech = [s for s in streams if s.kind == "speech"]
    assert all(s.keywords == [] for s in speech)
    assert speech or _free_seconds([s for s in streams if s.kind != "speech"]) >= hours * 3600
    if not with_noise:
        for s in speech:  # no keyword audio either: nothing below zero, and the other words are there
            assert s.audio.min() >= 0 and s.audio.max() > 0
        for s in (s for s in streams if s.kind == "mixed"):  # and keyword audio exactly where the events say
            neg = s.audio < -0.3
            marked = np.zeros(len(s.audio), bool)
            for e in s.keywords:
                marked[int(round(e.start_s * SR)):int(round(e.end_s * SR))] = True
            assert np.array_equal(neg, marked)


def test_streams_are_the_same_for_a_seed_and_are_made_one_at_a_time():
    clips, labels = _clip_set()
    noise = np.random.default_rng(1).normal(0, 300, 20 * SR).astype(np.int16)
    opts = StreamOptions(seed=5, minutes=0.5, stream_s=60, keyword_free_hours=0.05)
    a = list(iter_streams(clips, labels, {"no", "yes"}, noise, opts))
    b = list(iter_streams(clips, labels, {"no", "yes"}, noise, opts))
    assert len(a) == len(b) and {s.kind for s in a} == {"mixed", "noise", "speech"}
    for s, t in zip(a, b):
        assert np.array_equal(s.audio, t.audio) and s.keywords == t.keywords and s.kind == t.kind
    other = list(iter_streams(clips, labels, {"no", "yes"}, noise, StreamOptions(**{**opts.__dict__, "seed": 6})))
    assert any(not np.array_equal(s.audio, t.audio) for s, t in zip(a, other) if s.kind == "speech")
    # a thousand hours asked: the first streams come at once, and only they are made
    huge = iter_streams(clips, labels, {"no", "yes"}, noise, StreamOptions(seed=5, minutes=0.5, stream_s=60,
                                                                           keyword_free_hours=1000))
    t0 = time.perf_counter()
    first = list(itertools.islice(huge, 12))
    assert time.perf_counter() - t0 < 20 and len(first) == 12
    assert sum(s.kind == "speech" for s in first) >= 1


def test_stream_keywords_picks_only_the_given_keywords():
    classes = ["down", "no", "yes", UNKNOWN, SILENCE]
    data = ["down", "no", "yes", UNKNOWN, SILENCE]
    assert stream_keywords(classes, data) == ["down", "no", "yes"]
    assert stream_keywords(classes, data, ["yes"]) == ["yes"]
    assert stream_keywords(classes, data, ["yes", "no"]) == ["yes", "no"]
    assert stream_keywords(classes, ["no", "yes", UNKNOWN]) == ["no", "yes"]  # not in the data: not judged
    assert stream_keywords(classes, data, ["yes", "bed"]) == ["yes"]
    assert stream_keywords(["bed", "cat", "no"], ["bed", "no"]) == ["bed", "no"]  # a classifier's words all count


def _windows(n_s: int, fires: dict[int, tuple[str, float]]) -> Windows:
    labels = [fires.get(i, (SILENCE, 0.99))[0] for i in range(n_s)]
    probs = np.array([fires.get(i, (SILENCE, 0.99))[1] for i in range(n_s)])
    return Windows(starts_s=[float(i) for i in range(n_s)], labels=labels, probs=probs, loud=np.ones(n_s, bool),
                   win_s=1.0)


def test_score_counts_no_false_accept_for_a_word_that_is_not_judged():
    n = 600
    stream = Stream(np.zeros(n * SR, np.float32), [Event("yes", 100, 101)], -40.0, "mixed")
    fires = {100: ("yes", 0.98), 200: ("bed", 0.99), 300: (UNKNOWN, 0.99), 400: ("no", 0.9), 500: ("stop", 0.97)}
    opts = StreamOptions(suppress_ms=0)
    r = score([_windows(n, fires)], [stream], ["yes"], opts, thresholds=(0.5, 0.96))
    for c in r["curve"]:
        assert c["false_accepts"] == 0 and c["frr"] == 0.0, c
    both = score([_windows(n, fires)], [stream], ["yes", "no"], opts, thresholds=(0.5, 0.96))
    assert [c["false_accepts"] for c in both["curve"]] == [1, 0]  # "no" is judged now: its detection counts


@settings(max_examples=60, deadline=None)
@given(fires=st.dictionaries(st.integers(0, 59), st.tuples(st.sampled_from(["yes", "no", "bed", "stop"]),
                                                              st.floats(0.3, 1.0)), max_size=25),
       truth=st.lists(st.integers(0, 58), max_size=4, unique=True), suppress_ms=st.sampled_from([0.0, 1000.0, 2500.0]))
def test_detections_of_words_not_judged_change_nothing(fires, truth, suppress_ms):
    """Judging yes and no: windows topped by another word score exactly as windows of silence would."""
    n = 60
    stream = Stream(np.zeros(n * SR, np.float32), [Event("yes", t, t + 1.0) for t in sorted(truth)], -40.0, "mixed")
    opts = StreamOptions(suppress_ms=suppress_ms)
    quiet = {i: f for i, f in fires.items() if f[0] in ("yes", "no")}
    got = score([_windows(n, fires)], [stream], ["yes", "no"], opts, thresholds=(0.3, 0.5, 0.8, 0.95))
    want = score([_windows(n, quiet)], [stream], ["yes", "no"], opts, thresholds=(0.3, 0.5, 0.8, 0.95))
    assert got["curve"] == want["curve"]


# ----------------------------------------------------------------------------- settings

def test_keywords_listed_in_yaml_are_joined():
    cfg = TrainConfig.from_dict({"keywords": ["yes", "no", "up"]})
    assert cfg.keywords == "yes,no,up" and cfg.keyword_list == ["yes", "no", "up"]
    assert TrainConfig.from_dict({"keywords": " yes, no,,yes "}).keyword_list == ["yes", "no"]
    assert TrainConfig.from_dict({}).keyword_list == []


@pytest.mark.parametrize("settings_, key", [
    ({"augment": {"window_prob": 1.5}}, "window_prob"), ({"window_prob": -0.1}, "window_prob"),
    ({"augment": {"gain_db": -3.0}}, "gain_db"), ({"gain_db": -0.5}, "gain_db"),
    ({"std_floor": -1.0}, "std_floor"), ({"detector_minutes": -2.0}, "detector_minutes"),
    ({"target_fa_per_hour": 0.0}, "target_fa_per_hour"),
])
def test_bad_keyword_settings_are_one_line_naming_the_key(settings_, key):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict(settings_)
    msg = str(e.value)
    assert key in msg and "\n" not in msg, msg
    ok = TrainConfig.from_dict({"window_prob": 0.0, "gain_db": 0.0, "std_floor": 0.0, "detector_minutes": 0.0})
    assert ok.augment.window_prob == 0.0 and ok.detector_minutes == 0.0


# ----------------------------------------------------------------------------- prepare --keywords

@pytest.fixture(scope="module")
def speech_root(tmp_path_factory) -> Path:
    """espeak-ng speech: the 16 default words (10 keywords, 6 others) x 30 speakers, with noise."""
    out = tmp_path_factory.mktemp("kw_speech") / "data"
    p = _run("audionet_ray.corpus.speech_data", out, "--speakers", "30", "--seed", "3", "--quiet", "--jobs", "2", timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_prepare_keywords_makes_the_other_words_unknown(speech_root, tmp_path):
    from audionet_ray.corpus.prepare import load_manifest

    out = tmp_path / "p"
    p = _run("audionet_ray.corpus.prepare", speech_root, out, "--keywords", "yes,no")
    assert p.returncode == 0, p.stderr
    m = load_manifest(out)
    assert m["classes"] == ["no", "yes", UNKNOWN, SILENCE]
    words = sorted(d.name for d in speech_root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    per_word = len(list((speech_root / "yes").glob("*.wav")))
    total = {c: sum(m["counts"][s].get(c, 0) for s in m["counts"]) for c in m["classes"]}
    assert total["yes"] == total["no"] == per_word
    assert total[UNKNOWN] == per_word * (len(words) - 2) and total[SILENCE] > 0
    # which clip went where, from the shards themselves
    import pyarrow.parquet as pq

    for shard in m["shards"]:
        t = pq.read_table(out / shard, columns=["path", "label"])
        for path, label in zip(t.column("path").to_pylist(), t.column("label").to_pylist()):
            word = path.split("/")[0]
            want = word if word in ("yes", "no") else (SILENCE if word == SILENCE else UNKNOWN)
            assert m["classes"][label] == want, (path, m["classes"][label])


@pytest.mark.parametrize("args, needles", [
    (["--keywords", "yes,no", "--words", "yes,no"], ["--keywords", "--words"]),
    (["--keywords", "yes,no", "--unknown"], ["--keywords"]),
    (["--keywords", "yes,zebra"], ["zebra", "the words there are", "bed"]),
    (["--keywords", " , "], ["--keywords", "no keyword given"]),
])
def test_prepare_keywords_bad_input_is_one_line(speech_root, tmp_path, args, needles):
    line = _error_line(_run("audionet_ray.corpus.prepare", speech_root, tmp_path / "p", *args))
    for n in needles:
        assert n in line, (n, line)
    assert not (tmp_path / "p" / "manifest.json").exists()


def test_a_prepared_classifier_given_with_keywords_is_refused_naming_them(prepared_demo, tmp_path):
    from audionet_ray.pipeline.data import ensure_prepared

    with pytest.raises(DatasetError) as e:
        ensure_prepared(prepared_demo, cache_dir=tmp_path, keywords=["yes", "no"])
    msg = str(e.value)
    assert "no, yes" in msg and "--keywords no,yes" in msg and "\n" not in msg, msg
    assert ensure_prepared(prepared_demo, cache_dir=tmp_path) == prepared_demo  # without keywords: as it is


def test_metric_frr_at_target_needs_keywords(prepared_demo, tmp_path, capsys):
    from audionet_ray.tune import main

    assert main(["--search-space", "smoke", "--data", str(prepared_demo), "--metric", "frr_at_target",
                 "--storage", str(tmp_path), "--name", "x", "--no-export"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "frr_at_target" in err[0] and "--keywords" in err[0], err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("metric,mode", [("frr_at_target", "min"), ("val_loss", "min"), ("val_accuracy", "max")])
def test_a_known_metric_is_ranked_its_own_way_whatever_the_space_says(tmp_path, metric, mode):
    """A space naming frr_at_target with the default mode (max) would make ASHA, TPE, Train's
    retention and export favour the worst detectors; a Train run's export (no search.json) too."""
    import argparse

    import yaml

    from audionet_ray.deploy.export import metric_mode
    from audionet_ray.tuning.search_space import load_spec
    from audionet_ray.tune import apply_keywords

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml").read_text())
    raw["tune"].update(metric=metric, mode="max" if mode == "min" else "min")  # the wrong way round
    if metric == "frr_at_target":  # (a keyword search that names val_accuracy is moved to frr_at_target)
        raw["fixed"]["keywords"] = ["yes", "no"]
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(raw))
    spec = load_spec(space)
    apply_keywords(spec, argparse.Namespace(keywords=None, metric=None))
    assert (spec.tune.metric, spec.tune.mode) == (metric, mode)
    assert metric_mode(tmp_path / "not-a-search", metric) == mode


def test_resume_takes_a_repeated_option_as_the_search_resolved_it(tmp_path, monkeypatch):
    """--resume with the first command's own options: a space's name for its file, keywords in
    another order, a relative storage path for the resolved one, the dataset root it prepared."""
    from audionet_ray.tuning.search_space import load_spec
    from audionet_ray.tune import _same

    root = tmp_path / "data"
    root.mkdir()
    record = {"data": str(tmp_path / "cache" / "prepared"), "data_given": str(root)}
    assert _same("search_space", "smoke", load_spec("smoke").source, record)
    assert not _same("search_space", "default", load_spec("smoke").source, record)
    assert _same("keywords", "no,yes", "yes,no", record) and _same("keywords", "yes, no", ["no", "yes"], record)
    assert not _same("keywords", "yes", "yes,no", record)
    assert _same("data", str(root), record["data"], record) and _same("data", record["data"], record["data"], record)
    assert not _same("data", str(tmp_path / "other"), record["data"], record)
    monkeypatch.chdir(tmp_path)
    assert _same("storage", "runs", tmp_path / "runs", record)


# ----------------------------------------------------------------------------- a real keyword search

@pytest.mark.slow
def test_keyword_search_ranks_by_frr_and_exports_a_detector(ray_session, speech_root, tmp_path):
    """tune --keywords yes,no on generated speech: trials report frr_at_target (smoke checkpoints every
    2 epochs: epoch 1 measures it too, or Tune would find its metric missing), the bundle is a
    keyword detector with a bounded standardisation, the search judges it on test-speaker streams,
    and evaluate --streaming names the bundle's keywords when given others."""
    import ray

    space = "smoke"
    env = {"AUDIONET_CACHE": str(tmp_path / "cache")}
    p = _run("audionet_ray.tune", "--search-space", space, "--data", speech_root, "--keywords", "yes,no",
             "--num-samples", "2", "--storage", tmp_path, "--name", "k",
             "--address", ray.get_runtime_context().gcs_address, timeout=1500, env=env)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    exp = tmp_path / "k"
    with open(exp / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"best_frr_at_target", "last_frr_at_target"} <= set(rows[0]), rows
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in ("best_frr_at_target", "last_frr_at_target")), rows
    from audionet_ray.training.checkpoint import read_meta

    metas = [read_meta(d)[0] for d in exp.glob("train_runs/*/checkpoint_*") if d.is_dir()]
    assert metas and all("frr_at_target" in m["metrics"] for m in metas)
    assert all(m["train_config"]["keywords"] == "yes,no" and m["train_config"]["std_floor"] == 100 for m in metas)
    config = json.loads((exp / "bundle" / "config.json").read_text())
    assert config["task"] == "keywords" and config["keywords"] == ["no", "yes"]
    assert config["classes"] == ["no", "yes", UNKNOWN, SILENCE]
    assert config["selection"]["metric"] == "frr_at_target" and config["selection"]["mode"] == "min"
    assert config["preprocessing"]["standardise"]["floor"] == 100
    assert "as a keyword spotter on test-speaker streams" in p.stdout, p.stdout[-3000:]

    line = _error_line(_run("audionet_ray.deploy.evaluate", exp / "bundle", "--streaming", "--keywords", "nonsense",
                            env=env))
    assert "nonsense" in line and "no, yes" in line, line
