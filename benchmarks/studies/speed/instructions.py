"""
Instruction counts of one rollout and one update on Hopper-v5 (the paper's settings, the project's
YAML files), for SB3's PPO and the package's synchronous algorithms, under valgrind's callgrind.

Instructions, unlike seconds, do not depend on what else the machine does (the speed study,
results/speed/README.md, shows this host's speed moving by +-15% from round to round), so they give the loop's own
cost beyond PPO's exactly, if not its time. Each algorithm, built by the speed tool as in
``benchmarks/speed.py`` (seed 0, the same initial weights), learns two iterations of 2,048 steps;
the second iteration's ``collect_rollouts()`` and ``train()`` are counted (instrumentation switched
on and off around them with ``callgrind_control``).

Run from the repository root, one process per algorithm:
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=results/speed/instructions/callgrind.%p \
        .venv/bin/python benchmarks/studies/speed/instructions.py ALGO
then ``python benchmarks/studies/speed/instructions.py --report`` reads the counts from the
gzipped dumps in ``results/speed/instructions/`` (``sh results/speed/instructions/run.sh`` does all of it;
output in ``stdout.txt``).
"""

import gzip
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DUMPS = Path("results/speed/instructions")  # relative to the repository root, where it runs
ALGORITHMS = ("ppo", "spo", "ppo_penalty", "apo")
STEPS = 2048  # 8 envs x 256 steps: one iteration


def count(phase: str, algo: str, function):
    """``function`` wrapped so that its second call runs with instrumentation on, then dumps the counts."""
    calls = 0

    def counted(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls != 2:
            return function(*args, **kwargs)
        pid = str(os.getpid())
        subprocess.run(["callgrind_control", "--instr=on", pid], check=True, capture_output=True)
        try:
            return function(*args, **kwargs)
        finally:
            subprocess.run(["callgrind_control", f"--dump={algo}:{phase}", pid], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "--instr=off", pid], check=True, capture_output=True)

    return counted


def measure(algo: str) -> None:
    import torch as th

    sys.path.insert(0, str(Path.cwd()))
    from benchmarks.speed import build_model

    th.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        model, _, _ = build_model(algo, "Hopper-v5", None, scratch, seed=0, device="cpu")
        model.collect_rollouts = count("rollout", algo, model.collect_rollouts)
        model.train = count("update", algo, model.train)
        model.learn(2 * STEPS)


def report() -> None:
    counts: dict[tuple[str, str], int] = {}
    for path in sorted(DUMPS.glob("callgrind.*.gz")):
        text = gzip.decompress(path.read_bytes()).decode(errors="replace")
        trigger = re.search(r"^desc: Trigger: [Dd]ump ([\w:]+)", text, re.MULTILINE)
        totals = re.search(r"^totals: (\d+)", text, re.MULTILINE)  # (the summary line can overflow)
        if trigger and totals and ":" in trigger.group(1):
            algo, phase = trigger.group(1).split(":")
            counts[algo, phase] = int(totals.group(1))
    per_1k = {key: value / (STEPS / 1000) / 1e6 for key, value in counts.items()}  # million instructions per 1,000 steps
    reference = per_1k["ppo", "rollout"] + per_1k["ppo", "update"]
    print("Million instructions per 1,000 steps (one counted iteration of 2,048 steps each):\n")
    print("| algorithm | rollout | update | total | beyond PPO's | PPO's total over this total |")
    print("|---|---|---|---|---|---|")
    for algo in ALGORITHMS:
        rollout, update = per_1k[algo, "rollout"], per_1k[algo, "update"]
        total = rollout + update
        beyond, ratio = total - reference, reference / total
        print(f"| {algo} | {rollout:,.1f} | {update:,.1f} | {total:,.1f} | {beyond:+,.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        report()
    else:
        measure(sys.argv[1])
