"""dataset.PreparedDataset: one split rule for Ray Data, pyarrow and the manifest; the manifest read once.

Every reader of a prepared folder (training in memory or through Ray Data, streaming
evaluation, int8 calibration, the manifest's counts) goes through the same object, so these
tests check that its answers agree with each other and with the rule stated independently
here (bucket < train_ratio trains), on the session's real prepared demo data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audionet_ray import prepare as prepare_mod
from audionet_ray.pipeline.dataset import PreparedDataset, split_filter, split_sizes
from audionet_ray.corpus.discover import DatasetError
from audionet_ray.corpus.prepare import load_manifest

OPEN_RATIO = st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True)
FIXTURES = [HealthCheck.function_scoped_fixture]  # the fixtures are session-wide and read-only


def _rows(prepared: Path) -> dict[str, list]:
    """Every row's speaker, split and bucket, read here without the dataset object."""
    tables = [pq.read_table(prepared / s, columns=["speaker", "split", "bucket"])
              for s in json.loads((prepared / "manifest.json").read_text())["shards"]]
    return {c: [v for t in tables for v in t.column(c).to_pylist()] for c in ("speaker", "split", "bucket")}


def _ratio(draw, prepared: Path):
    """Any ratio in (0, 1), or exactly a speaker's bucket (the edge: that speaker validates)."""
    buckets = [b for b, _ in load_manifest(prepared)["trainval_buckets"]]
    return draw(st.one_of(OPEN_RATIO, st.sampled_from(buckets)))


@given(data=st.data())
@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURES)
def test_arrow_split_manifest_counts_and_the_rule_agree(prepared_demo, data):
    """For any train_ratio: the Arrow split's rows are the manifest's counts, every train row has
    bucket < ratio and every val row not, train and val share no speaker, and test is apart."""
    ratio = _ratio(data.draw, prepared_demo)
    ds = PreparedDataset.open(prepared_demo)
    r = _rows(prepared_demo)
    got = {s: ds.arrow(s, ratio, columns=("speaker", "bucket")).to_pydict() for s in ("train", "val", "test")}
    sizes = ds.split_sizes(ratio)
    assert len(got["train"]["speaker"]) == sizes["train"] and len(got["val"]["speaker"]) == sizes["val"]
    assert all(b < ratio for b in got["train"]["bucket"]) and all(not b < ratio for b in got["val"]["bucket"])
    speakers = {s: set(got[s]["speaker"]) for s in got}
    assert speakers["train"].isdisjoint(speakers["val"]) and speakers["test"].isdisjoint(speakers["train"] | speakers["val"])
    expected = {"train": sum(sp == "trainval" and b < ratio for sp, b in zip(r["split"], r["bucket"])),
                "test": r["split"].count("test")}
    assert len(got["train"]["speaker"]) == expected["train"] and len(got["test"]["speaker"]) == expected["test"]
    assert sizes["train"] + sizes["val"] == r["split"].count("trainval")


def _hashes(rows) -> list[tuple[str, int]]:
    return sorted((hashlib.sha1(bytes(p)).hexdigest(), int(y)) for p, y in rows)


@given(data=st.data())
@settings(max_examples=4, deadline=None, suppress_health_check=FIXTURES)
def test_ray_split_is_the_arrow_split(ray_session, prepared_demo, data):
    """Ray Data's pushed-down filter and pyarrow's read give the same clips for any usable ratio."""
    ds = PreparedDataset.open(prepared_demo)
    lo, hi = ds.train_ratio_range()
    ratio = data.draw(st.floats(min_value=lo, max_value=hi))
    by_ray = ds.ray_datasets(ratio, ("train", "val", "test"), shuffle_files=False)
    for split, rd in by_ray.items():
        table = ds.arrow(split, ratio)
        ray_rows = [(row["pcm"], row["label"]) for row in rd.take_all()]
        arrow_rows = zip(table.column("pcm").to_pylist(), table.column("label").to_pylist())
        assert _hashes(ray_rows) == _hashes(arrow_rows), (split, ratio)
        assert len(ray_rows) == (ds.split_sizes(ratio)[split] if split != "test" else table.num_rows)


