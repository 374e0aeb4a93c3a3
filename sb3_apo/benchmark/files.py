"""
Small file helpers shared by the runner, the training callback and the report.

Everything the benchmark writes is plain text (JSON, CSV, Markdown), so that a
results folder can be committed, diffed and read without this package.
"""

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
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


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """
    Write a CSV file; ``None`` and non-finite floats become empty cells.

    :param path: the file to write
    :param header: the column names
    :param rows: the rows, each as long as ``header``
    """

    def cell(value: Any) -> Any:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return ""
        return value

    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in rows:
            writer.writerow([cell(value) for value in row])


def read_csv_columns(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """
    Read a numeric CSV file (such as SB3's ``progress.csv``) column by column.

    Empty or non-numeric cells become NaN; a row shorter than the header (a
    file cut off while being written) is padded with NaN.

    :param path: the file to read
    :return: one float array per column, all of the same length
    """
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]

    def number(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return math.nan

    columns: dict[str, np.ndarray] = {}
    for index, name in enumerate(header):
        columns[name] = np.array([number(row[index]) if index < len(row) else math.nan for row in body], dtype=float)
    return columns


def safe_name(text: str) -> str:
    """
    A folder name for an env id, algorithm or variant: path separators and
    characters other than letters, digits, ``.``, ``_``, ``-`` and ``+`` become ``_``.

    :param text: the name to clean
    """
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)
