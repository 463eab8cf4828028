"""Keywords from text (keyword_source, tune --synthesize): the real espeak-ng generator with few
speakers, real folders and links, prepare and discover on the result, the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray.training.config import ConfigError, TrainConfig
from audionet_ray.corpus.discover import UNKNOWN, discover
from audionet_ray.corpus.keyword_source import MERGED, source_for
from audionet_ray.tuning.search_space import SearchSpec, load_spec
from audionet_ray.corpus.wakeword import MANIFEST

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(speakers=8, takes=2, confusables=2, other_words=2, jobs=2, progress=False)  # ~80 clips, seconds


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def synth(cache) -> Path:
    """marmalade and yes, spoken by 8 speakers, in the module's cache."""
    out, folders = source_for(["marmalade", "Yes"], None, cache, **SMALL)
    assert folders == ["marmalade", "yes"]
    return out


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_a_synthesized_set_is_cached_and_reused(synth, cache):
    before = _mtimes(synth)
    again, _ = source_for(["marmalade", "yes"], None, cache, **SMALL)  # the same phrases, other case
    assert again == synth and _mtimes(synth) == before
    assert len(list((synth / "marmalade").glob("*.wav"))) == 16
    assert not [p for p in synth.parent.iterdir() if ".tmp-" in p.name]  # written aside, then renamed


def test_a_half_written_set_is_made_again(cache, tmp_path):
    out, _ = source_for(["marmalade"], None, tmp_path, **{**SMALL, "speakers": 3, "takes": 1})
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))  # as a killed run leaves it
    (out / "marmalade" / "stray.wav").write_bytes(b"")
    killed = out.with_name(f"{out.name}.tmp-999999999")  # a killed run's folder: no such process
    (killed / "marmalade").mkdir(parents=True)
    again, _ = source_for(["marmalade"], None, tmp_path, **{**SMALL, "speakers": 3, "takes": 1})
    assert again == out and json.loads((out / MANIFEST).read_text())["complete"]
    assert not (out / "marmalade" / "stray.wav").exists() and not killed.exists()


def test_data_joins_the_synthesized_keywords_and_its_words_become_negatives(synth, cache, demo_root, capsys):
    merged, folders = source_for(["marmalade", "yes"], demo_root, cache, **{**SMALL, "progress": True})
    said = capsys.readouterr().out
    assert "keyword yes: 24 clips from" in said and "16 synthesized, used together" in said
    d = discover(merged, [*folders, UNKNOWN])
    assert d.classes == ["marmalade", "yes", UNKNOWN]
    by_class = {c: [it.path for it in d.items if d.classes[it.label] == c] for c in d.classes}
    yes = {Path(p).name for p in by_class["yes"]}
    assert yes >= {p.name for p in (demo_root / "yes").iterdir()} | {p.name for p in (synth / "yes").iterdir()}
    assert any(p.startswith("no/") for p in by_class[UNKNOWN])  # the data's other words
    assert any(p.startswith(f"{UNKNOWN}/") for p in by_class[UNKNOWN])  # the synthesized negatives
    assert (merged / MANIFEST).is_file() and json.loads((merged / MERGED).read_text())["shared"] == ["yes"]
    tests = set((merged / "testing_list.txt").read_text().split())
    assert tests >= set((demo_root / "testing_list.txt").read_text().split())
    assert tests >= set((synth / "testing_list.txt").read_text().split())
    assert all((merged / p).is_file() for p in tests)  # every listed path is there, relative to the merged root
    assert not (merged / "yes").is_symlink() and (merged / "no").is_symlink()  # shared: a real folder of links


def test_a_merged_folder_is_made_again_when_the_data_changes(synth, cache, demo_root, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    first, _ = source_for(["marmalade", "yes"], data, cache, **SMALL)
    assert source_for(["marmalade", "yes"], data, cache, **SMALL)[0] == first
    (data / "bed").mkdir()
    shutil.copy(next((data / "no").iterdir()), data / "bed" / "abc_nohash_0.wav")
    second, _ = source_for(["marmalade", "yes"], data, cache, **SMALL)
    assert second != first and (second / "bed" / "abc_nohash_0.wav").is_file()


def test_prepare_reads_the_merged_folder_as_a_keyword_task(synth, cache, demo_root, tmp_path):
    from audionet_ray.pipeline.data import ensure_prepared
    from audionet_ray.corpus.prepare import load_manifest

    merged, folders = source_for(["marmalade", "yes"], demo_root, cache, **SMALL)
    prepared = ensure_prepared(merged, tmp_path, progress=False, keywords=folders)
    assert load_manifest(prepared)["classes"][:3] == ["marmalade", "yes", UNKNOWN]


@pytest.mark.parametrize("keywords, message", [
    ("naïve", "--keywords: "),
    ("hey 42", "--keywords: "),
])
def test_an_unspeakable_keyword_is_one_line(keywords, message, tmp_path):
    with pytest.raises(ConfigError) as e:
        source_for([keywords], None, tmp_path, **SMALL)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "synthesized").exists() or not any((tmp_path / "synthesized").iterdir())


