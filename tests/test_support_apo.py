"""SupportAPO (spec section 5), the multi-solution task, Pass@K and the Pass@K example."""

import argparse
import importlib.util
import itertools
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.distributions import CategoricalDistribution, MultiCategoricalDistribution
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.envs import IdentityEnvMultiDiscrete

import sb3_apo.envs
from sb3_apo import SupportAPO
from sb3_apo.common.buffers import AnchoredRolloutBuffer
from sb3_apo.common.distributions import CategoricalMath
from sb3_apo.common.on_policy import Minibatch
from sb3_apo.common.pass_at_k import evaluate_pass_at_k, pass_at_k
from sb3_apo.envs import MULTI_SOLUTION_ID, MultiSolutionEnv
from sb3_apo.support_apo import support_apo_loss
from sb3_apo.support_apo.manifold import top_k_mask

SETTINGS = dict(n_steps=64, batch_size=32, n_epochs=3, seed=7)
EPS = 0.2
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support_apo_pass_at_k.py"


# --------------------------------------------------------------------------- #
# Exactly PPO-clip when switched off
# --------------------------------------------------------------------------- #
def trained_parameters(cls, env, **kwargs):
    # Construct and train one model at a time: construction re-seeds the global generators.
    model = cls("MlpPolicy", env, **SETTINGS, **kwargs)
    model.learn(4 * SETTINGS["n_steps"])
    return model.policy.state_dict()


def differs(expected, actual):
    return any(not th.equal(expected[name], actual[name]) for name in expected)


@pytest.mark.parametrize("env_id", ["CartPole-v1", MULTI_SOLUTION_ID])
def test_without_push_pull_and_kl_it_is_ppo(env_id):
    expected = trained_parameters(PPO, env_id)
    actual = trained_parameters(SupportAPO, env_id, push_coef=1.0, pull_coef=0.0, kl_coef=0.0)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert th.equal(expected[name], actual[name]), name
    # the converse: the equality is not vacuous
    assert differs(expected, trained_parameters(SupportAPO, env_id))
    assert differs(expected, trained_parameters(SupportAPO, env_id, push_coef=1.0, pull_coef=0.0, kl_coef=1.0))


# --------------------------------------------------------------------------- #
# The loss on hand-built minibatches
# --------------------------------------------------------------------------- #
def hand_batch(old_logits, new_logits, actions, advantages, nvec):
    """A minibatch as the training loop builds it, from raw logits (``new_logits`` keeps its gradient)."""
    math_ = CategoricalMath(nvec)
    if len(nvec) == 1:
        distribution = CategoricalDistribution(nvec[0]).proba_distribution(new_logits)
        old_distribution = CategoricalDistribution(nvec[0]).proba_distribution(old_logits)
        stored_actions = actions.float().reshape(-1, 1)  # as the rollout buffer stores them
    else:
        distribution = MultiCategoricalDistribution(nvec).proba_distribution(new_logits)
        old_distribution = MultiCategoricalDistribution(nvec).proba_distribution(old_logits)
        stored_actions = actions.float()
    old_log_prob = old_distribution.log_prob(actions).detach()
    log_ratio = distribution.log_prob(actions) - old_log_prob
    return Minibatch(
        advantages=advantages,
        log_ratio=log_ratio,
        ratio=th.exp(log_ratio),
        old_log_prob=old_log_prob,
        actions=stored_actions,
        old_params=math_.params(old_distribution).detach(),
        distribution=distribution,
        clip_range=EPS,
        math=math_,
        n_anchor_actions=2,
        generator=th.Generator().manual_seed(0),
        samples=None,  # support_apo_loss takes the reference parameters as an argument
    )


def loss_terms(batch, reference, **overrides):
    kwargs = dict(push_coef=1.0, pull_coef=1.0, top_k=2, exclude_sampled=True, kl_coef=0.0, kl_mode="all")
    kwargs.update(overrides)
    return support_apo_loss(batch, reference, **kwargs)


def mass(logits, mask):
    return (th.softmax(logits, dim=1) * mask).sum(dim=1)


def expected_manifold(reference, actions, k, exclude_sampled):
    mask = th.zeros_like(reference, dtype=th.bool)
    for row in range(len(reference)):
        ranked = th.argsort(reference[row], descending=True)[: min(k, reference.shape[1] - 1)]
        mask[row, ranked] = True
        if exclude_sampled:
            mask[row, actions[row]] = False
    return mask


