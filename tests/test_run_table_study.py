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
