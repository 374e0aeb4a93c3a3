"""
The grid runner: algorithms x environments x variants x seeds, each run a
subprocess of the rl-zoo3-style launcher, N at a time, resumable.

A run's folder is ``<results>/<env>/<algo>/<variant>/seed_<seed>/``. The runner
writes ``settings.json`` and ``command.txt`` when the run starts, and
``done.json`` last, atomically, once the run has trained its whole budget and
its files are in place: a folder with ``done.json`` is finished and never run
again. A run whose training diverged (the launcher exits with
:data:`~sb3_apo.zoo.errors.EXIT_DIVERGED`: a non-finite loss or gradient) gets
``diverged.json`` instead, with its evaluations so far: that is its outcome, and it is
never run again either. A folder with neither (an interrupted or failed run) is deleted and the
run starts again from scratch, unless the grid writes checkpoints
(``GridSettings.checkpoint_freq``) and the folder has a complete one made with the
same settings: then the run resumes from its latest checkpoint (the launcher's
``--resume-from``). See ``docs/benchmarks.md`` for every file.
"""

import argparse
import ast
import contextlib
import datetime
import io
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from tqdm import tqdm

from sb3_apo.benchmark import files
from sb3_apo.zoo.errors import EXIT_DIVERGED
from sb3_apo.zoo.masking import mask_command, recorded_command

#: The name of the variant without overrides.
BASE_VARIANT = "base"
#: Dotted path of the diagnostics callback given to the launcher.
CALLBACK_PATH = "sb3_apo.benchmark.callbacks.DiagnosticsCSVCallback"
#: Launcher options the runner sets itself; passing them (or an abbreviation of them) as extra arguments is an error.
RESERVED_OPTIONS: tuple[str, ...] = (
    "--algo",
    "--env",
    "--seed",
    "-f",
    "--log-folder",
    "-params",
    "--hyperparams",
    "-n",
    "--n-timesteps",
)
RESERVED_OPTIONS += ("--eval-freq", "--eval-episodes", "--n-eval-envs", "--num-threads", "--verbose", "--resume-from")
LOCK_FILE = ".runner.lock"
RUNNER_COMMANDS_FILE = "runner_commands.txt"


class GridError(ValueError):
    """A grid that cannot be run as asked (bad variant, settings that clash with finished runs, ...)."""


def parse_overrides(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """
    Split ``NAME`` or ``NAME:key=value,key=value`` into the name and its overrides; a value is a
    Python expression (``n_epochs=50``, ``anchor_mode='parity'``, ``policy_kwargs=dict(net_arch=[64, 64])``),
    kept as its text. Python's parser reads the overrides as the keyword arguments of a call.

    :param text: the text, as given on the command line
    :return: the name and the ``(key, value)`` pairs
    :raises GridError: on a malformed name or override
    """
    name, _, overrides = text.partition(":")
    name = name.strip()
    if not name or not (name[0].isalnum() and all(char.isalnum() or char in "._+-" for char in name)):
        raise GridError(f"Bad name {name!r} in {text!r}: use letters, digits, '.', '_', '+' or '-'.")
    source = f"f({overrides})"
    try:
        call = ast.parse(source, mode="eval").body
    except SyntaxError as error:
        raise GridError(f"Bad overrides in {text!r}: {error.msg}; expected key=value,... with Python values.") from error
    if not isinstance(call, ast.Call) or call.args or any(keyword.arg is None for keyword in call.keywords):
        raise GridError(f"Bad overrides in {text!r}: expected key=value,... with Python values.")
    keys = [keyword.arg for keyword in call.keywords]
    if len(set(keys)) < len(keys):
        raise GridError(f"Bad overrides in {text!r}: a key is given twice.")
    return name, tuple((str(keyword.arg), str(ast.get_source_segment(source, keyword.value))) for keyword in call.keywords)


def reserved_options_in(args: Sequence[str]) -> list[str]:
    """
    The arguments that the launcher would read as one of :data:`RESERVED_OPTIONS`: the options
    themselves (``--seed 3``, ``--seed=3``, ``-n512``) and, since rl-zoo3's parser accepts unique
    prefixes of long options, their abbreviations (``--see 7``, ``--n-timestep 256``).

    :param args: the launcher arguments
    :return: the offending arguments, in order
    """
    found = []
    for arg in args:
        if not arg.startswith("-") or arg == "-" or arg == "--":
            continue
        parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)  # argparse's own prefix matching
        for option in RESERVED_OPTIONS:
            parser.add_argument(option, dest=option, nargs="?", const=True)
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                options, _ = parser.parse_known_args([arg])
        except (argparse.ArgumentError, SystemExit):  # an abbreviation of several reserved options
            found.append(arg)
            continue
        if any(value is not None for value in vars(options).values()):
            found.append(arg)
    return found


