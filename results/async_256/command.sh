#!/bin/sh
# One asynchronous APO run on Hopper-v5 with a 256x256 network (rl-zoo3 settings of sb3_apo/zoo/hyperparams/apo.yml:
# 8 envs, n_steps 256, VecNormalize), run from the repository root; output.txt is its stdout and stderr.
python -m sb3_apo.train --algo apo --env Hopper-v5 --seed 0 --eval-freq -1 --device cpu -f results/async_256/logs \
  -params async_rollouts:True "policy_kwargs:dict(net_arch=[256, 256])" -n 100000 > results/async_256/output.txt 2>&1
