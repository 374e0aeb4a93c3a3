"""
rl-zoo3 integration: registration, hyperparameter files, samplers and converters,
the launchers end to end at tiny budgets, rl-zoo3's plots, and clear errors.

Tuning with several workers (journal file, PostgreSQL, a killed worker) is in
``test_zoo_tuning.py``.
"""

import argparse
import contextlib
import importlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import optuna
import pytest
import yaml

pytest.importorskip("rl_zoo3", reason="the zoo extra (rl_zoo3) is not installed")

from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER  # noqa: E402
from rl_zoo3.utils import ALGOS  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy  # noqa: E402

from sb3_apo import APO, SPO, PPOPenalty  # noqa: E402
from sb3_apo.zoo import ZOO_ALGORITHMS, cli, default_hyperparams_file, hyperparams_folder, register_algorithms  # noqa: E402
from sb3_apo.zoo.exp_manager import ZooExperimentManager  # noqa: E402
from sb3_apo.zoo.registry import rl_zoo3_hyperparams_file  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
ZOO_ALGOS = ("apo", "ppo_penalty", "spo")
YAML_ALGOS = (*ZOO_ALGOS, "ppo")
MUJOCO_V5 = (
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Ant-v5",
    "Humanoid-v5",
    "HumanoidStandup-v5",
    "Swimmer-v5",
    "Reacher-v5",
    "Pusher-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
)
CLASSIC_CONTROL = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1")
BOX2D = ("LunarLander-v3", "LunarLanderContinuous-v3", "BipedalWalker-v3", "CarRacing-v3")
#: The Atari game that stands for the ``atari`` entry.
ATARI_ENV = "BreakoutNoFrameskip-v4"
#: Each algorithm's own keys, the only differences allowed between its MuJoCo entries and ppo.yml's.
OWN_KEYS = {
    "apo": {"anchor_coef", "anchor_target", "anchor_estimator", "n_anchor_actions", "anchor_mode"},
    "ppo_penalty": {"kl_coef", "kl_target", "adaptive_kl"},
    "spo": set(),
    "ppo": set(),
}


def load_yaml(algo: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "hyperparams" / f"{algo}.yml").read_text())


