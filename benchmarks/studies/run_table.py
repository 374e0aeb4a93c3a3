"""
One row per run of a results folder, finished or diverged: what a collapse or a divergence looks like in it.

``benchmarks/report.py`` summarises rows of seeds; this table shows each run: its code, score (the mean of its
last evaluations) or the timestep where it diverged, its peak (the best mean over as many consecutive
evaluations) and where that window lies, the fraction of the peak it keeps, the median policy std and KL per
update over the last quarter of its budget, and its updates with a KL per update above ``--kl-threshold``
(how many, and the timestep of the first) and its largest KL per update. It also shows the balance of the loss's
terms: the share of updates whose clipped surrogate loss (``train/policy_gradient_loss``, its mean over the update's
epochs and minibatches) is at or above 0, where the update left the surrogate no better than the policy it started
from, and the first timestep at which the median over the last ``--loss-window`` updates is; for APO, the first
timestep at which the anchor term (``anchor_coef`` times ``anchor_loss``, the same moving median) outweighs the
surrogate's. Run from the repository root::

    python benchmarks/studies/run_table.py results/paper_scale --out results/paper_scale/run_table
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks/
from benchmarks.report import (  # noqa: E402
    STD,
    code_fields,
    diagnostic_column,
    final_and_peak,
    format_number,
    order_runs,
    run_fields,
    update_timesteps,
    window_means,
)
from sb3_apo.benchmark.files import (  # noqa: E402
    DIAGNOSTICS_FILE,
    DIVERGED_FILE,
    DONE_FILE,
    EVALUATIONS_CSV,
    read_json,
)

#: The columns of the table, in order.
COLUMNS = [
    "env", "algo", "variant", "seed", "code", "diverged_at", "score", "peak", "peak_from", "peak_to", "peak_kept",
    "std_last_quarter", "kl_last_quarter", "updates_kl_above", "first_kl_above_at", "kl_max", "surrogate_worse_share",
    "surrogate_worse_from", "anchor_over_surrogate_from", "last_evaluations_mean",
]  # fmt: skip
#: The loss terms that ``loss_balance`` reads: the clipped surrogate, and APO's anchor divergence and coefficient.
SURROGATE = "train/policy_gradient_loss"
ANCHOR_LOSS, ANCHOR_COEF = "train/anchor_loss", "train/anchor_coef"


def peak_window(returns: pd.Series, timesteps: pd.Series, window: int) -> tuple[float, float]:
    """
    The timesteps of the first and last evaluation of a run's best window of ``window`` consecutive evaluations.

    :param returns: the run's evaluation returns, in order
    :param timesteps: the timestep of each evaluation
    :param window: evaluations per window
    """
    if not len(returns):
        return np.nan, np.nan
    end = int(window_means(returns.reset_index(drop=True), window).idxmax())
    return float(timesteps.iloc[max(end - window + 1, 0)]), float(timesteps.iloc[end])


def loss_balance(log: pd.DataFrame, timesteps: pd.Series, loss_window: int) -> dict[str, float]:
    """
    The balance of a run's loss terms: the share of its updates whose surrogate loss is at or above 0, the first
    timestep at which the median over the last ``loss_window`` updates is, and (where the anchor term is logged) the
    first timestep at which that median of ``anchor_coef * anchor_loss`` is above the surrogate median's magnitude.

    :param log: the run's ``diagnostics.csv``
    :param timesteps: the timestep of each row of ``log``
    :param loss_window: updates in each moving median
    """
    if SURROGATE not in log:
        return {}
    updates = log[SURROGATE].notna()
    at = timesteps[updates]
    surrogate = log.loc[updates, SURROGATE].rolling(loss_window).median()

    def first(mask: pd.Series) -> float:
        return float(at[mask].min()) if mask.any() else np.nan

    balance = {
        "surrogate_worse_share": float((log.loc[updates, SURROGATE] >= 0).mean()),
        "surrogate_worse_from": first(surrogate >= 0),
    }
    if ANCHOR_LOSS in log and ANCHOR_COEF in log:
        anchor = (log.loc[updates, ANCHOR_LOSS] * log.loc[updates, ANCHOR_COEF]).rolling(loss_window).median()
        balance["anchor_over_surrogate_from"] = first(anchor > surrogate.abs())
    return balance


def run_row(folder: Path, window: int, kl_threshold: float, loss_window: int = 50) -> dict[str, object]:
    """
    The row of one run folder (one with ``done.json`` or ``diverged.json``).

    :param folder: the run's folder
    :param window: evaluations averaged for the score and the peak
    :param kl_threshold: a KL per update above which an update counts as large
    :param loss_window: updates in the moving medians of the loss terms (``loss_balance``)
    """
    finished = (folder / DONE_FILE).is_file()
    record = read_json(folder / (DONE_FILE if finished else DIVERGED_FILE))
    evaluations = pd.read_csv(folder / EVALUATIONS_CSV) if (folder / EVALUATIONS_CSV).is_file() else pd.DataFrame()
    returns = evaluations["mean_return"] if len(evaluations) else pd.Series(dtype=float)
    last_mean, peak = final_and_peak(returns, window)
    peak_from, peak_to = peak_window(returns, evaluations.get("timesteps", pd.Series(dtype=float)), window)
    log = pd.read_csv(folder / DIAGNOSTICS_FILE) if (folder / DIAGNOSTICS_FILE).is_file() else pd.DataFrame()
    fields, code = run_fields(record), code_fields(record)
    row: dict[str, object] = {
        **{key: fields[key] for key in ("env", "algo", "variant", "seed")},
        "code": code["code_commit"] + ("*" if code["code_dirty"] else ""),
        "diverged_at": np.nan if finished else float(fields["timesteps"]),
        "score": last_mean if finished else np.nan,
        "peak": peak,
        "peak_from": peak_from,
        "peak_to": peak_to,
        "peak_kept": last_mean / peak if finished and peak > 0 else np.nan,
        "last_evaluations_mean": last_mean,
    }
    kl_column = diagnostic_column(log, "kl", "auto") if len(log) else None
    if kl_column is None or "time/total_timesteps" not in log:
        return row
    timesteps = update_timesteps(log)
    last_quarter = timesteps > 0.75 * fields["budget_timesteps"]
    large = log[kl_column] > kl_threshold
    row.update(
        std_last_quarter=log.loc[last_quarter, STD[1]].median() if finished and STD[1] in log else np.nan,
        kl_last_quarter=log.loc[last_quarter, kl_column].median() if finished else np.nan,
        updates_kl_above=int(large.sum()),
        first_kl_above_at=float(timesteps[large].min()) if large.any() else np.nan,
        kl_max=log[kl_column].max(),
        **loss_balance(log, timesteps, loss_window),
    )
    return row


def run_table(results: Path, window: int = 5, kl_threshold: float = 1.0, loss_window: int = 50) -> pd.DataFrame:
    """
    Every finished and diverged run under ``results``, ordered as the report orders them.

    :param results: the results folder
    :param window: evaluations averaged for the score and the peak
    :param kl_threshold: a KL per update above which an update counts as large
    :param loss_window: updates in the moving medians of the loss terms
    """
    folders = sorted({path.parent for name in (DONE_FILE, DIVERGED_FILE) for path in results.rglob(name)})
    rows = [run_row(folder, window, kl_threshold, loss_window) for folder in folders]
    return order_runs(pd.DataFrame(rows, columns=COLUMNS)).drop(columns="label")


def _millions(value: float) -> str:
    """A timestep: in millions from 10k on (``0.87M``), else in full."""
    return "" if pd.isna(value) else (f"{value / 1e6:.2f}M" if value >= 10_000 else f"{value:,.0f}")


def _score(run: tuple, window: int) -> str:
    if pd.isna(run.diverged_at):
        return format_number(run.score)
    return f"diverged at {_millions(run.diverged_at)} (last {window} evaluations: {format_number(run.last_evaluations_mean)})"


def _fraction(value: float) -> str:
    return "" if pd.isna(value) else ("negative" if value < 0 else f"{value:.2f}")


def _general(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.3g}"


def _worse(run: tuple) -> str:
    if pd.isna(run.surrogate_worse_share):
        return ""
    share = f"{run.surrogate_worse_share:.2f}"
    return share + (f", from {_millions(run.surrogate_worse_from)}" if not pd.isna(run.surrogate_worse_from) else "")


def _count(value: float) -> str:
    return "" if pd.isna(value) else f"{int(value):,}"


def to_markdown(table: pd.DataFrame, window: int, kl_threshold: float) -> str:
    """The table for a reader: returns rounded, timesteps in millions, a diverged run's last evaluations in brackets."""
    runs = list(table.itertuples())
    shown = pd.DataFrame(
        {
            "run": [f"`{r.algo}/{r.variant}/seed_{r.seed}`" for r in runs],
            "code": [f"`{r.code}`" for r in runs],
            "score": [_score(r, window) for r in runs],
            "peak (at)": [f"{format_number(r.peak)} ({_millions(r.peak_from)}-{_millions(r.peak_to)})" for r in runs],
            "peak kept": table["peak_kept"].map(_fraction),
            "policy std, last quarter": table["std_last_quarter"].map(_general),
            "KL per update, last quarter": table["kl_last_quarter"].map(_general),
            f"updates with KL > {kl_threshold:g}": table["updates_kl_above"].map(_count),
            f"first KL > {kl_threshold:g}": table["first_kl_above_at"].map(_millions),
            "largest KL": table["kl_max"].map(_general),
            "surrogate >= 0: share of updates, median from": [_worse(r) for r in runs],
            "anchor term > surrogate from": table["anchor_over_surrogate_from"].map(_millions),
        }
    )
    parts = []
    for env, group in shown.groupby(table["env"], sort=False):
        parts += [f"## {env}", "", group.to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the results folder (the grid runner's --results)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.csv and OUT.md")
    parser.add_argument("--window", type=int, default=5, help="evaluations per score and peak (default: 5)")
    parser.add_argument("--kl-threshold", type=float, default=1.0, help="a KL per update above it is large (default: 1)")
    parser.add_argument(
        "--loss-window", type=int, default=50, help="updates in the moving medians of the loss terms (default: 50)"
    )
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"--results: {args.results} is not a folder")
    if args.loss_window < 1:
        parser.error(f"--loss-window must be a positive number of updates, got {args.loss_window}")
    table = run_table(args.results, args.window, args.kl_threshold, args.loss_window)
    if table.empty:
        parser.error(f"no finished or diverged run under {args.results}")
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    header = (
        f"# Every run of `{args.results.as_posix()}`\n\n"
        f"From `python benchmarks/studies/run_table.py {args.results.as_posix()} --out {args.out.as_posix()}`. "
        f"Score: the mean of the last {args.window} evaluations; peak: the best mean over {args.window} consecutive "
        f"evaluations, with the timesteps of its first and last; peak kept: score / peak. Policy std and KL per "
        f"update (`diag/kl` where logged, else `train/approx_kl`): medians over the updates in the last quarter of "
        f"the budget (finished runs only). Updates with KL > {args.kl_threshold:g} and the largest KL: over the whole run. "
        f"Surrogate >= 0: the share of updates whose clipped surrogate loss (`train/policy_gradient_loss`, the mean over "
        f"the update's epochs and minibatches) is at or above 0, that is no better than the policy the update started "
        f"from, and the first timestep at which the median over the last {args.loss_window} updates is. Anchor term > "
        f"surrogate: APO's, the first timestep at which the median of `anchor_coef * anchor_loss` over the last "
        f"{args.loss_window} updates is above the magnitude of that surrogate median. Timesteps: in millions (M) from "
        f"10,000 on, in full below.\n\n"
    )
    args.out.with_suffix(".md").write_text(header + to_markdown(table, args.window, args.kl_threshold))
    print(f"{len(table)} runs -> {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
