"""The detector's two readings of a window: "top" (a keyword counts only as the window's top
class) and "keyword" (its most probable keyword counts at the threshold, whatever _unknown_
scores). Windows are built here from drawn probability matrices with numpy, apart from the code
under test; the real model's readings are checked on a real (untrained) bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from audionet_ray.detection.bundle import load
from audionet_ray.detection.predict import RULES, Windows, detector_settings, scan_whole_file
from test_predict import CLASSES, SR, _recording, _run, tiny_bundle  # noqa: F401

KEYWORD_COLS = [i for i, c in enumerate(CLASSES) if not c.startswith("_")]


def _windows(probs: np.ndarray) -> Windows:
    top = probs.argmax(1)
    kw = np.array(KEYWORD_COLS)[probs[:, KEYWORD_COLS].argmax(1)]
    n = len(probs)
    return Windows(starts_s=[0.25 * i for i in range(n)], labels=[CLASSES[i] for i in top],
                   probs=probs[np.arange(n), top], loud=np.ones(n, bool), win_s=1.0,
                   keyword_labels=[CLASSES[i] for i in kw], keyword_probs=probs[np.arange(n), kw])


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


probability_rows = st.integers(2, 40).flatmap(
    lambda n: arrays(np.float64, (n, len(CLASSES)), elements=st.floats(-6, 6))).map(_softmax)


@settings(max_examples=200, deadline=None)
@given(probs=probability_rows, threshold=st.floats(0.05, 0.999))
def test_the_rules_agree_above_one_half_and_keyword_finds_all_top_finds(probs, threshold):
    w = _windows(probs)
    top = w.detections(threshold, suppress_ms=0, rule="top")
    kw = w.detections(threshold, suppress_ms=0, rule="keyword")
    if threshold > 0.5:  # a probability over 0.5 is the window's top class
        assert [(d.label, d.time_s, d.start_s, d.end_s, d.prob) for d in top] == \
               [(d.label, d.time_s, d.start_s, d.end_s, d.prob) for d in kw]
    for d in top:  # every window top fires on, keyword fires on too, with the same label
        assert any(k.label == d.label and k.start_s <= d.start_s and d.end_s <= k.end_s and k.prob >= d.prob
                   for k in kw), (d, kw)


def test_a_keyword_under_unknown_fires_only_by_the_keyword_rule():
    """'_unknown_' 0.55 and 'yes' 0.40 for a word's four windows: top never says yes, at any threshold."""
    probs = np.full((12, len(CLASSES)), 0.01)
    probs[:, 0] = 0.95
    probs[4:8] = [0.01, 0.55, 0.40, 0.02, 0.01, 0.01]
    w = _windows(probs / probs.sum(1, keepdims=True))
    assert w.detections(0.05, rule="top") == []
    (d,) = w.detections(0.35, rule="keyword")
    assert d.label == "yes" and (d.start_s, d.end_s) == (1.0, 2.75)
    assert w.detections(0.45, rule="keyword") == []
    with pytest.raises(ValueError, match="detector rule 'any': choose from top, keyword"):
        w.detections(0.5, rule="any")


def test_windows_without_a_keyword_reading_read_as_top():
    """Hand-built windows of a model whose classes are all keywords carry no second reading."""
    w = Windows(starts_s=[0.0, 0.25], labels=["yes", "yes"], probs=np.array([0.3, 0.7]), loud=np.ones(2, bool), win_s=1.0)
    assert [d.prob for d in w.detections(0.2, rule="keyword")] == [d.prob for d in w.detections(0.2, rule="top")] == [0.7]


def test_the_scan_reads_each_windows_most_probable_keyword(tiny_bundle):
    b = load(tiny_bundle)
    audio = _recording(12.0, SR, seed=3)[:, 0]
    w = scan_whole_file(b, audio, 250, 0)  # no averaging: each window's own probabilities
    starts = [int(round(t * SR)) for t in w.starts_s]
    probs = b.predict_proba(np.stack([audio[s:s + b.clip_samples] for s in starts]))
    kw = probs[:, KEYWORD_COLS]
    np.testing.assert_allclose(w.keyword_probs, kw.max(1), rtol=0, atol=1e-6)
    assert w.keyword_labels == [CLASSES[KEYWORD_COLS[i]] for i in kw.argmax(1)]
    assert all(lab in CLASSES[2:] for lab in w.keyword_labels)


def test_a_bundle_says_its_rule_and_one_calibrated_before_the_rule_keeps_top(tiny_bundle, tmp_path):
    b = load(tiny_bundle)
    assert detector_settings(b)["rule"] == RULES[0] == "top"  # uncalibrated
    b.config["operating_point"] = {"threshold": 0.3}  # calibrated before the rule was recorded
    assert detector_settings(b)["rule"] == "top"
    b.config["operating_point"] = {"threshold": 0.3, "rule": "keyword"}
    assert detector_settings(b)["rule"] == "keyword"


def test_predict_takes_rule_from_the_command_line(tiny_bundle, tmp_path):
    f = tmp_path / "rec.wav"
    sf.write(f, _recording(8.0, SR, seed=4), SR, subtype="PCM_16")
    docs = {}
    for rule in RULES:
        p = _run("audionet_ray.detection.predict", str(tiny_bundle), str(f), "--format", "json", "--rule", rule, "--threshold", "0.05")
        assert p.returncode == 0, p.stderr
        docs[rule] = json.loads(p.stdout)
        assert docs[rule]["rule"] == rule
    n = {rule: len(doc["files"][0]["detections"]) for rule, doc in docs.items()}
    assert n["keyword"] >= 1 and all(d["label"] in CLASSES[2:] for d in docs["keyword"]["files"][0]["detections"])
    p = _run("audionet_ray.detection.predict", str(tiny_bundle), str(f), "--rule", "best")
    assert p.returncode == 2 and "--rule: invalid choice: 'best'" in p.stderr
