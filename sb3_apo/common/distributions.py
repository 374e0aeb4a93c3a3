"""
The maths that depends on the type of the action distribution, in one place.

Every PPO-family algorithm of this package needs the same few things from the
policy's distribution, whatever the action space:

- its parameters, as one flat tensor per state, so that the rollout buffer can
  keep the distribution that collected the data (``pi_old``);
- the exact ``KL(p || q)`` between two such parameter tensors;
- anchor actions: actions other than the executed one, each with its
  log-ratio ``log pi(a'|s) - log pi_old(a'|s)`` and its weight in the anchor
  penalty ``1/2 * sum_j w_j * (r_j - 1)^2`` (see :class:`AnchorSet`).

One class per distribution family implements these; the algorithms never
branch on the action space.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from torch.distributions import Normal

#: Log-ratios of anchor actions are clamped to ``[-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT]``
#: before ``exp``: ``exp(20)**2`` is about ``2e17``, far from float32's overflow,
#: so one far-out anchor can never turn the loss into inf or NaN.
LOG_RATIO_LIMIT = 20.0


@dataclass(frozen=True)
class AnchorSet:
    """
    Anchor actions of a batch of states, ``M`` per state.

    :param log_ratio: ``(batch, M)`` clamped ``log pi(a'|s) - log pi_old(a'|s)``
    :param weight: ``(batch, M)`` the weight of each anchor in the penalty
    :param mask: ``(batch, M)`` ``True`` where the entry is an anchor action
        (``False`` for the executed action of an exact sum, whose weight is 0)
    """

    log_ratio: th.Tensor
    weight: th.Tensor
    mask: th.Tensor

    @property
    def ratio(self) -> th.Tensor:
        return th.exp(self.log_ratio)

    def chi2_penalty(self) -> th.Tensor:
        """``mean_s 1/2 * sum_j w_j(s) * (r_j(s) - 1)^2``, a scalar."""
        return 0.5 * (self.weight * (self.ratio - 1.0) ** 2).sum(dim=1).mean()


def _clamp_log_ratio(log_ratio: th.Tensor) -> th.Tensor:
    return log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)


class DistributionMath(ABC):
    """
    Maths of one distribution family, expressed on flat parameter tensors.

    :param param_dim: the number of parameters per state
    """

    def __init__(self, param_dim: int):
        self.param_dim = param_dim

    @abstractmethod
    def params(self, distribution: Distribution) -> th.Tensor:
        """The ``(batch, param_dim)`` parameters of an SB3 distribution (keeps the gradient)."""

    @abstractmethod
    def kl(self, p_params: th.Tensor, q_params: th.Tensor) -> th.Tensor:
        """The exact ``KL(p || q)`` per state, summed over action dimensions: ``(batch,)``."""

    @abstractmethod
    def anchors(
        self,
        old_params: th.Tensor,
        new_params: th.Tensor,
        actions: th.Tensor,
        n_anchor_actions: int,
        generator: th.Generator,
    ) -> AnchorSet:
        """
        The anchor set of the chi-square penalty, so that ``chi2_penalty()`` is
        ``mean_s 1/2 * E_{a' ~ pi_old(.|s), a' != a}[(r(a'|s) - 1)^2]``.

        :param old_params: parameters of ``pi_old`` (no gradient)
        :param new_params: parameters of ``pi`` (with gradient)
        :param actions: the executed actions, as stored in the rollout buffer
        :param n_anchor_actions: K, for the families that sample anchors
        :param generator: the random generator used to draw anchors
        """

    @abstractmethod
    def parity_anchors(
        self,
        old_params: th.Tensor,
        new_params: th.Tensor,
        actions: th.Tensor,
        old_log_prob: th.Tensor,
        log_ratio: th.Tensor,
        n_anchor_actions: int,
        generator: th.Generator,
    ) -> AnchorSet:
        """
        The anchor set of the public APO code's loss (``anchor_mode="parity"``).

        :param old_log_prob: ``log pi_old(a|s)`` of the executed actions
        :param log_ratio: ``log r(a|s)`` of the executed actions (with gradient)
        """


class DiagGaussianMath(DistributionMath):
    """
    Diagonal Gaussian policies (``Box`` actions), with or without gSDE.

    Parameters are ``[loc, scale]``: under gSDE the scale depends on the state,
    so it is stored per state. With ``squash_output=True`` the anchors live in
    the pre-tanh space: the Jacobian of the squashing is the same for ``pi``
    and ``pi_old`` and cancels in every ratio.
    """

    def __init__(self, action_dim: int):
        super().__init__(2 * action_dim)

    @staticmethod
    def normal(params: th.Tensor) -> Normal:
        loc, scale = params.chunk(2, dim=-1)
        return Normal(loc, scale)

    def params(self, distribution: Distribution) -> th.Tensor:
        normal = distribution.distribution
        return th.cat([normal.loc, normal.scale], dim=-1)

    # Closed forms on the parameters: no torch.distributions objects (and their argument
    # validation) in the minibatch loop.
    def kl(self, p_params: th.Tensor, q_params: th.Tensor) -> th.Tensor:
        p_loc, p_scale = p_params.chunk(2, dim=-1)
        q_loc, q_scale = q_params.chunk(2, dim=-1)
        variance_ratio = (p_scale / q_scale) ** 2
        return 0.5 * (variance_ratio + ((p_loc - q_loc) / q_scale) ** 2 - 1.0 - th.log(variance_ratio)).sum(dim=-1)

    def anchors(self, old_params, new_params, actions, n_anchor_actions, generator) -> AnchorSet:
        # Monte Carlo: K anchors a'_k = mu_old + sigma_old * noise ~ pi_old(.|s); the sampling
        # already weights by pi_old. In log N(a'; mu, sigma) = -((a' - mu) / sigma)^2 / 2 - log sigma
        # - log(2 pi) / 2 the constant cancels in the ratio, and under pi_old the first term is -noise^2 / 2.
        old_loc, old_scale = old_params.chunk(2, dim=-1)
        new_loc, new_scale = new_params.chunk(2, dim=-1)
        noise = th.randn((n_anchor_actions, *old_loc.shape), generator=generator, device=old_loc.device, dtype=old_loc.dtype)
        anchor_actions = old_loc + old_scale * noise  # (K, batch, action_dim)
        log_ratio_per_dim = (
            0.5 * noise**2 - 0.5 * ((anchor_actions - new_loc) / new_scale) ** 2 + th.log(old_scale / new_scale)
        )
        log_ratio = log_ratio_per_dim.sum(dim=-1).T  # (batch, K)
        weight = th.full_like(log_ratio, 1.0 / n_anchor_actions)
        return AnchorSet(_clamp_log_ratio(log_ratio), weight, th.ones_like(log_ratio, dtype=th.bool))

    def parity_anchors(self, old_params, new_params, actions, old_log_prob, log_ratio, n_anchor_actions, generator):
        # The public code penalises the *executed* action, weighted by its old joint density.
        log_ratio = _clamp_log_ratio(log_ratio).unsqueeze(1)
        weight = th.exp(old_log_prob).unsqueeze(1)
        return AnchorSet(log_ratio, weight, th.ones_like(log_ratio, dtype=th.bool))


class CategoricalMath(DistributionMath):
    """
    ``Discrete(n)`` (``nvec=[n]``) and ``MultiDiscrete(nvec)`` policies.

    Parameters are the normalised logits of every sub-space, concatenated. The
    anchor penalty of a ``MultiDiscrete`` space is the sum of its sub-spaces'.

    :param nvec: the number of actions of each sub-space
    """

    def __init__(self, nvec: list[int]):
        super().__init__(int(sum(nvec)))
        self.nvec = [int(n) for n in nvec]
        self.offsets = np.cumsum([0, *self.nvec[:-1]])

    def params(self, distribution: Distribution) -> th.Tensor:
        torch_distribution = distribution.distribution
        if isinstance(torch_distribution, list):  # MultiCategoricalDistribution
            return th.cat([categorical.logits for categorical in torch_distribution], dim=1)
        return torch_distribution.logits

    def log_probs(self, params: th.Tensor) -> th.Tensor:
        """Log-probabilities of every action of every sub-space, ``(batch, sum(nvec))``."""
        return th.cat([th.log_softmax(logits, dim=1) for logits in th.split(params, self.nvec, dim=1)], dim=1)

    def kl(self, p_params: th.Tensor, q_params: th.Tensor) -> th.Tensor:
        log_p, log_q = self.log_probs(p_params), self.log_probs(q_params)
        return (log_p.exp() * (log_p - log_q)).sum(dim=1)

    def action_index(self, actions: th.Tensor) -> th.Tensor:
        """Column of each sub-action in the concatenated parameters, ``(batch, len(nvec))``."""
        actions = actions.long().reshape(len(actions), len(self.nvec))
        return actions + th.as_tensor(self.offsets, device=actions.device)

    def executed_mask(self, actions: th.Tensor) -> th.Tensor:
        """``(batch, sum(nvec))``, ``True`` at the executed action of each sub-space."""
        index = self.action_index(actions)
        return th.zeros((len(index), self.param_dim), dtype=th.bool, device=index.device).scatter_(1, index, True)

    def anchors(self, old_params, new_params, actions, n_anchor_actions, generator) -> AnchorSet:
        # Exact expectation over every unsampled action: weight pi_old(a'|s), executed action excluded.
        old_log_probs = self.log_probs(old_params)
        log_ratio = _clamp_log_ratio(self.log_probs(new_params) - old_log_probs)
        executed = self.executed_mask(actions)
        return AnchorSet(log_ratio, old_log_probs.exp().masked_fill(executed, 0.0), ~executed)

    def parity_anchors(self, old_params, new_params, actions, old_log_prob, log_ratio, n_anchor_actions, generator):
        # The public code: K unsampled actions per sub-space, uniformly at random,
        # each weighted by pi_old(a'|s) / K.
        old_log_probs = self.log_probs(old_params)
        all_log_ratios = _clamp_log_ratio(self.log_probs(new_params) - old_log_probs)
        executed = self.action_index(actions)  # (batch, n_sub)
        offsets = th.as_tensor(self.offsets, device=executed.device)
        n_unsampled = th.as_tensor(self.nvec, device=executed.device) - 1  # per sub-space
        uniform = th.rand((*executed.shape, n_anchor_actions), generator=generator, device=executed.device)
        draws = (uniform * n_unsampled.unsqueeze(1)).long()  # in [0, n_i - 2]
        anchors = draws + offsets.unsqueeze(1)
        anchors = anchors + (anchors >= executed.unsqueeze(2)).long()  # skip the executed action
        has_anchor = (n_unsampled > 0).unsqueeze(1).expand_as(anchors)
        anchors = th.where(has_anchor, anchors, executed.unsqueeze(2)).flatten(1)  # (batch, n_sub * K)
        mask = has_anchor.flatten(1).expand(len(anchors), -1)
        weight = old_log_probs.exp().gather(1, anchors) / n_anchor_actions * mask
        return AnchorSet(all_log_ratios.gather(1, anchors), weight, mask)

    # Sets of actions (the safe manifold of support-anchored APO, spec section 5)

    def top_k_mask(self, params: th.Tensor, k: int) -> th.Tensor:
        """
        The ``k`` most probable actions of each sub-space, ``(batch, sum(nvec))``.

        ``k`` is capped at ``n_i - 1`` in a sub-space of ``n_i`` actions, so that
        the set never holds the whole sub-space (whose mass is always 1). Ties
        are broken as ``torch.topk`` breaks them.

        :param params: the distribution parameters whose probabilities rank the actions
        :param k: the number of actions to keep per sub-space (at least 1)
        :return: ``True`` at the kept actions
        """
        masks = []
        for logits, n in zip(th.split(params, self.nvec, dim=1), self.nvec):
            mask = th.zeros_like(logits, dtype=th.bool)
            k_sub = min(int(k), n - 1)
            if k_sub > 0:  # logits rank the actions as the probabilities do
                mask.scatter_(1, logits.topk(k_sub, dim=1).indices, True)
            masks.append(mask)
        return th.cat(masks, dim=1)

    def log_mass(self, log_probs: th.Tensor, mask: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        The log-probability of a set of actions in each sub-space.

        :param log_probs: ``(batch, sum(nvec))`` log-probabilities, as :meth:`log_probs` returns them
        :param mask: ``(batch, sum(nvec))``, ``True`` at the actions of the set
        :return: ``(log_mass, nonempty)``, both ``(batch, len(nvec))``: ``log pi(S_i|s)`` of
            each sub-space's set ``S_i``, and whether ``S_i`` has an action. Where it has
            none, ``log_mass`` is a finite placeholder (0) without gradient, never ``-inf``,
            so that masking it out afterwards cannot leak NaN into a gradient.
        """
        log_masses, nonempty = [], []
        for sub_log_probs, sub_mask in zip(th.split(log_probs, self.nvec, dim=1), th.split(mask, self.nvec, dim=1)):
            has_action = sub_mask.any(dim=1)
            keep = sub_mask | ~has_action.unsqueeze(1)  # an empty row keeps everything: finite, replaced below
            masked = sub_log_probs.masked_fill(~keep, -th.inf)
            placeholder = th.zeros_like(has_action, dtype=log_probs.dtype)
            log_masses.append(th.where(has_action, th.logsumexp(masked, dim=1), placeholder))
            nonempty.append(has_action)
        return th.stack(log_masses, dim=1), th.stack(nonempty, dim=1)

    def mass_log_ratio(self, old_params: th.Tensor, new_params: th.Tensor, mask: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        ``log(pi(S_i|s) / pi_old(S_i|s))`` of a set of actions in each sub-space,
        clamped to ``[-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT]``.

        :param old_params: parameters of ``pi_old`` (no gradient)
        :param new_params: parameters of ``pi`` (with gradient)
        :param mask: ``(batch, sum(nvec))``, ``True`` at the actions of the set
        :return: ``(log_ratio, nonempty)``, both ``(batch, len(nvec))``; ``log_ratio`` is 0
            (without gradient) where the sub-space's set is empty
        """
        new_log_mass, nonempty = self.log_mass(self.log_probs(new_params), mask)
        old_log_mass, _ = self.log_mass(self.log_probs(old_params), mask)
        return _clamp_log_ratio(new_log_mass - old_log_mass), nonempty


class BernoulliMath(DistributionMath):
    """
    ``MultiBinary(n)`` policies: each bit is its own distribution, and its
    unsampled value is the flipped bit. Parameters are the logits of each bit.
    """

    def params(self, distribution: Distribution) -> th.Tensor:
        return distribution.distribution.logits

    @staticmethod
    def log_prob_of(bits: th.Tensor, logits: th.Tensor) -> th.Tensor:
        """``log p(bit)`` per bit, ``(batch, n)``."""
        return bits * th.nn.functional.logsigmoid(logits) + (1.0 - bits) * th.nn.functional.logsigmoid(-logits)

    def kl(self, p_params: th.Tensor, q_params: th.Tensor) -> th.Tensor:
        log_p1, log_q1 = self.log_prob_of(th.ones_like(p_params), p_params), self.log_prob_of(1.0, q_params)
        log_p0, log_q0 = self.log_prob_of(th.zeros_like(p_params), p_params), self.log_prob_of(0.0, q_params)
        return (log_p1.exp() * (log_p1 - log_q1) + log_p0.exp() * (log_p0 - log_q0)).sum(dim=1)

    def anchors(self, old_params, new_params, actions, n_anchor_actions, generator) -> AnchorSet:
        flipped = 1.0 - actions.reshape(old_params.shape).to(old_params.dtype)
        old_log_prob = self.log_prob_of(flipped, old_params)
        log_ratio = _clamp_log_ratio(self.log_prob_of(flipped, new_params) - old_log_prob)
        return AnchorSet(log_ratio, old_log_prob.exp(), th.ones_like(log_ratio, dtype=th.bool))

    def parity_anchors(self, old_params, new_params, actions, old_log_prob, log_ratio, n_anchor_actions, generator):
        # With one unsampled value per bit, the exact sum is what any sampling estimates.
        return self.anchors(old_params, new_params, actions, n_anchor_actions, generator)


SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def distribution_math(action_space: spaces.Space) -> DistributionMath:
    """
    The distribution maths of the policies SB3 builds for ``action_space``.

    :raises ValueError: for an action space without an SB3 on-policy distribution
    """
    if isinstance(action_space, spaces.Box):
        return DiagGaussianMath(int(np.prod(action_space.shape)))
    if isinstance(action_space, spaces.Discrete):
        return CategoricalMath([int(action_space.n)])
    if isinstance(action_space, spaces.MultiDiscrete):
        return CategoricalMath([int(n) for n in np.asarray(action_space.nvec).flatten()])
    if isinstance(action_space, spaces.MultiBinary):
        return BernoulliMath(int(np.prod(action_space.shape)))
    supported = ", ".join(space.__name__ for space in SUPPORTED_ACTION_SPACES)
    raise ValueError(f"Unsupported action space {action_space!r}: the accepted action spaces are {supported}.")
