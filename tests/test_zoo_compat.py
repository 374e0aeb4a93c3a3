"""
``sb3_apo/zoo/_compat.py`` against the installed Optuna and rl-zoo3: every private
API it relies on still behaves as it expects, and the installed versions are the
ones ``pyproject.toml`` pins.
"""

import importlib
import json
import logging
import sys
import time
from pathlib import Path

import optuna
import pytest

pytest.importorskip("rl_zoo3", reason="the zoo extra (rl_zoo3) is not installed")

import rl_zoo3.train  # noqa: E402
from optuna.pruners import MedianPruner  # noqa: E402
from optuna.samplers import TPESampler  # noqa: E402
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from rl_zoo3.exp_manager import ExperimentManager  # noqa: E402

from sb3_apo.zoo import _compat  # noqa: E402
from sb3_apo.zoo._compat import HEARTBEAT_ATTR, HeartbeatJournalStorage  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package", ["optuna", "rl_zoo3", "sb3-team-hf-integration"])
def test_installed_version_is_in_the_pinned_range(package):
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    from importlib.metadata import version

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    (requirement,) = [
        Requirement(line) for line in project["project"]["optional-dependencies"]["zoo"] if Requirement(line).name == package
    ]
    assert requirement.specifier, f"{package} must be pinned to the tested range"
    assert requirement.specifier.contains(version(package)), (package, version(package), str(requirement.specifier))
    assert any(spec.operator == "<" for spec in requirement.specifier), f"{package} needs an upper bound"


def _journal(path: Path, **heartbeat) -> JournalStorage:
    backend = JournalFileBackend(str(path))
    if not heartbeat:
        return JournalStorage(backend)
    return HeartbeatJournalStorage(backend, **heartbeat)


def test_heartbeat_journal_storage_implements_optunas_protocol():
    from optuna.storages._heartbeat import BaseHeartbeat

    missing = getattr(HeartbeatJournalStorage, "__abstractmethods__", frozenset())
    assert not missing, f"Optuna's BaseHeartbeat now also requires {sorted(missing)}"
    assert issubclass(HeartbeatJournalStorage, BaseHeartbeat)


def test_optuna_runs_the_journal_heartbeat_and_fails_stale_trials(tmp_path):
    storage = _journal(
        tmp_path / "study.log",
        heartbeat_interval=1,
        grace_period=2,
        stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
    )
    study = optuna.create_study(study_name="s", storage=storage)

    # Optuna's heartbeat thread calls record_heartbeat while a trial runs.
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        time.sleep(1.5)
        return 0.0

    study.optimize(objective, n_trials=1)
    assert isinstance(study.trials[0].system_attrs.get(HEARTBEAT_ATTR), float)

    # A running trial whose heartbeat is too old is failed by Optuna and queued again by the callback.
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), dead.number))
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[dead.number].state == TrialState.FAIL
    (copy,) = [trial for trial in trials if trial.system_attrs.get("failed_trial") == dead.number]
    assert copy.state == TrialState.WAITING and copy.params == trials[dead.number].params


def _study_with_trials(path: Path, n_trials: int = 3) -> None:
    study = optuna.create_study(study_name="s", storage=_journal(path))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=n_trials)


def test_the_journal_is_one_json_record_per_line(tmp_path):
    path = tmp_path / "study.log"
    _study_with_trials(path, n_trials=1)
    data = path.read_bytes()
    assert data.endswith(b"\n")
    for line in data.splitlines():
        assert isinstance(json.loads(line), dict)


def test_a_torn_journal_is_repaired_keeping_every_complete_record(tmp_path):
    path = tmp_path / "study.log"
    _study_with_trials(path)
    complete = path.read_bytes()
    torn = b'{"op_code":5,"worker_id":"w","trial_id":2,"par'
    path.write_bytes(complete + torn)

    assert _compat.repair_torn_journal(path) == len(torn)
    assert path.read_bytes() == complete
    assert (tmp_path / "study.log.torn").read_bytes() == torn + b"\n"
    assert _compat.repair_torn_journal(path) == 0  # a complete journal is left alone
    # The repaired journal takes new records and stays readable.
    study = optuna.load_study(study_name="s", storage=_journal(path))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    reloaded = optuna.load_study(study_name="s", storage=_journal(path)).trials
    assert [trial.state for trial in reloaded] == [TrialState.COMPLETE] * 4


