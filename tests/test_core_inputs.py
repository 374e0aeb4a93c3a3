"""
Bad hyperparameters get a ValueError naming the parameter and what it accepts, as an AssertionError
where SB3's PPO asserts; numpy numbers, booleans and schedules are read as SB3 reads them.
"""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer

from sb3_apo import APO, SPO, PPOPenalty, SupportAPO
from sb3_apo.common.checks import HyperparameterError

SMALL = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}}

ALGORITHMS = [APO, PPOPenalty, SPO, SupportAPO]

SHARED_BAD_INPUTS = [
    ("learning_rate", -1e-3, "[0, inf)"),
    ("n_steps", 0, "[1, inf)"),
    ("batch_size", 1, "[2, inf)"),
    ("batch_size", 2.5, "an integer"),
    ("n_epochs", 0, "[1, inf)"),
    ("gamma", 1.5, "[0, 1]"),
    ("gae_lambda", -0.1, "[0, 1]"),
    ("clip_range_vf", -0.2, "(0, inf)"),
    ("ent_coef", -0.01, "[0, inf)"),
    ("vf_coef", -0.5, "[0, inf)"),
    ("max_grad_norm", 0.0, "(0, inf]"),
    ("stats_window_size", -1, "[1, inf)"),
    ("stats_window_size", float("nan"), "an integer"),
    ("stats_window_size", "1", "an integer"),
    ("stats_window_size", 1.5, "an integer"),
    ("stats_window_size", None, "an integer"),
    ("target_kl", -0.01, "(0, inf)"),
    ("gamma", float("nan"), "[0, 1]"),
    ("ent_coef", "0.01", "a number"),
]


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize(("name", "value", "accepted"), SHARED_BAD_INPUTS)
def test_shared_hyperparameters_out_of_range(algo, name, value, accepted):
    with pytest.raises(ValueError, match=f"`{name}` must be") as error:
        algo("MlpPolicy", "CartPole-v1", **{name: value})
    assert accepted in str(error.value)


@pytest.mark.parametrize(
    ("algo", "name", "value", "accepted"),
    [
        (APO, "anchor_coef", -1.0, "[0, inf)"),
        (APO, "n_anchor_actions", 0, "[1, inf)"),
        (APO, "n_anchor_actions", 1.5, "an integer"),
        (APO, "anchor_coef", "auto_0.1_2", "'auto_<initial value>'"),
        (SPO, "diagnostic_anchor_actions", 0, "[1, inf)"),
        (APO, "anchor_mode", "exact", "'chi2', 'parity'"),
        (APO, "clip_range", 0.0, "(0, inf)"),
        (APO, "clip_range", None, "(0, inf)"),
        (SPO, "clip_range", -0.2, "(0, inf)"),
        (PPOPenalty, "kl_coef", -1.0, "[0, inf)"),
        (PPOPenalty, "kl_target", 0.0, "(0, inf)"),
        (PPOPenalty, "kl_tolerance", 1.0, "(1, inf)"),
        (PPOPenalty, "kl_adapt_factor", 0.5, "(1, inf)"),
        (PPOPenalty, "clip_range", -0.1, "None"),
    ],
)
def test_algorithm_hyperparameters_out_of_range(algo, name, value, accepted):
    with pytest.raises(ValueError, match=f"`{name}` must be") as error:
        algo("MlpPolicy", "CartPole-v1", **{name: value})
    assert accepted in str(error.value)


@pytest.mark.parametrize("algo", [PPO, *ALGORITHMS])
@pytest.mark.parametrize(("name", "value"), [("learning_rate", 0.0), ("max_grad_norm", math.inf)])
def test_values_that_ppo_accepts_are_accepted(algo, name, value):
    model = algo("MlpPolicy", "CartPole-v1", **SMALL, **{name: value}).learn(32)
    assert np.isfinite(model.logger.name_to_value["train/loss"])


