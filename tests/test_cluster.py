"""Clusters without a cloud: the `ray up` configs against Ray's own schema, and the search on
real multi-node Ray clusters on this machine -- spread over nodes, losing a node, and nodes
launched on demand by Ray's fake multi-node autoscaler.

The clusters run in processes of their own (tests/local_cluster.py, `ray start --block`), and
the searches attach to them with `--address`, as they would to `ray up`'s head: the session's
own Ray (`ray_session`) is never used or touched here. Nodes get logical CPUs (more than this
machine has cores) shaped so that placement is forced: the head has 1 CPU and the driver
slots, a worker node 3 CPUs, a trial's Train worker 2 CPUs -- so no training fits on the head
and each worker node holds exactly one trial plus a CPU for Ray Data.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"aws": ROOT / "cluster.yaml", "onprem": ROOT / "cluster-onprem.yaml"}
HEAD = {"num_cpus": 1, "resources": {"driver_slot": 2}}  # drivers only: a Train worker needs 2 CPUs
WORKER_CPUS = 3  # one trial (2 CPUs) per node, and one CPU for Ray Data
SEARCH = ["--search-space", "smoke", "--num-samples", "2", "--scheduler", "fifo", "--cpus-per-worker", "2",
          "--max-concurrent", "2", "--no-export"]


# ----------------------------------------------------------------------------- the YAML files

def _validated(config: dict) -> dict:
    """What `ray up` checks before it touches a cloud: defaults merged, then Ray's JSON schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("which", sorted(CONFIGS))
def test_cluster_yaml_passes_rays_own_validation(which):
    prepared = _validated(yaml.safe_load(CONFIGS[which].read_text()))
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    for name, t in types.items():
        assert t["min_workers"] <= t["max_workers"], name


BROKEN = {
    "a typo in a key": lambda c: c.update(max_worker=c.pop("max_workers")),
    "a start command that YAML reads as a mapping": lambda c: c["head_start_ray_commands"].append({"ray start --resources='{\"driver_slot\"": "16}'"}),
    "min_workers above the global max_workers": lambda c: c.update(max_workers=0, min_workers=2)
    if c["provider"]["type"] == "local" else c["available_node_types"]["gpu_worker"].update(min_workers=9),
    "a field of the wrong type": lambda c: c["provider"].update(worker_ips="gpu1") if c["provider"]["type"] == "local"
    else c["available_node_types"]["head"].update(resources="CPU=0"),
}


@pytest.mark.parametrize("which", sorted(CONFIGS))
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_copy_of_cluster_yaml_fails_validation(which, case):
    config = yaml.safe_load(CONFIGS[which].read_text())
    BROKEN[case](config)
    import jsonschema

    with pytest.raises((jsonschema.ValidationError, ValueError)):  # refused with a reason, not crashed
        _validated(config)


