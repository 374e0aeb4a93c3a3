"""
Checkpoints and resume of the grid runner: a run cut short after its checkpoints resumes from the
latest complete one (a damaged or half-written one is passed over) and ends as an uninterrupted run
would, with its whole budget, its whole evaluation history and the learning-rate schedule going on;
without ``checkpoint_freq`` nothing changes.
"""

import json
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_benchmark import pid_alive, run_benchmark

from sb3_apo.benchmark import files
from sb3_apo.benchmark.callbacks import DiagnosticsCSVCallback
from sb3_apo.benchmark.grid import GridError, GridRunner, GridSettings, RunSpec, Variant
from sb3_apo.zoo.cli import train

N_TIMESTEPS, BATCH, N_EPOCHS, LEARNING_RATE = 4096, 256, 2, 1e-3  # Pendulum-v1's APO entry: 4 envs, here x 64 steps
VARIANT = f"tiny:n_steps=64,batch_size=64,n_epochs={N_EPOCHS},learning_rate='lin_{LEARNING_RATE}',normalize=True"
ARGS = ["run", "--results", "grid", "--algos", "apo", "--envs", "Pendulum-v1", "--seeds", "0", "--jobs", "1"]
ARGS += ["-n", str(N_TIMESTEPS), "--eval-freq", str(BATCH), "--eval-episodes", "1", "--n-eval-envs", "1"]
ARGS += ["--variant", VARIANT, "--status-every", "5", "--checkpoint-freq", str(2 * BATCH)]