@dataclass(frozen=True)
class Variant:
    """
    A named set of hyperparameter overrides, passed to the launcher as ``-params key:value``.

    :param name: the label of the variant in folders and reports (``base``: no overrides)
    :param params: hyperparameter name -> Python expression, as rl-zoo3's ``-params`` takes it
    """

    name: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """
        Parse ``NAME`` or ``NAME:key=value,key=value``; a value is a Python expression
        (``n_epochs=50``, ``anchor_mode='parity'``, ``policy_kwargs=dict(net_arch=[64, 64])``).

        :param text: the variant, as given on the command line
        :raises GridError: on a malformed variant
        """
        name, params = parse_overrides(text)
        if any(key == "callback" for key, _ in params):
            raise GridError(f"Variant {text!r} sets `callback`, which the runner sets itself.")
        if name == BASE_VARIANT and params:
            raise GridError(f"The variant name {BASE_VARIANT!r} is reserved for the runs without overrides.")
        if name != BASE_VARIANT and not params:
            raise GridError(f"Variant {text!r} has no overrides; write it NAME:key=value,...")
        return cls(name, params)


@dataclass(frozen=True)
class GridSettings:
    """
    Settings shared by every run of a grid.

    :param results: the results folder
    :param launcher: the module run as ``python -m <launcher>`` (takes rl-zoo3's ``train`` flags)
    :param n_timesteps: training budget per run; ``None``: the hyperparameter file's
    :param eval_freq: evaluate every this many timesteps (``<= 0``: never)
    :param eval_episodes: episodes per evaluation
    :param n_eval_envs: environments the evaluation runs on
    :param threads_per_run: torch (and BLAS) threads of each run
    :param verbose: the launcher's ``--verbose`` (0: no per-iteration tables in ``stdout.log``; everything
        logged is in ``diagnostics.csv`` anyway)
    :param extra_args: further launcher arguments, the same for every run
    :param python: the Python interpreter that runs the launcher
    :param checkpoint_freq: each run writes a checkpoint every this many timesteps, and a run cut short
        resumes from its latest one (0: no checkpoint, a run cut short restarts from scratch); resuming
        needs a launcher with ``--resume-from`` (``sb3_apo.train``). It does not enter a run's settings:
        a resumed run differs from an uninterrupted one only in its random-number streams (see
        :class:`~sb3_apo.benchmark.callbacks.DiagnosticsCSVCallback`)
    """

    results: Path
    launcher: str = "sb3_apo.train"
    n_timesteps: int | None = None
    eval_freq: int = 20_000
    eval_episodes: int = 10
    n_eval_envs: int = 5
    threads_per_run: int = 1
    verbose: int = 0
    extra_args: tuple[str, ...] = ()
    python: str = field(default=sys.executable)
    checkpoint_freq: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.checkpoint_freq, bool) or not isinstance(self.checkpoint_freq, int) or self.checkpoint_freq < 0:
            raise GridError(
                f"--checkpoint-freq must be a whole number of timesteps >= 0 (0: none), got {self.checkpoint_freq!r}."
            )
        counts = {"--threads-per-run": self.threads_per_run, "--eval-episodes": self.eval_episodes}
        counts["--n-eval-envs"] = self.n_eval_envs
        if self.n_timesteps is not None:
            counts["-n/--n-timesteps"] = self.n_timesteps
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GridError(f"{name} must be a whole number of at least 1, got {value!r}.")
        if self.results.exists() and not self.results.is_dir():
            raise GridError(f"--results {self.results} is a file; give a folder (it is created if missing).")