def test_an_adaptive_kl_coefficient_of_zero_is_refused():
    with pytest.raises(HyperparameterError, match="`kl_coef` must be > 0 with adaptive_kl=True"):
        PPOPenalty("MlpPolicy", "CartPole-v1", kl_coef=0.0)
    assert PPOPenalty("MlpPolicy", "CartPole-v1", kl_coef=0.0, adaptive_kl=False).kl_coef == 0.0


def test_minibatch_larger_than_the_rollout_warns_as_in_sb3():
    # SB3's PPO warns and trains on the whole rollout as one minibatch; so do we.
    with pytest.warns(UserWarning, match=r"`batch_size`=128 is larger than the rollout \(`n_steps \* n_envs` = 64"):
        APO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=128)


def test_rollout_buffer_without_distribution_parameters():
    with pytest.raises(ValueError, match="`rollout_buffer_class` must store distribution parameters"):
        APO("MlpPolicy", "CartPole-v1", rollout_buffer_class=RolloutBuffer)


# --------------------------------------------------------------------------- #
# numpy numbers
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_numpy_numbers_are_accepted_as_by_ppo(algo, tmp_path):
    numpy_values = {
        "n_steps": np.int64(32),
        "batch_size": np.int32(16),
        "n_epochs": np.int16(1),
        "learning_rate": np.float32(3e-4),
        "gamma": np.float64(0.99),
        "ent_coef": np.float32(0.01),
        "max_grad_norm": np.float64(0.5),
    }
    # the reference: SB3's PPO accepts numpy integers (its schedules, not np.float32: we do)
    PPO("MlpPolicy", "CartPole-v1", **{name: value for name, value in numpy_values.items() if name != "learning_rate"})
    extra = {"top_k": np.int64(1)} if algo is SupportAPO else {}
    model = algo("MlpPolicy", "CartPole-v1", **numpy_values, **extra).learn(32)
    model.save(tmp_path / "model")
    assert algo.load(tmp_path / "model").n_steps == 32


@pytest.mark.parametrize(("name", "value"), [("n_steps", True), ("n_steps", 64.0), ("gamma", np.bool_(True))])
def test_booleans_and_floats_are_not_integers(name, value):
    with pytest.raises(HyperparameterError, match=f"`{name}` must be an? (integer|number)"):
        APO("MlpPolicy", "CartPole-v1", **{name: value})


# --------------------------------------------------------------------------- #
# booleans
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("algo", "name"),
    [
        (APO, "normalize_advantage"),
        (SPO, "use_sde"),
        (PPOPenalty, "adaptive_kl"),
        (SupportAPO, "exclude_sampled"),
    ],
)
def test_boolean_parameters_refuse_non_booleans(algo, name):
    with pytest.raises(HyperparameterError, match=f"`{name}` must be True or False, got 'false'"):
        algo("MlpPolicy", "CartPole-v1", **{name: "false"})
    algo("MlpPolicy", "CartPole-v1", **{name: np.bool_(False)})  # numpy's booleans are booleans


# --------------------------------------------------------------------------- #
# schedules
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("algo", "name", "schedule"),
    [
        (APO, "clip_range", lambda progress: -0.2),
        (SPO, "clip_range", lambda progress: -0.2),
        (PPOPenalty, "clip_range", lambda progress: -0.2),
        (APO, "clip_range_vf", lambda progress: -0.1),
        (SPO, "learning_rate", lambda progress: -1e-3),
        (SupportAPO, "learning_rate", lambda progress: math.nan),
        (PPOPenalty, "clip_range", lambda progress: "0.2x"),
    ],
)
def test_schedules_are_checked_where_first_evaluated(algo, name, schedule):
    with pytest.raises(HyperparameterError, match=f"The schedule of `{name}` must return .* remaining progress 1"):
        algo("MlpPolicy", "CartPole-v1", **SMALL, **{name: schedule})


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("name", ["clip_range", "clip_range_vf", "learning_rate"])
def test_schedules_are_checked_at_every_update(algo, name):
    model = algo("MlpPolicy", "CartPole-v1", **SMALL, **{name: lambda progress: 0.1 if progress > 0.6 else -0.1})
    # 3 rollouts of 32 steps: the first update at remaining progress 2/3, the second at 1/3
    with pytest.raises(
        HyperparameterError, match=f"The schedule of `{name}` must return .* got -0.1 at remaining progress 0.333"
    ):
        model.learn(96)
    assert model._n_updates == 1  # the second update stopped before its first epoch


