"""
Does a larger anchor coefficient shrink APO's update? A probe of the exact + auto run that diverged.

The tier-1 run ``HalfCheetah-v5/apo/epochs50-exact-auto/seed_0`` of ``benchmarks/studies/paper_scale.py``
raised its adaptive ``anchor_coef`` to its bound of 1,000 and then diverged. This script starts from that
run's best model (its weights, Adam's state and its ``VecNormalize`` statistics, saved by rl-zoo3 at its best
evaluation) and trains it on, for a few dozen updates, under several arms that differ only in the anchor
coefficient: fixed values, the adaptive rule as in the run, and a fixed 1,000 with SB3's ``target_kl`` early
stopping. After every update it records the anchor divergence and the KL that the algorithm measured on the
whole rollout. The learning rate is held at the value the run's linear schedule had at the model's timestep.

It also measures how often the policy's action mean lies beyond the action bounds of ``[-1, 1]``, where the
env clips the action: there a change of the Gaussian's mean changes the KL and the anchor divergence, which
are those of the unclipped Gaussian, but not what the env receives (``saturation.md``).

Run from the repository root (the model files are the runner's, not committed)::

    python benchmarks/studies/anchor_coef_probe.py \\
        --run results/paper_scale/HalfCheetah-v5/apo/epochs50-exact-auto/seed_0 \\
        --out results/paper_scale/anchor_coef_probe

``--arms`` with no arm measures the saturation only.
"""

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import ConstantSchedule
from stable_baselines3.common.vec_env import VecNormalize

from sb3_apo import APO
from sb3_apo.common.on_policy import NonFiniteLossError

RECORDED = (
    "train/anchor_coef", "train/anchor_divergence", "train/kl", "train/clip_fraction", "train/policy_gradient_loss",
    "train/anchor_loss", "train/std", "train/approx_kl",
)  # fmt: skip
#: arm name -> (anchor_coef for the probe, or None to keep the saved, adapted one; adaptive; target_kl)
ARMS: dict[str, tuple[float | None, bool, float | None]] = {
    "fixed 1": (1.0, False, None),
    "fixed 32": (32.0, False, None),
    "fixed 1000": (1000.0, False, None),
    "auto (as in the run)": (None, True, None),
    "fixed 1000 + target_kl 0.01": (1000.0, False, 0.01),
}


class UpdateRecorder(BaseCallback):
    """
    Keep the values the last update logged (SB3 records them in ``train()`` and dumps them at the next
    rollout), and the mean return of the training episodes that ended in the rollout before it
    (``training_return``, NaN when none did).

    :param extra: logger keys to keep besides :data:`RECORDED`
    """

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.keys = RECORDED + extra
        self.rows: list[dict[str, Any]] = []
        self.returns: list[float] = []
        self.rollout_returns: list[float] = []

    def _take(self) -> None:
        values = self.model.logger.name_to_value
        if "train/kl" in values:
            training_return = float(np.mean(self.rollout_returns)) if self.rollout_returns else float("nan")
            row = {key: values.get(key) for key in self.keys}
            self.rows.append({"timesteps": self.num_timesteps, **row, "training_return": training_return})

    def _on_rollout_start(self) -> None:
        self._take()
        self.returns = []

    def _on_rollout_end(self) -> None:
        self.rollout_returns = self.returns

    def _on_training_end(self) -> None:
        self._take()

    def _on_step(self) -> bool:
        self.returns += [info["episode"]["r"] for info in self.locals["infos"] if "episode" in info]
        return True


def load_best(run: Path, seed: int) -> tuple[APO, dict[str, Any]]:
    """The run's best model, on its ``n_envs`` envs seeded with ``seed`` and its ``VecNormalize`` statistics."""
    zoo = next((run / "zoo" / "apo").iterdir())
    config = json.loads((run / "diverged.json").read_text())
    n_envs = int(config["hyperparams"]["n_envs"])
    env = VecNormalize.load(
        str(zoo / "HalfCheetah-v5" / "vecnormalize.pkl"), make_vec_env("HalfCheetah-v5", n_envs, seed=seed)
    )
    return APO.load(zoo / "best_model.zip", env=env, device="cpu"), config


