"""
rl-zoo3's ``ExperimentManager``, with the project's defaults and robust tuning.

:class:`ZooExperimentManager` subclasses rl-zoo3's manager and changes only:

- the default hyperparameters (:func:`sb3_apo.zoo.registry.find_hyperparams`): the
  project's ``<algo>.yml`` (shipped in the package) where it has an entry for the
  environment, else rl-zoo3's tuned ``ppo.yml`` entry for the PPO family, else the
  ``default`` entry; one printed line says which; rl-zoo3's other algorithms read
  rl-zoo3's own files;
- input checks that end in a :class:`~sb3_apo.zoo.errors.ZooError` (one clear
  line) instead of a traceback: a missing or malformed YAML file, an
  environment the file does not list, an invalid schedule, ``-n`` below 1, a
  storage that cannot be opened, an unknown study or trial; a failed setup
  removes the run folder it created;
- numbers PyYAML reads as strings (``learning_rate: 1e-3``) are read as numbers;
- ``--trial-id 0`` loads trial 0 (rl-zoo3 ignores it);
- ``--resume-from MODEL.zip`` continues a run cut short from a checkpoint laid out like
  rl-zoo3's run folder (``evaluations.npz`` and ``<env>/vecnormalize.pkl`` next to the model):
  rl-zoo3's ``-i`` loading, then the remaining timesteps with the timestep count, the
  schedules and the evaluation history going on (:meth:`ZooExperimentManager.learn`);
- hyperparameter optimisation with crash recovery: the storage is opened with a
  heartbeat (:mod:`sb3_apo.zoo.storage`), each trial records the worker that ran
  it, an interrupted trial is queued again, a lost storage is reported in one
  line, the recorded command line has its password masked, and the summary
  prints the best trial with the keyword arguments it stands for.

rl-zoo3's :meth:`~rl_zoo3.exp_manager.ExperimentManager.hyperparameters_optimization`
cannot be reused as it is: it opens the storage itself (without heartbeat),
records the command line with the database password, ends in a traceback when
no trial has completed, and pickles the live study (with its storage URL). The
override keeps rl-zoo3's sampler, pruner, objective and trial-count rule.
"""

import _thread
import argparse
import importlib
import math
import os
import pickle
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from pprint import pprint
from typing import Any, ClassVar

import numpy as np
import optuna
import yaml
from optuna.storages import BaseStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

from sb3_apo.common.env_recipe import EnvRecipe, attach_recipe
from sb3_apo.zoo._compat import create_pruner, create_sampler, default_hyperparameters, env_builder, mute_interrupted_trial_log
from sb3_apo.zoo.errors import Interrupted, ZooError, interrupting_signal
from sb3_apo.zoo.registry import HyperparamsSource, find_hyperparams
from sb3_apo.zoo.storage import (
    HeartbeatOptions,
    describe_storage,
    fail_stale_trials,
    mask_command,
    open_storage,
    storage_error,
)

#: Trial states counted by ``--max-total-trials`` (rl-zoo3's choice: running trials count, so that
#: workers do not overshoot; a crashed worker's trial stops counting once it is declared dead).
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

#: Seconds between two interruptions of the main thread when the storage is lost (one may be ignored).
INTERRUPT_REPEAT_S = 2.0

#: The hyperparameters rl-zoo3 turns into schedules: a number, or ``lin_<initial value>``.
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf", "delta_std")

#: A number in exponent notation without a decimal point (``1e-3``): a float in YAML 1.2, a string for PyYAML.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def worker_name() -> str:
    """This worker's name in the study (``host:pid``), stored in each trial's ``worker`` user attribute."""
    return f"{socket.gethostname()}:{os.getpid()}"


def requeue_trial(study: optuna.Study, trial_number: int, max_retry: int) -> bool:
    """
    Queue a copy of an interrupted trial (same hyperparameters, state ``WAITING``), the way
    Optuna's ``RetryHeartbeatStaleTrialCallback`` queues a dead worker's trial.

    :param study: the study
    :param trial_number: the number of the interrupted trial
    :param max_retry: how many copies one original trial may have
    :return: whether a copy was queued
    """
    trial = next(trial for trial in study.get_trials(deepcopy=False) if trial.number == trial_number)
    system_attrs = dict(trial.system_attrs)
    history = [*system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retry:
        return False
    system_attrs["failed_trial"] = system_attrs.get("failed_trial", trial.number)
    system_attrs["retry_history"] = history
    user_attrs = {key: value for key, value in trial.user_attrs.items() if key != "worker"}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    )
    return True


