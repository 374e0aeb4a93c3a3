"""``benchmarks/studies/training_return.py``: runs scored by their training return over the evaluation score's window."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.studies import training_return

FIXTURE = Path(__file__).parent / "fixtures" / "benchmark"


def test_the_training_score_averages_the_rollouts_of_the_final_window():
    log = pd.DataFrame(
        {
            "time/total_timesteps": [100, 200, 200, 300, 400, 500],
            "rollout/ep_rew_mean": [1.0, 2.0, np.nan, 3.0, 5.0, 7.0],  # a row of another logger call has none
        }
    )
    assert training_return.training_score(log, budget=500, window_timesteps=200) == pytest.approx(6.0)  # 400, 500
    assert training_return.training_score(log, budget=500, window_timesteps=350) == pytest.approx(4.25)  # 200-500
    assert np.isnan(training_return.training_score(log.drop(columns="rollout/ep_rew_mean"), 500, 200))


def test_the_study_scores_every_run_and_summarises_the_rows(tmp_path, monkeypatch, capsys):
    out = tmp_path / "training_return"
    monkeypatch.setattr(sys, "argv", ["training_return.py", str(FIXTURE), "--out", str(out), "--final-window", "1"])
    training_return.main()
    table = pd.read_csv(out.with_suffix(".csv")).set_index("label")
    # Hopper-v5 apo seed 0: the last evaluation interval (250k) of its 1M budget holds the rollouts at 819,200
    # (2,500) and 983,040 (3,000)
    hopper = table[table["env"] == "Hopper-v5"]
    assert hopper.loc["apo", "training_scores"].split()[0] == "2750"
    assert hopper.loc["apo", "seeds"] == 2 and pd.isna(hopper.loc["ppo", "training_verdict"])  # the reference has none
    text = out.with_suffix(".md").read_text()
    assert "| Hopper-v5 " in text and "Command: `python benchmarks/studies/training_return.py " in text
