"""
P(at 50 epochs > at 10 epochs) per environment, for PPO-clip and for APO with exact anchors and the
adaptive coefficient, from the committed report's ``runs.csv``, with the report's own statistics (exact
stratified bootstrap for up to 5 runs a side).

Run from the repository root::

    python benchmarks/studies/mujoco/epochs_effect.py > results/mujoco/report/epochs_effect.txt
"""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, for benchmarks/
from benchmarks.report import bootstrap_interval, probability_of_improvement  # noqa: E402

#: (name, algorithm, the variant at 50 epochs, the same at 10 epochs)
PAIRS = [("", "ppo", "epochs50", "base"), ("APO exact + auto, ", "apo", "epochs50-exact-auto", "exact-auto")]

runs = pd.read_csv("results/mujoco/report/runs.csv")
for name, algo, variant_50, variant_10 in PAIRS:
    for env, group in runs[runs.algo == algo].groupby("env"):
        fifty = group[group.variant == variant_50].score.to_numpy()
        ten = group[group.variant == variant_10].score.to_numpy()
        if len(fifty) and len(ten):
            point, low, high, method = bootstrap_interval([fifty, ten], probability_of_improvement, reps=50_000)
            seeds = f"{len(fifty)} vs {len(ten)} seeds, {method}"
            print(f"{name}{env}: P(50 epochs > 10 epochs) = {point:.2f} [{low:.2f}, {high:.2f}] ({seeds})")
