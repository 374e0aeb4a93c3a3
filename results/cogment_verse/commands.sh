#!/bin/sh
# Issue 11: Cogment-verse's asynchronous PPO setting on Hopper (hyperparams/cogment_verse_appo.yml, docs/async.md),
# 3M steps, 3 seeds, with the lag correction (base) and without it, as the original (uncorrected).
# Run: base and uncorrected seeds 0-2, all at code e74e681 (uncorrected seed 2 from a worktree at e74e681 on 2026-12-03). One run at a time: each takes both cores (actor and learner). Resumable: rerun to finish.
# Report: python benchmarks/report.py results/cogment_verse
set -u
python -m sb3_apo.benchmark run --results results/cogment_verse -n 3000000 --eval-freq 50000 --eval-episodes 5 \
    --n-eval-envs 1 -j 1 --seeds 0 1 2 --envs Hopper-v5 --algos apo \
    --variant base --variant "uncorrected:correct_policy_lag=False" -- -conf hyperparams/cogment_verse_appo.yml
