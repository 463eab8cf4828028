"""Discovery, speaker splits, and the Ray Data stream into a real Ray Train worker.

Preparation itself (round trip, bad files, cache, CLI) is in test_prepare.py; augmentation in
test_augment.py.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from audionet_ray.corpus.demo_data import CLASSES as DEMO_WORDS
from audionet_ray.corpus.discover import SILENCE, UNKNOWN, DatasetError, discover, escape_path, speaker_bucket, speaker_of
from audionet_ray.pipeline.data import ensure_prepared
from audionet_ray.corpus.prepare import load_manifest, pcm_from_binary, prepare

RATIOS = np.round(np.linspace(0.01, 0.99, 99), 2)


def write_wav(path: Path, seconds: float = 0.05, seed: int = 0, sr: int = 16_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (np.random.default_rng(seed).standard_normal(int(seconds * sr)) * 2000).astype(np.int16)
    sf.write(os.fsencode(path), x, sr, subtype="PCM_16")  # bytes: any name, UTF-8 or not
    return path


def rows(prepared: Path, columns=("speaker", "split", "bucket", "path", "label")) -> dict[str, list]:
    """Every prepared row (all shards) as plain lists."""
    tables = [pq.read_table(prepared / s, columns=list(columns)) for s in load_manifest(prepared)["shards"]]
    return {c: list(itertools.chain.from_iterable(t.column(c).to_pylist() for t in tables)) for c in columns}


def speaker_sets(r: dict[str, list], train_ratio: float) -> dict[str, set[str]]:
    """Speakers per split, by the rule split_datasets filters with."""
    out = {"train": set(), "val": set(), "test": set()}
    for spk, split, bucket in zip(r["speaker"], r["split"], r["bucket"]):
        out["test" if split == "test" else "train" if bucket < train_ratio else "val"].add(spk)
    return out


@pytest.fixture(scope="module")
def many_speakers(tmp_path_factory) -> Path:
    """300 speakers x 2 words x 2 clips, no testing_list.txt (the hash decides the test set); prepared."""
    root = tmp_path_factory.mktemp("many") / "data"
    for s, word, k in itertools.product(range(300), ("go", "stop"), range(2)):
        write_wav(root / word / f"spk{s:03d}_nohash_{k}.wav", seed=s * 10 + k)
    out = root.parent / "prepared"
    prepare(root, out, workers=1, progress=False)
    return out


# ----------------------------------------------------------------------------- discovery

def test_classes_are_sorted_folders_and_underscore_folders_are_never_classes(tmp_path):
    for folder in ("zeta", "alpha", "mid", "_background_noise_", "_unknown_", "_mine", ".hidden"):
        write_wav(tmp_path / folder / "abc_nohash_0.wav")
    (tmp_path / "alpha" / "notes.txt").write_text("not audio by name: ignored")
    (tmp_path / "README.txt").write_text("a file at the top is not a class")
    found = discover(tmp_path)
    assert found.classes == ["alpha", "mid", "zeta"]
    assert found.noise_files == ["_background_noise_/abc_nohash_0.wav"]
    assert sorted((it.path, it.label) for it in found.items) == [
        ("alpha/abc_nohash_0.wav", 0), ("mid/abc_nohash_0.wav", 1), ("zeta/abc_nohash_0.wav", 2)]


def test_speaker_is_the_part_before_nohash():
    assert speaker_of("0a2b400e_nohash_3.wav") == "0a2b400e"
    assert speaker_of("lonely.wav") == "lonely"  # no pattern: its own speaker


def test_demo_data_discovery(demo_root):
    found = discover(demo_root)
    assert found.classes == sorted(DEMO_WORDS)
    assert len(found.noise_files) == 4 and all(f.startswith("_background_noise_/") for f in found.noise_files)
    assert len(found.items) == len(list(demo_root.glob("[!_]*/*.wav")))
    assert all(it.speaker == it.path.split("/")[1].split("_nohash_")[0] for it in found.items)


def test_words_with_unknown_and_silence_is_the_standard_setup(demo_root):
    found = discover(demo_root, ["yes", "no", "up"], unknown=True, silence=True)
    assert found.classes == ["no", "up", "yes", UNKNOWN, SILENCE]
    by_word = {it.path.split("/")[0]: found.classes[it.label] for it in found.items}
    assert by_word["yes"] == "yes" and by_word["left"] == UNKNOWN and by_word["stop"] == UNKNOWN
    assert len(found.items) == len(discover(demo_root).items)  # every clip is used
    # the 12-class list can name the special classes directly
    same = discover(demo_root, ["yes", "no", "up", UNKNOWN, SILENCE])
    assert same.classes == found.classes
    # without _unknown_ the other words are left out
    only = discover(demo_root, ["yes", "no"])
    assert only.classes == ["no", "yes"]
    assert {it.path.split("/")[0] for it in only.items} == {"yes", "no"}


def test_words_errors_are_one_line(demo_root, tmp_path):
    with pytest.raises(DatasetError, match="--words: no folder for maybe"):
        discover(demo_root, ["yes", "maybe"])
    write_wav(tmp_path / "yes" / "a_nohash_0.wav")
    with pytest.raises(DatasetError, match="_silence_ needs background noise"):
        discover(tmp_path, silence=True)


def test_empty_class_folder_is_not_a_class(tmp_path):
    write_wav(tmp_path / "yes" / "a_nohash_0.wav")
    write_wav(tmp_path / "no" / "a_nohash_0.wav")
    (tmp_path / "maybe").mkdir()
    found = discover(tmp_path)
    assert found.classes == ["no", "yes"] and found.empty_classes == ["maybe"]
    with pytest.raises(DatasetError, match="maybe.*no .wav or .flac clips"):
        discover(tmp_path, ["yes", "maybe"])


@pytest.mark.parametrize("layout", ["missing", "empty", "only_noise", "no_clips", "a_file"])
def test_unusable_roots_are_one_line_errors(tmp_path, layout):
    root = tmp_path / "root"
    if layout == "empty":
        root.mkdir()
    elif layout == "only_noise":
        write_wav(root / "_background_noise_" / "n.wav")
    elif layout == "no_clips":
        (root / "yes").mkdir(parents=True)
        (root / "yes" / "readme.txt").write_text("no audio")
    elif layout == "a_file":
        root.write_text("not a folder")
    with pytest.raises(DatasetError) as e:
        discover(root)
    assert "\n" not in str(e.value) and str(root) in str(e.value)


# ----------------------------------------------------------------------------- splits

def test_each_speaker_has_one_bucket_and_one_fixed_split(many_speakers, prepared_demo):
    for prepared in (many_speakers, prepared_demo):
        r = rows(prepared)
        per_speaker = {}
        for spk, split, bucket in zip(r["speaker"], r["split"], r["bucket"]):
            per_speaker.setdefault(spk, set()).add((split, bucket))
        assert all(len(v) == 1 for v in per_speaker.values())


@pytest.mark.parametrize("name", ["many_speakers", "prepared_demo"])
def test_no_speaker_in_two_splits_for_any_train_ratio(name, request):
    r = rows(request.getfixturevalue(name))
    everyone = set(r["speaker"])
    for ratio in RATIOS:
        s = speaker_sets(r, ratio)
        assert not (s["train"] & s["val"]) and not (s["train"] & s["test"]) and not (s["val"] & s["test"]), ratio
        assert s["train"] | s["val"] | s["test"] == everyone


def test_growing_train_ratio_only_moves_speakers_from_val_to_train(many_speakers):
    r = rows(many_speakers)
    for lo, hi in zip(RATIOS, RATIOS[1:]):
        a, b = speaker_sets(r, lo), speaker_sets(r, hi)
        assert a["train"] <= b["train"] and b["val"] <= a["val"] and a["test"] == b["test"]
        assert b["train"] - a["train"] == a["val"] - b["val"]  # what train gained, val lost
    # and the ratio means what it says, over speakers
    s = speaker_sets(r, 0.8)
    assert 0.7 < len(s["train"]) / (len(s["train"]) + len(s["val"])) < 0.9


def test_testing_list_is_honoured(demo_root, prepared_demo):
    listed = set((demo_root / "testing_list.txt").read_text().split())
    r = rows(prepared_demo)
    assert {p for p, split in zip(r["path"], r["split"]) if split == "test"} == listed
    m = load_manifest(prepared_demo)
    assert all(s.startswith("test-") for s in m["split_shards"]["test"])
    for shard in m["split_shards"]["test"]:
        assert set(pq.read_table(prepared_demo / shard, columns=["split"]).column("split").to_pylist()) == {"test"}


def test_hash_decides_the_test_set_without_testing_list(many_speakers):
    r = rows(many_speakers)
    test = {s for s, split in zip(r["speaker"], r["split"]) if split == "test"}
    assert test == {s for s in set(r["speaker"]) if speaker_bucket(s, "test:") < 0.1}
    assert 0.05 < len(test) / 300 < 0.15


def test_splits_are_deterministic():
    # pinned: a change to the hash would silently reshuffle every user's split
    assert speaker_bucket("0a2b400e") == 0.5387451925930983
    assert speaker_bucket("0a2b400e", "test:") == 0.9831614789867903


def test_same_data_prepared_twice_gives_the_same_rows_in_the_same_shards(demo_root, prepared_demo, tmp_path):
    again = prepare(demo_root, tmp_path / "again", workers=1, progress=False)
    assert again["shards"] == load_manifest(prepared_demo)["shards"]
    for shard in again["shards"]:
        assert pq.read_table(tmp_path / "again" / shard).equals(pq.read_table(prepared_demo / shard))


def test_a_partly_listed_test_speaker_never_leaks_into_train_or_val(tmp_path):
    for s, k in itertools.product(("amy", "bob", "cat"), range(2)):
        write_wav(tmp_path / "yes" / f"{s}_nohash_{k}.wav", seed=k)
    (tmp_path / "testing_list.txt").write_text("yes/amy_nohash_0.wav\n")  # amy's clip 1 is not listed
    found = discover(tmp_path)
    assert found.held_out == ["yes/amy_nohash_1.wav"]
    assert {it.path for it in found.items if it.split == "test"} == {"yes/amy_nohash_0.wav"}
    assert "amy" not in {it.speaker for it in found.items if it.split == "trainval"}


# ----------------------------------------------------------------------------- Ray Data

def _hashes_of_clips(batches) -> list[str]:
    out = []
    for clips, labels in batches:
        assert clips.dtype.is_floating_point is False and clips.shape[1] == 16_000
        out += [hashlib.sha1(c.numpy().tobytes()).hexdigest() for c in clips]
    return out


def test_split_datasets_stream_exactly_the_split_rows_bit_exact(ray_session, demo_root, prepared_demo):
    """Ray Data -> torch_batches gives each split's clips, bit for bit as soundfile reads the WAVs."""
    from audionet_ray.pipeline.data import split_datasets, torch_batches

    r = rows(prepared_demo)
    wav_hash = {p: hashlib.sha1(sf.read(demo_root / p, dtype="int16")[0].tobytes()).hexdigest() for p in r["path"]}
    for ratio in (0.8,):
        expected = {"train": [], "val": [], "test": []}
        for p, split, bucket in zip(r["path"], r["split"], r["bucket"]):
            expected["test" if split == "test" else "train" if bucket < ratio else "val"].append(wav_hash[p])
        ds = split_datasets(prepared_demo, ratio, ("train", "val", "test"))
        for name, d in ds.items():
            got = _hashes_of_clips(torch_batches(d, 16, shuffle_seed=1 if name == "train" else None))
            assert sorted(got) == sorted(expected[name]), (ratio, name)
            assert len(got) > 0


