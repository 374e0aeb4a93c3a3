"""
Kill the rollout actor at a random moment of its rollout, again and again, and see whether the
learner always stops (the actor faults of docs/async.md; the cause of the CI stall of 2026-12-02).

Each iteration trains APO on CartPole-v1 with asynchronous rollouts and SIGKILLs the actor 0-10 ms
after the learner's second rollout, while the actor collects the next one; learn() must raise
RolloutActorError and return. faulthandler ends the process, printing every stack, if one
iteration takes over 60 s. It prints the number of each iteration that finished.

Run from the repository root: python benchmarks/studies/async_faults/kill_loop.py N > results/async_faults/<name>.txt 2>&1
"""

import contextlib
import faulthandler
import os
import random
import signal
import sys
import time

import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_apo import APO
from sb3_apo.async_rollouts import RolloutActorError

th.set_num_threads(1)


class KillsTheActor(BaseCallback):
    def __init__(self):
        super().__init__()
        self.rollouts = 0

    def _on_rollout_end(self):
        self.rollouts += 1
        if self.rollouts == 2:
            time.sleep(random.random() * 0.01)
            os.kill(self.model._rollout_actor.pid, signal.SIGKILL)

    def _on_step(self):
        return True


faulthandler.dump_traceback_later(60, exit=True)
for iteration in range(int(sys.argv[1])):
    model = APO("MlpPolicy", "CartPole-v1", async_rollouts=True, n_steps=32, batch_size=32, n_epochs=1)
    with contextlib.suppress(RolloutActorError):  # the expected outcome; a hang is the failure
        model.learn(10_000, callback=KillsTheActor())
    faulthandler.cancel_dump_traceback_later()
    faulthandler.dump_traceback_later(60, exit=True)
    print(iteration, flush=True)
print("done")
