"""
Where the Ray backend's time goes, against the forked actors': in a ``learn()`` call of 98,304
steps (48 rollouts) of asynchronous APO with two actors on Hopper-v5 (the project's settings, one
torch thread), the seconds from the call to the end of its first rollout (the actors' start:
a fork, or Ray actors that start, import, build their envs and load the model), and the steps/s
from the end of the fourth rollout to the end of the last (the steady state). Both backends,
interleaved over ``--rounds`` rounds, Ray started once before them. Writes ``startup.csv`` and
``startup.md`` into ``--out``.

Run from the repository root, on an otherwise idle machine:
python benchmarks/studies/ray/startup.py --out results/ray/startup
"""

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_apo.async_rollouts.ray_actors import connect
from sb3_apo.zoo.registry import register_algorithms

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, for benchmarks/
from benchmarks.speed import build_model  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "command.txt").write_text(shlex.join(["python", "benchmarks/studies/ray/startup.py", *sys.argv[1:]]) + "\n")
    th.set_num_threads(1)
    register_algorithms()
    connect()  # a local instance, as the package starts one
    rows = []
    scratch = tempfile.TemporaryDirectory()
    try:
        models = {}
        for backend in ("fork", "ray"):
            contender = f"apo:async_rollouts=True,n_actors=2,actor_backend='{backend}'"
            models[backend] = build_model(contender, "Hopper-v5", None, scratch.name, 0, "cpu")[0]
        for round_index in range(args.rounds):
            for backend in ("fork", "ray") if round_index % 2 == 0 else ("ray", "fork"):
                model, ends = models[backend], RolloutEnds()
                started, before = time.perf_counter(), model.num_timesteps
                model.learn(STEPS, callback=ends, reset_num_timesteps=before == 0)
                (first, _), (steady_from, steps_from), (last, steps_last) = (
                    ends.times[0],
                    ends.times[SKIPPED - 1],
                    ends.times[-1],
                )
                rows.append(
                    {
                        "round": round_index,
                        "backend": backend,
                        "first_rollout_s": first - started,
                        "steady_steps_per_s": (steps_last - steps_from) / (last - steady_from),
                        "call_steps_per_s": (model.num_timesteps - before) / (time.perf_counter() - started),
                    }
                )
                print(rows[-1], flush=True)
    finally:
        ray.shutdown()
        scratch.cleanup()
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "startup.csv", index=False)
    table = frame.groupby("backend")[["first_rollout_s", "steady_steps_per_s", "call_steps_per_s"]].agg(["mean", "min", "max"])
    steady = frame.pivot(index="round", columns="backend", values="steady_steps_per_s")
    text = (
        table.to_markdown(floatfmt=".3g")
        + "\n\nsteady state, Ray / fork per round: "
        + ", ".join(f"{value:.3f}" for value in steady.ray / steady.fork)
        + f" (mean {(steady.ray / steady.fork).mean():.3f})\n"
    )
    (args.out / "startup.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