def read_yaml_numbers(value: Any) -> Any:
    """
    Read as numbers the strings PyYAML leaves for numbers in exponent notation without a
    decimal point (``1e-3``, ``3E5``), which YAML 1.2 and every reader take for floats.

    :param value: a hyperparameter value (mappings and lists are converted item by item)
    :return: the value, with such strings replaced by floats
    """
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return type(value)((key, read_yaml_numbers(item)) for key, item in value.items())
    if isinstance(value, list):
        return [read_yaml_numbers(item) for item in value]
    return value


def check_schedule(key: str, value: Any) -> None:
    """
    Check a schedule rl-zoo3 will build: a string must read ``lin_<initial value>`` with a
    positive, finite initial value.

    :param key: the hyperparameter, one of :data:`SCHEDULE_KEYS`
    :param value: its value
    :raises ZooError: naming the key and the accepted forms
    """
    if not isinstance(value, str):
        return
    kind, _, initial = value.partition("_")
    try:
        valid = kind == "lin" and math.isfinite(float(initial)) and float(initial) > 0
    except ValueError:
        valid = False
    if not valid:
        raise ZooError(
            f"Invalid {key} {value!r}: a schedule is a number or lin_<initial value> with a positive "
            f"initial value (for example {key}: lin_0.2 in the YAML file, or -params {key}:'\"lin_0.2\"')."
        )


def interruptible_signal() -> signal.Signals | None:
    """
    The signal whose Python handler can interrupt the main thread: SIGINT's, unless Ctrl-C is
    ignored (a worker started in the background by a shell without job control, e.g. ``nohup
    ... &`` in a script, inherits that, and ``_thread.interrupt_main()`` then does nothing),
    else SIGTERM's, which the launchers turn into a ``KeyboardInterrupt``.

    :return: the signal, or None when Python handles neither
    """
    for candidate in (signal.SIGINT, signal.SIGTERM):
        if callable(signal.getsignal(candidate)):
            return candidate
    return None


@dataclass(frozen=True)
class ZooEnvRecipe(EnvRecipe):
    """
    The training envs of an rl-zoo3 launch, built as its experiment manager builds them
    (``create_envs``: the env's kwargs and wrappers, ``VecNormalize``, frame stacking), so that
    Ray actors build their shards with the launch's settings (without Monitor files: the episodes
    reach the learner's logs).

    :param builder: what the manager's ``create_envs()`` reads (:func:`~sb3_apo.zoo._compat.env_builder`)
    :param n_envs: the number of envs
    :param seed: the launch's seed
    :param gym_packages: the ``--gym-packages`` that register the env, imported before it is built
    """

    builder: ExperimentManager
    n_envs: int
    seed: int | None
    gym_packages: tuple[str, ...] = ()

    def _build(self, n_envs: int, start_index: int) -> VecEnv:
        for module in self.gym_packages:
            importlib.import_module(module)
        return self.builder.create_envs(n_envs, eval_env=False, no_log=True)


