"""
Small file helpers shared by the runner and the training callback.

Everything the benchmark writes is plain text (JSON, CSV, Markdown), so that a
results folder can be committed, diffed and read without this package.
"""

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

#: Version of the run folder format, written into every ``done.json`` and ``diverged.json``.
FORMAT_VERSION = 1

# Names of the files in a run folder (see docs/benchmarks.md).
DONE_FILE = "done.json"
#: Written instead of ``done.json`` when training diverged: the run's final outcome, never retried.
DIVERGED_FILE = "diverged.json"
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
RESUMES_FILE = "resumes.json"
#: The code (git commit, uncommitted changes) that a run's first launch ran; each resume records its own.
CODE_FILE = "code.json"
#: The run's checkpoints, one folder each, named by its timestep (``checkpoints/1000000/``).
CHECKPOINTS_FOLDER = "checkpoints"
#: In a checkpoint folder: the model, and the record written last (timestep, file digests, callback state).
CHECKPOINT_MODEL = "model.zip"
CHECKPOINT_RECORD = "checkpoint.json"
#: Environment variable in which the grid runner gives its process id to the runs it starts.
RUNNER_PID_VARIABLE = "SB3_APO_BENCHMARK_RUNNER_PID"


def _plain(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones, paths as text, non-finite floats as ``None``."""
    if isinstance(obj, (np.generic, np.ndarray)):
        obj = obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(key): _plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(value) for value in obj]
    return str(obj) if isinstance(obj, Path) else obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """
    Write ``obj`` as indented JSON (numpy values as numbers, non-finite floats as ``null``,
    other unknown objects as their ``repr``) so that readers see either the old content or
    the new one, never a partial file: a temporary file in the same folder, flushed to disk,
    is renamed over ``path``, and the folder is flushed too.

    :param path: the file to write
    :param obj: the object to write
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(json.dumps(_plain(obj), indent=2, default=repr) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    fsync_folder(path.parent)  # make the rename itself durable


def fsync_folder(path: str | os.PathLike[str]) -> None:
    """
    Flush a folder's entries to disk, so that a rename into it survives a crash.

    :param path: the folder
    """
    folder = os.open(path, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


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


def file_digest(path: str | os.PathLike[str]) -> str:
    """
    The SHA-256 digest of a file, in hexadecimal.

    :param path: the file
    """
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def valid_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """
    A run's complete checkpoints, the latest first: the folders ``checkpoints/<timestep>/`` whose
    ``checkpoint.json`` names that timestep and whose every listed file has the recorded digest.
    A temporary folder left by a run killed while writing one, or a damaged checkpoint, is not listed.

    :param folder: the run folder
    """
    found = []
    root = Path(folder) / CHECKPOINTS_FOLDER
    for path in root.iterdir() if root.is_dir() else ():
        if not path.name.isdigit():
            continue
        try:
            record = read_json(path / CHECKPOINT_RECORD)
            digests = record["files"]
            complete = record["timesteps"] == int(path.name) and CHECKPOINT_MODEL in digests
            complete = complete and all(file_digest(path / name) == digest for name, digest in digests.items())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable, or not what the callback writes
            complete = False
        if complete:
            found.append(path)
    return sorted(found, key=lambda path: int(path.name), reverse=True)
