#!/bin/sh
# The MuJoCo benchmark, exactly as run for the committed results (resumable: rerun to finish).
# Run from the repository root. Every run: 1M steps, deterministic evaluation every 50k steps
# (5 episodes), hyperparameters from hyperparams/<algo>.yml (the APO paper's settings).
# Report: python benchmarks/report.py results/mujoco
set -u
COMMON="--results results/mujoco -n 1000000 --eval-freq 50000 --eval-episodes 5 --n-eval-envs 1 -j 2"

# ---- Round 1 (commits f0d7dd7 / 0bd549b, see README.md) -----------------------------------------
# 1. Hopper-v5, the four algorithms
python -m sb3_apo.benchmark run $COMMON --seeds 0 1 2 --algos apo ppo ppo_penalty spo --envs Hopper-v5
# 2. Robustness: 50 update epochs instead of 10 (the 10-epoch runs are those of step 1)
python -m sb3_apo.benchmark run $COMMON --seeds 0 1 --algos apo ppo --envs Hopper-v5 --variant epochs50:n_epochs=50
# 3. Walker2d-v5 and HalfCheetah-v5
python -m sb3_apo.benchmark run $COMMON --seeds 0 1 2 --algos apo ppo ppo_penalty spo --envs Walker2d-v5 HalfCheetah-v5

# ---- Round 2, issue 8: which APO at 10 and 50 epochs (2-seed pilot on Hopper-v5 at 50 epochs) -----
# 4. the variants the round-1 code already had (run from commit 9e4b2da)
python -m sb3_apo.benchmark run $COMMON --seeds 0 1 --envs Hopper-v5 --algos apo \
    --variant "epochs50-parity:n_epochs=50,anchor_mode='parity'"
# 5. the adaptive coefficient, with sampled anchors (run from commit 3f44b49) and with exact anchors
#    (run from commit 4cfe526; see README.md for the two withdrawn runs)
python -m sb3_apo.benchmark run $COMMON --seeds 0 1 --envs Hopper-v5 --algos apo \
    --variant "epochs50-auto:n_epochs=50,anchor_coef='auto'" \
    --variant "epochs50-exact-auto:n_epochs=50,anchor_coef='auto',anchor_estimator='exact'"
# 6. the plain trust region that also adapts: PPO-clip plus adaptive KL (3f44b49); then exact anchors
#    alone, with the fixed coefficient (run last, from commit 1186239, whose APO code is 4cfe526's)
python -m sb3_apo.benchmark run $COMMON --seeds 0 1 --envs Hopper-v5 --algos ppo_penalty \
    --variant "epochs50-clip:n_epochs=50,clip_range=0.2"
python -m sb3_apo.benchmark run $COMMON --seeds 0 1 --envs Hopper-v5 --algos apo \
    --variant "epochs50-exact:n_epochs=50,anchor_estimator='exact'"

# ---- Issue 8: the 5-seed comparison that sets the default (pilot's best APO: exact anchors + auto) -------
# Run as one queue, the decisive runs first (Hopper at 50 epochs, then both envs at 10, then HalfCheetah at 50),
# from commit 1186239 (the APO code of 4cfe526, checked bit for bit): python benchmarks/studies/mujoco/epochs50_grid.py
# The same runs, as runner calls:
# python -m sb3_apo.benchmark run $COMMON --seeds 0 1 2 3 4 --envs Hopper-v5 HalfCheetah-v5 --algos ppo \
#     --variant base --variant epochs50:n_epochs=50
# python -m sb3_apo.benchmark run $COMMON --seeds 0 1 2 3 4 --envs Hopper-v5 HalfCheetah-v5 --algos apo \
#     --variant "exact-auto:anchor_coef='auto',anchor_estimator='exact'" \
#     --variant "epochs50-exact-auto:n_epochs=50,anchor_coef='auto',anchor_estimator='exact'"
# python -m sb3_apo.benchmark run $COMMON --seeds 0 1 2 3 4 --envs Hopper-v5 --algos ppo_penalty \
#     --variant "epochs50-clip:n_epochs=50,clip_range=0.2"
# and the one-seed Walker2d-v5 pilot at 50 epochs (also in epochs50_grid.py):
# python -m sb3_apo.benchmark run $COMMON --seeds 0 --envs Walker2d-v5 --algos ppo --variant epochs50:n_epochs=50
# python -m sb3_apo.benchmark run $COMMON --seeds 0 --envs Walker2d-v5 --algos apo \
#     --variant "epochs50-exact-auto:n_epochs=50,anchor_coef='auto',anchor_estimator='exact'"

# ---- Issue 11: asynchronous APO's returns at equal steps, against the synchronous `base` runs (round 1),
# run from commit e74e681. One run at a time: an asynchronous run takes both cores (actor and learner).
python -m sb3_apo.benchmark run ${COMMON%-j 2} -j 1 --seeds 0 1 2 --envs Hopper-v5 HalfCheetah-v5 --algos apo \
    --variant "async:async_rollouts=True"
# and with V-trace value targets (same commit), to measure whether they help
python -m sb3_apo.benchmark run ${COMMON%-j 2} -j 1 --seeds 0 1 2 --envs Hopper-v5 HalfCheetah-v5 --algos apo \
    --variant "async-vtrace:async_rollouts=True,value_targets='vtrace'"

# ---- Issue 11, second session: synchronous APO on Hopper, seeds 5-9, from commit 0f71427 (two at a time), for a
# ten-seed comparison with results/async_value_clip/ (report: results/mujoco/report_base10/). The older reports
# in this folder (report/, report_async/) were made before these runs and cover seeds 0-4.
python -m sb3_apo.benchmark run $COMMON --seeds 5 6 7 8 9 --envs Hopper-v5 --algos apo --variant base
# python benchmarks/report.py results/mujoco --out results/mujoco/report_base10 --labels apo --no-figures
