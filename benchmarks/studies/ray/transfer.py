"""
Transfer costs through Ray's object store, as the Ray backend pays them: learner to actor (the
weights: one ``ray.put``, then the actor's call that reads them) and actor to learner (a
rollout: the actor returns numpy arrays, which ``ray.get`` maps into the learner). For payloads
of 1 byte (the call's fixed cost) and 1, 8 and 64 MB, 10 repetitions each (median, and the
lowest and highest), on a local instance (one node) and on a two-node ``ray.cluster_utils.Cluster``
on this machine with the actor on the second node (the bytes then cross between two object
stores over the loopback interface, not a network). Writes ``transfer.csv``, ``transfer.md``
and ``command.txt`` into ``--out``.

Run from the repository root, on an otherwise idle machine:
python benchmarks/studies/ray/transfer.py --out results/ray/transfer
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from ray.cluster_utils import Cluster

from sb3_apo.zoo.masking import recorded_command

SIZES = (1, 1 << 20, 8 << 20, 64 << 20)
REPEATS = 10
OBJECT_STORE_BYTES = 1 << 30


class Endpoint:
    """The actor's side: it holds payloads to send, and reads those it receives."""

    def __init__(self):
        self.payloads = {size: np.ones(size, dtype=np.uint8) for size in SIZES}

    def send(self, size: int) -> np.ndarray:
        return self.payloads[size]

    def receive(self, payload: np.ndarray) -> int:
        return int(payload[-1])  # read: the payload is in this node's object store

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def measure(setup: str, options: dict) -> list[dict]:
    endpoint = ray.remote(Endpoint).options(**options).remote()
    node = ray.get(endpoint.node.remote())
    rows = []
    for size in SIZES:
        payload = np.ones(size, dtype=np.uint8)
        for repeat in range(REPEATS + 1):  # the first of each size is not counted
            started = time.perf_counter()
            ray.get(endpoint.receive.remote(ray.put(payload)))
            to_actor = time.perf_counter() - started
            started = time.perf_counter()
            received = ray.get(endpoint.send.remote(size))
            to_learner = time.perf_counter() - started
            assert received.nbytes == size
            del received
            if repeat:
                rows += [
                    {"setup": setup, "direction": "learner to actor", "bytes": size, "repeat": repeat, "seconds": to_actor},
                    {"setup": setup, "direction": "actor to learner", "bytes": size, "repeat": repeat, "seconds": to_learner},
                ]
    ray.kill(endpoint)
    learner_node = ray.get_runtime_context().get_node_id()
    for row in rows:
        row["same_node"] = node == learner_node
    return rows


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    table = rows.groupby(["setup", "same_node", "direction", "bytes"], sort=False).seconds.agg(["median", "min", "max"])
    table = table.reset_index()
    fixed = table[table.bytes == 1].set_index(["setup", "direction"])["median"]
    per_mb = (table["median"] - [fixed[(setup, direction)] for setup, direction in zip(table.setup, table.direction)]) / (
        table.bytes / 2**20
    )
    table["ms_per_mb_above_fixed"] = np.where(table.bytes > 1, 1000 * per_mb, np.nan)
    table["mb_per_s"] = np.where(table.bytes > 1, table.bytes / 2**20 / table["median"], np.nan)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    command = recorded_command(["python", "benchmarks/studies/ray/transfer.py", *sys.argv[1:]])
    (args.out / "command.txt").write_text(shlex.join(command) + "\n")
    rows = []
    ray.init(address="local", include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES)
    try:
        rows += measure("local instance", {})
    finally:
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES})
    cluster.add_node(num_cpus=1, resources={"second_node": 1}, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address)
        rows += measure("two-node cluster", {"resources": {"second_node": 1}})
    finally:
        ray.shutdown()
        cluster.shutdown()
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "transfer.csv", index=False)
    table = summarise(frame)
    (args.out / "transfer.md").write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
