"""
The grid runner's inputs and records: a database password given to the launcher is masked in
every file the runner writes, the recorded commands name the interpreter ``python`` and
the folders under the working directory by relative paths, the
launcher options the runner sets are refused in any spelling argparse accepts, and bad
settings or a damaged results folder end in one line on standard error.

A stand-in launcher (a module that fails at once) keeps these tests free of training.
"""

import json
import sys
from pathlib import Path

import pytest

from sb3_apo.benchmark.__main__ import main
from sb3_apo.benchmark.grid import GridError, GridRunner, GridSettings, Variant, plan_grid, reserved_options_in

PASSWORD = "Pw-of-the-grid-7"
STORAGE = f"postgresql://optuna:{PASSWORD}@db.example:5432/optuna"
GRID = ["--algos", "ppo", "--envs", "CartPole-v1", "--seeds", "0"]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_a_password_for_the_launcher_is_masked_in_every_file_and_the_interpreter_is_python(tmp_path, monkeypatch, capsys):
    (tmp_path / "failing_launcher.py").write_text("import sys\nprint('launcher started')\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    results = tmp_path / "results"
    args = ["run", "--results", str(results), *GRID, "--launcher", "failing_launcher", "-j", "1", "--status-every", "1"]
    assert main([*args, "--", "--storage", STORAGE]) == 1  # the run failed: failed.json written
    assert main([*args, "--dry-run", "--", f"--storage={STORAGE}"]) == 0
    printed = capsys.readouterr()
    assert PASSWORD not in printed.out + printed.err
    written = {path.name: path.read_text() for path in results.rglob("*") if path.is_file()}
    assert {"runner_commands.txt", "settings.json", "command.txt", "failed.json", "stdout.log"} <= set(written)
    for name, text in written.items():
        assert PASSWORD not in text, name
    assert "optuna:***@db.example" in written["runner_commands.txt"]
    assert json.loads(written["settings.json"])["extra_args"] == [
        "--storage",
        "postgresql://optuna:***@db.example:5432/optuna",
    ]
    command = written["command.txt"].split()
    assert sys.executable not in written["command.txt"]
    assert command[command.index("-m") - 1] == "python" and "optuna:***@db.example:5432/optuna" in written["command.txt"]
    assert "launcher started" in written["stdout.log"]  # the run itself was executed by this interpreter


def test_an_absolute_results_folder_under_the_working_directory_is_recorded_relative(tmp_path, monkeypatch):
    # run from tmp_path, as from a repository root, with --results given as an absolute path
    (tmp_path / "failing_launcher.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results" / "grid"
    assert main(["run", "--results", str(results), *GRID, "--launcher", "failing_launcher", "-j", "1"]) == 1
    runner_commands = (results / "runner_commands.txt").read_text()
    (command_file,) = results.rglob("command.txt")
    command = command_file.read_text()
    for text in (runner_commands, command):
        assert str(tmp_path) not in text and sys.executable not in text
    assert "--results results/grid " in runner_commands
    assert " -f results/grid/CartPole-v1/ppo/base/seed_0/zoo " in command
    assert '{"folder": "results/grid/CartPole-v1/ppo/base/seed_0", "seed": 0' in command


@pytest.mark.parametrize(
    "extra",
    [["--see", "7"], ["--n-timestep", "256"], ["--n-timesteps=256"], ["-n512"], ["-param", "n_epochs:5"], ["--verb", "1"]],
)
def test_abbreviations_of_the_runners_options_are_refused(extra):
    with pytest.raises(GridError, match="is \\(or abbreviates\\) one that the runner sets"):
        GridRunner([], GridSettings(results=Path("x"), extra_args=("--storage", "s.log", *extra)), jobs=1)


def test_other_launcher_options_pass():
    extra = ["--env-kwargs", "render_mode:None", "--storage", "s.log", "--study-name", "s", "-optimize", "--n-trials", "5"]
    assert reserved_options_in(extra) == []
    GridRunner([], GridSettings(results=Path("x"), extra_args=tuple(extra)), jobs=1)


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--status-every", "0"], "--status-every must be a positive (finite) number of seconds, got 0.0"),
        (["--status-every", "inf"], "--status-every must be a positive (finite) number of seconds, got inf"),
        (["-n", "0"], "-n/--n-timesteps must be a whole number of at least 1, got 0"),
        (["--threads-per-run", "0"], "--threads-per-run must be a whole number of at least 1, got 0"),
        (["--eval-episodes", "0"], "--eval-episodes must be a whole number of at least 1, got 0"),
    ],
)
def test_bad_settings_are_one_line(options, expected, tmp_path, capsys):
    assert main(["run", "--results", str(tmp_path / "results"), *GRID, *options]) == 2
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "results").exists()


def test_a_results_path_that_is_a_file_or_not_writable_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("notes")
    assert main(["run", "--results", str(a_file), *GRID]) == 2
    assert f"--results {a_file} is a file" in one_error_line(capsys)
    assert main(["run", "--results", str(a_file / "sub"), *GRID]) == 2
    assert f"Cannot write in the results folder {a_file / 'sub'}" in one_error_line(capsys)
    # /proc takes no new file, whoever runs this (root too): the runner cannot take its lock there
    assert main(["run", "--results", "/proc", *GRID]) == 2
    assert "Cannot write in the results folder /proc" in one_error_line(capsys)
    assert a_file.read_text() == "notes"


@pytest.mark.parametrize("content", ['{"format": 1, "settings": {"env": "Cart', "[1, 2]", '{"settings": 3}'])
def test_a_damaged_done_json_is_named_and_kept(content, tmp_path, capsys):
    results = tmp_path / "results"
    runs = plan_grid(["CartPole-v1"], ["ppo"], [Variant.parse("base")], [0])
    done = runs[0].folder(results) / "done.json"
    done.parent.mkdir(parents=True)
    done.write_text(content)
    assert main(["run", "--results", str(results), *GRID, "--dry-run"]) == 2
    line = one_error_line(capsys)
    assert f"{done} is not a readable done.json" in line and "delete its run folder" in line
    assert done.read_text() == content
