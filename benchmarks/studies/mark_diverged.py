"""
Write ``diverged.json`` for a grid run that diverged before the grid runner knew the outcome
(it stopped with ``NonFiniteLossError`` and got ``failed.json``, which makes the runner run it
again): the record the runner now writes itself for such a run, from the run folder's own files
(settings, ``stdout.log`` with the launcher's error line, ``progress.json``, the zoo folder's
evaluations), with the commit the run was made at, given here, and ``failed.json`` removed. A
retry would be the same computation and diverge at the same step.

Run from the repository root with the study's settings, e.g. for the 10M-step study::

    python benchmarks/studies/mark_diverged.py results/paper_scale/HalfCheetah-v5/apo/epochs50-exact-auto/seed_0 \\
        --commit 3604b891b8c6921525c9b745c5c050a4e38104f2
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks/
from benchmarks.studies import paper_scale  # noqa: E402
from sb3_apo.benchmark import files  # noqa: E402
from sb3_apo.benchmark.grid import GridRunner, RunSpec, Variant  # noqa: E402
from sb3_apo.zoo.errors import EXIT_DIVERGED  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the run folder (<results>/<env>/<algo>/<variant>/seed_<seed>)")
    parser.add_argument("--commit", required=True, help="the full commit the run was made at")
    args = parser.parse_args()
    settings = files.read_json(args.folder / "settings.json")
    overrides = ",".join(f"{key}={value}" for key, value in settings["variant_params"].items())
    variant = Variant.parse(settings["variant"] + (f":{overrides}" if overrides else ""))
    spec = RunSpec(settings["env"], settings["algo"], variant, settings["seed"])
    grid = paper_scale.tier_settings()
    if spec.folder(grid.results).resolve() != args.folder.resolve():
        raise SystemExit(f"error: {args.folder} is not where the study keeps {spec.key} ({spec.folder(grid.results)})")
    failed = files.read_json(args.folder / "failed.json")
    runner = GridRunner([spec], grid, jobs=1)
    runner.write_diverged(spec, args.folder, EXIT_DIVERGED, failed["wall_time_s"])
    record = files.read_json(args.folder / files.DIVERGED_FILE)
    record["code"] = {"commit": args.commit, "dirty": False}
    record["returncode"] = failed["returncode"]  # the launcher of that commit exited with 1, before EXIT_DIVERGED existed
    record["recorded_afterwards"] = "written by benchmarks/studies/mark_diverged.py from the run's files"
    files.atomic_write_json(args.folder / files.DIVERGED_FILE, record)
    (args.folder / "failed.json").unlink()
    print(f"{spec.key}: diverged at {record['timesteps']}: {record['message']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
