"""
Issue 9, "Python API": numpy numbers, booleans, schedules, SB3's ``PPO`` error
classes and warnings, loading other algorithms' models, unreadable files, and
non-finite data named by their cause.
"""

import functools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv
from torch.distributions import Distribution as TorchDistribution

from sb3_apo import APO, SPO, PPOPenalty, SupportAPO
from sb3_apo.async_rollouts import RolloutActorError
from sb3_apo.common._torch_compat import without_distribution_validation
from sb3_apo.common.buffers import DistributionParamsMixin
from sb3_apo.common.checks import HyperparameterError
from sb3_apo.common.on_policy import NonFiniteLossError, NonFiniteObservationError
from sb3_apo.support_apo.buffers import ReferenceParamsMixin

ALGORITHMS = [APO, PPOPenalty, SPO, SupportAPO]
SMALL = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}}


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
    algo("MlpPolicy", "CartPole-v1", n_steps=1, batch_size=1, n_epochs=1, normalize_advantage=False).learn(4)


def tuple_action_env() -> gym.Env:
    env = gym.Wrapper(gym.make("CartPole-v1"))
    env.action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))
    return env


@pytest.mark.parametrize(("algo", "env_id"), [(PPO, None), (APO, None), (SupportAPO, "Pendulum-v1")])
def test_unsupported_action_space_is_an_assertion_error_as_in_ppo(algo, env_id):
    with pytest.raises(AssertionError):
        algo("MlpPolicy", tuple_action_env() if env_id is None else env_id)


# --------------------------------------------------------------------------- #
# Loading SB3 PPO's models and the other algorithms'
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archives")
    models = {
        "ppo": PPO("MlpPolicy", "CartPole-v1", **SMALL),
        "apo": APO("MlpPolicy", "CartPole-v1", anchor_coef=0.5, **SMALL),
        "ppo_penalty": PPOPenalty("MlpPolicy", "CartPole-v1", kl_coef=3.0, kl_target=0.02, **SMALL),
        "spo": SPO("MlpPolicy", "CartPole-v1", **SMALL),
        "support_apo": SupportAPO("MlpPolicy", "CartPole-v1", kl_coef=0.3, top_k=1, **SMALL),
    }
    for name, model in models.items():
        model.learn(32).save(folder / name)
    return {name: folder / f"{name}.zip" for name in models}


def continue_training(algo, path, env_id="CartPole-v1", **kwargs):
    model = algo.load(path, env=gym.make(env_id), **kwargs)
    policy_before = [parameter.clone() for parameter in model.policy.parameters()]
    model.learn(32, reset_num_timesteps=False)
    assert model.num_timesteps == 64
    assert any(not th.equal(old, new) for old, new in zip(policy_before, model.policy.parameters(), strict=True))
    assert isinstance(model.rollout_buffer, DistributionParamsMixin)
    return model


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_continue_from_an_sb3_ppo_model(algo, archives):
    loaded = algo.load(archives["ppo"])
    for name, default in algo.own_hyperparameters().items():
        assert getattr(loaded, name) == default, name
    model = continue_training(algo, archives["ppo"])
    if algo is SupportAPO:
        assert isinstance(model.rollout_buffer, ReferenceParamsMixin)
        assert model._reference_ready  # the reference is the PPO policy as learn() started


@pytest.mark.parametrize("algo", [APO, PPOPenalty, SPO])
def test_continue_from_an_sb3_ppo_model_with_box_actions(algo, tmp_path):
    # the APO.load("ppo_hopper.zip", env=env).learn(...), on a small Box task
    PPO("MlpPolicy", "Pendulum-v1", **SMALL).learn(32).save(tmp_path / "ppo_pendulum")
    model = continue_training(algo, tmp_path / "ppo_pendulum.zip", env_id="Pendulum-v1")
    assert np.isfinite(model.logger.name_to_value["train/anchor_ratio_max"])


