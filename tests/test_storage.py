"""Datasets and experiments behind URIs (s3:// on a cluster), tested offline through file:// URIs:
the same pyarrow filesystem code path, without a network. Also: planning with the autoscaler."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from audionet_ray.core.cluster import autoscaler_max_resources
from audionet_ray.pipeline.data import ensure_prepared, load_noise
from audionet_ray.corpus.discover import DatasetError
from audionet_ray.corpus.prepare import load_manifest
from audionet_ray.tuning.experiment import best_checkpoint, checkpoints
from audionet_ray.tuning.experiment import local_experiment
from audionet_ray.core.storage import UriPath, is_uri, location, publish

ROOT = Path(__file__).resolve().parent.parent


def test_local_paths_stay_paths_and_uris_do_path_things(tmp_path):
    assert location("~/x") == Path("~/x").expanduser() and not is_uri("~/x")
    u = location(f"file://{tmp_path}") / "exp" / "a"
    assert isinstance(u, UriPath) and str(u) == f"file://{tmp_path}/exp/a" and u.name == "a"
    assert str(u.parent) == f"file://{tmp_path}/exp" and not u.exists()
    u.mkdir(parents=True, exist_ok=True)
    (u / "x.json").write_text('{"k": 1}')
    with (u / "t.csv").open("w", newline="") as f:
        f.write("a,b\n")
    assert json.loads((u / "x.json").read_text()) == {"k": 1} and (tmp_path / "exp/a/t.csv").read_text() == "a,b\n"
    assert [p.name for p in sorted(location(f"file://{tmp_path}").glob("exp/*/*.json"))] == ["x.json"]
    assert sorted(p.name for p in u.iterdir()) == ["t.csv", "x.json"]
    assert str(location("file:///").parent) == "file:///" and str(location("file:///tmp").parent) == "file:///"


def test_prepared_dataset_read_through_a_uri(prepared_demo, tmp_path):
    uri = f"file://{prepared_demo}"
    assert load_manifest(uri) == load_manifest(prepared_demo)
    assert np.array_equal(load_noise(uri), load_noise(prepared_demo)) and load_noise(uri).size > 0
    assert str(ensure_prepared(uri)) == uri  # a URI is taken as a prepared dataset, never prepared again
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        ensure_prepared(f"file://{tmp_path}/nothing-here")


def test_split_datasets_read_parquet_from_a_uri(ray_session, prepared_demo):
    from audionet_ray.pipeline.data import split_datasets

    by_uri = split_datasets(f"file://{prepared_demo}", 0.8, shuffle_files=False)
    by_path = split_datasets(prepared_demo, 0.8, shuffle_files=False)
    assert {k: ds.count() for k, ds in by_uri.items()} == {k: ds.count() for k, ds in by_path.items()}


def test_prepare_cli_publishes_to_a_uri_manifest_last(demo_root, tmp_path):
    out = f"file://{tmp_path}/bucket/prepared"
    p = subprocess.run([sys.executable, "-m", "audionet_ray.prepare", str(demo_root), out, "--workers", "1"],
                       capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "AUDIONET_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr[-2000:]
    m = load_manifest(out)
    assert all((tmp_path / "bucket/prepared" / s).is_file() for s in m["shards"])
    assert f"manifest: {out}/manifest.json" in p.stdout


def test_publish_copies_everything_with_the_manifest_last(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("manifest.json", "a.parquet", "sub/b.parquet"):
        (src / name).write_text(name)
    order = []
    real = UriPath.upload_from
    monkeypatch.setattr(UriPath, "upload_from", lambda self, f: (order.append(self.name), real(self, f))[1])
    publish(src, f"file://{tmp_path}/dst")
    assert order[-1] == "manifest.json" and sorted(order) == ["a.parquet", "b.parquet", "manifest.json"]
    assert (tmp_path / "dst/sub/b.parquet").read_text() == "sub/b.parquet"


def _experiment(root: Path) -> Path:
    exp = root / "exp"
    for tid, acc in (("t1", 0.5), ("t2", 0.7)):
        c = exp / "train_runs" / tid / "checkpoint_000"
        c.mkdir(parents=True)
        (c / "meta.json").write_text(json.dumps({"epoch": 2, "metrics": {"val_accuracy": acc},
                                                 "files": {"model.pt": len(b"weights")}}))
        (c / "model.pt").write_bytes(b"weights")
    (exp / "search.json").write_text("{}")
    return exp


def test_best_checkpoint_of_an_experiment_behind_a_uri_copied_here(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIONET_CACHE", str(tmp_path / "cache"))
    exp = _experiment(tmp_path)
    uri = f"file://{exp}"
    assert len(checkpoints(uri)) == 2
    tid, ckpt, meta = best_checkpoint(uri)
    assert tid == "t2" and str(ckpt) == f"{uri}/train_runs/t2/checkpoint_000" and meta["metrics"]["val_accuracy"] == 0.7
    local = local_experiment(uri)
    assert isinstance(local, Path) and local != exp
    assert (local / "search.json").exists() and (local / "train_runs/t2/checkpoint_000/model.pt").read_bytes() == b"weights"
    assert not (local / "train_runs/t1").exists()  # only what export needs
    assert best_checkpoint(local)[0] == "t2"
    assert local_experiment(exp) == exp  # a local experiment as it is


def test_autoscaler_capacity_counts_every_worker_type_at_its_max(tmp_path):
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    # what `ray up` leaves on the head: resources filled in from the instance types
    cfg["available_node_types"]["gpu_worker"]["resources"] = {"CPU": 8, "GPU": 1}
    cfg["available_node_types"]["gpu_worker_4x"]["resources"] = {"CPU": 48, "GPU": 4}
    f = tmp_path / "ray_bootstrap_config.yaml"
    f.write_text(yaml.safe_dump(cfg))
    assert autoscaler_max_resources(f) == {"CPU": 8 * 8 + 48, "GPU": 8 + 4, "driver_slot": 16}
    assert autoscaler_max_resources(tmp_path / "missing.yaml") == {}
