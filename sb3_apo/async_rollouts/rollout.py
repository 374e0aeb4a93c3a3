"""
What crosses between the learner and its actors: a :class:`Rollout` with the
:class:`StepRecords` its callbacks are replayed, and the :class:`RolloutActor`
interface, the only one the learner sees, where actors of another kind (e.g. Ray
actors on other machines) plug in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_apo.async_rollouts.shards import Statistics

#: The arrays of an SB3 rollout buffer (and of ours) that a rollout carries back.
BUFFER_ARRAYS = (
    "observations",
    "actions",
    "rewards",
    "returns",
    "episode_starts",
    "values",
    "log_probs",
    "advantages",
    "distribution_params",
)

#: Seconds an actor gets to stop on its own before it is terminated.
CLOSE_TIMEOUT = 10.0


class RolloutActorError(RuntimeError):
    """A rollout actor crashed, was killed, or stopped answering; training cannot go on."""


@dataclass
class StepRecord:
    """What SB3's ``collect_rollouts`` exposes to callbacks at one step, for replay in the learner."""

    new_obs: Any
    rewards: np.ndarray
    dones: np.ndarray
    infos: list[dict[str, Any]]


def pack_infos(
    infos: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """
    Take the numpy scalars out of ``infos``, as one array per key and dtype with the positions
    of the dicts they came from. Pickled one by one, the scalars (e.g. Hopper's ``x_position``,
    an ``np.float64``) cost most of a rollout's transfer; as arrays, almost nothing.

    :param infos: the info dicts of a rollout, flattened (left unchanged)
    :return: copies of the dicts with ``None`` in the scalars' places (so that each keeps its
        keys' order), and for each ``(key, dtype)`` the dicts' indices and the values; see
        :func:`unpack_infos`
    """
    columns: dict[tuple[str, str], tuple[list[int], list[Any]]] = {}
    packed = []
    for index, info in enumerate(infos):
        info = dict(info)
        for key, value in info.items():
            if isinstance(value, np.generic):
                positions, values = columns.setdefault((key, value.dtype.str), ([], []))
                positions.append(index)
                values.append(value)
                info[key] = None
        packed.append(info)
    return packed, {
        (key, dtype): (np.array(positions, dtype=np.int64), np.array(values, dtype=dtype))
        for (key, dtype), (positions, values) in columns.items()
    }


def unpack_infos(infos: list[dict[str, Any]], columns: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> None:
    """Put back, in place, the numpy scalars that :func:`pack_infos` took out (same dtypes, same bits)."""
    for (key, _), (positions, values) in columns.items():
        for position, value in zip(positions.tolist(), values):
            infos[position][key] = value


@dataclass
class StepRecords:
    """
    The :class:`StepRecord` of every step of a rollout, stacked: ``new_obs``, ``rewards`` and
    ``dones`` as ``(n_steps, n_envs, ...)`` arrays (one dict of them for a ``Dict`` space), which
    cross a pipe far faster than a few hundred small arrays; ``infos`` per step, per env.
    """

    new_obs: Any
    rewards: np.ndarray
    dones: np.ndarray
    infos: list[list[dict[str, Any]]]

    @classmethod
    def stack(cls, steps: Sequence[StepRecord]) -> StepRecords:
        """Stack the records of consecutive steps."""
        new_obs = [step.new_obs for step in steps]
        return cls(
            new_obs={key: np.stack([obs[key] for obs in new_obs]) for key in new_obs[0]}
            if isinstance(new_obs[0], dict)
            else np.stack(new_obs),
            rewards=np.stack([step.rewards for step in steps]),
            dones=np.stack([step.dones for step in steps]),
            infos=[step.infos for step in steps],
        )

    def __getstate__(self) -> dict[str, Any]:
        flat, scalars = pack_infos([info for infos in self.infos for info in infos])
        return {**vars(self), "infos": [len(infos) for infos in self.infos], "_flat": flat, "_scalars": scalars}

    def __setstate__(self, state: dict[str, Any]) -> None:
        flat, scalars, lengths = state.pop("_flat"), state.pop("_scalars"), state.pop("infos")
        unpack_infos(flat, scalars)
        starts = np.cumsum([0, *lengths]).tolist()
        vars(self).update(state, infos=[flat[start:end] for start, end in zip(starts[:-1], starts[1:])])

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, step: int) -> StepRecord:
        """The record of one step (views of the stacked arrays)."""
        new_obs = (
            {key: value[step] for key, value in self.new_obs.items()} if isinstance(self.new_obs, dict) else self.new_obs[step]
        )
        return StepRecord(new_obs, self.rewards[step], self.dones[step], self.infos[step])


@dataclass
class Rollout:
    """
    One complete rollout, as an actor sends it to the learner.

    :param policy_version: the version of the weights that collected it (``pi_b``)
    :param arrays: the filled rollout buffer's arrays (:data:`BUFFER_ARRAYS`), returns
        and advantages included
    :param steps: what the callbacks saw at each step
    :param last_obs: the observation after the last step
    :param last_episode_starts: the ``dones`` of the last step
    :param last_values: the values of ``last_obs``, used for the returns
    :param vec_normalize_stats: ``(obs_rms, ret_rms)`` of the actor's ``VecNormalize``, or ``None``;
        from an actor of a shard of the envs, the moments it added in this rollout
        (:func:`~sb3_apo.async_rollouts.shards.moments_added`)
    :param actor_idle_s: seconds the actor waited for weights before this rollout
    :param collect_s: seconds the actor spent collecting it
    """

    policy_version: int
    arrays: dict[str, Any]
    steps: StepRecords
    last_obs: Any
    last_episode_starts: np.ndarray
    last_values: np.ndarray
    vec_normalize_stats: Statistics | None
    actor_idle_s: float
    collect_s: float


class RolloutActor(ABC):
    """
    What the learner needs of an actor. Every :meth:`send_weights` call requests one
    rollout collected with those weights; :meth:`receive_rollout` returns them in order.
    """

    #: A name for messages (e.g. ``"rollout actor 0 (pid 1234)"``).
    name: str

    @abstractmethod
    def start(self) -> None:
        """Start the actor (it waits for weights before it collects anything)."""

    @abstractmethod
    def send_weights(self, policy_version: int, weights: dict[str, np.ndarray]) -> None:
        """
        Request one rollout collected with these policy weights.

        :param policy_version: the number of updates the weights have seen
        :param weights: the policy's ``state_dict`` as numpy arrays
        """

    @abstractmethod
    def receive_rollout(self) -> Rollout:
        """The next requested rollout; raises :class:`RolloutActorError` if the actor failed."""

    @abstractmethod
    def close(self) -> None:
        """Stop the actor and release everything it holds; safe to call more than once."""
