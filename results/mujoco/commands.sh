#!/bin/sh
# The MuJoCo benchmark, exactly as run for the committed results (resumable: rerun to finish).
# Run from the repository root. Every run: 1M steps, deterministic evaluation every 50k steps
# (5 episodes), hyperparameters from hyperparams/<algo>.yml (the APO paper's settings).
set -u
COMMON="--results results/mujoco --seeds 0 1 2 -n 1000000 --eval-freq 50000 --eval-episodes 5 --n-eval-envs 1 -j 2"
# 1. Hopper-v5, the four algorithms
python -m sb3_apo.benchmark run $COMMON --algos apo ppo ppo_penalty spo --envs Hopper-v5
# 2. Robustness: 50 update epochs instead of 10 (the 10-epoch runs are those of step 1)
python -m sb3_apo.benchmark run --results results/mujoco --seeds 0 1 -n 1000000 --eval-freq 50000 \
    --eval-episodes 5 --n-eval-envs 1 -j 2 --algos apo ppo --envs Hopper-v5 --variant epochs50:n_epochs=50
# 3. Walker2d-v5 and HalfCheetah-v5
python -m sb3_apo.benchmark run $COMMON --algos apo ppo ppo_penalty spo --envs Walker2d-v5 HalfCheetah-v5
