"""APO's exact Gaussian anchors and adaptive anchor coefficient (docs/algorithms.md), against hand-computed values."""

import math
import warnings

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_apo import APO
from sb3_apo.apo.apo import ANCHOR_COEF_BOUNDS, parse_anchor_coef
from sb3_apo.common.adaptive import adapt_penalty_coef
from sb3_apo.common.distributions import EXACT_VARIANCE_MARGIN, DiagGaussianMath, distribution_math

PENDULUM = dict(n_steps=64, batch_size=32, n_epochs=2, seed=0)


def gaussian_params(loc, scale, requires_grad=False):
    return th.tensor([list(loc) + list(scale)], dtype=th.float64, requires_grad=requires_grad)


def half_chi2_by_hand(loc, scale, old_loc, old_scale):
    """1/2 (E_{pi_old}[r^2] - 1), the product over dimensions of the closed form in docs/algorithms.md."""
    moment = 1.0
    for mu, sigma, mu0, sigma0 in zip(loc, scale, old_loc, old_scale):
        gap = 2 * sigma0**2 - sigma**2
        moment *= sigma0**2 / (sigma * math.sqrt(gap)) * math.exp((mu - mu0) ** 2 / gap)
    return 0.5 * (moment - 1)


def test_exact_anchor_divergence_is_the_closed_form():
    math_ = DiagGaussianMath(2)
    old, new = ([0.0, 0.3], [1.0, 0.5]), ([0.5, 0.2], [1.2, 0.45])
    value = math_.exact_anchor_divergence(gaussian_params(*old), gaussian_params(*new), None)
    assert value.item() == pytest.approx(half_chi2_by_hand(*new, *old), rel=1e-10)
    # one dimension against numerical integration of 1/2 (pi^2 / pi_old - 1)
    x = np.linspace(-30, 30, 600_001)
    p_old, p_new = (np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)) for m, s in ((0.0, 1.0), (0.5, 1.2)))
    numerical = 0.5 * (np.trapezoid(p_new**2 / p_old, x) - 1)
    one_dim = DiagGaussianMath(1).exact_anchor_divergence(gaussian_params([0.0], [1.0]), gaussian_params([0.5], [1.2]), None)
    assert one_dim.item() == pytest.approx(numerical, rel=1e-6)
    # no move, no divergence
    assert math_.exact_anchor_divergence(gaussian_params(*old), gaussian_params(*old), None).item() == 0.0


def test_exact_anchor_divergence_is_the_mean_of_the_sampled_estimate():
    old, new = ([0.0, 0.5, -0.2], [1.0, 0.7, 0.4]), ([0.1, 0.45, -0.1], [0.9, 0.75, 0.38])
    math_ = DiagGaussianMath(3)
    exact = math_.exact_anchor_divergence(gaussian_params(*old), gaussian_params(*new), None).item()
    generator = th.Generator().manual_seed(0)
    sampled = math_.anchors(gaussian_params(*old), gaussian_params(*new), None, 400_000, generator).chi2_penalty().item()
    assert sampled == pytest.approx(exact, rel=0.02)


def test_exact_anchor_divergence_beyond_the_closed_form_is_finite_and_points_back():
    math_ = DiagGaussianMath(1)
    old = gaussian_params([0.0], [1.0])
    # sigma^2 = 2.56 sigma_old^2: the true chi2 is infinite
    new = gaussian_params([0.3], [1.6], requires_grad=True)
    value = math_.exact_anchor_divergence(old, new, None).sum()
    value.backward()
    assert th.isfinite(value) and value.item() > half_chi2_by_hand([0.3], [1.35], [0.0], [1.0])
    grad_loc, grad_scale = new.grad[0]
    assert grad_scale > 0 and grad_loc > 0  # descending it shrinks sigma and moves mu back to mu_old
    # a huge mean shift stays finite, with a finite gradient towards mu_old
    far = gaussian_params([1e3], [1.0], requires_grad=True)
    value = math_.exact_anchor_divergence(old, far, None).sum()
    value.backward()
    assert th.isfinite(value) and th.isfinite(far.grad).all() and far.grad[0, 0] > 0
    # the continuation joins the closed form continuously at q = 2 - margin
    joint_scale = math.sqrt(2 - EXACT_VARIANCE_MARGIN)
    below, above = (
        math_.exact_anchor_divergence(old, gaussian_params([0.2], [joint_scale + step]), None).item() for step in (-1e-7, 1e-7)
    )
    assert above == pytest.approx(below, rel=1e-5)


@pytest.mark.parametrize("dtype", [th.float32, th.float64])
def test_exact_anchor_divergence_gradient_is_the_closed_forms(dtype):
    # d/dmu of 1/2 (E[r^2] - 1) in one dimension: 1/2 E[r^2] * 2 (mu - mu_old) / (2 sigma_old^2 - sigma^2);
    # float32 included, the dtype of the policies (a cancellation once made this gradient 0 there)
    old = th.tensor([[0.0, 1.0]], dtype=dtype)
    new = th.tensor([[0.1, 1.0]], dtype=dtype, requires_grad=True)
    DiagGaussianMath(1).exact_anchor_divergence(old, new, None).sum().backward()
    moment = 2 * half_chi2_by_hand([0.1], [1.0], [0.0], [1.0]) + 1
    assert new.grad[0, 0].item() == pytest.approx(0.5 * moment * 2 * 0.1 / 1.0, rel=1e-4)
    # in a policy update, a large coefficient on the exact anchors holds the policy at pi_old
    kl = {}
    for coef in (0.0, 1000.0):
        model = APO("MlpPolicy", "Pendulum-v1", anchor_estimator="exact", anchor_coef=coef, **{**PENDULUM, "n_epochs": 10})
        model.learn(64)
        kl[coef] = model.logger.name_to_value["train/kl"]
    assert kl[1000.0] < 0.01 * kl[0.0]


