"""
Envs split across several rollout actors, and the ``VecNormalize`` statistics they share.

With ``n_actors > 1`` each actor process steps its own shard of the training envs (a
contiguous slice of a ``DummyVecEnv``), and the learner joins their rollouts into one.
Each actor's ``VecNormalize`` keeps normalising with statistics that stay consistent
with everyone's: after each rollout an actor reports the moments of the observations
(and discounted returns) it added, the learner adds every actor's report to its own
statistics, and forwards each report to the other actors with their next weights. An
actor's statistics therefore lag the learner's by the reports still in flight, at most
one rollout of the other shards, as its weights lag by ``max_policy_lag`` updates.

The moments of a multiset can be added and taken away exactly (the parallel algorithm of
Chan et al., which SB3's ``RunningMeanStd.update_from_moments`` implements), so a report
is the difference of an actor's statistics after and before the rollout.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from sb3_apo.common.checks import HyperparameterError

#: ``VecNormalize.obs_rms`` (one per key for a ``Dict`` space) and ``ret_rms``.
Statistics = tuple[RunningMeanStd | dict[str, RunningMeanStd], RunningMeanStd]


def check_shardable(env: VecEnv, n_actors: int) -> None:
    """
    Refuse an env that cannot be split into ``n_actors`` shards, with a message naming ``n_actors``.

    :param env: the training env
    :param n_actors: the number of actors
    """
    if n_actors > env.num_envs:
        raise HyperparameterError(
            f"`n_actors` must be at most the number of envs ({env.num_envs}), since each actor steps at least one; "
            f"got {n_actors}."
        )
    inner = env.venv if isinstance(env, VecNormalize) else env
    if n_actors > 1 and type(inner) is not DummyVecEnv:
        raise HyperparameterError(
            f"`n_actors > 1` splits a DummyVecEnv (optionally wrapped in VecNormalize) across the actors; got "
            f"{type(env).__name__}{'' if inner is env else f' over {type(inner).__name__}'}. Use n_actors=1 "
            f"(one actor steps any VecEnv, a SubprocVecEnv included)."
        )


def env_indices(n_envs: int, n_actors: int) -> list[list[int]]:
    """The envs each actor steps: ``n_actors`` contiguous slices, as equal as they can be."""
    return [shard.tolist() for shard in np.array_split(np.arange(n_envs), n_actors)]


def env_shard(env: VecEnv, indices: Sequence[int]) -> VecEnv:
    """
    The envs ``indices`` of ``env``, as a ``VecEnv`` of their own, for an actor process (which owns
    its copy of ``env``). A ``VecNormalize`` keeps its statistics and the running returns of these envs.

    :param env: a ``DummyVecEnv``, optionally wrapped in ``VecNormalize`` (see :func:`check_shardable`)
    :param indices: the envs of the shard
    """
    if isinstance(env, VecNormalize):
        returns = env.returns[list(indices)]
        shard = env_shard(env.venv, indices)
        env.venv = None  # type: ignore[assignment]  # set_venv derives num_envs and resets the returns
        env.set_venv(shard)
        env.returns = returns
        return env
    assert isinstance(env, DummyVecEnv)
    return DummyVecEnv([functools.partial(_the_env, env.envs[index]) for index in indices])


def _the_env(env: Any) -> Any:
    return env


def select_envs(values: Any, indices: Sequence[int]) -> Any:
    """The entries of ``indices`` along the env axis (axis 0) of an array or of each array of a dict."""
    if isinstance(values, dict):
        return {key: value[list(indices)] for key, value in values.items()}
    return values[list(indices)]


def join_envs(parts: Sequence[Any], axis: int = 0) -> Any:
    """The inverse of :func:`select_envs` over the shards: arrays (or dicts of them) concatenated along ``axis``."""
    if isinstance(parts[0], dict):
        return {key: np.concatenate([part[key] for part in parts], axis=axis) for key in parts[0]}
    return np.concatenate(parts, axis=axis)


def _each(function: Any, *statistics: Any) -> Any:
    """Apply ``function`` to one ``RunningMeanStd`` of each argument, or key by key."""
    if isinstance(statistics[0], dict):
        return {key: function(*(entry[key] for entry in statistics)) for key in statistics[0]}
    return function(*statistics)


def copy_statistics(statistics: Statistics) -> Statistics:
    """A deep copy of ``(obs_rms, ret_rms)``."""
    return _each(RunningMeanStd.copy, statistics[0]), statistics[1].copy()


def _moments_added(after: RunningMeanStd, before: RunningMeanStd) -> RunningMeanStd:
    count = after.count - before.count
    added = RunningMeanStd(epsilon=count, shape=after.mean.shape)
    if count <= 0:  # nothing was added (e.g. the returns' statistics without reward normalisation)
        added.count, added.mean, added.var = 0.0, np.zeros_like(after.mean), np.zeros_like(after.var)
        return added
    added.mean = (after.count * after.mean - before.count * before.mean) / count
    squares = after.count * after.var - before.count * before.var
    squares -= np.square(added.mean - before.mean) * before.count * count / after.count
    added.var = np.maximum(squares / count, 0.0)
    return added


def moments_added(after: Statistics, before: Statistics) -> Statistics:
    """
    The moments of what was added to ``before`` to make ``after``: ``before`` combined with the
    result is ``after`` (to float rounding).
    """
    return _each(_moments_added, after[0], before[0]), _moments_added(after[1], before[1])


def _add(statistics: RunningMeanStd, added: RunningMeanStd) -> None:
    if added.count > 0:
        statistics.combine(added)


def add_moments(statistics: Statistics, added: Statistics) -> None:
    """Add the moments ``added`` (see :func:`moments_added`) to ``statistics``, in place."""
    _each(_add, statistics[0], added[0])
    _add(statistics[1], added[1])


def vec_normalize_statistics(vec_normalize: VecNormalize) -> Statistics:
    """A ``VecNormalize``'s ``(obs_rms, ret_rms)``."""
    return vec_normalize.obs_rms, vec_normalize.ret_rms