def run_quietly(function: Any, *args: Any) -> tuple[Any, str]:
    """Call ``function`` with stdout captured; return its result and the output."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        result = function(*args)
    return result, output.getvalue()


# ---------------------------------------------------------------------------- registration


def test_register_algorithms_in_place():
    register_algorithms()
    register_algorithms()  # idempotent
    for name, cls in (("apo", APO), ("ppo_penalty", PPOPenalty), ("spo", SPO)):
        assert ALGOS[name] is cls
        assert HYPERPARAMS_SAMPLER[name] is ZOO_ALGORITHMS[name].sampler
        assert HYPERPARAMS_CONVERTER[name] is ZOO_ALGORITHMS[name].converter
    # rl-zoo3's own algorithms stay available
    assert ALGOS["ppo"] is PPO and "ppo" in HYPERPARAMS_SAMPLER


def test_default_hyperparameter_files():
    assert hyperparams_folder().resolve() == (REPO_ROOT / "hyperparams").resolve()
    for algo in YAML_ALGOS:
        path = default_hyperparams_file(algo)
        assert path is not None and path.read_text() == (REPO_ROOT / "hyperparams" / f"{algo}.yml").read_text()
    assert default_hyperparams_file("sac") is None  # rl-zoo3's own file stays the default


def test_manager_defaults_to_project_files(tmp_path):
    register_algorithms()
    for algo in YAML_ALGOS:
        manager = ZooExperimentManager(argparse.Namespace(), algo, "Hopper-v5", str(tmp_path))
        assert Path(manager.config).resolve() == (REPO_ROOT / "hyperparams" / f"{algo}.yml").resolve()
    manager = ZooExperimentManager(argparse.Namespace(), "a2c", "CartPole-v1", str(tmp_path))
    assert "rl_zoo3" in manager.config
    manager = ZooExperimentManager(argparse.Namespace(), "apo", "CartPole-v1", str(tmp_path), config="mine.yml")
    assert manager.config == "mine.yml"


# ---------------------------------------------------------------------------- hyperparameter files


@pytest.mark.parametrize("algo", YAML_ALGOS)
def test_yaml_lists_the_issue_environments(algo):
    content = load_yaml(algo)
    if algo == "ppo":  # the rest comes from rl-zoo3's own ppo.yml
        assert set(content) == set(MUJOCO_V5)
    else:
        assert set(content) == {*MUJOCO_V5, *CLASSIC_CONTROL, *BOX2D, "atari", "default"}
    for env_id in MUJOCO_V5:
        entry = content[env_id]
        assert entry["n_envs"] == 8 and entry["n_steps"] == 256 and entry["batch_size"] == 512
        assert entry["n_epochs"] == 10 and entry["learning_rate"] == "lin_3e-4" and entry["n_timesteps"] == 1e6
        assert entry["gamma"] == 0.99 and entry["gae_lambda"] == 0.95 and entry["clip_range_vf"] == 0.2
        assert entry["vf_coef"] == 0.5 and entry["max_grad_norm"] == 0.5 and entry["ent_coef"] == 0.0
        assert eval(entry["normalize"]) == {"norm_obs": True, "norm_reward": True, "clip_obs": 10.0, "clip_reward": 10.0}
        assert "pi=[64, 64], vf=[64, 64]" in entry["policy_kwargs"] and "nn.Tanh" in entry["policy_kwargs"]
        assert "eps=1e-5" in entry["policy_kwargs"]
        if algo == "ppo_penalty":
            assert "clip_range" not in entry
        else:
            assert entry["clip_range"] == 0.2
    atari = content["atari"] if algo != "ppo" else yaml.safe_load(rl_zoo3_hyperparams_file("ppo").read_text())["atari"]
    assert atari["policy"] == "CnnPolicy"
    assert "AtariWrapper" in str(atari["env_wrapper"])


@pytest.mark.parametrize("algo", ZOO_ALGOS)
def test_mujoco_entries_differ_from_ppo_only_by_the_objective(algo):
    ppo, mine = load_yaml("ppo"), load_yaml(algo)
    for env_id in MUJOCO_V5:
        shared = {key: value for key, value in mine[env_id].items() if key not in OWN_KEYS[algo]}
        expected = dict(ppo[env_id])
        if algo == "ppo_penalty":
            del expected["clip_range"]  # the pure KL penalty has no clipping
        assert shared == expected, env_id


#: An environment nobody has tuned: it stands for the ``default`` entry.
UNTUNED_ENV = "FrozenLake-v1"


def _entry_env_id(entry: str) -> str:
    return {"atari": ATARI_ENV, "default": UNTUNED_ENV}.get(entry, entry)


def _missing_requirement(env_id: str) -> str | None:
    """Why an environment cannot be built here, or None."""
    if env_id == ATARI_ENV and importlib.util.find_spec("ale_py") is None:
        return "Atari needs ale-py (pip install ale-py)"
    if env_id in (ATARI_ENV, "CarRacing-v3") and importlib.util.find_spec("cv2") is None:
        return f"{env_id}'s wrappers need OpenCV (pip install opencv-python-headless)"
    if env_id in BOX2D and importlib.util.find_spec("Box2D") is None:
        return "Box2D environments need gymnasium[box2d]"
    if env_id in MUJOCO_V5 and importlib.util.find_spec("mujoco") is None:
        return "MuJoCo environments need gymnasium[mujoco]"
    return None


YAML_ENTRIES = [(algo, entry) for algo in YAML_ALGOS for entry in load_yaml(algo)]


@pytest.mark.parametrize(("algo", "entry"), YAML_ENTRIES, ids=[f"{algo}-{entry}" for algo, entry in YAML_ENTRIES])
def test_every_yaml_entry_constructs_a_model(algo, entry, tmp_path, monkeypatch):
    """Each entry goes through rl-zoo3's preprocessing and builds its model (no training)."""
    env_id = _entry_env_id(entry)
    reason = _missing_requirement(env_id)
    if reason is not None:
        pytest.skip(f"{algo}.yml entry {entry} not built: {reason}")
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to ./MUJOCO_LOG.TXT
    register_algorithms()
    import rl_zoo3.import_envs  # noqa: F401  (registers the Atari games when ale-py is installed)

    manager = ZooExperimentManager(
        argparse.Namespace(), algo, env_id, str(tmp_path), eval_freq=-1, verbose=0, device="cpu", seed=0
    )
    (model, _), _ = run_quietly(manager.setup_experiment)
    try:
        assert type(model) is ALGOS[algo]
        expected_policy = ActorCriticCnnPolicy if entry in ("atari", "CarRacing-v3") else ActorCriticPolicy
        assert type(model.policy) is expected_policy
    finally:
        assert model.env is not None
        model.env.close()


