"""
The report step: a results folder written by the grid runner -> tables and plots.

A run's score is the mean of its last ``final_window`` deterministic evaluations
(rl-zoo3's ``EvalCallback``), and the fraction of its own peak that it keeps is that score
divided by its best window of ``final_window`` consecutive evaluations. Per env and (algorithm,
variant), the report gives, with the metrics of `rliable <https://github.com/google-research/rliable>`_
(Agarwal et al., 2021), the interquartile mean (IQM) of both over the seeds with a 95%
stratified-bootstrap interval, and the probability of improvement over PPO-clip (SB3's ``ppo``
with the same ``n_epochs``, the same variant where there is one) with its interval and a verdict
that goes no further than it (none below ``MIN_SEEDS_FOR_VERDICT`` runs a side); and the code
commits that made the row's runs. A run whose training diverged (``diverged.json``: a non-finite
loss, gradient or rollout stopped it) has no score: each row counts its diverged runs, which are
left out of the IQM, the peak kept, the bands and the diagnostics, and listed; the curves draw each
one's evaluations, dashed, up to where it stopped. The probability of
improvement, which needs only an order, counts them: a diverged run ranks below every finished run
and ties with the other diverged ones (our convention: a run that ended without a policy did
not hold one).
Outputs, in ``<results>/report/`` unless told otherwise:

- ``summary.md``: those tables, the diagnostics table and the figures;
- ``summary.csv``: one row per (env, algorithm, variant); ``runs.csv``: one row per finished run;
- ``diagnostics.csv``: per (env, algorithm, variant) and quantity (KL, largest anchor ratio,
  policy std), the median over the seeds' updates in each quarter of the training budget;
- ``curves_<env>.png``: evaluation return over training steps (IQM and 95% bootstrap band over
  seeds, and each diverged run until it stopped) and over wall time (each finished run);
- ``diagnostics_<env>.png``: KL, largest anchor ratio and policy std over training (IQM and band).

One spread convention throughout: every interval and every band is a 95% bootstrap interval
of the IQM over seeds.
"""

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from sb3_apo.benchmark.files import (
    DIAGNOSTICS_FILE,
    DIVERGED_FILE,
    DONE_FILE,
    EVALUATIONS_CSV,
    SETTINGS_FILE,
    read_json,
    safe_name,
)
from sb3_apo.benchmark.grid import BASE_VARIANT
from sb3_apo.zoo.registry import ZOO_ALGORITHMS

#: The reference of the probability of improvement: SB3's PPO with clipping.
REFERENCE = "ppo"
#: Algorithms in the order tables and legends list them (the package's, then PPO); others follow alphabetically.
ALGO_ORDER = (*ZOO_ALGORITHMS, REFERENCE)
#: The diagnostics of the quarter table and plots: (name, key suffix or column, label).
DIAGNOSTICS = (("KL", "kl", "KL(pi_old || pi) per update"), ("anchor ratio max", "anchor_ratio_max", "largest anchor ratio"))
STD = ("policy std", "train/std", "policy std")
QUARTERS = ("Q1", "Q2", "Q3", "Q4")
#: The bootstrap enumerates every resample when no sample has more runs than this, and draws at
#: least ``MIN_RESAMPLES`` otherwise: with few seeds its distribution is a staircase, and too few
#: draws can put an interval's endpoint on the wrong step.
EXACT_MAX_RUNS = 5
MIN_RESAMPLES = 50_000
#: A verdict compares two rows only when each has at least this many scored runs; with fewer, the
#: interval of P is shown and the verdict says that the seeds are too few.
MIN_SEEDS_FOR_VERDICT = 5


