"""
Whether two checkouts of the repository train the same thing: the same short launcher command run
in each (the 10M-step study's tier-1 settings, HalfCheetah-v5 at 50 epochs, 8,192 steps: four
updates and two evaluations), then every logged value of ``diagnostics.csv`` (but wall times and
rates) and every evaluation return compared for equality, bit for bit. A grid row may pool runs of
two code commits only where this holds.

Run from the repository root, naming two checkouts (git worktrees, each with its own ``.venv``, made with
``git worktree add ../grid-3604b89 3604b89`` and ``.ci/setup`` inside it) and a scratch folder::

    python benchmarks/studies/same_computation.py ../grid-3604b89 ../grid-32c84fd --out ../same_computation
"""

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

#: (algo, name, -params) of the tier-1 variants
VARIANTS = [
    ("apo", "epochs50", ["n_epochs:50"]),
    ("apo", "epochs50-exact-auto", ["n_epochs:50", "anchor_estimator:'exact'", "anchor_coef:'auto'"]),
    ("ppo", "epochs50", ["n_epochs:50"]),
]
#: Columns that measure time, not training
TIMING = ("time/", "wall", "steps_per_s", "fps")


def run(checkout: Path, out: Path, algo: str, params: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    callback = json.dumps([{"sb3_apo.benchmark.callbacks.DiagnosticsCSVCallback": {"folder": str(out), "seed": 0}}])
    command = [str(checkout / ".venv" / "bin" / "python"), "-m", "sb3_apo.train", "--algo", algo, "--env", "HalfCheetah-v5"]
    command += ["--seed", "0", "-f", str(out / "zoo"), "--n-timesteps", "8192", "--eval-freq", "4096", "--eval-episodes", "2"]
    command += ["--n-eval-envs", "1", "--num-threads", "1", "--verbose", "0", "-params", *params, f"callback:{callback}"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    with open(out / "stdout.log", "w") as log:
        subprocess.run(command, cwd=checkout, env=environment, stdout=log, stderr=subprocess.STDOUT, check=True)


def logged(out: Path) -> tuple[list[dict[str, str]], np.ndarray]:
    with open(out / "diagnostics.csv") as file:
        rows = list(csv.DictReader(file))
    rows = [{key: value for key, value in row.items() if not any(word in key for word in TIMING)} for row in rows]
    (evaluations,) = (out / "zoo").glob("*/*/evaluations.npz")
    return rows, np.load(evaluations)["results"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", type=Path, nargs=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    commits = [
        subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=c, capture_output=True, text=True).stdout.strip()
        for c in args.checkouts
    ]
    same = True
    for algo, name, params in VARIANTS:
        results = []
        for checkout, commit in zip(args.checkouts, commits):
            out = args.out / commit / f"{algo}-{name}"
            run(checkout.resolve(), out.resolve(), algo, params)
            results.append(logged(out))
        (rows_a, eval_a), (rows_b, eval_b) = results
        differing = sum(
            row_a.get(key) != row_b.get(key) for row_a, row_b in zip(rows_a, rows_b) for key in row_a.keys() | row_b.keys()
        )
        equal = len(rows_a) == len(rows_b) and differing == 0 and np.array_equal(eval_a, eval_b)
        same &= equal
        print(
            f"{algo} {name}: {len(rows_a)} and {len(rows_b)} logged rows, {len(rows_a[0])} columns, "
            f"{differing} differing values; "
            f"evaluation returns {eval_a.mean(axis=1).round(4).tolist()} and {eval_b.mean(axis=1).round(4).tolist()}: "
            f"{'the same' if equal else 'DIFFERENT'}"
        )
    print(f"{commits[0]} and {commits[1]}: {'the same computation' if same else 'different computations'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