@pytest.mark.parametrize("ratio,world", [(0.3, 1), (0.8, 1), (0.8, 2), (0.5, 3)])
def test_read_split_gives_each_split_bit_exact_and_deals_rows_to_workers(demo_root, prepared_demo, ratio, world):
    """The in-memory path (pyarrow, no Ray Data) reads the same clips as the WAVs, split alike;
    `world` workers get disjoint parts that together are the split, sizes within one row."""
    from audionet_ray.pipeline.data import read_split
    from audionet_ray.corpus.prepare import load_manifest

    r = rows(prepared_demo)
    wav_hash = {p: hashlib.sha1(sf.read(demo_root / p, dtype="int16")[0].tobytes()).hexdigest() for p in r["path"]}
    expected = {"train": [], "val": [], "test": []}
    for p, split, bucket, label in zip(r["path"], r["split"], r["bucket"], r["label"]):
        expected["test" if split == "test" else "train" if bucket < ratio else "val"].append((wav_hash[p], label))
    for name in ("train", "val", "test"):
        parts = [read_split(prepared_demo, ratio, name, rank, world) for rank in range(world)]
        got = []
        for pcm, labels, classes in parts:
            assert pcm.dtype == np.int16 and pcm.shape[1:] == (16_000,) and pcm.flags.writeable
            assert classes == load_manifest(prepared_demo)["classes"]
            got += [(hashlib.sha1(c.tobytes()).hexdigest(), int(y)) for c, y in zip(pcm, labels)]
        assert sorted(got) == sorted(expected[name]), (ratio, name)
        sizes = [len(p[1]) for p in parts]
        assert max(sizes) - min(sizes) <= 1