@pytest.fixture
def discrete_case():
    generator = th.Generator().manual_seed(3)
    n, batch = 6, 5
    reference = th.randn(batch, n, generator=generator)
    old_logits = th.randn(batch, n, generator=generator)
    actions = th.randint(n, (batch,), generator=generator)
    actions[0] = reference[0].argmax()  # one executed action inside the reference's top-K
    return reference, old_logits, actions, n


def test_the_pull_raises_the_safe_manifolds_mass(discrete_case):
    reference, old_logits, actions, n = discrete_case
    new_logits = old_logits.clone().requires_grad_(True)
    advantages = -th.rand(len(actions)) - 0.5
    _, terms = loss_terms(hand_batch(old_logits, new_logits, actions, advantages, [n]), reference)
    (gradient,) = th.autograd.grad(terms["pull_loss"], new_logits)
    manifold = expected_manifold(reference, actions, 2, exclude_sampled=True)
    stepped = new_logits.detach() - 0.1 * gradient
    assert th.all(mass(stepped, manifold) > mass(old_logits, manifold))
    # at r = 1 the pull is -mean(|A| * 1)
    assert terms["pull_loss"].item() == pytest.approx(-advantages.abs().mean().item(), rel=1e-5)


def test_the_pull_stops_beyond_the_trust_region(discrete_case):
    reference, old_logits, actions, n = discrete_case
    manifold = expected_manifold(reference, actions, 2, exclude_sampled=True)
    advantages = -th.ones(len(actions))
    for shift, pulled in ((0.5, False), (0.01, True)):
        new_logits = (old_logits + shift * manifold).requires_grad_(True)
        rho = mass(new_logits.detach(), manifold) / mass(old_logits, manifold)
        assert th.all(rho > 1 + EPS) if not pulled else th.all(rho < 1 + EPS)
        _, terms = loss_terms(hand_batch(old_logits, new_logits, actions, advantages, [n]), reference)
        (gradient,) = th.autograd.grad(terms["pull_loss"], new_logits)
        assert th.any(gradient != 0) if pulled else th.all(gradient == 0)


def test_the_pull_is_zero_on_positive_advantages(discrete_case):
    reference, old_logits, actions, n = discrete_case
    new_logits = (old_logits + 0.1 * th.randn(old_logits.shape, generator=th.Generator().manual_seed(1))).requires_grad_(True)
    advantages = th.tensor([1.0, -1.0, 0.5, -0.3, 2.0])
    _, terms = loss_terms(hand_batch(old_logits, new_logits, actions, advantages, [n]), reference)
    (gradient,) = th.autograd.grad(terms["pull_loss"], new_logits)
    positive = advantages > 0
    assert th.all(gradient[positive] == 0)
    assert th.all(gradient[~positive].abs().sum(dim=1) > 0)


