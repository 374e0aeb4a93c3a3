"""
Pass@1 and Pass@K while fine-tuning a diverse reference policy with verifiable rewards.

The setting of the support-anchored APO paper, in miniature, on
``sb3_apo/MultiSolution-v0`` (reach a target number by three arithmetic
operations; every problem has 2 to 8 valid solutions):

1. A diverse reference policy is "pretrained" by behaviour cloning on *every*
   valid solution of the training problems, each problem weighted equally and
   its solutions uniformly, for a few gradient steps only: it spreads its mass
   over the valid alternatives and solves problems with a modest Pass@1 but a
   high Pass@K (our stand-in for a pretrained, supervised fine-tuned model).
2. The reference is fine-tuned on the training problems with four objectives of
   :class:`sb3_apo.SupportAPO`, at equal budgets and seeds: ``vanilla``
   (PPO-clip), ``kl_wrong`` (KL to the reference on negative samples),
   ``kl_standard`` (KL to the reference on all samples) and ``support_apo``;
   the three regularisers each at a default and a ``_strong`` coefficient
   (see :data:`VARIANTS`).
3. Pass@1, Pass@K and the distinct valid solutions found are measured on the
   training problems and on held-out test problems, every ``--eval-every`` steps.

Outputs in ``--out``: ``curves.csv`` (every evaluation), ``summary.csv`` and
``summary.md`` (the reference and the end of fine-tuning, mean and standard
deviation over seeds), ``pass_at_k.png`` (curves), ``tradeoff.png`` (Pass@K
against Pass@1 at the end), ``config.json`` and ``reference_policy.pth``.

Usage::

    python examples/support_apo_pass_at_k.py --out results/support_apo   # the committed run (about 11 min on one core)
    python examples/support_apo_pass_at_k.py --tiny --out logs/smoke     # a smoke test, seconds

Without ``--out``, the outputs go to a new folder, ``runs/support_apo/<date>-<time>``, so
that a run never overwrites the results of another one (the committed ones included).
"""

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_apo import SupportAPO
from sb3_apo.common.pass_at_k import evaluate_pass_at_k
from sb3_apo.envs import MULTI_SOLUTION_ID, MultiSolutionEnv

#: The compared objectives, as keyword arguments of SupportAPO. ``vanilla`` is exactly PPO-clip, and
#: each regulariser runs at two strengths. ``top_k=3`` everywhere: the default 8 would be capped at
#: n - 1 = 7 of this task's 8 actions, a manifold of nearly the whole action space. It changes nothing
#: in the losses of the variants without a pull (``pull_coef=0``), only their ``safe_mass`` diagnostic,
#: which thus measures the same set for every variant.
VARIANTS: dict[str, dict[str, Any]] = {
    "vanilla": dict(push_coef=1.0, pull_coef=0.0, ref_kl_coef=0.0, top_k=3),
    "kl_wrong": dict(push_coef=1.0, pull_coef=0.0, ref_kl_coef=0.1, kl_mode="negative", top_k=3),
    "kl_wrong_strong": dict(push_coef=1.0, pull_coef=0.0, ref_kl_coef=0.5, kl_mode="negative", top_k=3),
    "kl_standard": dict(push_coef=1.0, pull_coef=0.0, ref_kl_coef=0.1, kl_mode="all", top_k=3),
    "kl_standard_strong": dict(push_coef=1.0, pull_coef=0.0, ref_kl_coef=0.5, kl_mode="all", top_k=3),
    "support_apo": dict(push_coef=1.05, pull_coef=0.1, ref_kl_coef=0.0, top_k=3),
    "support_apo_strong": dict(push_coef=1.05, pull_coef=0.5, ref_kl_coef=0.0, top_k=3),
}
STYLES: dict[str, dict[str, Any]] = {
    "reference": dict(color="grey", marker="*"),
    "vanilla": dict(color="black", linestyle="-"),
    "kl_wrong": dict(color="tab:blue", linestyle="-"),
    "kl_wrong_strong": dict(color="tab:blue", linestyle="--"),
    "kl_standard": dict(color="tab:green", linestyle="-"),
    "kl_standard_strong": dict(color="tab:green", linestyle="--"),
    "support_apo": dict(color="tab:red", linestyle="-"),
    "support_apo_strong": dict(color="tab:red", linestyle="--"),
}

BUDGETS: dict[str, dict[str, Any]] = {
    # the committed run
    "full": dict(timesteps=100_000, eval_every=10_000, seeds=[0, 1, 2], n_samples=32),
    # a smoke test of the whole pipeline
    "tiny": dict(timesteps=1_024, eval_every=512, seeds=[0], n_samples=8),
}


