"""
A run whose training diverged is a final outcome of the grid: the launcher exits with its own
status (``EXIT_DIVERGED``), the runner records ``diverged.json`` with the evaluations so far and
never runs it again, and the report counts it without giving it a score.

The divergence is forced with a learning rate of 1e30 and one epoch of one minibatch: the first
update moves every weight by about 1e30 (Adam's first step is the learning rate), so that the
values of the second rollout are around 1e31 and the second update's value loss overflows. Both
rollouts are evaluated, and the second starts with a checkpoint.
"""

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_benchmark import run_benchmark

from benchmarks import report
from sb3_apo.benchmark import files
from sb3_apo.benchmark.__main__ import main as benchmark_main
from sb3_apo.benchmark.grid import GridError, GridRunner, GridSettings, Variant, plan_grid
from sb3_apo.zoo import cli
from sb3_apo.zoo.errors import EXIT_DIVERGED

N_STEPS, EVAL_FREQ, N_TIMESTEPS = 64, 32, 512
DIVERGING = f"n_envs=1,n_steps={N_STEPS},batch_size={N_STEPS},n_epochs=1,learning_rate=1e30"
#: The timestep of the update that diverges: the second.
DIVERGES_AT = 2 * N_STEPS


def test_the_launcher_exits_with_its_own_status_when_training_diverges(tmp_path, capsys):
    params = [f"{key}:{value}" for key, value in Variant.parse(f"diverging:{DIVERGING}").params]
    args = ["--algo", "apo", "--env", "CartPole-v1", "-f", str(tmp_path / "logs"), "--num-threads", "1", "--seed", "0"]
    status = cli.train([*args, "-n", str(N_TIMESTEPS), "--eval-freq", "-1", "-params", *params])
    assert status == EXIT_DIVERGED == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith("sb3-apo-train: error: NonFiniteLossError: APO: the ")
    assert "became non-finite (inf or NaN) at update" in lines[0] and f"after {DIVERGES_AT} timesteps" in lines[0]
    # another error keeps its status
    assert cli.train([*args, "-n", str(N_TIMESTEPS), "-params", "n_steps:0"]) == 1


@pytest.mark.slow
def test_a_diverged_run_is_recorded_with_its_evaluations_and_never_run_again(tmp_path, monkeypatch, capsys):
    args = ["run", "--results", "grid", "--algos", "apo", "--envs", "CartPole-v1", "--seeds", "0", "--jobs", "1"]
    args += ["-n", str(N_TIMESTEPS), "--eval-freq", str(EVAL_FREQ), "--eval-episodes", "1", "--n-eval-envs", "1"]
    args += ["--variant", f"diverging:{DIVERGING}", "--status-every", "5", "--checkpoint-freq", str(N_STEPS)]
    folder = tmp_path / "grid" / "CartPole-v1" / "apo" / "diverging" / "seed_0"

    runner = run_benchmark(*args, cwd=tmp_path)
    output, _ = runner.communicate(timeout=240)
    assert runner.returncode == 0, output  # a final outcome, not a failure
    assert f"DIVERGED CartPole-v1/apo/diverging/seed_0 at timestep {DIVERGES_AT}" in output
    assert "0/1 runs done, 1 diverged: CartPole-v1/apo/diverging/seed_0" in output
    assert not (folder / files.DONE_FILE).exists() and not (folder / files.FAILED_FILE).exists()
    assert not (folder / files.CHECKPOINTS_FOLDER).exists()

    diverged = files.read_json(folder / files.DIVERGED_FILE)
    assert diverged["settings"] == files.read_json(folder / files.SETTINGS_FILE)
    assert diverged["returncode"] == EXIT_DIVERGED and diverged["timesteps"] == DIVERGES_AT
    assert diverged["message"].startswith("sb3-apo-train: error: NonFiniteLossError: APO: ")
    assert f"after {DIVERGES_AT} timesteps" in diverged["message"]
    assert diverged["code"]["commit"] and diverged["wall_time_s"] > 0 and diverged["seed"] == 0
    assert diverged["hyperparams"]["n_epochs"] == 1 and diverged["resumed_at"] == []
    # the evaluation curve so far, kept as a finished run keeps it
    expected = list(range(EVAL_FREQ, DIVERGES_AT + 1, EVAL_FREQ))
    with open(folder / files.EVALUATIONS_CSV) as file:
        assert [int(row["timesteps"]) for row in csv.DictReader(file)] == expected
    with np.load(folder / files.EVALUATIONS_NPZ) as data:
        assert data["timesteps"].tolist() == expected
    assert diverged["final_eval"]["timesteps"] == expected[-1]

    # the next invocation runs nothing, and keeps the record as it is
    record = (folder / files.DIVERGED_FILE).read_bytes()
    again = run_benchmark(*args, cwd=tmp_path)
    output, _ = again.communicate(timeout=60)
    assert again.returncode == 0, output
    assert "0 already finished, 0 to run" in output and "1 diverged before (final: not run again)" in output
    assert "started" not in output and "1 diverged: CartPole-v1/apo/diverging/seed_0" in output
    assert (folder / files.DIVERGED_FILE).read_bytes() == record

    # the dry run says so
    monkeypatch.chdir(tmp_path)
    assert benchmark_main([*args, "--dry-run"]) == 0
    assert "CartPole-v1/apo/diverging/seed_0: diverged (final)" in capsys.readouterr().out

    # asked with other settings, it is refused as a finished run is
    runs = plan_grid(["CartPole-v1"], ["apo"], [Variant.parse(f"diverging:{DIVERGING}")], [0])
    settings = dict(results=tmp_path / "grid", n_timesteps=N_TIMESTEPS, eval_freq=EVAL_FREQ, eval_episodes=1, n_eval_envs=1)
    assert GridRunner(runs, GridSettings(**settings), jobs=1, out=io.StringIO()).pending() == []
    with pytest.raises(GridError, match=r"finished \(or diverged\) with other settings(.|\n)*n_timesteps 512 -> 1024"):
        GridRunner(runs, GridSettings(**{**settings, "n_timesteps": 1024}), jobs=1).pending()

    # the report gives it no score: with no finished run, there is nothing to report
    with pytest.raises(FileNotFoundError, match=r"No finished run .*1 diverged run"):
        report.make_report(tmp_path / "grid", reps=100, figures=False)


