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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

#: rl-zoo3's sampler signature: ``(trial, n_actions, n_envs, additional_args) -> keyword arguments``.
Sampler = Callable[["optuna.Trial", int, int, dict], dict[str, Any]]
#: rl-zoo3's converter signature: ``trial.params -> keyword arguments``.
Converter = Callable[[dict[str, Any]], dict[str, Any]]


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