def test_without_repair_a_torn_journal_becomes_unreadable(tmp_path):
    """What repair_torn_journal protects against, as Optuna behaves today."""
    path = tmp_path / "study.log"
    _study_with_trials(path)
    with open(path, "ab") as file:
        file.write(b'{"op_code":5,"wor')
    # Optuna 5.0 skips the partial line while reading, glues the next record to it, then fails.
    with pytest.raises((ValueError, AttributeError)):
        study = optuna.load_study(study_name="s", storage=_journal(path))
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
        optuna.load_study(study_name="s", storage=_journal(path))


def test_a_complete_journal_is_checked_without_its_lock(tmp_path):
    """So that a read-only journal stays readable, and a worker holding the lock is not waited for."""
    path = tmp_path / "study.log"
    _study_with_trials(path, n_trials=1)
    lock = tmp_path / "study.log.lock"
    lock.symlink_to(path)  # another worker holds the lock (Optuna's JournalFileSymlinkLock)
    assert _compat.repair_torn_journal(path) == 0
    assert lock.is_symlink()  # neither waited for nor broken


def test_an_empty_or_missing_journal_needs_no_repair(tmp_path):
    assert _compat.repair_torn_journal(tmp_path / "absent.log") == 0
    (tmp_path / "empty.log").write_bytes(b"")
    assert _compat.repair_torn_journal(tmp_path / "empty.log") == 0
    (tmp_path / "only.log").write_bytes(b'{"op_co')
    assert _compat.repair_torn_journal(tmp_path / "only.log") == 7
    assert (tmp_path / "only.log").read_bytes() == b""


def _interrupted(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0, 1)
    raise KeyboardInterrupt("SIGTERM")


