"""Asynchronous rollouts through rl-zoo3: train (with VecNormalize saved), enjoy and optimize."""

import pickle

import numpy as np
import pandas as pd
import pytest

from sb3_apo import APO
from sb3_apo.zoo import cli

pytestmark = pytest.mark.slow

ASYNC = ["async_rollouts:True", "max_policy_lag:1"]


@pytest.mark.parametrize("actors", [[], ["n_envs:2", "n_actors:2"]], ids=["one actor", "two actors"])
def test_train_with_normalization_then_enjoy(tmp_path, capsys, actors):
    logs = tmp_path / "logs"
    args = ["--algo", "apo", "--env", "Pendulum-v1", "-f", str(logs), "--seed", "0", "--num-threads", "1"]
    budget = ["-n", "512", "--eval-freq", "256", "--eval-episodes", "1"]
    params = ["-params", "n_steps:64", "batch_size:64", "n_epochs:2", "normalize:True", *ASYNC, *actors]
    assert cli.train([*args, *budget, *params]) == 0
    run = logs / "apo" / "Pendulum-v1_1"
    model = APO.load(run / "Pendulum-v1.zip", device="cpu")
    assert model.async_rollouts and model.num_timesteps == 512 and model.n_actors == (2 if actors else 1)
    # rl-zoo3 saves the model env's VecNormalize: the learner's copy holds the actor's statistics,
    # which counted every observation the actor normalised (512 steps and the resets).
    statistics = np.load(run / "evaluations.npz")
    assert len(statistics["timesteps"]) == 2
    assert (run / "Pendulum-v1" / "vecnormalize.pkl").is_file()
    with open(run / "Pendulum-v1" / "vecnormalize.pkl", "rb") as file:
        assert pickle.load(file).obs_rms.count > 512
    capsys.readouterr()
    enjoy = ["--algo", "apo", "--env", "Pendulum-v1", "-f", str(logs), "--no-render", "-n", "300", "--num-threads", "1"]
    assert cli.enjoy(enjoy) == 0
    assert "Mean reward:" in capsys.readouterr().out


def test_optimize(tmp_path):
    args = ["--algo", "apo", "--env", "CartPole-v1", "-optimize", "--n-trials", "2", "--n-jobs", "1", "-n", "256"]
    settings = ["--n-evaluations", "1", "--eval-episodes", "2", "--num-threads", "1", "--no-optim-plots", "--seed", "0"]
    assert cli.train([*args, *settings, "-f", str(tmp_path / "logs"), "-params", "n_envs:1", *ASYNC]) == 0
    report = pd.read_csv(next((tmp_path / "logs" / "apo").glob("report_*.csv")))
    assert (report["state"] == "COMPLETE").sum() == 2
