"""
The launchers: rl-zoo3's commands with this package's algorithms registered.

Each launcher registers the algorithms of :data:`sb3_apo.zoo.registry.ZOO_ALGORITHMS` in
rl-zoo3 (:func:`sb3_apo.zoo.registry.register_algorithms`), hands its command line to
rl-zoo3's own command, and turns bad input into one clear message and a
non-zero exit status instead of a traceback (set ``SB3_APO_TRACEBACK=1`` to see
the traceback of an unexpected error).

===================  ============================  ============================================
command              console script                rl-zoo3 command it wraps
===================  ============================  ============================================
``train``            ``sb3-apo-train``             ``rl_zoo3.train`` (+ ``-optimize``)
``enjoy``            ``sb3-apo-enjoy``             ``rl_zoo3.enjoy``
``record_video``     ``sb3-apo-record-video``      ``rl_zoo3.record_video``
``record_training``  ``sb3-apo-record-training``   ``rl_zoo3.record_training``
``load_from_hub``    ``sb3-apo-load-from-hub``     ``rl_zoo3.load_from_hub``
``push_to_hub``      ``sb3-apo-push-to-hub``       ``rl_zoo3.push_to_hub``
``plot_train``,      ``sb3-apo-zoo <command>``     ``rl_zoo3.plots``
``plot_from_file``,
``all_plots``
===================  ============================  ============================================

``python -m sb3_apo.train`` (and ``.enjoy``, ``.record_video``, ``.record_training``,
``.load_from_hub``, ``.push_to_hub``) and ``python -m sb3_apo.zoo <command>``
do the same, with rl-zoo3's flags. Differences from rl-zoo3: the project's
hyperparameters are the default (:func:`sb3_apo.zoo.registry.find_hyperparams`);
``enjoy``, ``record_video`` and ``record_training`` read ``logs/`` by default
(where ``train`` writes); ``train`` accepts three options of its own for
distributed tuning, ``--heartbeat-interval``, ``--grace-period`` and
``--max-retry``, and ``--resume-from`` to continue a run from a checkpoint;
``push_to_hub`` writes a model card whose commands are this package's (:mod:`sb3_apo.zoo.hub`).

Exit statuses: 0 on success, 2 for a bad command line, 1 for other errors,
:data:`~sb3_apo.zoo.errors.EXIT_DIVERGED` (3) when training diverged (the algorithm raised
:class:`~sb3_apo.common.on_policy.NonFiniteLossError`; the same one-line message as other
errors), 128 + the signal number when interrupted.
"""

import argparse
import io
import os
import runpy
import shutil
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, redirect_stderr
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import yaml

from sb3_apo.common.on_policy import NonFiniteLossError
from sb3_apo.zoo.errors import EXIT_DIVERGED, Interrupted, ZooError, interrupting_signal
from sb3_apo.zoo.registry import register_algorithms

#: Set this environment variable to 1 to print the traceback of unexpected errors.
TRACEBACK_ENV_VAR = "SB3_APO_TRACEBACK"

#: The folder ``enjoy`` and ``record_video`` read by default: where ``train`` writes (rl-zoo3's ``-f logs``).
DEFAULT_LOG_FOLDER = "logs"


