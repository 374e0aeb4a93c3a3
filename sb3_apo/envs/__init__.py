"""
Small environments of the package, registered with gymnasium on import::

    import gymnasium as gym
    import sb3_apo.envs  # noqa: F401  (registers the ids below)

    env = gym.make("sb3_apo/MultiSolution-v0")

- ``sb3_apo/MultiSolution-v0``: :class:`~sb3_apo.envs.multi_solution.MultiSolutionEnv`,
  reach a target number by a few arithmetic operations; every problem has
  several valid solutions and a verifiable 0/1 reward.
"""

import gymnasium

from sb3_apo.envs.multi_solution import OPERATIONS, MultiSolutionEnv

MULTI_SOLUTION_ID = "sb3_apo/MultiSolution-v0"

if MULTI_SOLUTION_ID not in gymnasium.registry:
    gymnasium.register(id=MULTI_SOLUTION_ID, entry_point="sb3_apo.envs.multi_solution:MultiSolutionEnv")

__all__ = ["MULTI_SOLUTION_ID", "OPERATIONS", "MultiSolutionEnv"]
