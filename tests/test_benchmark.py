"""
The benchmark harness at small budgets: a 2x2x2 grid through the launcher, resuming
after the runner is killed, the report from a fixed fixture, and the speed benchmark.

The grid runs go through ``python -m sb3_apo.train`` when the package has its
launcher, else through ``python -m rl_zoo3.train`` (same flags) with SB3's PPO and A2C.
"""

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sb3_apo.benchmark.__main__ import main
from sb3_apo.benchmark.grid import GridError, GridRunner, GridSettings, Variant, plan_grid, split_top_level
from sb3_apo.benchmark.report import make_report

FIXTURE = Path(__file__).parent / "fixtures" / "benchmark"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

if importlib.util.find_spec("sb3_apo.train") is not None:
    LAUNCHER, ALGOS, TINY = "sb3_apo.train", ["apo", "ppo"], "tiny:n_steps=64,batch_size=64,n_epochs=2"
else:  # the package's launcher is not there yet: rl-zoo3's own, with SB3's algorithms
    LAUNCHER, ALGOS, TINY = "rl_zoo3.train", ["ppo", "a2c"], "tiny:n_steps=64"
COMMON = ["--launcher", LAUNCHER, "-n", "512", "--eval-freq", "256", "--eval-episodes", "1", "--n-eval-envs", "1"]
COMMON += ["--variant", TINY, "--status-every", "5"]


