"""Streaming evaluation: streams with known keyword times, FA/h and FRR arithmetic, the DET CLI.

The detector and the model are the real ones: the word bundle of test_export.py (a small
AudioNet trained here on four demo words), fed streams built from clips it is sure of.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray.detection.bundle import load
from audionet_ray.detection.predict import Windows, scan
from audionet_ray.detection.streaming import (Event, Stream, StreamOptions, build_streams, count_once, enough_audio,
                                    evaluate_streams, operating_point, score)

from test_export import SR, WORDS, _confident_clips, _run, word_bundle, word_checkpoint, word_data  # noqa: F401


# ----------------------------------------------------------------------------- arithmetic, by hand

def _windows(n_s: int, fires: dict[int, tuple[str, float]]) -> Windows:
    """One window per second of an n_s-second stream; window i fires label/prob where given."""
    labels = [fires.get(i, ("_silence_", 0.99))[0] for i in range(n_s)]
    probs = np.array([fires.get(i, ("_silence_", 0.99))[1] for i in range(n_s)])
    return Windows(starts_s=[float(i) for i in range(n_s)], labels=labels, probs=probs,
                   loud=np.ones(n_s, bool), win_s=1.0)


def test_fa_per_hour_on_a_hand_checked_stream():
    """600 s, keywords yes@100-101 and stop@300-301. Windows (centre = start + 0.5):
    yes at 100 (hit), stop at 200 (false accept: no stop there), left at 400 and again at 401
    (one run: one false accept), yes at 500 with 0.7 (a false accept above 0.65 only); stop is missed."""
    n = 600
    stream = Stream(np.zeros(n * SR, np.float32), [Event("yes", 100, 101), Event("stop", 300, 301)], -40.0, "mixed")
    w = _windows(n, {100: ("yes", 0.95), 200: ("stop", 0.9), 400: ("left", 0.9), 401: ("left", 0.8),
                     500: ("yes", 0.7)})
    opts = StreamOptions(suppress_ms=0)
    r = score([w], [stream], ["yes", "stop", "left"], opts, thresholds=(0.5, 0.75, 0.99))
    free_h = (n - 2) / 3600
    assert r["keyword_free_hours"] == pytest.approx(free_h)
    at = {c["threshold"]: c for c in r["curve"]}
    assert at[0.5]["false_accepts"] == 3 and at[0.5]["fa_per_hour"] == pytest.approx(3 / free_h)
    assert at[0.75]["false_accepts"] == 2
    assert at[0.99]["false_accepts"] == 0 and at[0.99]["fa_per_hour"] == 0
    assert at[0.5]["frr_per_keyword"] == {"yes": 0.0, "stop": 1.0, "left": None}
    assert at[0.5]["frr"] == 0.5 and at[0.99]["frr"] == 1.0
    assert operating_point(r, 2 / free_h)["threshold"] == 0.75  # the lowest threshold at or under the target
    assert operating_point(r, 0.1)["threshold"] == 0.99


@settings(max_examples=60, deadline=None)
@given(times=st.lists(st.floats(0, 30), min_size=1, max_size=12), refractory=st.floats(0.1, 3))
def test_repeats_within_the_refractory_window_count_once(times, refractory):
    from audionet_ray.detection.predict import Detection

    dets = [Detection("yes", t, t - 0.5, t + 0.5, 0.9) for t in times]
    kept = count_once(dets, refractory)
    ts = [d.time_s for d in kept]
    assert ts == sorted(ts) and ts[0] == min(times)
    assert all(b - a >= refractory for a, b in zip(ts, ts[1:]))  # counted ones are far enough apart
    assert all(any(0 <= t - k < refractory for k in ts) for t in times)  # every repeat is near a counted one


@settings(max_examples=40, deadline=None)
@given(n_kw=st.integers(0, 8), hit=st.lists(st.booleans(), min_size=8, max_size=8),
       n_fa=st.integers(0, 6), seconds=st.integers(120, 400))
def test_fa_and_frr_arithmetic_on_generated_streams(n_kw, hit, n_fa, seconds):
    """Keywords every 10 s from 5 s, detected where `hit` says; false windows every 10 s from the end back."""
    truth = [Event("yes", 5 + 10 * i, 6 + 10 * i) for i in range(n_kw)]
    fires = {5 + 10 * i: ("yes", 0.9) for i in range(n_kw) if hit[i]}
    fires.update({seconds - 3 - 10 * j: ("yes", 0.9) for j in range(n_fa)})
    stream = Stream(np.zeros(seconds * SR, np.float32), truth, None, "mixed")
    r = score([_windows(seconds, fires)], [stream], ["yes"], StreamOptions(suppress_ms=0), thresholds=(0.5,))
    (c,) = r["curve"]
    free_h = (seconds - n_kw) / 3600
    assert c["false_accepts"] == n_fa
    assert c["fa_per_hour"] == pytest.approx(n_fa / free_h)
    missed = sum(not h for h in hit[:n_kw])
    assert c["frr"] == (missed / n_kw if n_kw else None)


def test_too_little_audio_is_said():
    ok, note = enough_audio(0.5, 1.0)
    assert not ok and "30.0 min" in note and "3.0 h are needed" in note
    ok, note = enough_audio(10, 1.0)
    assert ok and "0.3/h" in note


# ----------------------------------------------------------------------------- the real detector

def test_streams_are_deterministic_and_hold_their_clips(word_data):
    from audionet_ray.detection.streaming import dataset_noise, split_clips

    clips, ids = split_clips(word_data, "test")
    classes = json.loads((word_data / "manifest.json").read_text())["classes"]
    labels = [classes[i] for i in ids]
    noise = dataset_noise(word_data)
    opts = StreamOptions(seed=3, stream_s=8.0, noise_dbfs=(-40.0, -30.0))
    a, b = build_streams(clips, labels, set(WORDS), noise, opts), build_streams(clips, labels, set(WORDS), noise, opts)
    assert len(a) == len(b) and all(np.array_equal(x.audio, y.audio) and x.keywords == y.keywords for x, y in zip(a, b))
    c = build_streams(clips, labels, set(WORDS), noise, StreamOptions(seed=4, stream_s=8.0, noise_dbfs=(-40.0, -30.0)))
    assert any(x.keywords != y.keywords for x, y in zip(a, c))
    mixed = [s for s in a if s.kind == "mixed"]
    assert sum(len(s.keywords) for s in mixed) == sum(lab in WORDS for lab in labels)  # every test keyword once
    assert {s.noise_dbfs for s in mixed} == {-40.0, -30.0}
    noise_only = [s for s in a if s.kind == "noise"]
    assert sum(s.seconds for s in noise_only) == pytest.approx(2 * len(noise) / SR, abs=2 * 8)
    for s in mixed:  # the noise bed sits at its level where no clip is
        gap = s.audio[: int(0.25 * SR)]
        assert 20 * math.log10(np.sqrt(np.mean(gap.astype(np.float64) ** 2))) == pytest.approx(s.noise_dbfs, abs=3)
        for e in s.keywords:
            assert 0 <= e.start_s and e.end_s == pytest.approx(e.start_s + 1) and e.end_s <= s.seconds


def test_a_stream_of_confident_clips_gives_its_known_detections(word_bundle, word_data):
    """Two words the model is sure of, four times each at random times over quiet noise: the
    detector finds every one at its time and fires nowhere else. Clips and gaps sit on a
    one-second grid and the window steps by a second, so each window holds one whole clip or
    noise alone, as in training: this tiny model is sensitive to where a word sits in its window
    (a window a quarter second early can read "yes" as "down"), which is what the unaligned
    streams of evaluate --streaming measure."""
    from audionet_ray.detection.streaming import dataset_noise

    pairs = _confident_clips(word_bundle, word_data, 2)
    clips = np.stack([c for _, c in pairs] * 4)
    labels = [w for w, _ in pairs] * 4
    opts = StreamOptions(seed=1, stream_s=30.0, noise_dbfs=(-50.0,), gap_s=(1.0, 3.0), align_s=1.0,
                         stride_ms=1000, average_ms=0)
    streams = [s for s in build_streams(clips, labels, set(WORDS), dataset_noise(word_data), opts) if s.kind == "mixed"]
    assert sum(len(s.keywords) for s in streams) == 8
    b = load(word_bundle)
    windows = [scan(b, s.audio, opts.stride_ms, opts.average_ms) for s in streams]
    for w, s in zip(windows, streams):
        dets = count_once(w.detections(0.6, opts.suppress_ms), opts.refractory_s)
        assert [d.label for d in dets] == [e.label for e in s.keywords], (dets, s.keywords)
        for d, e in zip(dets, s.keywords):
            assert d.time_s == pytest.approx((e.start_s + e.end_s) / 2)  # the window that holds it
    r = score(windows, streams, [w for w, _ in pairs], opts, thresholds=(0.6,))
    assert r["curve"][0]["frr"] == 0 and r["curve"][0]["false_accepts"] == 0


def test_evaluate_streaming_cli_writes_det_png_and_metrics(word_bundle, word_data, tmp_path):
    out = tmp_path / "eval"
    p = _run("audionet_ray.deploy.evaluate", str(word_bundle), "--data", str(word_data), "--streaming", "--out", str(out),
             "--target-fa-per-hour", "2", "--int8")
    assert p.returncode == 0, p.stderr
    png = out / "det_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = json.loads((out / "streaming_metrics.json").read_text())
    assert r["split"] == "test" and r["target_fa_per_hour"] == 2 and set(r["keywords"]) == set(WORDS)
    assert r["backend"] == "int8"
    assert r["noise_only_hours"] > 0 and r["keyword_free_hours"] > r["noise_only_hours"]
    assert not r["enough_audio"] and "warning: only" in p.stdout  # the demo's noise is a few minutes long
    fa = [c["fa_per_hour"] for c in r["curve"]]
    assert all(a >= b for a, b in zip(fa, fa[1:]))  # fewer false accepts as the threshold rises
    for k in WORDS:
        assert k in p.stdout
    again = evaluate_streams(load(word_bundle, backend="int8"), word_data, "test", StreamOptions(**{
        **r["options"], "gap_s": tuple(r["options"]["gap_s"]), "noise_dbfs": tuple(r["options"]["noise_dbfs"])}), 2)
    assert again.curve == r["curve"]  # reproducible from what the JSON records


@pytest.mark.parametrize("args, msg", [(["--target-fa-per-hour", "0"], "--target-fa-per-hour must be > 0"),
                                       (["--minutes", "-1"], "--minutes must be > 0")])
def test_evaluate_streaming_bad_options_are_one_line(word_bundle, word_data, args, msg):
    p = _run("audionet_ray.deploy.evaluate", str(word_bundle), "--data", str(word_data), "--streaming", *args)
    assert p.returncode == 2 and p.stderr.strip() == f"error: {msg}, got {args[1]}" and "Traceback" not in p.stderr


def test_report_shows_the_bundles_figures_and_det_curve(word_bundle, word_data, tmp_path):
    import shutil

    from audionet_ray.reporting.report import _bundle_section

    b = tmp_path / "bundle"
    shutil.copytree(word_bundle, b)
    before = _bundle_section(b, tmp_path / "plots", tmp_path)
    assert "operating point" in before and "int8 model" in before and "MACs per second of audio" in before
    assert "No DET curve yet" in before
    p = _run("audionet_ray.deploy.evaluate", str(b), "--data", str(word_data), "--streaming", "--minutes", "1")
    assert p.returncode == 0, p.stderr
    after = _bundle_section(b, tmp_path / "plots", tmp_path)
    assert '<img src="plots/det_curve.png"' in after and (tmp_path / "plots" / "det_curve.png").stat().st_size > 1000


def test_the_probe_ranks_a_split_without_keywords_last_instead_of_failing(word_bundle, word_data):
    """Validation speakers who never say a keyword leave the FRR undefined: the probe reports the
    worst (1.0), since ASHA and TPE need a number and a crash would end the trial."""
    from audionet_ray.detection.streaming import DetectorProbe

    from test_export import _split

    x, y, _ = _split(word_data, "trainval")
    classes = json.loads((word_data / "manifest.json").read_text())["classes"]
    labels = [classes[i] for i in y]
    keep = [i for i, c in enumerate(labels) if c != WORDS[0]]
    probe = DetectorProbe(x[keep], [labels[i] for i in keep], [WORDS[0]], np.zeros(16_000 * 5, np.int16), 0.5, 1.0)
    assert probe.measure(load(word_bundle))["frr_at_target"] == 1.0