@pytest.mark.parametrize("ratio", [0.3, 0.8])
def test_every_reader_takes_the_same_rows_in_the_same_order(prepared_demo, ratio):
    """read_split (training in memory), split_clips (streaming evaluation), calibration_clips
    (int8 export) and the batches (evaluation) read one split alike, in shard order."""
    from audionet_ray.pipeline.data import read_split
    from audionet_ray.deploy.export import calibration_clips
    from audionet_ray.detection.streaming import split_clips

    ds = PreparedDataset.open(prepared_demo)
    for split in ("train", "val", "test"):
        pcm, labels = ds.arrays(split, ratio)
        assert len(labels) > 0 and pcm.dtype == np.int16 and pcm.shape[1] == ds.clip_samples
        for other in (read_split(prepared_demo, ratio, split)[:2], split_clips(prepared_demo, split, ratio)):
            assert np.array_equal(other[0], pcm) and np.array_equal(other[1], labels)
        batched = list(ds.batches(split, ("pcm",), 7, ratio))
        assert all(0 < b.num_rows <= 7 for b in batched)
        assert np.array_equal(np.concatenate([prepare_mod.pcm_from_binary(b.column("pcm")) for b in batched]), pcm)
        assert np.array_equal(ds.first_clips(split, ratio, 5), pcm[:5])
    assert np.array_equal(calibration_clips(prepared_demo, ratio, 10_000), ds.arrays("train", ratio)[0])


def _copy(prepared: Path, dest: Path) -> Path:
    shutil.copytree(prepared, dest)
    return dest


def test_the_manifest_is_read_once_per_process(prepared_demo, tmp_path, monkeypatch):
    """Every reader of a folder shares one parsed manifest and one dataset object, by any spelling
    of its path; a manifest rewritten (as prepare does it: a new file renamed over the old) is
    read again."""
    from audionet_ray.pipeline.data import read_split
    from audionet_ray.tuning.plan import data_streams
    from audionet_ray.detection.streaming import split_clips

    folder = _copy(prepared_demo, tmp_path / "copy")
    misses = prepare_mod._parsed_manifest.cache_info().misses
    first = PreparedDataset.open(folder)
    read_split(folder, 0.5, "val"), split_clips(folder, "test"), data_streams(folder, 1)
    monkeypatch.chdir(tmp_path)
    assert PreparedDataset.open("copy").manifest is first.manifest is load_manifest(str(folder))
    assert PreparedDataset.open(folder) is first
    assert prepare_mod._parsed_manifest.cache_info().misses == misses + 1  # parsed once for all of them

    m = dict(first.manifest, classes=[c.upper() for c in first.classes])
    (folder / "new.json").write_text(json.dumps(m))
    os.replace(folder / "new.json", folder / "manifest.json")
    again = PreparedDataset.open(folder)
    assert again is not first and again.classes == m["classes"] and first.classes != m["classes"]


def test_an_older_manifest_without_a_window_still_loads(prepared_demo, tmp_path):
    """Format-3 manifests written before `--window` have no clip_samples: one second, as before."""
    folder = _copy(prepared_demo, tmp_path / "old")
    m = json.loads((folder / "manifest.json").read_text())
    del m["clip_samples"]
    (folder / "manifest.json").write_text(json.dumps(m))
    ds = PreparedDataset.open(folder)
    assert ds.clip_samples == 16_000 and ds.arrays("val", 0.5)[0].shape[1] == 16_000


def test_bad_folders_and_splits_are_one_line_errors(prepared_demo, tmp_path):
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        PreparedDataset.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON.*run prepare again") as e:
        PreparedDataset.open(tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match="unknown split 'holdout': choose from train, val, test"):
        PreparedDataset.open(prepared_demo).arrays("holdout", 0.5)
    assert split_filter("test", 0.5) is None


@given(pairs=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 50)), max_size=30), ratio=OPEN_RATIO)
def test_manifest_counts_follow_the_rule(pairs, ratio):
    """The counts from [bucket, clips] pairs, against the rule written out here."""
    sizes = split_sizes({"trainval_buckets": [list(p) for p in pairs]}, ratio)
    assert sizes["train"] == sum(n for b, n in pairs if b < ratio)
    assert sizes["val"] == sum(n for b, n in pairs if b >= ratio)
