"""
How far the learner's values are from the actor's, on each lagged rollout of asynchronous APO
(Hopper-v5, the paper's settings, 200k steps, seed 0): per 10 rollouts, the fraction of samples
outside the value clip window (``|V_prox - V_b| > clip_range_vf = 0.2``) and the median distance.
Before commit 9b5393e (the experiment) the actor's values ``V_b`` were the reference of value
clipping, so a sample outside the window could not move its value towards its target.

Run at commit b3bb7de:
    python benchmarks/studies/async_value_clip/value_clip_window.py > results/async_value_clip/value_clip_window.txt
"""

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

import sb3_apo.common.async_rollouts as async_rollouts
from sb3_apo import APO

th.set_num_threads(1)
distances = []
receive_rollout = async_rollouts.AsyncLearner._receive_rollout


def measuring_receive_rollout(self, env, callback, buffer):
    complete = receive_rollout(self, env, callback, buffer)
    n_samples = buffer.buffer_size * buffer.n_envs
    with th.no_grad():
        learner = self.policy.predict_values(th.as_tensor(buffer.observations.reshape(n_samples, -1)))
    distance = np.abs(learner.numpy().flatten() - buffer.values.reshape(n_samples))
    distances.append(((distance > 0.2).mean(), np.median(distance)))
    return complete


async_rollouts.AsyncLearner._receive_rollout = measuring_receive_rollout
env = VecNormalize(make_vec_env("Hopper-v5", n_envs=8, seed=0), clip_obs=10.0, clip_reward=10.0)
policy_kwargs = dict(
    net_arch=dict(pi=[64, 64], vf=[64, 64]),
    activation_fn=nn.Tanh,
    log_std_init=0.0,
    ortho_init=True,
    optimizer_kwargs=dict(eps=1e-5),
)
model = APO(
    "MlpPolicy",
    env,
    n_steps=256,
    batch_size=512,
    n_epochs=10,
    gae_lambda=0.95,
    gamma=0.99,
    clip_range_vf=0.2,
    learning_rate=3e-4,
    max_grad_norm=0.5,
    async_rollouts=True,
    seed=0,
    policy_kwargs=policy_kwargs,
)
model.learn(200_000)
table = np.array(distances)
for start in range(0, len(table), 10):
    outside, median = table[start : start + 10].mean(axis=0)
    print(start, f"fraction |V_prox - V_b| > 0.2: {outside:.3f}  median |diff| {median:.3f}")
