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
    A command line as it is recorded (``command.txt``, the study's ``command`` attribute) and
    printed: the interpreter that runs this process, ``sys.executable`` (an absolute path of
    this machine), is written ``python``, and database passwords are masked (:func:`mask_command`).

    :param argv: the command line, one argument per item (the interpreter first)
    :return: the command as it may be recorded
    """
    command = list(argv)
    if command and command[0] and os.path.realpath(command[0]) == os.path.realpath(sys.executable):
        command[0] = RECORDED_PYTHON
    return mask_command(command)