@pytest.mark.parametrize("exclude_sampled", [True, False])
def test_the_pull_term_matches_its_formula(discrete_case, exclude_sampled):
    reference, old_logits, actions, n = discrete_case
    new_logits = old_logits + 0.3 * th.randn(old_logits.shape, generator=th.Generator().manual_seed(2))
    advantages = th.tensor([-1.0, -0.5, 0.7, -2.0, -0.1])
    _, terms = loss_terms(
        hand_batch(old_logits, new_logits, actions, advantages, [n]), reference, top_k=3, exclude_sampled=exclude_sampled
    )
    manifold = expected_manifold(reference, actions, 3, exclude_sampled)
    assert bool(manifold[0, actions[0]]) is not exclude_sampled  # the executed action is in the top-K there
    rho = mass(new_logits, manifold) / mass(old_logits, manifold)
    expected = -(advantages.abs() * (advantages < 0) * th.clamp(rho, max=1 + EPS)).mean()
    assert terms["pull_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_top_k_at_least_n_keeps_all_but_the_least_likely_action():
    math_ = CategoricalMath([5])
    reference = th.tensor([[0.1, 2.0, -1.0, 0.5, 3.0], [1.0, 0.0, 2.0, -3.0, 0.2]])
    for k in (4, 5, 100):
        mask = top_k_mask(math_, reference, k)
        assert mask.sum(dim=1).tolist() == [4, 4]
        assert not mask[0, 2] and not mask[1, 3]
    # the diagnostic measures pi(TopK_ref): everything but the least likely reference action
    new_logits = th.zeros(2, 5, requires_grad=True)
    batch = hand_batch(th.zeros(2, 5), new_logits, th.tensor([1, 0]), -th.ones(2), [5])
    _, terms = loss_terms(batch, reference, top_k=100)
    assert terms["safe_mass"].item() == pytest.approx(0.8)


def test_an_empty_manifold_adds_nothing_and_stays_finite():
    # Discrete(2): K is capped at 1; when the executed action is the reference's top-1, S is empty
    reference = th.tensor([[2.0, 0.0], [2.0, 0.0]])
    new_logits = th.tensor([[0.3, -0.2], [0.1, 0.4]], requires_grad=True)
    batch = hand_batch(th.zeros(2, 2), new_logits, th.tensor([0, 1]), -th.ones(2), [2])
    _, terms = loss_terms(batch, reference, top_k=8)
    (gradient,) = th.autograd.grad(terms["pull_loss"], new_logits)
    assert th.isfinite(gradient).all()
    assert th.all(gradient[0] == 0) and th.any(gradient[1] != 0)
    rho = th.softmax(new_logits.detach()[1], 0)[0] / 0.5
    assert terms["pull_loss"].item() == pytest.approx(-(min(rho.item(), 1 + EPS)) / 2, rel=1e-5)


def test_multidiscrete_sums_the_sub_spaces():
    nvec = [3, 4]
    generator = th.Generator().manual_seed(5)
    reference = th.randn(6, 7, generator=generator)
    old_logits = th.randn(6, 7, generator=generator)
    new_logits = (old_logits + 0.2 * th.randn(6, 7, generator=generator)).requires_grad_(True)
    actions = th.stack([th.randint(3, (6,), generator=generator), th.randint(4, (6,), generator=generator)], dim=1)
    advantages = -th.rand(6, generator=generator) - 0.1
    _, terms = loss_terms(hand_batch(old_logits, new_logits, actions, advantages, nvec), reference, top_k=2)
    expected = th.zeros(())
    for (start, stop), column in zip(((0, 3), (3, 7)), range(2)):
        sub = slice(start, stop)
        manifold = expected_manifold(reference[:, sub], actions[:, column], 2, exclude_sampled=True)
        rho = mass(new_logits[:, sub], manifold) / mass(old_logits[:, sub], manifold)
        expected = expected - (advantages.abs() * th.clamp(rho, max=1 + EPS)).mean()
    assert terms["pull_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    (gradient,) = th.autograd.grad(terms["pull_loss"], new_logits)
    stepped = new_logits.detach() - 0.1 * gradient
    for start, stop, column in ((0, 3, 0), (3, 7, 1)):
        manifold = expected_manifold(reference[:, start:stop], actions[:, column], 2, exclude_sampled=True)
        assert th.all(mass(stepped[:, start:stop], manifold) >= mass(new_logits.detach()[:, start:stop], manifold))


def test_push_scales_negative_advantages_only(discrete_case):
    reference, old_logits, actions, n = discrete_case
    new_logits = old_logits + 0.05
    advantages = th.tensor([1.0, -1.0, 0.5, -0.3, 2.0])
    batch = hand_batch(old_logits, new_logits, actions, advantages, [n])
    _, pushed = loss_terms(batch, reference, push_coef=2.0, pull_coef=0.0)
    scaled = th.where(advantages < 0, 2.0 * advantages, advantages)
    _, plain = loss_terms(hand_batch(old_logits, new_logits, actions, scaled, [n]), reference, pull_coef=0.0)
    assert pushed["policy_gradient_loss"].item() == pytest.approx(plain["policy_gradient_loss"].item())


def test_kl_baselines(discrete_case):
    reference, old_logits, actions, n = discrete_case
    new_logits = (old_logits + 0.1).requires_grad_(True)
    advantages = th.tensor([1.0, -1.0, 0.5, -0.3, 2.0])
    batch = hand_batch(old_logits, new_logits, actions, advantages, [n])
    log_p, log_ref = th.log_softmax(new_logits, 1), th.log_softmax(reference, 1)
    kl = (log_p.exp() * (log_p - log_ref)).sum(dim=1)
    _, standard = loss_terms(batch, reference, pull_coef=0.0, kl_coef=0.5, kl_mode="all")
    _, wrong = loss_terms(batch, reference, pull_coef=0.0, kl_coef=0.5, kl_mode="negative")
    assert standard["ref_kl_penalty"].item() == pytest.approx(kl.mean().item(), rel=1e-5)
    assert wrong["ref_kl_penalty"].item() == pytest.approx((kl * (advantages < 0)).mean().item(), rel=1e-5)
    assert standard["ref_kl"].item() == pytest.approx(kl.mean().item(), rel=1e-5)
    (gradient,) = th.autograd.grad(wrong["ref_kl_penalty"], new_logits)
    assert th.all(gradient[advantages > 0] == 0) and th.all(gradient[advantages < 0].abs().sum(1) > 0)


# --------------------------------------------------------------------------- #
# The algorithm: spaces, parameters, logs, the reference and save/load
# --------------------------------------------------------------------------- #
def test_multidiscrete_training_logs_the_diagnostics():
    model = SupportAPO("MlpPolicy", IdentityEnvMultiDiscrete(dim=4, ep_length=8), n_steps=32, batch_size=16, seed=0)
    model.learn(64)
    logs = model.logger.name_to_value
    for key in ("train/safe_mass", "train/ref_kl", "train/safe_ratio", "train/pull_loss", "train/entropy_loss"):
        assert np.isfinite(logs[key]), key
    assert 0 < logs["train/safe_mass"] < 1


@pytest.mark.parametrize("env_id", ["Pendulum-v1"])
def test_other_action_spaces_are_refused(env_id):
    with pytest.raises(ValueError, match="MultiDiscrete"):
        SupportAPO("MlpPolicy", env_id)
    from stable_baselines3.common.envs import IdentityEnvMultiBinary

    with pytest.raises(ValueError, match="does not support"):
        SupportAPO("MlpPolicy", IdentityEnvMultiBinary(dim=3))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(push_coef=0.0),
        dict(pull_coef=-0.1),
        dict(top_k=0),
        dict(top_k=2.5),
        dict(kl_coef=-1.0),
        dict(kl_mode="wrong"),
        dict(exclude_sampled="yes"),
        dict(clip_range=None),
        dict(reference=42),
        dict(rollout_buffer_class=AnchoredRolloutBuffer),
    ],
)
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        SupportAPO("MlpPolicy", "CartPole-v1", **kwargs)