def write_run(results: Path, algo: str, seed: int, returns: list[float], diverged_at: int | None = None) -> None:
    """A finished run with these evaluation returns, or, with ``diverged_at``, a run that diverged there."""
    folder = results / "HalfCheetah-v5" / algo / "base" / f"seed_{seed}"
    folder.mkdir(parents=True)
    record = {"env": "HalfCheetah-v5", "algo": algo, "variant": "base", "seed": seed, "settings": {"n_timesteps": 10_000_000}}
    record |= {"hyperparams": {"n_epochs": 50}, "code": {"commit": "a" * 40, "dirty": False}}
    timesteps = 1_000_000 * np.arange(1, len(returns) + 1)
    pd.DataFrame({"timesteps": timesteps, "mean_return": returns}).to_csv(folder / "evaluations.csv", index=False)
    (folder / "settings.json").write_text("{}")
    if diverged_at is None:
        files.atomic_write_json(folder / files.DONE_FILE, {**record, "timesteps": 10_000_000})
    else:
        message = f"sb3-apo-train: error: NonFiniteLossError: APO: the gradient became non-finite, after {diverged_at}"
        files.atomic_write_json(folder / files.DIVERGED_FILE, {**record, "timesteps": diverged_at, "message": message})


def test_the_report_counts_diverged_runs_and_leaves_them_out_of_the_scores(tmp_path):
    results = tmp_path / "results"
    scores = {0: 1000.0, 1: 3000.0, 2: 2000.0, 3: 4000.0}
    for seed, score in scores.items():
        write_run(results, "apo", seed, [score] * 5)
    write_run(results, "apo", 4, [9000.0] * 3, diverged_at=3_560_000)  # a high curve so far: must not count
    for seed in range(2):
        write_run(results, "ppo", seed, [2500.0] * 5)
    write_run(results, "ppo", 2, [100.0], diverged_at=1_200_000)
    write_run(results, "spo", 0, [100.0], diverged_at=2_000_000)  # every run of the row diverged
    out = tmp_path / "report"
    result = report.make_report(results, out, reps=100, figures=False)

    summary = result["summary"].set_index("label")
    apo = summary.loc["apo"]
    assert apo["n_seeds"] == 4 and apo["seeds"] == "0 1 2 3"
    assert apo["n_diverged"] == 1 and apo["diverged_at"] == "3560000"
    assert apo["iqm"] == pytest.approx(report.interquartile_mean(np.array(list(scores.values()))))
    assert apo["mean"] == pytest.approx(2500.0) and apo["scores"] == "1000 3000 2000 4000"
    # P(apo > ppo) ranks a diverged run below every finished one, ties counting half: of the 5 x 3 pairs,
    # 2 finished apo runs beat both ppo runs of 2,500, all 4 beat ppo's diverged run, and the two diverged tie
    assert apo["p_improvement"] == pytest.approx((2 * 2 + 4 + 0.5) / 15)
    assert apo["verdict"] == "too few seeds (5 and 3; 5 a side needed)"
    assert summary.loc["ppo", "n_seeds"] == 2 and summary.loc["ppo", "n_diverged"] == 1
    spo = summary.loc["spo"]
    assert spo["n_seeds"] == 0 and spo["n_diverged"] == 1 and np.isnan(spo["iqm"]) and np.isnan(spo["mean"])
    assert spo["p_improvement"] == pytest.approx(0.5 / 3) and spo["code"] == "`aaaaaaa` (0)"
    assert len(result["runs"]) == 6 and sorted(result["diverged"]["folder"]) == [  # the scored runs, and the others
        "HalfCheetah-v5/apo/base/seed_4",
        "HalfCheetah-v5/ppo/base/seed_2",
        "HalfCheetah-v5/spo/base/seed_0",
    ]

    text = (out / "summary.md").read_text()
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| `")
    }
    assert rows["`apo`"][1:3] == ["4 (0 1 2 3)", "1 of 5 (at 3.56M)"] and rows["`ppo`"][2] == "1 of 3 (at 1.2M)"
    assert rows["`spo`"][1:3] == ["0", "1 of 1 (at 2M)"] and rows["`spo`"][4] == "n/a"  # no IQM
    assert "a diverged run ranks below every finished run" in text
    assert "## Diverged runs" in text
    assert "- `HalfCheetah-v5/apo/base/seed_4` at timestep 3,560,000 of 10,000,000 (code `aaaaaaa`): sb3-apo-train" in text
    assert "Unfinished runs" not in text  # a diverged run is final, not unfinished
    assert report.main([str(results), "--out", str(tmp_path / "cli"), "--reps", "100", "--no-figures"]) == 0


def test_a_row_whose_runs_all_diverged_ranks_below_the_reference(tmp_path):
    results = tmp_path / "results"
    for seed in range(5):
        write_run(results, "apo", seed, [4000.0] * 3, diverged_at=4_000_000 + seed)
        write_run(results, "ppo", seed, [-100.0 + seed] * 5)  # low scores, but whole runs
    summary = report.make_report(results, tmp_path / "report", reps=100, figures=False)["summary"].set_index("label")
    apo = summary.loc["apo"]
    assert apo["n_seeds"] == 0 and apo["n_diverged"] == 5 and np.isnan(apo["iqm"])
    assert (apo["p_improvement"], apo["p_improvement_low"], apo["p_improvement_high"]) == (0.0, 0.0, 0.0)
    assert apo["verdict"] == "below `ppo`" and apo["code"] == "`aaaaaaa` (0 1 2 3 4)"


def test_the_curves_draw_each_diverged_run_until_it_stopped(tmp_path):
    results = tmp_path / "results"
    for seed in range(2):
        write_run(results, "apo", seed, [1000.0 + seed] * 5)
        write_run(results, "ppo", seed, [2000.0 + seed] * 5)
    write_run(results, "apo", 2, [3000.0, 500.0, -200.0], diverged_at=3_560_000)
    runs, evaluations, _, _, diverged = report.load_runs(results, final_window=5)
    finished, lost = report.env_curves("HalfCheetah-v5", runs, diverged, evaluations)
    # the finished runs' evaluations feed the bands; the diverged run's, its own dashed line
    assert sorted(finished["folder"].unique()) == sorted(runs["folder"])
    assert lost["folder"].unique().tolist() == ["HalfCheetah-v5/apo/base/seed_2"] and set(lost["label"]) == {"apo"}
    assert lost["mean_return"].tolist() == [3000.0, 500.0, -200.0]
    assert lost["timesteps"].tolist() == [1_000_000, 2_000_000, 3_000_000]
    assert not set(lost["folder"]) & set(finished["folder"])
    other_env, none = report.env_curves("Hopper-v5", runs, diverged, evaluations)
    assert len(other_env) == 0 and len(none) == 0
    written = report.make_report(results, tmp_path / "report", reps=100)["files"]
    assert tmp_path / "report" / "curves_HalfCheetah-v5.png" in written
