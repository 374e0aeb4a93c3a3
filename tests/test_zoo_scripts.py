"""
rl-zoo3's scripts and this package's wrappers: the same names, flags and exit codes
(``python -m rl_zoo3.<script>`` becomes ``python -m sb3_apo.<script>`` or ``sb3-apo-<script>``).
"""

import importlib.util
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
pytest.importorskip("rl_zoo3", reason="the zoo integration needs the zoo extra (pip install 'sb3-apo[zoo]')")

import rl_zoo3.train  # noqa: E402

from sb3_apo.zoo import _compat, cli  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
#: rl-zoo3's scripts that take ``--algo``: each has a wrapper.
SCRIPTS = ("train", "enjoy", "record_video", "record_training", "load_from_hub", "push_to_hub")
#: The flags a wrapper adds to rl-zoo3's (distributed tuning).
OWN_FLAGS = {"train": {"--heartbeat-interval", "--grace-period", "--max-retry", "--resume-from"}}


def option_flags(help_text: str) -> set[str]:
    """The option flags a ``--help`` text documents (``-f``, ``--folder``, ...): those opening an indented line."""
    flags = set()
    for line in help_text.splitlines():
        if re.match(r"\s+-", line):
            head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]  # the flags and metavars, before the description
            flags.update(re.findall(r"(?:^|, )(-{1,2}[A-Za-z][\w-]*)", head))
    return flags


def run_rl_zoo3(script: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """rl-zoo3's own script, in this process, as ``python -m rl_zoo3.<script>`` runs it; return its exit status."""
    monkeypatch.setattr(sys, "argv", [script, *argv])
    try:
        with _compat.hub_commands_compat():  # rl_zoo3.push_to_hub cannot be imported without it
            if script == "train":
                rl_zoo3.train.train()
            else:
                runpy.run_module(f"rl_zoo3.{script}", run_name="__main__")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def run_ours(script: str, argv: list[str]) -> int:
    """The wrapper, as ``python -m sb3_apo.<script>`` runs it; return its exit status."""
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(f"sb3_apo.{script}", run_name="__main__", alter_sys=True)
    return exit_.value.code


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_wrapper_has_rl_zoo3s_name_flags_and_exit_codes(script, monkeypatch, capsys):
    # the names: rl_zoo3.<script> -> sb3_apo.<script>, sb3-apo-<script>, sb3-apo-zoo <script>
    assert importlib.util.find_spec(f"rl_zoo3.{script}") is not None
    assert importlib.util.find_spec(f"sb3_apo.{script}") is not None
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[f"sb3-apo-{script.replace('_', '-')}"] == f"sb3_apo.zoo.cli:{script}"
    assert script in cli.COMMANDS
    monkeypatch.setattr(cli, "_check_hub_reachable", lambda: None)  # the hub commands check it first; offline here

    statuses = {}
    for argv in (["--help"], ["--no-such-flag"]):
        statuses["rl_zoo3", argv[0]] = run_rl_zoo3(script, argv, monkeypatch)
        theirs = capsys.readouterr()
        monkeypatch.setattr(sys, "argv", [f"sb3_apo.{script}", *argv])
        statuses["ours", argv[0]] = run_ours(script, argv)
        ours = capsys.readouterr()
        if argv == ["--help"]:
            their_flags, our_flags = option_flags(theirs.out), option_flags(ours.out)
            assert {"--algo", "--env"} <= their_flags
            assert our_flags == their_flags | OWN_FLAGS.get(script, set())
        else:
            # the same argparse message (missing required arguments first, else the unknown flag)
            assert theirs.err.rsplit("error: ", 1)[1] == ours.err.rsplit("error: ", 1)[1]
    assert statuses == {
        ("rl_zoo3", "--help"): 0,
        ("ours", "--help"): 0,
        ("rl_zoo3", "--no-such-flag"): 2,
        ("ours", "--no-such-flag"): 2,
    }


@pytest.mark.slow
def test_record_training_without_ffmpeg_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _train("CartPole-v1", Path("logs"))
    capsys.readouterr()
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    assert cli.record_training(["--algo", "apo", "--env", "CartPole-v1"]) == 1
    err = capsys.readouterr().err
    assert "the ffmpeg program, which is not on the PATH" in err and len(err.strip().splitlines()) == 1


FAKE_FFMPEG = """#!{python}
# ffmpeg for the test: copies the input video to the output (drawtext) or joins nothing (concat).
import shutil, sys
args = sys.argv[1:]
out = next(arg for arg in args[args.index("-i") + 2 :] if arg.endswith((".mp4", ".gif")))
if "concat" in args:
    open(out, "wb").close()
else:
    shutil.copy(args[args.index("-i") + 1], out)
"""


def _train(env_id: str, logs: Path) -> None:
    small = ["-params", "n_envs:1", "n_steps:32", "batch_size:32"]
    argv = ["--algo", "apo", "--env", env_id, "-f", str(logs), "-n", "64", "--seed", "0", "--eval-freq", "-1", *small]
    assert cli.train([*argv, "--num-threads", "1", "--vec-env", "dummy"]) == 0


@pytest.mark.slow
def test_record_training_records_apo_through_our_launcher(tmp_path, monkeypatch, capsys):
    for module in ("moviepy", "pygame"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"recording a video needs {module}")
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "ffmpeg").write_text(FAKE_FFMPEG.format(python=sys.executable))
    (bin_folder / "ffmpeg").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    _train("CartPole-v1", Path("logs"))
    assert cli.record_training(["--algo", "apo", "--env", "CartPole-v1", "-n", "20"]) == 0
    videos = tmp_path / "logs" / "apo" / "CartPole-v1_1" / "videos"
    assert list(videos.glob("final-model-apo-CartPole-v1-*.mp4"))  # recorded by python -m sb3_apo.record_video
    assert (videos / "training.mp4").is_file()


@pytest.mark.slow
def test_a_mujoco_video_without_a_display_says_to_set_mujoco_gl(tmp_path):
    if importlib.util.find_spec("mujoco") is None or sys.platform != "linux":
        pytest.skip("MuJoCo's headless rendering is chosen by MUJOCO_GL on Linux")
    logs = tmp_path / "logs"
    _train("InvertedPendulum-v5", logs)
    env = {key: value for key, value in os.environ.items() if key not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    args = ["--algo", "apo", "--env", "InvertedPendulum-v5", "-f", str(logs), "-n", "5", "-o", str(tmp_path / "videos")]
    command = [sys.executable, "-m", "sb3_apo.record_video", *args]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert "set MUJOCO_GL=egl" in line and "MUJOCO_GL=osmesa" in line and "Traceback" not in result.stderr
