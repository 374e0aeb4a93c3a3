"""
APO at the paper's scale: 10M-step runs on HalfCheetah-v5 (50 epochs) and Walker2d-v5 (10 epochs), and
APO as a drop-in for rl-zoo3's tuned PPO.

Tiers 1 and 2 are one queue, seed by seed, two runs at a time, each with one torch thread; tier 1's fourth
variant (APO with ``anchor_mode='parity'``) starts once the first three are queued whole, and tier 2's third row
(the same loss at 10 epochs, on Walker2d-v5) once its first two are. Tier 3 runs rl-zoo3's
own tuned PPO entries (``benchmarks/studies/zoo_tuned/``, the launcher's ``-conf``) for 1M steps, unchanged
as ``ppo`` and as ``apo`` with APO's own parameters at their defaults, into its own results folder; since the
file differs by algorithm, it runs seed by seed, each algorithm's three envs in turn. The runner is
resumable: run the same command again and it finishes what is missing; a run cut short resumes from its
latest checkpoint (one every 1M steps in tiers 1 and 2, every 200k in tier 3).
Run from the repository root, with the environment's ``python`` first on the PATH::

    python benchmarks/studies/paper_scale.py            # tiers 1 and 2
    python benchmarks/studies/paper_scale.py --tiers 1  # HalfCheetah-v5 at 50 epochs only
    python benchmarks/studies/paper_scale.py --tiers 1 --variants epochs50-parity  # its fourth variant only
    python benchmarks/studies/paper_scale.py --tiers 2 --variants parity            # tier 2's parity row only
    python benchmarks/studies/paper_scale.py --tiers 3  # rl-zoo3's tuned PPO, as ppo and as apo
    python benchmarks/report.py results/paper_scale     # the report of tiers 1 and 2
    python benchmarks/report.py results/zoo_tuned       # the report of tier 3

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
EPOCHS50_PARITY = Variant.parse("epochs50-parity:n_epochs=50,anchor_mode='parity'")
BASE = Variant.parse("base")
PARITY = Variant.parse("parity:anchor_mode='parity'")
# tier -> groups of (env, algo, variant) rows. Every row runs with every seed; a group runs seed by seed
# (each of its rows with seed 0, then with seed 1, ...), and starts when the group before it is queued whole.
TIERS = {
    1: [
        [
            ("HalfCheetah-v5", "ppo", EPOCHS50),
            ("HalfCheetah-v5", "apo", EPOCHS50),
            ("HalfCheetah-v5", "apo", EPOCHS50_EXACT_AUTO),
        ],
        # the fourth variant, after the first three: the loss of the APO paper's public code, which held
        # where the defaults collapsed when their 50-epoch updates were replayed (results/paper_scale/collapse_replay)
        [("HalfCheetah-v5", "apo", EPOCHS50_PARITY)],
    ],
    2: [
        [("Walker2d-v5", "ppo", BASE), ("Walker2d-v5", "apo", BASE)],
        # after the first two rows: the public code's loss at 10 epochs, since APO's defaults collapsed on
        # Walker2d-v5 where PPO-clip held, and the parity loss held at 50 epochs on HalfCheetah-v5
        [("Walker2d-v5", "apo", PARITY)],
    ],
}
#: Tier 3: rl-zoo3's tuned PPO entries, one hyperparameter file per algorithm, in their own results folder.
ZOO_TUNED_TIER = 3
ZOO_TUNED_RESULTS = Path("results/zoo_tuned")
ZOO_TUNED_FILES = Path("benchmarks/studies/zoo_tuned")
ZOO_TUNED_ENVS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")
ZOO_TUNED_ALGOS = ("ppo", "apo")
#: A tier-3 run cut short resumes from its latest checkpoint: with batches of 32-64 samples, a run takes about an hour.
ZOO_TUNED_CHECKPOINT_FREQ = 200_000


def tier_settings() -> GridSettings:
    """The grid settings of tiers 1 and 2: 10M steps, an evaluation of 5 episodes every 100k, a checkpoint every 1M."""
    return GridSettings(
        results=RESULTS, n_timesteps=10_000_000, eval_freq=100_000, eval_episodes=5, n_eval_envs=1, python="python",
        checkpoint_freq=1_000_000,
    )  # fmt: skip


def tier_queue(tiers: list[int], variants: list[str] | None = None, seeds: range = SEEDS) -> list[RunSpec]:
    """
    The runs of tiers 1 and 2 in the order they start: tier by tier, group by group, seed by seed.

    :param tiers: the tiers (keys of ``TIERS``)
    :param variants: run only the rows of these variants (``None``: every row)
    :param seeds: the random seeds
    """
    return [
        RunSpec(env, algo, variant, seed)
        for tier in tiers
        for group in TIERS[tier]
        for seed in seeds
        for env, algo, variant in group
        if variants is None or variant.name in variants
    ]


def zoo_tuned_queue(seeds: range = SEEDS) -> list[tuple[GridSettings, list[RunSpec]]]:
    """
    Tier 3, seed by seed: per seed and algorithm, the grid settings (``-conf`` its file) and its three runs.

    :param seeds: the random seeds
    """
    queue = []
    for seed in seeds:
        for algo in ZOO_TUNED_ALGOS:
            settings = GridSettings(
                results=ZOO_TUNED_RESULTS, n_timesteps=1_000_000, eval_freq=50_000, eval_episodes=5, n_eval_envs=1,
                extra_args=("-conf", str(ZOO_TUNED_FILES / f"{algo}.yml")), python="python",
                checkpoint_freq=ZOO_TUNED_CHECKPOINT_FREQ,
            )  # fmt: skip
            queue.append((settings, [RunSpec(env, algo, BASE, seed) for env in ZOO_TUNED_ENVS]))
    return queue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiers", type=int, nargs="+", default=sorted(TIERS), choices=[*sorted(TIERS), ZOO_TUNED_TIER],
        help="tiers to run (default: 1 2; tier 3 runs only when asked for)",
    )  # fmt: skip
    variant_names = sorted({variant.name for groups in TIERS.values() for group in groups for _, _, variant in group})
    parser.add_argument(
        "--variants", nargs="+", choices=variant_names, metavar="VARIANT",
        help=f"tiers 1 and 2: run only the rows of these variants ({', '.join(variant_names)}; default: all)",
    )  # fmt: skip
    parser.add_argument("-j", "--jobs", type=int, default=2, help="runs at a time (default: 2)")
    args = parser.parse_args()
    argv = ["python", "benchmarks/studies/paper_scale.py", *sys.argv[1:]]
    status = 0
    tiers = [tier for tier in args.tiers if tier in TIERS]
    if tiers:
        runs = tier_queue(tiers, args.variants)
        status = GridRunner(runs, tier_settings(), jobs=args.jobs).run(argv=argv)
    if ZOO_TUNED_TIER in args.tiers and status != 130:  # not after an interruption
        for settings, runs in zoo_tuned_queue():
            status = max(status, GridRunner(runs, settings, jobs=args.jobs).run(argv=argv))
            if status == 130:
                break
    return status


if __name__ == "__main__":
    sys.exit(main())
