"""
Whether a checkout of the repository reproduces a committed run. The run's own command (its
``command.txt``), with the run folder redirected to a scratch folder, runs under the checkout's code
for at most ``--minutes`` (or to its end, or to its divergence); then every value that both
``diagnostics.csv`` log (but wall times and rates) and every evaluation is compared, bit for bit, over
the updates both reached, up to the run's first resume (a resumed run's random streams restart from
its seed). A grid row may pool the runs of two commits over as much of the runs as this covers.

Run from the repository root, naming a committed run and a checkout (a git worktree made with
``git worktree add ../grid-0daf7fd 0daf7fd``, with its own ``.venv`` from ``.ci/setup``, or run by
``--python``: an interpreter whose packages are the checkout's tested versions, which then imports
the checkout's ``sb3_apo`` through ``PYTHONPATH``)::

    python benchmarks/studies/reproduce_run.py results/paper_scale/HalfCheetah-v5/apo/epochs50-exact-auto/seed_0 \\
        --checkout ../grid-0daf7fd --out ../reproduce --minutes 60
"""

import argparse
import csv
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks/
from benchmarks.studies.same_computation import TIMING  # noqa: E402
from sb3_apo.benchmark import files  # noqa: E402

#: Columns under ``time/`` that count training, not time: compared too
COUNTERS = ("time/total_timesteps", "time/iterations")


def is_timing(column: str) -> bool:
    """Whether a logged column measures time (wall clock, rates, seconds waited), not training."""
    return any(word in column for word in TIMING) or column.endswith("_s")


def launch_command(run: Path, out: Path, python: str) -> tuple[list[str], dict[str, str]]:
    """
    The run's recorded command with ``out`` in place of its folder, and its environment variables.

    :param run: the committed run's folder, relative to the repository root (as its command names it)
    :param out: the scratch folder (absolute)
    :param python: the interpreter that runs it
    """
    words = shlex.split((run / files.COMMAND_FILE).read_text(encoding="utf-8"))
    environment = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        name, _, value = words.pop(0).partition("=")
        environment[name] = value
    if words[0] != "python":
        raise ValueError(f"{run / files.COMMAND_FILE} does not start with python (after its environment): {words[0]!r}")
    return [python, *(word.replace(str(run), str(out)) for word in words[1:])], environment


def interpreter(checkout: Path, python: str | None) -> str:
    """
    The interpreter that runs the command, as an absolute path (the run starts in the checkout): the checkout's
    ``.venv/bin/python`` by default; a path is taken from the current directory, a bare name looked up on the PATH.
    """
    python = str(checkout / ".venv" / "bin" / "python") if python is None else python
    return str(Path(python).absolute()) if os.sep in python else (shutil.which(python) or python)


def read_log(folder: Path, up_to: float) -> list[dict[str, str]]:
    """The rows of a run's ``diagnostics.csv`` up to timestep ``up_to``, without the columns that measure time."""
    with open(folder / files.DIAGNOSTICS_FILE, newline="") as file:
        rows = list(csv.DictReader(file))
    kept = [row for row in rows if float(row["time/total_timesteps"] or 0) <= up_to]
    compared = [key for key in rows[0] if key in COUNTERS or not is_timing(key)] if rows else []
    return [{key: row[key] for key in compared} for row in kept]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a committed run's folder, relative to the repository root")
    parser.add_argument("--checkout", type=Path, required=True, help="the checkout whose code runs it")
    parser.add_argument("--out", type=Path, required=True, help="a scratch folder")
    parser.add_argument("--minutes", type=float, default=60.0, help="stop the run after this long (default: 60)")
    parser.add_argument("--python", help="the interpreter (default: the checkout's .venv/bin/python)")
    args = parser.parse_args()
    checkout, out = args.checkout.resolve(), args.out.resolve() / args.run.name
    final = [args.run / name for name in (files.DONE_FILE, files.DIVERGED_FILE) if (args.run / name).is_file()]
    record = files.read_json(final[0])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    python = interpreter(checkout, args.python)
    command, environment = launch_command(args.run, out, python)
    environment = {**os.environ, **environment}
    if args.python:
        environment["PYTHONPATH"] = str(checkout)
    out.mkdir(parents=True, exist_ok=True)
    stopped = False
    with open(out / "stdout.log", "w") as log:
        process = subprocess.Popen(command, cwd=checkout, env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            returncode = process.wait(timeout=args.minutes * 60)
        except subprocess.TimeoutExpired:
            stopped = True
            process.send_signal(signal.SIGTERM)  # the launcher stops at its next step, as on Ctrl-C
            try:
                returncode = process.wait(timeout=300)
            except subprocess.TimeoutExpired:
                process.kill()
                returncode = process.wait()
    first_resume = min(record.get("resumed_at") or [np.inf])
    committed, reproduced = read_log(args.run, first_resume), read_log(out, first_resume)
    if stopped:  # the row logged as it was stopped belongs to a cut update
        reproduced = reproduced[:-1]
    reached = min(len(committed), len(reproduced))
    columns = sorted(set(committed[0]) & set(reproduced[0])) if reached else []
    only = sorted(set(committed[0]) ^ set(reproduced[0])) if reached else []
    pairs = list(zip(committed[:reached], reproduced[:reached]))
    differing = [(index, key) for index, (old, new) in enumerate(pairs) for key in columns if old[key] != new[key]]
    n_evaluations, same_evaluations = 0, True  # none reached yet
    for evaluations in (out / "zoo").glob(f"*/*/{files.EVALUATIONS_NPZ}"):
        with np.load(args.run / files.EVALUATIONS_NPZ) as old, np.load(evaluations) as new:
            n_evaluations = min(len(new["timesteps"]), int(np.sum(old["timesteps"] <= first_resume)))
            same_evaluations = np.array_equal(old["timesteps"][:n_evaluations], new["timesteps"][:n_evaluations]) and (
                np.array_equal(old["results"][:n_evaluations], new["results"][:n_evaluations])
            )
    last = next((row["time/total_timesteps"] for row in reversed(committed[:reached]) if row["time/total_timesteps"]), "none")
    same = reached > 0 and not differing and same_evaluations
    lines = [
        f"run: {args.run} (code {record['code']['commit'][:7]}), reproduced by {commit.stdout.strip()} "
        f"(exit status {returncode}; {'stopped after ' if stopped else 'ended within '}{args.minutes:g} minutes"
        f"{', its last logged row, of the cut update, left out' if stopped else ''})",
        f"logged rows compared: {reached} (of {len(committed)} committed, {len(reproduced)} reproduced), up to timestep "
        f"{last}; columns compared: {len(columns)}" + (f"; in one log only: {', '.join(only)}" if only else ""),
        f"differing values: {len(differing)}" + (f" (first: row {differing[0][0]}, {differing[0][1]})" if differing else ""),
        f"evaluations compared: {n_evaluations}, every episode's return {'the same' if same_evaluations else 'DIFFERENT'}",
        f"{'the same computation' if same else 'DIFFERENT'} over the rows compared",
    ]
    if files.DIVERGED_FILE in {path.name for path in args.run.iterdir()}:
        lines.append(f"committed run diverged: {record.get('message', '')}")
    if returncode != 0:
        tail = (out / "stdout.log").read_text(errors="replace").strip().splitlines()[-1:]
        lines.append(f"reproduction's last line: {tail[0] if tail else ''}")
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
