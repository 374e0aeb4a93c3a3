"""
The report's statistics: the stratified bootstrap (every resample enumerated for up to 5 runs a
sample, at least 50,000 draws above), the fraction of its own peak that a run keeps, the verdict on the
probability of improvement, and the code commits of each row.
"""

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import report


def brute_force_interval(samples: list[np.ndarray], statistic) -> tuple[float, float]:
    """The 95% percentile interval over every ordered resample (each equally likely), by the inverse CDF."""
    draws = [list(itertools.product(sample, repeat=len(sample))) for sample in samples]
    values = np.sort([float(statistic(*(np.array(d)[None] for d in joint))[0]) for joint in itertools.product(*draws)])
    cdf = np.arange(1, len(values) + 1) / len(values)
    return values[np.searchsorted(cdf, 0.025 - 1e-12)], values[np.searchsorted(cdf, 0.975 - 1e-12)]


def test_iqm_interval_endpoint_is_the_enumerated_one():
    # five runs, sorted a < b < c < d < e; the IQM of a resample of five is the mean of its middle three.
    a, b, c, d, e = 932.0, 2088.0, 3334.0, 3370.0, 3414.0
    scores = np.array([c, a, e, d, b])
    # Of the 5^5 = 3125 ordered resamples, 21 (four or five a's) have IQM a, and 10 * 7 = 70 (three a's,
    # the other two draws at least b with one b) have the next value, (2a + b) / 3: the CDF goes from
    # 21/3125 = 0.7% to 91/3125 = 2.9% there, so the 2.5% endpoint is (2a + b) / 3 = 1,317.3.
    iqm, low, high, method = report.bootstrap_interval([scores], report.interquartile_mean, reps=2000)
    assert method == "exact"
    assert iqm == pytest.approx((b + c + d) / 3)
    assert low == pytest.approx((2 * a + b) / 3)
    assert (low, high) == pytest.approx(brute_force_interval([scores], report.interquartile_mean))


def test_probability_of_improvement_interval_is_enumerated_over_both_samples():
    scores, reference = np.array([1.0, 4.0, 5.0]), np.array([2.0, 3.0, 6.0, 0.0])
    p, low, high, method = report.bootstrap_interval([scores, reference], report.probability_of_improvement, reps=10)
    assert method == "exact"
    assert p == pytest.approx(np.mean([[x > y for y in reference] for x in scores]))  # no ties
    assert (low, high) == pytest.approx(brute_force_interval([scores, reference], report.probability_of_improvement))


def test_more_than_five_runs_are_resampled_with_at_least_50000_draws():
    indices, weights = report.resamples([6, 3], reps=100)
    assert [index.shape for index in indices] == [(50_000, 6), (50_000, 3)] and weights.sum() == pytest.approx(1.0)
    indices, weights = report.resamples([5, 2], reps=100)  # 126 x 3 multisets, weighted
    assert len(weights) == 126 * 3 and weights.sum() == pytest.approx(1.0)
    scores = np.array([10.0, 0.0, 7.0, 3.0, 9.0, 1.0])  # 6^6 = 46,656 ordered resamples: still enumerable here
    _, low, high, method = report.bootstrap_interval([scores], report.interquartile_mean, reps=100)
    assert method == "50,000 draws"
    assert (low, high) == pytest.approx(brute_force_interval([scores], report.interquartile_mean))


def test_verdict_goes_no_further_than_the_interval():
    assert report.verdict(0.44, 0.96, "ppo") == "not distinguishable"
    assert report.verdict(0.5, 1.0, "ppo") == "not distinguishable"
    assert report.verdict(0.52, 1.0, "ppo") == "above `ppo`"
    assert report.verdict(0.0, 0.48, "ppo") == "below `ppo`"
    assert report.verdict(np.nan, np.nan, "ppo") == "n/a"
    assert report.verdict(0.52, 1.0, "ppo", (5, 5)) == "above `ppo`"
    assert report.verdict(0.0, 0.0, "ppo", (2, 2)) == "too few seeds (2 and 2; 5 a side needed)"
    assert report.verdict(0.0, 0.48, "ppo", (5, 4)) == "too few seeds (5 and 4; 5 a side needed)"


