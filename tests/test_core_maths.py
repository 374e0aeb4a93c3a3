"""The objectives and the distribution maths against hand-computed values."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import make_proba_distribution
from torch.distributions import Normal

from sb3_apo.apo.parity import parity_anchors
from sb3_apo.common.adaptive import adapt_penalty_coef
from sb3_apo.common.distributions import (
    LOG_RATIO_LIMIT,
    BernoulliMath,
    CategoricalMath,
    DiagGaussianMath,
    _SampledGaussianAnchorPenalty,
    distribution_math,
)
from sb3_apo.common.on_policy import clipped_surrogate


def generator(seed: int = 0) -> th.Generator:
    return th.Generator().manual_seed(seed)


def test_clipped_surrogate_by_hand():
    ratio = th.tensor([0.5, 1.1, 1.5, 0.7])
    advantages = th.tensor([1.0, -2.0, 3.0, -1.0])
    # min(r A, clip(r) A): 0.5*1 = 0.5; min(-2.2, -2.2) = -2.2; min(4.5, 3.6) = 3.6; min(-0.7, -0.8) = -0.8
    expected = -(0.5 - 2.2 + 3.6 - 0.8) / 4
    assert clipped_surrogate(ratio, advantages, 0.2).item() == pytest.approx(expected)


def test_apo_discrete_anchor_penalty_is_the_exact_sum():
    old_logits = th.tensor([[0.0, 1.0, -1.0, 0.5], [2.0, 0.0, 0.0, -2.0]])
    new_logits = th.tensor([[0.3, 0.7, -1.2, 0.1], [1.0, 0.5, 0.2, -1.0]], requires_grad=True)
    actions = th.tensor([[1.0], [3.0]])
    math_ = CategoricalMath([4])
    penalty = math_.anchors(old_logits, new_logits, actions, 2, generator()).chi2_penalty()

    p_old, p_new = th.softmax(old_logits, 1), th.softmax(new_logits, 1)
    expected = 0.0
    for state, executed in enumerate([1, 3]):
        for action in range(4):
            if action != executed:
                ratio = p_new[state, action] / p_old[state, action]
                expected = expected + 0.5 * p_old[state, action] * (ratio - 1) ** 2
    expected = expected / 2
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    # and the gradients agree too
    (grad,) = th.autograd.grad(penalty, new_logits)
    (expected_grad,) = th.autograd.grad(expected, new_logits)
    assert th.allclose(grad, expected_grad, atol=1e-6)


def test_multidiscrete_penalty_is_the_sum_over_sub_spaces():
    nvec = [3, 2]
    old = th.randn(5, 5, generator=generator(1))
    new = th.randn(5, 5, generator=generator(2))
    actions = th.tensor([[0, 1], [2, 0], [1, 1], [0, 0], [2, 1]], dtype=th.float32)
    joint = CategoricalMath(nvec).anchors(old, new, actions, 2, generator()).chi2_penalty()
    parts = [
        CategoricalMath([3]).anchors(old[:, :3], new[:, :3], actions[:, :1], 2, generator()).chi2_penalty(),
        CategoricalMath([2]).anchors(old[:, 3:], new[:, 3:], actions[:, 1:], 2, generator()).chi2_penalty(),
    ]
    assert joint.item() == pytest.approx(sum(parts).item(), rel=1e-6)


def test_multibinary_anchor_is_the_flipped_bit():
    old, new = th.tensor([[0.0, 2.0]]), th.tensor([[1.0, 1.0]])
    actions = th.tensor([[1.0, 0.0]])
    anchors = BernoulliMath(2).anchors(old, new, actions, 2, generator())
    # bit 0 executed 1 -> anchor 0; bit 1 executed 0 -> anchor 1
    p_old_anchor = th.tensor([1 - th.sigmoid(th.tensor(0.0)), th.sigmoid(th.tensor(2.0))])
    p_new_anchor = th.tensor([1 - th.sigmoid(th.tensor(1.0)), th.sigmoid(th.tensor(1.0))])
    assert th.allclose(anchors.weight[0], p_old_anchor)
    assert th.allclose(anchors.ratio[0], p_new_anchor / p_old_anchor)


def gaussian_chi2(mean_new, std_new, mean_old, std_old) -> float:
    """chi2(pi || pi_old) = E_old[(r - 1)^2] between diagonal Gaussians, in closed form."""
    product = 1.0
    for m1, s1, m0, s0 in zip(mean_new, std_new, mean_old, std_old):
        a = 1 / s1**2 - 1 / (2 * s0**2)
        b = 2 * m1 / s1**2 - m0 / s0**2
        c = -(m1**2) / s1**2 + m0**2 / (2 * s0**2)
        # p^2 / q = s0 / (sqrt(2 pi) s1^2) * exp(-a x^2 + b x + c), a Gaussian integral
        product *= s0 / (math.sqrt(2 * math.pi) * s1**2) * math.sqrt(math.pi / a) * math.exp(b**2 / (4 * a) + c)
    return product - 1.0


def test_closed_form_chi2_matches_numerical_integration():
    x = np.linspace(-30, 30, 600_001)
    p = np.exp(-((x - 0.3) ** 2) / (2 * 0.8**2)) / (math.sqrt(2 * math.pi) * 0.8)
    q = np.exp(-((x + 0.1) ** 2) / (2 * 1.0**2)) / (math.sqrt(2 * math.pi) * 1.0)
    numerical = np.trapezoid(p**2 / q, x) - 1
    assert gaussian_chi2([0.3], [0.8], [-0.1], [1.0]) == pytest.approx(numerical, rel=1e-6)


def test_apo_box_monte_carlo_converges_to_the_analytic_chi2():
    mean_old, std_old = [0.0, 0.5, -0.2], [1.0, 0.7, 0.4]
    mean_new, std_new = [0.1, 0.45, -0.1], [0.9, 0.75, 0.38]
    old = th.tensor([mean_old + std_old], dtype=th.float64)
    new = th.tensor([mean_new + std_new], dtype=th.float64)
    exact = gaussian_chi2(mean_new, std_new, mean_old, std_old)
    anchors = DiagGaussianMath(3).anchors(old, new, None, 400_000, generator(3))
    # chi2_penalty is 1/2 E[(r - 1)^2]; the Monte Carlo standard error is ~0.3% here
    assert 2 * anchors.chi2_penalty().item() == pytest.approx(exact, rel=0.02)
    # with few anchors it is unbiased: the mean over many minibatches converges too
    few = [2 * DiagGaussianMath(3).anchors(old, new, None, 2, generator(s)).chi2_penalty().item() for s in range(20_000)]
    assert np.mean(few) == pytest.approx(exact, rel=0.05)


def gaussian_policy(loc: th.Tensor, scale: th.Tensor) -> SimpleNamespace:
    """What the anchor penalty reads of an SB3 diagonal-Gaussian distribution: its torch ``Normal``."""
    return SimpleNamespace(distribution=Normal(loc, scale, validate_args=False))


def test_fused_gaussian_anchor_penalty_matches_the_anchor_set_and_autograd():
    # The loss's one-node form (DiagGaussianMath.anchor_penalty) against the AnchorSet the diagnostics use,
    # on the same draws: equal values and gradients, also where far-out anchors hit the log-ratio clamp.
    math_ = DiagGaussianMath(3)
    old = th.cat([th.randn(64, 3, generator=generator(1)), 0.5 + th.rand(64, 3, generator=generator(2))], dim=1)
    new = (old + 0.2 * th.randn(64, 6, generator=generator(3))).abs()
    new[0, 3:] = 1e-3  # a state whose new scale is tiny: its anchors' log-ratios are clamped
    loc, scale = (half.clone().requires_grad_() for half in new.chunk(2, dim=1))
    fused = math_.anchor_penalty(old, gaussian_policy(loc, scale), None, 4, generator(7))
    fused_grads = th.autograd.grad(fused, (loc, scale))
    reference = math_.anchors(old, th.cat([loc, scale], dim=1), None, 4, generator(7)).chi2_penalty()
    reference_grads = th.autograd.grad(reference, (loc, scale))
    assert fused.item() == pytest.approx(reference.item(), rel=1e-5)
    for fused_grad, reference_grad in zip(fused_grads, reference_grads, strict=True):
        assert th.allclose(fused_grad, reference_grad, rtol=1e-4, atol=1e-7)
        assert (fused_grad[0] == 0).all()  # every anchor of state 0 is clamped, as clamp() has no gradient there
        assert (fused_grad[1:] != 0).any()
    # in float64, against finite differences (unclamped: the clamp is not differentiable at its edges)
    old64 = old.double()
    loc64, scale64 = (half.requires_grad_() for half in (old64 + 0.1).chunk(2, dim=1))
    noise = th.randn((3, 64, 3), generator=generator(5), dtype=th.float64)
    assert th.autograd.gradcheck(
        lambda loc_, scale_: _SampledGaussianAnchorPenalty.apply(loc_, scale_, old64, noise), (loc64, scale64)
    )
    # with a differentiable pi_old it falls back to the autograd form
    old_with_grad = old.clone().requires_grad_()
    penalty = math_.anchor_penalty(old_with_grad, gaussian_policy(loc, scale), None, 4, generator(7))
    assert th.autograd.grad(penalty, old_with_grad)[0].abs().sum() > 0


def test_parity_mode_weights_the_executed_action_by_its_old_density():
    old_log_prob = th.tensor([0.5, -1.0])
    log_ratio = th.tensor([0.1, -0.2])
    params = th.zeros(2, 2)
    batch = SimpleNamespace(log_ratio=log_ratio, old_log_prob=old_log_prob, old_params=params, new_params=params)
    anchors = parity_anchors(DiagGaussianMath(1), batch, 2)
    expected = 0.5 * (old_log_prob.exp() * (log_ratio.exp() - 1) ** 2).mean()
    assert anchors.chi2_penalty().item() == pytest.approx(expected.item())


def test_parity_mode_discrete_draws_only_unsampled_actions():
    old = th.log_softmax(th.randn(64, 5, generator=generator(4)), 1)
    new = th.log_softmax(th.randn(64, 5, generator=generator(5)), 1)
    actions = th.randint(0, 5, (64, 1), generator=generator(6)).float()
    batch = SimpleNamespace(old_params=old, new_params=new, actions=actions, generator=generator())
    anchors = parity_anchors(CategoricalMath([5]), batch, 3)
    assert anchors.log_ratio.shape == (64, 3)
    # recover each anchor's index from its weight pi_old(a') / K and check it is never the executed one
    p_old = old.exp()
    for state in range(64):
        for weight in anchors.weight[state]:
            index = int(th.argmin((p_old[state] / 3 - weight).abs()))
            assert index != int(actions[state])


def test_exact_kl_matches_torch_for_every_family():
    cases = [
        (spaces.Box(-1, 1, (3,)), th.cat([th.randn(4, 3), th.rand(4, 3) + 0.1], 1)),
        (spaces.Discrete(4), th.log_softmax(th.randn(4, 4), 1)),
        (spaces.MultiBinary(3), th.randn(4, 3)),
    ]
    for space, p in cases:
        math_ = distribution_math(space)
        q = p + 0.1 * th.randn_like(p).abs()
        kl = math_.kl(p, q)
        dist_p = make_proba_distribution(space)
        dist_q = make_proba_distribution(space)
        if isinstance(space, spaces.Box):
            expected = th.distributions.kl_divergence(math_.normal(p), math_.normal(q)).sum(-1)
        else:
            dist_p.proba_distribution(p)
            dist_q.proba_distribution(q)
            expected = th.distributions.kl_divergence(dist_p.distribution, dist_q.distribution)
            expected = expected.sum(-1) if expected.dim() == 2 else expected
        assert th.allclose(kl, expected, atol=1e-5), space
        assert th.allclose(math_.kl(p, p), th.zeros(4), atol=1e-6)
        # the loop's form, to pi's SB3 distribution (for Box, its loc and scale without a concatenation)
        q_distribution = gaussian_policy(*q.chunk(2, dim=1)) if isinstance(space, spaces.Box) else dist_q
        assert th.allclose(math_.kl_to(p, q_distribution), kl, atol=1e-6), space


def test_far_out_anchor_cannot_overflow():
    old = th.tensor([[0.0, 1e-3]])  # a very narrow old policy
    new = th.tensor([[5.0, 1.0]], requires_grad=True)
    anchors = DiagGaussianMath(1).anchors(old, new, None, 4, generator())
    penalty = anchors.chi2_penalty()
    assert th.isfinite(penalty)
    assert anchors.log_ratio.max().item() <= LOG_RATIO_LIMIT
    penalty.backward()
    assert th.isfinite(new.grad).all()


def test_spo_optimum_in_ratio_is_one_plus_sign_of_advantage_times_eps():
    eps = 0.2
    for advantage in (1.7, -0.6):
        ratio = th.tensor([1.0], requires_grad=True)
        optimizer = th.optim.SGD([ratio], lr=0.05)
        for _ in range(2000):
            optimizer.zero_grad()
            a = th.tensor([advantage])
            loss = -(ratio * a - a.abs() / (2 * eps) * (ratio - 1) ** 2).mean()
            loss.backward()
            optimizer.step()
        assert ratio.item() == pytest.approx(1 + math.copysign(eps, advantage), abs=1e-5)
        # and the gradient there is zero
        ratio = th.tensor([1 + math.copysign(eps, advantage)], requires_grad=True)
        a = th.tensor([advantage])
        (-(ratio * a - a.abs() / (2 * eps) * (ratio - 1) ** 2)).sum().backward()
        assert ratio.grad.abs().item() < 1e-6


def test_spo_loss_of_the_class_matches_the_formula():
    from sb3_apo import SPO

    model = SPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16)
    ratio = th.tensor([0.9, 1.3, 1.0])
    advantages = th.tensor([1.0, -2.0, 0.5])

    class Batch:
        clip_range = 0.2

    batch = Batch()
    batch.ratio, batch.advantages = ratio, advantages
    loss, terms = model.policy_loss(batch)
    expected = -(0.9 * 1 - 1 / 0.4 * 0.01 + 1.3 * -2 - 2 / 0.4 * 0.09 + 0.5) / 3
    assert loss.item() == pytest.approx(expected)
    assert terms["policy_gradient_loss"].item() == pytest.approx(expected)


def test_spo_with_a_clip_schedule_reaching_zero_stays_finite():
    from sb3_apo import SPO

    model = SPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, clip_range=lambda progress: 0.2 * progress, seed=0)
    before = [p.clone() for p in model.policy.action_net.parameters()]
    model.learn(32)  # one update, at progress 0: eps = 0
    for old, new in zip(before, model.policy.action_net.parameters()):
        assert th.equal(old, new)  # the policy head did not move


@pytest.mark.parametrize(
    ("kl", "expected"),
    [(0.001, 0.5), (0.0066, 0.5), (0.0067, 1.0), (0.01, 1.0), (0.015, 1.0), (0.0151, 2.0), (1.0, 2.0)],
)
def test_adaptive_beta_rule(kl, expected):
    assert adapt_penalty_coef(1.0, kl, target=0.01) == pytest.approx(expected)


def test_adaptive_beta_rule_exposes_tolerance_and_factor():
    assert adapt_penalty_coef(1.0, 0.025, target=0.01, tolerance=3.0, factor=10.0) == 1.0
    assert adapt_penalty_coef(1.0, 0.035, target=0.01, tolerance=3.0, factor=10.0) == 10.0
    assert adapt_penalty_coef(1.0, 0.003, target=0.01, tolerance=3.0, factor=10.0) == pytest.approx(0.1)
