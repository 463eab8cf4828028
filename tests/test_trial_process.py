"""Trials trained in Tune's own trial process (trial_process.py) and the rule that picks them (tune.choose_trainer)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audionet_ray.training.checkpoint import save as save_checkpoint
from audionet_ray.training.config import ConfigError, RunSettings, TrainConfig
from audionet_ray.modeling.model import AudioNet
from audionet_ray.tuning.search_space import SearchSpec, load_spec
from audionet_ray.training.trial_process import TrialSession
from audionet_ray.tune import choose_trainer, trial_resources

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(d: Path, epoch: int, score: float) -> None:
    cfg = TrainConfig.from_dict(dict(width=4, dense=8, seed=epoch))
    model = AudioNet.from_config(cfg.model_config(3))
    d.mkdir(parents=True)
    save_checkpoint(d, model, torch.optim.NAdam(model.parameters()), epoch, cfg, cfg.model_config(3), ["a", "b", "c"],
                    {"val_loss": score})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scores=st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=6),
       keep=st.integers(1, 3), torn=st.booleans())
def test_pruning_keeps_the_latest_and_the_best_k_by_the_metric(scores, keep, torn, tmp_path_factory):
    """As Train's CheckpointConfig(num_to_keep=k, score attribute): what export and resume rely on."""
    root = tmp_path_factory.mktemp("run")
    session = TrialSession(RunSettings(storage=str(root), name="t1", keep_checkpoints=keep, metric="val_loss", mode="min"))
    for epoch, score in enumerate(scores, start=1):
        _checkpoint(session.run_dir / f"checkpoint_epoch_{epoch:04d}", epoch, score)
    if torn:  # a folder cut short by a crash is not a checkpoint: never counted, never deleted by mistake for one
        (session.run_dir / "checkpoint_epoch_0099").mkdir()
    session.prune()
    kept = {int(d.name.rsplit("_", 1)[1]) for d in session.run_dir.glob("checkpoint_*") if (d / "meta.json").exists()}
    ranked = sorted(range(1, len(scores) + 1), key=lambda e: (scores[e - 1], -e))  # lower is better; later on a tie
    assert kept == {len(scores), *ranked[:keep]}
    assert session.resume() is not None and Path(session.resume().path).name == f"checkpoint_epoch_{len(scores):04d}"


def test_a_run_folder_without_a_checkpoint_resumes_from_nothing(tmp_path):
    session = TrialSession(RunSettings(storage=str(tmp_path), name="none"))
    (session.run_dir / ".writing_x").mkdir(parents=True)  # a save killed half-way
    _checkpoint(session.run_dir / ".writing_x" / "inner", 3, 0.5)
    assert session.resume() is None and not list(session.run_dir.iterdir())


def _spec(**resources) -> SearchSpec:
    spec = load_spec("smoke")
    for k, v in resources.items():
        setattr(spec.resources, k, v)
    return spec


def test_the_trial_process_trains_one_worker_on_one_machine_else_a_torchtrainer(prepared_demo, tmp_path):
    data, exp = str(prepared_demo), tmp_path / "exp"
    assert choose_trainer(_spec(), data, exp, nodes=1)[0] is True
    assert choose_trainer(_spec(trainer="trial"), data, exp, nodes=1)[0] is True
    assert choose_trainer(_spec(trainer="torch"), data, exp, nodes=1)[0] is False
    for spec, exp_dir, nodes, why in [
        (_spec(workers_per_trial=2), exp, 1, "2 workers per trial"),
        (_spec(), exp, 3, "a cluster of 3 nodes"),
        (_spec(), "s3://bucket/exp", 1, "object storage"),
    ]:
        chosen, said = choose_trainer(spec, data, exp_dir, nodes)
        assert chosen is False and why in said
        spec.resources.trainer = "trial"  # asked for, where it cannot: one line naming the option
        with pytest.raises(ConfigError, match=f"--trainer trial: .*{why}.*use --trainer torch or auto"):
            choose_trainer(spec, data, exp_dir, nodes)


def test_a_trial_that_trains_holds_its_workers_cpus_and_gpus():
    assert trial_resources({"driver_slot": 1}, False, 1.0, 0.0) == {"driver_slot": 1}
    assert trial_resources({"driver_slot": 1}, True, 1.0, 0.0) == {"driver_slot": 1, "CPU": 1.0}
    assert trial_resources({"CPU": 0.01}, True, 0.5, 0.25) == {"CPU": 0.5, "GPU": 0.25}


def test_an_unknown_trainer_is_one_line(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text((ROOT / "audionet_ray/search_spaces/smoke.yaml").read_text().replace(
        "cpus_per_worker: 0.5", "cpus_per_worker: 0.5\n  trainer: threads"))
    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--search-space", str(space),
                        "--storage", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "trainer must be auto, trial" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a real search of 4 trials in Tune's trial processes, ASHA on: ~60 s
def test_trials_in_the_trial_process_reuse_it_are_stopped_by_asha_and_export(ray_session, prepared_demo, tmp_path):
    """Later trials run in the process an earlier one used (no process start); a stopped trial frees its
    slot (the search ends); the run folders are what export reads."""
    import ray

    p = subprocess.run([sys.executable, "-m", "audionet_ray.tune", "--search-space", "smoke", "--data",
                        str(prepared_demo), "--num-samples", "5", "--trainer", "trial", "--storage", str(tmp_path),
                        "--name", "inproc", "--address", ray.get_runtime_context().gcs_address],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "trials train in Tune's trial process" in p.stdout
    exp = tmp_path / "inproc"
    pids = {}
    for f in exp.glob("run_trial_*/result.json"):
        lines = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        pids[f.parent.name] = lines[0]["pid"]
    assert len(pids) == 5 and len(set(pids.values())) < 5, pids  # processes were reused
    assert (exp / "bundle" / "model.onnx").is_file()
    for run in (exp / "train_runs").iterdir():
        assert (run / "metrics.jsonl").is_file() and list(run.glob("checkpoint_epoch_*/meta.json"))
    shutil.rmtree(exp)
