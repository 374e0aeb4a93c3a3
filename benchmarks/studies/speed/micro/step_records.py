"""
What the step records of one actor's rollout cost to pickle and unpickle (process CPU time):
as a list of per-step records (how they crossed the pipe before commit 1e85ef1) and as
``StepRecords`` (stacked arrays, the infos' numpy scalars as arrays). One rollout of 256 steps
of 4 Hopper-v5 envs (one of two actors' shares at the paper's 8 x 256), under VecNormalize.

    python benchmarks/studies/speed/micro/step_records.py > results/speed/micro/step_records.txt
"""

import functools
import multiprocessing as mp
import pickle
import time

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from sb3_apo import APO
from sb3_apo.async_rollouts.actor import _actions_only, _StepRecorder
from sb3_apo.async_rollouts.rollout import StepRecords
from sb3_apo.common.buffers import anchored_buffer_class

REPEATS = 20


def cpu_ms(function, *args):
    started = time.process_time()
    for _ in range(REPEATS):
        result = function(*args)
    return (time.process_time() - started) / REPEATS * 1000, result


if __name__ == "__main__":
    th.set_num_threads(1)
    env = VecNormalize(make_vec_env("Hopper-v5", n_envs=4, seed=0))
    model = APO("MlpPolicy", env, n_steps=256, batch_size=256, seed=0)
    model._setup_learn(10**6)
    model.policy.forward = functools.partial(_actions_only, model.policy)
    buffer = anchored_buffer_class(model.observation_space)(256, model.observation_space, model.action_space, n_envs=4)
    stop, keep_open = mp.Pipe(duplex=False)  # the recorder polls a stop connection; this one never fires
    for _ in range(2):  # the second rollout is measured
        recorder = _StepRecorder(stop)
        recorder.init_callback(model)
        OnPolicyAlgorithm.collect_rollouts(model, env, recorder, buffer, 256)
    steps = recorder.steps
    assert len(steps) == 256 and keep_open is not None
    stack_ms, stacked = cpu_ms(StepRecords.stack, steps)
    print(f"StepRecords.stack: {stack_ms:.2f} ms")
    for name, records in (("list of 256 StepRecord (before)", steps), ("StepRecords (after)", stacked)):
        dump_ms, data = cpu_ms(pickle.dumps, records)
        load_ms, _ = cpu_ms(pickle.loads, data)
        print(f"{name}: pickle {dump_ms:.2f} ms, unpickle {load_ms:.2f} ms, {len(data):,} bytes")