def write_run(results: Path, algo: str, seed: int, returns: list[float], commit: str, dirty: bool = False) -> None:
    folder = results / "Hopper-v5" / algo / "base" / f"seed_{seed}"
    folder.mkdir(parents=True)
    done = {"env": "Hopper-v5", "algo": algo, "variant": "base", "seed": seed, "timesteps": 1000 * len(returns)}
    done |= {"hyperparams": {"n_epochs": 10}, "code": {"commit": commit * 40, "dirty": dirty}}
    (folder / "done.json").write_text(json.dumps(done))
    timesteps = 1000 * np.arange(1, len(returns) + 1)
    pd.DataFrame({"timesteps": timesteps, "mean_return": returns}).to_csv(folder / "evaluations.csv", index=False)


def test_peak_kept_code_commits_and_verdict_in_the_report(tmp_path):
    results = tmp_path / "results"
    rise_and_fall = [0.0, 100, 200, 300, 400, 500, 400, 300, 200, 100]
    write_run(results, "apo", 0, rise_and_fall, "a")
    write_run(results, "apo", 1, [float(v) for v in range(100, 1100, 100)], "a")  # still rising: keeps all of its peak
    write_run(results, "apo", 2, rise_and_fall[:3], "b", dirty=True)  # fewer evaluations than the window
    for seed in range(3):
        write_run(results, "ppo", seed, [50.0 * (seed + 1)] * 10, "c")
    out = tmp_path / "report"
    result = report.make_report(results, out, figures=False)

    runs = result["runs"].set_index(["algo", "seed"])
    # last 5: 500 ... 100 -> 300; best window of 5: 300, 400, 500, 400, 300 -> 380
    assert runs.loc[("apo", 0), "score"] == pytest.approx(300.0) and runs.loc[("apo", 0), "peak"] == pytest.approx(380.0)
    assert runs.loc[("apo", 0), "peak_kept"] == pytest.approx(300.0 / 380.0)
    assert runs.loc[("apo", 1), "peak_kept"] == pytest.approx(1.0)
    assert runs.loc[("apo", 2), "peak_kept"] == pytest.approx(1.0)  # one window: all three evaluations
    assert runs.loc[("apo", 2), "code_commit"] == "bbbbbbb" and runs.loc[("apo", 2), "code_dirty"]

    summary = result["summary"].set_index("label")
    assert summary.loc["apo", "code"] == "POOLED: `aaaaaaa` (0 1), `bbbbbbb` (2*)"
    assert summary.loc["apo", "dirty_seeds"] == "2"
    assert summary.loc["ppo", "code"] == "`ccccccc` (0 1 2)"
    kept = np.sort(runs.loc["apo", "peak_kept"].to_numpy())
    assert summary.loc["apo", "peak_kept_iqm"] == pytest.approx(report.interquartile_mean(kept))
    assert summary.loc["apo", "peak_kept_low"] == pytest.approx(kept[0])  # 1/27 of the resamples are three times the least
    # apo's scores 300, 1,000 and 100 against ppo's 50, 100 and 150: P = (3 + 3 + 1.5) / 9
    assert summary.loc["apo", "p_improvement"] == pytest.approx(7.5 / 9)
    assert summary.loc["apo", "verdict"] == "too few seeds (3 and 3; 5 a side needed)"
    text = (out / "summary.md").read_text()
    assert "POOLED: `aaaaaaa` (0 1), `bbbbbbb` (2*)" in text and "too few seeds" in text and "peak kept" in text


@pytest.mark.parametrize(
    "record, commit, dirty",
    [
        ({}, "unknown", False),
        ({"code": {"commit": "a" * 40, "dirty": False}}, "aaaaaaa", False),  # a run from before code_segments
        ({"code": {"commit": "a" * 40, "dirty": False}, "code_segments": []}, "aaaaaaa", False),
        # resumed under the same code: one commit
        (
            {"code": {"commit": "a" * 40, "dirty": False}, "code_segments": [{"commit": "a" * 40, "dirty": False}] * 2},
            "aaaaaaa",
            False,
        ),  # fmt: skip
        # resumed under other code: every commit, in the order the launches ran, and any uncommitted change
        (
            {
                "code": {"commit": "c" * 40, "dirty": False},
                "code_segments": [{"commit": "b" * 40, "dirty": False}, {"commit": "c" * 40, "dirty": True}],
            },
            "bbbbbbb+ccccccc",
            True,
        ),
    ],
)
def test_a_run_names_the_code_of_every_launch(record, commit, dirty):
    assert report.code_fields(record) == {"code_commit": commit, "code_dirty": dirty}
