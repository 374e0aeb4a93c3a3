"""
The Ray backend's overhead on one machine: steps/s of asynchronous APO with two Ray actors over
the same with two forked actors, on CPU-bound Hopper-v5 with the project's settings (8 envs x
256 steps), one torch thread. ``benchmarks/speed.py`` measures SB3's PPO and both backends,
interleaved over rounds of 98,304 steps (48 rollouts; every round is one ``learn()`` call, so
it pays the actors' start: a fork, or a Ray actor that builds its envs and loads the model); then
the ratio Ray / fork over all rounds, with speed.py's paired BCa bootstrap interval over rounds.
Ray itself is started once, before the rounds (as a cluster runs before a job), and stopped at
the end.

Run from the repository root, on an otherwise idle machine:
python benchmarks/studies/ray/overhead.py --out results/ray/overhead
"""

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd
import ray

from sb3_apo.async_rollouts.ray_actors import connect
from sb3_apo.zoo.masking import recorded_command

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, for benchmarks/
from benchmarks.speed import rate_ratio, rate_ratio_interval, run_speed  # noqa: E402

FORK = "apo:async_rollouts=True,n_actors=2"
RAY = "apo:async_rollouts=True,n_actors=2,actor_backend='ray'"


def ratio_text(measurements: pd.DataFrame, numerator: str, denominator: str) -> str:
    """The rate of ``numerator`` over ``denominator``'s, over all rounds, with its 95% interval."""
    columns = []
    for name in (numerator, denominator):
        rows = measurements[measurements.contender == name].sort_values("round")
        columns += [rows.steps.to_numpy(dtype=float), rows.wall_s.to_numpy(dtype=float)]
    low, high = rate_ratio_interval(*columns)
    return f"{rate_ratio(*columns):.3f} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps-per-round", type=int, default=98_304)
    args = parser.parse_args()
    connect()  # a local instance, as the package starts one
    try:
        run_speed(
            env_id="Hopper-v5",
            contenders=["ppo", FORK, RAY],
            rounds=args.rounds,
            steps_per_round=args.steps_per_round,
            warmup_steps=4096,
            out=args.out,
            overwrite=True,
            command=shlex.join(recorded_command(["python", "benchmarks/studies/ray/overhead.py", *sys.argv[1:]])),
        )
    finally:
        ray.shutdown()
    measurements = pd.read_csv(args.out / "speed.csv")
    text = (
        f"Ray / fork, 2 actors, {args.rounds} rounds of {args.steps_per_round} steps: "
        f"{ratio_text(measurements, RAY, FORK)} (rate over all rounds, 95% BCa interval over rounds)\n"
        f"fork / SB3 PPO: {ratio_text(measurements, FORK, 'ppo')}\n"
        f"Ray / SB3 PPO: {ratio_text(measurements, RAY, 'ppo')}\n"
    )
    (args.out / "ray_over_fork.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
