"""V-trace value targets and advantages for a rollout collected by an older policy (``docs/async.md``)."""

from __future__ import annotations

import numpy as np


def vtrace(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    dones: np.ndarray,
    ratios: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """
    V-trace value targets (Espeholt et al. 2018, with ``rho_bar = c_bar = 1``) and the
    matching advantages, for a rollout of ``pi_b`` evaluated for ``pi_prox``. With
    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` (0 past an episode's end) and
    ``ratio_t = pi_prox(a_t|s_t) / pi_b(a_t|s_t)``::

        vs_t       = min(1, ratio_t) * delta_t + gamma * lambda * min(1, ratio_t) * vs_{t+1}
        returns_t  = V(s_t) + vs_t                         (the V-trace target)
        advantage_t = delta_t + gamma * lambda * vs_{t+1}

    The advantage carries no weight of its own step: the loss weights it by ``w``.
    With every ratio 1 both are GAE's (SB3's ``compute_returns_and_advantage``).

    :param rewards: ``(n_steps, n_envs)`` rewards (with SB3's timeout bootstraps)
    :param values: ``(n_steps, n_envs)`` ``V(s_t)``
    :param episode_starts: ``(n_steps, n_envs)`` whether ``s_t`` starts an episode
    :param last_values: ``(n_envs,)`` values of the observations after the last step
    :param dones: ``(n_envs,)`` whether the last step ended an episode
    :param ratios: ``(n_steps, n_envs)`` ``pi_prox / pi_b`` of the executed actions
    :param gamma: the discount
    :param gae_lambda: lambda
    :return: the advantages and the value targets, ``(n_steps, n_envs)`` each
    """
    clipped = np.minimum(ratios, 1.0)
    advantages, returns = np.zeros_like(values), np.zeros_like(values)
    next_vs = np.zeros_like(last_values)
    for step in reversed(range(len(values))):
        if step == len(values) - 1:
            next_non_terminal, next_values = 1.0 - dones.astype(np.float32), last_values
        else:
            next_non_terminal, next_values = 1.0 - episode_starts[step + 1], values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        trace = gamma * gae_lambda * next_non_terminal * next_vs
        advantages[step] = delta + trace
        next_vs = clipped[step] * (delta + trace)
        returns[step] = values[step] + next_vs
    return advantages, returns
