"""
Why did APO collapse (or diverge) over 10M steps? Replay its updates from a checkpoint taken before.

Every seed of ``HalfCheetah-v5/apo/epochs50`` (APO's defaults: sampled anchors, ``anchor_coef=1``) in
``benchmarks/studies/paper_scale.py`` collapsed near 1M steps, from peaks of 1,392-2,338 (5-evaluation means; the seeds'
record: ``results/paper_scale/run_table.md``), with updates whose KL reached the hundreds; so did tier 2's
(``Walker2d-v5/apo/base``, 10 epochs), later. This script continues training from a checkpoint of such a run
(the model with Adam's state, and its ``VecNormalize`` statistics, in a folder named after the env) under
arms that each change one thing,
and records every update's diagnostics:
- APO as it ran (the checkpoint's own settings);
- the same update without the anchor term (``anchor_coef=0``, PPO-clip's update);
- exact anchors (``anchor_estimator="exact"``);
- the APO public code's loss (``anchor_mode="parity"``);
- sampled anchors whose log-ratio is clamped to ``[-log 10, log 10]`` instead of ``[-20, 20]``. This is a
  study-only change of ``sb3_apo.common.distributions.LOG_RATIO_LIMIT``. It also caps that arm's logged
  anchor ratios at 10; its ``train/kl`` is exact and unaffected;
- for a run with ``anchor_coef="auto"`` (such as ``apo/epochs50-exact-auto``, which diverged instead), a
  looser target for the coefficient (``anchor_target=0.01`` instead of 0.003).

The parity arm is the public code's settings whatever the checkpoint's: sampled anchors, ``anchor_coef=1``.

The learning rate is held at the value the run's
``lin_3e-4`` schedule over 10M steps had at the checkpoint.

Make the checkpoint with the grid's own command for the run, a ``checkpoint_freq`` before the collapse and
a folder of your own, and stop it once ``checkpoints/<timestep>/`` is written (the 10M budget is kept so
that the schedule is the run's); then, from the repository root::

    python benchmarks/studies/collapse_replay.py --checkpoint replay_src/checkpoints/<timestep> \\
        --out results/paper_scale/collapse_replay
"""

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import VecNormalize

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks/
import sb3_apo.common.distributions as distributions  # noqa: E402
from benchmarks.studies.anchor_coef_probe import run_arms, train_updates  # noqa: E402
from sb3_apo import APO  # noqa: E402

N_TIMESTEPS = 10_000_000  # the grid's budget, over which lin_3e-4 anneals
PACKAGE_LOG_RATIO_LIMIT = distributions.LOG_RATIO_LIMIT
#: arm name -> (APO attributes to set, log-ratio limit of the sampled anchors)
ARMS: dict[str, tuple[dict[str, Any], float]] = {
    "as in the run": ({}, PACKAGE_LOG_RATIO_LIMIT),
    "anchor_coef=0 (PPO-clip's update)": ({"anchor_coef": 0.0}, PACKAGE_LOG_RATIO_LIMIT),
    "exact anchors": ({"anchor_estimator": "exact"}, PACKAGE_LOG_RATIO_LIMIT),
    "parity loss (the public code's)": (
        {"anchor_mode": "parity", "anchor_estimator": "sample", "anchor_coef": 1.0, "adaptive_anchor_coef": False},
        PACKAGE_LOG_RATIO_LIMIT,
    ),
    "log-ratio limit log 10": ({}, math.log(10.0)),
    "anchor_target=0.01": ({"anchor_target": 0.01}, PACKAGE_LOG_RATIO_LIMIT),
}
EXTRA = ("train/ratio_max", "train/anchor_ratio_max")


def replay(checkpoint: Path, arm: str, seed: int, n_updates: int) -> pd.DataFrame:
    """Continue the checkpoint's run for ``n_updates`` updates under ``arm``; one row per update."""
    attributes, log_ratio_limit = ARMS[arm]
    n_envs = load_from_zip_file(checkpoint / "model.zip", load_data=True)[0]["n_envs"]
    (statistics,) = checkpoint.glob("*/vecnormalize.pkl")  # in a folder named after the env
    env = VecNormalize.load(str(statistics), make_vec_env(statistics.parent.name, n_envs, seed=seed))
    model = APO.load(checkpoint / "model.zip", env=env, device="cpu")
    for name, value in attributes.items():
        setattr(model, name, value)
    learning_rate = 3e-4 * (1.0 - model.num_timesteps / N_TIMESTEPS)
    distributions.LOG_RATIO_LIMIT = log_ratio_limit
    try:
        return train_updates(model, n_updates, learning_rate, seed, extra=EXTRA)
    finally:
        distributions.LOG_RATIO_LIMIT = PACKAGE_LOG_RATIO_LIMIT


def compare_with_run(checkpoint: Path, run_diagnostics: Path) -> str:
    """
    Whether the checkpoint's run logged, up to the checkpoint, what the grid's run logged: every ``train/``,
    ``rollout/`` and ``eval/`` column of every row, compared exactly (so that the replay starts from the grid
    run's own state).
    """
    made = pd.read_csv(checkpoint / "diagnostics.csv")
    grid = pd.read_csv(run_diagnostics).iloc[: len(made)]
    columns = [column for column in made.columns if column.split("/")[0] in ("train", "rollout", "eval")]
    differ = [column for column in columns if not made[column].equals(grid[column])]
    return f"{len(made)} rows up to timestep {int(made['time/total_timesteps'].iloc[-1])}, {len(columns)} columns: " + (
        f"{len(differ)} differ: {differ}" if differ else "all equal to the grid run's, exactly"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoints/<timestep>/ of a grid run")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=100, help="updates per arm and seed")
    parser.add_argument("--arms", nargs="*", default=list(ARMS)[:-1], choices=list(ARMS), help="default: all but the last")
    parser.add_argument("--compare-with", type=Path, help="the grid run's diagnostics.csv (writes reproduction.txt)")
    args = parser.parse_args()
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.compare_with:
        comparison = compare_with_run(args.checkpoint, args.compare_with)
        (args.out / "reproduction.txt").write_text(comparison + "\n")
        print(comparison)
    if not args.arms:
        return 0
    updates = run_arms(args.arms, args.seeds, lambda arm, seed: replay(args.checkpoint, arm, seed, args.updates), args.out)
    last = updates.groupby(["arm", "seed"], sort=False).tail(10)
    summary = updates.groupby("arm", sort=False).agg(
        updates=("update", "count"),
        kl_median=("train/kl", "median"),
        kl_max=("train/kl", "max"),
        updates_with_kl_above_1=("train/kl", lambda kl: int((kl > 1).sum())),
        anchor_loss_max=("train/anchor_loss", "max"),
        clip_fraction_median=("train/clip_fraction", "median"),
    )
    summary["training_return_last_10_updates"] = last.groupby("arm", sort=False)["training_return"].mean()
    (args.out / "summary.md").write_text(summary.to_markdown(floatfmt=".4g") + "\n")
    print(summary.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
