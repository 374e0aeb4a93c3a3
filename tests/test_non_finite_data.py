"""
Non-finite data named by its cause (the environment's observations or rewards, an overflow, or a
diverging update), never reaching the weights; and the checks that replace torch's distribution
argument validation in the loop, which keep the user's setting everywhere else.
"""

import functools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv
from torch.distributions import Distribution as TorchDistribution

from sb3_apo import APO, SPO, SupportAPO
from sb3_apo.async_rollouts import RolloutActorError
from sb3_apo.common._torch_compat import without_distribution_validation
from sb3_apo.common.on_policy import NonFiniteLossError, NonFiniteObservationError

SMALL = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}}


class BreakAfter(gym.Wrapper):
    """From the given step on, replaces the observation or the reward by a constant (e.g. NaN)."""

    def __init__(self, env: gym.Env, step: int, *, observation: float | None = None, reward: float | None = None):
        super().__init__(env)
        self.first_bad_step, self.steps = step, 0
        self.bad_observation, self.bad_reward = observation, reward

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps >= self.first_bad_step:
            if self.bad_observation is not None:
                observation = np.full_like(observation, self.bad_observation)
            if self.bad_reward is not None:
                reward = self.bad_reward
        return observation, reward, terminated, truncated, info


@pytest.mark.parametrize(("env_id", "algo"), [("CartPole-v1", APO), ("Pendulum-v1", SPO), ("CartPole-v1", SupportAPO)])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_observations_are_named(env_id, algo, value):
    model = algo("MlpPolicy", BreakAfter(gym.make(env_id), 5, observation=value), **SMALL)
    with pytest.raises(NonFiniteObservationError, match="environment returned non-finite observations .*VecCheckNan"):
        model.learn(32)


@pytest.mark.parametrize("async_rollouts", [False, True])
def test_non_finite_observations_name_the_env_and_key(async_rollouts):
    """The check that replaces torch's argument validation says where the observation came from."""

    def make(index):
        env = gym.make("CartPole-v1")
        if index == 2:
            env = BreakAfter(env, 5, observation=math.nan)
        space = gym.spaces.Dict(
            {"position": gym.spaces.Box(-np.inf, np.inf, (2,)), "velocity": gym.spaces.Box(-np.inf, np.inf, (2,))}
        )
        return gym.wrappers.TransformObservation(env, lambda obs: {"position": obs[:2], "velocity": obs[2:]}, space)

    vec_env = DummyVecEnv([functools.partial(make, index) for index in range(3)])
    model = APO("MultiInputPolicy", vec_env, async_rollouts=async_rollouts, **SMALL)
    expected = RolloutActorError if async_rollouts else NonFiniteObservationError
    with pytest.raises(expected, match=r"non-finite observations .*\(env 2, key 'position'\)") as error:
        model.learn(64)
    if async_rollouts:
        assert "NonFiniteObservationError" in str(error.value)


class NaNWhenTruncated(gym.Wrapper):
    """Returns a NaN observation on the step that truncates the episode: the terminal observation that SB3 bootstraps from."""

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        if truncated and not terminated:
            observation = np.full_like(observation, math.nan)
        return observation, reward, terminated, truncated, info


@pytest.mark.parametrize("async_rollouts", [False, True])
def test_a_non_finite_terminal_observation_is_named_before_it_is_bootstrapped(async_rollouts):
    # Without the check, the NaN would reach the reward through the timeout bootstrap and be blamed on it.
    env = DummyVecEnv([lambda: NaNWhenTruncated(gym.make("Pendulum-v1", max_episode_steps=20))])
    model = APO("MlpPolicy", env, async_rollouts=async_rollouts, **SMALL)
    expected = RolloutActorError if async_rollouts else NonFiniteObservationError
    with pytest.raises(expected, match=r"non-finite observations .*\(the terminal observation of env 0, which bootstraps"):
        model.learn(64)


@pytest.mark.parametrize("async_rollouts", [False, True])
@pytest.mark.parametrize("default", [True, False])
def test_the_users_distribution_validation_setting_is_kept(default, async_rollouts):
    """The loop's own policy calls run without torch's argument checks; callbacks and all else keep the user's setting."""
    in_callbacks, in_the_loop = [], []

    class RecordsTheSetting(BaseCallback):
        def _on_rollout_start(self):
            in_callbacks.append(TorchDistribution._validate_args)

        def _on_step(self):
            in_callbacks.append(TorchDistribution._validate_args)
            return True

    previous = TorchDistribution._validate_args
    TorchDistribution.set_default_validate_args(default)
    try:
        model = APO("MlpPolicy", "Pendulum-v1", async_rollouts=async_rollouts, **SMALL)
        model.policy.action_net.register_forward_hook(lambda *_: in_the_loop.append(TorchDistribution._validate_args))
        model.learn(96, callback=RecordsTheSetting())
        assert TorchDistribution._validate_args is default
    finally:
        TorchDistribution.set_default_validate_args(previous)
    assert in_callbacks and all(setting is default for setting in in_callbacks)
    assert in_the_loop and not any(in_the_loop)  # the learner's rollouts (sync) or evaluations (async), and its updates


