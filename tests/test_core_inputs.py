"""Bad input gets a ValueError naming the parameter and what it accepts; NaN never reaches the weights."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer

from sb3_apo import APO, SPO, PPOPenalty
from sb3_apo.common.on_policy import NonFiniteLossError

ALGORITHMS = [APO, PPOPenalty, SPO]

SHARED_BAD_INPUTS = [
    ("learning_rate", -1e-3, "(0, inf)"),
    ("learning_rate", 0.0, "(0, inf)"),
    ("n_steps", 0, "[1, inf)"),
    ("batch_size", 1, "[2, inf)"),
    ("batch_size", 2.5, "an integer"),
    ("n_epochs", 0, "[1, inf)"),
    ("gamma", 1.5, "[0, 1]"),
    ("gae_lambda", -0.1, "[0, 1]"),
    ("clip_range_vf", -0.2, "(0, inf)"),
    ("ent_coef", -0.01, "[0, inf)"),
    ("vf_coef", -0.5, "[0, inf)"),
    ("max_grad_norm", 0.0, "(0, inf)"),
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


def test_minibatch_larger_than_the_rollout_warns_as_in_sb3():
    # SB3's PPO warns and trains on the whole rollout as one minibatch; so do we.
    with pytest.warns(UserWarning, match=r"`batch_size`=128 is larger than the rollout \(`n_steps \* n_envs` = 64"):
        APO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=128)


def test_unsupported_action_space():
    class TupleActionEnv(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,))
        action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))

        def reset(self, *, seed=None, options=None):
            return np.zeros(2, dtype=np.float32), {}

        def step(self, action):
            return np.zeros(2, dtype=np.float32), 0.0, False, False, {}

    with pytest.raises(ValueError, match="accepted action spaces are Box, Discrete, MultiDiscrete, MultiBinary"):
        APO("MlpPolicy", TupleActionEnv())


def test_rollout_buffer_without_distribution_parameters():
    with pytest.raises(ValueError, match="`rollout_buffer_class` must store distribution parameters"):
        APO("MlpPolicy", "CartPole-v1", rollout_buffer_class=RolloutBuffer)


class NaNRewardAfter(gym.Wrapper):
    """Returns a NaN reward from the given step on, as a broken simulator might."""

    def __init__(self, env: gym.Env, first_bad_step: int):
        super().__init__(env)
        self.first_bad_step, self.steps = first_bad_step, 0

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return observation, float("nan") if self.steps >= self.first_bad_step else reward, terminated, truncated, info


def test_non_finite_rewards_name_the_algorithm_update_and_cause():
    model = APO("MlpPolicy", NaNRewardAfter(gym.make("Pendulum-v1"), 40), n_steps=32, batch_size=16, seed=0)
    model.learn(32)  # one healthy update: 10 epochs
    before = {name: value.clone() for name, value in model.policy.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="APO: the rollout's rewards, returns, advantages are non-finite") as error:
        model.learn(32, reset_num_timesteps=False)
    assert "at update 11 (after 64 timesteps)" in str(error.value)
    assert "the environment returned non-finite rewards (first at rollout step 7 of env 0" in str(error.value)
    # the failing update was not applied
    for name, value in model.policy.state_dict().items():
        assert th.equal(value, before[name]), name


def test_infinite_coefficient_is_reported_on_the_total_loss():
    model = APO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=16, seed=0)
    model.anchor_coef = float("inf")  # bypasses the constructor's check
    with pytest.raises(NonFiniteLossError, match="APO: the total loss .* a coefficient is not"):
        model.learn(32)
    assert all(th.isfinite(value).all() for value in model.policy.state_dict().values())
