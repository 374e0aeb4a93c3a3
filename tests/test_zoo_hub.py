"""
The Hugging Face Hub round trip, offline: train, ``push_to_hub`` into a local folder standing in
for the Hub, then run the model card's usage commands as written: they download the model and
evaluate it.
"""

import os
import re
import runpy
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rl_zoo3", reason="the zoo integration needs the zoo extra (pip install 'sb3-apo[zoo]')")

from huggingface_hub import HfApi, ModelCard  # noqa: E402
from huggingface_hub.errors import EntryNotFoundError  # noqa: E402

from sb3_apo.zoo import cli  # noqa: E402
from sb3_apo.zoo.hub import HUB_TAG, card_commands  # noqa: E402

ORGANIZATION = "sb3-apo-tester"
ALGO, ENV_ID = "apo", "CartPole-v1"


class LocalHub:
    """A folder standing in for the Hub: one subfolder per repository (``<organization>/<name>``)."""

    def __init__(self, root: Path):
        self.root = root

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Replace the Hub calls of rl-zoo3's and huggingface_sb3's hub commands by this folder."""
        hub = self

        def create_repo(self: HfApi, repo_id: str, **kwargs: object) -> str:
            hub.repo(repo_id).mkdir(parents=True, exist_ok=True)
            return f"file://{hub.repo(repo_id)}"

        def snapshot_download(self: HfApi, repo_id: str, local_dir: str | Path, **kwargs: object) -> str:
            shutil.copytree(hub.repo(repo_id), local_dir, dirs_exist_ok=True)
            return str(local_dir)

        def upload_folder(self: HfApi, *, repo_id: str, folder_path: str | Path, **kwargs: object) -> str:
            shutil.copytree(folder_path, hub.repo(repo_id), dirs_exist_ok=True)
            return f"file://{hub.repo(repo_id)}"

        def hf_hub_download(repo_id: str, filename: str, **kwargs: object) -> str:
            path = hub.repo(repo_id) / filename
            if not path.is_file():
                raise EntryNotFoundError(f"{filename} not found in {repo_id}")
            return str(path)

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "snapshot_download", snapshot_download)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        monkeypatch.setattr("huggingface_hub.hf_hub_download", hf_hub_download)
        monkeypatch.setattr(cli, "_check_hub_reachable", lambda: None)


def run_as_written(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``[VAR=value ...] python -m <module> <arguments>`` in this process, as ``python -m`` would."""
    words = shlex.split(line)
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(name, value)
    assert words[:2] == ["python", "-m"], line
    module, arguments = words[2], words[3:]
    monkeypatch.setattr(sys, "argv", [module, *arguments])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit_.value.code == 0, line


def code_blocks(card: str) -> list[list[str]]:
    """The lines of each fenced ``bash`` block of a Markdown text."""
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", card, flags=re.DOTALL)]


def test_card_commands_quote_what_they_are_given():
    commands = card_commands("apo", "my env", "orga", None)
    assert shlex.split(commands["usage"][0])[-5:] == ["my env", "-orga", "orga", "-f", "logs/"]
    assert "-name repo" in card_commands("apo", "CartPole-v1", "orga", "repo")["training"][1]


@pytest.mark.slow
def test_hub_round_trip(tmp_path, monkeypatch, capsys):
    hub = LocalHub(tmp_path / "hub-remote")
    hub.install(monkeypatch)
    trainer = tmp_path / "trainer"
    trainer.mkdir()
    monkeypatch.chdir(trainer)
    train = ["--algo", ALGO, "--env", ENV_ID, "-f", "logs", "-n", "512", "--eval-freq", "-1", "--seed", "0"]
    assert cli.train([*train, "--num-threads", "1", "--vec-env", "dummy"]) == 0
    push = ["--algo", ALGO, "--env", ENV_ID, "-f", "logs", "-orga", ORGANIZATION, "--no-render", "--num-threads", "1"]
    assert cli.push_to_hub(push) == 0, capsys.readouterr().err

    repo = hub.repo(f"{ORGANIZATION}/{ALGO}-{ENV_ID}")
    for name in (f"{ALGO}-{ENV_ID}.zip", "config.yml", "args.yml", "env_kwargs.yml", "train_eval_metrics.zip"):
        assert (repo / name).is_file(), name
    card = (repo / "README.md").read_text()
    assert "rl_zoo3." not in card  # no command of rl-zoo3's, which does not know --algo apo
    data = ModelCard.load(repo / "README.md").data
    assert HUB_TAG in data.tags and ENV_ID in data.tags and data.library_name == "stable-baselines3"
    assert data.eval_results and data.eval_results[0].metric_name == "mean_reward"
    blocks = code_blocks(card)
    usage, training = card_commands(ALGO, ENV_ID, ORGANIZATION, None).values()
    assert usage in blocks and training in blocks
    trained_with = yaml.load((trainer / "logs" / ALGO / f"{ENV_ID}_1" / ENV_ID / "config.yml").read_text(), yaml.UnsafeLoader)
    assert f"'n_steps': {trained_with['n_steps']}" in card  # the hyperparameters

    # A user with an empty folder runs the card's usage lines as written.
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.chdir(user)
    monkeypatch.delenv("TRUST_REMOTE_CODE", raising=False)
    capsys.readouterr()
    for line in usage:
        run_as_written(line, monkeypatch)
    out = capsys.readouterr().out
    assert f"Loading logs/{ALGO}/{ENV_ID}_1/{ENV_ID}.zip" in out and "Mean reward:" in out
    assert os.path.isfile(user / "logs" / ALGO / f"{ENV_ID}_1" / ENV_ID / "config.yml")