@pytest.mark.slow
def test_a_run_killed_after_its_checkpoints_resumes_from_the_latest_complete_one(tmp_path):
    folder = tmp_path / "grid" / "Pendulum-v1" / "apo" / "tiny" / "seed_0"
    runner = run_benchmark(*ARGS, cwd=tmp_path)
    while len(files.valid_checkpoints(folder)) < 2:
        assert runner.poll() is None, runner.communicate()[0]
        time.sleep(0.05)
    child_pid = files.read_json(folder / files.PROGRESS_FILE)["pid"]
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=30)
    while pid_alive(child_pid):  # the run dies with its runner
        time.sleep(0.05)
    assert not (folder / files.DONE_FILE).exists()
    original_command = (folder / files.COMMAND_FILE).read_text()

    # the latest checkpoint is damaged, and a half-written one is left behind: the one before is used
    damaged, good = files.valid_checkpoints(folder)[:2]
    with open(damaged / files.CHECKPOINT_MODEL, "r+b") as model:
        model.truncate(100)
    half = folder / files.CHECKPOINTS_FOLDER / f".{int(damaged.name) + 2 * BATCH}.1.tmp"
    half.mkdir()
    (half / files.CHECKPOINT_MODEL).write_bytes(b"PK")
    resumed_at = int(good.name)

    runner = run_benchmark(*ARGS, cwd=tmp_path)
    output, _ = runner.communicate(timeout=300)
    assert runner.returncode == 0, output
    assert f"resuming Pendulum-v1/apo/tiny/seed_0 from its checkpoint at timestep {resumed_at}" in output
    assert "restarting" not in output and "1/1 runs done" in output

    done = files.read_json(folder / files.DONE_FILE)
    assert done["timesteps"] == N_TIMESTEPS and done["resumed_at"] == [resumed_at]
    assert done["wall_time_from_timestep"] == resumed_at
    assert (folder / files.COMMAND_FILE).read_text() == original_command and "--resume-from" not in original_command
    assert done["command"] == original_command.strip()
    # the code of both launches (the first, then the resume): the same commit here
    first, resume = files.read_json(folder / files.CODE_FILE), files.read_json(folder / files.RESUMES_FILE)[0]["code"]
    assert done["code_segments"] == [first, resume] and first == resume == done["code"]
    (resume_command,) = done["resume_commands"]
    assert f"--resume-from {good / files.CHECKPOINT_MODEL}".replace(str(tmp_path) + "/", "") in resume_command
    assert files.read_json(folder / files.TRAINING_FILE)["timesteps"] == N_TIMESTEPS
    assert not (folder / files.CHECKPOINTS_FOLDER).exists()  # removed once the run is finished
    assert sorted(path.name for path in (folder / "zoo" / "apo").iterdir()) == ["Pendulum-v1_1", "Pendulum-v1_2"]

    # the evaluation history covers the whole run, each evaluation once
    expected = list(range(BATCH, N_TIMESTEPS + 1, BATCH))
    evaluations = pd.read_csv(folder / files.EVALUATIONS_CSV)
    assert evaluations["timesteps"].tolist() == expected
    with np.load(folder / files.EVALUATIONS_NPZ) as data:
        assert data["timesteps"].tolist() == expected
    assert done["final_eval"]["timesteps"] == N_TIMESTEPS

    # diagnostics.csv: the rows up to the checkpoint, then the resumed ones; each iteration and each update once
    log = pd.read_csv(folder / files.DIAGNOSTICS_FILE)
    iterations = log[log["time/iterations"].notna()]
    assert iterations["time/total_timesteps"].tolist() == expected
    updates = log[log["train/n_updates"].notna()]
    assert updates["train/n_updates"].tolist() == [N_EPOCHS * k for k in range(1, N_TIMESTEPS // BATCH + 1)]
    # the learning rate of update k, made at timestep k * BATCH, is the schedule's there: lin_1e-3 did not restart
    at = updates["train/n_updates"] / N_EPOCHS * BATCH
    np.testing.assert_allclose(updates["train/learning_rate"], LEARNING_RATE * (1 - at / N_TIMESTEPS), rtol=1e-6)
    assert (at > resumed_at).sum() == (N_TIMESTEPS - resumed_at) // BATCH
    assert log["diag/wall_s"].dropna().is_monotonic_increasing  # the kept segments' time, summed


def write_checkpoint(folder: Path, name: int, **record_changes) -> Path:
    """A checkpoint folder as the callback writes it (a stand-in model), with ``record_changes`` in its record."""
    checkpoint = folder / files.CHECKPOINTS_FOLDER / str(name)
    checkpoint.mkdir(parents=True)
    (checkpoint / files.CHECKPOINT_MODEL).write_bytes(b"model at %d" % name)
    record = {
        "timesteps": name,
        "files": {files.CHECKPOINT_MODEL: files.file_digest(checkpoint / files.CHECKPOINT_MODEL)},
    }
    files.atomic_write_json(checkpoint / files.CHECKPOINT_RECORD, {**record, **record_changes})
    return checkpoint


def test_damaged_and_half_written_checkpoints_are_passed_over(tmp_path):
    spec = RunSpec("Pendulum-v1", "apo", Variant.parse("base"), 0)
    settings = GridSettings(results=tmp_path, n_timesteps=4096, checkpoint_freq=512)
    runner = GridRunner([spec], settings, jobs=1)
    folder = spec.folder(tmp_path)
    folder.mkdir(parents=True)
    assert runner._checkpoint_to_resume(spec) is None  # no settings.json: a folder the runner cannot vouch for
    files.atomic_write_json(folder / files.SETTINGS_FILE, spec.settings(settings))
    assert runner._checkpoint_to_resume(spec) is None  # no checkpoint

    good = write_checkpoint(folder, 512)
    write_checkpoint(folder, 1024, files={files.CHECKPOINT_MODEL: "0" * 64})  # a file that is not what was written
    write_checkpoint(folder, 1536, timesteps=512)  # a record of another checkpoint
    write_checkpoint(folder, 2048, files=[files.CHECKPOINT_MODEL])  # not a record the callback writes
    (write_checkpoint(folder, 2560) / files.CHECKPOINT_RECORD).write_text('{"timesteps": 25')  # cut short
    (write_checkpoint(folder, 3072) / files.CHECKPOINT_MODEL).unlink()
    half = folder / files.CHECKPOINTS_FOLDER / ".3584.77.tmp"  # a launch killed while writing a checkpoint
    half.mkdir()
    (half / files.CHECKPOINT_MODEL).write_bytes(b"PK")
    assert files.valid_checkpoints(folder) == [good]
    assert runner._checkpoint_to_resume(spec) == good
    write_checkpoint(folder, 4096)
    assert [path.name for path in files.valid_checkpoints(folder)] == ["4096", "512"]

    # a run made with other settings, or a grid without checkpoints, starts from scratch
    assert (
        GridRunner(
            [spec], GridSettings(results=tmp_path, n_timesteps=8192, checkpoint_freq=512), jobs=1
        )._checkpoint_to_resume(spec)
        is None
    )
    assert GridRunner([spec], GridSettings(results=tmp_path, n_timesteps=4096), jobs=1)._checkpoint_to_resume(spec) is None


def test_without_checkpoint_freq_the_command_is_unchanged_and_bad_values_are_refused(tmp_path):
    spec = RunSpec("CartPole-v1", "ppo", Variant.parse("base"), 3)
    command = spec.command(GridSettings(results=tmp_path, python="python"))
    callback = json.loads(command[-1].removeprefix("callback:"))
    assert callback == [
        {"sb3_apo.benchmark.callbacks.DiagnosticsCSVCallback": {"folder": str(spec.folder(tmp_path)), "seed": 3}}
    ]
    assert "--resume-from" not in command

    with_checkpoints = GridSettings(results=tmp_path, python="python", checkpoint_freq=1000)
    resumed = spec.command(with_checkpoints, resume_from=Path("ckpt/model.zip"))
    assert (
        json.loads(resumed[-1].removeprefix("callback:"))[0]["sb3_apo.benchmark.callbacks.DiagnosticsCSVCallback"][
            "checkpoint_freq"
        ]
        == 1000
    )
    assert resumed[resumed.index("--resume-from") + 1] == "ckpt/model.zip" and resumed.index("--resume-from") < resumed.index(
        "-params"
    )
    assert spec.settings(with_checkpoints) == spec.settings(GridSettings(results=tmp_path, python="python"))

    for bad in (-1, 1.5, True):
        with pytest.raises(GridError, match="checkpoint-freq"):
            GridSettings(results=tmp_path, checkpoint_freq=bad)
        with pytest.raises(ValueError, match="checkpoint_freq"):
            DiagnosticsCSVCallback(str(tmp_path), checkpoint_freq=bad)
    with pytest.raises(GridError, match="one that the runner sets itself"):
        GridRunner([], GridSettings(results=tmp_path, extra_args=("--resume-from", "x.zip")), jobs=1)


def test_the_launcher_refuses_a_resume_without_a_checkpoint_model(tmp_path, capsys):
    base = ["--algo", "ppo", "--env", "CartPole-v1", "-f", str(tmp_path), "-n", "64"]
    assert train([*base, "--resume-from", str(tmp_path / "missing.zip")]) == 1
    assert "--resume-from" in capsys.readouterr().err
    model = tmp_path / "model.zip"
    model.write_bytes(b"PK")
    assert train([*base, "--resume-from", str(model), "-i", str(model)]) == 1
    assert "cannot be combined with -i/--trained-agent" in capsys.readouterr().err
