"""
Rollout buffers that also keep the reference policy's distribution parameters.

The reference policy is frozen, so its parameters on a rollout are computed
once, right after the rollout, by one chunked gradient-free pass over the
stored observations, and then served minibatch by minibatch: the whole update
costs one forward pass of the reference per sample, whatever ``n_epochs``.
"""

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.vec_env import VecNormalize

from sb3_apo.common.buffers import (
    AnchoredDictRolloutBuffer,
    AnchoredDictRolloutBufferSamples,
    AnchoredRolloutBuffer,
    AnchoredRolloutBufferSamples,
    DistributionParamsMixin,
    extend_samples,
)

ReferenceRolloutBufferSamples = extend_samples(
    "ReferenceRolloutBufferSamples", AnchoredRolloutBufferSamples, reference_params=th.Tensor
)
ReferenceDictRolloutBufferSamples = extend_samples(
    "ReferenceDictRolloutBufferSamples", AnchoredDictRolloutBufferSamples, reference_params=th.Tensor
)


class ReferenceParamsMixin(DistributionParamsMixin):
    """
    Adds the array ``reference_params`` (the reference policy's distribution
    parameters, shaped like ``distribution_params``) to a rollout buffer, and
    the field ``reference_params`` to its samples.
    """

    reference_params: np.ndarray
    _reference_samples_class: type

    def reset(self) -> None:
        super().reset()
        self.reference_params = np.zeros_like(self.distribution_params)

    def store_reference_params(self, params_fn: Callable[[Any], th.Tensor]) -> None:
        """
        Fill ``reference_params`` from the stored observations.

        :param params_fn: maps a batch of observations (as tensors) to the
            ``(batch, param_dim)`` parameters of the reference policy; called
            without gradient, in chunks
        """
        self._fill_from_observations(self.reference_params, params_fn)

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        if not self.generator_ready:
            self.reference_params = self.swap_and_flatten(self.reference_params)
        yield from super().get(batch_size)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> Any:
        samples = super()._get_samples(batch_inds, env)
        return self._reference_samples_class(*samples, self.fresh_tensor(self.reference_params[batch_inds]))


class ReferenceRolloutBuffer(ReferenceParamsMixin, AnchoredRolloutBuffer):
    """The rollout buffer of :class:`~sb3_apo.support_apo.SupportAPO`."""

    _reference_samples_class = ReferenceRolloutBufferSamples


class ReferenceDictRolloutBuffer(ReferenceParamsMixin, AnchoredDictRolloutBuffer):
    """The rollout buffer of :class:`~sb3_apo.support_apo.SupportAPO` for ``Dict`` observations."""

    _reference_samples_class = ReferenceDictRolloutBufferSamples


def reference_buffer_class(observation_space: spaces.Space) -> type[RolloutBuffer]:
    """The buffer class for an observation space, as SB3 chooses between its two."""
    return ReferenceDictRolloutBuffer if isinstance(observation_space, spaces.Dict) else ReferenceRolloutBuffer