@pytest.mark.parametrize("async_rollouts", [False, True])
def test_rollouts_run_in_inference_mode_and_callbacks_can_train_a_module(async_rollouts):
    """SB3's policy calls in a rollout run in torch's inference mode, callbacks as in SB3's loop (autograd works)."""
    in_the_loop = []

    class FitsAModule(BaseCallback):  # as a curiosity bonus would, on the observations
        def _init_callback(self):
            self.module = th.nn.Linear(3, 1)
            self.optimizer = th.optim.SGD(self.module.parameters(), lr=0.01)
            self.fits = 0

        def _fit(self, observations):
            assert not th.is_inference_mode_enabled() and th.is_grad_enabled()
            loss = self.module(th.as_tensor(observations, dtype=th.float32)).pow(2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.fits += 1

        def _on_rollout_start(self):
            self._fit(np.ones((4, 3)))

        def _on_step(self):
            self._fit(self.locals["new_obs"])
            return True

    model = APO("MlpPolicy", "Pendulum-v1", async_rollouts=async_rollouts, **SMALL)
    model.policy.action_net.register_forward_hook(lambda *_: in_the_loop.append(th.is_inference_mode_enabled()))
    callback = FitsAModule()
    model.learn(96, callback=callback)
    assert callback.fits > 96 // SMALL["n_steps"]
    if not async_rollouts:  # (the actors' rollouts run in another process)
        assert any(in_the_loop), "the rollouts' policy calls ran outside inference mode"
    assert not all(in_the_loop)  # the updates record gradients


def test_distribution_validation_is_restored_when_the_wrapped_method_raises():
    def fails():
        assert not TorchDistribution._validate_args
        # inside, a distribution with invalid arguments is built without complaint
        th.distributions.Normal(th.tensor([math.nan]), th.tensor([1.0]))
        raise RuntimeError("boom")

    previous = TorchDistribution._validate_args
    TorchDistribution.set_default_validate_args(True)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            without_distribution_validation(fails)()
        assert TorchDistribution._validate_args is True
        with pytest.raises(ValueError, match="invalid values"):
            th.distributions.Normal(th.tensor([math.nan]), th.tensor([1.0]))
    finally:
        TorchDistribution.set_default_validate_args(previous)


def test_overflowing_returns_point_at_reward_normalisation():
    model = APO("MlpPolicy", BreakAfter(gym.make("Pendulum-v1"), 1, reward=-1e38), **SMALL)
    with pytest.raises(NonFiniteLossError, match="rewards are finite but the returns and advantages overflowed") as error:
        model.learn(32)
    assert "VecNormalize(env, norm_reward=True)" in str(error.value)
    assert "learning rate" not in str(error.value)


def test_non_finite_values_point_at_the_learning_rate():
    model = APO("MlpPolicy", "Pendulum-v1", **SMALL)
    with th.no_grad():
        model.policy.value_net.bias.fill_(math.inf)
    with pytest.raises(NonFiniteLossError, match="value network's outputs are non-finite.*lower the learning rate"):
        model.learn(32)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_rewards_name_the_algorithm_update_and_cause(value):
    model = APO("MlpPolicy", BreakAfter(gym.make("Pendulum-v1"), 40, reward=value), n_steps=32, batch_size=16, seed=0)
    model.learn(32)  # one healthy update: 10 epochs
    before = {name: value.clone() for name, value in model.policy.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="APO: the rollout's rewards, .*are non-finite") as error:
        model.learn(32, reset_num_timesteps=False)
    assert "learning rate" not in str(error.value)  # the environment is blamed
    assert "at update 11 (after 64 timesteps)" in str(error.value)
    assert "the environment returned non-finite rewards (first at rollout step 7 of env 0" in str(error.value)
    # the failing update was not applied
    for name, value in model.policy.state_dict().items():
        assert th.equal(value, before[name]), name


def test_infinite_coefficient_is_reported_on_the_total_loss():
    model = APO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=16, seed=0)
    model.anchor_coef = float("inf")  # bypasses the constructor's check
    with pytest.raises(NonFiniteLossError, match="APO: the total loss .* a coefficient is not.*lower the learning rate"):
        model.learn(32)
    assert all(th.isfinite(value).all() for value in model.policy.state_dict().values())
