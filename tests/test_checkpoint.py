"""The checkpoint folder's one wholeness rule, the same whether resume (a pyarrow filesystem),
export and the search (a local folder) or a URI (`storage.UriPath`) asks; and the one "best"."""

import hashlib
import json
import shutil

import pyarrow.fs as pafs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audionet_ray import checkpoint
from audionet_ray.training.checkpoint import META_FILE, MODEL_FILE, STATE_FILE, best, read_meta, whole_epoch
from audionet_ray.core.storage import UriPath

FILES = [MODEL_FILE, STATE_FILE, "extra.bin"]

# a checkpoint folder as a crash, a bug or an older writer may leave it
folders = st.fixed_dictionaries({
    "sizes": st.dictionaries(st.sampled_from(FILES), st.integers(0, 40)),  # files on disk
    "listed": st.one_of(st.none(), st.dictionaries(st.sampled_from(FILES), st.integers(0, 40))),  # meta's "files"
    "epoch": st.one_of(st.integers(1, 50), st.none(), st.text(max_size=3)),
    "meta": st.sampled_from(["json", "cut", "absent", "list"]),
    "hashed": st.sampled_from([None, "right", "wrong"]),  # meta's "sha256": none (an older writer), right, one wrong
})


def _write(d, case) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for name, size in case["sizes"].items():
        (d / name).write_bytes(b"x" * size)
    meta = {"classes": ["a"], "metrics": {"val_accuracy": 0.5}}
    if case["epoch"] is not None:
        meta["epoch"] = case["epoch"]
    if case["listed"] is not None:
        meta["files"] = case["listed"]
    if case["hashed"]:
        meta["sha256"] = {n: hashlib.sha256(b"x" * s).hexdigest() for n, s in case["sizes"].items()}
        if case["hashed"] == "wrong" and meta["sha256"]:
            meta["sha256"][min(meta["sha256"])] = hashlib.sha256(b"y").hexdigest()
    text = json.dumps(meta)
    if case["meta"] == "cut":
        (d / META_FILE).write_text(text[: len(text) // 2])
    elif case["meta"] == "list":
        (d / META_FILE).write_text("[1, 2]")
    elif case["meta"] == "json":
        (d / META_FILE).write_text(text)


def _expected_whole(case) -> bool:
    listed = case["listed"]
    wrong_hash = case["hashed"] == "wrong" and case["sizes"]
    return (case["meta"] == "json" and isinstance(case["epoch"], int) and isinstance(listed, dict)
            and MODEL_FILE in listed and all(case["sizes"].get(n) == s for n, s in listed.items()) and not wrong_hash)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=folders)
def test_every_reader_judges_a_checkpoint_alike(case, tmp_path):
    d = tmp_path / "checkpoint_000001"
    _write(d, case)
    want = _expected_whole(case)
    meta, why = read_meta(d)
    assert (meta is not None) == want, why
    assert (why == "") == want and "\n" not in why
    assert (whole_epoch(pafs.LocalFileSystem(), str(d)) == case["epoch"]) == want
    if not want:
        assert whole_epoch(pafs.LocalFileSystem(), str(d)) == -1
    uri_meta, _ = read_meta(UriPath(d.as_uri()))
    assert (uri_meta is not None) == want


def test_a_saved_checkpoint_is_whole_and_one_cut_short_is_not(tmp_path):
    import torch

    from audionet_ray.training.config import TrainConfig
    from audionet_ray.modeling.model import AudioNet

    cfg = TrainConfig.from_dict(dict(width=4, dense=8, norm="batch", pool="avg", frontend="filterbank", filters=4))
    model_cfg = cfg.model_config(3)
    model = AudioNet.from_config(model_cfg)
    opt = torch.optim.NAdam(model.parameters())
    d = tmp_path / "ckpt"
    d.mkdir()
    checkpoint.save(d, model, opt, 4, cfg, model_cfg, ["a", "b", "c"], {"val_accuracy": 0.75})
    meta, why = read_meta(d)
    assert why == "" and meta["epoch"] == 4 and set(meta["files"]) == {MODEL_FILE, STATE_FILE}
    assert whole_epoch(pafs.LocalFileSystem(), str(d)) == 4
    again = AudioNet.from_config(meta["model"])
    loaded = checkpoint.load(d, again, torch.optim.NAdam(again.parameters()))
    assert loaded["epoch"] == 4 and "rng" in loaded
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    data = (d / MODEL_FILE).read_bytes()
    (d / MODEL_FILE).write_bytes(data[:-10])  # an upload a crash cut short
    meta, why = read_meta(d)
    assert meta is None and why.startswith(f"{MODEL_FILE} is cut short")
    assert whole_epoch(pafs.LocalFileSystem(), str(d)) == -1


@given(st.lists(st.tuples(st.one_of(st.floats(0, 1), st.none()), st.integers(1, 9)), max_size=8),
       st.sampled_from(["max", "min"]))
def test_best_is_the_best_metric_then_the_later_epoch(scores, mode):
    found = [(f"t{i}", None, {"epoch": e, "metrics": {} if v is None else {"val_accuracy": v}})
             for i, (v, e) in enumerate(scores)]
    got = best(found, "val_accuracy", mode)
    scored = [(v, e) for v, e in scores if v is not None]
    if not scored:
        assert got is None
        return
    sign = 1 if mode == "max" else -1
    top = max(scored, key=lambda c: (sign * c[0], c[1]))
    assert (got[2]["metrics"]["val_accuracy"], got[2]["epoch"]) == top


@given(st.lists(st.tuples(st.one_of(st.floats(allow_nan=True), st.none(), st.text(max_size=1)), st.integers(1, 9)),
                max_size=8), st.sampled_from(["max", "min"]))
def test_a_checkpoint_that_recorded_nan_or_no_number_is_never_the_best(scores, mode):
    """NaN (a diverged run) or a value that is not a number never wins, whatever the mode."""
    found = [(f"t{i}", None, {"epoch": e, "metrics": {"val_loss": v}}) for i, (v, e) in enumerate(scores)]
    got = best(found, "val_loss", mode)
    valid = [(v, e) for v, e in scores if isinstance(v, float) and v == v]
    assert (got is None) == (not valid)
    if valid:
        sign = 1 if mode == "max" else -1
        assert (got[2]["metrics"]["val_loss"], got[2]["epoch"]) == max(valid, key=lambda c: (sign * c[0], c[1]))


@pytest.mark.parametrize("module", ["audionet_ray.tuning.experiment", "audionet_ray.training.checkpoint", "audionet_ray.core.errors"])
def test_finding_checkpoints_loads_no_torch(module):
    import subprocess
    import sys

    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(folders, max_size=5))
