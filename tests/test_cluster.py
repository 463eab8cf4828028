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
import random
import shlex
import shutil
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
TOKEN = "~/.ray/auth_token"  # Ray's default token file: on your machine, and copied to every node
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
    assert c["file_mounts"] == {"/home/ray/audionet-ray": ".", "/home/ray/.ray/auth_token": TOKEN}
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
    assert c["file_mounts"] == {"~/audionet-ray": ".", "~/.ray/auth_token": TOKEN}
    assert any("pip install -q -e ~/audionet-ray" in s for s in c["setup_commands"])
    assert len(c["provider"]["worker_ips"]) == c["max_workers"]


# ----------------------------------------------------------------------------- helpers

_PORTS_GIVEN: set[int] = set()


def _free_port() -> int:
    """A port no one listens on, never the same twice in a session, and below the kernel's
    ephemeral range (32768-60999), where any outgoing connection, Ray's own included, may take a
    port between our asking and `ray start` binding it (CI once lost a GCS port so); Ray's workers
    use 10002-19999."""
    for _ in range(1000):
        port = random.randrange(20000, 32000)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    raise RuntimeError("no free port in 20000-31999")


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


# ----------------------------------------------------------------------------- token authentication, as shipped

NODE_HOMES = ("~/", "/home/ray/")  # a node's home: the SSH user's (on-prem) or the container's (AWS)


@pytest.mark.parametrize("which", sorted(CONFIGS))
def test_every_start_command_turns_token_authentication_on(which):
    """Each `ray start` of the file, head and workers, not only where a token file happens to exist."""
    c = yaml.safe_load(CONFIGS[which].read_text())
    starts = [cmd for cmd in c["head_start_ray_commands"] + c["worker_start_ray_commands"] if "ray start" in cmd]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token " in cmd for cmd in starts), starts
    assert _token_mount(c).startswith(NODE_HOMES)


def _token_mount(config: dict) -> str:
    """Where file_mounts puts your token on a node (`ray up` copies it there before `ray start`)."""
    remotes = [remote for remote, local in config["file_mounts"].items() if local == TOKEN]
    assert len(remotes) == 1, f"file_mounts should copy {TOKEN} to the nodes once: {config['file_mounts']}"
    return remotes[0]


