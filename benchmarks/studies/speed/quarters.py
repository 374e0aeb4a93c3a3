"""
The rate over rounds divided by SB3 PPO's (benchmarks/speed.py's rate_ratio) in each quarter of a
run's rounds, so that a reader sees whether the ratio moves with the training's phase: with rounds
of 2,048 steps, the 500 rounds of a run are one million steps of training of every contender. Then
what each model's ``learn()`` call cost outside ``collect_rollouts()`` and ``train()`` (its set-up,
paid once per round), mean process CPU ms per round, against the whole round's.

Run from the repository root:
python benchmarks/studies/speed/quarters.py fine_7a68dd0_seed0 fine_7a68dd0_seed1 > results/speed/quarters_fine_7a68dd0.txt
(and pilot_rounds_2048_1ca7752 > results/speed/pilot_rounds_2048_1ca7752/quarters.txt)
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, for benchmarks/
from benchmarks.speed import REFERENCE, rate_ratio  # noqa: E402

CONTENDERS = ("apo", "ppo_penalty", "spo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="folders under results/speed/")
    rows, set_up = [], []
    for run in parser.parse_args().runs:
        measurements = pd.read_csv(Path("results/speed") / run / "speed.csv")  # from the repository root
        steps, wall_s = (measurements.pivot(index="round", columns="contender", values=v) for v in ("steps", "wall_s"))
        for quarter, rounds in enumerate(np.array_split(steps.index.to_numpy(), 4), start=1):
            row = {"run": run, "quarter": quarter, "rounds": f"{rounds[0] + 1}-{rounds[-1] + 1}"}
            for name in CONTENDERS:
                pair = [frame.loc[rounds, column] for column in (name, REFERENCE) for frame in (steps, wall_s)]
                row[f"{name} / {REFERENCE}"] = float(rate_ratio(*(values.to_numpy(dtype=float) for values in pair)))
            rows.append(row)
        models = measurements.dropna(subset=["rollout_cpu_s"])
        outside = models["cpu_s"] - models["rollout_cpu_s"] - models["update_cpu_s"]
        per_model = models.assign(outside_ms=1e3 * outside, round_ms=1e3 * models["cpu_s"]).groupby("contender")
        for name, group in per_model:
            costs = {"set-up ms": group.outside_ms.mean(), "round ms": group.round_ms.mean()}
            set_up.append({"run": run, "contender": name, **costs})
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))
    print()
    print(pd.DataFrame(set_up).to_markdown(index=False, floatfmt=".1f"))


if __name__ == "__main__":
    main()
