"""
Where the CPU goes in asynchronous APO on Hopper-v5 (the speed tool's settings), with one
and with two actors: per rollout of 2,048 steps, the learner's process CPU time, the
actors' (their processes are the learner's children, counted by ``os.times()`` once
``learn()`` has joined them), the wall time of a cycle and the ``async/*`` idle times.
Then the cost of sharing 2 cores between 3 processes: the CPU time per step of one
4-env actor loop (SB3's ``collect_rollouts``, actions only) alone, 2 and 3 at once.

    python benchmarks/studies/speed/cpu_accounting.py > results/speed/actors/cpu_accounting.txt
"""

import functools
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/, for speed.py
from speed import build_model  # noqa: E402

from sb3_apo import APO  # noqa: E402
from sb3_apo.async_rollouts.actor import _actions_only, _StepRecorder  # noqa: E402
from sb3_apo.common.buffers import anchored_buffer_class  # noqa: E402

ROLLOUTS = 40
KEYS = ("async/learner_idle_s", "async/actor_idle_s", "async/actor_collect_s")


class RecordsTheCycle(BaseCallback):
    def __init__(self):
        super().__init__()
        self.ends: list[float] = []
        self.logged: list[list[float]] = []

    def _on_step(self):
        return True

    def _on_rollout_end(self):
        self.ends.append(time.perf_counter())
        self.logged.append([self.model.logger.name_to_value[key] for key in KEYS])


def accounting(n_actors: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        model, _, _ = build_model(f"apo:async_rollouts=True,n_actors={n_actors}", "Hopper-v5", None, folder, 0, "cpu")
        model.learn(4 * 2048)  # warm-up
        before, learner_before = os.times(), time.process_time()
        cycle = RecordsTheCycle()
        started = time.perf_counter()
        model.learn(ROLLOUTS * 2048, callback=cycle, reset_num_timesteps=False)
        wall = time.perf_counter() - started
        after, learner_cpu = os.times(), time.process_time() - learner_before
        actors_cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
        logged = np.median(np.array(cycle.logged[2:]), axis=0) * 1000
        print(
            f"n_actors={n_actors}: {ROLLOUTS * 2048 / wall:,.0f} steps/s; per rollout of 2,048 steps: "
            f"cycle {np.median(np.diff(cycle.ends[1:])) * 1000:.0f} ms (median), "
            f"learner CPU {learner_cpu / ROLLOUTS * 1000:.0f} ms, actors' CPU {actors_cpu / ROLLOUTS * 1000:.0f} ms "
            f"(both {(learner_cpu + actors_cpu) / ROLLOUTS * 1000:.0f} ms, for 2 cores x the cycle); medians: "
            f"learner idle {logged[0]:.0f} ms, actor idle {logged[1]:.1f} ms, actor collecting {logged[2]:.0f} ms",
            flush=True,
        )


def actor_loop_cpu_per_step(_: int) -> float:
    """CPU seconds per step of SB3's collect_rollouts over 4 Hopper envs, with the actor's actions-only policy."""
    th.set_num_threads(1)
    env = VecNormalize(make_vec_env("Hopper-v5", n_envs=4, seed=0))
    model = APO("MlpPolicy", env, n_steps=256, batch_size=256, seed=0)
    model._setup_learn(10**6)
    model.policy.forward = functools.partial(_actions_only, model.policy)
    buffer = anchored_buffer_class(model.observation_space)(
        256, model.observation_space, model.action_space, device="cpu", n_envs=4
    )
    reader, writer = mp.Pipe(duplex=False)

    def rollout() -> None:
        recorder = _StepRecorder(reader)
        recorder.init_callback(model)
        OnPolicyAlgorithm.collect_rollouts(model, env, recorder, buffer, 256)

    rollout()
    started = time.process_time()
    for _ in range(20):
        rollout()
    return (time.process_time() - started) / (20 * 256)


if __name__ == "__main__":
    th.set_num_threads(1)
    for n_actors in (1, 2, 1, 2):
        accounting(n_actors)
    for n_processes in (1, 2, 3):
        with mp.get_context("fork").Pool(n_processes) as pool:
            per_step = pool.map(actor_loop_cpu_per_step, range(n_processes))
        print(
            f"{n_processes} actor loop(s) at once on 2 cores: CPU per step of 4 envs "
            f"{', '.join(f'{value * 1e6:.0f}' for value in per_step)} us",
            flush=True,
        )
