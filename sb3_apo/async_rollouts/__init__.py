"""
Asynchronous rollouts (``async_rollouts=True``): actor processes collect the next rollouts
while the learner trains on the current one (decoupled PPO, ``docs/async.md``).

- :mod:`~sb3_apo.async_rollouts.learner`: :class:`AsyncLearner`, the learner's side, which the
  algorithm owns and asks for each rollout;
- :mod:`~sb3_apo.async_rollouts.rollout`: what crosses, and :class:`RolloutActor`, the only
  interface the learner sees of its actors;
- :mod:`~sb3_apo.async_rollouts.actor`: the local actors, forked processes;
- :mod:`~sb3_apo.async_rollouts.transport`: their messages, deadlock-free for any size;
- :mod:`~sb3_apo.async_rollouts.shards`: the envs split across several actors, and their
  ``VecNormalize`` statistics;
- :mod:`~sb3_apo.async_rollouts.vtrace`: V-trace targets.
"""

from sb3_apo.async_rollouts.actor import ActorGroup, ForkedRolloutActor
from sb3_apo.async_rollouts.learner import AsyncLearner, policy_weights
from sb3_apo.async_rollouts.rollout import Rollout, RolloutActor, RolloutActorError, StepRecord, StepRecords
from sb3_apo.async_rollouts.shards import check_shardable
from sb3_apo.async_rollouts.vtrace import vtrace

__all__ = [
    "ActorGroup",
    "AsyncLearner",
    "ForkedRolloutActor",
    "Rollout",
    "RolloutActor",
    "RolloutActorError",
    "StepRecord",
    "StepRecords",
    "check_shardable",
    "policy_weights",
    "vtrace",
]
