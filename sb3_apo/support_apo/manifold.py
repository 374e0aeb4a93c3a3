"""
Sets of discrete actions and their probability masses: the safe manifold of
support-anchored APO (``docs/support_apo.md``).

Only :class:`~sb3_apo.support_apo.SupportAPO` ranks a reference policy's actions
and measures the mass of a set of them, so these functions live beside it rather
than in :mod:`sb3_apo.common.distributions`, which holds what every algorithm
needs. They work on the parameters of a
:class:`~sb3_apo.common.distributions.CategoricalMath` (``Discrete`` and
``MultiDiscrete``), one sub-space at a time.
"""

import torch as th

from sb3_apo.common.distributions import CategoricalMath, clamp_log_ratio


def top_k_mask(math: CategoricalMath, params: th.Tensor, k: int) -> th.Tensor:
    """
    The ``k`` most probable actions of each sub-space, ``(batch, sum(nvec))``.

    ``k`` is capped at ``n_i - 1`` in a sub-space of ``n_i`` actions, so that the set
    never holds the whole sub-space (whose mass is always 1). Ties are broken as
    ``torch.topk`` breaks them.

    :param math: the distribution maths of the action space
    :param params: the distribution parameters whose probabilities rank the actions
    :param k: the number of actions to keep per sub-space (at least 1)
    :return: ``True`` at the kept actions
    """
    masks = []
    for logits, n in zip(th.split(params, math.nvec, dim=1), math.nvec):
        mask = th.zeros_like(logits, dtype=th.bool)
        k_sub = min(int(k), n - 1)
        if k_sub > 0:  # logits rank the actions as the probabilities do
            mask.scatter_(1, logits.topk(k_sub, dim=1).indices, True)
        masks.append(mask)
    return th.cat(masks, dim=1)


def log_mass(math: CategoricalMath, log_probs: th.Tensor, mask: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """
    The log-probability of a set of actions in each sub-space.

    :param math: the distribution maths of the action space
    :param log_probs: ``(batch, sum(nvec))`` log-probabilities, as ``math.log_probs`` returns them
    :param mask: ``(batch, sum(nvec))``, ``True`` at the actions of the set
    :return: ``(log_mass, nonempty)``, both ``(batch, len(nvec))``: ``log pi(S_i|s)`` of each
        sub-space's set ``S_i``, and whether ``S_i`` has an action. Where it has none,
        ``log_mass`` is a finite placeholder (0) without gradient, never ``-inf``, so that
        masking it out afterwards cannot leak NaN into a gradient.
    """
    log_masses, nonempty = [], []
    for sub_log_probs, sub_mask in zip(th.split(log_probs, math.nvec, dim=1), th.split(mask, math.nvec, dim=1)):
        has_action = sub_mask.any(dim=1)
        keep = sub_mask | ~has_action.unsqueeze(1)  # an empty row keeps everything: finite, replaced below
        masked = sub_log_probs.masked_fill(~keep, -th.inf)
        placeholder = th.zeros_like(has_action, dtype=log_probs.dtype)
        log_masses.append(th.where(has_action, th.logsumexp(masked, dim=1), placeholder))
        nonempty.append(has_action)
    return th.stack(log_masses, dim=1), th.stack(nonempty, dim=1)


def mass_log_ratio(
    math: CategoricalMath, old_params: th.Tensor, new_params: th.Tensor, mask: th.Tensor
) -> tuple[th.Tensor, th.Tensor]:
    """
    ``log(pi(S_i|s) / pi_old(S_i|s))`` of a set of actions in each sub-space, clamped to
    ``[-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT]``.

    :param math: the distribution maths of the action space
    :param old_params: parameters of ``pi_old`` (no gradient)
    :param new_params: parameters of ``pi`` (with gradient)
    :param mask: ``(batch, sum(nvec))``, ``True`` at the actions of the set
    :return: ``(log_ratio, nonempty)``, both ``(batch, len(nvec))``; ``log_ratio`` is 0
        (without gradient) where the sub-space's set is empty
    """
    new_log_mass, nonempty = log_mass(math, math.log_probs(new_params), mask)
    old_log_mass, _ = log_mass(math, math.log_probs(old_params), mask)
    return clamp_log_ratio(new_log_mass - old_log_mass), nonempty
