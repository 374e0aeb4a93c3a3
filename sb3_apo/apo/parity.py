"""
The public APO code's anchor loss, ``APO(anchor_mode="parity")``, for reproducing its curves.

Only APO uses it, so it lives here rather than in :mod:`sb3_apo.common.distributions`;
each distribution family's version is registered on
:func:`parity_anchors` (one dispatch, no branching in the algorithm). See
``docs/algorithms.md``, "Parity mode".
"""

import functools

import torch as th

from sb3_apo.common.distributions import (
    AnchorSet,
    BernoulliMath,
    CategoricalMath,
    DiagGaussianMath,
    DistributionMath,
    clamp_log_ratio,
)
from sb3_apo.common.on_policy import Minibatch


@functools.singledispatch
def parity_anchors(math: DistributionMath, batch: Minibatch, n_anchor_actions: int) -> AnchorSet:
    """
    The anchor set of the public APO code's loss on one minibatch; its
    ``chi2_penalty()`` is that loss's anchor term.

    :param math: the distribution maths of the action space (selects the family's version)
    :param batch: the minibatch
    :param n_anchor_actions: K, the unsampled actions drawn per state and sub-space (discrete spaces)
    """
    raise ValueError(f"anchor_mode='parity' is not defined for {type(math).__name__}.")


@parity_anchors.register
def _gaussian(math: DiagGaussianMath, batch: Minibatch, n_anchor_actions: int) -> AnchorSet:
    # The public code penalises the *executed* action, weighted by its old joint density.
    log_ratio = clamp_log_ratio(batch.log_ratio).unsqueeze(1)
    weight = th.exp(batch.old_log_prob).unsqueeze(1)
    return AnchorSet(log_ratio, weight, th.ones_like(log_ratio, dtype=th.bool))


@parity_anchors.register
def _categorical(math: CategoricalMath, batch: Minibatch, n_anchor_actions: int) -> AnchorSet:
    # K unsampled actions per sub-space, drawn uniformly at random, each weighted by pi_old(a'|s) / K.
    n_anchors = n_anchor_actions
    old_log_probs = math.log_probs(batch.old_params)
    all_log_ratios = clamp_log_ratio(math.log_probs(batch.new_params) - old_log_probs)
    executed = math.action_index(batch.actions)  # (batch, n_sub)
    offsets = th.as_tensor(math.offsets, device=executed.device)
    n_unsampled = th.as_tensor(math.nvec, device=executed.device) - 1  # per sub-space
    uniform = th.rand((*executed.shape, n_anchors), generator=batch.generator, device=executed.device)
    draws = (uniform * n_unsampled.unsqueeze(1)).long()  # in [0, n_i - 2]
    anchors = draws + offsets.unsqueeze(1)
    anchors = anchors + (anchors >= executed.unsqueeze(2)).long()  # skip the executed action
    has_anchor = (n_unsampled > 0).unsqueeze(1).expand_as(anchors)
    anchors = th.where(has_anchor, anchors, executed.unsqueeze(2)).flatten(1)  # (batch, n_sub * K)
    mask = has_anchor.flatten(1).expand(len(anchors), -1)
    weight = old_log_probs.exp().gather(1, anchors) / n_anchors * mask
    return AnchorSet(all_log_ratios.gather(1, anchors), weight, mask)


@parity_anchors.register
def _bernoulli(math: BernoulliMath, batch: Minibatch, n_anchor_actions: int) -> AnchorSet:
    # With one unsampled value per bit, the exact sum is what any sampling estimates.
    return batch.anchors(n_anchor_actions)