def test_missing_reference_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        SupportAPO("MlpPolicy", "CartPole-v1", reference=tmp_path / "nothing.zip")


def equal_states(first, second):
    return first.keys() == second.keys() and all(th.equal(first[name], second[name]) for name in first)


def clone_state(module):
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def test_the_reference_is_a_snapshot_when_learn_starts_and_survives_save_and_load(tmp_path):
    model = SupportAPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=2, seed=0)
    with th.no_grad():  # a "pretrained" policy, set after construction and before learn()
        for parameter in model.policy.parameters():
            parameter.add_(0.01)
    pretrained = clone_state(model.policy)
    model.learn(64)
    reference = clone_state(model.reference_policy)
    assert equal_states(reference, pretrained)
    assert not equal_states(clone_state(model.policy), pretrained)
    assert not any(parameter.requires_grad for parameter in model.reference_policy.parameters())

    model.learn(64, reset_num_timesteps=False)  # continued training keeps the reference
    assert equal_states(clone_state(model.reference_policy), reference)

    model.save(tmp_path / "model")
    loaded = SupportAPO.load(tmp_path / "model", env=gym.make("CartPole-v1"))
    assert equal_states(clone_state(loaded.reference_policy), reference)
    assert equal_states(clone_state(loaded.policy), clone_state(model.policy))
    loaded.learn(64)  # a new learn() of a loaded model does not re-snapshot
    assert equal_states(clone_state(loaded.reference_policy), reference)

    loaded.reset_reference()  # an explicit new snapshot
    assert equal_states(clone_state(loaded.reference_policy), clone_state(loaded.policy))