def test_aws_config_is_what_the_docs_promise():
    import ray

    text = CONFIGS["aws"].read_text()
    c = yaml.safe_load(text)
    # the image's Ray is the Ray this package was tested with
    assert c["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-py3") and "gpu" in c["docker"]["image"]
    head = c["available_node_types"][c["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "driver_slot": 16}  # drivers only, no training on the head
    gpu_types = [t for n, t in c["available_node_types"].items() if n != c["head_node_type"]]
    assert gpu_types and all(t["min_workers"] == 0 and t["node_config"]["InstanceType"].startswith(("g", "p"))
                             for t in gpu_types)
    # workers read shards and write checkpoints in S3: they need an instance profile
    assert all("IamInstanceProfile" in t["node_config"] for t in gpu_types)
    # this checkout, installed on every node
    assert c["file_mounts"] == {"/home/ray/audionet-ray": "."}
    assert any("pip install" in s and "torch" in s for s in c["setup_commands"])
    assert "pip install -q -e /home/ray/audionet-ray" in c["setup_commands"]
    # nothing but SSH from outside: own security group, dashboard on localhost
    for t in c["available_node_types"].values():
        assert t["node_config"]["SecurityGroupIds"] == ["sg-REPLACE_ME"]
    assert "security_group" not in c["provider"]  # Ray's own group would open SSH to 0.0.0.0/0
    assert "--dashboard-host=127.0.0.1" in " ".join(c["head_start_ray_commands"])
    assert "0.0.0.0" not in text
    # every setting a user must change is marked where it is
    for setting in ("region:", "availability_zone:", "ImageId:", "KeyName:", "SecurityGroupIds:", "Arn:", "ssh_private_key:"):
        lines = [ln for ln in text.splitlines() if ln.strip().startswith(setting)]
        assert lines and all("MUST CHANGE" in ln for ln in lines), setting


def test_onprem_config_passes_resources_to_ray_start():
    c = yaml.safe_load(CONFIGS["onprem"].read_text())
    start = shlex.split(c["head_start_ray_commands"][-1].split(";", 1)[1])
    resources = json.loads(next(a.split("=", 1)[1] for a in start if a.startswith("--resources=")))
    assert resources == {"driver_slot": 16}
    assert "--num-cpus=0" in start and "--dashboard-host=127.0.0.1" in start
    assert c["file_mounts"] == {"~/audionet-ray": "."}
    assert any("pip install -q -e ~/audionet-ray" in s for s in c["setup_commands"])
    assert len(c["provider"]["worker_ips"]) == c["max_workers"]


# ----------------------------------------------------------------------------- helpers

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    """Token authentication, as `ray start` turns it on when a token exists (so make sure one does)."""
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
                   capture_output=True, check=True, timeout=60)
    return {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1", **extra}


def _tune(address: str, data: str, storage: str, name: str, *args: str, env: dict, **popen):
    cmd = [sys.executable, "-m", "audionet_ray.tune", *SEARCH, "--data", data, "--storage", storage,
           "--name", name, "--address", address, *args]
    if popen:
        return subprocess.Popen(cmd, env=env, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _history(exp: Path) -> dict[str, list[dict]]:
    """Each trial's reports in order (epoch, node_id, resumed_from, ...), from Tune's result.json."""
    out = {}
    for f in exp.glob("run_trial_*/result.json"):
        reports = []
        for ln in f.read_text().splitlines():
            try:
                reports.append(json.loads(ln))
            except json.JSONDecodeError:
                break  # a line Tune is still writing
        out[f.parent.name.split("_")[2]] = reports
    return out


def _rows(exp: Path) -> list[dict]:
    with open(exp / "results.csv") as f:
        return list(csv.DictReader(f))


def _checkpoints(exp: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for meta in (exp / "train_runs").glob("*/checkpoint_*/meta.json"):
        out.setdefault(meta.parent.parent.name, []).append(json.loads(meta.read_text())["epoch"])
    return {k: sorted(v) for k, v in out.items()}


class LocalCluster:
    """tests/local_cluster.py in a subprocess: start, remove a node, shut down."""

    def __init__(self, workers: int, env: dict):
        head = {**HEAD, "include_dashboard": True, "dashboard_port": _free_port()}
        spec = {"head": head, "workers": [{"num_cpus": WORKER_CPUS} for _ in range(workers)]}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "local_cluster.py"), json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the local cluster did not start (rc={self.proc.wait()})")
        info = json.loads(line)
        self.address, self.head, self.workers = info["address"], info["head"], list(info["workers"])

    def remove(self, node_id: str) -> None:
        self.proc.stdin.write(f"remove {node_id}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == f"removed {node_id}"
        self.workers.remove(node_id)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def cluster():
    """A head and three worker nodes, shared by the searches below (starting one takes a while)."""
    c = LocalCluster(workers=3, env=_env())
    try:
        yield c
    finally:
        c.close()


# ----------------------------------------------------------------------------- searches on clusters

@pytest.mark.slow
def test_search_spreads_trials_over_nodes_with_one_shared_storage(cluster, prepared_demo, tmp_path):
    """Data and experiment as file:// URIs: the code path of s3:// (pyarrow filesystems), offline."""
    data, storage = f"file://{prepared_demo}", f"file://{tmp_path}/shared"
    p = _tune(cluster.address, data, storage, "spread", "--epochs", "2", env=_env())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "2 trial(s) at once" in p.stdout, p.stdout[-3000:]
    exp = tmp_path / "shared" / "spread"
    history = _history(exp)
    assert len(history) == 2
    nodes = {tid: {r["node_id"] for r in reports} for tid, reports in history.items()}
    assert all(len(n) == 1 for n in nodes.values()), nodes  # a trial stays where it started
    placed = set().union(*nodes.values())
    assert len(placed) == 2 and placed <= set(cluster.workers), (placed, cluster.workers)  # two nodes, never the head
    # every trial's checkpoints in the one shared storage folder, with Tune's state beside them
    assert _checkpoints(exp) == {tid: [2] for tid in history}
    assert list(exp.glob("experiment_state-*.json")) and (exp / "results.csv").exists()
    assert f"best checkpoint: {storage}/spread/train_runs/" in p.stdout


@pytest.mark.slow
def test_search_survives_losing_a_worker_node(cluster, prepared_demo, tmp_path):
    """Kill the node of a trial that has a checkpoint: it resumes on another node from there."""
    epochs = 20  # an epoch here takes ~0.5 s: enough of them that the node dies while its trial still runs
    exp = tmp_path / "lossy"
    search = _tune(cluster.address, str(prepared_demo), str(tmp_path), "lossy", "--epochs", str(epochs), env=_env(),
                   stdout=open(tmp_path / "search.log", "w"), stderr=subprocess.STDOUT)
    victim = killed_at = None
    try:
        deadline = time.time() + 600
        while victim is None and time.time() < deadline and search.poll() is None:
            time.sleep(0.2)
            history = _history(exp)
            for tid in _checkpoints(exp):
                reports = history.get(tid, [])
                # checkpointed (and Tune has the checkpoint's epoch), half the epochs still to run
                if reports and 2 <= reports[-1]["epoch"] <= epochs // 2:
                    victim, node = tid, reports[-1]["node_id"]
                    cluster.remove(node)
                    killed_at = time.time()
                    break
        assert victim is not None, f"no checkpoint before the search ended (rc={search.poll()}): " + \
            (tmp_path / "search.log").read_text()[-3000:]
        rc = search.wait(timeout=600)
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
    log = (tmp_path / "search.log").read_text()
    assert rc == 0, log[-4000:]
    rows = _rows(exp)
    assert len(rows) == 2 and all(r["status"] == "done" and int(float(r["epochs_run"])) == epochs for r in rows), rows
    reports = _history(exp)[victim]
    before = [r for r in reports if r["node_id"] == node]
    after = [r for r in reports if r["node_id"] != node]
    assert [r["epoch"] for r in before][:2] == [1, 2], reports
    # the rest ran elsewhere, continuing from a checkpoint (epoch 2 or later) rather than from scratch
    assert after and after[-1]["epoch"] == epochs, reports
    (resumed_from,) = {r["resumed_from"] for r in after}
    assert resumed_from >= 2 and after[0]["epoch"] == resumed_from + 1, reports
    assert all(r["node_id"] in cluster.workers for r in after)
    assert [r["epoch"] for r in reports].count(1) == 1, reports
    assert time.time() - killed_at < 600


# ----------------------------------------------------------------------------- autoscaling

def _fake_autoscaling_config(gcs: str) -> dict:
    """Ray's fake multi-node provider: 'launching' a node starts a Ray node on this machine."""
    return {
        "cluster_name": "audionet-fake",
        "max_workers": 2,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1, "driver_slot": 2}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": WORKER_CPUS}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 5, "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc): what our `ray start` started, and nothing else."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _stop(head: subprocess.Popen) -> None:
    """End `ray start --block` and everything it started (fake nodes included), by pid."""
    procs = _descendants(head.pid)
    head.terminate()  # ray start --block stops its node's processes on SIGTERM
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    time.sleep(1)
    for pid in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the fake nodes' processes in /proc")
def test_autoscaler_launches_worker_nodes_when_trials_ask(prepared_demo, tmp_path):
    """Only a head at the start; the search plans for what the autoscaler may add, asks, and
    the fake multi-node autoscaler launches two worker nodes, one trial on each."""
    import ray._private.services as services
    from ray._private.utils import get_ray_address_file

    port = _free_port()
    gcs = f"{services.get_node_ip_address()}:{port}"
    config = tmp_path / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(_fake_autoscaling_config(gcs)))
    env = _env(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    address_file = Path(get_ray_address_file(None))
    previous = address_file.read_text() if address_file.exists() else None
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
         '--resources={"driver_slot":2}', f"--autoscaling-config={config}", f"--dashboard-port={_free_port()}",
         f"--dashboard-agent-listen-port={_free_port()}", f"--ray-client-server-port={_free_port()}"],
        env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT)
    try:
        p = _tune(gcs, str(prepared_demo), str(tmp_path), "autoscaled", "--epochs", "2",
                  env={**env, "AUDIONET_AUTOSCALING_CONFIG": str(config)})
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:] + (tmp_path / "head.log").read_text()[-2000:]
        # planned for the nodes the autoscaler may add: 1 + 2 x 3 CPUs
        assert "2 trial(s) at once" in p.stdout and "7 CPUs" in p.stdout, p.stdout[-3000:]
        history = _history(tmp_path / "autoscaled")
        nodes = {r["node_id"] for reports in history.values() for r in reports}
        # the fake provider numbers the nodes it launches: ...00001, ...00002 (the head is ...00000)
        assert len(history) == 2 and len(nodes) == 2 and all(n.startswith("ffff") and not n.endswith("00000")
                                                                 for n in nodes), nodes
    finally:
        _stop(head)
        if previous is not None:
            address_file.write_text(previous)
        elif address_file.exists():
            address_file.unlink()
