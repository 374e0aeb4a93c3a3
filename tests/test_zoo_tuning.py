"""
Distributed tuning through the launcher: two worker processes sharing a journal
file, then a real PostgreSQL server, ``--trial-id`` reloading a trial, and a
worker killed in the middle of a trial.

Budgets are tiny (CartPole, one environment, 512 steps per trial).
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

pytest.importorskip("rl_zoo3", reason="the zoo extra (rl_zoo3) is not installed")

from optuna.storages import BaseStorage, JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from sb3_apo import APO  # noqa: E402
from sb3_apo.apo.apo import parse_anchor_coef  # noqa: E402
from sb3_apo.zoo import cli  # noqa: E402
from sb3_apo.zoo._compat import HEARTBEAT_ATTR  # noqa: E402
from sb3_apo.zoo.errors import ZooError  # noqa: E402
from sb3_apo.zoo.hyperparams_opt import convert_ppo_family_params  # noqa: E402
from sb3_apo.zoo.storage import open_storage  # noqa: E402

pytestmark = pytest.mark.slow  # tuning workers in subprocesses, PostgreSQL

MAX_TOTAL_TRIALS = 4
HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "4"]
GRACE_PERIOD = 4.0


def tuning_args(
    storage: str, study_name: str, logs: Path, seed: int, n_timesteps: int = 512, max_total_trials: int = MAX_TOTAL_TRIALS
) -> list[str]:
    """A worker's command line: every trial is 512 steps of CartPole in one environment."""
    return [
        "--algo",
        "apo",
        "--env",
        "CartPole-v1",
        "-optimize",
        "--storage",
        storage,
        "--study-name",
        study_name,
        "--max-total-trials",
        str(max_total_trials),
        "-n",
        str(n_timesteps),
        "--n-evaluations",
        "1",
        "--eval-episodes",
        "2",
        "--num-threads",
        "1",
        "-params",
        "n_envs:1",
        "--no-optim-plots",
        "-f",
        str(logs),
        "--seed",
        str(seed),
        *HEARTBEAT,
    ]


def start_worker(
    args: list[str], log_file: Path, ctrl_c: str = "handled", env: dict[str, str] | None = None
) -> subprocess.Popen:
    """
    Start ``python -m sb3_apo.train`` with its output in a file.

    ``ctrl_c="ignored"`` starts it as a shell without job control starts a background command
    (``nohup ... &`` in a script): with SIGINT ignored, which Python then leaves ignored.
    Otherwise SIGINT is restored to its default, whatever this process inherited. ``env``: further
    environment variables of the worker.
    """
    output = open(log_file, "w")  # noqa: SIM115  (closed by finish_worker)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **(env or {})}
    disposition = {"handled": signal.SIG_DFL, "ignored": signal.SIG_IGN}[ctrl_c]
    return subprocess.Popen(
        [sys.executable, "-m", "sb3_apo.train", *args],
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=log_file.parent,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, disposition),
    )


def finish_worker(process: subprocess.Popen, log_file: Path, timeout: float = 240) -> str:
    """Wait for a worker; return its output."""
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is None
    return log_file.read_text()


def load_study(storage: BaseStorage | str, study_name: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=storage)


