"""
The experiment's code (commit 9b5393e) and main's (dc53d71) train to the same parameters: async APO, Hopper-v5,
8 envs x 256 steps, 10 rollouts, seed 0. Run from each tree:
    PYTHONPATH=<tree> python benchmarks/studies/async_value_clip/same_computation.py
"""

import hashlib
import sys

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_apo import APO

th.set_num_threads(1)
m = APO(
    "MlpPolicy",
    VecNormalize(make_vec_env("Hopper-v5", n_envs=8, seed=0)),
    n_steps=256,
    batch_size=512,
    clip_range_vf=0.2,
    async_rollouts=True,
    seed=0,
)
m.learn(10 * 2048)
h = hashlib.sha256(b"".join(t.numpy().tobytes() for t in m.policy.state_dict().values())).hexdigest()
print(sys.modules["sb3_apo"].__file__, h)