#: Where a run without ``--out`` writes: a new folder in it (``runs/`` is not committed).
DEFAULT_OUT_PARENT = Path("runs") / "support_apo"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default: a new folder {DEFAULT_OUT_PARENT}/<date>-<time>; the committed results "
        "are --out results/support_apo)",
    )
    parser.add_argument("--tiny", action="store_true", help="a smoke-test budget (seconds)")
    parser.add_argument("--timesteps", type=int, help="fine-tuning steps per run (default: 100000, tiny: 1024)")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations (default: 10000, tiny: 512)")
    parser.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds (default: 0 1 2, tiny: 0)")
    parser.add_argument("--n-samples", type=int, help="attempts per problem, n (default: 32, tiny: 8)")
    parser.add_argument("--k", type=int, default=8, help="K of Pass@K (at most --n-samples)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"among {', '.join(VARIANTS)}")
    parser.add_argument("--bc-steps", type=int, default=1500, help="behaviour-cloning steps of the reference")
    parser.add_argument("--reference-seed", type=int, default=0, help="seed of the reference's pretraining")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--summarise-only",
        action="store_true",
        help="rebuild summary.csv/.md and the plots from OUT/curves.csv and OUT/config.json, without training",
    )
    args = parser.parse_args(argv)
    budget = BUDGETS["tiny" if args.tiny else "full"]
    for name, value in budget.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.tiny:
        args.bc_steps = min(args.bc_steps, 50)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; the variants are {list(VARIANTS)}")
    if args.k > args.n_samples:
        parser.error(f"--k ({args.k}) must not exceed --n-samples ({args.n_samples})")
    if args.out is None:
        if args.summarise_only:
            parser.error("--summarise-only needs --out, the folder of the run to summarise")
        args.out = fresh_folder(DEFAULT_OUT_PARENT)
        print(f"Writing to {args.out}")
    return args


def fresh_folder(parent: Path) -> Path:
    """
    Create a new folder ``parent/<date>-<time>`` (with a suffix if a run started in the same second).

    :param parent: the folder to create it in (created if missing)
    :return: the new, empty folder
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        folder = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"No fresh folder name left in {parent} for {stamp}.")


#: Fine-tuning hyperparameters, shared by every variant.
PPO_KWARGS: dict[str, Any] = dict(
    n_steps=64,
    batch_size=128,
    n_epochs=4,
    learning_rate=3e-4,
    gamma=1.0,
    gae_lambda=0.95,
    ent_coef=0.0,
    policy_kwargs=dict(net_arch=[64, 64]),
)
N_ENVS = 8


def behaviour_cloning_data(task: MultiSolutionEnv) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """
    Every step of every valid solution of every problem of ``task``, as observations,
    actions and weights: each problem weighs 1 in total, shared by its solutions.
    """
    observations, actions, weights = [], [], []
    for problem in range(task.n_problems):
        solutions = task.solutions(problem)
        for solution in solutions:
            state, obs = task.batch_reset(np.array([problem]))
            for action in solution:
                observations.append(obs[0])
                actions.append(action)
                weights.append(1.0 / len(solutions))
                state, obs, _, _ = task.batch_step(state, np.array([action]))
    return th.as_tensor(np.array(observations)), th.as_tensor(np.array(actions)), th.as_tensor(weights, dtype=th.float32)


def pretrain_reference(model: SupportAPO, task: MultiSolutionEnv, steps: int, seed: int) -> None:
    """Behaviour cloning of ``model.policy`` on the valid solutions of ``task`` (cross-entropy, Adam)."""
    observations, actions, weights = behaviour_cloning_data(task)
    optimizer = th.optim.Adam(model.policy.parameters(), lr=1e-3)
    generator = th.Generator().manual_seed(seed)
    model.policy.set_training_mode(True)
    for _ in range(steps):
        index = th.randint(len(observations), (256,), generator=generator)
        _, log_prob, _ = model.policy.evaluate_actions(observations[index], actions[index])
        loss = -(log_prob * weights[index]).sum() / weights[index].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.policy.set_training_mode(False)


def evaluate(model: SupportAPO, tasks: dict[str, MultiSolutionEnv], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Pass@1, Pass@K and distinct valid solutions on each split."""
    rows = []
    for split, task in tasks.items():
        result = evaluate_pass_at_k(model, task, n_samples=args.n_samples, ks=(1, args.k), seed=12345)
        rows.append(
            {
                "split": split,
                "pass@1": result.pass_at[1],
                f"pass@{args.k}": result.pass_at[args.k],
                "distinct_solutions": result.mean_distinct_solutions,
            }
        )
    return rows


