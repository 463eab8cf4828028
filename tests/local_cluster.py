"""A real multi-node Ray cluster on this machine, in a process of its own, for tests/test_cluster.py.

    python tests/local_cluster.py '{"head": {...}, "workers": [{...}, ...]}'

Each node is a full Ray node (its own raylet, object store and resources), started with
`ray.cluster_utils.Cluster`. The process prints one JSON line -- the GCS address and the node
ids -- then obeys lines on stdin: `remove NODE_ID` kills that worker node (its raylet and every
worker process on it, as a lost machine would) and answers `removed NODE_ID`; `quit` or the
end of stdin shuts every node down. Running apart from pytest keeps the session's own Ray
(the `ray_session` fixture) untouched: one Ray per process.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    from ray._private.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    spec = json.loads(sys.argv[1])
    address_file = get_ray_address_file(None)
    previous = _read(address_file)
    cluster = Cluster(initialize_head=True, head_node_args=spec.get("head", {}))
    try:
        workers = {}
        for args in spec.get("workers", []):
            node = cluster.add_node(**args)
            workers[node.node_id] = node
        cluster.wait_for_nodes()
        # Cluster() points `ray.init(address="auto")` at itself; other Ray users of this machine
        # should not find a test cluster there.
        if previous is None:
            os.remove(address_file)
        else:
            _write(address_file, previous)
        print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id, "workers": list(workers)}),
              flush=True)
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "remove":
                cluster.remove_node(workers.pop(arg), allow_graceful=False)
                print(f"removed {arg}", flush=True)
            elif cmd == "quit":
                break
    finally:
        current = _read(address_file)
        cluster.shutdown()  # also deletes the address file, which may be someone else's by now
        if current is not None and not os.path.exists(address_file):
            _write(address_file, current)
    return 0


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
