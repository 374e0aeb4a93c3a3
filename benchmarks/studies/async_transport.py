"""
Throughput of the learner-actor transport (``sb3_apo/async_rollouts/transport.py``) against a
``multiprocessing`` pipe, for messages of the sizes asynchronous training sends.

A forked process receives each message and sends it back; the time of one round trip,
over twice the message's size, gives bytes/s. The transport's actor end receives on a
thread, and its messages go out of band (no copy on the way out); the pipe pickles
the message whole. Both run one message at a time, so that the pipe cannot deadlock.

Usage::

    python benchmarks/studies/async_transport.py [--sizes-mb 0.25 1 8 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from sb3_apo.async_rollouts.transport import Link


def _echo_transport(link: Link) -> None:
    end = link.actor_end()
    end.start(on_learner_gone=lambda: None)
    while (message := end.receive()) is not None:
        end.send(message)
    os._exit(0)


def _echo_pipe(connection: Connection, learners: Connection) -> None:
    learners.close()  # so that the learner closing its end reads as the end of the file here
    try:
        while True:
            connection.send(connection.recv())
    except EOFError:
        os._exit(0)


def _bytes_per_s(
    send: Callable[[Any], None], receive: Callable[[], Any], message: Any, size_bytes: int, repeats: int
) -> float:
    """Median bytes/s of round trips (the message there and back) through an echoing process."""
    send(message)  # warm-up
    receive()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        send(message)
        receive()
        times.append(time.perf_counter() - started)
    return 2 * size_bytes / statistics.median(times)


def measure(size_bytes: int, repeats: int) -> dict[str, float]:
    """Median bytes/s of both transports for a message of a policy's weights of about ``size_bytes``."""
    context = mp.get_context("fork")
    n_layers = 4
    message = ("collect", 0, {f"layer{i}": np.ones(size_bytes // 4 // n_layers, dtype=np.float32) for i in range(n_layers)})

    link = Link()
    process = context.Process(target=_echo_transport, args=(link,), daemon=True)
    process.start()
    learner = link.learner_end(process.sentinel)
    transport = _bytes_per_s(learner.send, learner.receive, message, size_bytes, repeats)
    learner.close()
    process.join()

    ours, theirs = context.Pipe()
    process = context.Process(target=_echo_pipe, args=(theirs, ours), daemon=True)
    process.start()
    theirs.close()
    pipe = _bytes_per_s(ours.send, ours.recv, message, size_bytes, repeats)
    ours.close()
    process.join()
    return {"transport": transport, "multiprocessing_pipe": pipe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[0.25, 1.0, 8.0, 64.0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(f"{'size (MB)':>10} {'transport (MB/s)':>18} {'multiprocessing pipe (MB/s)':>28}")
    for size_mb in args.sizes_mb:
        result = measure(int(size_mb * 2**20), args.repeats)
        print(f"{size_mb:>10g} {result['transport'] / 2**20:>18.0f} {result['multiprocessing_pipe'] / 2**20:>28.0f}")


if __name__ == "__main__":
    main()
