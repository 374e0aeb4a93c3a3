"""
The algorithms this package adds to rl-zoo3, in one table.

rl-zoo3 has no plugin mechanism: ``train``, ``enjoy``, ``record_video`` and the
hub commands look algorithms up in three plain dictionaries,
``rl_zoo3.utils.ALGOS``, ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` and
``HYPERPARAMS_CONVERTER``. :func:`register_algorithms` adds every row of
:data:`ZOO_ALGORITHMS` to them, in place, before a launcher hands over to
rl-zoo3. Adding an algorithm to the zoo is one row of that table (plus its
sampler and a ``hyperparams/<name>.yml`` file).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm

import sb3_apo.envs  # noqa: F401  (registers sb3_apo/MultiSolution-v0 for the launchers)
from sb3_apo.apo import APO
from sb3_apo.ppo_penalty import PPOPenalty
from sb3_apo.spo import SPO
from sb3_apo.support_apo import SupportAPO
from sb3_apo.zoo.hyperparams_opt import (
    convert_ppo_family_params,
    sample_apo_params,
    sample_ppo_penalty_params,
    sample_spo_params,
    sample_support_apo_params,
)

if TYPE_CHECKING:
    import optuna


class Sampler(Protocol):
    """rl-zoo3's sampler signature, with its parameter names: ``(trial, n_actions, n_envs, additional_args) -> kwargs``."""

    def __call__(self, trial: "optuna.Trial", n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]: ...


class Converter(Protocol):
    """rl-zoo3's converter signature, with its parameter name: ``trial.params -> keyword arguments``."""

    def __call__(self, sampled_params: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ZooAlgorithm:
    """
    One algorithm as rl-zoo3 needs it.

    :param algo_class: the SB3 algorithm class
    :param sampler: its Optuna sampler
    :param converter: turns a stored trial's parameters back into keyword arguments
    """

    algo_class: type[BaseAlgorithm]
    sampler: Sampler
    converter: Converter


#: Name used by ``--algo`` (and for the log folder and the YAML file) -> algorithm.
ZOO_ALGORITHMS: dict[str, ZooAlgorithm] = {
    "apo": ZooAlgorithm(APO, sample_apo_params, convert_ppo_family_params),
    "ppo_penalty": ZooAlgorithm(PPOPenalty, sample_ppo_penalty_params, convert_ppo_family_params),
    "spo": ZooAlgorithm(SPO, sample_spo_params, convert_ppo_family_params),
    "support_apo": ZooAlgorithm(SupportAPO, sample_support_apo_params, convert_ppo_family_params),
}


def register_algorithms() -> None:
    """
    Add every algorithm of :data:`ZOO_ALGORITHMS` to rl-zoo3's dictionaries, in place.

    Idempotent. rl-zoo3's own algorithms (``ppo``, ``sac``, ...) stay available.
    """
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    for name, algorithm in ZOO_ALGORITHMS.items():
        ALGOS[name] = algorithm.algo_class
        HYPERPARAMS_SAMPLER[name] = algorithm.sampler
        HYPERPARAMS_CONVERTER[name] = algorithm.converter


def hyperparams_folder() -> Path:
    """
    The folder of the project's hyperparameter files (``<algo>.yml``).

    In a checkout it is the repository's ``hyperparams/`` folder; in an installed wheel,
    the copy shipped inside the package (``sb3_apo/zoo/hyperparams``).
    """
    return Path(__file__).resolve().parent / "hyperparams"


def default_hyperparams_file(algo: str) -> Path | None:
    """
    The project's hyperparameter file of an algorithm, if there is one.

    ``apo``, ``ppo_penalty``, ``spo`` and ``ppo`` have one; rl-zoo3's other algorithms
    keep rl-zoo3's own files.

    :param algo: the ``--algo`` name
    :return: the file, or ``None``
    """
    path = hyperparams_folder() / f"{algo}.yml"
    return path if path.is_file() else None


#: The algorithms of the PPO family whose environments without an entry of their own take
#: rl-zoo3's tuned PPO entry (they share PPO's loop and every PPO hyperparameter).
PPO_FALLBACK_ALGOS = ("ppo", "apo", "ppo_penalty", "spo")


def rl_zoo3_hyperparams_file(algo: str) -> Path:
    """
    rl-zoo3's own hyperparameter file of an algorithm (``rl_zoo3/hyperparams/<algo>.yml``),
    the file ``rl_zoo3 train`` reads without ``-conf``.

    :param algo: the ``--algo`` name
    :return: the file (it exists for rl-zoo3's algorithms only)
    """
    import rl_zoo3

    return Path(rl_zoo3.__file__).resolve().parent / "hyperparams" / f"{algo}.yml"


@dataclass(frozen=True)
class HyperparamsSource:
    """
    The hyperparameter file and entry a run uses, and the line that says so.

    :param path: the YAML file
    :param entry: its entry: the environment id, ``atari`` or ``default``
    :param description: one line naming the entry and whose it is
    :param overrides: values that replace the entry's (``-params`` still win)
    :param removed: keys of the entry left out (unless ``-params`` gives them)
    """

    path: Path
    entry: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    removed: tuple[str, ...] = ()


def _tuned_entry(path: Path, env_id: str, is_atari: bool) -> tuple[str, dict[str, Any]] | None:
    """The entry of a YAML file tuned for the environment (its own, or ``atari`` for an Atari game), and its content."""
    content = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(content, dict):
        return None
    for entry in (env_id, "atari") if is_atari else (env_id,):
        if isinstance(content.get(entry), dict):
            return entry, content[entry]
    return None


def _adapt_ppo_entry(algo: str, hyperparams: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...], str]:
    """
    What a PPO entry needs to mean the same for another algorithm of the family, as the
    project's own files do: SPO divides by its ``clip_range`` (``eps``), which a linear schedule
    ``lin_<x>`` brings to 0 at the last update, so the schedule becomes the constant ``x``;
    PPO-penalty is the pure KL penalty without ``clip_range`` (with one, it would be PPO-clip
    plus the penalty).

    :param algo: the ``--algo`` name
    :param hyperparams: rl-zoo3's PPO entry
    :return: the values to replace, the keys to leave out, and a note saying so (or ``""``)
    """
    clip_range = hyperparams.get("clip_range")
    if algo == "spo" and isinstance(clip_range, str) and clip_range.startswith("lin_"):
        constant = float(clip_range.removeprefix("lin_"))
        return {"clip_range": constant}, (), f"; clip_range {clip_range} -> {constant}"
    if algo == "ppo_penalty" and "clip_range" in hyperparams:
        return {}, ("clip_range",), "; without its clip_range (the pure KL penalty)"
    return {}, (), ""


