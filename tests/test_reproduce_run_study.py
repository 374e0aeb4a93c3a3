"""``benchmarks/studies/reproduce_run.py``: a committed run's command, redirected, and its log as compared."""

import shutil
from pathlib import Path

import pytest

from benchmarks.studies import reproduce_run

RUN = Path("results/grid/HalfCheetah-v5/apo/base/seed_0")


def test_the_recorded_command_is_redirected_to_the_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    RUN.mkdir(parents=True)
    callback = f'callback:[{{"Cb": {{"folder": "{RUN}", "seed": 0}}}}]'
    (RUN / "command.txt").write_text(
        f"OMP_NUM_THREADS=1 MPLBACKEND=Agg python -m sb3_apo.train --algo apo -f {RUN}/zoo -params n_epochs:50 '{callback}'\n"
    )
    command, environment = reproduce_run.launch_command(RUN, Path("/scratch/seed_0"), "/venv/bin/python")
    assert environment == {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    assert command == [
        "/venv/bin/python", "-m", "sb3_apo.train", "--algo", "apo", "-f", "/scratch/seed_0/zoo", "-params", "n_epochs:50",
        'callback:[{"Cb": {"folder": "/scratch/seed_0", "seed": 0}}]',
    ]  # fmt: skip
    (RUN / "command.txt").write_text("OMP_NUM_THREADS=1 /usr/bin/python3 -m sb3_apo.train\n")
    with pytest.raises(ValueError, match="does not start with python"):
        reproduce_run.launch_command(RUN, Path("/scratch"), "python")


def test_the_log_is_compared_without_its_times_up_to_the_first_resume(tmp_path):
    columns = "time/total_timesteps,time/iterations,time/fps,diag/wall_s,diag/steps_per_s,async/actor_idle_s,train/kl"
    rows = ["2048,1,900,1.5,800,0.2,0.01", "4096,2,950,3.1,810,0.1,0.02", "6144,3,940,4.6,805,0.3,0.03"]
    (tmp_path / "diagnostics.csv").write_text("\n".join([columns, *rows]) + "\n")
    log = reproduce_run.read_log(tmp_path, up_to=4096)
    assert log == [
        {"time/total_timesteps": "2048", "time/iterations": "1", "train/kl": "0.01"},
        {"time/total_timesteps": "4096", "time/iterations": "2", "train/kl": "0.02"},
    ]


def test_the_interpreter_is_named_from_here_not_from_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkout = tmp_path / "grid"
    assert reproduce_run.interpreter(checkout, None) == str(checkout / ".venv" / "bin" / "python")
    assert reproduce_run.interpreter(checkout, ".venv/bin/python") == str(tmp_path / ".venv" / "bin" / "python")
    assert reproduce_run.interpreter(checkout, "sh") == shutil.which("sh")
