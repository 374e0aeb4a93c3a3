"""
The report step: a results folder written by the grid runner -> tables and plots.

Outputs, in ``<results>/report/`` unless told otherwise:

- ``summary.csv`` and ``summary.md``: mean ± std over seeds of the final
  evaluation return, per env and algorithm (variant), with seeds and budget;
  the Markdown file also holds the diagnostics summary and, where runs with
  several ``n_epochs`` exist, the epochs table;
- ``runs.csv``: one row per finished run;
- ``curves_<env>.png``: learning curves, the mean and a 95% band over seeds;
- ``diagnostics_<env>.png``: KL and the largest unsampled-action (anchor) ratio,
  and the largest executed-action ratio, over training, on log scales;
- ``epochs_<env>.png`` and ``epochs.csv``: the same runs compared across
  ``n_epochs`` (e.g. 10 vs 50), where a grid has such variants.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sb3_apo.benchmark.files import (
    DIAGNOSTICS_FILE,
    DONE_FILE,
    EVALUATIONS_CSV,
    SETTINGS_FILE,
    read_csv_columns,
    read_json,
    safe_name,
    write_csv,
)
from sb3_apo.benchmark.grid import BASE_VARIANT

#: Two-sided 95% quantiles of Student's t distribution, by degrees of freedom.
T_975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
    25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}  # fmt: skip
#: Algorithms in the order tables and legends list them; others follow alphabetically.
ALGO_ORDER = ("apo", "ppo", "ppo_penalty", "spo")
#: The diagnostics plotted, as (key suffix, axis label).
DIAGNOSTIC_KEYS = (
    ("kl", "KL(pi_old || pi) per update"),
    ("anchor_ratio_max", "largest unsampled-action ratio"),
    ("ratio_max", "largest executed-action ratio"),
)


def t_quantile(dof: int) -> float:
    """
    The 97.5% quantile of Student's t with ``dof`` degrees of freedom (a table, conservative between entries).

    :param dof: degrees of freedom, at least 1
    """
    if dof in T_975:
        return T_975[dof]
    smaller = [key for key in T_975 if key < dof]
    return T_975[max(smaller)] if dof <= 120 else 1.960


def mean_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Mean over seeds and its 95% confidence band (Student t) at every x.

    :param values: ``(n_seeds, n_points)``
    :return: mean, lower and upper bound; the band is the mean itself for one seed
    """
    mean = values.mean(axis=0)
    n = len(values)
    if n < 2:
        return mean, mean, mean
    half = t_quantile(n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """
    Centred moving average; windows shrink at the ends.

    :param values: a 1-D array
    :param window: points per window (1: no smoothing)
    """
    if window <= 1 or len(values) < 2:
        return values
    sums = np.concatenate([[0.0], np.cumsum(values)])
    half = window // 2
    lo = np.clip(np.arange(len(values)) - half, 0, len(values))
    hi = np.clip(np.arange(len(values)) + window - half, 0, len(values))
    return (sums[hi] - sums[lo]) / (hi - lo)


def align(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """
    Put several ``(x, y)`` curves on the x values of the sparsest one, within the range they share.

    :param curves: one ``(x, y)`` per seed, ``x`` increasing
    :return: ``x`` and ``(n_curves, len(x))`` values
    """
    start = max(x[0] for x, _ in curves)
    end = min(x[-1] for x, _ in curves)
    reference = min((x for x, _ in curves), key=len)
    grid = reference[(reference >= start) & (reference <= end)]
    if len(grid) == 0:
        grid = np.array([end])
    return grid, np.stack([np.interp(grid, x, y) for x, y in curves])


def format_number(value: float | None) -> str:
    """
    A compact number for tables: no decimals from 100 up, two from 1, three significant digits below.

    :param value: the number (``None``/NaN: ``n/a``)
    """
    if value is None or not np.isfinite(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


# ---------------------------------------------------------------------- #
# Loading
# ---------------------------------------------------------------------- #
@dataclass
class RunResult:
    """
    One finished run, as the report needs it.

    :param folder: the run folder
    :param done: the content of its ``done.json``
    :param evaluations: ``evaluations.csv`` by column (empty without evaluations)
    :param diagnostics: ``diagnostics.csv`` by column
    """

    folder: Path
    done: dict[str, Any]
    evaluations: dict[str, np.ndarray] = field(default_factory=dict)
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def env(self) -> str:
        return self.done["env"]

    @property
    def algo(self) -> str:
        return self.done["algo"]

    @property
    def variant(self) -> str:
        return self.done["variant"]

    @property
    def seed(self) -> int:
        return int(self.done["seed"])

    @property
    def label(self) -> str:
        """``algo`` for the base variant, ``algo [variant]`` otherwise."""
        return self.algo if self.variant == BASE_VARIANT else f"{self.algo} [{self.variant}]"

    @property
    def n_epochs(self) -> int | None:
        """The run's ``n_epochs``: from its effective hyperparameters, else its variant, else unknown."""
        for source in (self.done.get("hyperparams") or {}, self.done.get("variant_params") or {}):
            if "n_epochs" in source:
                try:
                    return int(float(source["n_epochs"]))
                except (TypeError, ValueError):
                    return None
        return None

    @property
    def budget(self) -> int:
        """The requested training budget (the launcher trains whole rollouts, so slightly more may be done)."""
        requested = (self.done.get("settings") or {}).get("n_timesteps") or (self.done.get("hyperparams") or {}).get(
            "n_timesteps"
        )
        return int(float(requested)) if requested else int(self.done["timesteps"])

    def final_return(self, window: int) -> float:
        """
        Mean of the last ``window`` evaluations' mean returns (NaN without evaluations).

        :param window: evaluations averaged
        """
        returns = self.evaluations.get("mean_return")
        if returns is None or len(returns) == 0:
            return math.nan
        return float(np.mean(returns[-window:]))

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """
        ``(timesteps, values)`` of a logged key, where it is finite; ``None`` when absent.

        The timestep of a row is ``diag/timesteps`` (the update the row describes) where
        present, else ``time/total_timesteps``.

        :param key: a column of ``diagnostics.csv``
        """
        values = self.diagnostics.get(key)
        if values is None:
            return None
        nan = np.full(len(values), np.nan)
        x = self.diagnostics.get("diag/timesteps", nan).copy()
        fallback = self.diagnostics.get("time/total_timesteps", nan)
        x[~np.isfinite(x)] = fallback[~np.isfinite(x)]
        keep = np.isfinite(values) & np.isfinite(x)
        if not keep.any():
            return None
        x, values = x[keep], values[keep]
        order = np.argsort(x, kind="stable")
        return x[order], values[order]


def load_results(results: Path) -> tuple[list[RunResult], list[Path]]:
    """
    Every finished run under a results folder, and the unfinished run folders.

    :param results: the results folder
    :return: finished runs, sorted by env, algo, variant and seed; unfinished run folders
    """
    runs = []
    for done_path in sorted(results.rglob(DONE_FILE)):
        folder = done_path.parent
        run = RunResult(folder, read_json(done_path))
        if (folder / EVALUATIONS_CSV).is_file():
            run.evaluations = read_csv_columns(folder / EVALUATIONS_CSV)
        if (folder / DIAGNOSTICS_FILE).is_file():
            run.diagnostics = read_csv_columns(folder / DIAGNOSTICS_FILE)
        runs.append(run)
    unfinished = sorted(path.parent for path in results.rglob(SETTINGS_FILE) if not (path.parent / DONE_FILE).is_file())
    runs.sort(key=lambda run: (run.env, *algo_sort_key(run.algo), variant_sort_key(run.variant), run.seed))
    return runs, unfinished


def algo_sort_key(algo: str) -> tuple[int, str]:
    """
    Sort key putting the package's algorithms first.

    :param algo: algorithm name
    """
    return (ALGO_ORDER.index(algo), "") if algo in ALGO_ORDER else (len(ALGO_ORDER), algo)


def variant_sort_key(variant: str) -> tuple[bool, str]:
    """
    Sort key putting the base variant first.

    :param variant: variant name
    """
    return (variant != BASE_VARIANT, variant)


# ---------------------------------------------------------------------- #
# Tables
# ---------------------------------------------------------------------- #
@dataclass
class Group:
    """
    The seeds of one (env, algo, variant).

    :param runs: the runs, one per seed
    """

    runs: list[RunResult]

    @property
    def first(self) -> RunResult:
        return self.runs[0]

    def final_returns(self, window: int) -> np.ndarray:
        """
        Final return of every seed.

        :param window: evaluations averaged per seed
        """
        return np.array([run.final_return(window) for run in self.runs])

    def budgets(self) -> list[int]:
        """The distinct budgets of the seeds."""
        return sorted({run.budget for run in self.runs})


def group_runs(runs: Sequence[RunResult]) -> dict[tuple[str, str, str], Group]:
    """
    Runs grouped by (env, algo, variant), in the order of ``runs``.

    :param runs: finished runs
    """
    groups: dict[tuple[str, str, str], Group] = {}
    for run in runs:
        groups.setdefault((run.env, run.algo, run.variant), Group([])).runs.append(run)
    return groups


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _pm(mean: float, std: float) -> str:
    """``mean ± std``, the std with as many decimals as the mean."""
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(std):
        return format_number(mean)
    if abs(mean) >= 100:
        return f"{format_number(mean)} ± {std:,.0f}"
    if abs(mean) >= 1:
        return f"{format_number(mean)} ± {std:.2f}"
    return f"{format_number(mean)} ± {format_number(std)}"


def _budget_text(budgets: Sequence[int]) -> str:
    return " / ".join(f"{budget:,}" for budget in budgets) + (" (mixed!)" if len(budgets) > 1 else "")


def summary_rows(groups: dict[tuple[str, str, str], Group], window: int) -> list[dict[str, Any]]:
    """
    One row per group: final return statistics over seeds, budget, speed.

    :param groups: the groups
    :param window: evaluations averaged per seed for its final return
    """
    rows = []
    for (env, algo, variant), group in groups.items():
        returns = group.final_returns(window)
        mean, std = _mean_std(returns)
        rates = [run.done.get("steps_per_s_median_update") or run.done.get("steps_per_s") for run in group.runs]
        rows.append(
            {
                "env": env,
                "algo": algo,
                "variant": variant,
                "label": group.first.label,
                "n_epochs": group.first.n_epochs,
                "n_seeds": len(group.runs),
                "seeds": " ".join(str(run.seed) for run in group.runs),
                "budget_timesteps": " / ".join(str(budget) for budget in group.budgets()),
                "eval_episodes": group.first.done.get("eval_episodes"),
                "final_window": window,
                "final_return_mean": mean,
                "final_return_std": std,
                "final_return_min": float(np.nanmin(returns)) if np.isfinite(returns).any() else math.nan,
                "final_return_max": float(np.nanmax(returns)) if np.isfinite(returns).any() else math.nan,
                "final_returns": " ".join(format_number(value) for value in returns),
                "steps_per_s": float(np.mean([rate for rate in rates if rate])) if any(rates) else math.nan,
                "wall_time_s": float(np.mean([run.done.get("wall_time_s", math.nan) for run in group.runs])),
            }
        )
    return rows


def diagnostic_key(run: RunResult, name: str, source: str) -> str | None:
    """
    The column holding diagnostic ``name`` for a run: ``diag/<name>`` (measured alike for
    every algorithm) or ``train/<name>`` (the algorithm's own), as ``source`` asks.

    :param run: the run
    :param name: ``kl``, ``anchor_ratio_max``, ``ratio_max`` ...
    :param source: ``diag``, ``train`` or ``auto`` (``diag`` where logged, else ``train``)
    """
    candidates = {"diag": [f"diag/{name}"], "train": [f"train/{name}"], "auto": [f"diag/{name}", f"train/{name}"]}[source]
    for key in candidates:
        if run.series(key) is not None:
            return key
    return None


def diagnostics_rows(groups: dict[tuple[str, str, str], Group], source: str) -> list[dict[str, Any]]:
    """
    Per group, the seeds' mean of per-run statistics over training: median KL,
    median and largest anchor ratio, median executed-action ratio.

    :param groups: the groups
    :param source: see :func:`diagnostic_key`
    """
    rows = []
    for (env, _, _), group in groups.items():
        row: dict[str, Any] = {"env": env, "label": group.first.label}
        for name, statistic, reducer in (
            ("kl", "median", np.median),
            ("anchor_ratio_max", "median", np.median),
            ("anchor_ratio_max", "max", np.max),
            ("ratio_max", "median", np.median),
        ):
            values = []
            for run in group.runs:
                key = diagnostic_key(run, name, source)
                series = run.series(key) if key else None
                if series is not None:
                    values.append(float(reducer(series[1])))
            row[f"{name}_{statistic}"] = float(np.mean(values)) if values else math.nan
        rows.append(row)
    return rows


def epochs_label(run: RunResult) -> str:
    """
    The run's label in the n_epochs comparison: its algorithm and its variant's overrides other than ``n_epochs``.

    :param run: the run
    """
    others = {key: value for key, value in (run.done.get("variant_params") or {}).items() if key != "n_epochs"}
    if not others:
        return run.algo
    return f"{run.algo} [" + ",".join(f"{key}={value}" for key, value in others.items()) + "]"


def epochs_groups(runs: Sequence[RunResult]) -> dict[str, dict[str, dict[int, list[RunResult]]]]:
    """
    For the n_epochs comparison: env -> label -> n_epochs -> runs, where runs whose variants differ
    only in ``n_epochs`` share a label (:func:`epochs_label`); only labels with at least two
    ``n_epochs`` values are kept, and only envs with such a label.

    :param runs: finished runs
    """
    table: dict[str, dict[str, dict[int, list[RunResult]]]] = {}
    for run in runs:
        n_epochs = run.n_epochs
        if n_epochs is not None:
            table.setdefault(run.env, {}).setdefault(epochs_label(run), {}).setdefault(n_epochs, []).append(run)
    result = {}
    for env, labels in table.items():
        kept = {label: dict(sorted(by_epochs.items())) for label, by_epochs in labels.items() if len(by_epochs) > 1}
        if kept:
            result[env] = dict(sorted(kept.items(), key=lambda item: (*algo_sort_key(item[0].split(" [")[0]), item[0])))
    return result


def epochs_rows(table: dict[str, dict[str, dict[int, list[RunResult]]]], window: int) -> list[dict[str, Any]]:
    """
    Final return at each ``n_epochs`` and its ratio to the smallest ``n_epochs``'s.

    :param table: see :func:`epochs_groups`
    :param window: evaluations averaged per seed for its final return
    """
    rows = []
    for env, labels in table.items():
        for label, by_epochs in labels.items():
            reference = None
            for n_epochs, runs in by_epochs.items():
                mean, std = _mean_std(np.array([run.final_return(window) for run in runs]))
                reference = mean if reference is None else reference
                rows.append(
                    {
                        "env": env,
                        "algo": runs[0].algo,
                        "label": label,
                        "n_epochs": n_epochs,
                        "n_seeds": len(runs),
                        "seeds": " ".join(str(run.seed) for run in runs),
                        "budget_timesteps": " / ".join(str(b) for b in sorted({run.budget for run in runs})),
                        "final_return_mean": mean,
                        "final_return_std": std,
                        "retention": mean / reference if reference else math.nan,
                    }
                )
    return rows


# ---------------------------------------------------------------------- #
# Plots
# ---------------------------------------------------------------------- #
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _style(labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A fixed colour per algorithm and a line style per variant, the same in every figure."""
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    styles = ["-", "--", ":", "-."]
    algos = sorted({label.split(" [")[0] for label in labels}, key=algo_sort_key)
    variants: dict[str, list[str]] = {}
    for label in labels:
        variants.setdefault(label.split(" [")[0], []).append(label)
    return {
        label: {"color": colors[algos.index(algo) % len(colors)], "linestyle": styles[index % len(styles)]}
        for algo, algo_labels in variants.items()
        for index, label in enumerate(algo_labels)
    }


def _plot_band(axis: Any, x: np.ndarray, values: np.ndarray, label: str, style: dict[str, Any], log: bool) -> None:
    """Mean and 95% band over seeds; for a log axis, in log10 space (a geometric mean)."""
    data = np.log10(np.maximum(values, 1e-12)) if log else values
    mean, lower, upper = mean_band(data)
    if log:
        mean, lower, upper = 10**mean, 10**lower, 10**upper
    axis.plot(x, mean, label=f"{label} (n={len(values)})", **style)
    if len(values) > 1:
        axis.fill_between(x, lower, upper, color=style["color"], alpha=0.2, linewidth=0)


def _curve(run: RunResult) -> tuple[np.ndarray, np.ndarray] | None:
    if "timesteps" not in run.evaluations or len(run.evaluations["timesteps"]) == 0:
        return None
    return run.evaluations["timesteps"], run.evaluations["mean_return"]


def _diagnostic_curve(run: RunResult, name: str, source: str, window: int) -> tuple[np.ndarray, np.ndarray] | None:
    key = diagnostic_key(run, name, source)
    series = run.series(key) if key else None
    if series is None:
        return None
    x, values = series
    # A zero (the last update of a linearly annealed learning rate does not move the policy) has no logarithm.
    positive = values > 0
    if not positive.any():
        return None
    return x[positive], 10 ** smooth(np.log10(values[positive]), window)


def _plot_groups(
    axis: Any,
    groups: Sequence[tuple[str, Sequence[RunResult]]],
    curve: Callable[[RunResult], tuple[np.ndarray, np.ndarray] | None],
    styles: dict[str, dict[str, Any]],
    log: bool,
) -> bool:
    plotted = False
    for label, runs in groups:
        curves = [c for c in (curve(run) for run in runs) if c is not None and len(c[0]) > 0]
        if not curves:
            continue
        x, values = align(curves)
        _plot_band(axis, x, values, label, styles[label], log)
        plotted = True
    return plotted


def _finish_axis(axis: Any, title: str, ylabel: str, log: bool, legend: bool = True, plain_ticks: bool = False) -> None:
    from matplotlib.ticker import EngFormatter

    axis.set_title(title)
    axis.xaxis.set_major_formatter(EngFormatter(sep=""))
    axis.set_xlabel("timesteps")
    axis.set_ylabel(ylabel)
    if log:
        axis.set_yscale("log")
        if plain_ticks:
            from matplotlib.ticker import FuncFormatter

            formatter = FuncFormatter(lambda value, _: f"{value:g}")
            axis.yaxis.set_major_formatter(formatter)
            axis.yaxis.set_minor_formatter(formatter)
            axis.set_ylim(bottom=1.0)  # a ratio of 1: the policy did not move
    axis.grid(True, alpha=0.3, which="both" if log else "major")
    if legend:
        axis.legend(fontsize="small")


def plot_env(
    env: str, groups: dict[tuple[str, str, str], Group], out: Path, source: str, window: int, seeds_note: str
) -> list[Path]:
    """
    The learning-curve and diagnostics figures of one env.

    :param env: the environment id
    :param groups: every group (those of other envs are ignored)
    :param out: the output folder
    :param source: see :func:`diagnostic_key`
    :param window: smoothing window of the diagnostics, in updates
    :param seeds_note: text on seeds and budget for the titles
    :return: the files written
    """
    pyplot = _pyplot()
    env_groups = [(group.first.label, group.runs) for (group_env, _, _), group in groups.items() if group_env == env]
    styles = _style([label for label, _ in env_groups])
    written = []

    figure, axis = pyplot.subplots(figsize=(7.5, 4.8))
    if _plot_groups(axis, env_groups, _curve, styles, log=False):
        _finish_axis(axis, f"{env}: evaluation return, mean and 95% CI over seeds\n{seeds_note}", "return", log=False)
        path = out / f"curves_{safe_name(env)}.png"
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        written.append(path)
    pyplot.close(figure)

    figure, axes = pyplot.subplots(1, len(DIAGNOSTIC_KEYS), figsize=(6 * len(DIAGNOSTIC_KEYS), 4.6))
    any_plotted = False
    for axis, (name, ylabel) in zip(axes, DIAGNOSTIC_KEYS):
        plotted = _plot_groups(
            axis, env_groups, lambda run, name=name: _diagnostic_curve(run, name, source, window), styles, log=True
        )
        any_plotted |= plotted
        _finish_axis(axis, f"{env}: {ylabel}", ylabel + " (log)", log=True, legend=plotted, plain_ticks=name != "kl")
    if any_plotted:
        figure.suptitle(f"Diagnostics after each update, geometric mean and 95% CI over seeds ({seeds_note})")
        figure.tight_layout()
        path = out / f"diagnostics_{safe_name(env)}.png"
        figure.savefig(path, dpi=120)
        written.append(path)
    pyplot.close(figure)
    return written


def plot_epochs(env: str, labels: dict[str, dict[int, list[RunResult]]], out: Path, source: str, window: int) -> Path:
    """
    The n_epochs comparison of one env: return, KL and anchor ratio, one line per (label, n_epochs).

    :param env: the environment id
    :param labels: label -> n_epochs -> runs (see :func:`epochs_groups`)
    :param out: the output folder
    :param source: see :func:`diagnostic_key`
    :param window: smoothing window of the diagnostics, in updates
    :return: the file written
    """
    pyplot = _pyplot()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    groups, styles = [], {}
    for index, (label, by_epochs) in enumerate(labels.items()):
        for rank, (n_epochs, runs) in enumerate(by_epochs.items()):
            name = f"{label}, {n_epochs} epochs"
            groups.append((name, runs))
            styles[name] = {"color": colors[index % len(colors)], "linestyle": ["-", "--", ":", "-."][rank % 4]}
    figure, axes = pyplot.subplots(1, 3, figsize=(18, 4.8))
    _plot_groups(axes[0], groups, _curve, styles, log=False)
    _finish_axis(axes[0], f"{env}: evaluation return (mean, 95% CI)", "return", log=False)
    for axis, (name, ylabel) in zip(axes[1:], DIAGNOSTIC_KEYS[:2]):
        plotted = _plot_groups(
            axis, groups, lambda run, name=name: _diagnostic_curve(run, name, source, window), styles, log=True
        )
        _finish_axis(axis, f"{env}: {ylabel}", ylabel + " (log)", log=True, legend=plotted, plain_ticks=name != "kl")
    figure.suptitle(f"{env}: robustness to the number of update epochs")
    figure.tight_layout()
    path = out / f"epochs_{safe_name(env)}.png"
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


# ---------------------------------------------------------------------- #
# The report
# ---------------------------------------------------------------------- #
def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def make_report(
    results: Path,
    out: Path | None = None,
    final_window: int = 1,
    smooth_window: int = 5,
    source: str = "auto",
) -> dict[str, Any]:
    """
    Write the tables and plots of a results folder.

    :param results: the results folder (the grid runner's ``--results``)
    :param out: the output folder (default: ``<results>/report``)
    :param final_window: evaluations averaged for a run's final return (1: the last one)
    :param smooth_window: moving-average window of the diagnostics plots, in updates
    :param source: which diagnostics to plot: ``diag`` (measured alike for every algorithm
        after each update), ``train`` (each algorithm's own) or ``auto`` (``diag`` where logged)
    :return: ``summary``, ``epochs`` and ``diagnostics`` rows and the ``files`` written
    :raises FileNotFoundError: when the folder holds no finished run
    """
    if source not in ("auto", "diag", "train"):
        raise ValueError(f"source must be auto, diag or train, got {source!r}")
    if final_window < 1:
        raise ValueError(f"final_window must be at least 1, got {final_window}")
    runs, unfinished = load_results(results)
    if not runs:
        raise FileNotFoundError(f"No finished run (no {DONE_FILE}) under {results}.")
    out = out if out is not None else results / "report"
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    envs = list(dict.fromkeys(run.env for run in runs))
    files: list[Path] = []

    summary = summary_rows(groups, final_window)
    write_csv(out / "summary.csv", list(summary[0]), [list(row.values()) for row in summary])
    files.append(out / "summary.csv")
    run_header = ["env", "algo", "variant", "seed", "n_epochs", "budget_timesteps", "timesteps", "final_return"]
    run_header += ["steps_per_s", "steps_per_s_median_update", "wall_time_s", "folder"]
    write_csv(
        out / "runs.csv",
        run_header,
        [
            [
                run.env,
                run.algo,
                run.variant,
                run.seed,
                run.n_epochs,
                run.budget,
                run.done.get("timesteps"),
                run.final_return(final_window),
                run.done.get("steps_per_s"),
                run.done.get("steps_per_s_median_update"),
                run.done.get("wall_time_s"),
                str(run.folder.relative_to(results)),
            ]
            for run in runs
        ],
    )
    files.append(out / "runs.csv")
    diagnostics = diagnostics_rows(groups, source)
    write_csv(out / "diagnostics.csv", list(diagnostics[0]), [list(row.values()) for row in diagnostics])
    files.append(out / "diagnostics.csv")
    epochs_table = epochs_groups(runs)
    epochs = epochs_rows(epochs_table, final_window)
    if epochs:
        write_csv(out / "epochs.csv", list(epochs[0]), [list(row.values()) for row in epochs])
        files.append(out / "epochs.csv")

    final_text = "the last evaluation" if final_window == 1 else f"the mean of the last {final_window} evaluations"
    lines = [
        f"# Benchmark results: `{results}`",
        "",
        f"Final return: {final_text} of each run (rl-zoo3's EvalCallback: deterministic actions except on Atari, "
        "the mean over the episodes of one evaluation), then the mean ± sample standard deviation over seeds. "
        "Budget: training timesteps per run (whole rollouts are trained, so a run may end slightly past it).",
        "",
    ]
    figures_by_env: dict[str, list[Path]] = {}
    for env in envs:
        rows = [row for row in summary if row["env"] == env]
        seeds_note = "; ".join(
            sorted(
                {
                    f"{row['n_seeds']} seeds, {_budget_text(groups[(env, row['algo'], row['variant'])].budgets())} steps"
                    for row in rows
                }
            )
        )
        lines += [f"## {env}", ""]
        lines += _markdown_table(
            ["algorithm", "final return", "seeds", "budget", "eval episodes", "per-seed returns", "steps/s"],
            [
                [
                    f"`{row['label']}`",
                    _pm(row["final_return_mean"], row["final_return_std"]),
                    f"{row['n_seeds']} ({row['seeds']})",
                    _budget_text(groups[(env, row["algo"], row["variant"])].budgets()),
                    str(row["eval_episodes"]),
                    row["final_returns"],
                    format_number(row["steps_per_s"]),
                ]
                for row in rows
            ],
        )
        figures_by_env[env] = plot_env(env, groups, out, source, smooth_window, seeds_note)
        files += figures_by_env[env]
        lines += [""] + [f"![{path.stem}]({path.name})" for path in figures_by_env[env]] + [""]

    lines += [
        "## Diagnostics over training",
        "",
        f"Source: `{source}` (`diag/*`: measured after every update on the whole rollout, alike for every "
        "algorithm; `train/*`: each algorithm's own, maxima over the epochs' minibatches). Per run, the median "
        "(or max) over updates; then the mean over seeds.",
        "",
    ]
    lines += _markdown_table(
        ["env", "algorithm", "median KL", "median anchor ratio max", "largest anchor ratio", "median executed ratio max"],
        [
            [
                row["env"],
                f"`{row['label']}`",
                format_number(row["kl_median"]),
                format_number(row["anchor_ratio_max_median"]),
                format_number(row["anchor_ratio_max_max"]),
                format_number(row["ratio_max_median"]),
            ]
            for row in diagnostics
        ],
    )
    if epochs:
        lines += [
            "",
            "## Update epochs",
            "",
            "Final return by `n_epochs`: runs whose variants differ only in `n_epochs` are compared (a label shows "
            "the other overrides); retention: the ratio of the mean to the smallest `n_epochs`'s mean.",
            "",
        ]
        lines += _markdown_table(
            ["env", "algorithm", "n_epochs", "final return", "seeds", "budget", "retention"],
            [
                [
                    row["env"],
                    f"`{row['label']}`",
                    str(row["n_epochs"]),
                    _pm(row["final_return_mean"], row["final_return_std"]),
                    f"{row['n_seeds']} ({row['seeds']})",
                    _budget_text(sorted({int(b) for b in row["budget_timesteps"].split(" / ")})),
                    f"{100 * row['retention']:.0f}%" if np.isfinite(row["retention"]) else "n/a",
                ]
                for row in epochs
            ],
        )
        for env, labels in epochs_table.items():
            path = plot_epochs(env, labels, out, source, smooth_window)
            files.append(path)
            lines += ["", f"![{path.stem}]({path.name})"]
    if unfinished:
        lines += ["", "## Unfinished runs (not in the tables)", ""]
        lines += [f"- `{path.relative_to(results)}`" for path in unfinished]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    files.insert(0, out / "summary.md")
    return {"summary": summary, "epochs": epochs, "diagnostics": diagnostics, "files": files, "unfinished": unfinished}
