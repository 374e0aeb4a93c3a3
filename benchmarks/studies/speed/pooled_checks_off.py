"""
The speed ratios of every run since the loop stopped paying torch's distribution argument
checks (code 293610d and later), pooled: each round's ratio of steps/s to SB3's PPO in the
same round (and async APO's to sync APO's), over all rounds of all runs, with the mean, the
sample std, the median, the share of rounds at or above the target, and a 95% bootstrap
interval of the mean (scipy.stats.bootstrap, BCa, 10,000 resamples, seed 0); and the step rate
over all those rounds divided by the reference's, with its paired bootstrap interval
(benchmarks/speed.py's rate_ratio and rate_ratio_interval; added after the runs of code 270426e,
whose ratios.txt and pooled_*.txt files predate these two columns).

Run from the repository root: python benchmarks/studies/speed/pooled_checks_off.py > results/speed/pooled_checks_off.txt
Other runs, e.g. one at later code: python benchmarks/studies/speed/pooled_checks_off.py slim_f199cbb
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, for benchmarks/
from benchmarks.speed import rate_ratio, rate_ratio_interval  # noqa: E402

RUNS = ["checks_off", "checks_off_equal_states", "checks_off_actors", "checks_off_dfb26b8", "checks_off_eaa0378"]
ASYNC = "apo:async_rollouts=True,n_actors=2"
#: (numerator, denominator, target)
RATIOS = {
    "APO / SB3 PPO": ("apo", "ppo", 0.97),
    "PPOPenalty / SB3 PPO": ("ppo_penalty", "ppo", 0.99),
    "SPO / SB3 PPO": ("spo", "ppo", 0.99),
    "async APO, 2 actors / SB3 PPO": (ASYNC, "ppo", 1.4),
    "async APO, 2 actors / sync APO": (ASYNC, "apo", 1.35),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", default=RUNS, help="folders under results/speed/ (default: the five runs)")
    runs = parser.parse_args().runs
    folder = Path("results/speed")  # relative to the repository root, where it runs
    rows, rounds = [], []
    for run in runs:
        measurements = pd.read_csv(folder / run / "speed.csv")
        rounds.append(measurements.pivot(index="round", columns="contender", values=["steps", "wall_s"]))
        rates = measurements.pivot(index="round", columns="contender", values="steps_per_s")
        for name, (numerator, denominator, _) in RATIOS.items():
            if numerator in rates and denominator in rates:
                for value in rates[numerator] / rates[denominator]:
                    rows.append({"ratio": name, "run": run, "value": value})
    ratios = pd.DataFrame(rows)
    every_round = pd.concat(rounds, ignore_index=True)  # the runs' rounds one after the other
    print(f"runs: {', '.join(runs)} (results/speed/<run>/speed.csv)")
    table = []
    for name, (_, _, target) in RATIOS.items():
        values = ratios.loc[ratios.ratio == name, "value"].to_numpy()
        if len(values) < 2:  # a ratio of contenders these runs did not measure
            continue
        interval = stats.bootstrap((values,), np.mean, n_resamples=10_000, method="BCa", random_state=0).confidence_interval
        numerator, denominator, _ = RATIOS[name]
        pairs = every_round[[("steps", numerator), ("wall_s", numerator), ("steps", denominator), ("wall_s", denominator)]]
        pairs = [column.to_numpy(dtype=float) for _, column in pairs.dropna().items()]
        rate_low, rate_high = rate_ratio_interval(*pairs)
        table.append(
            {
                "ratio": name,
                "runs": ratios.loc[ratios.ratio == name, "run"].nunique(),
                "rounds": len(values),
                "mean": values.mean(),
                "std": values.std(ddof=1),
                "median": np.median(values),
                "95% interval of the mean": f"[{interval.low:.3f}, {interval.high:.3f}]",
                "target": target,
                "rounds at or above it": f"{(values >= target).sum()} of {len(values)}",
                "rate over all rounds / reference's": rate_ratio(*pairs),
                "its 95% interval": f"[{rate_low:.3f}, {rate_high:.3f}]",
            }
        )
    print(pd.DataFrame(table).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