def _mount_token(config: dict, laptop: Path, node: Path) -> None:
    """What `ray up`'s file_mounts do with the token, into a folder that plays the node's home."""
    remote = _token_mount(config)
    dest = node / remote.removeprefix(next(h for h in NODE_HOMES if remote.startswith(h)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes((laptop / TOKEN.removeprefix("~/")).read_bytes())


def _bare_env(home: Path, **extra) -> dict:
    """This machine's environment with no Ray token or mode of its own, `home` as HOME, and
    this venv's `ray` first on the PATH (the shipped commands call `ray` or the venv's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    home.mkdir(parents=True, exist_ok=True)
    return {**env, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
            "PYTHONUNBUFFERED": "1", **extra}


def _runnable_here(cmd: str, gcs_port: int, temp_dir: str, *extra: str) -> str:
    """A shipped start command as it can run on this machine beside other Ray users: this venv's
    `ray`, free ports, no autoscaling config (the launcher writes it on a real head), a temp dir
    of its own, and --block so that the test owns the node's processes."""
    import re

    cmd = cmd.replace("~/audionet-ray-venv/bin/ray ", "ray ").replace("6379", str(gcs_port))
    cmd = re.sub(r" --autoscaling-config=\S+", "", cmd)
    cmd = re.sub(r"--object-manager-port=\d+", f"--object-manager-port={_free_port()}", cmd)
    return f"{cmd} --temp-dir={temp_dir} --dashboard-agent-listen-port={_free_port()} {' '.join(extra)} --block"


def _start_node(cmd: str, env: dict, log: Path) -> subprocess.Popen:
    """Run one start command; return once the node is up (its `ray start --block` keeps running)."""
    proc = subprocess.Popen(["bash", "-c", cmd], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            _stop(proc)
            raise AssertionError(f"{cmd}\nexited {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


CLIENT = "import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); " \
         "print(json.dumps(sum(n['Alive'] for n in ray.nodes())))"


def _client(address: str, env: dict) -> subprocess.CompletedProcess:
    """A driver in a process of its own, as a user's or an attacker's would be."""
    return subprocess.run([sys.executable, "-c", CLIENT, address], env={**env, "RAY_gcs_server_port_wait_time_s": "3"},
                          capture_output=True, text=True, timeout=120)


def _job_api(port: int, host: str = "127.0.0.1", token: str | None = None) -> int | str:
    """The dashboard's job API (what ShadowRay used to run commands): its HTTP status, or why not."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/api/jobs/", headers=headers),
                                    timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the nodes' processes in /proc")
@pytest.mark.parametrize("which", sorted(CONFIGS))
def test_cluster_from_the_shipped_start_commands_refuses_clients_without_the_token(which, tmp_path):
    """The file's own head and worker start commands, run here after its file_mounts: the token is
    made as docs/cluster.md says, a worker node joins with it, a driver and the job API without it
    (or with another) are refused, with it accepted; the dashboard is not reachable off localhost.
    (The `ray stop` before each start is left out: here it would stop other people's Ray.)"""
    import tempfile

    import ray._private.services as services

    c = yaml.safe_load(CONFIGS[which].read_text())
    laptop, node, stranger = tmp_path / "laptop", tmp_path / "node", tmp_path / "stranger"
    subprocess.run(["ray", "get-auth-token", "--generate"], env=_bare_env(laptop), check=True, capture_output=True,
                   timeout=60)
    token = (laptop / TOKEN.removeprefix("~/")).read_text().strip()
    _mount_token(c, laptop, node)
    ip, gcs_port, dash_port = services.get_node_ip_address(), _free_port(), _free_port()
    address, temp_dir = f"{ip}:{gcs_port}", tempfile.mkdtemp(prefix="rayauth", dir="/tmp")  # short: socket paths
    (head_cmd,), (worker_cmd,) = ([cmd for cmd in c[k] if "ray start" in cmd]
                                  for k in ("head_start_ray_commands", "worker_start_ray_commands"))
    node_env = _bare_env(node, RAY_HEAD_IP=ip)
    nodes = []
    try:
        nodes.append(_start_node(_runnable_here(head_cmd, gcs_port, temp_dir, f"--dashboard-port={dash_port}",
                                                f"--ray-client-server-port={_free_port()}"), node_env, tmp_path / "head.log"))
        nodes.append(_start_node(_runnable_here(worker_cmd, gcs_port, temp_dir, "--num-cpus=1"), node_env,
                                 tmp_path / "worker.log"))
        for env in (_bare_env(stranger), _bare_env(stranger, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)):
            p = _client(address, env)
            assert p.returncode != 0 and "Authentication token is missing or incorrect" in p.stderr, p.stderr[-3000:]
        p = _client(address, _bare_env(laptop, RAY_AUTH_MODE="token"))
        assert p.returncode == 0 and p.stdout.split()[-1] == "2", p.stderr[-3000:]  # the head and the worker node
        assert _job_api(dash_port) == 401 and _job_api(dash_port, token="0" * 64) == 403
        assert _job_api(dash_port, token=token) == 200
        assert _job_api(dash_port, host=ip, token=token) == "URLError"  # nothing listens off localhost
    finally:
        for proc in reversed(nodes):
            _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the node's processes in /proc")
@pytest.mark.parametrize("which", sorted(CONFIGS))
def test_shipped_head_start_command_fails_without_a_token_instead_of_starting_open(which, tmp_path):
    """A node where the token did not arrive: `ray start` stops with Ray's one line about the token,
    rather than serving GCS and the job API to anyone (what a start without RAY_AUTH_MODE does)."""
    import tempfile

    c = yaml.safe_load(CONFIGS[which].read_text())
    (head_cmd,) = [cmd for cmd in c["head_start_ray_commands"] if "ray start" in cmd]
    temp_dir = tempfile.mkdtemp(prefix="rayauth", dir="/tmp")
    log = tmp_path / "head.log"
    cmd = _runnable_here(head_cmd, _free_port(), temp_dir, f"--dashboard-port={_free_port()}",
                         f"--ray-client-server-port={_free_port()}")
    proc = subprocess.Popen(["bash", "-c", cmd], env=_bare_env(tmp_path / "node"), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert rc not in (None, 0), f"started without a token:\n{log.read_text()[-2000:]}"
    assert "no authentication token was found" in log.read_text(), log.read_text()[-2000:]
