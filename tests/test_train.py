"""Real Ray Train on CPU with a small AudioNet on the demo data: metrics, checkpoints, resume, failures, DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from audionet_ray.training.config import RunSettings, TrainConfig
from audionet_ray.training.checkpoint import MODEL_FILE
from audionet_ray.training.train import build_trainer, read_metrics

pytestmark = pytest.mark.slow

SMALL = dict(width=8, dense=32, batch_size=32, lr=1e-3, seed=0, checkpoint_every=2)


def _cfg(prepared, **kw) -> TrainConfig:
    return TrainConfig.from_dict(dict(data=str(prepared), **{**SMALL, **kw}))


def _checkpoint_epochs(run_dir: Path) -> list[int]:
    return sorted(json.loads(p.read_text())["epoch"] for p in run_dir.glob("checkpoint_*/meta.json"))


def _final_weights(run_dir: Path) -> dict:
    metas = {p.parent: json.loads(p.read_text()) for p in run_dir.glob("checkpoint_*/meta.json")}
    last = max(metas, key=lambda d: metas[d]["epoch"])
    return torch.load(last / MODEL_FILE, weights_only=True)


def _wait_for(cond, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_metrics_every_epoch_and_checkpoints_every_two(ray_session, prepared_demo, tmp_path):
    run = RunSettings(storage=str(tmp_path), name="plain", keep_checkpoints=5)
    result = build_trainer(_cfg(prepared_demo, epochs=5), run).fit()
    assert result.error is None
    log = read_metrics(tmp_path / "plain")
    assert [m["epoch"] for m in log] == [1, 2, 3, 4, 5]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "clips_per_s"):
        assert all(m[key] >= 0 for m in log), key
    assert all(m["val_accuracy"] <= 1 and m["train_accuracy"] <= 1 for m in log)
    buckets = json.loads((Path(prepared_demo) / "manifest.json").read_text())["trainval_buckets"]
    n_val = sum(n for b, n in buckets if b >= 0.9)  # TrainConfig's default train_ratio
    assert n_val > 0 and all(m["val_clips"] == n_val and m["val_loss"] > 0 for m in log)
    assert log[-1]["train_loss"] < log[0]["train_loss"]  # it learns something
    # every 2 epochs and at the end
    assert _checkpoint_epochs(tmp_path / "plain") == [2, 4, 5]
    meta = json.loads(next((tmp_path / "plain").glob("checkpoint_*/meta.json")).read_text())
    assert meta["classes"] == json.loads((Path(prepared_demo) / "manifest.json").read_text())["classes"]
    assert meta["model"]["width"] == 8


def test_cli_refuses_a_train_ratio_with_no_validation_speaker(prepared_demo, tmp_path):
    top = max(b for b, _ in json.loads((Path(prepared_demo) / "manifest.json").read_text())["trainval_buckets"])
    p = subprocess.run([sys.executable, "-m", "audionet_ray.train", "--data", str(prepared_demo),
                        "--train-ratio", f"{(top + 1) / 2:.4f}", "--storage", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout, p.stderr
    assert p.stderr.startswith("error: train_ratio ") and "leaves no speaker to validate on" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_resume_after_killed_driver_matches_uninterrupted_run(ray_session, prepared_demo, tmp_path):
    """SIGKILL a real training driver after its first checkpoint; the resumed run continues
    after its last checkpoint and ends with bit-identical weights to an uninterrupted run
    (deterministic data order, per-epoch augmentation seeds, and RNG + optimizer state restored
    from the checkpoint). 12 epochs of well under a second: the kill lands seconds before the end."""
    import ray

    epochs = 12
    cfg = _cfg(prepared_demo, epochs=epochs, deterministic=True)
    straight = build_trainer(cfg, RunSettings(storage=str(tmp_path), name="straight", keep_checkpoints=10)).fit()
    assert straight.error is None

    cmd = [sys.executable, "-m", "audionet_ray.train", "--data", str(prepared_demo), "--address",
           ray.get_runtime_context().gcs_address, "--epochs", str(epochs), "--width", "8", "--dense", "32",
           "--batch-size", "32", "--lr", "1e-3", "--seed", "0", "--deterministic",
           "--storage", str(tmp_path), "--name", "killed"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # epoch 2's report is logged once Train has registered its checkpoint
        _wait_for(lambda: 2 in [m["epoch"] for m in read_metrics(tmp_path / "killed")] or proc.poll() is not None,
                  300, "the first checkpoint")
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert epochs not in _checkpoint_epochs(tmp_path / "killed"), "the run ended before the kill landed"

    resumed = build_trainer(cfg, RunSettings(storage=str(tmp_path), name="killed", keep_checkpoints=10)).fit()
    assert resumed.error is None
    start = resumed.metrics["resumed_from"]
    assert start >= 2 and start % 2 == 0, start  # from a checkpoint, not restarted from epoch 0
    log = [m["epoch"] for m in read_metrics(tmp_path / "killed")]
    assert log[-(epochs - start):] == list(range(start + 1, epochs + 1)) and log.count(1) == 1, log

    _assert_same_weights(_final_weights(tmp_path / "straight"), _final_weights(tmp_path / "killed"))

    # A driver killed between a checkpoint's upload and Train's record of it leaves a checkpoint
    # Train does not know: a run folder holding only checkpoint files, no Train state. The whole
    # epoch-2 checkpoint is used; an epoch-4 one whose weights were cut short is not.
    import shutil

    by_epoch = {json.loads(p.read_text())["epoch"]: p.parent for p in (tmp_path / "straight").glob("checkpoint_*/meta.json")}
    orphan = tmp_path / "orphan"
    shutil.copytree(by_epoch[2], orphan / by_epoch[2].name)
    cut = shutil.copytree(by_epoch[4], orphan / by_epoch[4].name)
    (cut / MODEL_FILE).write_bytes((cut / MODEL_FILE).read_bytes()[:1000])
    cut.rename(cut.with_name("checkpoint_9999-12-31_23-59-59.999999"))  # newest by name, too
    resumed = build_trainer(cfg, RunSettings(storage=str(tmp_path), name="orphan", keep_checkpoints=10)).fit()
    assert resumed.error is None
    assert [m["epoch"] for m in read_metrics(orphan)] == list(range(3, epochs + 1))
    assert resumed.metrics["resumed_from"] == 2
    final = torch.load(Path(resumed.checkpoint.path) / MODEL_FILE, weights_only=True)
    _assert_same_weights(_final_weights(tmp_path / "straight"), final)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_killed_worker_restarts_from_last_checkpoint(ray_session, prepared_demo, tmp_path):
    import threading

    from ray.util.state import list_actors

    run = RunSettings(storage=str(tmp_path), name="crash", keep_checkpoints=10, max_failures=2)
    epochs = 16  # well under a second each: the state API's lookup and the kill land seconds before the end
    trainer = build_trainer(_cfg(prepared_demo, epochs=epochs), run)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("result", trainer.fit()))
    t.start()
    _wait_for(lambda: 2 in [m["epoch"] for m in read_metrics(tmp_path / "crash")], 300, "the first checkpoint")
    workers = [a for a in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])]
    assert workers, "no live Ray Train worker found"
    os.kill(workers[0].pid, signal.SIGKILL)  # a real worker process, killed mid-run
    t.join(timeout=300)
    assert not t.is_alive()
    result = out["result"]
    assert result.error is None
    assert result.metrics["epoch"] == epochs
    assert result.metrics["resumed_from"] >= 2  # the restarted worker group loaded a checkpoint
    assert _checkpoint_epochs(tmp_path / "crash")[-1] == epochs


def test_two_workers_ddp_follow_one_worker(ray_session, prepared_demo, tmp_path):
    """Same global batch on 1 and 2 workers: DDP averages gradients, so the loss curves agree
    within tolerance (not exactly: each worker sees a different half and its own augmentation)."""
    common = dict(epochs=3, batch_size=32, lr=2e-3, width=8, dense=32)
    one = build_trainer(_cfg(prepared_demo, **common),
                        RunSettings(storage=str(tmp_path), name="one", cpus_per_worker=0.5)).fit()
    two = build_trainer(_cfg(prepared_demo, **common),
                        RunSettings(storage=str(tmp_path), name="two", workers=2, cpus_per_worker=0.5)).fit()
    assert one.error is None and two.error is None
    l1 = [m["train_loss"] for m in read_metrics(tmp_path / "one")]
    l2 = [m["train_loss"] for m in read_metrics(tmp_path / "two")]
    assert len(l1) == len(l2) == 3
    for a, b in zip(l1, l2):
        assert abs(a - b) / a < 0.15, (l1, l2)
    # between them, the two workers saw the whole training split each epoch (an equal split
    # may drop fewer rows than there are workers)
    assert 0 <= one.metrics["train_clips"] - two.metrics["train_clips"] < 2


def test_cli_refuses_a_bad_variant_in_one_line(tmp_path):
    for flags, want in ((["--norm", "bn"], "error: norm must be one of none, batch, group, layer, got 'bn'"),
                        (["--schedule", "cosine", "--epochs", "2", "--warmup-epochs", "2"],
                         "error: warmup_epochs must be >= 0 and less than epochs (2)"),
                        (["--optimizer", "sgd"], "error: optimizer must be one of nadam, adamw")):
        p = subprocess.run([sys.executable, "-m", "audionet_ray.train", "--data", str(tmp_path / "none"), *flags,
                            "--storage", str(tmp_path)], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.startswith(want), p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_resume_with_cosine_schedule_and_batch_norm_is_bit_exact(ray_session, prepared_demo, tmp_path):
    """A run restarted from its epoch-2 checkpoint ends with the same weights, batch-norm running
    statistics and learning rate as the uninterrupted run: the scheduler's step count and the
    running statistics travel in the checkpoint (without them the lr would restart its warm-up)."""
    import shutil

    cfg = _cfg(prepared_demo, epochs=5, deterministic=True, norm="batch", schedule="cosine", warmup_epochs=1.0,
               optimizer="adamw", weight_decay=0.01, label_smoothing=0.1, class_balance=True)
    straight = build_trainer(cfg, RunSettings(storage=str(tmp_path), name="straight", keep_checkpoints=10)).fit()
    assert straight.error is None
    by_epoch = {json.loads(p.read_text())["epoch"]: p.parent for p in (tmp_path / "straight").glob("checkpoint_*/meta.json")}
    meta = json.loads((by_epoch[2] / "meta.json").read_text())
    assert meta["model"]["norm"] == "batch" and meta["train_config"]["schedule"] == "cosine"
    state = torch.load(by_epoch[2] / "train_state.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] > 0  # optimizer steps taken so far
    weights = torch.load(by_epoch[2] / MODEL_FILE, weights_only=True)
    assert weights["features.1.num_batches_tracked"] == state["scheduler"]["last_epoch"]

    shutil.copytree(by_epoch[2], tmp_path / "resumed" / by_epoch[2].name)  # a run that stopped after epoch 2
    resumed = build_trainer(cfg, RunSettings(storage=str(tmp_path), name="resumed", keep_checkpoints=10)).fit()
    assert resumed.error is None and resumed.metrics["resumed_from"] == 2
    assert [m["epoch"] for m in read_metrics(tmp_path / "resumed")] == [3, 4, 5]
    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")
    assert any("running_var" in k for k in a)
    _assert_same_weights(a, b)
    last = {p.parent.name: json.loads(p.read_text())["epoch"] for p in (tmp_path / "resumed").glob("checkpoint_*/meta.json")}
    end = [tmp_path / "resumed" / n for n, e in last.items() if e == 5][0]
    end_straight = by_epoch[5]
    sa, sb = (torch.load(d / "train_state.pt", weights_only=True) for d in (end_straight, end))
    assert sa["scheduler"] == sb["scheduler"]
    assert sa["optimizer"]["param_groups"][0]["lr"] == sb["optimizer"]["param_groups"][0]["lr"]


def test_two_cpu_workers_train_with_batch_norm(ray_session, prepared_demo, tmp_path):
    """DDP on CPU with batch norm: SyncBatchNorm runs on GPUs only, so each worker normalises by
    its own half-batch and DDP broadcasts rank 0's running statistics (see train.py); the run
    trains, and the checkpoint's statistics are rank 0's."""
    cfg = _cfg(prepared_demo, epochs=3, lr=2e-3, norm="batch", schedule="onecycle")
    two = build_trainer(cfg, RunSettings(storage=str(tmp_path), name="two-bn", workers=2, cpus_per_worker=0.5)).fit()
    assert two.error is None
    log = read_metrics(tmp_path / "two-bn")
    assert [m["epoch"] for m in log] == [1, 2, 3]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    w = torch.load(Path(two.checkpoint.path) / MODEL_FILE, weights_only=True)
    stats = [k for k in w if k.endswith("running_mean") or k.endswith("running_var")]
    assert len(stats) == 10 and all(torch.isfinite(w[k]).all() for k in stats)
    assert not torch.equal(w["features.1.running_var"], torch.ones_like(w["features.1.running_var"]))  # updated


@settings(max_examples=100, deadline=None)
@given(counts=st.lists(st.integers(0, 5_000), min_size=2, max_size=12))
def test_class_weights_balance_the_classes_and_average_one_per_clip(counts):
    from audionet_ray.training.train import class_weights

    classes = [f"c{i}" for i in range(len(counts))]
    manifest = {"counts": {"trainval": {c: n for c, n in zip(classes, counts) if n}, "test": {"c0": 99}}}
    w = class_weights(manifest, classes).double()
    n = torch.tensor([max(c, 1) for c in counts], dtype=torch.float64)
    assert torch.allclose(w * n, (w * n)[0].expand(len(counts)), rtol=1e-5)  # every class weighs the same in all
    assert float((w * n).sum() / n.sum()) == pytest.approx(1.0, rel=1e-5)  # a clip weighs 1 on average


def test_cli_takes_class_balance(tmp_path):
    from audionet_ray.training.train import _parser

    assert _parser().parse_args(["--data", "x", "--class-balance"]).class_balance is True
    assert _parser().parse_args(["--data", "x"]).class_balance is False


SCORES = st.one_of(st.none(), st.floats(-1e3, 1e3, width=32), st.just(float("nan")), st.sampled_from([0.25, 0.5]))


@settings(max_examples=100, deadline=None)
@given(scores=st.lists(SCORES, max_size=6), mode=st.sampled_from(["max", "min"]))
def test_trains_last_lines_name_the_best_checkpoint_as_ranking_does(scores, mode):
    """`train`'s "best checkpoint" line: the best real score in the run's mode (the first on a tie);
    a checkpoint without one (None, NaN) is never it, and with none there is no such line."""
    import contextlib
    import io
    from types import SimpleNamespace

    from audionet_ray.training.train import _say_result

    result = SimpleNamespace(metrics={"epoch": 4, "val_accuracy": 0.5}, path="/runs/audionet",
                             best_checkpoints=[(SimpleNamespace(path=f"/ck/{i}"), {"val_accuracy": s})
                                               for i, s in enumerate(scores)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _say_result(result, RunSettings(metric="val_accuracy", mode=mode))
    lines = out.getvalue().splitlines()
    assert lines[0] == "done: epoch 4  val_accuracy 0.500" and lines[-1] == "run folder: /runs/audionet"
    real = [(i, s) for i, s in enumerate(scores) if s is not None and s == s]
    if not real:
        assert len(lines) == 2
        return
    sign = 1 if mode == "max" else -1
    i, s = min(real, key=lambda p: (-sign * p[1], p[0]))
    assert lines[1] == f"best checkpoint (val_accuracy {s:.3f}): /ck/{i}"
