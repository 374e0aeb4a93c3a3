"""
Rollout buffers that also keep the parameters of the distribution that
collected the data (``pi_old``), so that exact KL divergences and anchor
actions need no second copy of the network.

SB3's ``collect_rollouts`` does not store distribution parameters. The
algorithm fills them after each rollout, in one gradient-free pass of the policy
that collected it over the stored observations
(:meth:`DistributionParamsMixin.fill_distribution_params`): the policy does not
change during a rollout, so they are the distributions the stored actions and
log-probabilities were drawn from, also under ``VecNormalize`` and gSDE.

With asynchronous rollouts the data was collected by an older policy ``pi_b``;
:meth:`DistributionParamsMixin.store_proximal_policy` replaces ``pi_b`` by the
learner's policy ``pi_prox`` and keeps the truncated importance weights
``min(pi_prox / pi_b, c)`` per sample (see ``docs/async.md``).
"""

from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from sb3_apo.common.distributions import distribution_math


def extend_samples(name: str, base: type, **fields: Any) -> type:
    """
    A ``NamedTuple`` type with the fields of ``base`` followed by ``fields``, so that
    a buffer subclass can add per-sample arrays to SB3's sample types.

    :param name: the name of the new type
    :param base: a ``NamedTuple`` type, e.g. SB3's ``RolloutBufferSamples``
    :param fields: the added fields and their types (classes or unions such as ``th.Tensor | None``)
    """
    fields_in_order = [*base.__annotations__.items(), *fields.items()]
    return NamedTuple(name, fields_in_order)  # type: ignore[return-value]  # typeshed: an instance; it is a class


AnchoredRolloutBufferSamples = extend_samples(
    "AnchoredRolloutBufferSamples",
    RolloutBufferSamples,
    old_distribution_params=th.Tensor,
    importance_weights=th.Tensor | None,
)
AnchoredDictRolloutBufferSamples = extend_samples(
    "AnchoredDictRolloutBufferSamples",
    DictRolloutBufferSamples,
    old_distribution_params=th.Tensor,
    importance_weights=th.Tensor | None,
)


if TYPE_CHECKING:
    # The mixins below are combined with SB3's buffers, whose attributes and methods they use
    _RolloutBufferBase = RolloutBuffer
else:
    _RolloutBufferBase = object


#: Number of observations per forward pass when filling distribution parameters.
PARAMS_CHUNK_SIZE = 4096