def test_the_reference_loads_from_a_saved_model_or_policy(tmp_path):
    ppo = PPO("MlpPolicy", "CartPole-v1", seed=1)
    ppo.save(tmp_path / "ppo")
    ppo.policy.save(str(tmp_path / "policy.pth"))
    expected = clone_state(ppo.policy)
    for path in (tmp_path / "ppo.zip", tmp_path / "ppo", tmp_path / "policy.pth"):
        model = SupportAPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, reference=path, seed=0)
        assert equal_states(clone_state(model.reference_policy), expected)
        assert not equal_states(clone_state(model.policy), expected)
    model.learn(32)  # no snapshot: the loaded reference stays
    assert equal_states(clone_state(model.reference_policy), expected)
    model.save(tmp_path / "model")
    (tmp_path / "policy.pth").unlink()  # the saved model carries the reference itself
    assert equal_states(clone_state(SupportAPO.load(tmp_path / "model").reference_policy), expected)

    with pytest.raises(ValueError, match="architecture"):
        SupportAPO("MlpPolicy", "CartPole-v1", reference=tmp_path / "ppo.zip", policy_kwargs=dict(net_arch=[8]))


# --------------------------------------------------------------------------- #
# The multi-solution task
# --------------------------------------------------------------------------- #
def test_the_task_passes_the_env_checkers():
    env = gym.make(MULTI_SOLUTION_ID)
    gymnasium_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)
    for mode in ("ansi", "rgb_array"):
        rendered = gym.make(MULTI_SOLUTION_ID, render_mode=mode)
        rendered.reset(seed=0)
        assert rendered.render() is not None


def test_the_task_has_several_verifiable_solutions_per_problem():
    train, test = MultiSolutionEnv(split="train"), MultiSolutionEnv(split="test")
    assert sb3_apo.envs.MULTI_SOLUTION_ID in gym.registry
    assert not set(map(tuple, train.problems)) & set(map(tuple, test.problems))
    assert np.array_equal(train.problems, MultiSolutionEnv(split="train").problems)  # a seeded problem set
    for problem in range(0, train.n_problems, 37):
        solutions = train.solutions(problem)
        assert 2 <= len(solutions) <= 8 and len(set(solutions)) == len(solutions)
        for solution in solutions:
            obs, info = train.reset(seed=problem, options={"problem": problem})
            assert info["problem"] == problem
            rewards = [train.step(action)[1] for action in solution]
            assert rewards[:-1] == [0.0] * (len(solution) - 1) and rewards[-1] == 1.0
    train.reset(options={"problem": 0})
    wrong = next(seq for seq in itertools.product(range(8), repeat=3) if seq not in train.solutions(0))
    outcomes = [train.step(action) for action in wrong]
    assert outcomes[-1][1] == 0.0 and outcomes[-1][2] and outcomes[-1][4]["is_success"] is False


# --------------------------------------------------------------------------- #
# Pass@K
# --------------------------------------------------------------------------- #
def brute_force_pass_at_k(n, c, k):
    """The fraction of the k-subsets of n attempts (c of them successful) with a success."""
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)
    assert np.allclose(pass_at_k(6, np.array([0, 2, 6]), 3), [0.0, brute_force_pass_at_k(6, 2, 3), 1.0])


def test_pass_at_k_is_stable_for_large_n():
    assert pass_at_k(1000, 1, 100) == pytest.approx(0.1, rel=1e-12)  # c = 1: exactly k / n
    assert pass_at_k(5000, 2500, 1) == pytest.approx(0.5, rel=1e-12)
    expected = 1 - math.comb(4000, 500) / math.comb(5000, 500)
    assert pass_at_k(5000, 1000, 500) == pytest.approx(expected, rel=1e-9)
    for bad in (dict(n=4, c=5, k=1), dict(n=4, c=1, k=5), dict(n=4, c=1, k=0), dict(n=0, c=0, k=1)):
        with pytest.raises(ValueError):
            pass_at_k(**bad)


def test_evaluation_of_a_uniform_policy():
    task = MultiSolutionEnv(split="test", n_problems=64)
    model = SupportAPO("MlpPolicy", task, seed=0)
    with th.no_grad():  # a uniform policy: every action sequence has probability 1 / 8**3
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.zero_()
    torch_state, numpy_state = th.random.get_rng_state(), np.random.get_state()[1].copy()
    result = evaluate_pass_at_k(model, task, n_samples=64, ks=(1, 4, 64), seed=3)
    assert th.equal(torch_state, th.random.get_rng_state()) and np.array_equal(numpy_state, np.random.get_state()[1])
    expected = np.mean([len(task.solutions(problem)) / 8**3 for problem in range(task.n_problems)])
    assert result.pass_at[1] == pytest.approx(expected, abs=0.006)
    assert result.pass_at[1] <= result.pass_at[4] <= result.pass_at[64]
    assert np.all(result.distinct_solutions <= result.successes)
    assert np.all(result.distinct_solutions <= [len(task.solutions(p)) for p in range(task.n_problems)])
    again = evaluate_pass_at_k(
        model.policy, MULTI_SOLUTION_ID, 64, (1, 4, 64), seed=3, env_kwargs=dict(split="test", n_problems=64)
    )
    assert again.pass_at == result.pass_at and np.array_equal(again.successes, result.successes)
    with pytest.raises(ValueError):
        evaluate_pass_at_k(model, task, n_samples=4, ks=(8,))


