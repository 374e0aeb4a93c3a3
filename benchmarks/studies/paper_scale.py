"""
APO at the paper's scale: 10M-step runs on HalfCheetah-v5 (50 epochs) and Walker2d-v5 (10 epochs).

One queue over both tiers, seed by seed, two runs at a time, each with one torch thread. The runner is
resumable: run the same command again and it finishes what is missing (a run that was cut short restarts
from its beginning). Run from the repository root, with the environment's ``python`` first on the PATH::

    python benchmarks/studies/paper_scale.py            # both tiers
    python benchmarks/studies/paper_scale.py --tiers 1  # HalfCheetah-v5 at 50 epochs only
    python benchmarks/report.py results/paper_scale     # the report

Commands are recorded with ``python``, not this machine's interpreter path, so that they run elsewhere.
"""

import argparse
import sys
from pathlib import Path

from sb3_apo.benchmark.grid import GridRunner, GridSettings, RunSpec, Variant

RESULTS = Path("results/paper_scale")
SEEDS = range(5)
EPOCHS50 = Variant.parse("epochs50:n_epochs=50")
EPOCHS50_EXACT_AUTO = Variant.parse("epochs50-exact-auto:n_epochs=50,anchor_estimator='exact',anchor_coef='auto'")
BASE = Variant.parse("base")
# tier -> (env, algo, variant) rows; every row runs with every seed
TIERS = {
    1: [
        ("HalfCheetah-v5", "ppo", EPOCHS50),
        ("HalfCheetah-v5", "apo", EPOCHS50),
        ("HalfCheetah-v5", "apo", EPOCHS50_EXACT_AUTO),
    ],
    2: [("Walker2d-v5", "ppo", BASE), ("Walker2d-v5", "apo", BASE)],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiers", type=int, nargs="+", default=sorted(TIERS), choices=sorted(TIERS))
    parser.add_argument("-j", "--jobs", type=int, default=2, help="runs at a time (default: 2)")
    args = parser.parse_args()
    runs = [RunSpec(env, algo, variant, seed) for tier in args.tiers for seed in SEEDS for env, algo, variant in TIERS[tier]]
    settings = GridSettings(
        results=RESULTS, n_timesteps=10_000_000, eval_freq=100_000, eval_episodes=5, n_eval_envs=1, python="python"
    )
    return GridRunner(runs, settings, jobs=args.jobs).run(argv=["python", "benchmarks/studies/paper_scale.py", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
