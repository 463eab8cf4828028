"""negatives.py: which negative words a detector fires on, named by what they say."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from audionet_ray.discover import escape_path
from audionet_ray.negatives import kinds_of, text_of

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
