"""negatives.py: which negative words a detector fires on, named by what they say."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from audionet_ray.corpus.discover import escape_path
from audionet_ray.detection.negatives import kinds_of, text_of

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz'", min_size=1, max_size=12)


@given(words=st.lists(WORD, min_size=1, max_size=3), speaker=st.text(alphabet="0123456789abcdef", min_size=4,
                                                                     max_size=8))
def test_a_wakeword_negative_says_the_text_of_its_file_name(words, speaker):
    text = " ".join(words)
    path = escape_path(f"_unknown_/{speaker}_nohash_{text.replace(' ', '_')}.wav")
    assert text_of(path) == text


@given(word=WORD.filter(lambda w: w != "_unknown_"), take=st.integers(0, 9))
def test_a_word_folder_negative_says_its_folder(word, take):
    assert text_of(escape_path(f"{word}/ab12cd_nohash_{take}.wav")) == word


def test_kinds_come_from_the_wakeword_manifest_and_nothing_else(tmp_path):
    assert kinds_of(None) == {} and kinds_of(tmp_path) == {}
    (tmp_path / "wakeword.json").write_text(json.dumps({"unknown": {
        "_unknown_/a_nohash_commuter.wav": "confusables", "_unknown_/a_nohash_hey.wav": "parts",
        "_unknown_/a_nohash_table.wav": "other_words"}}))
    assert kinds_of(tmp_path) == {"_unknown_/a_nohash_commuter.wav": "confusable", "_unknown_/a_nohash_hey.wav": "part",
                                  "_unknown_/a_nohash_table.wav": "other word"}
    (tmp_path / "wakeword.json").write_text("{not json")
    assert kinds_of(tmp_path) == {}


# ----------------------------------------------------------------------------- a real bundle

from test_export import WORDS, _run, word_bundle, word_checkpoint, word_data  # noqa: E402,F401


def test_the_words_a_bundle_does_not_know_are_scored_by_text(word_bundle, prepared_demo):
    """The four-word bundle of test_export on the demo's test split with every word: the other
    words are its negatives; each is scored on all its clips, and the share that fires falls
    from all to none as the threshold rises."""
    import pyarrow.parquet as pq

    from audionet_ray.detection.bundle import load
    from audionet_ray.detection.negatives import firing_negatives
    from audionet_ray.corpus.prepare import load_manifest

    m = load_manifest(prepared_demo)
    others = [c for c in m["classes"] if c not in WORDS]
    want = {}
    for name in m["split_shards"]["test"]:
        for label in pq.read_table(prepared_demo / name, columns=["label"]).column("label").to_pylist():
            if m["classes"][label] in others:
                want[m["classes"][label]] = want.get(m["classes"][label], 0) + 1
    b = load(word_bundle)
    got = firing_negatives(b, prepared_demo, 0.5, top=100)
    assert {f.text: f.clips for f in got} == want and all(f.kind == "word" for f in got)
    assert all(0 <= f.fires <= 1 and f.mean_probability <= f.max_probability <= 1 for f in got)
    assert all(f.top_keyword in WORDS for f in got)
    assert [(-f.fires, -f.mean_probability) for f in got] == sorted((-f.fires, -f.mean_probability) for f in got)
    assert all(f.fires == 1.0 for f in firing_negatives(b, prepared_demo, 0.0, top=100))
    assert all(f.fires == 0.0 for f in firing_negatives(b, prepared_demo, 1.01, top=100))
    assert len(firing_negatives(b, prepared_demo, 0.5, top=2)) == min(2, len(want))


def test_evaluate_streaming_names_the_negatives_that_fire(word_bundle, prepared_demo, tmp_path):
    out = tmp_path / "eval"
    p = _run("audionet_ray.deploy.evaluate", str(word_bundle), "--data", str(prepared_demo), "--streaming", "--out", str(out),
             "--minutes", "1")
    assert p.returncode == 0, p.stderr
    r = json.loads((out / "streaming_metrics.json").read_text())
    texts = {f["text"] for f in r["firing_negatives"]}
    assert texts and not texts & set(WORDS), texts
    if any(f["fires"] > 0 for f in r["firing_negatives"]):
        assert "reach the threshold most" in p.stdout
