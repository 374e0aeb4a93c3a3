"""
``benchmarks/speed.py`` checks its settings and its output folder before it measures
anything: bad settings end in one line on standard error, and a second measurement into a
folder that another one is writing to stops at once instead of overwriting its results.
"""

import pytest
from filelock import FileLock

from benchmarks import speed


@pytest.fixture()
def nothing_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a model is built: every case here must stop before measuring."""

    def build_model(*args, **kwargs):
        raise AssertionError("the measurement started")

    monkeypatch.setattr(speed, "build_model", build_model)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--threads", "0"], "`threads` at least 1; got rounds=1, steps_per_round=None, warmup_steps=4096, threads=0"),
        (["--env", "NoSuch-v0"], "Unknown environment 'NoSuch-v0' (--env)"),
        (["--env", "Hoper-v5"], "did you mean Hopper-v5"),
        (["--contenders", "ppo", "apo:n_steps=abc"], "Bad overrides in contender 'apo:n_steps=abc': NameError"),
        (["--overrides", "n_steps=abc"], "Bad overrides in contender"),
    ],
)
def test_bad_settings_are_one_line_before_measuring(options, expected, nothing_is_measured, tmp_path, capsys):
    assert speed.main(["--rounds", "1", "--out", str(tmp_path / "out"), *options]) == 2
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused_before_measuring(nothing_is_measured, tmp_path, capsys):
    out = tmp_path / "speed.md"
    out.write_text("mine")
    assert speed.main(["--rounds", "1", "--out", str(out)]) == 2
    assert f"--out {out} is a file" in one_error_line(capsys)
    assert out.read_text() == "mine"


def test_a_folder_another_measurement_writes_to_is_refused_at_once(nothing_is_measured, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with FileLock(out / speed.LOCK_FILE, timeout=0):  # a measurement under way in the same folder
        assert speed.main(["--rounds", "1", "--out", str(out)]) == 2
        assert f"Another speed measurement is writing to {out}" in one_error_line(capsys)
    assert sorted(path.name for path in out.iterdir()) == [speed.LOCK_FILE]
    # once it has finished (its results are there), --overwrite is needed, as before
    (out / "speed.md").write_text("results")
    assert speed.main(["--rounds", "1", "--out", str(out)]) == 2
    assert "holds the results of a finished measurement (speed.md); give --overwrite" in one_error_line(capsys)
    assert (out / "speed.md").read_text() == "results"
