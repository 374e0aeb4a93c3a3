"""
Every use of a private API of Optuna or rl-zoo3, in one place.

Neither library offers a public hook for what the zoo needs here, so these
pieces depend on internals. They were tested with Optuna 5.0 and rl-zoo3 2.9.2;
``pyproject.toml`` pins the range (``optuna>=5.0,<5.1``, ``rl_zoo3>=2.9.2,<2.10``)
and ``tests/test_zoo_compat.py`` checks each piece against the installed
versions. When a new release breaks one, only this module changes.

Optuna:

- :class:`HeartbeatJournalStorage` implements Optuna's private heartbeat
  protocol (``optuna.storages._heartbeat.BaseHeartbeat``, with its abstract
  ``_get_stale_trial_ids``) for the journal file storage; Optuna only runs the
  heartbeat thread and ``fail_stale_trials`` for storages of that type.
- :func:`repair_torn_journal` relies on the journal file's format: one JSON
  record per line, appended under the lock file ``<journal>.lock``.
- :func:`mute_interrupted_trial_log` filters the logger of Optuna's
  optimisation loop (``optuna.study._optimize``), which logs an interrupted
  trial with a full traceback.

rl-zoo3:

- :func:`run_rl_zoo3_train` runs ``rl_zoo3.train.train()`` with another
  experiment manager class: ``train()`` builds its manager from the module
  attribute ``rl_zoo3.train.ExperimentManager`` and has no parameter for it.
- :func:`default_hyperparameters`, :func:`create_sampler` and
  :func:`create_pruner` read the manager's protected members
  ``_hyperparams``, ``_create_sampler`` and ``_create_pruner``.
- :func:`env_builder` keeps, from an experiment manager, the attributes that its
  ``create_envs()`` reads, so that a Ray actor elsewhere builds the same envs.
- :func:`record_video_with_our_launcher` redirects the ``python -m
  rl_zoo3.record_video`` subprocesses of ``rl_zoo3.record_training``.

The Hugging Face Hub integration (``huggingface_sb3``, installed by rl-zoo3 2.9.2 as
``sb3-team-hf-integration``, whose only release, 3.2, is pinned in ``.ci/constraints.txt``):

- :func:`hub_commands_compat` restores, for the duration of a hub command, what rl-zoo3 2.9.2
  expects of the older ``huggingface-sb3`` 3.0 and ``huggingface_hub`` 0.x: the function
  ``huggingface_sb3.push_to_hub.generate_metadata`` (3.2 renamed it ``_generate_metadata``, so
  that ``rl_zoo3.push_to_hub`` cannot be imported), and a ``requests`` ``HTTPError`` for a file
  missing from a model repository (``rl_zoo3.load_from_hub`` catches that to skip a missing
  ``vec_normalize.pkl``; ``huggingface_hub`` 2 raises its own ``EntryNotFoundError``). The
  older ``huggingface-sb3`` 3.0 cannot be installed instead: it requires ``huggingface_hub<1``,
  and ``sb3-team-hf-integration`` 3.2 requires ``huggingface_hub>=2``.
- :func:`card_written_before_upload` rewrites the model card of the folder that
  ``rl_zoo3.push_to_hub`` uploads, just before ``HfApi.upload_folder`` sends it.
"""

import contextlib
import importlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import BaseJournalBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from rl_zoo3.exp_manager import ExperimentManager

#: The trial system attribute where :class:`HeartbeatJournalStorage` records a trial's last heartbeat (Unix time).
HEARTBEAT_ATTR = "sb3_apo:heartbeat"

#: The logger of Optuna's optimisation loop (``optuna/study/_optimize.py``).
OPTIMIZE_LOGGER = "optuna.study._optimize"