def test_latest_whole_is_the_newest_whole_checkpoint_of_a_run(cases, tmp_path):
    """What resume falls back on when Train never recorded a checkpoint: the highest whole epoch."""
    run = tmp_path / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    (run / "not_a_checkpoint").mkdir()
    want = (-1, None)
    for i, case in enumerate(cases):
        _write(run / f"checkpoint_{i:06d}", case)
        if _expected_whole(case) and case["epoch"] > want[0]:
            want = (case["epoch"], (run / f"checkpoint_{i:06d}").as_posix())
    epoch, path = checkpoint.latest_whole(pafs.LocalFileSystem(), run.as_posix())
    assert epoch == want[0]
    assert (path is None) == (want[1] is None)
    if path is not None:  # on a tie in epoch any of the tied folders will do
        assert whole_epoch(pafs.LocalFileSystem(), path) == epoch


def _saved(d, epoch: int) -> None:
    import torch

    from audionet_ray.training.config import TrainConfig
    from audionet_ray.modeling.model import AudioNet

    cfg = TrainConfig.from_dict(dict(width=4, dense=8, norm="batch", pool="avg", frontend="filterbank", filters=4))
    model = AudioNet.from_config(cfg.model_config(3))
    d.mkdir(parents=True)
    checkpoint.save(d, model, torch.optim.NAdam(model.parameters()), epoch, cfg, cfg.model_config(3), ["a", "b", "c"],
                    {"val_accuracy": 0.5})


@pytest.mark.parametrize("name", [MODEL_FILE, STATE_FILE])
def test_a_checkpoint_corrupted_at_the_same_size_is_passed_over_for_the_previous_whole_one(name, tmp_path):
    """A flipped byte keeps the size: only the recorded sha256 tells; resume falls back one checkpoint."""
    run = tmp_path / "run"
    _saved(run / "checkpoint_000002", 2)
    _saved(run / "checkpoint_000004", 4)
    latest = run / "checkpoint_000004"
    assert checkpoint.latest_whole(pafs.LocalFileSystem(), run.as_posix())[0] == 4
    data = bytearray((latest / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (latest / name).write_bytes(bytes(data))

    meta, why = read_meta(latest)
    assert meta is None and why == f"{name} is corrupted (its sha256 is not the one {META_FILE} records)"
    assert read_meta(UriPath(latest.as_uri()))[0] is None
    assert whole_epoch(pafs.LocalFileSystem(), str(latest)) == -1
    assert checkpoint.latest_whole(pafs.LocalFileSystem(), run.as_posix()) == (2, (run / "checkpoint_000002").as_posix())


def test_a_checkpoint_written_before_hashes_is_still_whole(tmp_path):
    d = tmp_path / "checkpoint_000003"
    _saved(d, 3)
    meta = json.loads((d / META_FILE).read_text())
    del meta["sha256"]  # what the writer before the hashes wrote
    (d / META_FILE).write_text(json.dumps(meta))
    assert read_meta(d)[0]["epoch"] == 3 and whole_epoch(pafs.LocalFileSystem(), str(d)) == 3