@pytest.mark.parametrize("name", ["clip_range", "clip_range_vf"])
def test_a_number_set_in_place_of_a_schedule_is_refused_by_name(name):
    model = APO("MlpPolicy", "CartPole-v1", **SMALL)
    setattr(model, name, 0.1)  # after _setup_model() wrapped the given values into schedules
    with pytest.raises(HyperparameterError, match=f"`{name}` must be a schedule .*, got 0.1"):
        model.learn(32)


def test_linear_schedules_may_reach_zero():
    # rl-zoo3's "lin_" schedules are 0 at the last update: not an error
    model = SPO("MlpPolicy", "CartPole-v1", **SMALL, learning_rate=lambda p: 3e-4 * p, clip_range=lambda p: 0.2 * p)
    model.learn(64)
    assert model._current_progress_remaining == 0.0


# --------------------------------------------------------------------------- #
# SB3's PPO: AssertionError where it asserts, warnings where it warns
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("algo", [PPO, *ALGORITHMS])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"clip_range_vf": -0.2},  # SB3's tests/test_run.py::test_ppo
        {"n_steps": 1},  # SB3's tests/test_run.py::test_ppo_warnings: one sample, advantage normalisation
        {"batch_size": 1},  # SB3: "`batch_size` must be greater than 1"
    ],
)
def test_errors_are_assertion_errors_where_ppo_asserts(algo, kwargs):
    with pytest.raises(AssertionError) as error:
        algo("MlpPolicy", "CartPole-v1", **kwargs)
    if algo is not PPO:
        assert isinstance(error.value, ValueError)
        assert f"`{next(iter(kwargs))}" in str(error.value)


@pytest.mark.parametrize("algo", [PPO, *ALGORITHMS])
def test_truncated_minibatch_warns_as_in_ppo(algo):
    # SB3's tests/test_run.py::test_ppo_warnings, on CartPole for SupportAPO's discrete actions
    with pytest.warns(UserWarning, match="there will be a truncated mini-batch of size 1"):
        model = algo("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=63, n_epochs=1)
    model.learn(64)
    assert np.isfinite(model.logger.name_to_value["train/loss"])


@pytest.mark.parametrize("algo", [PPO, *ALGORITHMS])
def test_one_sample_minibatches_without_normalisation_train_as_in_ppo(algo):
    model = algo("MlpPolicy", "CartPole-v1", n_steps=1, batch_size=1, n_epochs=1, normalize_advantage=False, seed=0)
    before = [parameter.clone() for parameter in model.policy.parameters()]
    model.learn(4)
    assert model._n_updates == 4  # one update of one one-sample minibatch per step
    assert np.isfinite(model.logger.name_to_value["train/loss"])
    assert any(not th.equal(old, new) for old, new in zip(before, model.policy.parameters(), strict=True))


def tuple_action_env() -> gym.Env:
    env = gym.Wrapper(gym.make("CartPole-v1"))
    env.action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))
    return env


@pytest.mark.parametrize(
    ("algo", "env_id", "accepted"),
    [
        (PPO, None, ""),
        (APO, None, "accepted action spaces are Box, Discrete, MultiDiscrete, MultiBinary"),
        (SupportAPO, "Pendulum-v1", "accepted action spaces are Discrete, MultiDiscrete"),
    ],
)
def test_unsupported_action_space_is_named_in_an_assertion_error_as_in_ppo(algo, env_id, accepted):
    with pytest.raises(AssertionError, match=accepted):
        algo("MlpPolicy", tuple_action_env() if env_id is None else env_id)