@dataclass(frozen=True)
class RunSpec:
    """
    One run of the grid.

    :param env: the environment id
    :param algo: the launcher's algorithm name
    :param variant: the hyperparameter overrides
    :param seed: the random seed
    """

    env: str
    algo: str
    variant: Variant
    seed: int

    @property
    def key(self) -> str:
        """A short name of the run, for progress messages."""
        return f"{self.env}/{self.algo}/{self.variant.name}/seed_{self.seed}"

    def folder(self, results: Path) -> Path:
        """
        The run's folder.

        :param results: the results folder
        """
        return results.joinpath(*map(files.safe_name, (self.env, self.algo, self.variant.name)), f"seed_{self.seed}")

    def settings(self, grid: GridSettings) -> dict[str, Any]:
        """
        Everything that defines the run's outcome, compared with a finished run's on resumption.

        :param grid: the grid's settings
        """
        return {
            "env": self.env,
            "algo": self.algo,
            "variant": self.variant.name,
            "variant_params": dict(self.variant.params),
            "seed": self.seed,
            "launcher": grid.launcher,
            "n_timesteps": grid.n_timesteps,
            "eval_freq": grid.eval_freq,
            "eval_episodes": grid.eval_episodes,
            "n_eval_envs": grid.n_eval_envs,
            "extra_args": mask_command(grid.extra_args),
        }

    def command(self, grid: GridSettings, resume_from: Path | None = None) -> list[str]:
        """
        The launcher command of the run.

        :param grid: the grid's settings
        :param resume_from: the checkpoint model to resume the run from (``None``: from scratch)
        """
        folder = self.folder(grid.results)
        callback_kwargs: dict[str, Any] = {"folder": str(folder), "seed": self.seed}
        if grid.checkpoint_freq > 0:
            callback_kwargs["checkpoint_freq"] = grid.checkpoint_freq
        # JSON is also a Python expression, and its double quotes keep the shell quoting of command.txt readable
        callback = json.dumps([{CALLBACK_PATH: callback_kwargs}])
        params = [f"{key}:{value}" for key, value in self.variant.params] + [f"callback:{callback}"]
        command = [grid.python, "-m", grid.launcher, "--algo", self.algo, "--env", self.env, "--seed", str(self.seed)]
        command += ["-f", str(folder / files.ZOO_FOLDER)]
        if grid.n_timesteps is not None:
            command += ["--n-timesteps", str(grid.n_timesteps)]
        command += ["--eval-freq", str(grid.eval_freq), "--eval-episodes", str(grid.eval_episodes)]
        command += ["--n-eval-envs", str(grid.n_eval_envs), "--num-threads", str(grid.threads_per_run)]
        command += ["--verbose", str(grid.verbose)]
        if resume_from is not None:
            command += ["--resume-from", str(resume_from)]
        command += [*grid.extra_args, "-params", *params]
        return command


def _thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that limit a run's BLAS/OpenMP threads to ``threads``."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {**{name: str(threads) for name in names}, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


def plan_grid(envs: Sequence[str], algos: Sequence[str], variants: Sequence[Variant], seeds: Sequence[int]) -> list[RunSpec]:
    """
    The runs of a grid, seed by seed, so that an interrupted grid leaves complete comparisons for the first seeds.

    :param envs: environment ids
    :param algos: algorithm names
    :param variants: hyperparameter variants
    :param seeds: random seeds
    :raises GridError: on duplicates
    """
    for name, values in (("env", envs), ("algo", algos), ("seed", seeds), ("variant", [v.name for v in variants])):
        duplicates = sorted({str(value) for value in values if list(values).count(value) > 1})
        if duplicates:
            raise GridError(f"Duplicate {name}: {', '.join(duplicates)}.")
    return [RunSpec(env, algo, variant, seed) for seed in seeds for env in envs for algo in algos for variant in variants]


def _zoo_run_folder(folder: Path) -> Path | None:
    """rl-zoo3's ``<algo>/<env>_<id>`` folder inside the run's ``zoo`` folder (the newest one)."""
    candidates = sorted((folder / files.ZOO_FOLDER).glob("*/*/"), key=lambda path: path.stat().st_mtime)
    return candidates[-1] if candidates else None