def test_read_split_reads_a_uri_as_a_folder(prepared_demo):
    """Shared storage (file:// here, s3:// on a cluster) gives the same clips as the local folder."""
    from audionet_ray.pipeline.data import read_split

    for name in ("train", "val"):
        local, uri = read_split(prepared_demo, 0.6, name, 1, 2), read_split(f"file://{prepared_demo}", 0.6, name, 1, 2)
        assert len(local[1]) > 0 and np.array_equal(local[0], uri[0]) and np.array_equal(local[1], uri[1])


def test_split_datasets_errors(prepared_demo, tmp_path):
    from audionet_ray.pipeline.data import split_datasets

    with pytest.raises(DatasetError, match="train_ratio"):
        split_datasets(prepared_demo, 1.0)
    with pytest.raises(DatasetError, match="unknown split"):
        split_datasets(prepared_demo, 0.8, ("train", "holdout"))
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        split_datasets(tmp_path, 0.8)


def test_manifest_buckets_match_the_shards_and_bound_train_ratio(prepared_demo):
    """The manifest's speaker buckets are the shards' own; a ratio outside them is refused."""
    from collections import Counter

    from audionet_ray.pipeline.data import check_train_ratio, train_ratio_range

    m = load_manifest(prepared_demo)
    r = rows(prepared_demo, ("speaker", "split", "bucket"))
    per_speaker = Counter((b, s) for s, b, sp in zip(r["speaker"], r["bucket"], r["split"]) if sp == "trainval")
    assert sorted([b, n] for (b, _), n in per_speaker.items()) == m["trainval_buckets"]
    lo, hi = train_ratio_range(m)
    buckets = [b for b, _ in m["trainval_buckets"]]
    assert min(buckets) < lo <= hi <= max(buckets)
    for ratio in (lo, hi, round((lo + hi) / 2, 2)):
        check_train_ratio(m, ratio, prepared_demo)  # both sides have speakers: no error

    # one speaker left in trainval: no ratio can split it
    lone = {**m, "trainval_buckets": [m["trainval_buckets"][0]]}
    with pytest.raises(DatasetError, match="too few speakers"):
        check_train_ratio(lone, 0.5, "x")