class ZooExperimentManager(ExperimentManager):
    """
    rl-zoo3's experiment manager with the project's hyperparameter files, clear input
    errors and crash-tolerant distributed tuning (see the module docstring).

    It takes exactly the arguments of :class:`rl_zoo3.exp_manager.ExperimentManager`.

    :param args: the parsed command line (saved as ``args.yml`` next to the model, with the
        database password masked)
    :param algo: the ``--algo`` name
    :param env_id: the environment id
    :param log_folder: the root of the log folders
    :param manager_args: the other positional arguments of rl-zoo3's manager
    :param config: ``-conf``: a hyperparameter file or module; ``None``: the file that
        :func:`~sb3_apo.zoo.registry.find_hyperparams` finds for ``algo`` and the environment
    :param trial_id: ``--trial-id``: load this trial's hyperparameters from the study
    :param manager_kwargs: the other keyword arguments of rl-zoo3's manager
    """

    #: Crash-recovery settings of tuning workers; the launcher sets them from its command line.
    heartbeat: ClassVar[HeartbeatOptions] = HeartbeatOptions()
    #: ``--resume-from``: the checkpoint model a run cut short continues from (``None``: train from scratch).
    resume_from: ClassVar[str | None] = None

    def __init__(
        self,
        args: argparse.Namespace,
        algo: str,
        env_id: str,
        log_folder: str,
        *manager_args: Any,
        config: str | None = None,
        trial_id: int | None = None,
        **manager_kwargs: Any,
    ):
        super().__init__(  # type: ignore[misc]  # rl-zoo3 passes config and trial_id by keyword, never in manager_args
            args, algo, env_id, log_folder, *manager_args, config=config, trial_id=trial_id, **manager_kwargs
        )
        #: Where the hyperparameters come from when no ``-conf`` is given (``None``: the given file, or rl-zoo3's).
        self.hyperparams_source: HyperparamsSource | None = None
        if config is None:
            self.hyperparams_source = find_hyperparams(algo, self.env_name.gym_id, self.is_atari(self.env_name.gym_id))
            if self.hyperparams_source is not None:
                self.config = str(self.hyperparams_source.path)
        if self.n_timesteps < -1:  # 0 (the manager's default) and -1 (train's): "not given"
            raise ZooError(
                f"-n/--n-timesteps must be a positive number of steps, got {self.n_timesteps} "
                "(leave it out to train for the n_timesteps of the hyperparameter file)."
            )
        if self.resume_from is not None:
            if not (self.resume_from.endswith(".zip") and os.path.isfile(self.resume_from)):
                raise ZooError(f"--resume-from {self.resume_from}: no such model; give the .zip file of a checkpoint.")
            if self.trained_agent or self.optimize_hyperparameters:
                raise ZooError("--resume-from continues a run: it cannot be combined with -i/--trained-agent or -optimize.")
            # rl-zoo3's -i: the model, and the VecNormalize statistics in <env>/vecnormalize.pkl next to it
            self.trained_agent, self.continue_training = self.resume_from, True
        if trial_id is not None and not (self.storage and self.study_name):
            raise ZooError("--trial-id needs the study it belongs to: give --storage and --study-name too.")
        if self.optimize_hyperparameters and self.storage and not self.study_name:
            raise ZooError(
                "--storage needs --study-name: workers join one study by its name, and a study "
                "without a known name cannot be resumed."
            )
        # args.yml (and Weights & Biases) record the command line: never with the password.
        recorded = dict(vars(args))
        if isinstance(recorded.get("storage"), str):
            recorded["storage"] = describe_storage(recorded["storage"])
        self.args = argparse.Namespace(**recorded)
        self._tuning_storage: BaseStorage | None = None
        self._created_log_folder = False
        self._running_trial: int | None = None
        self._released_trial: int | None = None
        self._lost_storage: BaseException | None = None

    # ------------------------------------------------------------------ hyperparameters

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """
        Read the environment's entry of the hyperparameter file, after checking the file,
        then apply the ``--trial-id`` trial (also trial 0) and the ``-params`` overrides.

        :return: the hyperparameters, and the sorted copy saved as ``config.yml``
        """
        self._check_config()
        if self.hyperparams_source is not None:
            print(self.hyperparams_source.description)
        trial_id, self.trial_id = self.trial_id, None
        try:
            hyperparams, _ = super().read_hyperparameters()
        finally:
            self.trial_id = trial_id
        hyperparams = read_yaml_numbers(hyperparams)
        source = self.hyperparams_source
        if source is not None and (source.overrides or source.removed):
            for key in source.removed:
                hyperparams.pop(key, None)
            hyperparams.update(source.overrides)
            hyperparams.update(self.custom_hyperparams or {})
        if trial_id is not None and self.storage and self.study_name:
            print(f"Loading the hyperparameters of trial {trial_id} of study {self.study_name!r}")
            hyperparams.update(self.load_trial(self.storage, self.study_name, trial_id))
            if self.custom_hyperparams is not None:
                hyperparams.update(self.custom_hyperparams)
            print("Hyperparameters with the trial's values:")
            pprint(OrderedDict((key, hyperparams[key]) for key in sorted(hyperparams)))
        for key in SCHEDULE_KEYS:
            check_schedule(key, hyperparams.get(key))
        return hyperparams, OrderedDict((key, hyperparams[key]) for key in sorted(hyperparams))

    def _check_config(self) -> None:
        """Check a YAML hyperparameter file and that it has an entry for the environment."""
        config = self.config
        if not config.endswith((".yml", ".yaml")):
            return  # a Python file or module: rl-zoo3 imports it as it is
        path = Path(config)
        if not path.is_file():
            raise ZooError(f"Hyperparameter file {config} not found.")
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            where = ""
            mark = getattr(error, "problem_mark", None)
            if mark is not None:
                where = f" (line {mark.line + 1}, column {mark.column + 1})"
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ZooError(f"Malformed hyperparameter file {config}{where}: {problem}.") from error
        except (OSError, UnicodeDecodeError) as error:
            raise ZooError(f"Cannot read the hyperparameter file {config}: {error}.") from error
        if not isinstance(content, dict) or not all(isinstance(entry, dict) for entry in content.values()):
            raise ZooError(
                f"Malformed hyperparameter file {config}: it must map each environment id "
                "(or 'atari' / 'default') to a mapping of hyperparameters."
            )
        env_id = self.env_name.gym_id
        if env_id in content:
            entry = content[env_id]
        elif self.is_atari(env_id) and "atari" in content:
            entry = content["atari"]
        elif "default" in content:
            entry = content["default"]
        else:
            listed = ", ".join(sorted(content)) or "none"
            raise ZooError(
                f"No hyperparameters for {env_id} in {config} (algo {self.algo}). "
                f"Environments listed there: {listed}. Add an entry for {env_id} to a copy of "
                "that file and pass it with -conf, or choose one of the listed environments."
            )
        if "n_timesteps" not in entry and self.n_timesteps <= 0:
            raise ZooError(f"The entry of {env_id} in {config} has no n_timesteps; add one or pass -n.")

    def load_trial(self, storage: str, study_name: str, trial_id: int | None = None, convert: bool = True) -> dict[str, Any]:
        """
        The hyperparameters of one trial of a stored study.

        :param storage: ``--storage``; a journal file or SQLite database that does not exist is
            refused, not created
        :param study_name: ``--study-name``
        :param trial_id: the trial number; ``None``: the best trial
        :param convert: convert the raw study parameters into keyword arguments
        :return: the trial's hyperparameters
        """
        study = self._load_study(storage, study_name)
        trials = study.get_trials(deepcopy=False)
        if trial_id is None:
            completed = [trial for trial in trials if trial.state == TrialState.COMPLETE]
            if not completed:
                raise ZooError(f"Study {study_name!r} has no completed trial yet.")
            trial = study.best_trial
        else:
            numbered = {trial.number: trial for trial in trials}
            if trial_id not in numbered:
                known = f"its trials are numbered 0 to {len(trials) - 1}" if trials else "it has no trial yet"
                raise ZooError(f"Study {study_name!r} has no trial {trial_id}: {known}.")
            trial = numbered[trial_id]
        if trial.state != TrialState.COMPLETE:
            print(f"Warning: trial {trial.number} of study {study_name!r} is {trial.state.name}, not COMPLETE.")
        if not convert:
            return dict(trial.params)
        try:
            return HYPERPARAMS_CONVERTER[self.algo](trial.params)
        except KeyError as error:
            raise ZooError(
                f"Trial {trial.number} of study {study_name!r} cannot be converted for --algo {self.algo}: "
                f"its parameters ({', '.join(sorted(trial.params)) or 'none'}) miss {error}. "
                "Was the study run with another algorithm?"
            ) from error

    def _load_study(self, storage: str, study_name: str) -> optuna.Study:
        opened = open_storage(storage, create=False)
        try:
            return optuna.load_study(study_name=study_name, storage=opened)
        except KeyError as error:
            names = optuna.get_all_study_names(opened)
            known = ", ".join(repr(name) for name in names) or "none"
            raise ZooError(f"No study named {study_name!r} in {describe_storage(storage)}; studies there: {known}.") from error

    # ------------------------------------------------------------------ setup

    def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
        """rl-zoo3's envs; the training envs carry their recipe (:class:`ZooEnvRecipe`), for ``actor_backend="ray"``."""
        env = super().create_envs(n_envs, eval_env, no_log)
        if not eval_env:
            builder = env_builder(self, normalize=unwrap_vec_normalize(env) is not None)
            attach_recipe(env, ZooEnvRecipe(builder, n_envs, self.seed, tuple(getattr(self.args, "gym_packages", None) or ())))
        return env

    def create_log_folder(self) -> None:
        """rl-zoo3's run folder, remembering whether this launch created it (a failed setup removes it)."""
        self._created_log_folder = not os.path.exists(self.save_path)
        super().create_log_folder()

    def setup_experiment(self) -> tuple[BaseAlgorithm, dict[str, Any]] | None:
        """
        rl-zoo3's setup; when tuning against a storage, the storage is opened first so that an
        unreachable one fails before any environment is built. If the setup fails, the run
        folder it created is removed, and an invalid hyperparameter ends in a
        :class:`~sb3_apo.zoo.errors.ZooError`.

        :return: the model and its saved hyperparameters, or ``None`` when tuning
        """
        if self.optimize_hyperparameters and self.storage is not None:
            self._tuning_storage = open_storage(self.storage, self.heartbeat)
        try:
            return super().setup_experiment()
        except BaseException as error:
            if self._created_log_folder:
                shutil.rmtree(self.save_path, ignore_errors=True)
            if isinstance(error, (ValueError, TypeError, AssertionError)):
                raise ZooError(f"Cannot set up {self.algo} on {self.env_name.gym_id}: {error}") from error
            raise

    def create_callbacks(self) -> None:
        """
        rl-zoo3's callbacks; with ``--resume-from``, the evaluation callback starts with the
        checkpoint's history (``evaluations.npz`` next to the model, rl-zoo3's format), so that
        ``evaluations.npz`` covers the whole run and the best mean reward is the whole run's.
        """
        super().create_callbacks()
        if self.resume_from is None:
            return
        history = os.path.join(os.path.dirname(self.resume_from), "evaluations.npz")
        for callback in self.callbacks:
            if isinstance(callback, EvalCallback) and os.path.isfile(history):
                with np.load(history) as data:
                    callback.evaluations_timesteps = [int(step) for step in data["timesteps"]]
                    callback.evaluations_results = [list(row) for row in data["results"]]
                    callback.evaluations_length = [list(row) for row in data["ep_lengths"]]
                    if "successes" in data:
                        callback.evaluations_successes = [list(row) for row in data["successes"]]
                shutil.copyfile(history, f"{callback.log_path}.npz")  # the whole history, even before the next evaluation
                means = [float(np.mean(row)) for row in callback.evaluations_results]
                if means:  # as EvalCallback keeps them: the best and the last mean return
                    callback.best_mean_reward, callback.last_mean_reward = max(means), means[-1]

    def learn(self, model: BaseAlgorithm) -> None:
        """
        rl-zoo3's ``learn``; with ``--resume-from``, train the timesteps left to the budget with
        ``reset_num_timesteps=False``, so that ``num_timesteps``, the schedules (``lin_3e-4``
        reads the progress ``1 - num_timesteps / budget``) and the callbacks' step counters
        (hence the timesteps of the evaluations) go on where the checkpoint stopped.

        :param model: the model, loaded from the checkpoint when resuming
        """
        if self.resume_from is None:
            super().learn(model)
            return
        for callback in self.callbacks:
            callback.n_calls = model.num_timesteps // model.n_envs  # where an uninterrupted run's counters are
        kwargs: dict[str, Any] = {}
        if self.log_interval != -1:  # rl-zoo3's rule: -1 the default, below -1 no logging
            kwargs["log_interval"] = self.log_interval if self.log_interval > -1 else None
        try:
            model.learn(
                max(self.n_timesteps - model.num_timesteps, 0), callback=self.callbacks, reset_num_timesteps=False, **kwargs
            )
        except KeyboardInterrupt:  # as rl-zoo3: the model is saved when training is interrupted
            pass
        finally:
            if self.callbacks:  # as rl-zoo3, which ends its first callback here (a progress bar)
                self.callbacks[0].on_training_end()
            assert model.env is not None
            with suppress(EOFError):  # as rl-zoo3: a subprocess environment may be gone already
                model.env.close()

    # ------------------------------------------------------------------ tuning

    def objective(self, trial: optuna.Trial) -> float:
        """
        rl-zoo3's objective; also records the worker, and queues the trial again if the worker
        is interrupted (Ctrl-C, SIGTERM) in the middle of it.

        :param trial: the Optuna trial
        :return: the last mean evaluation reward
        """
        trial.set_user_attr("worker", worker_name())
        self._running_trial = trial.number
        try:
            value = super().objective(trial)
        except KeyboardInterrupt:  # the trial stays _running_trial for the report
            if self.storage is not None and requeue_trial(trial.study, trial.number, self.heartbeat.max_retry):
                self._released_trial = trial.number
            raise
        except BaseException:
            self._running_trial = None
            raise
        self._running_trial = None
        return value

    def hyperparameters_optimization(self) -> None:
        """
        Run this worker's share of the study, then print and save a summary.

        Workers that share ``--storage`` and ``--study-name`` join one study; with
        ``--max-total-trials`` they stop together once the study has that many
        complete, pruned or running trials.

        :raises Interrupted: on Ctrl-C or SIGTERM, after queuing the current trial again
        :raises ZooError: when the storage is lost (the database server stopped)
        """
        if self.verbose > 0:
            print("Optimizing hyperparameters")
        if self.tensorboard_log is not None:
            print("Tensorboard log is deactivated when running hyperparameter optimization")
            self.tensorboard_log = None
        storage = self._tuning_storage
        if self.storage is not None and storage is None:
            storage = open_storage(self.storage, self.heartbeat)
        if self.verbose > 0:
            where = "in memory" if self.storage is None else describe_storage(self.storage)
            print(f"Sampler: {self.sampler} - Pruner: {self.pruner} - Storage: {where} - Worker: {worker_name()}")
        try:
            study = optuna.create_study(
                sampler=create_sampler(self),
                pruner=create_pruner(self),
                storage=storage,
                study_name=self.study_name,
                load_if_exists=True,
                direction="maximize",
            )
            if "command" not in study.user_attrs:
                study.set_user_attr("command", " ".join(mask_command(sys.orig_argv)))
                hyperparams = default_hyperparameters(self)
                for key in sorted(hyperparams):
                    study.set_user_attr(key, str(hyperparams[key]))
            try:
                with mute_interrupted_trial_log(), self._stop_when_storage_lost():
                    fail_stale_trials(study)
                    self._optimize(study)
            except KeyboardInterrupt as interrupt:
                if self._lost_storage is not None:
                    raise self._lost_storage_error(self._lost_storage) from self._lost_storage
                if self.storage is None:  # the report is the only record of an in-memory study
                    self._summarise(study)
                raise self._interrupted(interrupt) from None
            self._summarise(study)
        except Exception as error:
            lost = storage_error(error) if self.storage is not None else None
            if lost is not None:
                raise self._lost_storage_error(lost) from error
            raise

    @contextmanager
    def _stop_when_storage_lost(self) -> Iterator[None]:
        """
        Within the block, a thread that fails because the storage is gone (Optuna's heartbeat
        thread, when the database server stops) interrupts the main thread instead of printing
        a traceback, so that the worker stops at once with one clear line.
        """
        previous_hook = threading.excepthook
        left_block = threading.Event()
        interrupting = interruptible_signal()

        def interrupt_until_the_block_is_left() -> None:
            # Python ignores an interruption that lands in a finalizer ("Exception ignored in ..."),
            # and training would go on: repeat it until the main thread has left the block.
            while interrupting is not None and not left_block.is_set():
                _thread.interrupt_main(interrupting)
                left_block.wait(INTERRUPT_REPEAT_S)

        def hook(args: "threading.ExceptHookArgs") -> None:
            lost = storage_error(args.exc_value) if args.exc_value is not None and self.storage is not None else None
            if lost is None:
                previous_hook(args)
            elif self._lost_storage is None:
                self._lost_storage = lost
                threading.Thread(target=interrupt_until_the_block_is_left, daemon=True).start()

        previous_unraisable_hook = sys.unraisablehook

        def unraisable_hook(unraisable: "sys.UnraisableHookArgs") -> None:
            # One of the interruptions above, landed in a finalizer: Python would print it with a
            # traceback ("Exception ignored in ..."); the next one follows within INTERRUPT_REPEAT_S.
            if not (self._lost_storage is not None and isinstance(unraisable.exc_value, KeyboardInterrupt)):
                previous_unraisable_hook(unraisable)

        threading.excepthook, sys.unraisablehook = hook, unraisable_hook
        try:
            yield
        finally:
            left_block.set()
            threading.excepthook, sys.unraisablehook = previous_hook, previous_unraisable_hook

    def _lost_storage_error(self, lost: BaseException) -> ZooError:
        """The one-line report of a storage that went away (``lost``: the database error)."""
        assert self.storage is not None
        reason = str(getattr(lost, "orig", None) or lost).strip().splitlines() or [type(lost).__name__]
        return ZooError(
            f"Lost the storage {describe_storage(self.storage)} ({reason[0]}): this worker stops. "
            "The finished trials are safe in it; start the workers again once it is back, "
            "and the running trials will be queued again."
        )

    def _optimize(self, study: optuna.Study) -> None:
        """rl-zoo3's loop: ``--n-trials`` for this worker, or up to ``--max-total-trials`` for the study."""
        if self.max_total_trials is None:
            study.optimize(self.objective, n_jobs=self.n_jobs, n_trials=self.n_trials, gc_after_trial=True)
            return
        existing = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
        if existing >= self.max_total_trials:
            print(f"The study already has {existing} trials (--max-total-trials {self.max_total_trials}).")
            return
        callback = MaxTrialsCallback(self.max_total_trials, states=COUNTED_STATES)
        study.optimize(self.objective, n_jobs=self.n_jobs, callbacks=[callback], gc_after_trial=True)

    def _interrupted(self, interrupt: KeyboardInterrupt) -> Interrupted:
        """The one-line report of a worker stopped by Ctrl-C or SIGTERM."""
        stopped_by = interrupting_signal(interrupt)
        name, status = stopped_by.name, 128 + stopped_by.value
        if self.storage is None:
            return Interrupted(f"interrupted by {name}: the in-memory study ends with the report above.", status)
        where = describe_storage(self.storage)
        if self._released_trial is not None:
            what = f"trial {self._released_trial} was released for retry (queued again for the next worker)"
        elif self._running_trial is not None:
            what = f"trial {self._running_trial} was marked FAIL (already retried --max-retry times)"
        else:
            what = "no trial was running"
        return Interrupted(f"interrupted by {name}: {what}; the finished trials are safe in {where}.", status)

    def _summarise(self, study: optuna.Study) -> None:
        """Print the study's trial counts and best trial; save the trial table and a picklable copy."""
        trials = study.get_trials(deepcopy=False)
        counts = {state.name.lower(): sum(trial.state == state for trial in trials) for state in TrialState}
        print(f"Number of finished trials: {sum(trial.state.is_finished() for trial in trials)}")
        print("Trials: " + ", ".join(f"{count} {name}" for name, count in counts.items() if count))
        completed = [trial for trial in trials if trial.state == TrialState.COMPLETE]
        if completed:
            best = study.best_trial
            print(f"Best trial: {best.number}")
            print(f"Value: {best.value}")
            print("Params: ")
            for key, value in best.params.items():
                print(f"    {key}: {value}")
            try:
                kwargs = HYPERPARAMS_CONVERTER[self.algo](best.params)
            except KeyError:  # a trial drawn by another sampler: its raw parameters say it all
                kwargs = {}
            if kwargs:
                print("Hyperparameters (model keyword arguments): ")
                for key, value in kwargs.items():
                    print(f"    {key}: {value}")
            print("User Attributes: ")
            for key, value in best.user_attrs.items():
                print(f"    {key}: {value}")
            if self.storage is not None:
                print(
                    f"Train with them: --storage {describe_storage(self.storage)} "
                    f"--study-name {self.study_name} --trial-id {best.number}"
                )
        else:
            print("No trial has completed yet: no best trial.")

        report_name = (
            f"report_{self.env_name}_{self.n_trials}-trials-{self.n_timesteps}"
            f"-{self.sampler}-{self.pruner}_{int(time.time())}_{os.getpid()}"
        )
        log_path = os.path.join(self.log_folder, self.algo, report_name)
        if self.verbose:
            print(f"Writing report to {log_path}")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        study.trials_dataframe().to_csv(f"{log_path}.csv")
        # A copy in memory: the live study holds its storage, whose URL has the password.
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            snapshot = optuna.create_study(study_name=study.study_name, direction=study.direction)
        finally:
            optuna.logging.set_verbosity(verbosity)
        snapshot.add_trials([trial for trial in trials if trial.state.is_finished()])
        for key, value in study.user_attrs.items():
            snapshot.set_user_attr(key, value)
        with open(f"{log_path}.pkl", "wb") as file:
            pickle.dump(snapshot, file)

        if self.no_optim_plots or len(completed) < 2:
            return
        try:
            from optuna.visualization import plot_optimization_history, plot_param_importances

            plot_optimization_history(study).write_html(f"{log_path}_history.html")
            plot_param_importances(study).write_html(f"{log_path}_importances.html")
            print(f"Plots written to {log_path}_*.html")
        except ImportError:
            print("Plots skipped: install plotly to get them (or pass --no-optim-plots).")
        except (ValueError, RuntimeError) as error:
            print(f"Plots skipped: {error}")