def test_optuna_logs_an_interrupted_trial_with_its_traceback_unless_muted(caplog):
    caplog.set_level("INFO", logger="optuna")
    study = optuna.create_study()
    with pytest.raises(KeyboardInterrupt):
        study.optimize(_interrupted, n_trials=1)
    # What the filter exists for: Optuna's loop logs the interruption with its traceback.
    assert [record.name for record in caplog.records if record.exc_info] == [_compat.OPTIMIZE_LOGGER]
    caplog.clear()
    with _compat.mute_interrupted_trial_log(), pytest.raises(KeyboardInterrupt):
        study.optimize(_interrupted, n_trials=1)
    assert not [record for record in caplog.records if record.exc_info or "failed" in record.getMessage()]
    assert [trial.state for trial in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    # Other trials are still logged inside the block, and the filter is gone after it.
    with _compat.mute_interrupted_trial_log():
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    assert any("finished with value" in record.getMessage() for record in caplog.records)
    assert not logging.getLogger(_compat.OPTIMIZE_LOGGER).filters


class _Sentinel(Exception):
    pass


class _RecordingManager(ExperimentManager):
    def __init__(self, *args, **kwargs):
        raise _Sentinel(kwargs["config"], args[1])


def test_run_rl_zoo3_train_uses_the_given_manager_and_restores_rl_zoo3s(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["train", "--algo", "ppo", "--env", "CartPole-v1", "-f", str(tmp_path)])
    with pytest.raises(_Sentinel) as raised:
        _compat.run_rl_zoo3_train(_RecordingManager)
    assert raised.value.args == (None, "ppo")
    assert rl_zoo3.train.ExperimentManager is ExperimentManager


def test_manager_internals(tmp_path):
    args = rl_zoo3.train.argparse.Namespace()
    manager = ExperimentManager(
        args, "ppo", "CartPole-v1", str(tmp_path), n_timesteps=64, optimize_hyperparameters=True, seed=3
    )
    assert isinstance(_compat.create_sampler(manager), TPESampler)
    assert isinstance(_compat.create_pruner(manager), MedianPruner)
    assert manager.setup_experiment() is None  # tuning: no model, the trials' defaults are ready
    defaults = _compat.default_hyperparameters(manager)
    assert defaults["policy"] == "MlpPolicy" and "n_timesteps" not in defaults


def test_rl_zoo3s_push_to_hub_imports_only_with_the_hub_compat():
    sys.modules.pop("rl_zoo3.push_to_hub", None)
    hub_sb3 = importlib.import_module("huggingface_sb3.push_to_hub")
    if hasattr(hub_sb3, "generate_metadata"):
        pytest.skip("the installed huggingface_sb3 still has generate_metadata: the compat is not needed")
    with pytest.raises(ImportError, match="generate_metadata"):
        importlib.import_module("rl_zoo3.push_to_hub")
    sys.modules.pop("rl_zoo3.push_to_hub", None)
    with _compat.hub_commands_compat():
        push_to_hub = importlib.import_module("rl_zoo3.push_to_hub")
        metadata = hub_sb3.generate_metadata("APO", "CartPole-v1", 1.0, 0.5)
    sys.modules.pop("rl_zoo3.push_to_hub", None)
    assert not hasattr(hub_sb3, "generate_metadata")  # removed again after the block
    # what rl-zoo3 does with it: the card's metadata block
    assert metadata["library_name"] == "stable-baselines3" and "CartPole-v1" in metadata["tags"]
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["value"] == "1.00 +/- 0.50"
    assert callable(push_to_hub.package_to_hub) and callable(push_to_hub.save_model_card)


def test_a_file_missing_from_a_hub_repository_is_the_http_error_rl_zoo3_catches(monkeypatch):
    import huggingface_sb3
    from huggingface_hub.errors import EntryNotFoundError
    from requests.exceptions import HTTPError

    def missing(repo_id, filename, **kwargs):
        raise EntryNotFoundError(f"{filename} not in {repo_id}")

    monkeypatch.setenv("TRUST_REMOTE_CODE", "True")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", missing)
    with pytest.raises(EntryNotFoundError):  # what rl_zoo3.load_from_hub does not catch
        huggingface_sb3.load_from_hub("orga/repo", "vec_normalize.pkl")
    with _compat.hub_commands_compat(), pytest.raises(HTTPError, match="vec_normalize.pkl"):
        huggingface_sb3.load_from_hub("orga/repo", "vec_normalize.pkl")


def test_record_training_videos_run_through_our_launcher(monkeypatch):
    calls = []
    monkeypatch.setattr(_compat.subprocess, "call", lambda args, *rest, **kwargs: calls.append(args) or 0)
    with _compat.record_video_with_our_launcher():
        import subprocess

        subprocess.call(["python", "-m", "rl_zoo3.record_video", "--algo", "apo"])
        subprocess.call(["ffmpeg", "-i", "x.mp4"])
    assert calls == [[sys.executable, "-m", "sb3_apo.record_video", "--algo", "apo"], ["ffmpeg", "-i", "x.mp4"]]


def test_env_builder_builds_the_managers_training_envs(tmp_path):
    """A Ray actor's shard, from the zoo's recipe, is the launcher's env stack with the same seeded envs."""
    import numpy as np
    from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

    from sb3_apo.common.env_recipe import recipe_of
    from sb3_apo.zoo import register_algorithms
    from sb3_apo.zoo.exp_manager import ZooExperimentManager

    register_algorithms()
    manager = ZooExperimentManager(
        rl_zoo3.train.argparse.Namespace(),
        "apo",
        "Pendulum-v1",
        str(tmp_path),
        hyperparams={"n_envs": 4, "normalize": True, "frame_stack": 2},
        n_timesteps=64,
        seed=3,
    )
    model, _ = manager.setup_experiment()
    whole = model.get_env()
    recipe = recipe_of(whole)
    assert recipe is not None and recipe.n_envs == 4 and recipe.seed == 3
    shard = recipe.build(2, 2)
    assert isinstance(shard, VecFrameStack) and isinstance(shard.venv, VecNormalize)
    np.testing.assert_array_equal(shard.unwrapped.envs[0].reset(seed=5)[0], whole.unwrapped.envs[2].reset(seed=5)[0])
    shard.seed(3 + 2)  # as an actor of envs 2-3 seeds them
    raw = np.concatenate([venv.reset(seed=3 + index)[0][None] for index, venv in enumerate(whole.unwrapped.envs)])
    np.testing.assert_array_equal(shard.venv.venv.reset(), raw[2:])