def _load_zoo_config(path: Path) -> dict[str, Any]:
    """rl-zoo3's ``config.yml`` (an ``OrderedDict`` dump) as a plain dict, without executing any tag."""
    import yaml  # an rl-zoo3 dependency, needed only here

    class ConfigLoader(yaml.SafeLoader):
        pass

    def ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        (pairs,) = loader.construct_sequence(node, deep=True)
        return {str(key): value for key, value in pairs}

    def unknown(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
        return f"{node.tag} {node.value!r}" if isinstance(node, yaml.ScalarNode) else node.tag

    ConfigLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", ordered_dict)
    ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", unknown)
    with open(path, encoding="utf-8") as file:
        config = yaml.load(file, Loader=ConfigLoader)  # a SafeLoader: no tag runs code
    return config if isinstance(config, dict) else {}


def _evaluations(zoo_run: Path, folder: Path) -> dict[str, Any] | None:
    """Copy ``evaluations.npz`` into the run folder, write ``evaluations.csv``, return the last evaluation."""
    source = zoo_run / files.EVALUATIONS_NPZ
    if not source.is_file():
        return None
    shutil.copyfile(source, folder / files.EVALUATIONS_NPZ)
    with np.load(source) as data:
        timesteps, results, lengths = data["timesteps"], np.asarray(data["results"], float), data["ep_lengths"]
    if len(timesteps) == 0:
        return None
    returns = {"mean_return": results.mean(1), "std_return": results.std(1), "min_return": results.min(1)}
    returns.update(max_return=results.max(1), mean_ep_length=lengths.mean(1), n_episodes=results.shape[1])
    table = pd.DataFrame({"timesteps": timesteps.astype(int), **returns})
    table.to_csv(folder / files.EVALUATIONS_CSV, index=False)
    return table[["timesteps", "mean_return", "std_return", "n_episodes"]].to_dict("records")[-1]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("sb3-apo", "stable_baselines3", "rl_zoo3", "torch", "gymnasium", "mujoco"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions


def _code_commit() -> dict[str, Any]:
    """The git commit of the code that runs (``None`` outside a checkout), and whether it had uncommitted changes."""
    source = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--", str(source.parent))
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def _final_settings(path: Path) -> dict[str, Any]:
    """
    The settings recorded in a run's final record, ``done.json`` or ``diverged.json``.

    :param path: the file
    :raises GridError: when it is not a record the runner wrote (truncated, edited, or not an object)
    """
    try:
        record = files.read_json(path)
    except (OSError, ValueError) as error:
        record = error
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        problem = f"{type(record).__name__}: {record}" if isinstance(record, Exception) else "not an object with settings"
        raise GridError(
            f"{path} is not a readable {path.name} ({problem}). The runner writes it atomically, so it was changed "
            "by hand or damaged: restore it, or delete its run folder to run that run again."
        )
    return record["settings"]


def _timesteps_reached(folder: Path) -> int | None:
    """
    The timesteps a run had collected when it stopped: the larger of its last ``progress.json``
    (rewritten at most every few seconds) and the last ``time/total_timesteps`` of its
    ``diagnostics.csv`` (a row per iteration, dumped before the iteration's update); ``None`` without either.

    :param folder: the run folder
    """
    reached = []
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        reached.append(int(files.read_json(folder / files.PROGRESS_FILE)["timesteps"]))
    with contextlib.suppress(OSError, ValueError, pd.errors.EmptyDataError):
        log = pd.read_csv(folder / files.DIAGNOSTICS_FILE, usecols=["time/total_timesteps"])
        reached.append(int(log["time/total_timesteps"].max()))
    return max(reached, default=None)


def _last_error_line(log: Path) -> str:
    """The launcher's last error line (``<prog>: error: ...``) in its log, else the log's last line."""
    lines = [line.strip() for line in _log_tail(log, 200).splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    return (errors or lines or [""])[-1]


def _resumes(folder: Path) -> list[dict[str, Any]]:
    """The resumes of a run so far (``resumes.json``: timestep, time and command of each), oldest first."""
    try:
        resumes = files.read_json(folder / files.RESUMES_FILE)
    except (OSError, ValueError):
        return []
    return resumes if isinstance(resumes, list) else []


def _segment_codes(folder: Path) -> list[dict[str, Any]]:
    """
    The code of each launch of a run so far: its first (``code.json``), then each resume's (``resumes.json``);
    empty for a run started before the runner recorded them.
    """
    try:
        first = files.read_json(folder / files.CODE_FILE)
    except (OSError, ValueError):
        return []
    return [first, *(resume.get("code") or {} for resume in _resumes(folder))]


def _log_tail(path: Path, n_lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "".join(path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-n_lines:])
    return ""


@dataclass
class _Running:
    spec: RunSpec
    process: subprocess.Popen
    log: TextIO
    started: float


class GridRunner:
    """
    Run a grid of runs, ``jobs`` at a time (a pool of threads, each waiting on one launcher
    subprocess), skipping the finished ones.

    :param runs: the runs of the grid
    :param settings: the grid's settings
    :param jobs: runs in parallel
    :param status_every: seconds between two refreshes of the progress bar's list of running runs
    :param out: where progress is printed
    """

    def __init__(
        self, runs: Sequence[RunSpec], settings: GridSettings, jobs: int, status_every: float = 60.0, out: TextIO = sys.stdout
    ):
        if jobs < 1:
            raise GridError(f"--jobs must be at least 1, got {jobs}.")
        if not 0 < status_every < float("inf"):
            raise GridError(f"--status-every must be a positive (finite) number of seconds, got {status_every}.")
        reserved = reserved_options_in(settings.extra_args)
        if reserved:
            raise GridError(
                f"The launcher option {reserved[0]} is (or abbreviates) one that the runner sets itself "
                f"({', '.join(RESERVED_OPTIONS)}); use the runner's own options."
            )
        self.runs = list(runs)
        self.settings = settings
        self.jobs = jobs
        self.status_every = status_every
        self.out = out
        self.failed: list[RunSpec] = []
        #: The runs of the grid whose training diverged, in earlier invocations or this one.
        self.diverged: list[RunSpec] = []
        self.n_done = 0
        self._running: dict[RunSpec, _Running] = {}
        self._guard = threading.Lock()
        self._stopping = False

    def _final_record(self, spec: RunSpec) -> Path | None:
        """
        The run's final record: ``done.json`` (finished) or ``diverged.json`` (training diverged);
        ``None`` when it has neither.

        :param spec: the run
        """
        folder = spec.folder(self.settings.results)
        return next((folder / name for name in (files.DONE_FILE, files.DIVERGED_FILE) if (folder / name).is_file()), None)

    def pending(self) -> list[RunSpec]:
        """
        The runs without ``done.json`` or ``diverged.json``.

        :raises GridError: where a finished or diverged run was made with other settings
        """
        clashes, pending = [], []
        for spec in self.runs:
            record = self._final_record(spec)
            if record is None:
                pending.append(spec)
                continue
            finished = _final_settings(record)
            wanted = spec.settings(self.settings)
            differences = sorted(key for key in wanted.keys() | finished.keys() if wanted.get(key) != finished.get(key))
            if differences:
                clashes.append(
                    f"  {spec.key}: " + "; ".join(f"{key} {finished.get(key)!r} -> {wanted.get(key)!r}" for key in differences)
                )
        if clashes:
            raise GridError(
                "These runs were finished (or diverged) with other settings, and such runs are never redone:\n"
                + "\n".join(clashes)
                + "\nUse another --results folder, or delete those run folders."
            )
        return pending

    def _checkpoint_to_resume(self, spec: RunSpec) -> Path | None:
        """
        The latest complete checkpoint of an unfinished run made with the grid's settings, when the
        grid writes checkpoints; else ``None`` (the run starts from scratch).

        :param spec: the run
        """
        folder = spec.folder(self.settings.results)
        if self.settings.checkpoint_freq <= 0:
            return None
        try:
            same_settings = files.read_json(folder / files.SETTINGS_FILE) == spec.settings(self.settings)
        except (OSError, ValueError):
            return None
        checkpoints = files.valid_checkpoints(folder) if same_settings else []
        return checkpoints[0] if checkpoints else None

    def _start(self, spec: RunSpec) -> _Running:
        folder = spec.folder(self.settings.results)
        thread_env = _thread_environment(self.settings.threads_per_run)
        env_prefix = " ".join(f"{name}={value}" for name, value in thread_env.items())
        checkpoint = self._checkpoint_to_resume(spec)
        if checkpoint is None:
            if folder.exists():
                self._print(f"restarting {spec.key} from scratch (interrupted or failed before)")
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            command = spec.command(self.settings)
            files.atomic_write_json(folder / files.SETTINGS_FILE, spec.settings(self.settings))
            files.atomic_write_json(folder / files.CODE_FILE, _code_commit())
            (folder / files.COMMAND_FILE).write_text(
                f"{env_prefix} {shlex.join(recorded_command(command))}\n", encoding="utf-8"
            )
            log = open(folder / files.STDOUT_FILE, "w", encoding="utf-8")  # noqa: SIM115 - closed in _execute
        else:
            # command.txt keeps the run's original command; each resume is recorded in resumes.json
            command = spec.command(self.settings, resume_from=checkpoint / files.CHECKPOINT_MODEL)
            for name in (files.FAILED_FILE, files.TRAINING_FILE):
                (folder / name).unlink(missing_ok=True)
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            resume = {"timestep": int(checkpoint.name), "at": stamp}
            resume["command"] = f"{env_prefix} {shlex.join(recorded_command(command))}"
            resume["code"] = code = _code_commit()
            started = _segment_codes(folder)[:1]
            # uncommitted changes may differ under one commit, so a dirty launch counts as other code
            if started and (started[0].get("commit") != code["commit"] or started[0].get("dirty") or code["dirty"]):
                self._print(
                    f"warning: {spec.key} started under code {started[0]} and resumes under {code}: "
                    "its launches ran different code (recorded in done.json's code_segments)"
                )
            files.atomic_write_json(folder / files.RESUMES_FILE, [*_resumes(folder), resume])
            log = open(folder / files.STDOUT_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in _execute
            log.write(f"\n--- {stamp}: resumed from the checkpoint at timestep {checkpoint.name} ---\n")
            log.flush()
            self._print(f"resuming {spec.key} from its checkpoint at timestep {checkpoint.name}")
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # the run's callback stops it when this process dies (it watches its parent's pid)
            env={**os.environ, **thread_env, files.RUNNER_PID_VARIABLE: str(os.getpid())},
            start_new_session=True,  # a Ctrl-C of the runner reaches the runner only; it stops the runs itself
        )
        self._print(f"started  {spec.key}")
        return _Running(spec, process, log, time.monotonic())

    def _execute(self, spec: RunSpec) -> None:
        """Run one run to its end (in a worker thread) and collect its files."""
        with self._guard:
            if self._stopping:
                return
            running = self._running[spec] = self._start(spec)
        running.process.wait()
        running.log.close()
        with self._guard:
            del self._running[spec]
            if self._stopping:
                return
        self._finish(running)

    def _finish(self, running: _Running) -> None:
        spec, folder = running.spec, running.spec.folder(self.settings.results)
        wall_time = time.monotonic() - running.started
        rc = running.process.returncode
        problem = None
        training: dict[str, Any] = {}
        if rc == EXIT_DIVERGED:
            try:
                timesteps = self.write_diverged(spec, folder, rc, wall_time)
            except Exception as error:  # an unreadable output file fails this run, not the whole grid
                problem = f"training diverged, and collecting the run's files failed: {type(error).__name__}: {error}"
            else:
                self.diverged.append(spec)
                self._print(
                    f"DIVERGED {spec.key} at timestep {timesteps} (a final outcome, not retried): "
                    f"{_last_error_line(folder / files.STDOUT_FILE)}"
                )
                return
        elif rc != 0:
            problem = f"the launcher exited with status {rc}"
        elif not (folder / files.TRAINING_FILE).is_file():
            problem = f"no {files.TRAINING_FILE}: the diagnostics callback did not run to the end of training"
        else:
            training = files.read_json(folder / files.TRAINING_FILE)
            if training["timesteps"] < training["total_timesteps"]:
                problem = f"training stopped at {training['timesteps']} of {training['total_timesteps']} timesteps"
        if problem is None:
            try:
                problem = self._write_done(spec, folder, training, wall_time)
            except Exception as error:  # an unreadable output file fails this run, not the whole grid
                problem = f"collecting the run's files failed: {type(error).__name__}: {error}"
        if problem is not None:
            self.failed.append(spec)
            files.atomic_write_json(
                folder / files.FAILED_FILE,
                {"settings": spec.settings(self.settings), "returncode": rc, "problem": problem, "wall_time_s": wall_time},
            )
            self._print(
                f"FAILED   {spec.key}: {problem}; see {folder / files.STDOUT_FILE}\n{_log_tail(folder / files.STDOUT_FILE)}"
            )
            return
        self.n_done += 1
        self._print(f"finished {spec.key} in {datetime.timedelta(seconds=round(wall_time))}")

    def _run_record(self, spec: RunSpec, folder: Path, zoo_run: Path, wall_time: float) -> dict[str, Any]:
        """
        What ``done.json`` and ``diverged.json`` record alike: the run and its settings, its command and
        resumes, its evaluations so far (copied into the run folder as ``evaluations.npz`` and
        ``evaluations.csv``; the last one as ``final_eval``), its hyperparameters, host, versions and code.

        :param spec: the run
        :param folder: the run folder
        :param zoo_run: the launcher's run folder
        :param wall_time: seconds the last launch ran
        """
        resumes = _resumes(folder)
        configs = sorted(zoo_run.glob("*/config.yml"))
        return {
            "format": files.FORMAT_VERSION,
            "settings": spec.settings(self.settings),
            "env": spec.env,
            "algo": spec.algo,
            "variant": spec.variant.name,
            "variant_params": dict(spec.variant.params),
            "seed": spec.seed,
            "command": (folder / files.COMMAND_FILE).read_text(encoding="utf-8").strip(),
            "zoo_folder": str(zoo_run.relative_to(folder)),
            # with resumes: the resumes' timesteps and commands (command stays the original one)
            "resumed_at": [resume["timestep"] for resume in resumes],
            "resume_commands": [resume["command"] for resume in resumes],
            # the wall time of the last launch only, which started at this timestep
            "wall_time_s": wall_time,
            "wall_time_from_timestep": resumes[-1]["timestep"] if resumes else 0,
            "final_eval": _evaluations(zoo_run, folder),
            "eval_freq": self.settings.eval_freq,
            "eval_episodes": self.settings.eval_episodes,
            "hyperparams": _load_zoo_config(configs[0]) if configs else {},
            "threads": self.settings.threads_per_run,
            "host": {"node": platform.node(), "cpus": os.cpu_count(), "machine": platform.machine()},
            "versions": _versions(),
            "code": _code_commit(),
            # the code of each launch (the first, then each resume), so that a run resumed under other code shows it
            "code_segments": _segment_codes(folder),
        }

    def _write_done(self, spec: RunSpec, folder: Path, training: dict[str, Any], wall_time: float) -> str | None:
        zoo_run = _zoo_run_folder(folder)
        if zoo_run is None:
            return f"the launcher left no run folder in {folder / files.ZOO_FOLDER}"
        record = self._run_record(spec, folder, zoo_run, wall_time)
        if record["final_eval"] is None and self.settings.eval_freq > 0:
            return f"no evaluation in {zoo_run / files.EVALUATIONS_NPZ} (is --eval-freq larger than the budget?)"
        if not (folder / files.DIAGNOSTICS_FILE).is_file():
            return f"no {files.DIAGNOSTICS_FILE}"
        files.atomic_write_json(
            folder / files.DONE_FILE,
            {
                **record,
                "timesteps": training["timesteps"],
                # the learn times sum the kept segments of a resumed run
                "learn_time_s": training["learn_time_s"],
                "steps_per_s": training["steps_per_s"],
                "steps_per_s_median_update": training["steps_per_s_median_update"],
                "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        shutil.rmtree(folder / files.CHECKPOINTS_FOLDER, ignore_errors=True)  # binary files, of no use once finished
        return None

    def write_diverged(self, spec: RunSpec, folder: Path, returncode: int, wall_time: float) -> int | None:
        """
        Write ``diverged.json``, the final record of a run whose training diverged: what ``done.json``
        records (:meth:`_run_record`; its evaluations so far are kept as a finished run's are), the
        launcher's error line (``message``), its exit status and the timesteps reached. The runner
        calls it when a launch exits with ``EXIT_DIVERGED``; ``benchmarks/studies/mark_diverged.py``
        calls it for a run that diverged before the runner knew that outcome.

        :param spec: the run
        :param folder: the run folder
        :param returncode: the launcher's exit status
        :param wall_time: seconds the last launch ran
        :return: the timesteps reached (``None`` when the run left no trace of them)
        :raises FileNotFoundError: when the launcher left no run folder
        """
        zoo_run = _zoo_run_folder(folder)
        if zoo_run is None:
            raise FileNotFoundError(f"the launcher left no run folder in {folder / files.ZOO_FOLDER}")
        record = self._run_record(spec, folder, zoo_run, wall_time)
        timesteps = _timesteps_reached(folder)
        files.atomic_write_json(
            folder / files.DIVERGED_FILE,
            {
                **record,
                "timesteps": timesteps,
                "returncode": returncode,
                "message": _last_error_line(folder / files.STDOUT_FILE),
                "diverged_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        shutil.rmtree(folder / files.CHECKPOINTS_FOLDER, ignore_errors=True)  # the run is never resumed
        return timesteps

    def _print(self, message: str) -> None:
        tqdm.write(f"[{datetime.datetime.now():%H:%M:%S}] {message}", file=self.out)

    def _running_text(self) -> str:
        """The running runs and how far each is, from its ``progress.json``."""
        parts = []
        for spec in list(self._running):
            try:
                progress = files.read_json(spec.folder(self.settings.results) / files.PROGRESS_FILE)
                parts.append(f"{spec.key} {100 * progress['timesteps'] / progress['total_timesteps']:.0f}%")
            except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
                parts.append(f"{spec.key} ?")
        return ", ".join(parts)

    def _stop(self) -> None:
        """Stop every running run: SIGTERM to its process group, SIGKILL after 10 s."""
        with self._guard:
            self._stopping = True
            running = list(self._running.values())
        for run in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for run in running:
            try:
                run.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)

    def run(self, argv: Sequence[str] | None = None) -> int:
        """
        Run every unfinished run; only one runner at a time may work on a results folder.

        :param argv: the runner's own command line, appended to ``runner_commands.txt`` when there is work to do
        :return: 0 when every run is finished or diverged, 1 when some failed, 130 when interrupted
        :raises GridError: when another runner holds the folder's lock, or finished runs clash with the settings
        """
        results = self.settings.results
        try:
            results.mkdir(parents=True, exist_ok=True)
            (results / LOCK_FILE).touch()  # FileLock reports a folder it cannot write in as held by another
            lock = FileLock(results / LOCK_FILE, timeout=0)
            lock.acquire()
        except Timeout as error:
            raise GridError(f"Another runner is working on {results}.") from error
        except OSError as error:
            raise GridError(
                f"Cannot write in the results folder {results}: {error.strerror or error}; --results needs a folder "
                "this user may write in."
            ) from error
        try:
            return self._run(argv)
        finally:
            lock.release()

    def _run(self, argv: Sequence[str] | None) -> int:
        queue = self.pending()
        records = [self._final_record(spec) for spec in self.runs]
        self.diverged = [spec for spec, record in zip(self.runs, records) if record and record.name == files.DIVERGED_FILE]
        total, self.n_done = len(self.runs), len(self.runs) - len(queue) - len(self.diverged)
        if argv is not None and queue:
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            with open(self.settings.results / RUNNER_COMMANDS_FILE, "a", encoding="utf-8") as file:
                file.write(f"# {stamp}\n{shlex.join(recorded_command(argv))}\n")
        self._print(
            f"{total} runs in the grid: {self.n_done} already finished, {len(queue)} to run, {self.jobs} at a time "
            f"-> {self.settings.results}"
            + (f"; {len(self.diverged)} diverged before (final: not run again)" if self.diverged else "")
        )
        start = time.monotonic()
        # SIGTERM and SIGHUP stop the grid as Ctrl-C does (KeyboardInterrupt)
        previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
        bar = tqdm(total=total, initial=total - len(queue), unit="run", file=self.out, dynamic_ncols=True)
        pool = ThreadPoolExecutor(self.jobs)
        try:
            pending = {pool.submit(self._execute, spec) for spec in queue}
            while pending:
                done, pending = wait(pending, timeout=self.status_every, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # a bug in the runner itself stops the grid
                bar.update(len(done))
                bar.set_postfix_str(self._running_text())
        except KeyboardInterrupt:
            n_running = len(self._running)
            self._stop()
            pool.shutdown(cancel_futures=True)
            self._print(
                f"interrupted; stopped {n_running} run(s). Run the same command again to resume: finished runs are kept, "
                + (
                    "unfinished ones resume from their latest checkpoint."
                    if self.settings.checkpoint_freq > 0
                    else "unfinished ones restart."
                )
            )
            return 130
        finally:
            pool.shutdown()
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._print(
            f"grid finished in {datetime.timedelta(seconds=round(time.monotonic() - start))}: {self.n_done}/{total} runs done"
            + (f", {len(self.diverged)} diverged: " + ", ".join(spec.key for spec in self.diverged) if self.diverged else "")
            + (f", {len(self.failed)} failed: " + ", ".join(spec.key for spec in self.failed) if self.failed else "")
        )
        return 1 if self.failed else 0