StaleTrialCallback = Callable[[optuna.Study, FrozenTrial], None]


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """
    Optuna's journal storage plus the heartbeat of :class:`~optuna.storages.RDBStorage`.

    A running trial's heartbeat is the Unix time stored in its system attribute
    :data:`HEARTBEAT_ATTR`. The workers compare it with their own clock, so the
    workers sharing one journal file should have synchronised clocks (true on one
    machine; use NTP, or a long ``grace_period``, across NFS).

    :param backend: the journal backend (usually a :class:`~optuna.storages.journal.JournalFileBackend`)
    :param heartbeat_interval: seconds between two heartbeats of a running trial
    :param grace_period: seconds without a heartbeat after which a running trial is declared dead
    :param stale_trial_callback: called with each trial declared dead (after it is set to ``FAIL``)
    """

    def __init__(
        self,
        backend: BaseJournalBackend,
        *,
        heartbeat_interval: int,
        grace_period: int,
        stale_trial_callback: StaleTrialCallback | None = None,
    ):
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        """
        Record that the trial's worker is alive.

        :param trial_id: the storage id of a running trial of this worker
        """
        # If the trial already finished (or another worker declared it dead), there is nothing left to keep alive.
        with contextlib.suppress(UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """
        The running trials whose last heartbeat is older than the grace period.

        :param study_id: the storage id of the study
        :return: their storage ids
        """
        deadline = time.time() - self._grace_period
        return [
            self.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            # As in RDBStorage, a trial that never recorded a heartbeat is not judged.
            if isinstance(trial.system_attrs.get(HEARTBEAT_ATTR), (int, float))
            and trial.system_attrs[HEARTBEAT_ATTR] < deadline
        ]

    def get_heartbeat_interval(self) -> int | None:
        """:return: the seconds between two heartbeats of a running trial"""
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleTrialCallback | None:
        """:return: the callback called with each trial declared dead"""
        return self._stale_trial_callback


def repair_torn_journal(path: str | os.PathLike[str]) -> int:
    """
    Remove a torn last record (the start of a line a crashed writer never finished) from
    an Optuna journal file, keeping every complete record.

    Optuna skips such a partial line while reading, but the next record appended after it
    is glued to it, and the journal can no longer be read at all. The check runs under the
    journal's own lock, so a record being written by a live worker is never mistaken for a
    torn one. The removed bytes are appended to ``<journal>.torn`` for inspection.

    :param path: the journal file
    :return: the number of bytes removed (0 when the file ends with a complete record)
    """
    path = Path(path)
    if _ends_with_complete_record(path):
        return 0  # the usual case, checked without the lock: a read-only journal stays readable
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as file:
            size = file.seek(0, os.SEEK_END)
            # Read backwards until the end of the last complete record.
            end, chunk = size, 4096
            tail = b""
            while end > 0:
                start = max(0, end - chunk)
                file.seek(start)
                tail = file.read(end - start) + tail
                newline = tail.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                end = start
            else:
                keep = 0
            if keep == size:
                return 0
            file.seek(keep)
            torn = file.read()
            with open(f"{path}.torn", "ab") as saved:
                saved.write(torn + b"\n")
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())
        return size - keep
    finally:
        lock.release()


def _ends_with_complete_record(path: Path) -> bool:
    """Whether a journal file is missing, empty or ends with a line separator."""
    if not path.is_file():
        return True
    with open(path, "rb") as file:
        if file.seek(0, os.SEEK_END) == 0:
            return True
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


class _MuteInterruptedTrial(logging.Filter):
    """Drops Optuna's report of an interrupted trial: a traceback, then a 'failed with value None' line."""

    def __init__(self) -> None:
        super().__init__()
        self.muted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None and issubclass(record.exc_info[0], KeyboardInterrupt):
            self.muted = True  # the loop ends after an interruption: what it logs next is about that trial
        return not self.muted


@contextlib.contextmanager
def mute_interrupted_trial_log() -> Iterator[None]:
    """
    Within the block, Optuna does not log a trial interrupted by Ctrl-C or SIGTERM
    (it would print the interruption's full traceback); the caller reports it in one line.
    """
    logger = logging.getLogger(OPTIMIZE_LOGGER)
    muting = _MuteInterruptedTrial()
    logger.addFilter(muting)
    try:
        yield
    finally:
        logger.removeFilter(muting)


def run_rl_zoo3_train(manager_class: type["ExperimentManager"]) -> None:
    """
    Run ``rl_zoo3.train.train()`` (which parses ``sys.argv``) with ``manager_class`` as its
    experiment manager, for this call only.

    :param manager_class: a subclass of :class:`rl_zoo3.exp_manager.ExperimentManager`
    """
    import rl_zoo3.train

    saved_manager = rl_zoo3.train.ExperimentManager
    rl_zoo3.train.ExperimentManager = manager_class  # type: ignore[misc]  # a class replaced: train() reads it
    try:
        rl_zoo3.train.train()
    finally:
        rl_zoo3.train.ExperimentManager = saved_manager  # type: ignore[misc]  # the class restored


def default_hyperparameters(manager: "ExperimentManager") -> dict[str, Any]:
    """
    :param manager: an experiment manager after ``setup_experiment()``
    :return: the preprocessed hyperparameters a trial starts from (before the sampler's)
    """
    return manager._hyperparams


def create_sampler(manager: "ExperimentManager") -> BaseSampler:
    """
    :param manager: an experiment manager
    :return: the Optuna sampler named by its ``--sampler``, seeded by its ``--seed``
    """
    return manager._create_sampler(manager.sampler)


def create_pruner(manager: "ExperimentManager") -> BasePruner:
    """
    :param manager: an experiment manager
    :return: the Optuna pruner named by its ``--pruner``
    """
    return manager._create_pruner(manager.pruner)


#: The attributes of rl-zoo3 2.9.2's ExperimentManager that create_envs() and _maybe_normalize() read.
_ENV_ATTRIBUTES = (
    "env_name",
    "env_kwargs",
    "eval_env_kwargs",
    "env_wrapper",
    "vec_env_class",
    "vec_env_kwargs",
    "vec_env_wrapper",
    "monitor_kwargs",
    "normalize",
    "normalize_kwargs",
    "frame_stack",
    "seed",
    "save_path",
    "verbose",
)


