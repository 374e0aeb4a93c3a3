"""
Where the Ray backend's time goes, against the forked actors': in a ``learn()`` call of 98,304
steps (48 rollouts) of asynchronous APO with two actors on Hopper-v5 (the project's settings, one
torch thread), the seconds from the call to the end of its first rollout (the actors' start:
a fork, or Ray actors that start, import, build their envs and load the model), and the steps/s
from the end of the fourth rollout to the end of the last (the steady state). Both backends,
interleaved over ``--rounds`` rounds, each ``learn()`` in a process of its own (forking a process
in which Ray is initialised can hang), with Ray started before the call in the Ray runs (its
start, ``ray_init_s``, is not in ``first_rollout_s``). Writes ``startup.csv`` and
``startup.md`` into ``--out``.

Run from the repository root, on an otherwise idle machine:
python benchmarks/studies/ray/startup.py --out results/ray/startup
"""

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_apo.async_rollouts.ray_actors import connect
from sb3_apo.zoo.masking import recorded_command
from sb3_apo.zoo.registry import register_algorithms

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, for benchmarks/
from benchmarks.speed import build_model, rate_ratio, rate_ratio_interval  # noqa: E402

STEPS = 98_304
SKIPPED = 4  # rollouts before the steady state


class RolloutEnds(BaseCallback):
    def __init__(self):
        super().__init__()
        self.times = []

    def _on_rollout_end(self):
        self.times.append((time.perf_counter(), self.num_timesteps))

    def _on_step(self):
        return True


def one_call(backend: str, seed: int) -> dict:
    """One ``learn()`` call of a fresh model, in this process: its first rollout's seconds and its steady rate."""
    th.set_num_threads(1)
    register_algorithms()
    ray_init_s = 0.0
    if backend == "ray":
        started = time.perf_counter()
        connect()  # a local instance, as the package starts one
        ray_init_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        try:
            contender = f"apo:async_rollouts=True,n_actors=2,actor_backend='{backend}'"
            model = build_model(contender, "Hopper-v5", None, scratch, seed, "cpu")[0]
            ends = RolloutEnds()
            started = time.perf_counter()
            model.learn(STEPS, callback=ends)
            finished = time.perf_counter()
        finally:
            ray.shutdown()
    first = ends.times[0][0]
    (steady_from, steps_from), (last, steps_last) = ends.times[SKIPPED - 1], ends.times[-1]
    return {
        "backend": backend,
        "ray_init_s": ray_init_s,
        "first_rollout_s": first - started,
        "steady_steps": steps_last - steps_from,
        "steady_s": last - steady_from,
        "steady_steps_per_s": (steps_last - steps_from) / (last - steady_from),
        "call_steps_per_s": model.num_timesteps / (finished - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--one", metavar="BACKEND", help=argparse.SUPPRESS)  # one call, in its own process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_call(args.one, seed=0)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    command = recorded_command(["python", "benchmarks/studies/ray/startup.py", *sys.argv[1:]])
    (args.out / "command.txt").write_text(shlex.join(command) + "\n")
    rows = []
    for round_index in range(args.rounds):
        for backend in ("fork", "ray") if round_index % 2 == 0 else ("ray", "fork"):
            output = subprocess.run(
                [sys.executable, __file__, "--one", backend, "--out", str(args.out)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows.append({"round": round_index, **json.loads(output.strip().splitlines()[-1])})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "startup.csv", index=False)
    columns = ["ray_init_s", "first_rollout_s", "steady_steps_per_s", "call_steps_per_s"]
    table = frame.groupby("backend")[columns].agg(["mean", "min", "max"])
    steady = frame.pivot(index="round", columns="backend", values="steady_steps_per_s")
    pairs = [
        frame[frame.backend == backend].sort_values("round")[name].to_numpy(dtype=float)
        for backend in ("ray", "fork")
        for name in ("steady_steps", "steady_s")
    ]
    low, high = rate_ratio_interval(*pairs)
    text = (
        table.to_markdown(floatfmt=".3g")
        + f"\n\nsteady state, Ray / fork: {rate_ratio(*pairs):.3f} [{low:.3f}, {high:.3f}] (rate over all rounds, 95% BCa "
        + "interval over rounds, as benchmarks/speed.py computes it); per round: "
        + ", ".join(f"{value:.3f}" for value in steady.ray / steady.fork)
        + "\n"
    )
    (args.out / "startup.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