def _tuning_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, add_help=False, allow_abbrev=False)
    group = parser.add_argument_group(
        "distributed tuning (sb3-apo's options, in addition to rl-zoo3's below)",
        "Crash recovery of -optimize workers that share --storage: a trial whose worker stopped sending "
        "heartbeats for --grace-period seconds is marked FAIL and its hyperparameters are queued again. "
        "A password in --storage is seen by every user of the machine in `ps`: give --storage env:NAME instead, "
        "NAME an environment variable that holds the URL (or the journal file), or leave the password out of a "
        "PostgreSQL URL and set PGPASSWORD (or write it in ~/.pgpass). Recorded commands mask passwords.",
    )
    group.add_argument(
        "--heartbeat-interval",
        type=int,
        default=60,
        metavar="SECONDS",
        help="seconds between two heartbeats of a running trial; 0: no heartbeat, no recovery (default: 60)",
    )
    group.add_argument(
        "--grace-period",
        type=int,
        default=None,
        metavar="SECONDS",
        help="a running trial without heartbeat for this long is declared dead (default: 3 x --heartbeat-interval)",
    )
    group.add_argument(
        "--max-retry",
        type=int,
        default=3,
        metavar="N",
        help="how many times the hyperparameters of a dead or interrupted trial are queued again (default: 3)",
    )
    resuming = parser.add_argument_group("resuming (sb3-apo's option)")
    resuming.add_argument(
        "--resume-from",
        default=None,
        metavar="MODEL.zip",
        help="continue a run cut short from this checkpoint model, up to the same -n budget: the timestep count and "
        "the schedules go on; evaluations.npz and <env>/vecnormalize.pkl next to it (rl-zoo3's run folder layout) "
        "give the evaluation history and the VecNormalize statistics",
    )
    return parser


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _zoo_context(prog: str, argv: Sequence[str]) -> Iterator[None]:
    """
    Register the algorithms, set ``sys.argv`` for rl-zoo3's parsers, mask database passwords
    in ``sys.orig_argv`` and write its interpreter ``python`` (rl-zoo3 records it in ``command.txt``
    and in the study), and treat SIGTERM as Ctrl-C.
    """
    from sb3_apo.zoo.masking import recorded_command

    register_algorithms()
    saved_argv, saved_orig_argv = sys.argv, sys.orig_argv
    sys.argv = [prog, *argv]
    sys.orig_argv = recorded_command(saved_orig_argv)
    saved_handler: Any = None
    in_main_thread = True
    try:
        saved_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:  # not in the main thread: leave signals alone
        in_main_thread = False
    try:
        yield
    finally:
        sys.argv, sys.orig_argv = saved_argv, saved_orig_argv
        if in_main_thread:
            signal.signal(signal.SIGTERM, saved_handler)


