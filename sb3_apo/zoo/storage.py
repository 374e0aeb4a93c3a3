"""
Optuna storages for distributed tuning, with crash recovery.

``--storage`` takes either a journal file (a path ending in ``.log``: several
processes on one machine, or on several machines sharing an NFS folder) or a
database URL (``postgresql://...``, ``mysql+pymysql://...``, ``sqlite:///...``:
workers on several hosts), or ``env:NAME``, the name of an environment variable
that holds either (so that a password stays out of the command line, which every
user of the machine sees in ``ps``; PostgreSQL's own ``PGPASSWORD`` variable, or
a ``~/.pgpass`` file, serves a URL without password too). Both are opened here with a *heartbeat*: every
running trial records a heartbeat every ``interval`` seconds; a trial whose
heartbeat is older than ``grace_period`` belongs to a worker that crashed or was
killed, so the next worker to start a trial marks it ``FAIL`` and queues a copy
of it (same hyperparameters, state ``WAITING``) that the next free worker runs.
Completed trials are never touched.

Optuna's :class:`~optuna.storages.RDBStorage` has the heartbeat built in;
:class:`~sb3_apo.zoo._compat.HeartbeatJournalStorage` adds it to the journal
file storage, whose torn last record (a worker crashed while writing it) is
repaired when the file is opened. Database passwords are masked wherever a
storage or a command line is printed or recorded (:func:`describe_storage`,
:func:`mask_command`).
"""

import importlib.util
import json
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from sb3_apo.zoo._compat import HeartbeatJournalStorage, StaleTrialCallback, repair_torn_journal
from sb3_apo.zoo.errors import ZooError
from sb3_apo.zoo.masking import describe_storage, is_journal, resolve_storage
from sb3_apo.zoo.masking import mask_command as mask_command  # the launchers import it from here

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: How many times a database storage is opened again after a transient error while creating its tables
#: (several workers starting at once on an empty database race to create them).
RDB_OPEN_ATTEMPTS = 5