def test_a_train_ratio_that_empties_a_split_is_one_clear_error(ray_session, prepared_demo):
    """Above every speaker's bucket nothing validates; below all of them nothing trains."""
    from audionet_ray.pipeline.data import split_datasets, train_ratio_range

    m = load_manifest(prepared_demo)
    top = max(b for b, _ in m["trainval_buckets"])
    bottom = min(b for b, _ in m["trainval_buckets"])
    lo, hi = train_ratio_range(m)
    with pytest.raises(DatasetError) as e:
        split_datasets(prepared_demo, (top + 1) / 2)
    msg = str(e.value)
    assert "no speaker to validate on" in msg and str(prepared_demo) in msg and f"from {lo:g} to {hi:g}" in msg
    assert "\n" not in msg
    with pytest.raises(DatasetError, match="no speaker to train on"):
        split_datasets(prepared_demo, bottom / 2)
    split_datasets(prepared_demo, (top + 1) / 2, ("train",))  # training alone needs no validation speaker


def _count_rows_loop(config):
    """Train worker: read this worker's shard as torch batches; report rows, labels and dtypes."""
    import ray.train
    import torch

    from audionet_ray.pipeline.augment import AugmentConfig, augment, epoch_generator
    from audionet_ray.pipeline.data import torch_batches

    shard = ray.train.get_dataset_shard("train")
    n, labels, dtypes, finite = 0, set(), set(), True
    gen = epoch_generator(0, 0, ray.train.get_context().get_world_rank(), torch.device("cpu"))
    for clips, y in torch_batches(shard, config["batch_size"], shuffle_seed=0):
        n += len(y)
        labels |= set(y.tolist())
        dtypes.add(f"{clips.dtype} {list(clips.shape[1:])} {y.dtype}")
        finite &= bool(torch.isfinite(augment(clips, gen, AugmentConfig())).all())
    # Train V2 keeps metrics only with a checkpoint (Result.metrics is the latest checkpoint's)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ray.train.report({"rows": n, "labels": sorted(labels), "dtypes": sorted(dtypes), "finite": finite},
                         checkpoint=ray.train.Checkpoint.from_directory(d))