def _is_network_error(error: BaseException) -> bool:
    """Whether an exception (or one it was raised from) means that a server could not be reached."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, socket.gaierror, TimeoutError)):
            return True
        names = {cls.__name__ for cls in type(current).__mro__}
        module = type(current).__module__
        if module.startswith(("httpx", "requests", "urllib3", "huggingface_hub")) and names & {
            "TransportError",
            "ConnectionError",
            "ConnectTimeout",
            "Timeout",
            "LocalEntryNotFoundError",
        }:
            return True
        current = current.__cause__ or current.__context__
    return False


def _report_unexpected(prog: str, error: BaseException) -> None:
    if isinstance(error, ModuleNotFoundError):
        print(
            f"{prog}: error: the Python package {error.name!r} is not installed "
            "(the launchers need the zoo extra: pip install 'sb3-apo[zoo]').",
            file=sys.stderr,
        )
        return
    if _is_network_error(error):
        print(f"{prog}: error: a server could not be reached (no network?): {type(error).__name__}: {error}", file=sys.stderr)
        return
    location = ""
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        location = f"at {frames[-1].filename}:{frames[-1].lineno}; "
    message = str(error).strip().replace("\n", " ")
    print(
        f"{prog}: error: {type(error).__name__}: {message} ({location}{TRACEBACK_ENV_VAR}=1 shows the traceback)",
        file=sys.stderr,
    )
    if _traceback_requested():
        traceback.print_exception(error)


def _traceback_requested() -> bool:
    return os.environ.get(TRACEBACK_ENV_VAR, "") not in ("", "0")


def _run(prog: str, argv: Sequence[str], command: Callable[[], Any]) -> int:
    """
    Run one rl-zoo3 command with the algorithms registered; return its exit status.

    :param prog: the program name shown in messages and usage lines
    :param argv: the command's arguments (without the program name)
    :param command: calls rl-zoo3's command, which reads ``sys.argv``
    :return: 0 on success, 1 on an error, 2 on a command-line error, :data:`EXIT_DIVERGED` (3) when
        training diverged (:class:`~sb3_apo.common.on_policy.NonFiniteLossError`), 128 + the signal
        number when interrupted (130 for Ctrl-C, 143 for SIGTERM)
    """
    try:
        with _zoo_context(prog, argv):
            command()
        return 0
    except SystemExit as exit_:  # argparse and rl-zoo3's own exits
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(f"{prog}: error: {exit_.code}", file=sys.stderr)
        return 1
    except Interrupted as stop:
        print(f"{prog}: {stop.message}", file=sys.stderr)
        return stop.exit_status
    except ZooError as error:
        print(f"{prog}: error: {error.message}", file=sys.stderr)
        if _traceback_requested():
            traceback.print_exception(error)
        return 1
    except KeyboardInterrupt as interrupt:
        stopped_by = interrupting_signal(interrupt)
        print(f"{prog}: interrupted by {stopped_by.name}", file=sys.stderr)
        return 128 + stopped_by.value
    except Exception as error:
        _report_unexpected(prog, error)
        return EXIT_DIVERGED if isinstance(error, NonFiniteLossError) else 1


def _argv(argv: Sequence[str] | None) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)


def _with_default_folder(argv: list[str]) -> list[str]:
    # Placed first, so that a -f/--folder given by the user (later on the line) wins.
    return ["--folder", DEFAULT_LOG_FOLDER, *argv]


def _check_hub_reachable() -> None:
    """Fail with a clear message, before any work, if the Hugging Face Hub cannot be reached."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as error:
        raise ZooError(
            f"Cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(error).__name__}: {error}). "
            "The hub commands need a network connection (HF_ENDPOINT selects another hub, "
            "HF_HUB_OFFLINE=1 forbids network access)."
        ) from error


