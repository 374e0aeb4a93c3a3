"""
Where the launchers' hyperparameters come from without ``-conf``: the project's entry for the
environment, else rl-zoo3's tuned PPO entry (for the PPO family), else the ``default`` entry,
with one printed line saying which.
"""

import argparse
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rl_zoo3", reason="the zoo integration needs the zoo extra (pip install 'sb3-apo[zoo]')")

from rl_zoo3.utils import ALGOS  # noqa: E402

from sb3_apo.zoo import cli, register_algorithms  # noqa: E402
from sb3_apo.zoo.exp_manager import ZooExperimentManager  # noqa: E402
from sb3_apo.zoo.registry import PPO_FALLBACK_ALGOS, hyperparams_folder, rl_zoo3_hyperparams_file  # noqa: E402

#: In rl-zoo3's ppo.yml, in none of the project's files, and buildable here (Box2D).
RL_ZOO3_TUNED_ENV = "BipedalWalkerHardcore-v3"
#: In no hyperparameter file: only ``default`` entries apply.
UNTUNED_ENV = "FrozenLake-v1"
#: The algorithms of the project that fall back on rl-zoo3's PPO entries.
OWN_PPO_FAMILY = tuple(algo for algo in PPO_FALLBACK_ALGOS if algo != "ppo")


def rl_zoo3_ppo() -> dict:
    return yaml.safe_load(rl_zoo3_hyperparams_file("ppo").read_text())


def read(algo: str, env_id: str, tmp_path: Path, capsys: pytest.CaptureFixture, **kwargs) -> tuple[ZooExperimentManager, dict]:
    """The manager's hyperparameters for ``algo`` on ``env_id``, and the lines it printed."""
    register_algorithms()
    manager = ZooExperimentManager(argparse.Namespace(), algo, env_id, str(tmp_path), verbose=0, **kwargs)
    capsys.readouterr()
    hyperparams, _ = manager.read_hyperparameters()
    return manager, {"hyperparams": hyperparams, "out": capsys.readouterr().out}


def test_the_project_ppo_file_only_holds_entries_rl_zoo3_lacks_or_tunes_differently():
    ours = yaml.safe_load((hyperparams_folder() / "ppo.yml").read_text())
    theirs = rl_zoo3_ppo()
    assert ours
    for env_id, entry in ours.items():
        assert env_id not in theirs or theirs[env_id] != entry, env_id


def test_ppo_reads_rl_zoo3s_own_file(tmp_path, capsys):
    manager, read_ = read("ppo", "CartPole-v1", tmp_path, capsys)
    assert Path(manager.config) == rl_zoo3_hyperparams_file("ppo")
    assert read_["hyperparams"] == rl_zoo3_ppo()["CartPole-v1"]
    assert f"rl-zoo3's tuned entry for CartPole-v1 in {rl_zoo3_hyperparams_file('ppo')}" in read_["out"]


def test_ppo_on_an_untuned_env_takes_rl_zoo3s_default(tmp_path, capsys):
    manager, read_ = read("ppo", UNTUNED_ENV, tmp_path, capsys)
    assert Path(manager.config) == rl_zoo3_hyperparams_file("ppo")
    assert read_["hyperparams"] == rl_zoo3_ppo()["default"]
    assert f"nobody has tuned ppo on {UNTUNED_ENV}; using the 'default' entry" in read_["out"]


@pytest.mark.parametrize("algo", [*PPO_FALLBACK_ALGOS, "support_apo"])
def test_an_env_of_ours_is_named_as_ours(algo, tmp_path, capsys):
    env_id = "CartPole-v1" if algo == "support_apo" else "Hopper-v5"
    manager, read_ = read(algo, env_id, tmp_path, capsys)
    own_file = hyperparams_folder() / f"{algo}.yml"
    assert Path(manager.config) == own_file
    assert read_["hyperparams"]["n_timesteps"] == yaml.safe_load(own_file.read_text())[env_id]["n_timesteps"]
    assert f"Hyperparameters: sb3-apo's entry for {env_id} in {own_file}" in read_["out"]


@pytest.mark.parametrize("algo", OWN_PPO_FAMILY)
def test_a_missing_env_takes_rl_zoo3s_tuned_ppo_entry(algo, tmp_path, capsys):
    manager, read_ = read(algo, RL_ZOO3_TUNED_ENV, tmp_path, capsys)
    assert Path(manager.config) == rl_zoo3_hyperparams_file("ppo")
    expected = dict(rl_zoo3_ppo()[RL_ZOO3_TUNED_ENV])
    line = f"{algo}.yml has no entry for {RL_ZOO3_TUNED_ENV}; using rl-zoo3's tuned PPO entry for {RL_ZOO3_TUNED_ENV}"
    assert line in read_["out"] and f"with {algo}'s own parameters at their defaults" in read_["out"]
    if algo == "spo":  # SPO divides by eps: the linear schedule becomes its initial value
        assert expected["clip_range"] == "lin_0.2"
        expected["clip_range"] = 0.2
        assert "clip_range lin_0.2 -> 0.2" in read_["out"]
    if algo == "ppo_penalty":  # the pure KL penalty, as in ppo_penalty.yml
        del expected["clip_range"]
        assert "without its clip_range (the pure KL penalty)" in read_["out"]
    assert read_["hyperparams"] == expected