def saturation(run: Path, n_steps: int, seed: int = 0) -> pd.DataFrame:
    """Per action dimension: the policy's std, and how often its mean lies beyond the bounds, over ``n_steps`` steps."""
    model, _ = load_best(run, seed)
    env = model.get_env()
    assert isinstance(env, VecNormalize)
    env.training = False  # measure, do not update the statistics
    observations = env.reset()
    means = []
    for _ in range(n_steps):
        with th.no_grad():
            distribution = model.policy.get_distribution(th.as_tensor(observations)).distribution
        means.append(distribution.mean.numpy())
        observations, *_ = env.step(np.clip(distribution.sample().numpy(), -1.0, 1.0))
    mean = np.concatenate(means)
    std = distribution.stddev.numpy()[0]
    return pd.DataFrame(
        {
            "std": std,
            "P(|mean| > 1)": (np.abs(mean) > 1).mean(axis=0),
            "P(|mean| > 1 + 3 std)": (np.abs(mean) > 1 + 3 * std).mean(axis=0),
            "median |mean|": np.median(np.abs(mean), axis=0),
        },
        index=pd.RangeIndex(mean.shape[1], name="action dimension"),
    )


def train_updates(model: APO, n_updates: int, learning_rate: float, seed: int, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """
    Train ``model`` for ``n_updates`` more updates at a constant ``learning_rate``, its random streams seeded
    with ``seed``; one row per update (:class:`UpdateRecorder`), with the outcome: ``finished``, or the
    ``NonFiniteLossError`` that stopped it.
    """
    model.learning_rate = learning_rate
    model.lr_schedule = ConstantSchedule(learning_rate)
    model.set_random_seed(seed)
    start_timesteps = model.num_timesteps
    recorder = UpdateRecorder(extra)
    outcome = "finished"
    try:
        model.learn(n_updates * model.n_steps * model.n_envs, callback=recorder, reset_num_timesteps=False)
    except NonFiniteLossError as error:
        outcome = f"NonFiniteLossError: {str(error)[:120]}"
    rows = pd.DataFrame(recorder.rows)
    rows.insert(0, "update", range(1, len(rows) + 1))
    rows["learning_rate"] = learning_rate
    rows["start_timesteps"] = start_timesteps
    rows["outcome"] = outcome
    return rows


def run_arms(arms: list[str], seeds: list[int], one_run: Callable[[str, int], pd.DataFrame], out: Path) -> pd.DataFrame:
    """``one_run(arm, seed)`` for every arm and seed, in turn; ``<out>/updates.csv`` is rewritten after each."""
    frames = []
    for arm in arms:
        for seed in seeds:
            start = time.perf_counter()
            frame = one_run(arm, seed)
            frame.insert(0, "seed", seed)
            frame.insert(0, "arm", arm)
            frames.append(frame)
            print(f"{arm:36s} seed {seed}: {len(frame)} updates, {frame['outcome'].iloc[-1]} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
            pd.concat(frames).to_csv(out / "updates.csv", index=False)
    return pd.concat(frames)


def probe(run: Path, arm: str, seed: int, n_updates: int) -> pd.DataFrame:
    """Train the run's best model for ``n_updates`` updates under ``arm``; one row per update."""
    model, config = load_best(run, seed)
    coef, adaptive, target_kl = ARMS[arm]
    if coef is not None:
        model.anchor_coef = coef
    model.adaptive_anchor_coef = adaptive
    model.target_kl = target_kl
    # The run's learning rate is lin_3e-4 over 10M steps: hold the value it had at this model's timestep.
    learning_rate = 3e-4 * (1.0 - model.num_timesteps / config["settings"]["n_timesteps"])
    return train_updates(model, n_updates, learning_rate, seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the run's results folder (with zoo/ and diverged.json)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=25, help="updates per arm and seed")
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--saturation-steps", type=int, default=500, help="steps of every env for saturation.md")
    args = parser.parse_args()
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.saturation_steps:
        table = saturation(args.run, args.saturation_steps)
        (args.out / "saturation.md").write_text(table.to_markdown(floatfmt=".3g") + "\n")
        print(table.to_string())
    if not args.arms:
        return 0
    updates = run_arms(args.arms, args.seeds, lambda arm, seed: probe(args.run, arm, seed, args.updates), args.out)
    summary = updates.groupby("arm", sort=False).agg(
        anchor_coef_last=("train/anchor_coef", "last"),
        anchor_divergence_median=("train/anchor_divergence", "median"),
        anchor_divergence_max=("train/anchor_divergence", "max"),
        kl_median=("train/kl", "median"),
        kl_max=("train/kl", "max"),
        clip_fraction_median=("train/clip_fraction", "median"),
        updates=("update", "count"),
    )
    (args.out / "summary.md").write_text(summary.to_markdown(floatfmt=".4g") + "\n")
    print(summary.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