@pytest.mark.slow  # a real TorchTrainer run: ~20 s
def test_a_real_train_worker_reads_its_shard(ray_session, prepared_demo, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from audionet_ray.pipeline.data import split_datasets

    ratio = 0.8
    r = rows(prepared_demo)
    train_rows = [lab for split, bucket, lab in zip(r["split"], r["bucket"], r["label"])
                  if split == "trainval" and bucket < ratio]
    trainer = TorchTrainer(
        _count_rows_loop,
        train_loop_config={"batch_size": 32},
        datasets={"train": split_datasets(prepared_demo, ratio, ("train",))["train"]},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="stream", storage_path=str(tmp_path)),
    )
    import ray.cloudpickle

    # the loop lives in this test module, which the worker cannot import: send it by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        result = trainer.fit()
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert result.error is None
    assert result.metrics["rows"] == len(train_rows)
    assert result.metrics["labels"] == sorted(set(train_rows))
    assert result.metrics["dtypes"] == ["torch.int16 [16000] torch.int64"]
    assert result.metrics["finite"]


@pytest.mark.parametrize("name", [b"donn\xe9es", b"r" * 255, b"-data\nnew"])
def test_a_raw_root_with_any_name_is_prepared_into_the_cache(tmp_path, name):
    """The cache folder is named after the root: escaped and cut short, so any name fits in one."""
    root = tmp_path / os.fsdecode(name)
    write_wav(root / "yes" / "a_nohash_0.wav")
    out = ensure_prepared(root, cache_dir=tmp_path / "cache", progress=False)
    assert load_manifest(out)["n_clips"] == 1
    assert out.parent == tmp_path / "cache" / "prepared" and out.name.isprintable()
    assert out.name.startswith(escape_path(os.fsdecode(name))[:20])
    assert ensure_prepared(root, cache_dir=tmp_path / "cache", progress=False) == out