@pytest.mark.parametrize("space", [spaces.Discrete(4), spaces.MultiDiscrete([3, 2]), spaces.MultiBinary(3)])
def test_exact_anchor_divergence_of_discrete_spaces_is_the_exact_anchor_sum(space):
    math_ = distribution_math(space)
    old, new = th.randn(5, math_.param_dim), th.randn(5, math_.param_dim)
    actions = th.as_tensor(np.stack([space.sample() for _ in range(5)])).float()
    actions = actions.reshape(5, -1)
    exact = math_.exact_anchor_divergence(old, new, actions)
    assert th.allclose(exact, math_.anchors(old, new, actions, 2, None).penalty_per_state())


def test_exact_estimator_draws_nothing_and_trains():
    model = APO("MlpPolicy", "Pendulum-v1", anchor_estimator="exact", **PENDULUM)
    state = model._anchor_generator.get_state()
    model.learn(128)
    assert th.equal(model._anchor_generator.get_state(), state)
    assert np.isfinite(model.logger.name_to_value["train/anchor_loss"])
    model = APO("MlpPolicy", "Pendulum-v1", anchor_estimator="exact", use_sde=True, **PENDULUM)
    model.learn(64)
    assert np.isfinite(model.logger.name_to_value["train/anchor_loss"])


@pytest.mark.parametrize(
    ("given", "expected"), [(0.5, (0.5, False)), (0, (0.0, False)), ("auto", (1.0, True)), ("auto_0.1", (0.1, True))]
)
def test_anchor_coef_values(given, expected):
    assert parse_anchor_coef(given) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(anchor_coef="autox"),
        dict(anchor_coef="auto_-1"),
        dict(anchor_coef="auto_abc"),
        dict(anchor_coef=-1.0),
        dict(anchor_target=0.0),
        dict(anchor_estimator="mc"),
        dict(anchor_mode="parity", anchor_estimator="exact"),
    ],
)
def test_bad_anchor_options_are_named(kwargs):
    name = "anchor_estimator" if "anchor_estimator" in kwargs else next(iter(kwargs))
    with pytest.raises(ValueError, match=f"`{name}`"):
        APO("MlpPolicy", "Pendulum-v1", **kwargs)


@pytest.mark.parametrize(
    ("target", "start", "expected"), [(1e-9, "auto", 2.0), (10.0, "auto_0.5", 0.25), (1e-9, "auto_1000", 1000)]
)
def test_auto_anchor_coef_follows_the_rule_on_the_measured_divergence(target, start, expected):
    model = APO("MlpPolicy", "Pendulum-v1", anchor_coef=start, anchor_target=target, **PENDULUM)
    model.learn(64)  # one update
    logged = model.logger.name_to_value
    initial = parse_anchor_coef(start)[0]
    assert logged["train/anchor_coef"] == initial  # the coefficient the update used
    divergence = logged["train/anchor_divergence"]
    assert model.anchor_coef == adapt_penalty_coef(initial, divergence, target, bounds=ANCHOR_COEF_BOUNDS)
    assert model.anchor_coef == pytest.approx(expected)


def test_auto_anchor_coef_survives_save_load_and_repeated_learn(tmp_path):
    model = APO("MlpPolicy", "Pendulum-v1", anchor_coef="auto", anchor_target=1e-9, **PENDULUM)
    model.learn(64)
    assert model.anchor_coef == 2.0
    model.learn(64, reset_num_timesteps=False)
    assert model.anchor_coef == 4.0
    model.save(tmp_path / "apo")
    loaded = APO.load(tmp_path / "apo", env=model.get_env())
    assert loaded.anchor_coef == 4.0 and loaded.adaptive_anchor_coef and loaded.anchor_target == 1e-9
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.logger.name_to_value["train/anchor_coef"] == 4.0
    assert loaded.anchor_coef == 8.0


def test_auto_anchor_coef_warns_once_when_it_reaches_its_upper_bound():
    model = APO("MlpPolicy", "Pendulum-v1", anchor_coef="auto_600", anchor_target=1e-9, **PENDULUM)
    with pytest.warns(RuntimeWarning, match=r"anchor_coef='auto' reached its upper bound 1000 after 64 timesteps") as record:
        model.learn(64)
    assert model.anchor_coef == ANCHOR_COEF_BOUNDS[1]
    assert str(record[0].message).endswith("lower learning_rate or n_epochs.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # held at the bound: no second warning
        model.learn(64, reset_num_timesteps=False)
        assert model.anchor_coef == ANCHOR_COEF_BOUNDS[1]
        model.anchor_coef = 600.0  # as if it had come down: reaching the bound again gives no second warning
        model.learn(64, reset_num_timesteps=False)
    assert model.anchor_coef == ANCHOR_COEF_BOUNDS[1]


def test_fixed_anchor_coef_never_moves():
    model = APO("MlpPolicy", "Pendulum-v1", anchor_coef=0.7, anchor_target=1e-9, **PENDULUM)
    model.learn(128)
    assert model.anchor_coef == 0.7 and not model.adaptive_anchor_coef