def run(args: argparse.Namespace) -> pd.DataFrame:
    """Pretrain the reference, fine-tune every variant for every seed, and return the evaluations."""
    th.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = {split: MultiSolutionEnv(split=split) for split in ("train", "test")}

    def make_env(seed: int) -> Any:
        return make_vec_env(MULTI_SOLUTION_ID, n_envs=N_ENVS, seed=seed, env_kwargs=dict(split="train", render_mode=None))

    started = time.time()
    reference_model = SupportAPO("MlpPolicy", make_env(args.reference_seed), seed=args.reference_seed, **PPO_KWARGS)
    pretrain_reference(reference_model, tasks["train"], args.bc_steps, args.reference_seed)
    reference_path = args.out / "reference_policy.pth"
    reference_model.policy.save(str(reference_path))
    reference_state = {name: tensor.clone() for name, tensor in reference_model.policy.state_dict().items()}
    reference_rows = evaluate(reference_model, tasks, args)
    print(f"reference after {args.bc_steps} behaviour-cloning steps ({time.time() - started:.0f} s):")
    for row in reference_rows:
        print(f"  {row}")

    records = []
    for seed in args.seeds:
        for variant in args.variants:
            run_started = time.time()
            model = SupportAPO("MlpPolicy", make_env(seed), seed=seed, **PPO_KWARGS, **VARIANTS[variant])
            model.policy.load_state_dict(reference_state)  # the reference is snapshot when learn() starts
            for row in reference_rows:
                records.append({"variant": variant, "seed": seed, "timesteps": 0, **row})
            while model.num_timesteps < args.timesteps:
                model.learn(args.eval_every, reset_num_timesteps=False)
                logged = model.logger.name_to_value  # the last update's values (not yet dumped)
                diagnostics = {
                    "safe_mass": logged.get("train/safe_mass"),
                    "ref_kl": logged.get("train/ref_kl"),
                    "entropy": -logged["train/entropy_loss"] if "train/entropy_loss" in logged else None,
                }
                for row in evaluate(model, tasks, args):
                    records.append({"variant": variant, "seed": seed, "timesteps": model.num_timesteps, **row, **diagnostics})
            final = [
                r for r in records if r["variant"] == variant and r["seed"] == seed and r["timesteps"] == model.num_timesteps
            ]
            summary = ", ".join(
                f"{r['split']} pass@1 {r['pass@1']:.3f} pass@{args.k} {r[f'pass@{args.k}']:.3f}" for r in final
            )
            print(f"{variant:18s} seed {seed}: {summary} ({time.time() - run_started:.0f} s)", flush=True)
    print(f"total {time.time() - started:.0f} s")
    return pd.DataFrame.from_records(records)