def test_apo_needs_a_clip_range_that_a_ppo_penalty_model_lacks(archives):
    with pytest.raises(HyperparameterError, match=r"APO needs a `clip_range`.*ppo_penalty\.zip.*clip_range=0\.2"):
        APO.load(archives["ppo_penalty"])
    model = continue_training(APO, archives["ppo_penalty"], clip_range=0.2)
    assert model.anchor_coef == 1.0  # APO's default: the archive has no anchor coefficient
    assert not hasattr(model, "kl_target")  # PPOPenalty's hyperparameters are dropped


def test_class_specific_state_is_not_taken_from_another_algorithm(archives):
    with pytest.warns(UserWarning, match="PPOPenalty has no reference_policy"):
        model = PPOPenalty.load(archives["support_apo"])
    assert model.kl_coef == 1.0  # PPOPenalty's beta, not SupportAPO's KL-to-reference weight 0.3
    assert not hasattr(model, "top_k") and not hasattr(model, "reference")

    model = SupportAPO.load(archives["ppo_penalty"], clip_range=0.2)
    assert model.kl_coef == 0.0 and model.top_k == 8  # SupportAPO's defaults, not PPOPenalty's beta
    assert not hasattr(model, "adaptive_kl")
    continue_training(SupportAPO, archives["ppo_penalty"], clip_range=0.2)


@pytest.mark.parametrize("algo", [APO, SPO, PPOPenalty])
def test_any_algorithm_continues_from_a_support_apo_model(algo, archives):
    with pytest.warns(UserWarning, match=f"{algo.__name__} has no reference_policy"):
        continue_training(algo, archives["support_apo"])


@pytest.mark.parametrize(("algo", "source"), [(SupportAPO, "apo"), (SupportAPO, "spo"), (SPO, "apo"), (PPOPenalty, "apo")])
def test_algorithms_continue_from_each_other(algo, source, archives):
    continue_training(algo, archives[source])


def test_same_algorithm_keeps_its_own_state(archives):
    assert APO.load(archives["apo"]).anchor_coef == 0.5
    model = PPOPenalty.load(archives["ppo_penalty"])
    assert model.kl_target == 0.02 and model.kl_coef != 1.0  # beta as adapted by the saved run


# --------------------------------------------------------------------------- #
# Unreadable files
# --------------------------------------------------------------------------- #
def test_support_apo_reference_that_is_not_a_model(tmp_path):
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"Cannot read the reference policy '.*garbage\.zip'"):
        SupportAPO("MlpPolicy", "CartPole-v1", reference=garbage)


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupted_archive_is_named(algo, damage, archives, tmp_path):
    content = archives["apo"].read_bytes()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"not a zip file")
    with pytest.raises(ValueError, match=r"Cannot load '.*broken\.zip'.* corrupted"):
        algo.load(broken)


def test_corrupted_reference_archive_is_named(archives, tmp_path):
    content = archives["support_apo"].read_bytes()
    broken = tmp_path / "reference.zip"
    broken.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"reference\.zip"):
        SupportAPO("MlpPolicy", "CartPole-v1", reference=broken)


# --------------------------------------------------------------------------- #
# Non-finite data: the cause, and the advice that fits it
# --------------------------------------------------------------------------- #
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


def test_infinite_rewards_blame_the_environment_not_the_learning_rate():
    model = APO("MlpPolicy", BreakAfter(gym.make("Pendulum-v1"), 5, reward=math.inf), **SMALL)
    with pytest.raises(NonFiniteLossError, match="environment returned non-finite rewards .*VecCheckNan") as error:
        model.learn(32)
    assert "learning rate" not in str(error.value)


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


def test_a_finite_data_blow_up_points_at_the_learning_rate():
    model = APO("MlpPolicy", "Pendulum-v1", **SMALL)
    model.anchor_coef = math.inf  # bypasses the constructor's check
    with pytest.raises(NonFiniteLossError, match="rollout's data are finite, so the update diverged: lower the learning"):
        model.learn(32)