@dataclass(frozen=True)
class HeartbeatOptions:
    """
    How workers detect each other's crashes.

    :param interval: seconds between two heartbeats of a running trial; ``0`` switches the
        heartbeat (and so the recovery of killed trials) off
    :param grace_period: a running trial whose last heartbeat is older than this many seconds is
        declared dead; ``None``: three times ``interval``
    :param max_retry: how many times the hyperparameters of a dead trial are queued again
    """

    interval: int = 60
    grace_period: int | None = None
    max_retry: int = 3

    def __post_init__(self) -> None:
        if self.interval < 0:
            raise ZooError(f"--heartbeat-interval must be >= 0 seconds, got {self.interval}.")
        if self.grace_period is not None and self.grace_period <= self.interval:
            raise ZooError(
                f"--grace-period ({self.grace_period} s) must be longer than --heartbeat-interval ({self.interval} s)."
            )
        if self.max_retry < 0:
            raise ZooError(f"--max-retry must be >= 0, got {self.max_retry}.")

    @property
    def enabled(self) -> bool:
        """Whether running trials record a heartbeat."""
        return self.interval > 0

    @property
    def effective_grace_period(self) -> int:
        """The grace period in seconds, with the default filled in."""
        return self.grace_period if self.grace_period is not None else 3 * self.interval

    def stale_trial_callback(self) -> StaleTrialCallback:
        """The callback that queues a dead trial's hyperparameters again."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)


def open_storage(storage: str, heartbeat: HeartbeatOptions | None = None, *, create: bool = True) -> BaseStorage:
    """
    Open the storage named by ``--storage``, or explain why it cannot be opened.

    A journal file whose last record is torn (a worker crashed while writing it) is
    repaired first: see :func:`sb3_apo.zoo._compat.repair_torn_journal`.

    :param storage: a journal file (ending in ``.log``), a database URL, or ``env:NAME``: the
        journal file or URL in the environment variable ``NAME`` (a password in it stays off the command line)
    :param heartbeat: the crash-recovery settings of a tuning worker; ``None`` (or a disabled
        heartbeat) opens the storage without heartbeat, enough for reading a study
    :param create: create a journal file or SQLite database that does not exist yet;
        ``False`` (to read a study) refuses a missing file instead
    :return: the storage, ready for ``optuna.create_study`` / ``optuna.load_study``
    :raises ZooError: if the storage cannot be opened
    """
    if heartbeat is not None and not heartbeat.enabled:
        heartbeat = None
    try:
        storage = resolve_storage(storage)
    except ValueError as error:
        raise ZooError(str(error)) from error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if is_journal(storage):
            return _open_journal(storage, heartbeat, create)
        return _open_rdb(storage, heartbeat, create)


def _open_journal(path_name: str, heartbeat: HeartbeatOptions | None, create: bool) -> BaseStorage:
    path = Path(path_name)
    if path.is_dir():
        raise ZooError(f"The journal storage {path_name} is a folder; --storage needs a file name ending in .log.")
    if not create and not path.exists():
        raise ZooError(f"The journal storage {path_name} does not exist (a tuning run with -optimize creates it).")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_journal(path)
        removed = repair_torn_journal(path)
        if removed:
            print(
                f"Repaired the journal storage {path_name}: removed its torn last record ({removed} bytes, "
                f"left by a worker that crashed while writing; saved in {path_name}.torn)."
            )
        backend = JournalFileBackend(str(path))
        if heartbeat is None:
            return JournalStorage(backend)
        return HeartbeatJournalStorage(
            backend,
            heartbeat_interval=heartbeat.interval,
            grace_period=heartbeat.effective_grace_period,
            stale_trial_callback=heartbeat.stale_trial_callback(),
        )
    except OSError as error:
        raise ZooError(f"Cannot open the journal storage {path_name}: {error.strerror or error}.") from error
    except (ValueError, KeyError) as error:
        raise ZooError(f"The journal storage {path_name} is not a readable Optuna journal file: {error}.") from error


#: How every record of an Optuna journal file begins (Optuna writes each as compact JSON, ``op_code`` first).
JOURNAL_RECORD_START = b'{"op_code":'


def _check_journal(path: Path) -> None:
    """
    Refuse a file that is not an Optuna journal (a log file of something else, given to
    ``--storage`` by mistake), before anything is appended to it or repaired in it.

    :param path: the journal file; a missing or empty one is a new journal
    :raises ZooError: naming the file, when its first record is not a journal record
    """
    if not path.is_file():
        return
    with open(path, "rb") as file:
        first_line = file.readline()
    if not first_line:
        return
    is_record = first_line.startswith(JOURNAL_RECORD_START)
    if is_record and first_line.endswith(b"\n"):  # a complete record must be a JSON object
        try:
            is_record = isinstance(json.loads(first_line), dict)
        except ValueError:
            is_record = False
    if not is_record:
        raise ZooError(
            f"The storage {path} is not an Optuna journal file (its first line is not a journal record); "
            "--storage FILE.log must name a journal written by Optuna or a file that does not exist yet. "
            "Left unchanged."
        )


def _open_rdb(url: str, heartbeat: HeartbeatOptions | None, create: bool) -> BaseStorage:
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    shown = describe_storage(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as error:
        raise ZooError(
            f"--storage {url!r} is neither a journal file (a path ending in .log) nor a database URL "
            "(for example postgresql://user:password@host:5432/optuna or sqlite:///optuna.db)."
        ) from error
    parsed = _with_installed_driver(parsed)
    database = parsed.database or ""
    sqlite_file = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if not create and sqlite_file and not Path(database).exists():
        raise ZooError(f"The SQLite storage {database} does not exist (a tuning run with -optimize creates it).")
    url = parsed.render_as_string(hide_password=False)
    engine_kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in parsed.query:
        # Without a timeout, a firewalled host makes the worker wait for the operating system's TCP timeout.
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    heartbeat_kwargs: dict = {}
    if heartbeat is not None:
        heartbeat_kwargs = {
            "heartbeat_interval": heartbeat.interval,
            "grace_period": heartbeat.effective_grace_period,
            "heartbeat_stale_trial_callback": heartbeat.stale_trial_callback(),
        }
    for attempt in range(RDB_OPEN_ATTEMPTS):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat_kwargs)
        except ImportError as error:
            raise ZooError(
                f"Cannot open the database storage {shown}: its driver is not installed ({error.__cause__ or error}). "
                "For PostgreSQL: pip install psycopg2-binary; for MySQL: pip install pymysql."
            ) from error
        except sqlalchemy.exc.NoSuchModuleError as error:
            raise ZooError(f"Cannot open the database storage {shown}: unknown database dialect ({error}).") from error
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as error:
            # Workers starting together on an empty database race to create Optuna's tables: PostgreSQL reports
            # the loser's CREATE TABLE as an IntegrityError or ProgrammingError, SQLite as an OperationalError
            # ("table studies already exists", or "database is locked" while the winner writes).
            if isinstance(error, sqlalchemy.exc.OperationalError) and not _is_creation_race(error):
                reason = _first_line(error.orig or error)
                raise ZooError(f"Cannot connect to the database storage {shown}: {reason}") from error
            if attempt + 1 == RDB_OPEN_ATTEMPTS:
                raise ZooError(f"Cannot prepare the database storage {shown}: {_first_line(error.orig or error)}") from error
            time.sleep(0.5 + random.random())
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise ZooError(f"Cannot open the database storage {shown}: {_first_line(error)}") from error
    raise AssertionError("unreachable")  # the loop either returns or raises


#: For a URL without a driver (``postgresql://``): SQLAlchemy's default driver module, and the
#: installed alternatives to use instead when it is missing.
_DEFAULT_DRIVERS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "postgresql": ("psycopg", (("psycopg2", "psycopg2"), ("pg8000", "pg8000"))),
    "mysql": ("MySQLdb", (("pymysql", "pymysql"),)),
}


def _with_installed_driver(url: "URL") -> "URL":
    """
    Pick an installed driver for a URL that names none: SQLAlchemy 2.1 takes ``psycopg``
    (version 3) for ``postgresql://``, while many installations have ``psycopg2``.
    """
    if url.drivername not in _DEFAULT_DRIVERS:
        return url
    default_module, alternatives = _DEFAULT_DRIVERS[url.drivername]
    if importlib.util.find_spec(default_module) is not None:
        return url
    for module, driver in alternatives:
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=f"{url.drivername}+{driver}")
    return url


def _is_creation_race(error: BaseException) -> bool:
    """Whether SQLite's error means that another worker is creating (or has just created) the same tables."""
    text = str(getattr(error, "orig", None) or error).lower()
    return "already exists" in text or "database is locked" in text


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fail_stale_trials(study: optuna.Study) -> None:
    """
    Declare dead the running trials of crashed workers (and queue their copies) now,
    instead of waiting for the next trial to start; a no-op without heartbeat.

    :param study: the study to check
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def storage_error(error: BaseException) -> BaseException | None:
    """
    The database error behind an exception raised while tuning, if it means that the
    storage went away (the database server stopped or the connection dropped).

    :param error: the exception (its causes and contexts are searched too)
    :return: the database error, or ``None`` if the storage is not to blame
    """
    import sqlalchemy.exc

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return current
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return current
        current = current.__cause__ or current.__context__
    return None