def journal(path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


def run_two_workers(storage: str, study_name: str, tmp_path: Path) -> list[str]:
    """Two workers started together on one study; return their outputs."""
    logs = tmp_path / "logs"
    files = [tmp_path / f"worker{index}.txt" for index in range(2)]
    workers = [start_worker(tuning_args(storage, study_name, logs, seed=index), files[index]) for index in range(2)]
    outputs = [finish_worker(worker, file) for worker, file in zip(workers, files)]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output
    return outputs


def check_shared_study(study: optuna.Study, outputs: list[str]) -> None:
    """Both workers joined one study, which ran --max-total-trials trials; each worker reported."""
    created = sum("A new study created" in output for output in outputs)
    joined = sum("Using an existing study" in output for output in outputs)
    assert (created, joined) == (1, 1), outputs
    trials = study.get_trials(deepcopy=False)
    finished = [trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # Two workers ending trials at the same instant can each start one more: rl-zoo3's MaxTrialsCallback semantics.
    assert MAX_TOTAL_TRIALS <= len(finished) <= MAX_TOTAL_TRIALS + 1
    assert not [trial for trial in trials if trial.state in (TrialState.RUNNING, TrialState.FAIL)]
    assert all(trial.user_attrs["worker"].endswith(tuple(f":{pid}" for pid in _pids(outputs))) for trial in finished)
    joined_output = "\n".join(outputs)
    assert "finished with value" in joined_output  # each trial's result
    for output in outputs:
        assert "Best trial:" in output and "Params:" in output and "Hyperparameters (model keyword arguments):" in output


def _pids(outputs: list[str]) -> list[str]:
    pids = []
    for output in outputs:
        for line in output.splitlines():
            if " - Worker: " in line:
                pids.append(line.rsplit(":", 1)[-1].strip())
    return pids


def check_trial_reload(storage: str, study: optuna.Study, trial_number: int, tmp_path: Path) -> None:
    """``--trial-id`` trains with exactly the keyword arguments the trial was drawn with."""
    logs = tmp_path / "reload"
    args = ["--algo", "apo", "--env", "CartPole-v1", "--storage", storage, "--study-name", study.study_name]
    args += ["--trial-id", str(trial_number), "-n", "256", "-params", "n_envs:1", "--eval-freq", "-1"]
    args += ["--num-threads", "1", "-f", str(logs), "--seed", "0"]
    assert cli.train(args) == 0
    expected = convert_ppo_family_params(study.trials[trial_number].params)
    run = logs / "apo" / "CartPole-v1_1"
    config = yaml.load((run / "CartPole-v1" / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    for key, value in expected.items():
        assert config[key] == value, key
    model = APO.load(run / "CartPole-v1.zip", device="cpu")
    assert model.n_steps == expected["n_steps"] and model.batch_size == expected["batch_size"]
    assert model.anchor_mode == expected["anchor_mode"]
    initial_anchor_coef, adaptive = parse_anchor_coef(expected["anchor_coef"])
    assert model.adaptive_anchor_coef == adaptive
    assert adaptive or model.anchor_coef == initial_anchor_coef  # an adaptive one has moved during training
    assert model.gamma == expected["gamma"] and model.n_epochs == expected["n_epochs"]
    assert model.policy_kwargs["net_arch"] == expected["policy_kwargs"]["net_arch"]


# ---------------------------------------------------------------------------- journal file


@pytest.mark.slow
def test_two_workers_share_a_journal_file_then_trial_id_reloads(tmp_path, capsys):
    storage = str(tmp_path / "study.log")
    outputs = run_two_workers(storage, "journal-study", tmp_path)
    study = load_study(journal(tmp_path / "study.log"), "journal-study")
    check_shared_study(study, outputs)
    assert list((tmp_path / "logs" / "apo").glob("report_CartPole-v1_*.csv"))
    # Trial 0 on purpose: rl-zoo3 itself ignores --trial-id 0.
    check_trial_reload(storage, study, 0, tmp_path)
    assert "Loading the hyperparameters of trial 0" in capsys.readouterr().out


# ---------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path | None:
    for name in ("pg_ctl", "initdb"):
        if shutil.which(name) is None:
            break
    else:
        initdb = shutil.which("initdb")
        assert initdb is not None
        return Path(initdb).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL server: its URL (user ``postgres``, trust authentication) and a way to stop it."""

    url: str
    stop: Callable[[], None]

    def url_with_password(self, password: str) -> str:
        """The URL with a password, which trust authentication accepts and ignores."""
        return self.url.replace("postgres@", f"postgres:{password}@", 1)


@pytest.fixture()
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server on 127.0.0.1, started from the system's binaries (trust authentication)."""
    with _postgres() as server:
        yield server


#: The password of the user ``postgres`` of :func:`password_postgres_server`.
SERVER_PASSWORD = "Pw-in-the-environment-3"


@pytest.fixture()
def password_postgres_server() -> Iterator[PostgresServer]:
    """The same server, which asks TCP clients for :data:`SERVER_PASSWORD` (its URL has none)."""
    with _postgres(SERVER_PASSWORD) as server:
        yield server


@contextmanager
def _postgres(password: str | None = None) -> Iterator[PostgresServer]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver psycopg2 is not installed")
    # The server refuses to run as root: as root, run it as the `postgres` user in a folder it owns.
    prefix: list[str] = []
    owner: Any = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server")
        prefix = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="sb3-apo-pg-"))
    if owner is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, port = folder / "data", _free_port()

    def run(*command: str) -> None:
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    running = False

    def stop() -> None:
        nonlocal running
        if running:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
            running = False

    try:
        auth = ["--auth=trust"]
        if password is not None:
            password_file = folder / "password.txt"
            password_file.write_text(password + "\n")
            if owner is not None:
                os.chown(password_file, owner.pw_uid, owner.pw_gid)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"]
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", *auth, "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start")
        running = True
        try:
            yield PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", stop)
        finally:
            stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.url


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study_then_trial_id_reloads(postgres_url, tmp_path, capsys):
    outputs = run_two_workers(postgres_url, "postgres-study", tmp_path)
    study = load_study(open_storage(postgres_url), "postgres-study")  # picks the installed driver
    check_shared_study(study, outputs)
    best = study.best_trial.number
    check_trial_reload(postgres_url, study, best, tmp_path)
    assert f"Loading the hyperparameters of trial {best}" in capsys.readouterr().out


# ---------------------------------------------------------------------------- a worker killed mid-trial


def _wait_for_trial(
    storage: Path | str, study_name: str, process: subprocess.Popen, *, running: bool, timeout: float = 120
) -> optuna.trial.FrozenTrial:
    """
    Wait until the worker ``process`` has a trial that is running (with all its parameters drawn
    and a heartbeat recorded) or, with ``running=False``, any trial.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the worker ended early"
        try:
            opened = journal(storage) if isinstance(storage, Path) else open_storage(storage)
            trials = load_study(opened, study_name).get_trials(deepcopy=False)
        except (KeyError, FileNotFoundError):  # the study is not created yet
            trials = []
        for trial in trials:
            if not trial.user_attrs.get("worker", "").endswith(f":{process.pid}"):
                continue
            # A database records heartbeats in a table of its own, the journal in a system attribute.
            beating = not isinstance(storage, Path) or HEARTBEAT_ATTR in trial.system_attrs
            # APO's sampler draws anchor_coef or anchor_target last: then every parameter is drawn
            drawn = bool({"anchor_coef", "anchor_target"} & trial.params.keys()) and beating
            if not running or (trial.state == TrialState.RUNNING and drawn):
                return trial
        time.sleep(0.2)
    raise AssertionError(f"worker {process.pid} started no trial in {timeout} s")


@pytest.mark.slow
def test_killed_worker_leaves_the_study_usable(tmp_path):
    storage_path, name, logs = tmp_path / "study.log", "kill-study", tmp_path / "logs"
    # The victim's trials are long (it is killed in the middle of one), the survivor's are short.
    victim_log, survivor_log = tmp_path / "victim.txt", tmp_path / "survivor.txt"
    victim = start_worker(tuning_args(str(storage_path), name, logs, seed=1, n_timesteps=10**7), victim_log)
    survivor = None
    try:
        killed = _wait_for_trial(storage_path, name, victim, running=True)
        survivor = start_worker(tuning_args(str(storage_path), name, logs, seed=2), survivor_log)
        _wait_for_trial(storage_path, name, survivor, running=False)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
        if survivor is not None and sys.exc_info()[0] is not None:
            survivor.kill()
    killed_at = time.time()

    # The other worker goes on and ends normally.
    survivor_output = finish_worker(survivor, survivor_log)
    assert survivor.returncode == 0, survivor_output
    study = load_study(journal(storage_path), name)
    done_before = {trial.number: trial.value for trial in study.trials if trial.state == TrialState.COMPLETE}
    assert done_before, survivor_output

    # A restarted worker declares the killed trial dead, runs its copy if nobody did, and completes the study.
    time.sleep(max(0.0, GRACE_PERIOD + 1 - (time.time() - killed_at)))
    restarted_log = tmp_path / "restarted.txt"
    restarted = start_worker(tuning_args(str(storage_path), name, logs, seed=3), restarted_log)
    restarted_output = finish_worker(restarted, restarted_log)
    assert restarted.returncode == 0, restarted_output

    trials = load_study(journal(storage_path), name).trials
    assert trials[killed.number].state == TrialState.FAIL
    copies = [trial for trial in trials if trial.system_attrs.get("failed_trial") == killed.number]
    assert len(copies) == 1 and copies[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert copies[0].params == trials[killed.number].params == killed.params
    finished = [trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == MAX_TOTAL_TRIALS
    assert not [trial for trial in trials if trial.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert [trial.number for trial in trials if trial.state == TrialState.FAIL] == [killed.number]
    # No completed trial was lost or changed.
    for number, value in done_before.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].value == value
    assert "Best trial:" in restarted_output


# ---------------------------------------------------------------------------- stopped workers, lost servers, secrets


def _last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.mark.slow
def test_sigterm_releases_the_running_trial_in_one_line(tmp_path):
    storage_path, name, log = tmp_path / "study.log", "term-study", tmp_path / "worker.txt"
    worker = start_worker(tuning_args(str(storage_path), name, tmp_path / "logs", seed=1, n_timesteps=10**7), log)
    try:
        running = _wait_for_trial(storage_path, name, worker, running=True)
        worker.send_signal(signal.SIGTERM)
        output = finish_worker(worker, log, timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 128 + signal.SIGTERM, output
    assert _last_line(output) == (
        f"sb3-apo-train: interrupted by SIGTERM: trial {running.number} was released for retry "
        f"(queued again for the next worker); the finished trials are safe in {storage_path}."
    )
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    trials = load_study(journal(storage_path), name).trials
    assert trials[running.number].state == TrialState.FAIL
    (copy,) = [trial for trial in trials if trial.system_attrs.get("failed_trial") == running.number]
    assert copy.state == TrialState.WAITING and copy.params == running.params


@pytest.mark.slow
@pytest.mark.parametrize("ctrl_c", ["handled", "ignored"])
def test_a_stopped_postgresql_server_is_reported_in_one_line(postgres_server, tmp_path, ctrl_c):
    name, log = "lost-study", tmp_path / "worker.txt"
    args = tuning_args(postgres_server.url, name, tmp_path / "logs", seed=1, n_timesteps=10**7)
    worker = start_worker(args, log, ctrl_c=ctrl_c)
    try:
        _wait_for_trial(postgres_server.url, name, worker, running=True)
        postgres_server.stop()
        output = finish_worker(worker, log, timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 1, output
    last = _last_line(output)
    assert last.startswith(f"sb3-apo-train: error: Lost the storage {postgres_server.url} ("), output
    assert "this worker stops. The finished trials are safe in it" in last
    assert "Traceback" not in output and "UnboundLocalError" not in output


def test_an_interruption_that_lands_in_a_finalizer_is_not_printed_once_the_storage_is_lost(tmp_path, monkeypatch):
    """The repeated interruptions of a lost storage print no "Exception ignored ... Traceback"; other errors still do."""
    import argparse

    from sb3_apo.zoo import exp_manager

    reported: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: reported.append(type(unraisable.exc_value)))
    manager = exp_manager.ZooExperimentManager(
        argparse.Namespace(), "apo", "CartPole-v1", str(tmp_path), storage="postgresql://postgres@127.0.0.1:1/postgres"
    )

    class Finalized:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    with manager._stop_when_storage_lost():
        Finalized(KeyboardInterrupt())  # before the storage is lost: reported as Python does
        manager._lost_storage = ConnectionRefusedError("server closed the connection")
        Finalized(KeyboardInterrupt())  # one of the block's own interruptions: not reported
        Finalized(ValueError("a bug in a finalizer"))
    Finalized(KeyboardInterrupt())  # the block left: the previous hook again
    assert reported == [KeyboardInterrupt, ValueError, KeyboardInterrupt]


def test_a_lost_storage_interrupts_the_worker_until_it_stops(tmp_path, monkeypatch):
    """Python ignores an interruption that lands in a finalizer: the worker is interrupted again until it stops."""
    import _thread
    import argparse
    import threading

    import sqlalchemy.exc

    from sb3_apo.zoo import exp_manager

    interruptions: list[float] = []
    monkeypatch.setattr(_thread, "interrupt_main", lambda signum: interruptions.append(time.monotonic()))
    monkeypatch.setattr(exp_manager, "INTERRUPT_REPEAT_S", 0.05)
    monkeypatch.setattr(exp_manager, "interruptible_signal", lambda: signal.SIGINT)
    manager = exp_manager.ZooExperimentManager(
        argparse.Namespace(), "apo", "CartPole-v1", str(tmp_path), storage="postgresql://postgres@127.0.0.1:1/postgres"
    )

    def fails_as_the_heartbeat_does():
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("server closed the connection"))

    with manager._stop_when_storage_lost():
        threading.Thread(target=fails_as_the_heartbeat_does).start()
        deadline = time.monotonic() + 10
        while len(interruptions) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(interruptions) >= 3  # the first two were "ignored"
    assert isinstance(manager._lost_storage, sqlalchemy.exc.OperationalError)
    left = len(interruptions)
    time.sleep(0.3)
    assert len(interruptions) <= left + 1  # none once the block is left (one may have been under way)


@pytest.mark.parametrize(
    ("sigint", "sigterm", "expected"),
    [
        (signal.default_int_handler, signal.SIG_DFL, signal.SIGINT),
        (signal.SIG_IGN, "launcher", signal.SIGTERM),  # started in the background: Ctrl-C ignored
        (signal.SIG_IGN, signal.SIG_DFL, None),
    ],
)
def test_the_interruption_uses_a_signal_python_handles(monkeypatch, sigint, sigterm, expected):
    from sb3_apo.zoo import exp_manager
    from sb3_apo.zoo.cli import _raise_keyboard_interrupt

    handlers = {signal.SIGINT: sigint, signal.SIGTERM: _raise_keyboard_interrupt if sigterm == "launcher" else sigterm}
    monkeypatch.setattr(exp_manager.signal, "getsignal", handlers.__getitem__)
    assert exp_manager.interruptible_signal() == expected


@pytest.mark.slow
def test_the_database_password_is_recorded_nowhere(postgres_server, tmp_path):
    password = "Pw-0f-the-study-9"
    url, name = postgres_server.url_with_password(password), "secret-study"
    logs = tmp_path / "logs"
    tuning = start_worker(tuning_args(url, name, logs, seed=1, max_total_trials=2, n_timesteps=256), tmp_path / "tune.txt")
    tune_output = finish_worker(tuning, tmp_path / "tune.txt")
    assert tuning.returncode == 0, tune_output
    reload_args = ["--algo", "apo", "--env", "CartPole-v1", "--storage", url, "--study-name", name, "--trial-id", "0"]
    reload_args += ["-n", "64", "-params", "n_envs:1", "n_steps:32", "batch_size:32", "--eval-freq", "-1", "-f", str(logs)]
    reload = start_worker(reload_args, tmp_path / "reload.txt")
    reload_output = finish_worker(reload, tmp_path / "reload.txt")
    assert reload.returncode == 0, reload_output

    # Every file the runs wrote (reports, trial table, args.yml, command.txt, config.yml, models, outputs) ...
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name.startswith("report_") and path.suffix == ".pkl" for path in written)
    assert any(path.name == "command.txt" for path in written) and any(path.name == "args.yml" for path in written)
    for path in written:
        assert password.encode() not in path.read_bytes(), path
    # ... and the study's attributes and its trials' attributes.
    storage = open_storage(postgres_server.url)
    study = load_study(storage, name)
    recorded = [study.user_attrs, storage.get_study_system_attrs(storage.get_study_id_from_name(name))]
    recorded += [attrs for trial in study.trials for attrs in (trial.user_attrs, trial.system_attrs)]
    assert password not in repr(recorded)
    assert "postgres:***@" in study.user_attrs["command"]
    (command_txt,) = [path for path in written if path.name == "command.txt"]
    assert "postgres:***@" in command_txt.read_text()


@pytest.mark.slow
def test_a_worker_takes_the_database_password_from_the_environment(password_postgres_server, tmp_path, monkeypatch):
    url = password_postgres_server.url  # no password in it
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(ZooError, match="Cannot connect to the database storage"):
        open_storage(url)
    # libpq reads PGPASSWORD for a URL without password
    monkeypatch.setenv("PGPASSWORD", SERVER_PASSWORD)
    optuna.create_study(study_name="pgpassword", storage=open_storage(url))
    monkeypatch.delenv("PGPASSWORD")
    # --storage env:NAME: the whole URL, password included, from a variable; the command line holds only its name
    variable = {"SB3_APO_TEST_STORAGE": password_postgres_server.url_with_password(SERVER_PASSWORD)}
    args = tuning_args("env:SB3_APO_TEST_STORAGE", "from-env", tmp_path / "logs", seed=1, max_total_trials=1, n_timesteps=256)
    worker = start_worker(args, tmp_path / "tune.txt", env=variable)
    output = finish_worker(worker, tmp_path / "tune.txt")
    assert worker.returncode == 0, output
    monkeypatch.setenv("PGPASSWORD", SERVER_PASSWORD)
    study = load_study(open_storage(url), "from-env")
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE]
    assert "--storage env:SB3_APO_TEST_STORAGE" in study.user_attrs["command"]
    for path in (path for path in tmp_path.rglob("*") if path.is_file()):
        assert SERVER_PASSWORD.encode() not in path.read_bytes(), path
