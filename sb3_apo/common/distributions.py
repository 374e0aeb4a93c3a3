"""
The maths that depends on the type of the action distribution, in one place.

Every PPO-family algorithm of this package needs the same few things from the
policy's distribution, whatever the action space:

- its parameters, as one flat tensor per state, so that the rollout buffer can
  keep the distribution that collected the data (``pi_old``);
- the exact ``KL(p || q)`` between two such parameter tensors;
- anchor actions: actions other than the executed one, each with its
  log-ratio ``log pi(a'|s) - log pi_old(a'|s)`` and its weight in the anchor
  penalty ``1/2 * sum_j w_j * (r_j - 1)^2`` (see :class:`AnchorSet`);
- the exact anchor divergence ``1/2 * E_{a' ~ pi_old, a' != a}[(r(a') - 1)^2]``
  per state (closed form for Gaussians), which APO's ``anchor_estimator="exact"``
  minimises and every algorithm logs as ``train/anchor_divergence``.

One class per distribution family implements these; the algorithms never
branch on the action space. What only one algorithm uses lives next to it:
the public APO code's "parity" loss in :mod:`sb3_apo.apo.parity`, SupportAPO's
top-K masses in :mod:`sb3_apo.support_apo.manifold`.
"""

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from torch.autograd.function import once_differentiable
from torch.distributions import Bernoulli, Categorical, Normal

#: Log-ratios of anchor actions are clamped to ``[-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT]``
#: before ``exp``: ``exp(20)**2`` is about ``2e17``, far from float32's overflow,
#: so one far-out anchor can never turn the loss into inf or NaN.
LOG_RATIO_LIMIT = 20.0

#: The closed-form Gaussian anchor divergence is used as it is while, in every dimension,
#: the variance ratio ``q = sigma^2 / sigma_old^2`` stays at most ``2 - EXACT_VARIANCE_MARGIN``;
#: beyond, where the true value grows to infinity at ``q = 2``, its factor ``2 - q`` is continued
#: by a positive, decreasing exponential (see :meth:`DiagGaussianMath.exact_anchor_divergence`).
EXACT_VARIANCE_MARGIN = 0.1
#: ``log E_{pi_old}[r^2]`` above this is continued linearly, so that ``chi2 = E[r^2] - 1``
#: stays below about ``exp(20) = 5e8`` per unit of excess and its gradient stays finite.
EXACT_LOG_MOMENT_LIMIT = LOG_RATIO_LIMIT


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

    def penalty_per_state(self) -> th.Tensor:
        """``1/2 * sum_j w_j(s) * (r_j(s) - 1)^2`` of each state, ``(batch,)``."""
        return 0.5 * (self.weight * (self.ratio - 1.0) ** 2).sum(dim=1)

    def chi2_penalty(self) -> th.Tensor:
        """``mean_s 1/2 * sum_j w_j(s) * (r_j(s) - 1)^2``, a scalar."""
        return self.penalty_per_state().mean()


def clamp_log_ratio(log_ratio: th.Tensor) -> th.Tensor:
    """Clamp log-ratios to ``[-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT]`` before they are exponentiated."""
    return log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)


