"""
rl-zoo3 and Optuna integration: train, evaluate and tune the algorithms of
``sb3_apo`` from the command line (``sb3-apo-train``, ``python -m sb3_apo.train``, ...).

To use the algorithms from your own rl-zoo3 script, call
:func:`register_algorithms` before rl-zoo3's command, as the launchers of
:mod:`sb3_apo.zoo.cli` do.
"""

from sb3_apo.zoo.errors import ZooError
from sb3_apo.zoo.registry import (
    ZOO_ALGORITHMS,
    HyperparamsSource,
    ZooAlgorithm,
    default_hyperparams_file,
    find_hyperparams,
    hyperparams_folder,
    register_algorithms,
)

__all__ = [
    "ZOO_ALGORITHMS",
    "HyperparamsSource",
    "ZooAlgorithm",
    "ZooError",
    "default_hyperparams_file",
    "find_hyperparams",
    "hyperparams_folder",
    "register_algorithms",
]