def format_number(value: Any) -> str:
    """
    A compact number for tables: no decimals from 100 up, two from 1, three significant digits below.

    :param value: the number (``None``/NaN: ``n/a``)
    """
    if value is None or not np.isfinite(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def run_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run that ``done.json`` and ``diverged.json`` both record, as the run tables name them."""
    params = {**(record.get("variant_params") or {}), **(record.get("hyperparams") or {})}
    budget = (record.get("settings") or {}).get("n_timesteps") or params.get("n_timesteps") or record["timesteps"]
    return {
        "env": record["env"],
        "algo": record["algo"],
        "variant": record["variant"],
        "seed": int(record["seed"]),
        "n_epochs": int(float(params["n_epochs"])) if "n_epochs" in params else None,
        "budget_timesteps": int(float(budget)),
        "timesteps": record.get("timesteps"),
        "eval_episodes": record.get("eval_episodes"),
    }


def code_fields(record: dict[str, Any]) -> dict[str, Any]:
    """
    The commit (7 characters, ``unknown`` when not recorded) and whether it had uncommitted changes. A run
    whose launches (``code_segments``: the first, then each resume) ran several commits gets them all, joined
    by ``+`` in the order they ran, and counts as having had uncommitted changes if any launch had.
    """
    codes = [code for code in [*(record.get("code_segments") or []), record.get("code")] if code]
    commits = list(dict.fromkeys((code.get("commit") or "unknown")[:7] for code in codes)) or ["unknown"]
    return {"code_commit": "+".join(commits), "code_dirty": any(bool(code.get("dirty")) for code in codes)}


def order_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """
    Runs sorted by env, algorithm (the package's, then PPO, then others), variant (``base`` first) and seed,
    with their ``label`` (``algo`` or ``algo [variant]``).

    :param runs: one row per run, with ``env``, ``algo``, ``variant`` and ``seed``
    """
    if not len(runs):
        return runs.assign(label=pd.Series(dtype=str))
    order = {algo: index for index, algo in enumerate(ALGO_ORDER)}
    runs = runs.assign(
        _algo=runs["algo"].map(lambda algo: (order.get(algo, len(order)), algo)),
        _variant=runs["variant"].map(lambda variant: (variant != BASE_VARIANT, variant)),
    )
    runs = runs.sort_values(["env", "_algo", "_variant", "seed"]).drop(columns=["_algo", "_variant"])
    runs = runs.assign(label=[a if v == BASE_VARIANT else f"{a} [{v}]" for a, v in zip(runs["algo"], runs["variant"])])
    return runs.reset_index(drop=True)


def _run_files(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run folder's ``evaluations.csv`` and ``diagnostics.csv`` (empty where the run wrote none)."""

    def read(name: str) -> pd.DataFrame:
        return pd.read_csv(folder / name) if (folder / name).is_file() else pd.DataFrame()

    return read(EVALUATIONS_CSV), read(DIAGNOSTICS_FILE)


def load_runs(
    results: Path, final_window: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame], list[Path], pd.DataFrame]:
    """
    Every finished and every diverged run under a results folder.

    :param results: the results folder
    :param final_window: evaluations averaged for a run's score
    :return: one row per finished run (sorted by env, algorithm, variant, seed), every evaluation of the finished
        and the diverged runs (with the run's ``folder``), each finished run's ``diagnostics.csv`` by folder, the
        unfinished run folders, and one row per diverged run (``diverged.json``: no score; ``timesteps`` reached
        and the launcher's ``message``)
    """
    rows, logs, curves = [], {}, []
    for done_path in sorted(results.rglob(DONE_FILE)):
        folder, done = done_path.parent, read_json(done_path)
        name = str(folder.relative_to(results))
        evaluations, logs[name] = _run_files(folder)
        score, peak = final_and_peak(evaluations["mean_return"] if len(evaluations) else pd.Series(), final_window)
        curves.append(evaluations.assign(folder=name, wall_s=wall_time_at(evaluations, logs[name])))
        rows.append(
            {
                **run_fields(done),
                "score": score,
                "peak": peak,
                "peak_kept": score / peak if peak > 0 else np.nan,
                **code_fields(done),
                "steps_per_s": done.get("steps_per_s"),
                "steps_per_s_median_update": done.get("steps_per_s_median_update"),
                "wall_time_s": done.get("wall_time_s"),
                "folder": name,
            }
        )
    diverged = []
    for path in sorted(results.rglob(DIVERGED_FILE)):
        record, folder = read_json(path), path.parent
        evaluations, log = _run_files(folder)  # the evaluations until it stopped, for the curves
        curves.append(evaluations.assign(folder=str(folder.relative_to(results)), wall_s=wall_time_at(evaluations, log)))
        diverged.append(
            {
                **run_fields(record),
                **code_fields(record),
                "wall_time_s": record.get("wall_time_s"),
                "folder": str(path.parent.relative_to(results)),
                "message": record.get("message") or "",
            }
        )
    final = (DONE_FILE, DIVERGED_FILE)
    unfinished = sorted(
        path.parent for path in results.rglob(SETTINGS_FILE) if not any((path.parent / name).is_file() for name in final)
    )
    evaluations = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return order_runs(pd.DataFrame(rows)), evaluations, logs, unfinished, order_runs(pd.DataFrame(diverged))


def window_means(returns: pd.Series, window: int) -> pd.Series:
    """
    The mean of each ``window`` consecutive evaluations, at the last of them (of all of them when the run has
    fewer); NaN before the first full window.

    :param returns: the run's evaluation returns, in order
    :param window: evaluations per window
    """
    return returns.rolling(window, min_periods=min(window, len(returns))).mean()


def final_and_peak(returns: pd.Series, window: int) -> tuple[float, float]:
    """
    A run's score, the mean of its last ``window`` evaluations, and its peak, the best mean of ``window``
    consecutive evaluations (:func:`window_means`); NaN for a run without evaluations.

    :param returns: the run's evaluation returns, in order
    :param window: evaluations per window
    """
    if not len(returns):
        return np.nan, np.nan
    return float(returns.tail(window).mean()), float(window_means(returns, window).max())


def wall_time_at(evaluations: pd.DataFrame, log: pd.DataFrame) -> np.ndarray:
    """
    The wall time (s) of each evaluation, read off the run's log of updates (``diag/wall_s``
    against ``time/total_timesteps``, interpolated); NaN where the log has no wall time.
    """
    columns = ("time/total_timesteps", "diag/wall_s")
    if not len(evaluations) or not set(columns) <= set(log.columns):
        return np.full(len(evaluations), np.nan)
    clock = log[list(columns)].dropna()
    return np.interp(evaluations["timesteps"], clock[columns[0]], clock[columns[1]], left=np.nan, right=np.nan)


def interquartile_mean(scores: np.ndarray) -> np.ndarray:
    """rliable's ``aggregate_iqm``: the 25% trimmed mean of the runs' scores (along the last axis)."""
    return stats.trim_mean(scores, proportiontocut=0.25, axis=-1)


def probability_of_improvement(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """
    rliable's ``probability_of_improvement`` for one task: ``P(X > Y) + P(X = Y) / 2``, the Mann-Whitney
    U / (n m), along the last axis.
    """
    u = stats.mannwhitneyu(scores, reference, alternative="greater", axis=-1).statistic
    return u / (scores.shape[-1] * reference.shape[-1])


def resamples(sizes: Sequence[int], reps: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """
    The stratified bootstrap's resamples of several samples (each resampled on its own, as rliable's
    ``StratifiedIndependentBootstrap`` does for one task): every one of them, as multisets weighted by
    their multinomial probability, when no sample has more than ``EXACT_MAX_RUNS`` runs; otherwise
    ``max(reps, MIN_RESAMPLES)`` random draws of equal weight.

    :param sizes: the number of runs of each sample
    :param reps: the draws asked for when the resamples are not enumerated
    :param seed: the seed of the draws
    :return: per sample, the run indices of each resample (``(n_resamples, size)``), and the resamples' weights
    """
    if max(sizes) <= EXACT_MAX_RUNS:
        multisets, weights = [], []
        for size in sizes:
            indices = np.array(list(itertools.combinations_with_replacement(range(size), size)))
            counts = np.stack([np.bincount(row, minlength=size) for row in indices])
            multisets.append(indices)
            weights.append(stats.multinomial.pmf(counts, size, np.full(size, 1.0 / size)))
        grid = [axis.ravel() for axis in np.meshgrid(*(np.arange(len(m)) for m in multisets), indexing="ij")]
        joint = np.prod([w[g] for w, g in zip(weights, grid)], axis=0)
        return [m[g] for m, g in zip(multisets, grid)], joint / joint.sum()
    rng, draws = np.random.default_rng(seed), max(reps, MIN_RESAMPLES)
    return [rng.integers(0, size, (draws, size)) for size in sizes], np.full(draws, 1.0 / draws)


def bootstrap_interval(samples: list[np.ndarray], statistic: Any, reps: int) -> tuple[float, float, float, str]:
    """
    A statistic of one task's runs and its 95% percentile interval over the stratified bootstrap
    (:func:`resamples`). The endpoints are the 2.5% and 97.5% quantiles of the (weighted) bootstrap
    distribution by its inverse CDF, so each is a value the statistic takes on some resample.
    rliable itself is not a dependency: its 1.2.0 release pins ``arch<8``, whose 7.x cannot be
    imported with pandas 3 (and then breaks rl-zoo3's plot commands, which import rliable when it
    is installed); the metrics here are its definitions.

    :param samples: the runs' scores, one 1-d array per algorithm
    :param statistic: ``statistic(*arrays)`` of ``(n_resamples, n_runs)`` arrays, vectorised along axis 1
    :param reps: random draws when the resamples are not enumerated
    :return: the statistic, the interval's endpoints (NaN when a sample has fewer than 2 runs) and how the
        resamples were made (``exact``, ``<n> draws`` or ``none``)
    """
    point = float(statistic(*(sample[None, :] for sample in samples))[0])
    if min(len(sample) for sample in samples) < 2:
        return point, np.nan, np.nan, "none"
    indices, weights = resamples([len(sample) for sample in samples], reps)
    values = statistic(*(sample[index] for sample, index in zip(samples, indices)))
    low, high = np.quantile(values, [0.025, 0.975], weights=weights, method="inverted_cdf")
    return point, float(low), float(high), "exact" if max(map(len, samples)) <= EXACT_MAX_RUNS else f"{len(weights):,} draws"


#: The statistic, interval and method of a row without runs.
NO_INTERVAL = (np.nan, np.nan, np.nan, "none")


def verdict(low: float, high: float, reference: str, sizes: tuple[int, int] | None = None) -> str:
    """
    What a probability of improvement's interval allows one to say: above or below the reference only
    when the whole interval is on one side of 0.5, and nothing when either side has fewer than
    :data:`MIN_SEEDS_FOR_VERDICT` runs.

    :param low: the interval's lower end
    :param high: the interval's upper end
    :param reference: the reference row's label
    :param sizes: the scored runs of the row and of the reference (``None``: not checked)
    """
    if not np.isfinite(low):
        return "n/a"
    if sizes is not None and min(sizes) < MIN_SEEDS_FOR_VERDICT:
        return f"too few seeds ({sizes[0]} and {sizes[1]}; {MIN_SEEDS_FOR_VERDICT} a side needed)"
    return f"above `{reference}`" if low > 0.5 else f"below `{reference}`" if high < 0.5 else "not distinguishable"


def code_of(group: pd.DataFrame) -> str:
    """
    The commits that made a row's runs, each with its seeds (``*``: made with uncommitted changes), and
    ``POOLED`` when there are several.
    """
    parts = []
    for commit, runs in group.groupby("code_commit", sort=False):
        seeds = " ".join(f"{seed}*" if dirty else str(seed) for seed, dirty in zip(runs["seed"], runs["code_dirty"]))
        parts.append(f"{commit if commit == 'unknown' else f'`{commit}`'} ({seeds})")
    return ("POOLED: " if len(parts) > 1 else "") + ", ".join(parts)


def format_timesteps(value: Any) -> str:
    """
    A timestep count in a few characters: ``3.56M``, ``512k``, ``900`` (``?`` when unknown).

    :param value: the count
    """
    if value is None or not np.isfinite(value):
        return "?"
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return str(int(value))


def summarise(runs: pd.DataFrame, reps: int, diverged: pd.DataFrame | None = None) -> pd.DataFrame:
    """
    One row per (env, algorithm, variant): seeds, budget, IQM of the scores with its interval, mean and
    std, and the probability of improvement over PPO-clip with its interval. Diverged runs have no score:
    they are counted (``n_diverged``, with the timesteps each reached in ``diverged_at``) and left out of
    the IQM, mean, std and peak kept (a row whose runs all diverged has none of them); the probability
    of improvement and its verdict rank them below every finished run, ties among them counting half.

    :param runs: the finished runs (see :func:`load_runs`)
    :param reps: bootstrap replications
    :param diverged: the diverged runs (see :func:`load_runs`)
    """

    def column(scores: pd.Series) -> np.ndarray:
        return scores.dropna().to_numpy(float)

    everything = runs.assign(_diverged=False)
    if diverged is not None and len(diverged):
        everything = order_runs(pd.concat([everything, diverged.assign(_diverged=True)], ignore_index=True))

    def ranked(row_runs: pd.DataFrame) -> np.ndarray:
        """The scores of a row's finished runs, and -inf for each diverged one: the order P(X > Y) counts."""
        diverged_run, score = row_runs["_diverged"].to_numpy(bool), row_runs["score"].to_numpy(float)
        return np.where(diverged_run, -np.inf, score)[diverged_run | ~np.isnan(score)]

    rows = []
    for (env, algo, variant), whole in everything.groupby(["env", "algo", "variant"], sort=False):
        group, lost = whole[~whole["_diverged"]], whole[whole["_diverged"]]
        scores, kept = column(group["score"]), column(group["peak_kept"])
        iqm = bootstrap_interval([scores], interquartile_mean, reps) if len(scores) else NO_INTERVAL
        iqm_kept = bootstrap_interval([kept], interquartile_mean, reps) if len(kept) else NO_INTERVAL
        # the PPO runs of the same env and n_epochs, the same variant first
        references = everything[(everything["env"] == env) & (everything["algo"] == REFERENCE)]
        references = references[references["n_epochs"] == whole["n_epochs"].iloc[0]]
        if len(references):
            same = references["variant"] == variant
            reference = references[same] if same.any() else references[references["variant"] == references["variant"].iloc[0]]
        else:
            reference = references
        poi, ordered, ordered_reference = NO_INTERVAL, ranked(whole), ranked(reference)
        if algo != REFERENCE and len(ordered) and len(ordered_reference):
            poi = bootstrap_interval([ordered, ordered_reference], probability_of_improvement, reps)
        reference_label = "" if algo == REFERENCE or not len(reference) else reference["label"].iloc[0]
        rows.append(
            {
                "env": env,
                "algo": algo,
                "variant": variant,
                "label": whole["label"].iloc[0],
                "n_epochs": whole["n_epochs"].iloc[0],
                "n_seeds": len(group),
                "seeds": " ".join(map(str, group["seed"])),
                "n_diverged": len(lost),
                "diverged_at": " ".join(str(int(t)) if pd.notna(t) else "?" for t in lost["timesteps"]),
                "budget_timesteps": " / ".join(map(str, sorted(set(whole["budget_timesteps"])))),
                "eval_episodes": whole["eval_episodes"].iloc[0],
                "iqm": iqm[0],
                "iqm_low": iqm[1],
                "iqm_high": iqm[2],
                "mean": group["score"].mean(),
                "std": group["score"].std(),
                "p_improvement": poi[0],
                "p_improvement_low": poi[1],
                "p_improvement_high": poi[2],
                "reference": reference_label,
                "verdict": (
                    verdict(poi[1], poi[2], reference_label, (len(ordered), len(ordered_reference))) if reference_label else ""
                ),
                "peak_kept_iqm": iqm_kept[0],
                "peak_kept_low": iqm_kept[1],
                "peak_kept_high": iqm_kept[2],
                "bootstrap": iqm[3] if poi[3] in ("none", iqm[3]) else f"IQM {iqm[3]}, P {poi[3]}",
                "code": code_of(whole),
                "dirty_seeds": " ".join(str(seed) for seed in whole.loc[whole["code_dirty"].astype(bool), "seed"]),
                "scores": " ".join(f"{value:.6g}" for value in group["score"]),
                "steps_per_s": group["steps_per_s_median_update"].fillna(group["steps_per_s"]).mean(),
            }
        )
    return pd.DataFrame(rows)


def diagnostic_column(log: pd.DataFrame, suffix: str, source: str) -> str | None:
    """
    The column of ``diagnostics.csv`` holding a diagnostic: ``diag/<suffix>`` (measured alike for every
    algorithm) or ``train/<suffix>`` (the algorithm's own), as ``source`` asks.

    :param log: a run's ``diagnostics.csv``
    :param suffix: ``kl``, ``anchor_ratio_max`` ...
    :param source: ``diag``, ``train`` or ``auto`` (``diag`` where logged, else ``train``)
    """
    candidates = {"diag": ["diag/"], "train": ["train/"], "auto": ["diag/", "train/"]}[source]
    return next((p + suffix for p in candidates if p + suffix in log and log[p + suffix].notna().any()), None)


def update_timesteps(log: pd.DataFrame) -> pd.Series:
    """
    The timestep of each row of a run's ``diagnostics.csv``: ``diag/timesteps`` (when the diagnostics were
    measured) where logged, else ``time/total_timesteps``.
    """
    timesteps = log["time/total_timesteps"]
    return log["diag/timesteps"].fillna(timesteps) if "diag/timesteps" in log else timesteps


def diagnostics_long(runs: pd.DataFrame, logs: dict[str, pd.DataFrame], source: str) -> pd.DataFrame:
    """
    Every logged value of the diagnostics, one row per (run, update, quantity), with its timestep
    (``diag/timesteps``, else ``time/total_timesteps``) and its quarter of the run's budget.

    :param runs: see :func:`load_runs`
    :param logs: the runs' ``diagnostics.csv``
    :param source: see :func:`diagnostic_column`
    """
    frames = []
    for run in runs.itertuples():
        log = logs[run.folder]
        if "time/total_timesteps" not in log:
            continue
        x = update_timesteps(log)
        for quantity, suffix, _ in DIAGNOSTICS:
            column = diagnostic_column(log, suffix, source)
            if column is not None:
                frames.append(pd.DataFrame({"timesteps": x, "value": log[column], "quantity": quantity, "folder": run.folder}))
        if STD[1] in log:
            frames.append(pd.DataFrame({"timesteps": x, "value": log[STD[1]], "quantity": STD[0], "folder": run.folder}))
    if not frames:
        columns = ["timesteps", "value", "quantity", "folder", "env", "algo", "variant", "label", "seed", "budget_timesteps"]
        return pd.DataFrame(columns=[*columns, "quarter"])
    values = pd.concat(frames, ignore_index=True).dropna(subset=["timesteps", "value"])
    values = values.merge(runs[["folder", "env", "algo", "variant", "label", "seed", "budget_timesteps"]], on="folder")
    fraction = values["timesteps"] / values["budget_timesteps"]
    values["quarter"] = pd.cut(fraction, [-np.inf, 0.25, 0.5, 0.75, np.inf], labels=QUARTERS)
    return values


def quarter_medians(values: pd.DataFrame) -> pd.DataFrame:
    """
    Per (env, algorithm, variant) and quantity, the median over the seeds' updates in each quarter.

    :param values: see :func:`diagnostics_long`
    """
    keys = ["env", "algo", "variant", "label", "quantity"]
    table = values.groupby([*keys, "quarter"], sort=False, observed=True)["value"].median().unstack("quarter")
    return table.reindex(columns=list(QUARTERS)).reset_index()


#: The diagnostics plots average each run's values over bins of this fraction of the budget (runs' updates
#: need not fall on the same steps).
DIAGNOSTICS_BIN = 0.01


def iqm_bands(data: pd.DataFrame, x: str, y: str, reps: int) -> pd.DataFrame:
    """
    Per label and ``x``, the IQM of ``y`` over the runs and its 95% bootstrap interval, as the tables compute them.

    :param data: one row per run and ``x``, with ``label``, ``x`` and ``y``
    :param x: the column of the steps
    :param y: the column of the values
    :param reps: see :func:`bootstrap_interval`
    """
    rows = [
        (label, at, *bootstrap_interval([group[y].to_numpy(float)], interquartile_mean, reps)[:3])
        for (label, at), group in data.dropna(subset=[y]).groupby(["label", x], sort=False)
    ]
    return pd.DataFrame(rows, columns=["label", x, "iqm", "low", "high"])


def _plot_bands(axis: Any, bands: pd.DataFrame, x: str, palette: dict[str, Any]) -> None:
    for label, line in bands.groupby("label", sort=False):
        axis.plot(line[x], line["iqm"], color=palette[label], label=label)
        axis.fill_between(line[x], line["low"], line["high"], color=palette[label], alpha=0.2, linewidth=0)
    axis.legend(fontsize="small")


def _save(figure: Any, path: Path) -> Path:
    from matplotlib import pyplot

    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def env_curves(
    env: str, runs: pd.DataFrame, diverged: pd.DataFrame, evaluations: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """
    The evaluations of one env's finished runs and those of its diverged runs (until they stopped), each with
    the run's ``label``.

    :param env: the environment id
    :param runs: the finished runs (see :func:`load_runs`)
    :param diverged: the diverged runs (see :func:`load_runs`)
    :param evaluations: every evaluation, with the run's ``folder`` (see :func:`load_runs`)
    """
    columns = ["folder", "label"]
    finished = runs.loc[runs["env"] == env, columns]
    lost = diverged.loc[diverged["env"] == env, columns] if len(diverged) else pd.DataFrame(columns=columns)
    if not len(evaluations):
        return evaluations, evaluations
    return evaluations.merge(finished, on="folder"), evaluations.merge(lost, on="folder")


def _plot_diverged(axis: Any, curves: pd.DataFrame, palette: dict[str, Any]) -> None:
    """Each diverged run's evaluations, dashed, with a cross where its training stopped."""
    for label, row_curves in curves.groupby("label", sort=False):
        for index, (_, run) in enumerate(row_curves.groupby("folder", sort=False)):
            name = f"{label}: diverged (each run, x where it stopped)" if index == 0 else None
            axis.plot(run["timesteps"], run["mean_return"], color=palette[label], linestyle="--", linewidth=0.8, label=name)
            axis.plot(run["timesteps"].iloc[-1], run["mean_return"].iloc[-1], marker="x", color=palette[label])


def _figures(
    env: str,
    runs: pd.DataFrame,
    diverged: pd.DataFrame,
    evaluations: pd.DataFrame,
    values: pd.DataFrame,
    out: Path,
    smooth: int,
    reps: int,
) -> list[Path]:
    """The learning curves and the diagnostics over training of one env."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns
    from matplotlib import pyplot

    curves, diverged_curves = env_curves(env, runs, diverged, evaluations)
    labels = list(dict.fromkeys([*runs.loc[runs["env"] == env, "label"], *diverged_curves.get("label", [])]))
    palette = dict(zip(labels, sns.color_palette("colorblind", len(labels))))
    written = []
    if len(curves):
        # against steps (IQM and band over seeds; each diverged run until it stopped), and against each
        # finished run's own wall clock (one line per run)
        with_clock = curves["wall_s"].notna().any()
        figure, axes = pyplot.subplots(1, 1 + with_clock, figsize=(7.5 * (1 + with_clock), 4.8), squeeze=False)
        _plot_diverged(axes[0, 0], diverged_curves, palette)
        _plot_bands(axes[0, 0], iqm_bands(curves, "timesteps", "mean_return", reps), "timesteps", palette)
        axes[0, 0].set(title="IQM and 95% bootstrap interval over seeds", xlabel="timesteps", ylabel="return")
        if with_clock:
            sns.lineplot(
                curves.assign(wall_min=curves["wall_s"] / 60.0),
                x="wall_min", y="mean_return", hue="label", units="folder", estimator=None, palette=palette,
                linewidth=0.8, legend=False, ax=axes[0, 1],
            )  # fmt: skip
            axes[0, 1].set(title="each run against its wall time", xlabel="wall time of the run (min)", ylabel="return")
        figure.suptitle(f"{env}: deterministic evaluation return")
        written.append(_save(figure, out / f"curves_{safe_name(env)}.png"))
    env_values = values[values["env"] == env].copy()
    if len(env_values):
        # a centred moving average per run, in log space (the diagnostics span decades), then each run's
        # mean over bins of the budget, so that the runs share their steps
        env_values["value"] = 10 ** env_values.groupby(["folder", "quantity"])["value"].transform(
            lambda series: np.log10(series.clip(lower=1e-12)).rolling(smooth, center=True, min_periods=1).mean()
        )
        width = env_values["budget_timesteps"] * DIAGNOSTICS_BIN
        env_values["timesteps"] = ((env_values["timesteps"] / width).round() * width).astype(float)
        env_values = env_values.groupby(["label", "folder", "quantity", "timesteps"], as_index=False)["value"].mean()
        panels = [(name, label) for name, _, label in (*DIAGNOSTICS, STD)]
        figure, axes = pyplot.subplots(1, len(panels), figsize=(6 * len(panels), 4.6))
        for axis, (quantity, label) in zip(axes, panels):
            data = env_values[env_values["quantity"] == quantity]
            if len(data):
                _plot_bands(axis, iqm_bands(data, "timesteps", "value", reps), "timesteps", palette)
            axis.set(title=f"{env}: {label}", xlabel="timesteps", ylabel=f"{label} (log)", yscale="log")
        figure.suptitle(
            f"{env}: diagnostics after each update (moving average of {smooth}, then per run the mean over "
            f"{DIAGNOSTICS_BIN:.0%} of the budget), IQM and 95% bootstrap interval over seeds"
        )
        written.append(_save(figure, out / f"diagnostics_{safe_name(env)}.png"))
    return written


def format_interval(point: float, low: float, high: float, number: Any = format_number) -> str:
    """``point [low, high]`` as the tables show it (``n/a`` without a point, the point alone without an interval)."""
    if not np.isfinite(point):
        return "n/a"
    return number(point) + ("" if not np.isfinite(low) else f" [{number(low)}, {number(high)}]")


def format_fraction(value: float) -> str:
    """A probability or a fraction of the peak, as the tables show it (two decimals)."""
    return f"{value:.2f}"


def _diverged_cell(n_diverged: int, n_finished: int, reached: str) -> str:
    """``1 of 5 (at 3.56M)``: the diverged runs of a row, of all its runs, and the timesteps each reached."""
    at = ", ".join(format_timesteps(None if value == "?" else float(value)) for value in reached.split())
    return f"{n_diverged} of {n_diverged + n_finished}" + (f" (at {at})" if n_diverged else "")


def make_report(
    results: Path,
    out: Path | None = None,
    final_window: int = 5,
    smooth_window: int = 5,
    source: str = "auto",
    reps: int = MIN_RESAMPLES,
    figures: bool = True,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """
    Write the tables and plots of a results folder.

    :param results: the results folder (the grid runner's ``--results``)
    :param out: the output folder (default: ``<results>/report``)
    :param final_window: evaluations averaged for a run's score (the last ones)
    :param smooth_window: moving-average window of the diagnostics plots, in updates
    :param source: which KL and anchor ratio to use: ``diag`` (measured alike for every algorithm),
        ``train`` (each algorithm's own log) or ``auto`` (``diag`` where logged)
    :param reps: bootstrap draws where the resamples are not enumerated (at least ``MIN_RESAMPLES`` are drawn)
    :param figures: whether to draw the PNG figures (the tables alone are much faster)
    :param labels: report only these algorithm labels (``apo``, ``apo [async]``, ...); default: every run
    :return: ``runs``, ``summary`` and ``diagnostics`` tables, the ``files`` written, the ``unfinished`` run folders
        and the ``diverged`` runs
    :raises ValueError: on a bad ``source``, ``final_window``, ``reps`` or label
    :raises FileNotFoundError: when the folder holds no finished run
    """
    if source not in ("auto", "diag", "train"):
        raise ValueError(f"source must be auto, diag or train, got {source!r}")
    if final_window < 1 or reps < 1:
        raise ValueError(f"final_window and reps must be at least 1, got {final_window} and {reps}")
    runs, evaluations, logs, unfinished, diverged = load_runs(results, final_window)
    if not len(runs):
        also = f" ({len(diverged)} diverged run(s), which have no score)" if len(diverged) else ""
        raise FileNotFoundError(f"No finished run (no {DONE_FILE}) under {results}{also}.")
    if labels is not None:
        unknown = sorted(set(labels) - set(runs["label"]))
        if unknown:
            known = ", ".join(dict.fromkeys(runs["label"]))
            raise ValueError(f"labels {unknown} match no finished run; the labels are: {known}")
        runs = runs[runs["label"].isin(labels)].reset_index(drop=True)
        diverged = diverged[diverged["label"].isin(labels)].reset_index(drop=True) if len(diverged) else diverged
    out = out if out is not None else results / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs, reps, diverged)
    values = diagnostics_long(runs, logs, source)
    quarters = quarter_medians(values)
    runs.drop(columns="label").to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    quarters.to_csv(out / "diagnostics.csv", index=False)
    files = [out / "summary.md", out / "summary.csv", out / "runs.csv", out / "diagnostics.csv"]

    lines = [
        f"# Benchmark results: `{results.resolve().name}`",
        "",
        f"Score of a run: the mean of its last {final_window} deterministic evaluations; peak kept: that score "
        f"divided by the run's best mean over {final_window} consecutive evaluations. Per algorithm and variant: the "
        "interquartile mean (IQM) over the seeds of both, and the probability that a run scores higher than a run of "
        f"PPO-clip (`{REFERENCE}` with the same `n_epochs`), each with a 95% stratified-bootstrap interval (rliable's "
        f"metrics; percentile intervals, every resample enumerated where no sample has more than {EXACT_MAX_RUNS} runs, "
        f"else {max(reps, MIN_RESAMPLES):,} draws: column `bootstrap`). Verdict: above or below PPO-clip only when the "
        f"whole interval of P is on one side of 0.5, else not distinguishable; none with fewer than "
        f"{MIN_SEEDS_FOR_VERDICT} runs on either side. Curves: the IQM over seeds at each "
        "evaluation with its 95% bootstrap band, the one spread convention of this report. Budget: training timesteps "
        "per run. Code: the commit of each run's code with its seeds (`*`: uncommitted changes; `POOLED`: a row whose "
        "runs come from several commits). Diverged: the runs whose training stopped on a non-finite loss, gradient or "
        "rollout (`diverged.json`), of all the row's runs, with the timestep each reached; they have no score and are "
        "left out of the IQM, peak kept, bands and diagnostics here (the seeds column counts the finished runs; the "
        "curves draw each diverged run, dashed, until it stopped), and are listed at the end. P and its verdict count "
        "them: a diverged run ranks below every finished run, and ties with another diverged run count half.",
        "",
    ]
    for env, table in summary.groupby("env", sort=False):
        shown = pd.DataFrame(
            {
                "algorithm": [f"`{label}`" for label in table["label"]],
                "n_epochs": table["n_epochs"].map(lambda n: "?" if pd.isna(n) else str(int(n))),
                "seeds": [f"{n} ({seeds})" if n else "0" for n, seeds in zip(table["n_seeds"], table["seeds"])],
                "diverged": [_diverged_cell(*row) for row in zip(table["n_diverged"], table["n_seeds"], table["diverged_at"])],
                "budget": table["budget_timesteps"].map(lambda text: " / ".join(f"{int(b):,}" for b in text.split(" / "))),
                "IQM [95% CI]": [format_interval(*row) for row in zip(table["iqm"], table["iqm_low"], table["iqm_high"])],
                "peak kept [95% CI]": [
                    format_interval(*row, format_fraction)
                    for row in zip(table["peak_kept_iqm"], table["peak_kept_low"], table["peak_kept_high"])
                ],
                f"P(> {REFERENCE}) [95% CI]": [
                    "reference" if algo == REFERENCE else format_interval(*row, format_fraction)
                    for algo, *row in zip(
                        table["algo"], table["p_improvement"], table["p_improvement_low"], table["p_improvement_high"]
                    )
                ],
                "verdict": table["verdict"],
                "per-seed scores": table["scores"].map(lambda text: " ".join(format_number(float(v)) for v in text.split())),
                "bootstrap": table["bootstrap"],
                "code": table["code"],
                "steps/s": table["steps_per_s"].map(format_number),
            }
        )
        written = _figures(env, runs, diverged, evaluations, values, out, smooth_window, reps) if figures else []
        files += written
        lines += [f"## {env}", "", shown.to_markdown(index=False, disable_numparse=True), ""]
        lines += [f"![{path.stem}]({path.name})" for path in written] + [""]
    lines += [
        "## Diagnostics over training",
        "",
        f"Median over the seeds' updates in each quarter of the budget. KL and largest anchor ratio: `{source}` "
        "(`diag/*`: measured after the update on the whole rollout, alike for every algorithm; `train/*`: the "
        "algorithm's own log); policy std: `train/std`.",
        "",
    ]
    shown = quarters.assign(algorithm=[f"`{label}`" for label in quarters["label"]])
    shown = shown[["env", "algorithm", "quantity", *QUARTERS]].assign(**{q: quarters[q].map(format_number) for q in QUARTERS})
    lines.append(shown.to_markdown(index=False, disable_numparse=True) if len(shown) else "No diagnostics logged.")
    if len(diverged):
        lines += ["", "## Diverged runs (no score: left out of the IQM and peak kept, ranked last in P)", ""]
        lines += [
            f"- `{run.folder}` at timestep {format_number(run.timesteps)} of {run.budget_timesteps:,} "
            f"(code `{run.code_commit}`{'*' if run.code_dirty else ''}): {run.message}"
            for run in diverged.itertuples()
        ]
    if unfinished:
        lines += ["", "## Unfinished runs (not in the tables)", ""]
        lines += [f"- `{path.relative_to(results)}`" for path in unfinished]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "runs": runs,
        "summary": summary,
        "diagnostics": quarters,
        "files": files,
        "unfinished": unfinished,
        "diverged": diverged,
    }


def main(argv: list[str] | None = None) -> int:
    """
    ``python benchmarks/report.py RESULTS``: write the report of a results folder.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit status
    """
    parser = argparse.ArgumentParser(description="Tables and plots of a results folder of `python -m sb3_apo.benchmark run`.")
    parser.add_argument("results", type=Path, help="results folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RESULTS/report)")
    parser.add_argument("--final-window", type=int, default=5, help="last evaluations averaged for a run's score (default: 5)")
    parser.add_argument("--smooth", type=int, default=5, help="moving-average window of the diagnostics plots, in updates")
    parser.add_argument(
        "--reps",
        type=int,
        default=MIN_RESAMPLES,
        help=f"bootstrap draws, at least {MIN_RESAMPLES:,} (default: {MIN_RESAMPLES:,})",
    )
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    parser.add_argument("--labels", nargs="+", default=None, help="report only these algorithm labels, e.g. apo 'apo [async]'")
    parser.add_argument(
        "--diag-source",
        choices=["auto", "diag", "train"],
        default="auto",
        help="KL and anchor ratio: diag/* (alike for every algorithm), train/* (each algorithm's own), auto (diag/*)",
    )
    args = parser.parse_args(argv)
    try:
        result = make_report(
            args.results,
            args.out,
            args.final_window,
            args.smooth,
            args.diag_source,
            args.reps,
            figures=not args.no_figures,
            labels=args.labels,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in result["files"]))
    if len(result["diverged"]):
        print(f"{len(result['diverged'])} diverged run(s) counted, without a score (listed in summary.md).")
    if result["unfinished"]:
        print(f"{len(result['unfinished'])} unfinished run(s) left out (listed in summary.md).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
