"""
How far an update moved the policy from ``pi_old``: the APO paper's diagnostics.

They are measured after an update, on the whole rollout and without gradient, by
one function, :func:`measure_update`, for every algorithm: the PPO-family loop
calls it (``train/*``), and the benchmark's callback calls it for SB3's ``PPO``
(``diag/*``), so curves of different algorithms compare like with like.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_apo.common.distributions import DistributionMath

#: Samples per forward pass when measuring the diagnostics.
CHUNK_SIZE = 4096


@dataclass
class UpdateDiagnostics:
    """
    Accumulates the diagnostics over the chunks of a rollout.

    - ``kl``: mean exact ``KL(pi_old || pi)`` over the states;
    - ``anchor_divergence``: mean exact ``1/2 * E_{a' ~ pi_old, a' != a}[(r(a') - 1)^2]`` over the
      states (:meth:`DistributionMath.exact_anchor_divergence`), the trust region APO's anchors
      bound and its ``anchor_coef="auto"`` holds near ``anchor_target``;
    - ``ratio_max``, ``ratio_dev``: largest ``r(a|s)`` and mean ``|r(a|s) - 1|`` of the executed actions;
    - ``anchor_ratio_max``, ``anchor_ratio_dev``: the same over anchor actions, the actions that were
      not executed (:meth:`DistributionMath.anchors`: every unsampled action for discrete spaces,
      K draws from ``pi_old`` for Box).
    """

    kl_sum: float = 0.0
    anchor_divergence_sum: float = 0.0
    n_states: int = 0
    ratio_max: float = 1.0
    ratio_dev_sum: float = 0.0
    anchor_ratio_max: float = 1.0
    anchor_ratio_dev_sum: float = 0.0
    n_anchors: int = 0

    @th.no_grad()
    def add(
        self,
        math: DistributionMath,
        old_params: th.Tensor,
        new_params: th.Tensor,
        log_ratio: th.Tensor,
        actions: th.Tensor,
        n_anchor_actions: int,
        generator: th.Generator,
    ) -> None:
        """
        Add one chunk of the rollout.

        :param math: the distribution maths of the action space
        :param old_params: ``pi_old``'s parameters on the chunk's states
        :param new_params: the updated policy's parameters on the same states
        :param log_ratio: ``log r(a|s)`` of the executed actions
        :param actions: the executed actions, as stored in the rollout buffer
        :param n_anchor_actions: K, anchors drawn per state for Box actions
        :param generator: the random generator anchors are drawn from
        """
        self.kl_sum += math.kl(old_params, new_params).sum().item()
        self.anchor_divergence_sum += math.exact_anchor_divergence(old_params, new_params, actions).sum().item()
        self.n_states += len(log_ratio)
        ratio = th.exp(log_ratio)
        self.ratio_max = max(self.ratio_max, ratio.max().item())
        self.ratio_dev_sum += (ratio - 1.0).abs().sum().item()
        anchors = math.anchors(old_params, new_params, actions, n_anchor_actions, generator)
        anchor_ratio = anchors.ratio[anchors.mask]
        if anchor_ratio.numel() > 0:
            self.anchor_ratio_max = max(self.anchor_ratio_max, anchor_ratio.max().item())
            self.anchor_ratio_dev_sum += (anchor_ratio - 1.0).abs().sum().item()
            self.n_anchors += anchor_ratio.numel()

    def as_dict(self) -> dict[str, float]:
        """The diagnostics by their logger names (without the ``train/`` prefix)."""
        values = {
            "kl": self.kl_sum / max(self.n_states, 1),
            "anchor_divergence": self.anchor_divergence_sum / max(self.n_states, 1),
            "ratio_max": self.ratio_max,
            "ratio_dev": self.ratio_dev_sum / max(self.n_states, 1),
        }
        if self.n_anchors > 0:
            values["anchor_ratio_max"] = self.anchor_ratio_max
            values["anchor_ratio_dev"] = self.anchor_ratio_dev_sum / self.n_anchors
        return values


def _chunks(
    observations: np.ndarray | dict[str, np.ndarray], n_samples: int, device: th.device
) -> Iterator[tuple[slice, Any]]:
    """``(slice, observations as tensors)`` of consecutive chunks of ``CHUNK_SIZE`` samples."""
    for start in range(0, n_samples, CHUNK_SIZE):
        part = slice(start, start + CHUNK_SIZE)
        if isinstance(observations, dict):
            yield part, {key: th.as_tensor(array[part], device=device) for key, array in observations.items()}
        else:
            yield part, th.as_tensor(observations[part], device=device)


@th.no_grad()
def distribution_params(
    policy: ActorCriticPolicy, math: DistributionMath, observations: np.ndarray | dict[str, np.ndarray]
) -> np.ndarray:
    """
    The parameters of the policy's distribution on flat observations, without gradient, in chunks
    (what the benchmark's callback keeps of ``pi_old`` for algorithms whose buffer does not store them).

    :param policy: the policy
    :param math: the distribution maths of its action space
    :param observations: ``(n, *obs_shape)`` observations (or a dict of them), as stored in a rollout buffer
    :return: ``(n, param_dim)`` parameters
    """
    n_samples = len(next(iter(observations.values())) if isinstance(observations, dict) else observations)
    return np.concatenate(
        [math.params(policy.get_distribution(obs)).cpu().numpy() for _, obs in _chunks(observations, n_samples, policy.device)]
    )


@th.no_grad()
def measure_update(
    policy: ActorCriticPolicy,
    math: DistributionMath,
    observations: np.ndarray | dict[str, np.ndarray],
    actions: np.ndarray,
    old_params: np.ndarray,
    old_log_prob: np.ndarray,
    n_anchor_actions: int,
    generator: th.Generator,
) -> dict[str, float]:
    """
    How far an update moved the policy from ``pi_old``, measured on the whole rollout
    without gradient, in chunks of ``CHUNK_SIZE`` samples: the one procedure behind the
    algorithms' ``train/*`` diagnostics and the benchmark callback's ``diag/*`` (SB3's ``PPO``).

    :param policy: the updated policy (put in evaluation mode)
    :param math: the distribution maths of its action space
    :param observations: the rollout's ``(n, *obs_shape)`` observations (or a dict of them)
    :param actions: its ``(n, *action_shape)`` executed actions, as the rollout buffer stores them
    :param old_params: ``pi_old``'s ``(n, param_dim)`` distribution parameters
    :param old_log_prob: ``log pi_old(a|s)`` of the executed actions, ``(n,)``
    :param n_anchor_actions: K, anchors drawn per state for Box actions
    :param generator: the random generator anchors are drawn from
    :return: :meth:`UpdateDiagnostics.as_dict`: ``kl``, ``ratio_max``, ``ratio_dev``,
        ``anchor_ratio_max`` and ``anchor_ratio_dev``
    """
    policy.set_training_mode(False)
    diagnostics = UpdateDiagnostics()
    device = policy.device
    for part, obs in _chunks(observations, len(actions), device):
        executed = th.as_tensor(actions[part], dtype=th.float32, device=device)  # as SB3's buffers return them
        distribution = policy.get_distribution(obs)
        log_prob = distribution.log_prob(math.distribution_actions(executed))
        diagnostics.add(
            math,
            th.as_tensor(old_params[part], device=device),
            math.params(distribution),
            log_prob - th.as_tensor(old_log_prob[part], device=device).flatten(),
            executed,
            n_anchor_actions,
            generator,
        )
    return diagnostics.as_dict()
