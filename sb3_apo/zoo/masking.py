"""
Commands and storage URLs as they may be recorded: the masking of database passwords
wherever a storage or a command line is printed or recorded, the interpreter written
``python`` in a recorded command, and ``--storage env:NAME``, which reads the
storage URL from the environment variable ``NAME`` so that its password never appears on
a command line (which every user of the machine sees in ``ps``).

This module needs neither Optuna nor rl-zoo3 (SQLAlchemy, when installed, parses the URLs),
so that the benchmark's grid runner can mask the launcher commands it records.
"""

import os
import re
import sys
from collections.abc import Sequence

#: The prefix of ``--storage env:NAME``: the storage URL is the value of the environment variable ``NAME``.
ENV_PREFIX = "env:"

#: How a recorded command names the interpreter that runs it (the command as a reader runs it, on any machine).
RECORDED_PYTHON = "python"

#: ``scheme://user:password@`` in a URL that SQLAlchemy cannot parse (or without SQLAlchemy).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")
#: ``password=...`` or ``passwd=...`` in a URL's query string.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd)=)[^&\s]*", re.IGNORECASE)


def is_journal(storage: str) -> bool:
    """
    Whether ``--storage`` names a journal file rather than a database URL (rl-zoo3's rule).

    :param storage: the value of ``--storage`` (after :func:`resolve_storage`)
    """
    return storage.endswith(".log")


def resolve_storage(storage: str) -> str:
    """
    The storage that ``--storage`` names: ``env:NAME`` is the value of the environment
    variable ``NAME``; anything else is itself.

    :param storage: the value of ``--storage``
    :return: a journal file or a database URL
    :raises ValueError: when the variable is not set or empty
    """
    if not storage.startswith(ENV_PREFIX):
        return storage
    name = storage[len(ENV_PREFIX) :]
    value = os.environ.get(name, "")
    if not name or not value:
        raise ValueError(
            f"--storage {storage}: the environment variable {name!r} is not set or empty; "
            f"--storage {ENV_PREFIX}NAME reads the storage URL from the variable NAME."
        )
    return value


def describe_storage(storage: str) -> str:
    """
    The storage as it may be printed or recorded: a database password, in the URL's
    credentials or in its query string (``?password=...``), is replaced by ``***``.

    :param storage: the value of ``--storage``
    """
    if is_journal(storage) or "://" not in storage:
        return storage
    try:
        from sqlalchemy.engine import make_url

        url = make_url(storage)
    except Exception:  # not a URL SQLAlchemy reads (or no SQLAlchemy): mask what looks like a password
        return _QUERY_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>:***@", storage))
    secrets = {key: "***" for key in url.query if key.lower() in ("password", "passwd")}
    if secrets:
        url = url.update_query_dict(secrets)
    return url.render_as_string(hide_password=True)


def mask_command(argv: Sequence[str]) -> list[str]:
    """
    A command line as it may be recorded: every database URL in it (``--storage URL`` or
    ``--storage=URL``) has its password masked by :func:`describe_storage`.

    :param argv: the command line, one argument per item
    :return: the same arguments, masked
    """
    masked = []
    for argument in argv:
        option, equals, value = argument.partition("=")
        if equals and option.startswith("-"):
            masked.append(f"{option}={describe_storage(value)}")
        else:
            masked.append(describe_storage(argument))
    return masked


def recorded_command(argv: Sequence[str]) -> list[str]:
    """
    A command line as it is recorded (``command.txt``, ``runner_commands.txt``, the study's
    ``command`` attribute) and printed, so that it runs on another machine from the same
    folder (the repository root, by convention): the interpreter that runs this process,
    ``sys.executable``, is written ``python``; an absolute path under the current working
    directory, alone or inside an argument (``--out=/repo/results/x``, a JSON callback's
    folder), is written relative to it; and database passwords are masked (:func:`mask_command`).

    :param argv: the command line, one argument per item (the interpreter first)
    :return: the command as it may be recorded
    """
    command = list(argv)
    if command and command[0] and os.path.realpath(command[0]) == os.path.realpath(sys.executable):
        command[0] = RECORDED_PYTHON
    return mask_command([_relative_to_working_directory(argument) for argument in command])


def _relative_to_working_directory(argument: str) -> str:
    """``argument`` with every absolute path under the current working directory written relative to it."""
    cwd = os.getcwd()
    if os.path.dirname(cwd) == cwd:  # the file system's root: every absolute path is under it, keep them
        return argument
    if argument == cwd:
        return os.curdir
    # the prefix where it starts the argument or follows a separator (space, =, quote, colon, comma, bracket),
    # and only with its own separator after it: /repo-old/x and sqlite:////repo/x are kept
    return re.sub(rf"(?:^|(?<=[\s=\"':,\[])){re.escape(cwd + os.sep)}", "", argument)
