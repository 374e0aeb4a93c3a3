"""
Hardening of the launchers against bad input (issue 9): each case ends with one clear
line on standard error and a non-zero exit status, leaves nothing behind, and a
database password is never recorded. In-process, at tiny budgets.

The cases that need a worker process or a PostgreSQL server (SIGTERM, a server
stopping mid-run, the password in every file a tuning run writes) are in
``test_zoo_tuning.py``.
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

pytest.importorskip("rl_zoo3", reason="the zoo extra (rl_zoo3) is not installed")

from optuna.storages import JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
from rl_zoo3.exp_manager import ExperimentManager  # noqa: E402

from sb3_apo.zoo import cli  # noqa: E402
from sb3_apo.zoo.errors import ZooError  # noqa: E402
from sb3_apo.zoo.exp_manager import ZooExperimentManager, read_yaml_numbers  # noqa: E402
from sb3_apo.zoo.masking import recorded_command  # noqa: E402
from sb3_apo.zoo.registry import hyperparams_folder  # noqa: E402
from sb3_apo.zoo.storage import describe_storage, mask_command, open_storage  # noqa: E402

TINY_CARTPOLE = {
    "CartPole-v1": {
        "n_envs": 1,
        "n_timesteps": 64,
        "policy": "MlpPolicy",
        "n_steps": 32,
        "batch_size": 32,
        "n_epochs": 1,
    }
}


def train_args(tmp_path: Path, *extra: str, algo: str = "apo") -> list[str]:
    return ["--algo", algo, "--env", "CartPole-v1", "-f", str(tmp_path / "logs"), "--num-threads", "1", *extra]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The launcher's standard error, which must be exactly one line; return it."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def run_folders(tmp_path: Path, algo: str = "apo") -> list[Path]:
    return sorted((tmp_path / "logs" / algo).glob("CartPole-v1_*"))


# ---------------------------------------------------------------------------- hyperparameter files


def test_yaml_exponent_numbers_are_numbers(tmp_path, capsys):
    config = tmp_path / "exp.yml"
    config.write_text(yaml.safe_dump(TINY_CARTPOLE) + "  learning_rate: 1e-3\n  ent_coef: 1E-2\n")
    assert yaml.safe_load(config.read_text())["CartPole-v1"]["learning_rate"] == "1e-3"  # PyYAML's reading
    status = cli.train(train_args(tmp_path, "-conf", str(config), "--eval-freq", "-1"))
    assert status == 0, capsys.readouterr().err
    (run,) = run_folders(tmp_path)
    saved = yaml.load((run / "CartPole-v1" / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    assert saved["learning_rate"] == 0.001 and saved["ent_coef"] == 0.01


def test_the_recorded_command_names_the_interpreter_python(tmp_path, capsys, monkeypatch):
    config = tmp_path / "exp.yml"
    config.write_text(yaml.safe_dump(TINY_CARTPOLE))
    args = train_args(tmp_path, "-conf", str(config), "--eval-freq", "-1")
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "sb3_apo.train", *args])
    assert cli.train(args) == 0, capsys.readouterr().err
    (run,) = run_folders(tmp_path)
    recorded = (run / "CartPole-v1" / "command.txt").read_text()
    assert recorded.startswith("python -m sb3_apo.train --algo apo") and sys.executable not in recorded


@pytest.mark.parametrize(
    "entry",
    [
        "CartPole-v1:\n  n_steps: 32\n  n_epochs: 1\n  n_steps: 64\n",
        "CartPole-v1:\n  n_steps: 32\nCartPole-v1:\n  n_steps: 64\n",
    ],
)
def test_a_yaml_key_given_twice_is_refused(entry, tmp_path, capsys):
    config = tmp_path / "exp.yml"
    config.write_text(entry)
    assert cli.train(train_args(tmp_path, "-conf", str(config))) == 2
    line = one_error_line(capsys)
    key = "n_steps" if entry.count("CartPole") == 1 else "CartPole-v1"
    assert f"Hyperparameter file {config}: the key {key!r} is given twice (lines " in line
    assert not (tmp_path / "logs").exists()


def test_yaml_merge_keys_may_be_overridden_and_the_projects_files_give_each_key_once(tmp_path):
    config = tmp_path / "exp.yml"
    config.write_text("base: &base\n  n_steps: 32\nCartPole-v1:\n  <<: *base\n  n_steps: 64\n")
    cli.check_hyperparams_file(str(config))
    for path in sorted(hyperparams_folder().glob("*.yml")):
        cli.check_hyperparams_file(str(path))


def test_a_params_key_given_twice_is_refused(tmp_path, capsys):
    assert cli.train(train_args(tmp_path, "-params", "n_steps:32", "n_epochs:1", "-params", "n_steps:64")) == 2
    assert "-params gives n_steps twice" in one_error_line(capsys)
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    "options, expected",
    [
        (["-optimize", "--n-evaluations", "0"], "--n-evaluations must be a positive number of evaluations, got 0"),
        (["-optimize", "--n-trials", "-3"], "--n-trials must be a positive number of trials, got -3"),
        (["--eval-episodes", "0"], "--eval-episodes must be a positive number of episodes, got 0"),
        (["-optimize", "--n-evaluation", "0"], "--n-evaluations must be a positive number of evaluations, got 0"),
    ],
)
def test_counts_below_one_are_refused(options, expected, tmp_path, capsys):
    assert cli.train(train_args(tmp_path, *options, "-n", "64")) == 2
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "logs").exists()


def test_read_yaml_numbers_leaves_other_strings_alone():
    values = {"a": "1e-3", "b": "-2.5E+2", "c": "lin_1e-3", "d": "MlpPolicy", "e": ["3e2", "x"], "f": {"g": ".5e1"}}
    assert read_yaml_numbers(values) == {
        "a": 1e-3,
        "b": -250.0,
        "c": "lin_1e-3",
        "d": "MlpPolicy",
        "e": [300.0, "x"],
        "f": {"g": 5.0},
    }
    assert read_yaml_numbers("1.5") == "1.5"  # PyYAML reads those itself: not a string in a YAML file


def test_invalid_schedule_in_the_yaml_is_named(tmp_path, capsys):
    config = tmp_path / "exp.yml"
    config.write_text(yaml.safe_dump({"CartPole-v1": dict(TINY_CARTPOLE["CartPole-v1"], clip_range="lin_-0.2")}))
    assert cli.train(train_args(tmp_path, "-conf", str(config))) == 1
    line = one_error_line(capsys)
    assert "Invalid clip_range 'lin_-0.2'" in line and "positive initial value" in line
    assert not run_folders(tmp_path)


# ---------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("n_steps:abc", "-params n_steps:abc: the value abc is not a Python expression (NameError"),
        ("n_steps", "-params n_steps: expected KEY:VALUE"),
        ("clip_range:lin_-0.2", "-params clip_range:lin_-0.2: the value lin_-0.2 is not a Python expression"),
        ("n_steps:", "-params n_steps:: expected KEY:VALUE"),
        ("policy:dict(", "-params policy:dict(: the value dict( is not a Python expression (SyntaxError"),
    ],
)
def test_bad_params_item_is_named(item, expected, tmp_path, capsys):
    assert cli.train(train_args(tmp_path, "-params", "n_envs:1", item)) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"sb3-apo-train: error: {expected}"), line
    assert "clip_range:'\"lin_0.2\"'" in line  # how to write one
    assert not (tmp_path / "logs").exists()


def test_quoted_negative_schedule_is_named(tmp_path, capsys):
    assert cli.train(train_args(tmp_path, "-params", "clip_range:'lin_-0.2'")) == 1
    assert "Invalid clip_range 'lin_-0.2'" in one_error_line(capsys)


@pytest.mark.parametrize("steps", ["-5", "0", "-1"])
def test_n_timesteps_below_one_is_refused(steps, tmp_path, capsys):
    assert cli.train(train_args(tmp_path, "-n", steps)) == 2
    line = one_error_line(capsys)
    assert f"-n/--n-timesteps must be a positive number of steps, got {steps}" in line
    assert not (tmp_path / "logs").exists()


def test_track_with_a_password_in_the_storage_is_refused(tmp_path, capsys):
    storage = "postgresql+psycopg2://optuna:s3cret@127.0.0.1:1/optuna"
    assert cli.train(train_args(tmp_path, "--track", "--storage", storage)) == 2
    line = one_error_line(capsys)
    assert "--track would send the --storage URL" in line and "s3cret" not in line
    assert not (tmp_path / "logs").exists()


def test_manager_refuses_negative_n_timesteps(tmp_path):
    with pytest.raises(ZooError, match="got -5"):
        ZooExperimentManager(argparse.Namespace(), "apo", "CartPole-v1", str(tmp_path), n_timesteps=-5)


def test_malformed_n_is_left_to_rl_zoo3s_parser(tmp_path, capsys):
    assert cli.train(train_args(tmp_path, "-n", "abc")) == 2
    err = capsys.readouterr().err
    assert err.count("invalid int value: 'abc'") == 1 and "Traceback" not in err


def test_failed_setup_leaves_no_run_folder(tmp_path, capsys):
    config = tmp_path / "exp.yml"
    config.write_text(yaml.safe_dump(TINY_CARTPOLE))
    # SB3 refuses the policy once the run folder and the environment exist.
    assert cli.train(train_args(tmp_path, "-conf", str(config), "-params", "policy:'NoSuchPolicy'")) == 1
    line = one_error_line(capsys)
    assert "Cannot set up apo on CartPole-v1" in line and "NoSuchPolicy" in line
    assert (tmp_path / "logs" / "apo").is_dir() and not run_folders(tmp_path)
    # A run folder that existed before a failed launch is left alone.
    kept = tmp_path / "logs" / "apo" / "CartPole-v1_1"
    (kept / "CartPole-v1").mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    assert cli.train(train_args(tmp_path, "-conf", str(config), "-params", "policy:'NoSuchPolicy'")) == 1
    assert (kept / "notes.txt").read_text() == "mine" and run_folders(tmp_path) == [kept]


# ---------------------------------------------------------------------------- storages


@pytest.mark.parametrize("storage", ["absent.log", "sqlite:///{tmp}/absent.db"])
def test_trial_id_on_a_missing_storage_creates_nothing(storage, tmp_path, capsys):
    storage = storage.format(tmp=tmp_path) if "{tmp}" in storage else str(tmp_path / storage)
    args = train_args(tmp_path, "--storage", storage, "--study-name", "s", "--trial-id", "0")
    assert cli.train(args) == 1
    line = one_error_line(capsys)
    assert "does not exist (a tuning run with -optimize creates it)" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_open_storage_repairs_a_torn_journal(tmp_path, capsys):
    path = tmp_path / "study.log"
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    with open(path, "ab") as file:
        file.write(b'{"op_code":4,"worker_id":"crashed')
    capsys.readouterr()
    storage = open_storage(str(path), create=False)
    assert "Repaired the journal storage" in capsys.readouterr().out
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    trials = optuna.load_study(study_name="s", storage=open_storage(str(path))).trials
    assert len(trials) == 3 and all(trial.state.is_finished() for trial in trials)
    assert (tmp_path / "study.log.torn").read_bytes().startswith(b'{"op_code":4')


def test_a_file_that_is_not_a_journal_is_refused_and_left_unchanged(tmp_path, capsys):
    for content in (b"2024-01-01 training started\nloss 0.5\n", b"not a journal, no newline", b'{"op_code"x\n'):
        path = tmp_path / "junk.log"
        path.write_bytes(content)
        with pytest.raises(ZooError, match="is not an Optuna journal file"):
            open_storage(str(path))
        assert path.read_bytes() == content and not (tmp_path / "junk.log.torn").exists()
    args = train_args(tmp_path, "-optimize", "--storage", str(path), "--study-name", "s", "-n", "64")
    assert cli.train(args) == 1
    assert "is not an Optuna journal file" in one_error_line(capsys)
    assert path.read_bytes() == content


def test_the_storage_may_come_from_an_environment_variable(tmp_path, capsys, monkeypatch):
    journal = tmp_path / "study.log"
    monkeypatch.setenv("SB3_APO_TEST_STORAGE", str(journal))
    optuna.create_study(study_name="s", storage=open_storage("env:SB3_APO_TEST_STORAGE")).optimize(
        lambda trial: trial.suggest_float("x", 0, 1), n_trials=1
    )
    assert len(optuna.load_study(study_name="s", storage=open_storage(str(journal), create=False)).trials) == 1
    monkeypatch.delenv("SB3_APO_TEST_STORAGE")
    with pytest.raises(ZooError, match="the environment variable 'SB3_APO_TEST_STORAGE' is not set"):
        open_storage("env:SB3_APO_TEST_STORAGE")
    args = train_args(tmp_path, "-optimize", "--storage", "env:SB3_APO_TEST_STORAGE", "--study-name", "s", "-n", "64")
    assert cli.train(args) == 2
    assert "--storage env:SB3_APO_TEST_STORAGE: the environment variable" in one_error_line(capsys)


def test_workers_creating_the_tables_of_a_new_sqlite_file_together_retry(tmp_path, monkeypatch):
    import sqlite3

    import sqlalchemy.exc

    from sb3_apo.zoo import storage as storage_module

    real = storage_module.RDBStorage
    calls = []

    def racing(*args, **kwargs):
        # what the worker that loses the race sees: its CREATE TABLE after the winner's
        calls.append(args)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError(
                "CREATE TABLE studies", {}, sqlite3.OperationalError("table studies already exists")
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_module, "RDBStorage", racing)
    monkeypatch.setattr(storage_module.time, "sleep", lambda seconds: None)
    opened = open_storage(f"sqlite:///{tmp_path / 'new.db'}")
    optuna.create_study(study_name="s", storage=opened)
    assert len(calls) == 2


def test_passwords_are_masked_in_urls_and_command_lines():
    url = "postgresql+psycopg2://optuna:s3cret@db:5432/optuna"
    assert describe_storage(url) == "postgresql+psycopg2://optuna:***@db:5432/optuna"
    assert "s3cret" not in describe_storage("postgresql://db/optuna?user=optuna&password=s3cret")
    assert describe_storage("logs/study.log") == "logs/study.log"
    command = ["python", "-m", "sb3_apo.train", "--storage", url, f"--storage={url}", "-params", "n_steps:64"]
    masked = mask_command(command)
    assert "s3cret" not in " ".join(masked)
    assert masked[:3] == command[:3] and masked[-2:] == command[-2:]
    assert masked[4] == describe_storage(url) and masked[5] == f"--storage={describe_storage(url)}"


def test_a_recorded_command_names_paths_under_the_working_directory_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    callback = f'callback:[{{"Cb": {{"folder": "{tmp_path}/results/run"}}}}]'
    command = [sys.executable, "-m", "sb3_apo.train", "-f", f"{tmp_path}/logs", f"--out={tmp_path}/o", "-params", callback]
    outside = [f"{tmp_path}-old/x", f"sqlite:///{tmp_path}/study.db", str(tmp_path)]
    assert recorded_command(command + outside) == [
        "python", "-m", "sb3_apo.train", "-f", "logs", "--out=o", "-params", 'callback:[{"Cb": {"folder": "results/run"}}]',
        f"{tmp_path}-old/x", f"sqlite:///{tmp_path}/study.db", ".",
    ]  # fmt: skip


# ---------------------------------------------------------------------------- interrupted tuning


def _objective_stopped_by_sigterm(self: ExperimentManager, trial: optuna.Trial) -> float:
    """Stands for rl-zoo3's objective: draws a parameter, then the worker receives SIGTERM."""
    trial.suggest_float("x", 0, 1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the launcher's handler interrupts this at once
    raise AssertionError("SIGTERM was not delivered")


@pytest.mark.parametrize("storage", [None, "study.log"])
def test_sigterm_to_a_tuning_worker_is_one_line(storage, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ExperimentManager, "objective", _objective_stopped_by_sigterm)
    args = train_args(tmp_path, "-optimize", "--n-trials", "2", "-n", "64", "-params", "n_envs:1", "--no-optim-plots")
    if storage is not None:
        storage = str(tmp_path / storage)
        args += ["--storage", storage, "--study-name", "s"]
    assert cli.train(args) == 128 + signal.SIGTERM
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "KeyboardInterrupt" not in captured.err
    last = captured.err.strip().splitlines()[-1]
    reports = list((tmp_path / "logs" / "apo").glob("report_*.pkl"))
    if storage is None:  # the report is the in-memory study's only record
        assert last == "sb3-apo-train: interrupted by SIGTERM: the in-memory study ends with the report above."
        assert "Number of finished trials: 1" in captured.out and len(reports) == 1
        return
    assert last == (
        "sb3-apo-train: interrupted by SIGTERM: trial 0 was released for retry (queued again for the next worker); "
        f"the finished trials are safe in {storage}."
    )
    assert not reports
    trials = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(storage))).trials
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0