def env_builder(manager: "ExperimentManager", normalize: bool) -> "ExperimentManager":
    """
    A copy of ``manager`` that holds only what its ``create_envs()`` reads, to be pickled to a Ray
    actor and build the same training envs there (``create_envs(n, no_log=True)``).

    :param manager: the launcher's experiment manager, after ``setup_experiment()`` read the hyperparameters
    :param normalize: whether the training envs are in ``VecNormalize`` (also when their statistics were
        loaded from a trained agent without ``normalize`` in the hyperparameters)
    """
    from rl_zoo3.exp_manager import ExperimentManager

    builder = object.__new__(ExperimentManager)
    vars(builder).update({name: getattr(manager, name) for name in _ENV_ATTRIBUTES})
    builder.trained_agent = ""  # the statistics come from the learner, not from a file it may not have
    if normalize and not builder.normalize:
        builder.normalize, builder.normalize_kwargs = True, {}
    return builder


@contextlib.contextmanager
def record_video_with_our_launcher(before_recording: Callable[[], None] | None = None) -> Iterator[None]:
    """
    Within the block, the ``python -m rl_zoo3.record_video ...`` subprocesses that
    ``rl_zoo3.record_training`` starts (with ``subprocess.call``; rl-zoo3's own launcher knows
    none of this package's algorithms, and ``python`` may not be this interpreter) run
    ``python -m sb3_apo.record_video ...`` with this interpreter instead.

    :param before_recording: called before each recording (after rl-zoo3 has parsed its arguments)
    """
    original_call = subprocess.call

    def call(args: Sequence[str], *popen_args: Any, **popen_kwargs: Any) -> int:
        if isinstance(args, (list, tuple)) and list(args[1:3]) == ["-m", "rl_zoo3.record_video"]:
            if before_recording is not None:
                before_recording()
            args = [sys.executable, "-m", "sb3_apo.record_video", *args[3:]]
        return original_call(args, *popen_args, **popen_kwargs)

    subprocess.call = call  # type: ignore[assignment]  # the wrapper forwards all of call()'s arguments
    try:
        yield
    finally:
        subprocess.call = original_call


def _generate_metadata(model_name: str, env_id: str, mean_reward: float, std_reward: float) -> dict[str, Any]:
    """``generate_metadata`` of ``huggingface-sb3`` 3.0, as rl-zoo3 2.9.2 calls it: the card's metadata as a dict."""
    hub_sb3 = importlib.import_module("huggingface_sb3.push_to_hub")
    return hub_sb3._generate_metadata(model_name, env_id, mean_reward, std_reward).to_dict()


@contextlib.contextmanager
def hub_commands_compat() -> Iterator[None]:
    """
    Within the block, ``rl_zoo3.push_to_hub`` and ``rl_zoo3.load_from_hub`` run with the
    installed ``huggingface_sb3`` and ``huggingface_hub`` (see the module docstring).
    """
    import huggingface_sb3
    from huggingface_hub.errors import EntryNotFoundError
    from requests.exceptions import HTTPError

    # The module: the package's attribute `push_to_hub` is the function of the same name.
    hub_sb3 = importlib.import_module("huggingface_sb3.push_to_hub")

    original_load = huggingface_sb3.load_from_hub

    def load_from_hub(repo_id: str, filename: str) -> str:
        try:
            return original_load(repo_id, filename)
        except EntryNotFoundError as error:
            raise HTTPError(f"{filename} is not in {repo_id}: {error}") from error

    added_metadata = not hasattr(hub_sb3, "generate_metadata")
    if added_metadata:
        hub_sb3.generate_metadata = _generate_metadata  # type: ignore[attr-defined]  # added for the block
    huggingface_sb3.load_from_hub = load_from_hub
    try:
        yield
    finally:
        huggingface_sb3.load_from_hub = original_load
        if added_metadata:
            del hub_sb3.generate_metadata


@contextlib.contextmanager
def card_written_before_upload(write_card: Callable[[Path], None]) -> Iterator[None]:
    """
    Within the block, ``HfApi.upload_folder`` first calls ``write_card(folder)``, which rewrites
    the folder's ``README.md`` (``rl_zoo3.push_to_hub`` writes rl-zoo3's card, whose commands
    cannot run this package's algorithms, and uploads it at once).

    :param write_card: rewrites the model card of the folder about to be uploaded
    """
    from huggingface_hub import HfApi

    original_upload = HfApi.upload_folder

    def upload_folder(self: HfApi, *args: Any, folder_path: str | Path, **kwargs: Any) -> Any:
        write_card(Path(folder_path))
        return original_upload(self, *args, folder_path=folder_path, **kwargs)

    HfApi.upload_folder = upload_folder  # type: ignore[method-assign]  # patched for the block
    try:
        yield
    finally:
        HfApi.upload_folder = original_upload  # type: ignore[method-assign]  # restored