def find_hyperparams(algo: str, env_id: str, is_atari: bool) -> HyperparamsSource | None:
    """
    Where the hyperparameters of ``--algo algo --env env_id`` come from when no ``-conf`` is given.

    In order: the project's ``hyperparams/<algo>.yml`` when it has an entry for the
    environment (or an ``atari`` entry for an Atari game); for the algorithms of
    :data:`PPO_FALLBACK_ALGOS`, rl-zoo3's tuned entry of its own ``ppo.yml`` (the
    algorithm's own parameters then keep their defaults); last, the ``default``
    entry (the project's file, or rl-zoo3's ``ppo.yml`` for ``ppo``).

    :param algo: the ``--algo`` name
    :param env_id: the environment id
    :param is_atari: whether the environment is an Atari game
    :return: the file and its entry, or ``None`` for rl-zoo3's other algorithms (rl-zoo3 reads its own file)
    """
    own_file = default_hyperparams_file(algo)
    found = None if own_file is None else _tuned_entry(own_file, env_id, is_atari)
    if own_file is not None and found is not None:
        what = f"entry for {env_id}" if found[0] == env_id else f"'{found[0]}' entry"
        return HyperparamsSource(own_file, found[0], f"Hyperparameters: sb3-apo's {what} in {own_file}")
    if algo in PPO_FALLBACK_ALGOS:
        zoo_file = rl_zoo3_hyperparams_file("ppo")
        found = _tuned_entry(zoo_file, env_id, is_atari)
        if found is not None:
            entry, hyperparams = found
            what = f"entry for {env_id}" if entry == env_id else f"'{entry}' entry"
            if algo == "ppo":
                return HyperparamsSource(zoo_file, entry, f"Hyperparameters: rl-zoo3's tuned {what} in {zoo_file}")
            overrides, removed, note = _adapt_ppo_entry(algo, hyperparams)
            return HyperparamsSource(
                zoo_file,
                entry,
                f"Hyperparameters: {algo}.yml has no entry for {env_id}; using rl-zoo3's tuned PPO {what} in "
                f"{zoo_file}, with {algo}'s own parameters at their defaults{note}",
                overrides,
                removed,
            )
        default_file = zoo_file if algo == "ppo" else own_file
    else:
        default_file = own_file
    if default_file is None:
        return None
    return HyperparamsSource(
        default_file,
        "default",
        f"Hyperparameters: nobody has tuned {algo} on {env_id}; using the 'default' entry of {default_file} "
        "(override with -params or -conf)",
    )