def logits_of(torch_distribution: object) -> th.Tensor:
    """The logits of the torch ``Categorical`` or ``Bernoulli`` that SB3's discrete distributions build."""
    assert isinstance(torch_distribution, (Categorical, Bernoulli)), f"got {type(torch_distribution).__name__}"
    return torch_distribution.logits


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

    def distribution_actions(self, actions: th.Tensor) -> th.Tensor:
        """
        The actions as the rollout buffer stores them (float, ``(batch, *action_shape)``), in the
        form the SB3 distribution's ``log_prob`` takes them; most families take them as they are.
        """
        return actions

    def kl_to(self, p_params: th.Tensor, distribution: Distribution) -> th.Tensor:
        """
        ``kl(p_params, params(distribution))``: the exact ``KL(p || q)`` per state to an SB3
        distribution ``q``, which a family may compute without concatenating ``q``'s parameters.
        """
        return self.kl(p_params, self.params(distribution))

    @abstractmethod
    def anchors(
        self,
        old_params: th.Tensor,
        new_params: th.Tensor,
        actions: th.Tensor,
        n_anchor_actions: int,
        generator: th.Generator | None,
    ) -> AnchorSet:
        """
        The anchor set of the chi-square penalty, so that ``chi2_penalty()`` is
        ``mean_s 1/2 * E_{a' ~ pi_old(.|s), a' != a}[(r(a'|s) - 1)^2]``.

        :param old_params: parameters of ``pi_old`` (no gradient)
        :param new_params: parameters of ``pi`` (with gradient)
        :param actions: the executed actions, as stored in the rollout buffer
        :param n_anchor_actions: K, for the families that sample anchors
        :param generator: the random generator used to draw anchors (unused by the families that draw none)
        """

    def anchor_penalty(
        self,
        old_params: th.Tensor,
        distribution: Distribution,
        actions: th.Tensor,
        n_anchor_actions: int,
        generator: th.Generator | None,
    ) -> th.Tensor:
        """
        APO's anchor penalty on a minibatch, the scalar ``anchors(...).chi2_penalty()`` with ``pi``'s
        parameters ``params(distribution)``. It takes ``pi``'s SB3 distribution rather than its flat
        parameters so that a family can compute the penalty and its gradient faster, from the same
        random draws and without concatenating the parameters (other arguments: :meth:`anchors`).

        :param distribution: ``pi``'s SB3 distribution on the minibatch's states (with gradient)
        """
        new_params = self.params(distribution)
        return self.anchors(old_params, new_params, actions, n_anchor_actions, generator).chi2_penalty()

    @abstractmethod
    def exact_anchor_divergence(self, old_params: th.Tensor, new_params: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        The exact ``1/2 * E_{a' ~ pi_old(.|s), a' != a}[(r(a'|s) - 1)^2]`` of each state, ``(batch,)``:
        half the chi-square divergence ``chi2(pi || pi_old)`` restricted to the unsampled actions.

        :param old_params: parameters of ``pi_old``
        :param new_params: parameters of ``pi`` (the gradient flows through them)
        :param actions: the executed actions, as stored in the rollout buffer
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

    @staticmethod
    def torch_normal(distribution: Distribution) -> Normal:
        """The torch ``Normal`` of an SB3 Gaussian distribution (diagonal, or gSDE's)."""
        normal = distribution.distribution
        assert isinstance(normal, Normal), f"a Gaussian distribution was expected, got {type(distribution).__name__}"
        return normal

    def params(self, distribution: Distribution) -> th.Tensor:
        normal = self.torch_normal(distribution)
        return th.cat([normal.loc, normal.scale], dim=-1)

    # Closed forms on the parameters: no torch.distributions objects (and their argument
    # validation) in the minibatch loop.
    @staticmethod
    def _kl(p_loc: th.Tensor, p_scale: th.Tensor, q_loc: th.Tensor, q_scale: th.Tensor) -> th.Tensor:
        variance_ratio = (p_scale / q_scale) ** 2
        return 0.5 * (variance_ratio + ((p_loc - q_loc) / q_scale) ** 2 - 1.0 - th.log(variance_ratio)).sum(dim=-1)

    def kl(self, p_params: th.Tensor, q_params: th.Tensor) -> th.Tensor:
        return self._kl(*p_params.chunk(2, dim=-1), *q_params.chunk(2, dim=-1))

    def kl_to(self, p_params: th.Tensor, distribution: Distribution) -> th.Tensor:
        normal = self.torch_normal(distribution)
        p_loc, p_scale = p_params.chunk(2, dim=-1)
        return self._kl(p_loc, p_scale, normal.loc, normal.scale)

    @staticmethod
    def _draw_noise(old_loc: th.Tensor, n_anchor_actions: int, generator: th.Generator | None) -> th.Tensor:
        """``(K, batch, action_dim)`` standard normal draws: the anchors are ``mu_old + sigma_old * noise``."""
        return th.randn((n_anchor_actions, *old_loc.shape), generator=generator, device=old_loc.device, dtype=old_loc.dtype)

    def anchors(self, old_params, new_params, actions, n_anchor_actions, generator) -> AnchorSet:
        # Monte Carlo: K anchors a'_k = mu_old + sigma_old * noise ~ pi_old(.|s); the sampling
        # already weights by pi_old. In log N(a'; mu, sigma) = -((a' - mu) / sigma)^2 / 2 - log sigma
        # - log(2 pi) / 2 the constant cancels in the ratio, and under pi_old the first term is -noise^2 / 2.
        old_loc, old_scale = old_params.chunk(2, dim=-1)
        new_loc, new_scale = new_params.chunk(2, dim=-1)
        noise = self._draw_noise(old_loc, n_anchor_actions, generator)
        anchor_actions = old_loc + old_scale * noise  # (K, batch, action_dim)
        log_ratio_per_dim = (
            0.5 * noise**2 - 0.5 * ((anchor_actions - new_loc) / new_scale) ** 2 + th.log(old_scale / new_scale)
        )
        log_ratio = log_ratio_per_dim.sum(dim=-1).T  # (batch, K)
        weight = th.full_like(log_ratio, 1.0 / n_anchor_actions)
        return AnchorSet(clamp_log_ratio(log_ratio), weight, th.ones_like(log_ratio, dtype=th.bool))

    def anchor_penalty(self, old_params, distribution, actions, n_anchor_actions, generator) -> th.Tensor:
        if old_params.requires_grad:  # the fused form differentiates through pi only
            return super().anchor_penalty(old_params, distribution, actions, n_anchor_actions, generator)
        normal = self.torch_normal(distribution)
        noise = self._draw_noise(normal.loc, n_anchor_actions, generator)  # the draws of anchors()
        return _SampledGaussianAnchorPenalty.apply(normal.loc, normal.scale, old_params, noise)

    def exact_anchor_divergence(self, old_params, new_params, actions) -> th.Tensor:
        # Per dimension, with q = sigma^2 / sigma_old^2 and z = (mu - mu_old) / sigma_old (``docs/algorithms.md``, "APO"):
        #   log E_{pi_old}[r^2] = -1/2 log q - 1/2 log(2 - q) + z^2 / (2 - q),   finite only for q < 2.
        # Past q = 2 - m (m = EXACT_VARIANCE_MARGIN) the factor 2 - q is replaced by m * exp(-(q - 2 + m) / m):
        # the same value and slope at the joint, positive, decreasing, so the penalty stays finite and keeps
        # growing with sigma (its gradient points back to pi_old). The arguments of exp are clamped so
        # that no unused branch can overflow and leak NaN into the gradient.
        old_loc, old_scale = old_params.chunk(2, dim=-1)
        new_loc, new_scale = new_params.chunk(2, dim=-1)
        log_q = 2.0 * (th.log(new_scale) - th.log(old_scale))
        q = th.exp(log_q)
        joint = 2.0 - EXACT_VARIANCE_MARGIN
        excess = (q - joint).clamp(min=0.0)
        gap = th.where(q <= joint, 2.0 - q, EXACT_VARIANCE_MARGIN * th.exp(-excess / EXACT_VARIANCE_MARGIN))
        z = (new_loc - old_loc) / old_scale
        log_moment = (-0.5 * log_q - 0.5 * th.log(gap) + z**2 / gap).sum(dim=-1)
        # chi2 = E[r^2] - 1, continued linearly in log E[r^2] above EXACT_LOG_MOMENT_LIMIT (value and slope match).
        # The two pieces are clamped apart: written as expm1(capped) + e^limit * (log_moment - capped), the
        # gradient below the limit would be e^limit - e^limit + e^log_moment, which float32 rounds to 0.
        capped = log_moment.clamp(max=EXACT_LOG_MOMENT_LIMIT)
        excess = (log_moment - EXACT_LOG_MOMENT_LIMIT).clamp(min=0.0)
        chi2 = th.expm1(capped) + math.exp(EXACT_LOG_MOMENT_LIMIT) * excess
        return 0.5 * chi2


# At minibatch sizes (hundreds of states, a few action dimensions) a torch op costs its overhead,
# not its arithmetic, and each differentiable op adds a node that the backward pass walks. APO's
# sampled anchor penalty, about thirty such ops, is therefore one autograd Function with its
# gradient written out, fed with pi's loc and scale as the distribution holds them (no
# concatenation, whose slices the backward pass would walk too); results/speed/micro/loop_costs.txt
# measures it in an update's minibatch. The same treatment of the Gaussian KL saved nothing measurable, so it
# stays a plain closed form. tests/test_core_maths.py checks the Function against autograd (gradcheck).


class _SampledGaussianAnchorPenalty(th.autograd.Function):
    """
    APO's Monte Carlo anchor penalty ``P = 1/2 * mean_{k,s} (r_k(s) - 1)^2`` over the anchors
    ``a'_k = mu_old + sigma_old * noise_k``, the gradient flowing to ``pi``'s ``mu`` and ``sigma`` only.
    With ``u = (a' - mu) / sigma`` (the anchor standardised under ``pi``) and ``N = K * batch``::

        log r = sum_d (noise^2 - u^2) / 2 + log(sigma_old / sigma)      (clamped to +-LOG_RATIO_LIMIT)
        dP/dlog r = r * (r - 1) / N      (0 where the clamp is active, as for clamp())
        dlog r/dmu = u / sigma           dlog r/dsigma = (u^2 - 1) / sigma
    """

    @staticmethod
    def forward(ctx: Any, loc: th.Tensor, scale: th.Tensor, old_params: th.Tensor, noise: th.Tensor) -> th.Tensor:
        old_loc, old_scale = old_params.chunk(2, dim=-1)
        inverse_scale = scale.reciprocal()
        standardised = th.addcmul(old_loc - loc, old_scale, noise).mul_(inverse_scale)  # u, (K, batch, action_dim)
        log_scale_ratio = th.log(old_scale * inverse_scale).sum(dim=-1)  # (batch,), the same for every anchor
        log_ratio = (noise.square() - standardised.square()).sum(dim=-1).mul_(0.5).add_(log_scale_ratio)  # (K, batch)
        clamped = clamp_log_ratio(log_ratio)
        ratio = th.exp(clamped)
        ratio_minus_one = ratio - 1.0
        # dP/dlog r without its 1/N, zero where the clamp is active
        ctx.save_for_backward(inverse_scale, standardised, ratio * ratio_minus_one * (clamped == log_ratio))
        return 0.5 * ratio_minus_one.square().mean()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_penalty: th.Tensor) -> tuple[th.Tensor, th.Tensor, None, None]:
        inverse_scale, standardised, grad_log_ratio = ctx.saved_tensors
        grad_log_ratio = (grad_log_ratio * (grad_penalty / grad_log_ratio.numel())).unsqueeze(-1)
        grad_u = grad_log_ratio * standardised  # dP/dlog r * u, (K, batch, action_dim)
        grad_loc = grad_u.sum(dim=0).mul_(inverse_scale)
        grad_scale = (grad_u * standardised - grad_log_ratio).sum(dim=0).mul_(inverse_scale)
        return grad_loc, grad_scale, None, None


class CategoricalMath(DistributionMath):
    """
    ``Discrete(n)`` (``nvec=[n]``) and ``MultiDiscrete(nvec)`` policies.

    Parameters are the normalised logits of every sub-space, concatenated. The
    anchor penalty of a ``MultiDiscrete`` space is the sum of its sub-spaces'.

    :param nvec: the number of actions of each sub-space
    :param discrete: the policy's distribution is SB3's ``CategoricalDistribution`` (a ``Discrete``
        space, ``nvec=[n]``), whose ``log_prob`` takes the actions as one flat vector of integers
    """

    def __init__(self, nvec: list[int], discrete: bool = False):
        super().__init__(int(sum(nvec)))
        self.nvec = [int(n) for n in nvec]
        self.offsets = np.cumsum([0, *self.nvec[:-1]])
        self.discrete = discrete

    def distribution_actions(self, actions: th.Tensor) -> th.Tensor:
        return actions.long().flatten() if self.discrete else actions

    def params(self, distribution: Distribution) -> th.Tensor:
        torch_distribution = distribution.distribution
        if isinstance(torch_distribution, list):  # MultiCategoricalDistribution
            return th.cat([logits_of(categorical) for categorical in torch_distribution], dim=1)
        return logits_of(torch_distribution)

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
        log_ratio = clamp_log_ratio(self.log_probs(new_params) - old_log_probs)
        executed = self.executed_mask(actions)
        return AnchorSet(log_ratio, old_log_probs.exp().masked_fill(executed, 0.0), ~executed)

    def exact_anchor_divergence(self, old_params, new_params, actions) -> th.Tensor:
        return self.anchors(old_params, new_params, actions, 1, None).penalty_per_state()  # exact: draws nothing


class BernoulliMath(DistributionMath):
    """
    ``MultiBinary(n)`` policies: each bit is its own distribution, and its
    unsampled value is the flipped bit. Parameters are the logits of each bit.
    """

    def params(self, distribution: Distribution) -> th.Tensor:
        return logits_of(distribution.distribution)

    @staticmethod
    def log_prob_of(bits: th.Tensor | float, logits: th.Tensor) -> th.Tensor:
        """``log p(bit)`` per bit, ``(batch, n)``."""
        return bits * th.nn.functional.logsigmoid(logits) + (1.0 - bits) * th.nn.functional.logsigmoid(-logits)

    def kl(self, p_params: th.Tensor, q_params: th.Tensor) -> th.Tensor:
        log_p1, log_q1 = self.log_prob_of(th.ones_like(p_params), p_params), self.log_prob_of(1.0, q_params)
        log_p0, log_q0 = self.log_prob_of(th.zeros_like(p_params), p_params), self.log_prob_of(0.0, q_params)
        return (log_p1.exp() * (log_p1 - log_q1) + log_p0.exp() * (log_p0 - log_q0)).sum(dim=1)

    def anchors(self, old_params, new_params, actions, n_anchor_actions, generator) -> AnchorSet:
        flipped = 1.0 - actions.reshape(old_params.shape).to(old_params.dtype)
        old_log_prob = self.log_prob_of(flipped, old_params)
        log_ratio = clamp_log_ratio(self.log_prob_of(flipped, new_params) - old_log_prob)
        return AnchorSet(log_ratio, old_log_prob.exp(), th.ones_like(log_ratio, dtype=th.bool))

    def exact_anchor_divergence(self, old_params, new_params, actions) -> th.Tensor:
        return self.anchors(old_params, new_params, actions, 1, None).penalty_per_state()  # exact: draws nothing


SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def distribution_math(action_space: spaces.Space) -> DistributionMath:
    """
    The distribution maths of the policies SB3 builds for ``action_space``.

    :raises ValueError: for an action space without an SB3 on-policy distribution
    """
    if isinstance(action_space, spaces.Box):
        return DiagGaussianMath(int(np.prod(action_space.shape)))
    if isinstance(action_space, spaces.Discrete):
        return CategoricalMath([int(action_space.n)], discrete=True)
    if isinstance(action_space, spaces.MultiDiscrete):
        return CategoricalMath([int(n) for n in np.asarray(action_space.nvec).flatten()])
    if isinstance(action_space, spaces.MultiBinary):
        return BernoulliMath(int(np.prod(action_space.shape)))
    supported = ", ".join(space.__name__ for space in SUPPORTED_ACTION_SPACES)
    raise ValueError(f"Unsupported action space {action_space!r}: the accepted action spaces are {supported}.")