# --------------------------------------------------------------------------- #
# The example
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_the_example_runs_at_a_tiny_budget(tmp_path):
    spec = importlib.util.spec_from_file_location("support_apo_pass_at_k", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--tiny", "--out", str(tmp_path)])
    for name in (
        "curves.csv",
        "summary.csv",
        "summary.md",
        "pass_at_k.png",
        "tradeoff.png",
        "config.json",
        "reference_policy.pth",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert set(summary["variant"]) == {"reference", *example.VARIANTS}
    assert set(summary["split"]) == {"train", "test"}
    assert summary["pass@1"].between(0, 1).all()


# --------------------------------------------------------------------------- #
# rl-zoo3: registration, hyperparameter file and Optuna sampler
# --------------------------------------------------------------------------- #
def _zoo():
    pytest.importorskip("rl_zoo3", reason="the zoo extra (rl_zoo3) is not installed")
    from sb3_apo import zoo

    return zoo


def test_zoo_registers_support_apo_and_its_sampler_rebuilds_its_kwargs():
    optuna = pytest.importorskip("optuna")
    zoo = _zoo()
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    zoo.register_algorithms()
    assert ALGOS["support_apo"] is SupportAPO and HYPERPARAMS_SAMPLER["support_apo"] is not None
    algorithm = zoo.ZOO_ALGORITHMS["support_apo"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in range(4):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
        trial = study.ask()
        kwargs = algorithm.sampler(trial, 0, 1, {})  # one environment, as constructed below
        study.tell(trial, 0.0)
        assert {"push_coef", "pull_coef", "top_k", "kl_coef", "kl_mode", "clip_range"} <= set(kwargs)
        assert algorithm.converter(study.trials[-1].params) == kwargs
        model = SupportAPO("MlpPolicy", "CartPole-v1", device="cpu", **kwargs)
        assert model.top_k == kwargs["top_k"] and model.pull_coef == kwargs["pull_coef"]


def test_zoo_builds_every_support_apo_yaml_entry(tmp_path, monkeypatch):
    zoo = _zoo()
    import yaml
    from stable_baselines3.common.policies import ActorCriticPolicy

    from sb3_apo.zoo.exp_manager import ZooExperimentManager

    assert zoo.default_hyperparams_file("support_apo") is not None
    entries = yaml.safe_load(zoo.default_hyperparams_file("support_apo").read_text())
    assert {MULTI_SOLUTION_ID, "CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3"} <= set(entries)
    monkeypatch.chdir(tmp_path)
    zoo.register_algorithms()
    for env_id in entries:
        if env_id == "default":  # for untuned environments: tests/test_zoo_hyperparams_sources.py builds it
            continue
        if env_id.startswith("LunarLander") and importlib.util.find_spec("Box2D") is None:
            continue
        manager = ZooExperimentManager(
            argparse.Namespace(), "support_apo", env_id, str(tmp_path), eval_freq=-1, verbose=0, device="cpu", seed=0
        )
        model, _ = manager.setup_experiment()
        assert type(model) is SupportAPO and type(model.policy) is ActorCriticPolicy, env_id
        assert model.push_coef == entries[env_id]["push_coef"] and model.top_k == entries[env_id]["top_k"]
        model.env.close()


@pytest.mark.slow
def test_zoo_trains_support_apo_on_the_multi_solution_task(tmp_path, capsys):
    _zoo()
    logs = tmp_path / "logs"
    argv = ["--algo", "support_apo", "--env", MULTI_SOLUTION_ID, "-f", str(logs)]
    argv += ["--seed", "0", "--num-threads", "1", "--eval-freq", "-1", "-n", "1024"]
    from sb3_apo.zoo import cli

    assert cli.train(argv) == 0
    saved = next(logs.glob("support_apo/*/*.zip"))
    model = SupportAPO.load(saved, device="cpu")
    assert model.num_timesteps >= 1024 and model._reference_ready