def test_the_cogment_verse_appo_entry_builds_asynchronous_ppo_clip(tmp_path, monkeypatch):
    """hyperparams/cogment_verse_appo.yml: Cogment-verse's settings, read through -conf."""
    if _missing_requirement("Hopper-v5") is not None:
        pytest.skip(_missing_requirement("Hopper-v5"))
    monkeypatch.chdir(tmp_path)
    register_algorithms()
    config = str(REPO_ROOT / "hyperparams" / "cogment_verse_appo.yml")
    manager = ZooExperimentManager(
        argparse.Namespace(), "apo", "Hopper-v5", str(tmp_path), config=config, eval_freq=-1, verbose=0, device="cpu", seed=0
    )
    (model, _), _ = run_quietly(manager.setup_experiment)
    try:
        assert model.async_rollouts and model.max_policy_lag == 1 and model.correct_policy_lag
        assert (model.n_envs, model.n_steps, model.batch_size, model.n_epochs) == (4, 2048, 64, 10)
        assert model.anchor_coef == 0.0 and model.clip_range(1.0) == 0.2 and model.clip_range_vf is None
        assert (model.vf_coef, model.ent_coef, model.max_grad_norm, model.lr_schedule(1.0)) == (0.25, 0.0, 0.5, 3.5e-4)
        assert manager.n_timesteps == 3_000_000
        assert manager.normalize_kwargs["norm_obs"] and not manager.normalize_kwargs["norm_reward"]
    finally:
        model.env.close()


# ---------------------------------------------------------------------------- samplers and converters


