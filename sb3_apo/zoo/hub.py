"""
The model card of a model pushed to the Hugging Face Hub with ``python -m sb3_apo.push_to_hub``.

rl-zoo3's card tells the reader to run ``python -m rl_zoo3.load_from_hub --algo apo ...``,
which cannot run: rl-zoo3's own commands do not know this package's algorithms. The card
written here keeps rl-zoo3's metadata (tags, evaluation result) and gives this package's
commands, which download, evaluate, train and push the model as written.
"""

import shlex
from importlib import metadata
from pathlib import Path
from pprint import pformat
from typing import Any

import yaml
from huggingface_hub import ModelCard

#: The tag that marks a model of this package on the Hub.
HUB_TAG = "sb3-apo"

#: The distribution name of this package.
DISTRIBUTION = "sb3-apo"


def project_url() -> str | None:
    """:return: the repository URL of the installed package's metadata, if it has one"""
    try:
        urls = metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    labelled = dict(url.split(", ", 1) for url in urls if ", " in url)
    return labelled.get("Repository") or labelled.get("Homepage")


def card_commands(algo: str, env_id: str, organization: str, repo_name: str | None) -> dict[str, list[str]]:
    """
    The card's command lines, each runnable as written from an empty folder.

    :param algo: the ``--algo`` name
    :param env_id: the environment id
    :param organization: the Hub organization (``-orga``)
    :param repo_name: the repository name when it is not rl-zoo3's default ``<algo>-<env>``
    :return: ``usage`` (download, then evaluate) and ``training`` (train, then push) lines
    """
    algo_env = f"--algo {shlex.quote(algo)} --env {shlex.quote(env_id)}"
    repo = f" -orga {shlex.quote(organization)}" + ("" if repo_name is None else f" -name {shlex.quote(repo_name)}")
    return {
        "usage": [
            f"TRUST_REMOTE_CODE=True python -m sb3_apo.load_from_hub {algo_env}{repo} -f logs/",
            f"python -m sb3_apo.enjoy {algo_env} -f logs/ --no-render -n 5000",
        ],
        "training": [
            f"python -m sb3_apo.train {algo_env} -f logs/",
            f"python -m sb3_apo.push_to_hub {algo_env} -f logs/{repo}",
        ],
    }


def model_card_text(
    algo: str,
    algo_class_name: str,
    env_id: str,
    organization: str,
    repo_name: str | None,
    mean_reward: str | None,
    hyperparams: dict[str, Any],
) -> str:
    """
    The body of the model card (Markdown, without the metadata header).

    :param algo: the ``--algo`` name
    :param algo_class_name: the algorithm's class name (``APO``)
    :param env_id: the environment id
    :param organization: the Hub organization
    :param repo_name: the repository name when it is not rl-zoo3's default ``<algo>-<env>``
    :param mean_reward: the evaluation result, ``"<mean> +/- <std>"``, if known
    :param hyperparams: the training hyperparameters (the run's ``config.yml``)
    :return: the Markdown text
    """
    url = project_url()
    package = f"[sb3-apo]({url})" if url else "sb3-apo"
    commands = card_commands(algo, env_id, organization, repo_name)
    result = f"\nMean evaluation reward: **{mean_reward}**.\n" if mean_reward else ""
    clone = f"git clone {url} sb3-apo\n" if url else ""
    return f"""
# **{algo_class_name}** agent playing **{env_id}**

This is a trained model of a **{algo_class_name}** agent playing **{env_id}**, trained with
{package}, Stable-Baselines3 algorithms of the PPO family, through its launchers for the
[RL Zoo](https://github.com/DLR-RM/rl-baselines3-zoo) (rl-zoo3's commands, with the same flags,
as `python -m sb3_apo.<command>`: rl-zoo3's own commands do not know `--algo {algo}`).
{result}
## Usage

Install sb3-apo with its `zoo` extra (until it is published on PyPI, from a clone of its repository):

```bash
{clone}pip install "./sb3-apo[zoo]"
```

Download the model into `logs/`, then evaluate it (drop `--no-render` to watch it play).
The model files are pickles: `TRUST_REMOTE_CODE=True` allows loading them; set it only for a
repository you trust.

```bash
{chr(10).join(commands["usage"])}
```

## Training

```bash
{chr(10).join(commands["training"])}
```

## Hyperparameters

```python
{pformat(hyperparams)}
```
"""


def write_model_card(
    folder: Path, algo: str, algo_class_name: str, env_id: str, organization: str, repo_name: str | None
) -> None:
    """
    Replace the card (``README.md``) that rl-zoo3 wrote into a model repository folder by this
    package's, keeping rl-zoo3's metadata (with the :data:`HUB_TAG` tag added).

    :param folder: the local copy of the model repository, with rl-zoo3's ``README.md`` and ``config.yml``
    :param algo: the ``--algo`` name
    :param algo_class_name: the algorithm's class name
    :param env_id: the environment id
    :param organization: the Hub organization
    :param repo_name: the repository name when it is not rl-zoo3's default ``<algo>-<env>``
    """
    readme = folder / "README.md"
    card_data = ModelCard.load(readme).data
    tags = list(card_data.tags or [])
    card_data.tags = [*tags, HUB_TAG] if HUB_TAG not in tags else tags
    mean_reward = next((str(result.metric_value) for result in card_data.eval_results or []), None)
    # rl-zoo3 saves the hyperparameters as an OrderedDict with Python tags (its get_saved_hyperparams reads them so too).
    hyperparams = yaml.load((folder / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    text = model_card_text(algo, algo_class_name, env_id, organization, repo_name, mean_reward, dict(hyperparams))
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n{text}").save(readme)