#: rl-zoo3's ``train`` options that are counts: destination -> (flags, smallest value, what it counts, hint).
_COUNT_OPTIONS = {
    "n_timesteps": ("-n/--n-timesteps", 1, "steps", " (leave it out to train for the n_timesteps of the hyperparameter file)"),
    "n_trials": ("--n-trials", 1, "trials", ""),
    "max_total_trials": ("--max-total-trials", 1, "trials", ""),
    "n_evaluations": ("--n-evaluations", 1, "evaluations", " (leave it out for one evaluation per 100,000 steps)"),
    "eval_episodes": ("--eval-episodes", 1, "episodes", ""),
    "n_jobs": ("--n-jobs", 1, "jobs", ""),
    "n_startup_trials": ("--n-startup-trials", 0, "trials", ""),
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives a key twice (where PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, and keys may override merged ones
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def check_hyperparams_file(path: str) -> None:
    """
    Refuse a YAML hyperparameter file that gives a key twice (an environment, or a
    hyperparameter of one): YAML keeps the last one silently.

    :param path: the file (``-conf``); a missing or malformed file is left to the launcher's own checks
    :raises ZooError: naming the file, the key and its lines
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    try:
        yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.constructor.ConstructorError as error:
        if "given twice" in str(error.problem):
            raise ZooError(f"Hyperparameter file {path}: {error.problem}; keep one.") from error
    except yaml.YAMLError:
        return


def _check_train_arguments(argv: Sequence[str]) -> None:
    """
    Check what rl-zoo3's ``train`` would accept silently or fail on with a traceback:
    counts below 1 (``-n``, where rl-zoo3 then trains for the file's ``n_timesteps``;
    ``--n-trials``, ``--n-evaluations``, ``--eval-episodes``, ...), each ``-params KEY:VALUE``
    read the way rl-zoo3 reads it (its ``StoreDict`` evaluates ``VALUE`` as a Python expression,
    raising ``NameError`` or ``SyntaxError``), a ``-params`` key given twice, a ``-conf`` YAML file
    that gives a key twice, ``--storage env:NAME`` with ``NAME`` unset, and ``--track`` with a
    database password in ``--storage`` (rl-zoo3 sends its arguments to Weights & Biases before
    any of ours runs, so the password could not be masked there).

    :param argv: the command line of ``train``
    :raises ZooError: naming the first bad argument and how to write it
    """
    from rl_zoo3.utils import StoreDict

    from sb3_apo.zoo.masking import describe_storage, resolve_storage

    # rl-zoo3's parser accepts unique prefixes of its options, and so does this one: a prefix that is
    # unique here but not there (it also abbreviates an option not declared here) is refused by rl-zoo3 anyway.
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("-params", "--hyperparams", nargs="+", action="append", default=[])
    parser.add_argument("-conf", "--conf-file", default=None)
    for dest, (flags, *_) in _COUNT_OPTIONS.items():
        parser.add_argument(*flags.split("/"), dest=dest, type=int, default=None)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--track", action="store_true")
    try:
        with redirect_stderr(io.StringIO()):
            options, _ = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):  # e.g. -params without a value, -n abc: rl-zoo3's parser says so
        return
    if options.storage is not None:
        try:
            storage = resolve_storage(options.storage)
        except ValueError as error:
            raise ZooError(str(error)) from error
        if options.track and describe_storage(storage) != storage and storage == options.storage:
            raise ZooError(
                "--track would send the --storage URL, with its password, to Weights & Biases (rl-zoo3 records its "
                "arguments there unmasked): give --storage env:NAME (NAME an environment variable holding the URL), "
                "or leave the password out of the URL and give it through the database client's own means "
                "(PostgreSQL: the PGPASSWORD variable or a ~/.pgpass file), or drop --track."
            )
    for dest, (flags, minimum, unit, hint) in _COUNT_OPTIONS.items():
        value = getattr(options, dest)
        if value is not None and value < minimum:
            kind = f"a positive number of {unit}" if minimum == 1 else f"a number of {unit} >= 0"
            raise ZooError(f"{flags} must be {kind}, got {value}{hint}.")
    if options.conf_file is not None and options.conf_file.endswith((".yml", ".yaml")):
        check_hyperparams_file(options.conf_file)
    hint = "for example -params n_steps:2048 policy:'\"MlpPolicy\"' clip_range:'\"lin_0.2\"' (strings in quotes)"
    given: set[str] = set()
    for item in (item for items in options.hyperparams for item in items):
        key, colon, value = item.partition(":")
        if not (colon and key and value):
            raise ZooError(f"-params {item}: expected KEY:VALUE, {hint}.")
        if key in given:
            raise ZooError(f"-params gives {key} twice (the last one would win silently); give each key once.")
        given.add(key)
        try:
            StoreDict(["-params"], "hyperparams")(parser, argparse.Namespace(), [item])
        except Exception as error:
            raise ZooError(
                f"-params {item}: the value {value} is not a Python expression ({type(error).__name__}: {error}); {hint}."
            ) from error


def train(argv: Sequence[str] | None = None) -> int:
    """
    ``sb3-apo-train``: ``rl_zoo3.train`` with this package's algorithms and hyperparameter files.

    Every ``rl_zoo3.train`` flag is accepted, plus ``--heartbeat-interval``,
    ``--grace-period`` and ``--max-retry`` for distributed tuning, and ``--resume-from``.

    :param argv: the arguments; ``None``: ``sys.argv[1:]``
    :return: the exit status
    """
    prog = "sb3-apo-train"
    args = _argv(argv)
    parser = _tuning_parser(prog)
    if "-h" in args or "--help" in args:
        parser.print_help()
        print()
    try:
        options, rest = parser.parse_known_args(args)
        from sb3_apo.zoo.storage import HeartbeatOptions

        heartbeat = HeartbeatOptions(options.heartbeat_interval, options.grace_period, options.max_retry)
        _check_train_arguments(rest)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    except ZooError as error:
        print(f"{prog}: error: {error.message}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        _report_unexpected(prog, error)
        return 1

    def command() -> None:
        from sb3_apo.zoo._compat import run_rl_zoo3_train
        from sb3_apo.zoo.exp_manager import ZooExperimentManager

        settings = {"heartbeat": heartbeat, "resume_from": options.resume_from}
        run_rl_zoo3_train(type("ZooExperimentManager", (ZooExperimentManager,), settings))

    return _run(prog, rest, command)


def enjoy(argv: Sequence[str] | None = None) -> int:
    """
    ``sb3-apo-enjoy``: ``rl_zoo3.enjoy`` with this package's algorithms; reads ``logs/`` by default.

    :param argv: the arguments; ``None``: ``sys.argv[1:]``
    :return: the exit status
    """

    def command() -> None:
        from rl_zoo3.enjoy import enjoy as zoo_enjoy

        zoo_enjoy()

    return _run("sb3-apo-enjoy", _with_default_folder(_argv(argv)), command)


#: What MuJoCo needs to render without a display, and the variable that selects it.
HEADLESS_GL_HINT = (
    "MuJoCo found no OpenGL context to render with (no display?): on a headless machine set "
    "MUJOCO_GL=egl (GPU or EGL-capable driver) or MUJOCO_GL=osmesa (software), e.g. MUJOCO_GL=egl {command}"
)


@contextmanager
def _headless_gl_hint(prog: str) -> Iterator[None]:
    """Turn MuJoCo's raw OpenGL ``FatalError`` (rendering without a display) into one line saying what to set."""
    try:
        yield
    except Exception as error:
        if type(error).__module__ == "mujoco" and "OpenGL" in str(error):
            raise ZooError(f"{HEADLESS_GL_HINT.format(command=prog)} ({type(error).__name__}: {error})") from error
        raise


def record_video(argv: Sequence[str] | None = None) -> int:
    """
    ``sb3-apo-record-video``: ``rl_zoo3.record_video`` with this package's algorithms; reads
    ``logs/`` by default.

    :param argv: the arguments; ``None``: ``sys.argv[1:]``
    :return: the exit status
    """
    prog = "sb3-apo-record-video"

    def command() -> None:
        with _headless_gl_hint(prog):
            runpy.run_module("rl_zoo3.record_video", run_name="__main__")

    return _run(prog, _with_default_folder(_argv(argv)), command)


def record_training(argv: Sequence[str] | None = None) -> int:
    """
    ``sb3-apo-record-training``: ``rl_zoo3.record_training`` (a video of each checkpoint, the
    final and the best model of a run, joined) with this package's algorithms; reads ``logs/``
    by default. Its videos are recorded by ``python -m sb3_apo.record_video``.

    :param argv: the arguments; ``None``: ``sys.argv[1:]``
    :return: the exit status
    """
    from sb3_apo.zoo._compat import record_video_with_our_launcher

    def check_ffmpeg() -> None:
        # rl-zoo3 runs ffmpeg with os.system, which ignores a missing program, then fails on the files it did not write.
        if shutil.which("ffmpeg") is None:
            raise ZooError(
                "record_training joins the videos with the ffmpeg program, which is not on the PATH: install it "
                "(e.g. apt-get install ffmpeg, conda install ffmpeg), or record single videos with record_video."
            )

    def command() -> None:
        with record_video_with_our_launcher(before_recording=check_ffmpeg):
            runpy.run_module("rl_zoo3.record_training", run_name="__main__")

    return _run("sb3-apo-record-training", _with_default_folder(_argv(argv)), command)


def _write_our_model_card(argv: Sequence[str]) -> Callable[[Path], None]:
    """The card writer of ``push_to_hub`` for its command line (rl-zoo3's flags)."""
    from sb3_apo.zoo.hub import write_model_card

    def write_card(folder: Path) -> None:
        from rl_zoo3.utils import ALGOS

        # Called at the upload, once rl-zoo3 has parsed and checked the same arguments.
        parser = argparse.ArgumentParser(add_help=False)
        for flags in (["--algo"], ["--env"], ["-orga", "--organization"], ["-name", "--repo-name"]):
            parser.add_argument(*flags)
        options, _ = parser.parse_known_args(argv)
        algo_class_name = ALGOS[options.algo].__name__
        write_model_card(folder, options.algo, algo_class_name, options.env, options.organization, options.repo_name)

    return write_card


class _Command(Protocol):
    """A console script's function: its arguments (``None``: ``sys.argv[1:]``) to its exit status."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


def _hub_command(module: str, name: str) -> _Command:
    """
    A launcher for one of rl-zoo3's Hugging Face Hub commands, which fails at once with a
    clear message when the Hub cannot be reached, and runs rl-zoo3's command with the
    installed Hub packages (:func:`sb3_apo.zoo._compat.hub_commands_compat`). ``push_to_hub``
    writes this package's model card (:mod:`sb3_apo.zoo.hub`) instead of rl-zoo3's.

    :param module: the rl-zoo3 module to run, e.g. ``rl_zoo3.load_from_hub``
    :param name: the console script's name, used in messages
    """

    def hub_command(argv: Sequence[str] | None = None) -> int:
        """
        :param argv: the arguments; ``None``: ``sys.argv[1:]``
        :return: the exit status
        """
        from sb3_apo.zoo._compat import card_written_before_upload, hub_commands_compat

        args = _argv(argv)

        def command() -> None:
            with hub_commands_compat(), _headless_gl_hint(name), ExitStack() as stack:
                if module == "rl_zoo3.push_to_hub":
                    stack.enter_context(card_written_before_upload(_write_our_model_card(args)))
                if not ("-h" in args or "--help" in args):
                    _check_hub_reachable()
                runpy.run_module(module, run_name="__main__")

        return _run(name, args, command)

    hub_command.__doc__ = f"``{name}``: ``{module}``, failing at once when the Hub cannot be reached." + (
        hub_command.__doc__ or ""
    )
    return hub_command


load_from_hub = _hub_command("rl_zoo3.load_from_hub", "sb3-apo-load-from-hub")
push_to_hub = _hub_command("rl_zoo3.push_to_hub", "sb3-apo-push-to-hub")


def _plot_command(name: str) -> Callable[[Sequence[str] | None], int]:
    def plot(argv: Sequence[str] | None = None) -> int:
        def command() -> None:
            import rl_zoo3.plots

            getattr(rl_zoo3.plots, name)()

        return _run(f"sb3-apo-zoo {name}", _argv(argv), command)

    plot.__name__ = name
    plot.__doc__ = f"``sb3-apo-zoo {name}``: ``rl_zoo3.plots.{name}`` (needs scipy, pytablewriter, seaborn)."
    return plot


#: ``sb3-apo-zoo <command>`` -> launcher.
COMMANDS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "train": train,
    "enjoy": enjoy,
    "record_video": record_video,
    "record_training": record_training,
    "load_from_hub": load_from_hub,
    "push_to_hub": push_to_hub,
    "plot_train": _plot_command("plot_train"),
    "plot_from_file": _plot_command("plot_from_file"),
    "all_plots": _plot_command("all_plots"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """
    ``sb3-apo-zoo <command> [arguments]``: one entry point for every launcher (like ``rl_zoo3.cli``).

    :param argv: the command and its arguments; ``None``: ``sys.argv[1:]``
    :return: the exit status
    """
    args = _argv(argv)
    usage = f"usage: sb3-apo-zoo {{{','.join(COMMANDS)}}} [arguments]"
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(usage, file=sys.stderr)
        print(f"sb3-apo-zoo: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    return COMMANDS[command](rest)
