"""
What torch's distribution argument validation costs SB3's PPO on Hopper-v5 with the paper's
settings (8 envs x 256 steps, VecNormalize, minibatches of 512, 10 epochs): two identical models
of SB3's PPO learn in alternation, one with
``Distribution.set_default_validate_args(True)`` (torch's default), one with ``False`` (what
sb3_apo's loop sets during its rollouts and updates). Thread CPU time of ``collect_rollouts()``
and ``train()`` per 1,000 steps, median over rounds of 8,192 steps, and the ratio of the two
in each round (mean ± sample std over rounds). The learning rate is 1e-12, below float32's
resolution of the weights, so that both policies stay at their initial weights and step the env
in the same state distribution: the difference is the checks' cost alone.

Then the same for one asynchronous actor's loop (``--actor``): an APO model's collection with
two actors' split (4 of the 8 envs) and the actor's actions-only forward pass, SB3's
``collect_rollouts`` alternately with the checks on and off, thread CPU time per step of
the 4 envs, median over 12 rounds of 4 rollouts each, and the ratio per round.

Run from the repository root: python benchmarks/studies/speed/micro/validation.py > results/speed/micro/validation.txt
and python benchmarks/studies/speed/micro/validation.py --actor > results/speed/micro/validation_actor.txt
"""

import functools
import multiprocessing as mp
import platform
import sys
import time
from collections import defaultdict

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize
from torch.distributions import Distribution

from sb3_apo import APO
from sb3_apo.async_rollouts.actor import _actions_only, _StepRecorder, _take_env_shard
from sb3_apo.common.buffers import anchored_buffer_class

th.set_num_threads(1)
ROUNDS, STEPS = 12, 8192
SETTINGS = dict(
    n_steps=256,
    batch_size=512,
    n_epochs=10,
    clip_range_vf=0.2,
    learning_rate=1e-12,
    policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), optimizer_kwargs=dict(eps=1e-5)),
)


def timed(model: PPO, phase: str, spent: dict[str, float]) -> None:
    method = getattr(model, phase)

    def call(*args, **kwargs):
        start = time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            spent[phase] += time.thread_time() - start

    setattr(model, phase, call)


def main() -> None:
    print(f"{platform.machine()}, torch {th.__version__}, 1 thread; thread CPU time; {ROUNDS} rounds of {STEPS} steps")
    models, spent = {}, {}
    for validate in (True, False):
        env = VecNormalize(make_vec_env("Hopper-v5", n_envs=8, seed=0), norm_obs=True, norm_reward=True)
        models[validate] = PPO("MlpPolicy", env, seed=0, **SETTINGS)
        spent[validate] = defaultdict(float)
        for phase in ("collect_rollouts", "train"):
            timed(models[validate], phase, spent[validate])
        Distribution.set_default_validate_args(validate)
        models[validate].learn(4096)  # warm-up
    per_round = {validate: defaultdict(list) for validate in models}
    for _ in range(ROUNDS):
        for validate, model in models.items():
            spent[validate].clear()
            Distribution.set_default_validate_args(validate)
            model.learn(STEPS, reset_num_timesteps=False)
            for phase, seconds in spent[validate].items():
                per_round[validate][phase].append(seconds / STEPS * 1e6)  # ms per 1,000 steps
    Distribution.set_default_validate_args(True)
    for phase in ("collect_rollouts", "train"):
        on, off = np.array(per_round[True][phase]), np.array(per_round[False][phase])
        ratio = on / off
        print(
            f"{phase}: validation on {np.median(on):.1f}, off {np.median(off):.1f} ms per 1,000 steps; "
            f"on / off {ratio.mean():.3f} ± {ratio.std(ddof=1):.3f}"
        )
    on = np.array(per_round[True]["collect_rollouts"]) + np.array(per_round[True]["train"])
    off = np.array(per_round[False]["collect_rollouts"]) + np.array(per_round[False]["train"])
    ratio = on / off
    print(
        f"both phases: on {np.median(on):.1f}, off {np.median(off):.1f} ms per 1,000 steps; "
        f"on / off {ratio.mean():.3f} ± {ratio.std(ddof=1):.3f}"
    )


def actor() -> None:
    print(f"{platform.machine()}, torch {th.__version__}, 1 thread; thread CPU time; {ROUNDS} rounds of 4 rollouts")
    env = VecNormalize(make_vec_env("Hopper-v5", n_envs=8, seed=0), norm_obs=True, norm_reward=True)
    model = APO("MlpPolicy", env, seed=0, **SETTINGS)
    model._setup_learn(10**9)
    _take_env_shard(model, [0, 1, 2, 3], 0)  # what the first of two actors keeps
    model.policy.forward = functools.partial(_actions_only, model.policy)  # the actor's forward pass
    buffer = anchored_buffer_class(model.observation_space)(
        model.n_steps, model.observation_space, model.action_space, device="cpu", n_envs=model.n_envs
    )
    stop, stop_writer = mp.Pipe()  # the actor stops once the writer end is closed: keep it open
    per_step = {True: [], False: []}
    for round_ in range(ROUNDS + 1):
        for validate in (True, False):
            Distribution.set_default_validate_args(validate)
            start = time.thread_time()
            for _ in range(4):
                recorder = _StepRecorder(stop)
                recorder.init_callback(model)
                OnPolicyAlgorithm.collect_rollouts(model, model.env, recorder, buffer, model.n_steps)
            if round_ > 0:  # the first round warms up
                per_step[validate].append((time.thread_time() - start) / (4 * model.n_steps) * 1e6)
    Distribution.set_default_validate_args(True)
    on, off = np.array(per_step[True]), np.array(per_step[False])
    ratio = on / off
    print(
        f"one actor's loop (4 envs): validation on {np.median(on):.0f}, off {np.median(off):.0f} us per step; "
        f"on / off {ratio.mean():.3f} ± {ratio.std(ddof=1):.3f}"
    )


if __name__ == "__main__":
    actor() if "--actor" in sys.argv else main()
