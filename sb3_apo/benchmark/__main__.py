"""
``python -m sb3_apo.benchmark run``: run a grid of training runs, resumably.

Example::

    python -m sb3_apo.benchmark run --results results/mujoco --algos apo ppo ppo_penalty spo \\
        --envs Hopper-v5 Walker2d-v5 HalfCheetah-v5 --seeds 0 1 2 --n-timesteps 1000000

The report and the speed benchmark are the scripts in ``benchmarks/`` (``docs/benchmarks.md``).
"""

import argparse
import importlib.util
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from sb3_apo.benchmark import files
from sb3_apo.benchmark.grid import BASE_VARIANT, GridError, GridRunner, GridSettings, Variant, plan_grid
from sb3_apo.zoo.masking import recorded_command


def default_jobs() -> int:
    """The number of CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (one subcommand, ``run``)."""
    parser = argparse.ArgumentParser(
        prog="python -m sb3_apo.benchmark",
        description="Benchmark grids of sb3-apo (docs/benchmarks.md); the report and speed scripts are in benchmarks/.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run a grid of algorithms x envs x variants x seeds (resumable)",
        description="Run a grid through the launcher, N runs at a time. Finished runs are never redone; "
        "run the same command again to resume an interrupted grid. Arguments after `--` go to every launcher call "
        "(a database password in them, e.g. in --storage, is masked in every file the runner writes, but every user "
        "of the machine sees it in `ps`: give --storage env:NAME, NAME an environment variable holding the URL, or "
        "leave the password out of the URL and set PGPASSWORD).",
    )
    run.add_argument("--results", type=Path, required=True, help="results folder")
    run.add_argument("--algos", nargs="+", required=True, help="algorithms, as the launcher's --algo names them")
    run.add_argument("--envs", nargs="+", required=True, help="environment ids")
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    run.add_argument(
        "--variant",
        action="append",
        default=None,
        metavar="NAME[:key=value,...]",
        help=f"a hyperparameter variant, e.g. epochs50:n_epochs=50 (repeatable; default: {BASE_VARIANT}, no overrides; "
        f"give --variant {BASE_VARIANT} too to run both)",
    )
    run.add_argument("-n", "--n-timesteps", type=int, default=None, help="budget per run (default: the YAML's)")
    run.add_argument("--eval-freq", type=int, default=20_000, help="evaluate every N timesteps (default: 20000)")
    run.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation (default: 10)")
    run.add_argument("--n-eval-envs", type=int, default=5, help="envs per evaluation (default: 5)")
    run.add_argument("-j", "--jobs", type=int, default=default_jobs(), help="runs in parallel (default: the cores)")
    run.add_argument("--launcher", default="sb3_apo.train", help="module run as `python -m` (default: sb3_apo.train)")
    run.add_argument("--threads-per-run", type=int, default=1, help="torch/BLAS threads per run (default: 1)")
    run.add_argument("--launcher-verbose", type=int, default=0, help="the launcher's --verbose (default: 0)")
    run.add_argument("--status-every", type=float, default=60.0, help="seconds between status lines (default: 60)")
    run.add_argument(
        "--checkpoint-freq",
        type=int,
        default=0,
        help="checkpoint each run every N timesteps; a run cut short resumes from its latest checkpoint "
        "(default: 0, none: it restarts)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the runs and their commands, run nothing")

    return parser


def _run(args: argparse.Namespace, extra: list[str], argv: Sequence[str]) -> int:
    try:
        found = importlib.util.find_spec(args.launcher) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise GridError(
            f"The launcher module {args.launcher!r} is not importable; give --launcher rl_zoo3.train, for example."
        )
    variants = [Variant.parse(text) for text in (args.variant or [BASE_VARIANT])]
    settings = GridSettings(
        results=args.results,
        launcher=args.launcher,
        n_timesteps=args.n_timesteps,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        n_eval_envs=args.n_eval_envs,
        threads_per_run=args.threads_per_run,
        verbose=args.launcher_verbose,
        extra_args=tuple(extra),
        checkpoint_freq=args.checkpoint_freq,
    )
    runs = plan_grid(args.envs, args.algos, variants, args.seeds)
    runner = GridRunner(runs, settings, jobs=args.jobs, status_every=args.status_every)
    if args.dry_run:
        pending = set(runner.pending())
        for spec in runs:
            diverged = (spec.folder(settings.results) / files.DIVERGED_FILE).is_file()
            state = "to run" if spec in pending else "diverged (final)" if diverged else "finished"
            print(f"{spec.key}: {state}\n  {shlex.join(recorded_command(spec.command(settings)))}")
        print(f"{len(pending)} of {len(runs)} runs to run.")
        return 0
    return runner.run(argv=["python", "-m", "sb3_apo.benchmark", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    """
    Entry point.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit status
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    try:
        return _run(args, extra, argv)
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