def summarise(curves: pd.DataFrame, k: int) -> pd.DataFrame:
    """The reference (timestep 0) and the last evaluation of every variant: mean and sample std (ddof=1) over seeds."""
    metrics = ["pass@1", f"pass@{k}", "distinct_solutions"]
    last = curves[curves["timesteps"] == curves["timesteps"].max()]
    first = curves[(curves["timesteps"] == 0) & (curves["variant"] == curves["variant"].iloc[0])].assign(variant="reference")
    rows = []
    for (variant, split), group in pd.concat([first, last]).groupby(["variant", "split"], sort=False):
        row: dict[str, Any] = {"variant": variant, "split": split, "seeds": group["seed"].nunique()}
        for metric in [*metrics, "safe_mass", "ref_kl", "entropy"]:
            if metric in group and group[metric].notna().any():
                row[metric] = group[metric].mean()
                row[f"{metric}_std"] = group[metric].std(ddof=1) if len(group) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame, k: int, timesteps: int) -> str:
    """The summary as a Markdown table, one row per variant, train and test side by side."""
    header = (
        f"| variant | train Pass@1 | train Pass@{k} | train distinct | test Pass@1 | test Pass@{k} | test distinct "
        f"| safe_mass | ref_kl | entropy |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def cell(row: pd.Series, metric: str, digits: int = 3) -> str:
        if metric not in row or pd.isna(row[metric]):
            return ""
        return f"{row[metric]:.{digits}f} ± {row[f'{metric}_std']:.{digits}f}"

    lines = []
    for variant, group in summary.groupby("variant", sort=False):
        train = group[group["split"] == "train"].iloc[0]
        test = group[group["split"] == "test"].iloc[0]
        cells = [
            cell(train, "pass@1"),
            cell(train, f"pass@{k}"),
            cell(train, "distinct_solutions", 2),
            cell(test, "pass@1"),
            cell(test, f"pass@{k}"),
            cell(test, "distinct_solutions", 2),
            cell(train, "safe_mass"),
            cell(train, "ref_kl", 4),
            cell(train, "entropy"),
        ]
        name = variant if variant == "reference" else f"{variant} ({timesteps} steps)"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def plot(curves: pd.DataFrame, k: int, path: Path) -> None:
    """Pass@1, Pass@K and distinct solutions over training, train and test problems; mean and min-max over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("pass@1", "Pass@1"), (f"pass@{k}", f"Pass@{k}"), ("distinct_solutions", "distinct valid solutions / problem")]
    figure, axes = plt.subplots(2, 3, figsize=(16, 8.5), sharex=True)
    for row, split in enumerate(("train", "test")):
        for column, (metric, label) in enumerate(metrics):
            axis = axes[row, column]
            for variant, group in curves[curves["split"] == split].groupby("variant", sort=False):
                stats = group.groupby("timesteps")[metric].agg(["mean", "min", "max"])
                style = STYLES.get(variant, {})
                axis.plot(stats.index, stats["mean"], marker="o", markersize=2.5, label=variant, **style)
                axis.fill_between(stats.index, stats["min"], stats["max"], color=style.get("color"), alpha=0.08)
            axis.set_title(f"{label}, {split} problems")
            axis.grid(alpha=0.3)
            if row == 1:
                axis.set_xlabel("fine-tuning steps")
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(f"Fine-tuning a diverse reference on {MULTI_SOLUTION_ID} (mean, min-max over seeds; step 0 = reference)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_tradeoff(curves: pd.DataFrame, k: int, path: Path) -> None:
    """Pass@K against Pass@1 at the end of fine-tuning: one point per seed, a large marker per variant's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = curves[curves["timesteps"] == curves["timesteps"].max()]
    reference = curves[curves["timesteps"] == 0].drop_duplicates("split")
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    for axis, split in zip(axes, ("train", "test")):
        for variant, group in last[last["split"] == split].groupby("variant", sort=False):
            color = STYLES.get(variant, {}).get("color")
            marker = "s" if variant.endswith("_strong") else "o"
            axis.scatter(group["pass@1"], group[f"pass@{k}"], color=color, marker=marker, alpha=0.35, s=18)
            axis.scatter(group["pass@1"].mean(), group[f"pass@{k}"].mean(), color=color, marker=marker, s=90, label=variant)
        point = reference[reference["split"] == split]
        axis.scatter(point["pass@1"], point[f"pass@{k}"], color="grey", marker="*", s=200, label="reference")
        axis.set_xlabel("Pass@1")
        axis.set_ylabel(f"Pass@{k}")
        axis.set_title(f"{split} problems, end of fine-tuning")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the experiment and write its outputs; returns the summary table."""
    args = parse_args(argv)
    if args.summarise_only:  # the run's own settings, as config.json recorded them
        recorded = json.loads((args.out / "config.json").read_text())
        for name in ("seeds", "n_samples", "k", "timesteps", "bc_steps"):
            setattr(args, name, recorded[name])
        curves = pd.read_csv(args.out / "curves.csv")
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        config = {name: (str(value) if isinstance(value, Path) else value) for name, value in vars(args).items()}
        config.update(ppo_kwargs=PPO_KWARGS, n_envs=N_ENVS, variants_kwargs={v: VARIANTS[v] for v in args.variants})
        (args.out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        curves = run(args)
        curves.to_csv(args.out / "curves.csv", index=False)
    summary = summarise(curves, args.k)
    summary.to_csv(args.out / "summary.csv", index=False)
    table = markdown_table(summary, args.k, args.timesteps)
    (args.out / "summary.md").write_text(
        f"# Fine-tuning a diverse reference on {MULTI_SOLUTION_ID}\n\n"
        f"Mean ± sample std (ddof=1) over seeds {args.seeds}; n = {args.n_samples} attempts per problem; "
        f"{MultiSolutionEnv().n_problems} train and {MultiSolutionEnv(split='test').n_problems} test problems; "
        f"{args.timesteps} fine-tuning steps from a reference cloned for {args.bc_steps} steps; "
        f"safe_mass, ref_kl and entropy are the last update's training logs.\n\n{table}"
    )
    plot(curves, args.k, args.out / "pass_at_k.png")
    plot_tradeoff(curves, args.k, args.out / "tradeoff.png")
    print(table)
    return summary


if __name__ == "__main__":
    main()
