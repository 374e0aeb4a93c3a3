"""``benchmarks/studies/run_table.py``: one row per finished or diverged run, computed from the run's own files."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.studies import run_table


def _run(folder: Path, final: str, record: dict, returns: list[float], kl: list[float], std: list[float]) -> None:
    folder.mkdir(parents=True)
    base = {"env": "Pendulum-v1", "variant": "base", "settings": {"n_timesteps": 1_000}, "code": {"commit": "a" * 40}}
    (folder / final).write_text(json.dumps({**base, **record}))
    timesteps = np.arange(1, len(returns) + 1) * 100
    pd.DataFrame({"timesteps": timesteps, "mean_return": returns}).to_csv(folder / "evaluations.csv", index=False)
    updates = np.arange(1, len(kl) + 1) * 1_000 // len(kl)
    log = pd.DataFrame({"time/total_timesteps": updates, "diag/kl": kl, "train/std": std})
    log.to_csv(folder / "diagnostics.csv", index=False)


def test_each_runs_peak_window_kept_fraction_last_quarter_medians_and_large_updates(tmp_path):
    # 10 evaluations at 100..1000; the best 3-window is 300-500 (mean 10); the last 3 average 5
    returns = [1, 2, 9, 10, 11, 4, 3, 6, 5, 4]
    # 8 updates at 125..1000: the last quarter (> 750) holds the last two; KL above 1 first at 375
    kl = [0.1, 0.2, 3.0, 0.5, 2.0, 0.4, 0.3, 0.7]
    std = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.2, 0.4]
    _run(tmp_path / "ppo/seed_0", "done.json", {"algo": "ppo", "seed": 0, "timesteps": 1_000}, returns, kl, std)
    _run(tmp_path / "apo/seed_0", "diverged.json", {"algo": "apo", "seed": 0, "timesteps": 600}, returns[:6], kl, std)

    table = run_table.run_table(tmp_path, window=3, kl_threshold=1.0).set_index("algo")
    ppo, apo = table.loc["ppo"], table.loc["apo"]
    assert ppo["score"] == pytest.approx(5.0) and ppo["peak"] == pytest.approx(10.0)
    assert (ppo["peak_from"], ppo["peak_to"]) == (300, 500) and ppo["peak_kept"] == pytest.approx(0.5)
    assert ppo["std_last_quarter"] == pytest.approx(0.3) and ppo["kl_last_quarter"] == pytest.approx(0.5)
    assert ppo["updates_kl_above"] == 2 and ppo["first_kl_above_at"] == 375 and ppo["kl_max"] == 3.0
    assert np.isnan(ppo["diverged_at"])
    # a diverged run: no score and no last-quarter medians, but its peak, its last evaluations and its large updates
    assert apo["diverged_at"] == 600 and np.isnan(apo["score"]) and np.isnan(apo["peak_kept"])
    assert apo["last_evaluations_mean"] == pytest.approx((10 + 11 + 4) / 3) and apo["peak"] == pytest.approx(10.0)
    assert np.isnan(apo["kl_last_quarter"]) and apo["updates_kl_above"] == 2

    out = tmp_path / "table"
    assert run_table.main([str(tmp_path), "--out", str(out), "--window", "3"]) == 0
    text = out.with_suffix(".md").read_text()
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]] for line in text.splitlines()[6:]}
    assert rows["`ppo/base/seed_0`"][:4] == ["`aaaaaaa`", "5.00", "10.00 (300-500)", "0.50"]
    assert rows["`apo/base/seed_0`"][1] == "diverged at 600 (last 3 evaluations: 8.33)"
    assert len(pd.read_csv(out.with_suffix(".csv"))) == 2


def test_an_empty_results_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_table.main([str(tmp_path), "--out", str(tmp_path / "table")])
    assert "no finished or diverged run" in capsys.readouterr().err


def test_loss_balance_finds_where_the_surrogate_stops_improving_and_the_anchor_term_outweighs_it():
    # 8 updates at 100..800: the surrogate improves (negative) for four, then no longer (>= 0)
    surrogate = [-0.03, -0.02, -0.02, -0.01, 0.01, 0.02, 0.0, 0.03]
    anchor_loss = [0.001, 0.002, 0.004, 0.03, 0.03, 0.05, 0.02, 0.04]
    log = pd.DataFrame(
        {
            "time/total_timesteps": np.arange(1, 9) * 100,
            run_table.SURROGATE: surrogate,
            run_table.ANCHOR_LOSS: anchor_loss,
            run_table.ANCHOR_COEF: [0.5] * 8,
        }
    )
    # rows without a training update (a rollout-only row) are left out
    log = pd.concat([log, pd.DataFrame({"time/total_timesteps": [850]})], ignore_index=True)
    balance = run_table.loss_balance(log, log["time/total_timesteps"], loss_window=3)
    assert balance["surrogate_worse_share"] == pytest.approx(4 / 8)
    # moving medians of 3 updates: -0.02 at 300 and 400, -0.01 at 500, 0.01 at 600: first at or above 0
    assert balance["surrogate_worse_from"] == 600
    # of the anchor term, 0.5 * anchor_loss: 0.001 at 300, 0.002 at 400, then 0.015 at 500, above |-0.01|
    assert balance["anchor_over_surrogate_from"] == 500
    # PPO logs no anchor term: only the surrogate's balance
    without_anchor = log.drop(columns=[run_table.ANCHOR_LOSS, run_table.ANCHOR_COEF])
    ppo = run_table.loss_balance(without_anchor, log["time/total_timesteps"], 3)
    assert set(ppo) == {"surrogate_worse_share", "surrogate_worse_from"}
    assert run_table.loss_balance(pd.DataFrame({"time/total_timesteps": [1]}), pd.Series([1]), 3) == {}


def test_a_loss_window_below_one_update_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_table.main([str(tmp_path), "--out", str(tmp_path / "table"), "--loss-window", "0"])
    assert "--loss-window must be a positive number of updates, got 0" in capsys.readouterr().err