def run_benchmark(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sb3_apo.benchmark", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as dead
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_grid_2x2x2_runs_and_reports(tmp_path):
    args = ["run", "--results", "grid", "--algos", *ALGOS, "--envs", "CartPole-v1", "Pendulum-v1", "--seeds", "0", "1"]
    args += ["--jobs", "2", *COMMON]
    process = run_benchmark(*args, cwd=tmp_path)
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    assert "8 runs in the grid: 0 already finished, 8 to run" in output
    assert "grid finished" in output and "8/8 runs done" in output

    results = tmp_path / "grid"
    folders = sorted(path.parent for path in results.rglob("done.json"))
    assert len(folders) == 8
    for folder in folders:
        done = json.loads((folder / "done.json").read_text())
        assert done["timesteps"] >= 512 and done["steps_per_s"] > 0 and done["wall_time_s"] > 0
        assert done["final_eval"]["n_episodes"] == 1
        assert done["variant_params"] == dict(Variant.parse(TINY).params)
        command = (folder / "command.txt").read_text()
        assert f"-m {LAUNCHER} --algo {done['algo']} --env {done['env']} --seed {done['seed']}" in command
        assert "n_steps:64" in command
        with open(folder / "evaluations.csv") as file:
            evaluations = list(csv.DictReader(file))
        assert [int(row["timesteps"]) for row in evaluations][:2] == [256, 512]
        with open(folder / "diagnostics.csv") as file:
            diagnostics = list(csv.DictReader(file))
        measured = [row for row in diagnostics if row.get("diag/kl")]
        assert measured, f"no diag/* row in {folder}"
        for key in ("diag/kl", "diag/ratio_max", "diag/anchor_ratio_max", "diag/timesteps"):
            assert all(row[key] != "" for row in measured), key
        assert float(measured[-1]["diag/anchor_ratio_max"]) >= 1.0
        if done["algo"] == "apo":  # the package's own diagnostics
            assert any(row.get("train/anchor_ratio_max") for row in diagnostics)

    # A second invocation finds everything finished and runs nothing.
    again = run_benchmark(*args, cwd=tmp_path)
    output, _ = again.communicate(timeout=60)
    assert again.returncode == 0 and "8 already finished, 0 to run" in output, output

    assert main(["report", str(results)]) == 0
    report = results / "report"
    with open(report / "summary.csv") as file:
        summary = list(csv.DictReader(file))
    assert len(summary) == 4 and {row["n_seeds"] for row in summary} == {"2"}
    for env in ("CartPole-v1", "Pendulum-v1"):
        for name in (f"curves_{env}.png", f"diagnostics_{env}.png"):
            assert (report / name).read_bytes().startswith(PNG_MAGIC)


def test_resume_after_the_runner_is_killed(tmp_path):
    args = ["run", "--results", "grid", "--algos", ALGOS[0], "--envs", "CartPole-v1", "--seeds", "0", "1", "2"]
    args += ["--jobs", "1", *COMMON]
    results = tmp_path / "grid"
    first, second = (results / "CartPole-v1" / ALGOS[0] / "tiny" / f"seed_{seed}" for seed in (0, 1))

    runner = run_benchmark(*args, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not ((first / "done.json").is_file() and (second / "progress.json").is_file()):
        assert runner.poll() is None, runner.communicate()[0]
        assert time.monotonic() < deadline, "the grid made no progress"
        time.sleep(0.1)
    child_pid = json.loads((second / "progress.json").read_text())["pid"]
    runner.send_signal(signal.SIGKILL)  # no chance to clean up
    runner.communicate(timeout=30)
    finished_before = (first / "done.json").read_bytes(), (first / "done.json").stat().st_mtime_ns
    assert not (second / "done.json").exists()
    # the run in flight dies with the runner instead of writing on as an orphan
    deadline = time.monotonic() + 10
    while pid_alive(child_pid):
        assert time.monotonic() < deadline, "the interrupted run outlived the runner"
        time.sleep(0.1)

    runner = run_benchmark(*args, cwd=tmp_path)
    output, _ = runner.communicate(timeout=180)
    assert runner.returncode == 0, output
    assert "3 runs in the grid: 1 already finished, 2 to run" in output
    assert "restarting CartPole-v1" in output and "3/3 runs done" in output
    # the finished run was not redone, the interrupted one restarted cleanly
    assert ((first / "done.json").read_bytes(), (first / "done.json").stat().st_mtime_ns) == finished_before
    assert f"started  CartPole-v1/{ALGOS[0]}/tiny/seed_0" not in output
    assert [path.name for path in (second / "zoo" / ALGOS[0]).iterdir()] == ["CartPole-v1_1"]
    assert all((results / "CartPole-v1" / ALGOS[0] / "tiny" / f"seed_{seed}" / "done.json").is_file() for seed in range(3))
    assert (results / "runner_commands.txt").read_text().count("sb3_apo.benchmark run") == 2


def fixture_settings(results: Path, **changes) -> GridSettings:
    settings = dict(
        results=results, launcher="sb3_apo.train", n_timesteps=1_000_000, eval_freq=250_000, eval_episodes=10, n_eval_envs=5
    )
    return GridSettings(**{**settings, **changes})


def test_finished_runs_are_kept_and_clashing_settings_refused(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    runs = plan_grid(["Hopper-v5"], ["apo", "ppo"], [Variant.parse("base"), Variant.parse("epochs50:n_epochs=50")], [0, 1])
    assert GridRunner(runs, fixture_settings(results), jobs=1).pending() == []
    with pytest.raises(GridError, match="n_timesteps 1000000 -> 2000000"):
        GridRunner(runs, fixture_settings(results, n_timesteps=2_000_000), jobs=1).pending()
    redefined = plan_grid(["Hopper-v5"], ["apo"], [Variant.parse("epochs50:n_epochs=40")], [0])
    with pytest.raises(GridError, match="variant_params"):
        GridRunner(redefined, fixture_settings(results), jobs=1).pending()
    # the interrupted fixture run is pending
    walker = plan_grid(["Walker2d-v5"], ["ppo"], [Variant.parse("base")], [0, 1])
    assert [spec.seed for spec in GridRunner(walker, fixture_settings(results), jobs=1).pending()] == [1]


def test_variants_parse_and_reject_bad_input():
    variant = Variant.parse("big:n_epochs=50,policy_kwargs=dict(net_arch=[64, 64]),anchor_mode='a,b'")
    assert variant.params == (("n_epochs", "50"), ("policy_kwargs", "dict(net_arch=[64, 64])"), ("anchor_mode", "'a,b'"))
    assert split_top_level("a=1, b=[1, 2]") == ["a=1", "b=[1, 2]"]
    assert Variant.parse("base").params == ()
    for bad in ("base:n_epochs=5", "noparams", "x:n_epochs", "x:n_epochs=(", "x y:a=1", "x:callback=1"):
        with pytest.raises(GridError):
            Variant.parse(bad)
    with pytest.raises(GridError, match="Duplicate seed"):
        plan_grid(["CartPole-v1"], ["ppo"], [Variant.parse("base")], [0, 0])
    with pytest.raises(GridError, match="set by the runner"):
        GridRunner([], GridSettings(results=Path("x"), extra_args=("--seed", "3")), jobs=1)


def test_report_from_the_fixture(tmp_path):
    out = tmp_path / "report"
    result = make_report(FIXTURE, out)
    summary = {(row["env"], row["label"]): row for row in result["summary"]}
    apo = summary[("Hopper-v5", "apo")]
    assert apo["final_return_mean"] == pytest.approx(3100.0)
    assert apo["final_return_std"] == pytest.approx(141.421356, rel=1e-5)
    assert apo["seeds"] == "0 1" and apo["budget_timesteps"] == "1000000" and apo["n_epochs"] == 10
    assert summary[("Hopper-v5", "ppo [epochs50]")]["final_return_mean"] == pytest.approx(1200.0)
    assert summary[("Walker2d-v5", "apo")]["n_seeds"] == 1

    retention = {(row["algo"], row["n_epochs"]): row["retention"] for row in result["epochs"]}
    assert retention[("apo", 10)] == pytest.approx(1.0)
    assert retention[("apo", 50)] == pytest.approx(2925.0 / 3100.0)
    assert retention[("ppo", 50)] == pytest.approx(1200.0 / 2600.0)

    diagnostics = {(row["env"], row["label"]): row for row in result["diagnostics"]}
    assert diagnostics[("Hopper-v5", "apo")]["anchor_ratio_max_max"] == pytest.approx(1.3)
    assert diagnostics[("Hopper-v5", "ppo")]["anchor_ratio_max_max"] == pytest.approx(2.5)

    markdown = (out / "summary.md").read_text()
    assert "| `apo` | 3,100 ± 141 | 2 (0 1) | 1,000,000 | 10 |" in markdown
    assert "| `apo` | 3,900 | 1 (0) |" in markdown  # one seed: no spread claimed
    assert "| Hopper-v5 | `ppo` | 50 | 1,200 ± 141 | 2 (0 1) | 1,000,000 | 46% |" in markdown
    assert "Walker2d-v5/ppo/base/seed_1" in markdown  # the unfinished run is listed, not counted
    for name in (
        "summary.csv",
        "runs.csv",
        "diagnostics.csv",
        "epochs.csv",
        "curves_Hopper-v5.png",
        "diagnostics_Hopper-v5.png",
        "curves_Walker2d-v5.png",
        "diagnostics_Walker2d-v5.png",
        "epochs_Hopper-v5.png",
    ):
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert not (out / "epochs_Walker2d-v5.png").exists()
    with open(out / "runs.csv") as file:
        assert len(list(csv.DictReader(file))) == 10

    # the train/* source: SB3's PPO has no train/anchor_ratio_max, APO has
    train = make_report(FIXTURE, tmp_path / "train", source="train")
    diagnostics = {(row["env"], row["label"]): row for row in train["diagnostics"]}
    assert diagnostics[("Hopper-v5", "apo")]["anchor_ratio_max_max"] == pytest.approx(1.4)
    assert (
        diagnostics[("Hopper-v5", "ppo")]["anchor_ratio_max_max"] != diagnostics[("Hopper-v5", "ppo")]["anchor_ratio_max_max"]
    )


def test_report_of_an_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "No finished run" in capsys.readouterr().err


def test_speed_benchmark_writes_ratios_to_ppo(tmp_path):
    yml = "CartPole-v1:\n  n_envs: 2\n  policy: MlpPolicy\n  n_steps: 64\n  batch_size: 64\n  n_epochs: 1\n"
    yml += "  normalize: true\n  learning_rate: lin_3e-4\n  policy_kwargs: 'dict(net_arch=[16], activation_fn=nn.Tanh)'\n"
    for algo in ("apo", "ppo"):
        (tmp_path / f"{algo}.yml").write_text(yml)
    out = tmp_path / "speed"
    args = ["speed", "--env", "CartPole-v1", "--algos", "apo", "--rounds", "2", "--steps-per-round", "256"]
    args += ["--warmup-steps", "128", "--hyperparams-dir", str(tmp_path), "--out", str(out)]
    assert main(args) == 0
    with open(out / "speed_summary.csv") as file:
        rows = {row["contender"]: row for row in csv.DictReader(file)}
    assert set(rows) == {"apo", "ppo", "env: same VecEnv, random actions", "env: one gym.make env, random actions"}
    assert float(rows["ppo"]["ratio_mean"]) == pytest.approx(1.0)
    assert float(rows["apo"]["steps_per_s_median"]) > 0
    with open(out / "speed.csv") as file:
        assert len(list(csv.DictReader(file))) == 2 * 4
    assert "ratio to PPO" in (out / "speed.md").read_text()
    assert "speed --env CartPole-v1" in (out / "command.txt").read_text()