def test_a_prepared_folder_cannot_be_joined(prepared_demo, tmp_path):
    with pytest.raises(ConfigError, match="--data .*a prepared folder"):
        source_for(["marmalade"], prepared_demo, tmp_path, **SMALL)


@pytest.mark.parametrize("argv, said", [
    (["--keywords", "", "--synthesize"], "error: --keywords: no keyword given"),
    (["--keywords", "naïve", "--synthesize"], "error: --keywords: "),
    (["--keywords", "hey, 42", "--synthesize"], "error: --keywords: "),
    (["--synthesize"], "error: --synthesize: no keyword to speak"),
    (["--keywords", "marmalade", "--synthesize-speakers", "8"], "error: --synthesize-speakers: only with --synthesize"),
    (["--keywords", "marmalade", "--synthesize", "--synthesize-speakers", "2"], "error: --synthesize-speakers 2: "),
    (["--keywords", "marmalade", "--synthesize-engines", "espeak"], "error: --synthesize-engines: only with --synthesize"),
    (["--keywords", "marmalade", "--synthesize", "--synthesize-engines", "espeak,klatt"],
     "error: --synthesize-engines espeak,klatt: no such engine klatt; choose from espeak, espeak-klatt"),
    (["--keywords", "marmalade", "--synthesize", "--synthesize-engines", ","],
     "error: --synthesize-engines ,: no engine given; choose from espeak, espeak-klatt"),
])
def test_cli_bad_keywords_are_one_line_without_traceback(argv, said, tmp_path):
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", *argv, "--storage", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "AUDIONET_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith(said) and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr


def test_engines_keep_the_speakers_to_their_voices(cache):
    from audionet_ray.corpus.speech_data import ENGINES, variants
    from audionet_ray.corpus.wakeword import synthesized_with

    out, _ = source_for(["marmalade"], None, cache, **{**SMALL, "speakers": 6}, engines=("espeak-klatt",))
    assert synthesized_with(out)["engines"] == ["espeak-klatt"]
    used = {v.split("+")[1] for v in json.loads((out / MANIFEST).read_text())["voices"].values()}
    assert used and used <= set(variants(engines=("espeak-klatt",))) and not used & set(variants(engines=("espeak",)))
    every, _ = source_for(["marmalade"], None, cache, **{**SMALL, "speakers": 6})
    assert every != out and synthesized_with(every)["engines"] == list(ENGINES)  # its own cache entry


def test_resume_compares_engines_as_a_set_and_none_saved_as_all():
    from audionet_ray.tune import _same

    assert _same("synthesize_engines", "espeak-klatt, espeak", None, {})
    assert _same("synthesize_engines", "espeak", ["espeak"], {})
    assert not _same("synthesize_engines", "espeak", ["espeak", "espeak-klatt"], {})
    assert not _same("synthesize_engines", "klatt", ["espeak"], {})


