"""
The training return beside the evaluation score. Our reports score a run by its deterministic
evaluations; a paper may plot instead the return of the episodes its agents ran while training,
with the stochastic policy. This scores each run by SB3's ``rollout/ep_rew_mean`` (the mean return
of the last 100 training episodes, logged after every rollout), averaged over the rollouts of the
evaluation score's own final window (the last ``--final-window`` evaluation intervals), and
summarises the rows as ``benchmarks/report.py`` does: the IQM and P(> PPO-clip), each with a 95%
stratified-bootstrap interval, diverged runs counted and ranked last. Run from the repository root::

    python benchmarks/studies/training_return.py results/paper_scale --out results/paper_scale/training_return
"""

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks/
from benchmarks.report import format_fraction, format_interval, format_number, load_runs, summarise  # noqa: E402
from sb3_apo.benchmark.files import DONE_FILE, read_json  # noqa: E402
from sb3_apo.zoo.masking import recorded_command  # noqa: E402

TRAINING_RETURN = "rollout/ep_rew_mean"


def training_score(log: pd.DataFrame, budget: int, window_timesteps: int) -> float:
    """
    The mean of ``rollout/ep_rew_mean`` over the rollouts that ended in the last ``window_timesteps`` of the budget.

    :param log: the run's ``diagnostics.csv``
    :param budget: the run's training budget (timesteps)
    :param window_timesteps: the width of the final window (timesteps)
    :return: that mean (NaN where the log has no training return there)
    """
    if TRAINING_RETURN not in log or "time/total_timesteps" not in log:
        return float("nan")
    rows = log.dropna(subset=[TRAINING_RETURN])
    return float(rows.loc[rows["time/total_timesteps"] > budget - window_timesteps, TRAINING_RETURN].mean())


def intervals(table: pd.DataFrame, prefix: str) -> list[str]:
    """The IQMs of ``<prefix>_iqm`` with their intervals (``<prefix>_low``, ``<prefix>_high``), as the report shows them."""
    return [format_interval(*row) for row in zip(table[f"{prefix}_iqm"], table[f"{prefix}_low"], table[f"{prefix}_high"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a results folder written by the grid runner")
    parser.add_argument("--out", type=Path, required=True, help="file stem: writes <out>.md and <out>.csv")
    parser.add_argument("--final-window", type=int, default=5, help="evaluation intervals in the final window (default: 5)")
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap draws where not enumerated (default: 50,000)")
    args = parser.parse_args()
    runs, _, logs, _, diverged = load_runs(args.results, args.final_window)
    scores = []
    for run in runs.itertuples():
        eval_freq = int(read_json(args.results / run.folder / DONE_FILE)["eval_freq"])
        scores.append(training_score(logs[run.folder], int(run.budget_timesteps), args.final_window * eval_freq))
    evaluation = summarise(runs, args.reps, diverged)
    training = summarise(runs.assign(score=scores, peak_kept=np.nan), args.reps, diverged)
    table = pd.DataFrame(
        {
            "env": training["env"],
            "label": training["label"],
            "n_epochs": training["n_epochs"],
            "seeds": training["n_seeds"],
            "diverged": training["n_diverged"],
            "training_iqm": training["iqm"],
            "training_low": training["iqm_low"],
            "training_high": training["iqm_high"],
            "training_p": training["p_improvement"],
            "training_p_low": training["p_improvement_low"],
            "training_p_high": training["p_improvement_high"],
            "training_verdict": training["verdict"],
            "training_scores": training["scores"],
            "evaluation_iqm": evaluation["iqm"],
            "evaluation_low": evaluation["iqm_low"],
            "evaluation_high": evaluation["iqm_high"],
            "evaluation_p": evaluation["p_improvement"],
            "bootstrap": training["bootstrap"],
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    shown = pd.DataFrame(
        {
            "env": table["env"],
            "variant": [f"`{label}`" for label in table["label"]],
            "epochs": table["n_epochs"].astype(int),
            "runs (diverged)": [f"{n + d} ({d})" for n, d in zip(table["seeds"], table["diverged"])],
            "training return, IQM [95% CI]": intervals(table, "training"),
            "P(> PPO-clip), training return": [
                "reference" if not verdict else format_interval(*row, format_fraction)
                for verdict, *row in zip(
                    table["training_verdict"], table["training_p"], table["training_p_low"], table["training_p_high"]
                )
            ],
            "verdict, training return": table["training_verdict"],
            "per-seed training returns": table["training_scores"].map(
                lambda text: " ".join(format_number(float(v)) for v in text.split())
            ),
            "evaluation score, IQM [95% CI]": intervals(table, "evaluation"),
        }
    )
    command = shlex.join(recorded_command(["python", "benchmarks/studies/training_return.py", *sys.argv[1:]]))
    text = [
        f"# The training return of `{args.results.resolve().name}`",
        "",
        f"Score of a run: the mean of `{TRAINING_RETURN}` (SB3's mean return of the last 100 training episodes, "
        f"stochastic policy) over the rollouts that ended in the last {args.final_window} evaluation intervals of "
        "its budget, the evaluation score's own window. IQM and P(> PPO-clip) with 95% stratified-bootstrap "
        f"intervals ({table['bootstrap'].iloc[0]}), as in the report; a diverged run has no score and ranks last "
        "in P. The evaluation score (deterministic policy) is the report's.",
        "",
        shown.to_markdown(index=False, disable_numparse=True),
        "",
        f"Command: `{command}`",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(text), encoding="utf-8")
    print("\n".join(text))


if __name__ == "__main__":
    main()