class DistributionParamsMixin(_RolloutBufferBase):
    """
    Adds the arrays ``distribution_params`` of shape ``(n_steps, n_envs, param_dim)``
    and ``importance_weights`` of shape ``(n_steps, n_envs)`` to an SB3 rollout
    buffer, and the fields ``old_distribution_params`` and ``importance_weights``
    to its samples. The importance weights are 1 unless
    :meth:`store_proximal_policy` set them; while they all are, the samples'
    ``importance_weights`` is ``None`` (the update is unweighted).
    """

    distribution_params: np.ndarray
    importance_weights: np.ndarray
    _samples_class: type

    def reset(self) -> None:
        super().reset()
        param_dim = distribution_math(self.action_space).param_dim
        self.distribution_params = np.zeros((self.buffer_size, self.n_envs, param_dim), dtype=np.float32)
        self.importance_weights = np.ones((self.buffer_size, self.n_envs), dtype=np.float32)
        #: Whether some importance weight differs from 1 (set by ``get()``); if not, the samples carry ``None``.
        self.weighted = False

    def fill_distribution_params(self, params_fn: Callable[[Any], th.Tensor]) -> None:
        """
        Fill ``distribution_params`` after a complete rollout, chunk by chunk and without gradient.

        :param params_fn: maps a batch of stored observations (as tensors) to the ``(batch, param_dim)``
            parameters of the policy that collected the rollout
        """
        self._fill_from_observations(self.distribution_params, params_fn)

    def fill_evaluations(self, evaluate: Callable[[Any, th.Tensor], tuple[th.Tensor, th.Tensor, th.Tensor]]) -> None:
        """
        Fill ``values``, ``log_probs`` and ``distribution_params`` of a complete rollout whose actor
        recorded only its actions (see ``docs/async.md``), in chunks and without gradient; the returns
        and advantages are then to be computed again.

        :param evaluate: maps a batch of observations and stored actions (as tensors) to the ``(batch,)``
            values, the ``(batch,)`` log-probabilities of the actions and the ``(batch, param_dim)``
            distribution parameters of the policy that collected the rollout
        """
        n_samples = self.buffer_size * self.n_envs
        values, log_probs = self.values.reshape(n_samples), self.log_probs.reshape(n_samples)
        params = self.distribution_params.reshape(n_samples, -1)
        for chunk, (chunk_values, chunk_log_probs, chunk_params) in self._evaluate_in_chunks(evaluate):
            values[chunk] = chunk_values.cpu().numpy().flatten()
            log_probs[chunk] = chunk_log_probs.cpu().numpy()
            params[chunk] = chunk_params.cpu().numpy()

    def store_proximal_policy(
        self, evaluate: Callable[[Any, th.Tensor], tuple[th.Tensor, th.Tensor]], importance_weight_max: float
    ) -> float:
        """
        Make the learner's current policy ``pi_prox`` the old policy of the update of
        a rollout that an older policy ``pi_b`` collected: store the truncated importance
        weights ``w = min(pi_prox(a|s) / pi_b(a|s), importance_weight_max)``, then
        replace ``pi_b``'s log-probabilities and distribution parameters by ``pi_prox``'s.

        :param evaluate: maps a batch of observations and stored actions (as tensors) to
            ``pi_prox``'s ``(batch, param_dim)`` distribution parameters and ``(batch,)``
            log-probabilities of the actions; called without gradient, in chunks
        :param importance_weight_max: ``c``, the truncation of the importance weights
        :return: the fraction of samples whose weight was truncated (``pi_prox / pi_b > c``)
        """
        n_samples = self.buffer_size * self.n_envs
        params = self.distribution_params.reshape(n_samples, -1)
        log_probs = self.log_probs.reshape(n_samples)
        weights = self.importance_weights.reshape(n_samples)
        n_truncated = 0
        for chunk, (prox_params, prox_log_prob) in self._evaluate_in_chunks(evaluate):
            prox_log_prob = prox_log_prob.cpu().numpy()
            ratio = np.exp(prox_log_prob - log_probs[chunk])
            n_truncated += int((ratio > importance_weight_max).sum())
            weights[chunk] = np.minimum(ratio, importance_weight_max)
            log_probs[chunk] = prox_log_prob
            params[chunk] = prox_params.cpu().numpy()
        return n_truncated / n_samples

    def _evaluate_in_chunks(self, evaluate: Callable[[Any, th.Tensor], Any]) -> Iterator[tuple[slice, Any]]:
        """``evaluate(observations, actions)`` over the stored samples, chunk by chunk, without gradient."""
        n_samples = self.buffer_size * self.n_envs
        actions = self.actions.reshape(n_samples, -1)
        for start in range(0, n_samples, PARAMS_CHUNK_SIZE):
            chunk = slice(start, start + PARAMS_CHUNK_SIZE)
            with th.no_grad():
                outputs = evaluate(self._observations_chunk(chunk), self.to_torch(actions[chunk]))
            yield chunk, outputs

    def _fill_from_observations(self, array: np.ndarray, params_fn: Callable[[Any], th.Tensor]) -> None:
        """Write ``params_fn(observations)`` into ``array`` (``(n_steps, n_envs, dim)``), chunk by chunk."""
        n_samples = self.buffer_size * self.n_envs
        flat = array.reshape(n_samples, -1)  # a view, step-major like the buffer
        with th.no_grad():
            for start in range(0, n_samples, PARAMS_CHUNK_SIZE):
                chunk = slice(start, start + PARAMS_CHUNK_SIZE)
                flat[chunk] = params_fn(self._observations_chunk(chunk)).cpu().numpy()

    def _observations_chunk(self, chunk: slice) -> Any:
        def take(array: np.ndarray) -> th.Tensor:
            return self.to_torch(array.reshape(-1, *array.shape[2:])[chunk])

        if isinstance(self.observations, dict):
            return {key: take(array) for key, array in self.observations.items()}
        return take(self.observations)

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        if not self.generator_ready:
            self.distribution_params = self.swap_and_flatten(self.distribution_params)
            self.importance_weights = self.swap_and_flatten(self.importance_weights)
            self.weighted = not np.all(self.importance_weights == 1.0)
        yield from super().get(batch_size)

    def get_in_order(self, batch_size: int) -> Generator[Any, None, None]:
        """
        Every sample once, in storage order, in batches of ``batch_size``. Unlike
        ``get()`` it draws no random permutation, so measuring the whole rollout
        leaves numpy's random stream untouched. Call it after ``get()``.
        """
        n_samples = self.buffer_size * self.n_envs
        for start in range(0, n_samples, batch_size):
            yield self._get_samples(np.arange(start, min(start + batch_size, n_samples)))

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> Any:
        samples = super()._get_samples(batch_inds, env)
        weights = self.fresh_tensor(self.importance_weights[batch_inds].flatten()) if self.weighted else None
        return self._samples_class(*samples, self.fresh_tensor(self.distribution_params[batch_inds]), weights)

    def fresh_tensor(self, array: np.ndarray) -> th.Tensor:
        """
        A tensor on the buffer's device from an array that nothing else holds (the result of fancy
        indexing): on the CPU it shares the array's memory instead of copying it as SB3's
        ``to_torch`` does, a copy that costs about as much as the indexing itself at minibatch sizes.
        """
        return th.from_numpy(array).to(self.device)


class AnchoredRolloutBuffer(DistributionParamsMixin, RolloutBuffer):
    """SB3's ``RolloutBuffer`` that also stores ``pi_old``'s distribution parameters."""

    _samples_class = AnchoredRolloutBufferSamples


class AnchoredDictRolloutBuffer(DistributionParamsMixin, DictRolloutBuffer):
    """SB3's ``DictRolloutBuffer`` that also stores ``pi_old``'s distribution parameters."""

    _samples_class = AnchoredDictRolloutBufferSamples


def anchored_buffer_class(observation_space: spaces.Space) -> type[RolloutBuffer]:
    """The buffer class for an observation space, as SB3 chooses between its two."""
    return AnchoredDictRolloutBuffer if isinstance(observation_space, spaces.Dict) else AnchoredRolloutBuffer
