"""
Small file helpers shared by the runner, the training callback and the report.

Everything the benchmark writes is plain text (JSON, CSV, Markdown), so that a
results folder can be committed, diffed and read without this package.
"""

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

#: Version of the run folder format, written into every ``done.json``.
FORMAT_VERSION = 1

# Names of the files in a run folder (see docs/benchmarks.md).
DONE_FILE = "done.json"
FAILED_FILE = "failed.json"
SETTINGS_FILE = "settings.json"
COMMAND_FILE = "command.txt"
STDOUT_FILE = "stdout.log"
DIAGNOSTICS_FILE = "diagnostics.csv"
EVALUATIONS_CSV = "evaluations.csv"
EVALUATIONS_NPZ = "evaluations.npz"
PROGRESS_FILE = "progress.json"
TRAINING_FILE = "training.json"
ZOO_FOLDER = "zoo"
#: Environment variable in which the grid runner gives its process id to the runs it starts.
RUNNER_PID_VARIABLE = "SB3_APO_BENCHMARK_RUNNER_PID"


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """
    Write a text file so that readers see either the old content or the new one,
    never a partial file: write a temporary file in the same folder, flush it to
    disk, then rename it over ``path``.

    :param path: the file to write
    :param text: its new content
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        folder_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder_fd)
    except OSError:
        pass
    finally:
        os.close(folder_fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def to_json(obj: Any) -> str:
    """
    JSON text of ``obj``, indented; numpy values become numbers, other unknown
    objects their ``repr``, and non-finite floats ``null``.

    :param obj: the object to serialise
    """
    return json.dumps(_finite(obj), indent=2, default=_json_default) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(key): _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """
    Write ``obj`` as JSON with :func:`atomic_write_text`.

    :param path: the file to write
    :param obj: a JSON-serialisable object
    """
    atomic_write_text(path, to_json(obj))


def read_json(path: str | os.PathLike[str]) -> Any:
    """
    Read a JSON file.

    :param path: the file to read
    """
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def safe_name(text: str) -> str:
    """
    A folder name for an env id, algorithm or variant: path separators and
    characters other than letters, digits, ``.``, ``_``, ``-`` and ``+`` become ``_``.

    :param text: the name to clean
    """
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)