@pytest.mark.parametrize("algo", OWN_PPO_FAMILY)
def test_the_fallback_entry_builds_the_algorithm(algo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    register_algorithms()
    manager = ZooExperimentManager(
        argparse.Namespace(), algo, RL_ZOO3_TUNED_ENV, str(tmp_path), hyperparams={"n_envs": 1}, eval_freq=-1, verbose=0
    )
    model, _ = manager.setup_experiment()
    try:
        assert type(model) is ALGOS[algo]
        assert (model.clip_range is None) == (algo == "ppo_penalty")
    finally:
        model.env.close()


@pytest.mark.parametrize("algo", ["spo", "ppo_penalty"])
def test_params_still_override_the_fallback_entry(algo, tmp_path, capsys):
    _, read_ = read(algo, RL_ZOO3_TUNED_ENV, tmp_path, capsys, hyperparams={"clip_range": 0.3, "n_envs": 2})
    assert read_["hyperparams"]["clip_range"] == 0.3 and read_["hyperparams"]["n_envs"] == 2


@pytest.mark.parametrize("algo", [*OWN_PPO_FAMILY, "support_apo"])
def test_an_untuned_env_takes_the_default_entry(algo, tmp_path, capsys):
    manager, read_ = read(algo, UNTUNED_ENV, tmp_path, capsys)
    own_file = hyperparams_folder() / f"{algo}.yml"
    assert Path(manager.config) == own_file
    assert read_["hyperparams"] == {"n_timesteps": 1e6, "policy": "MlpPolicy"}
    assert f"nobody has tuned {algo} on {UNTUNED_ENV}; using the 'default' entry of {own_file}" in read_["out"]


@pytest.mark.parametrize("algo", [*OWN_PPO_FAMILY, "support_apo"])
def test_the_default_entry_builds_the_algorithm_with_its_defaults(algo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    register_algorithms()
    manager = ZooExperimentManager(argparse.Namespace(), algo, UNTUNED_ENV, str(tmp_path), eval_freq=-1, verbose=0)
    model, _ = manager.setup_experiment()
    try:
        assert type(model) is ALGOS[algo]
        reference = ALGOS[algo]("MlpPolicy", UNTUNED_ENV, device="cpu")
        assert (model.n_steps, model.batch_size, model.n_epochs) == (
            reference.n_steps,
            reference.batch_size,
            reference.n_epochs,
        )
    finally:
        model.env.close()


def test_a_given_file_is_used_as_it_is(tmp_path, capsys):
    config = tmp_path / "mine.yml"
    config.write_text(yaml.safe_dump({RL_ZOO3_TUNED_ENV: {"n_timesteps": 100, "policy": "MlpPolicy"}}))
    manager, read_ = read("apo", RL_ZOO3_TUNED_ENV, tmp_path, capsys, config=str(config))
    assert manager.hyperparams_source is None and manager.config == str(config)
    assert read_["hyperparams"] == {"n_timesteps": 100, "policy": "MlpPolicy"}
    assert "Hyperparameters:" not in read_["out"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env_id", "said"),
    [
        (UNTUNED_ENV, "nobody has tuned apo on FrozenLake-v1"),
        (RL_ZOO3_TUNED_ENV, "using rl-zoo3's tuned PPO entry for BipedalWalkerHardcore-v3"),
    ],
)
def test_apo_trains_on_any_env(env_id, said, tmp_path, capsys):
    """``sb3-apo-train --algo apo`` trains on an env of rl-zoo3's ppo.yml and on an untuned one."""
    logs = tmp_path / "logs"
    small = ["-params", "n_envs:1", "n_steps:64", "batch_size:32"]
    argv = ["--algo", "apo", "--env", env_id, "-f", str(logs), "-n", "64", "--eval-freq", "-1", "--seed", "0", *small]
    assert cli.train([*argv, "--num-threads", "1", "--vec-env", "dummy"]) == 0
    assert said in capsys.readouterr().out
    model = ALGOS["apo"].load(logs / "apo" / f"{env_id}_1" / f"{env_id}.zip", device="cpu")
    assert model.num_timesteps == 64