def test_api_search_refuses_an_unknown_engine_before_synthesizing(tmp_path, monkeypatch):
    from audionet_ray.api import search

    monkeypatch.setenv("AUDIONET_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError) as e:
        search(keywords="marmalade", synthesize=True, synthesize_engines=["espeak", "mbrola"], storage=tmp_path)
    assert str(e.value) == "--synthesize-engines espeak,mbrola: no such engine mbrola; choose from espeak, espeak-klatt (commas separate several)"
    assert not (tmp_path / "cache").exists()


def test_resume_takes_a_phrase_for_the_folder_it_was_saved_as():
    from audionet_ray.tune import _same

    assert _same("keywords", "Hey Computer, marmalade", "marmalade,hey_computer", {})
    assert not _same("keywords", "hey computer", "hey_computer,marmalade", {})


# ----------------------------------------------------------------------------- search spaces

def _space(tmp_path: Path, fixed: str) -> Path:
    f = tmp_path / "space.yaml"
    f.write_text(f"fixed: {fixed}\n")
    return f


def test_a_space_may_ask_for_synthesis_and_trials_never_see_it(tmp_path):
    spec = load_spec(_space(tmp_path, "{keywords: [hey computer], synthesize: true, synthesize_speakers: 8, epochs: 2}"))
    assert spec.data.synthesize and spec.data.synthesize_speakers == 8
    assert "synthesize" not in spec.fixed and "synthesize_speakers" not in spec.fixed
    TrainConfig.from_dict({**spec.fixed, "data": ""})  # what a trial gets
    assert SearchSpec.from_dict(spec.to_dict()).data == spec.data  # saved with the search, restored on resume
    spec = load_spec(_space(tmp_path, "{keywords: [marmalade], synthesize: true, synthesize_engines: [espeak]}"))
    assert spec.data.synthesize_engines == ["espeak"] and "synthesize_engines" not in spec.fixed


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.integers(), st.text(max_size=5).filter(lambda s: s.strip() and ":" not in s and "#" not in s),
                 st.floats(allow_nan=False, allow_infinity=False)))
def test_a_space_synthesize_key_that_is_not_true_or_false_is_one_line(tmp_path_factory, value):
    path = _space(tmp_path_factory.mktemp("s"), "{keywords: [marmalade], synthesize: " + json.dumps(value) + "}")
    try:
        spec = load_spec(path)
    except ConfigError as e:
        assert "fixed.synthesize: expected true or false" in str(e) and "\n" not in str(e)
    else:
        assert isinstance(spec.data.synthesize, bool)  # YAML read the text as a boolean (yes, no, on, off)


@pytest.mark.parametrize("fixed, message", [
    ("{synthesize: true, synthesize_speakers: 2}", "fixed.synthesize_speakers: a whole number of at least 3"),
    ("{synthesize_speakers: 8}", "fixed.synthesize_speakers is set but synthesize is not"),
    ("{synthesise: true}", "unknown setting(s): synthesise"),
    ("{synthesize_engines: [espeak]}", "fixed.synthesize_engines is set but synthesize is not"),
    ("{synthesize: true, synthesize_engines: [espeak, klat]}",
     "fixed.synthesize_engines espeak,klat: no such engine klat; choose from espeak, espeak-klatt"),
    ("{synthesize: true, synthesize_engines: []}", "fixed.synthesize_engines : no engine given"),
])
def test_bad_synthesis_keys_in_a_space_are_one_line(fixed, message, tmp_path):
    with pytest.raises(ConfigError) as e:
        load_spec(_space(tmp_path, fixed))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("fixed, search, want", [
    ("{keywords: [marmalade], synthesize: true}", "", True),  # a wake word from text: balanced by default
    ("{keywords: [marmalade], synthesize: true, class_balance: false}", "", False),  # the space's word wins
    ("{keywords: [marmalade], synthesize: true}", "search: {class_balance: {choice: [false, true]}}\n", None),  # searched
    ("{keywords: [marmalade]}", "", None),  # a keyword search on recordings: as it was
])
def test_a_synthesized_wake_word_trains_with_a_balanced_loss_unless_the_space_says(fixed, search, want, tmp_path):
    from audionet_ray.tune import _parser, apply_overrides

    f = tmp_path / "space.yaml"
    f.write_text(f"{search}fixed: {fixed}\n")
    spec = apply_overrides(load_spec(f), _parser().parse_args(["--search-space", str(f)]))
    assert spec.fixed.get("class_balance") is want


# ----------------------------------------------------------------------------- end to end

@pytest.mark.slow  # a real search on a synthesized keyword, with an export: ~2 min
def test_a_search_on_a_synthesized_keyword_exports_a_detector_for_it(tmp_path):
    env = {**os.environ, "AUDIONET_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--keywords", "marmalade", "--synthesize",
                        "--synthesize-speakers", "8", "--search-space", "smoke", "--num-samples", "1", "--epochs", "2",
                        "--num-cpus", "2", "--storage", str(tmp_path), "--name", "kw"],
                       capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    config = json.loads((tmp_path / "kw" / "bundle" / "config.json").read_text())
    assert config["task"] == "keywords" and "marmalade" in config["keywords"]
    assert (tmp_path / "cache" / "synthesized").is_dir()
    saved = json.loads((tmp_path / "kw" / "search.json").read_text())
    assert saved["spec"]["fixed"]["class_balance"] is True  # a wake word's loss is balanced by default