def _sample(algo: str, n_envs: int, seed: int = 0) -> tuple[optuna.trial.FrozenTrial, dict[str, Any]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    trial = study.ask()
    kwargs = ZOO_ALGORITHMS[algo].sampler(trial, 0, n_envs, {})
    study.tell(trial, 0.0)
    return study.trials[-1], kwargs


@pytest.mark.parametrize("algo", ZOO_ALGOS)
def test_converter_rebuilds_the_sampled_kwargs(algo):
    own = {
        "apo": {"anchor_coef", "n_anchor_actions", "anchor_mode", "clip_range"},
        "ppo_penalty": {"kl_target", "kl_coef"},
        "spo": {"clip_range"},
    }[algo]
    for seed in range(5):
        frozen, kwargs = _sample(algo, n_envs=4, seed=seed)
        assert ZOO_ALGORITHMS[algo].converter(frozen.params) == kwargs
        assert own <= set(kwargs)
        shared = {"n_steps", "batch_size", "gamma", "gae_lambda", "learning_rate", "ent_coef", "n_epochs"}
        assert shared <= set(kwargs) and set(kwargs["policy_kwargs"]) == {"net_arch", "activation_fn"}
        if algo == "ppo_penalty":
            assert "clip_range" not in kwargs


@pytest.mark.parametrize("n_envs", [1, 3, 8])
def test_sampled_minibatch_never_exceeds_the_rollout(n_envs):
    for seed in range(60):
        _, kwargs = _sample("spo", n_envs=n_envs, seed=seed)
        assert kwargs["batch_size"] <= kwargs["n_steps"] * n_envs


@pytest.mark.parametrize("algo", ZOO_ALGOS)
def test_sampled_kwargs_construct_a_model(algo):
    _, kwargs = _sample(algo, n_envs=1, seed=3)
    model = ALGOS[algo]("MlpPolicy", gym.make("Pendulum-v1"), device="cpu", **kwargs)
    assert model.n_steps == kwargs["n_steps"] and model.batch_size == kwargs["batch_size"]


# ---------------------------------------------------------------------------- launchers end to end


def _train_args(algo: str, env_id: str, logs: Path, *extra: str) -> list[str]:
    budget = {
        # rollout 8 x 32 = 256 steps, two updates
        "CartPole-v1": ["-n", "512"],
        # rollout 4 x 64 = 256 steps, one update of 4 minibatches
        "Pendulum-v1": ["-n", "256", "-params", "n_steps:64", "batch_size:64"],
    }[env_id]
    return [
        "--algo",
        algo,
        "--env",
        env_id,
        "-f",
        str(logs),
        "--seed",
        "0",
        "--num-threads",
        "1",
        "--eval-freq",
        "256",
        "--eval-episodes",
        "2",
        *budget,
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("algo", ZOO_ALGOS)
def test_train_then_enjoy(algo, env_id, tmp_path, capsys):
    logs = tmp_path / "logs"
    progress = ["-P"] if algo == "spo" else []  # SB3's progress bar, when asked
    assert cli.train(_train_args(algo, env_id, logs, *progress)) == 0
    out = capsys.readouterr().out
    run = logs / algo / f"{env_id}_1"
    assert (run / f"{env_id}.zip").is_file()
    assert (run / "best_model.zip").is_file() and (run / "evaluations.npz").is_file()
    assert list(run.glob("*.monitor.csv"))
    for name in ("config.yml", "args.yml", "command.txt"):
        assert (run / env_id / name).is_file()
    config = yaml.load((run / env_id / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    assert config["policy"] == "MlpPolicy"
    assert "Loading hyperparameters from:" in out and f"{algo}.yml" in out
    if progress:
        assert "256/256" in out or "512/512" in out
    model = ALGOS[algo].load(run / f"{env_id}.zip", device="cpu")
    assert type(model) is ALGOS[algo] and model.num_timesteps > 0
    evaluations = np.load(run / "evaluations.npz")
    assert evaluations["results"].shape[1] == 2

    assert cli.enjoy(["--algo", algo, "--env", env_id, "-f", str(logs), "--no-render", "-n", "400", "--num-threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"Loading {run / env_id}.zip" in out
    assert "Episode Reward:" in out and "Mean reward:" in out and "Mean episode length:" in out


@pytest.mark.slow
def test_enjoy_and_record_video_read_logs_by_default(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.train(_train_args("apo", "CartPole-v1", Path("logs"), "--eval-freq", "-1")) == 0
    assert cli.enjoy(["--algo", "apo", "--env", "CartPole-v1", "--no-render", "-n", "100", "--num-threads", "1"]) == 0
    assert "Loading logs/apo/CartPole-v1_1/CartPole-v1.zip" in capsys.readouterr().out
    for module in ("moviepy", "pygame"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"recording a video needs {module}")
    assert cli.record_video(["--algo", "apo", "--env", "CartPole-v1", "-n", "20", "-o", "videos"]) == 0
    assert list(Path("videos").glob("final-model-apo-CartPole-v1-*.mp4"))


@pytest.mark.slow
def test_ppo_runs_through_the_same_launcher(tmp_path, capsys):
    logs = tmp_path / "logs"
    assert cli.train(_train_args("ppo", "CartPole-v1", logs, "--eval-freq", "-1")) == 0
    # CartPole-v1 is tuned in rl-zoo3's own ppo.yml, which the project's does not shadow
    assert f"rl-zoo3's tuned entry for CartPole-v1 in {rl_zoo3_hyperparams_file('ppo')}" in capsys.readouterr().out
    assert type(PPO.load(logs / "ppo" / "CartPole-v1_1" / "CartPole-v1.zip", device="cpu")) is PPO


@pytest.mark.slow
def test_rl_zoo3_plots_work_on_our_logs(tmp_path):
    pytest.importorskip("scipy", reason="rl_zoo3.plots imports scipy, which rl-zoo3 does not install")
    logs = tmp_path / "logs"
    _, out = run_quietly(cli.train, _train_args("apo", "CartPole-v1", logs, "--eval-freq", "128"))
    assert (logs / "apo" / "CartPole-v1_1" / "evaluations.npz").is_file()
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    # rl-zoo3's own command on our logs: training curves from the monitor files ...
    plot_train = [
        sys.executable,
        "-m",
        "rl_zoo3.cli",
        "plot_train",
        "-a",
        "apo",
        "-e",
        "CartPole-v1",
        "-f",
        str(logs),
        "-w",
        "2",
    ]
    result = subprocess.run(plot_train, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    # ... and the evaluation table and curves from evaluations.npz, through our dispatcher
    output = tmp_path / "results"
    code, out = run_quietly(
        cli.main,
        ["all_plots", "-a", "apo", "-e", "CartPole-v1", "-f", str(logs), "--no-display", "-o", str(output), "-max", "1000"],
    )
    assert code == 0, out
    assert "|CartPole-v1 |" in out and "APO" in out
    with open(f"{output}.pkl", "rb") as file:  # all_plots adds the suffix
        results = pickle.load(file)
    assert any(key.startswith("APO") for key in results["CartPole-v1"])


# ---------------------------------------------------------------------------- clear errors


def _launch(*args: str, cwd: Path, env: dict[str, str] | None = None, module: str = "sb3_apo.train") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


@pytest.mark.slow
def test_bad_input_gives_a_clear_message_and_a_nonzero_exit(tmp_path):
    """The issue's four cases, each in its own process: one message, a non-zero exit, no traceback."""
    malformed = tmp_path / "malformed.yml"
    malformed.write_text("CartPole-v1:\n  n_envs: 8\n bad: [\n")
    cartpole_only = tmp_path / "cartpole.yml"  # the project's files have a default entry: an own file may not
    cartpole_only.write_text("CartPole-v1:\n  n_timesteps: 1000\n  policy: MlpPolicy\n")
    base = ["-f", str(tmp_path / "logs"), "--num-threads", "1"]
    apo = ["--algo", "apo", "--env", "CartPole-v1", *base]
    cases = {
        "unknown algo": (["--algo", "nope", "--env", "CartPole-v1", *base], "invalid choice: 'nope'"),
        "env missing from a -conf YAML without default": (
            ["--algo", "apo", "--env", "Acrobot-v1", *base, "-conf", str(cartpole_only)],
            f"No hyperparameters for Acrobot-v1 in {cartpole_only}",
        ),
        "malformed YAML": ([*apo, "-conf", str(malformed)], f"Malformed hyperparameter file {malformed} (line 3, column 2)"),
        "unreachable storage": (
            [*apo, "-optimize", "--study-name", "s", "--storage", "postgresql://user:secret@127.0.0.1:1/optuna"],
            "Cannot connect to the database storage postgresql://user:***@127.0.0.1:1/optuna",
        ),
    }
    processes = {name: _launch(*args, cwd=tmp_path) for name, (args, _) in cases.items()}
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=180)
        assert process.returncode not in (0, None), name
        assert cases[name][1] in stderr, (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)
        assert "secret" not in stderr  # database passwords are masked


def test_in_process_errors(tmp_path, capsys):
    logs = ["-f", str(tmp_path / "logs")]
    apo = ["--algo", "apo", "--env", "CartPole-v1", *logs]
    not_a_mapping = tmp_path / "list.yml"
    not_a_mapping.write_text("- CartPole-v1\n")
    assert cli.train([*apo, "-conf", str(not_a_mapping)]) == 1
    assert "must map each environment id" in capsys.readouterr().err
    assert cli.train([*apo, "-conf", str(tmp_path / "absent.yml")]) == 1
    assert "absent.yml not found" in capsys.readouterr().err
    assert cli.train([*apo, "-optimize", "--study-name", "s", "--storage", "/proc/none/study.log"]) == 1
    assert "Cannot open the journal storage /proc/none/study.log" in capsys.readouterr().err
    assert cli.train([*apo, "-optimize", "--study-name", "s", "--storage", "nonsense:/x"]) == 1
    assert "is neither a journal file" in capsys.readouterr().err
    assert cli.train(["--algo", "apo", "--env", "CartPol-v1", *logs]) == 1
    assert "you maybe meant CartPole-v1" in capsys.readouterr().err
    assert cli.train(["--algo", "apo", "--env", "CartPole-v1", "--trial-id", "0", *logs]) == 1
    assert "--trial-id needs the study it belongs to" in capsys.readouterr().err
    assert cli.train(["--algo", "apo", "--env", "CartPole-v1", "-optimize", "--storage", str(tmp_path / "s.log"), *logs]) == 1
    assert "--storage needs --study-name" in capsys.readouterr().err
    assert cli.train(["--heartbeat-interval", "5", "--grace-period", "2", "--algo", "apo"]) == 2
    assert "--grace-period (2 s) must be longer" in capsys.readouterr().err
    assert cli.enjoy(["--algo", "apo", "--env", "CartPole-v1", "-f", str(tmp_path / "none"), "--no-render"]) == 1
    assert "folder was not found" in capsys.readouterr().err
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    # a study or trial that does not exist
    journal = tmp_path / "study.log"
    optuna.create_study(
        study_name="there", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    )
    base = ["--algo", "apo", "--env", "CartPole-v1", "--storage", str(journal), *logs]
    assert cli.train([*base, "--study-name", "other", "--trial-id", "0"]) == 1
    assert "No study named 'other'" in capsys.readouterr().err
    assert cli.train([*base, "--study-name", "there", "--trial-id", "3"]) == 1
    assert "has no trial 3" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("module", ["sb3_apo.load_from_hub", "sb3_apo.push_to_hub"])
def test_hub_commands_without_network(module, tmp_path):
    args = ["--algo", "apo", "--env", "CartPole-v1", "-f", str(tmp_path)]
    if module.endswith("push_to_hub"):
        args += ["-orga", "someone"]
    # A local port where nothing listens stands for a machine without network.
    process = _launch(*args, cwd=tmp_path, module=module, env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"})
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "Cannot reach the Hugging Face Hub at http://127.0.0.1:9" in stderr and "network" in stderr
    assert "Traceback" not in stderr


def test_record_video_wrapper_parses_rl_zoo3_flags(capsys):
    assert cli.record_video(["--help"]) == 0
    out = capsys.readouterr().out
    assert "sb3-apo-record-video" in out and "--output-folder" in out and "apo" in out


def test_train_help_lists_both_option_sets(capsys):
    assert cli.train(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--heartbeat-interval" in out and "--max-total-trials" in out and "ppo_penalty" in out


# ---------------------------------------------------------------------------- packaging


@pytest.mark.slow
def test_wheel_ships_the_hyperparameter_files_and_scripts(tmp_path):
    pytest.importorskip("pip", reason="pip is not available")
    # Build from a copy (links kept as links), so that the build leaves nothing in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("sb3_apo", "hyperparams"):
        shutil.copytree(REPO_ROOT / name, source / name, symlinks=True, ignore=ignore)
    assert (source / "sb3_apo" / "zoo" / "hyperparams").is_symlink()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("sb3_apo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for algo in YAML_ALGOS:
            shipped = archive.read(f"sb3_apo/zoo/hyperparams/{algo}.yml").decode()
            assert shipped == (REPO_ROOT / "hyperparams" / f"{algo}.yml").read_text()
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    for script, target in (
        ("sb3-apo-train", "sb3_apo.zoo.cli:train"),
        ("sb3-apo-enjoy", "sb3_apo.zoo.cli:enjoy"),
        ("sb3-apo-record-video", "sb3_apo.zoo.cli:record_video"),
        ("sb3-apo-record-training", "sb3_apo.zoo.cli:record_training"),
        ("sb3-apo-load-from-hub", "sb3_apo.zoo.cli:load_from_hub"),
        ("sb3-apo-push-to-hub", "sb3_apo.zoo.cli:push_to_hub"),
        ("sb3-apo-zoo", "sb3_apo.zoo.cli:main"),
    ):
        assert f"{script} = {target}" in scripts
        module, attribute = target.split(":")
        assert callable(getattr(importlib.import_module(module), attribute))
