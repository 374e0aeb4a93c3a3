"""
Scaling of collection with the number of actors, on an env whose step waits 5 ms outside
Python's CPU (``time.sleep`` around Hopper-v5: a simulator running elsewhere), 16 envs, 1, 2, 4,
8 and 16 actors, forked and on Ray (a local instance, as the package starts one). APO with the
project's Hopper settings but 16 envs x 128 steps (a rollout of 2,048 steps), ``max_policy_lag=1``.
Each run is a process of its own: forking a process in which Ray is initialised can hang.

Per run, after a first rollout that is not counted: the **collection** rate, a rollout's steps
over the seconds its slowest actor spent collecting (``async/actor_collect_s``), averaged over
rollouts as steps over summed seconds; and the **learner's** rate, steps over wall seconds
between the ends of the first and the last rollout (collection and updates overlapped). Writes
``scaling.csv`` (one row per rollout), ``scaling.md`` and ``command.txt`` into ``--out``.

Run from the repository root, on an otherwise idle machine:
python benchmarks/studies/ray/scaling.py --out results/ray/scaling
and CPU-bound (no wait), for the throughput model: ``--step-wait-ms 0 --actors 1 2``.
"""

import argparse
import functools
import shlex
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pandas as pd
import ray
import ray.cloudpickle
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from sb3_apo import APO, VecEnvRecipe
from sb3_apo.async_rollouts.ray_actors import connect
from sb3_apo.zoo.masking import recorded_command

# Ray workers import nothing from benchmarks/: this module's env wrapper travels by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

STEP_WAIT_S = 0.005
N_ENVS = 16
N_STEPS = 128
ACTORS = (1, 2, 4, 8, 16)


class WaitingStep(gym.Wrapper):
    """Each step waits ``wait_s`` seconds without CPU, as for a simulator elsewhere."""

    def __init__(self, env: gym.Env, wait_s: float = STEP_WAIT_S):
        super().__init__(env)
        self.wait_s = wait_s

    def step(self, action):
        if self.wait_s:
            time.sleep(self.wait_s)
        return super().step(action)


class RolloutTimes(BaseCallback):
    """Records, at the end of each rollout, the time and what the learner logged of it."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def _on_rollout_end(self):
        logged = self.logger.name_to_value
        self.rows.append(
            {
                "time_s": time.perf_counter(),
                "timesteps": self.num_timesteps,
                "actor_collect_s": logged["async/actor_collect_s"],
                "learner_idle_s": logged["async/learner_idle_s"],
                "actor_idle_s": logged["async/actor_idle_s"],
            }
        )

    def _on_step(self):
        return True


def measure(backend: str, n_actors: int, rollouts: int, seed: int, wait_s: float) -> pd.DataFrame:
    recipe = VecEnvRecipe(
        "Hopper-v5",
        n_envs=N_ENVS,
        wrapper_class=WaitingStep,
        wrapper_kwargs={"wait_s": wait_s},
        vec_env_wrapper=functools.partial(VecNormalize, gamma=0.99),
    )
    model = APO(
        "MlpPolicy",
        recipe,
        n_steps=N_STEPS,
        batch_size=512,
        learning_rate=3e-4,
        clip_range_vf=0.2,
        policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), log_std_init=0.0),
        async_rollouts=True,
        actor_backend=backend,
        n_actors=n_actors,
        seed=seed,
    )
    times = RolloutTimes()
    model.learn((rollouts + 1) * N_STEPS * N_ENVS, callback=times)
    frame = pd.DataFrame(times.rows)
    frame.insert(0, "rollout", range(len(frame)))
    frame.insert(0, "n_actors", n_actors)
    frame.insert(0, "backend", backend)
    return frame


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    summary = []
    for (backend, n_actors), frame in rows.groupby(["backend", "n_actors"], sort=False):
        counted = frame[frame.rollout >= 1]
        steps = N_STEPS * N_ENVS * len(counted)
        summary.append(
            {
                "backend": backend,
                "n_actors": n_actors,
                "collection_steps_per_s": steps / counted.actor_collect_s.sum(),
                "learner_steps_per_s": steps / (counted.time_s.iloc[-1] - frame.time_s.iloc[0]),
                "learner_idle_s_per_rollout": counted.learner_idle_s.mean(),
            }
        )
    table = pd.DataFrame(summary)
    one_actor = table[table.n_actors == 1].set_index("backend").collection_steps_per_s
    table["collection_over_n_x_one_actor"] = table.collection_steps_per_s / (table.n_actors * table.backend.map(one_actor))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rollouts", type=int, default=5, help="counted rollouts per run (after a first one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-wait-ms", type=float, default=1000 * STEP_WAIT_S, help="wait per env step (default: 5)")
    parser.add_argument("--actors", type=int, nargs="+", default=list(ACTORS), help="numbers of actors (default: 1 2 4 8 16)")
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "N_ACTORS"), help=argparse.SUPPRESS)  # a run, in its process
    args = parser.parse_args()
    if args.one:
        backend, n_actors = args.one[0], int(args.one[1])
        if backend == "ray":
            connect()  # a local instance, as the package starts one
        try:
            measure(backend, n_actors, args.rollouts, args.seed, args.step_wait_ms / 1000).to_csv(
                args.out / "run.csv", index=False
            )
        finally:
            ray.shutdown()
        return
    args.out.mkdir(parents=True, exist_ok=True)
    command = recorded_command(["python", "benchmarks/studies/ray/scaling.py", *sys.argv[1:]])
    (args.out / "command.txt").write_text(shlex.join(command) + "\n")
    frames = []
    for n_actors in args.actors:
        for backend in ("fork", "ray"):
            one = ["--one", backend, str(n_actors), "--rollouts", str(args.rollouts), "--seed", str(args.seed)]
            one += ["--step-wait-ms", str(args.step_wait_ms), "--out", str(args.out)]
            subprocess.run([sys.executable, __file__, *one], check=True)
            frames.append(pd.read_csv(args.out / "run.csv"))
            (args.out / "run.csv").unlink()
            counted = frames[-1][frames[-1].rollout >= 1]
            rate = N_STEPS * N_ENVS * len(counted) / counted.actor_collect_s.sum()
            print(f"{backend}, {n_actors} actor(s): collection {rate:.0f} steps/s", flush=True)
            pd.concat(frames).to_csv(args.out / "scaling.csv", index=False)
    table = summarise(pd.concat(frames))
    (args.out / "scaling.md").write_text(table.to_markdown(index=False, floatfmt=".3g") + "\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
